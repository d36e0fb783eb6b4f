"""Shared helpers of the fault, crash, overlap, auth and hostile-input tests.

Two kinds of help: running the real ``etl`` command in a subprocess (the
console script installed next to the interpreter running pytest), and reading
back everything stored for a call so a test can compare it, field by field,
with what the API sent.  The expected rows are derived here from the JSON
payload itself, not from ``etl.normalize``, so a normalisation bug cannot hide
behind a helper that shares it.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

import httpx
import sqlalchemy as sa
import structlog
from sqlalchemy.engine import Engine

from etl import Etl
from etl.config import Settings
from etl.sync import RunStats
from etl.tables import fields_t, jobs_t, lines_t, queue_t, runs_t, steps_t, summaries_t
from etl.testing import FakeOpenPhone, serve

ETL = Path(sys.executable).with_name("etl")
REPLACEMENT = "\ufffd"


# --- subprocesses -----------------------------------------------------------------


def etl_env(database_url: str, base_url: str | None = None, api_key: str | None = None,
            **extra: str) -> dict[str, str]:
    """The environment of a cron-like ``etl`` run: configuration only through env vars."""
    env = {k: v for k, v in os.environ.items()
           if k not in ("ETL_DATABASE_URL", "OPENPHONE_API_KEY", "OPENPHONE_BASE_URL", "ETL_LOG_FORMAT")}
    env["ETL_DATABASE_URL"] = database_url
    env["ETL_LOG_FORMAT"] = "json"
    if base_url is not None:
        env["OPENPHONE_BASE_URL"] = base_url
    if api_key is not None:
        env["OPENPHONE_API_KEY"] = api_key
    env.update(extra)
    return env


def start_etl(args: Iterable[str], env: Mapping[str, str], log_dir: Path, name: str) -> subprocess.Popen[bytes]:
    """Start ``etl ARGS`` with stdout/stderr going to files (a pipe could fill up and stall it)."""
    out = (log_dir / f"{name}.out").open("wb")
    err = (log_dir / f"{name}.err").open("wb")
    try:
        return subprocess.Popen([str(ETL), *args], env=dict(env), stdout=out, stderr=err,
                                stdin=subprocess.DEVNULL)
    finally:
        out.close()
        err.close()


def output_of(log_dir: Path, name: str) -> tuple[str, str]:
    return ((log_dir / f"{name}.out").read_text("utf-8", "replace"),
            (log_dir / f"{name}.err").read_text("utf-8", "replace"))


def run_etl(args: Iterable[str], env: Mapping[str, str], timeout: float = 120,
            stdin: bytes | None = None) -> subprocess.CompletedProcess[str]:
    """Run ``etl ARGS`` to the end; text output, never raising on a non-zero exit."""
    proc = subprocess.run([str(ETL), *args], env=dict(env), capture_output=True, timeout=timeout,
                          input=stdin if stdin is not None else b"", check=False)
    return subprocess.CompletedProcess(proc.args, proc.returncode, proc.stdout.decode("utf-8", "replace"),
                                       proc.stderr.decode("utf-8", "replace"))


def cli_run(args: Iterable[str], env: Mapping[str, str], stdin: bytes | None = None,
            ) -> subprocess.CompletedProcess[str]:
    """``etl ARGS`` in this process (click's CliRunner) with exactly ``env`` as its environment.

    The same answer as :func:`run_etl` without a process start-up, for commands
    whose test is about what they print and exit with, not about being a process.
    """
    from click.testing import CliRunner

    from etl.cli import cli

    overrides: dict[str, str | None] = {k: None for k in os.environ if k not in env}
    overrides.update(env)
    try:
        result = CliRunner(env=overrides).invoke(cli, list(args), input=stdin if stdin is not None else b"",
                                                 prog_name="etl")
    finally:
        structlog.reset_defaults()  # the CLI pointed the log at CliRunner's stderr, closed now
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception
    return subprocess.CompletedProcess(["etl", *args], result.exit_code, result.stdout, result.stderr)


def wait_for(predicate: Callable[[], bool], timeout: float, what: str,
             proc: subprocess.Popen[bytes] | None = None) -> None:
    """Poll ``predicate``; fail with ``what`` on timeout or if ``proc`` exits first."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        if proc is not None and proc.poll() is not None:
            raise AssertionError(f"etl exited with {proc.returncode} before {what}")
        time.sleep(0.01)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


def stop(proc: subprocess.Popen[bytes], timeout: float = 60) -> int:
    """Wait for ``proc``; kill it if it overstays, so a failing test never leaks it."""
    try:
        return proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        raise


def free_port() -> int:
    """A TCP port on 127.0.0.1 nothing listens on right now (for a server a test starts)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def healthy(url: str) -> bool:
    """Whether an `etl serve` at ``url`` answers ``/healthz`` with 200."""
    try:
        return httpx.get(url + "/healthz", timeout=1).status_code == 200
    except httpx.TransportError:
        return False


def error_lines(stderr: str) -> list[str]:
    """The ``Error: …`` lines click prints (the JSON log lines are the rest)."""
    return [line for line in stderr.splitlines() if line.startswith("Error: ")]


# --- what is stored ---------------------------------------------------------------


def count(engine: Engine, table: str, where: str = "") -> int:
    with engine.connect() as conn:
        return int(conn.execute(sa.text(f"SELECT count(*) FROM {table} {where}")).scalar_one())


def stored_calls(engine: Engine) -> dict[str, dict[str, Any]]:
    """Every stored call: the parent row's columns plus its children in position order (every child in
    its parent's workspace)."""
    with engine.connect() as conn:
        calls = {r.call_id: dict(r._mapping) for r in conn.execute(sa.select(summaries_t))}
        for table in (lines_t, steps_t, jobs_t, fields_t):
            for call_id, workspace in conn.execute(sa.select(table.c.call_id, table.c.workspace).distinct()):
                assert call_id not in calls or workspace == calls[call_id]["workspace"], (table.name, call_id)
        children: dict[str, dict[str, list[tuple[Any, ...]]]] = defaultdict(lambda: defaultdict(list))
        for r in conn.execute(sa.select(lines_t).order_by(lines_t.c.call_id, lines_t.c.position)):
            children[r.call_id]["lines"].append((r.position, r.text))
        for r in conn.execute(sa.select(steps_t).order_by(steps_t.c.call_id, steps_t.c.position)):
            children[r.call_id]["next_steps"].append((r.position, r.text))
        for r in conn.execute(sa.select(jobs_t).order_by(jobs_t.c.call_id, jobs_t.c.job_position)):
            children[r.call_id]["jobs"].append((r.job_position, r.name, r.icon))
        f = fields_t.c
        for r in conn.execute(sa.select(fields_t).order_by(f.call_id, f.job_position, f.field_position)):
            children[r.call_id]["fields"].append(
                (r.job_position, r.field_position, r.name, r.value_type, r.value_text, r.value_number,
                 None if r.value_boolean is None else bool(r.value_boolean)))
    orphans = set(children) - set(calls)
    assert not orphans, f"child rows without a call_summaries row: {sorted(orphans)[:10]}"
    for call_id, call in calls.items():
        for kind in ("lines", "next_steps", "jobs", "fields"):
            call[kind] = list(children[call_id][kind]) if call_id in children else []
    return calls


def clean(text: str) -> str:
    """What the contract says a database holds for API text: NUL becomes U+FFFD."""
    return text.replace("\x00", REPLACEMENT)


def typed(value: Any) -> tuple[str, str | None, float | None, bool | None]:
    if isinstance(value, bool):
        return "boolean", None, None, value
    if isinstance(value, int | float):
        return "number", None, float(value), None
    return "string", clean(value), None, None


def expected_call(data: Mapping[str, Any], raw_json: str, call_id: str | None = None, *,
                  workspace: str = "default") -> dict[str, Any]:
    """The stored form of the API's summary, per docs/contract.md's tables.

    ``data``: v1's ``data`` object, or the dated API's ``summary`` object of call ``call_id``;
    ``workspace``: the workspace that synced it (``default`` without a workspaces file).
    """
    summary = data["summary"]
    steps = data["nextSteps"]
    jobs = data.get("jobs") or []
    title = data.get("title")
    return {
        "call_id": call_id or data["callId"],
        "status": data["status"],
        "summary_text": None if summary is None else "\n".join(clean(s) for s in summary),
        "line_count": len(summary or []),
        "next_step_count": len(steps or []),
        "job_count": len(jobs),
        "type": data.get("type"),
        "title": None if title is None else clean(title),
        "content_hash": hashlib.sha256(raw_json.encode("utf-8")).hexdigest(),
        "raw_json": raw_json,
        "workspace": workspace,
        "lines": [(i, clean(s)) for i, s in enumerate(summary or [])],
        "next_steps": [(i, clean(s)) for i, s in enumerate(steps or [])],
        "jobs": [(j, clean(job["name"]), clean(job["icon"])) for j, job in enumerate(jobs)],
        "fields": [(j, k, clean(fld["name"]), *typed(fld["value"]))
                   for j, job in enumerate(jobs) for k, fld in enumerate(job["result"]["data"])],
    }


def comparable(call: Mapping[str, Any]) -> dict[str, Any]:
    """A stored call without its sync timestamps (they differ run to run by design; ``as_of`` is one)."""
    return {k: v for k, v in call.items() if k not in ("first_synced_at", "last_synced_at", "as_of")}


def wire_json(data: Mapping[str, Any]) -> str:
    """The exact body the simulator sends for ``data`` (compact, UTF-8, not ASCII-escaped)."""
    return json.dumps({"data": data}, separators=(",", ":"), ensure_ascii=False)


def check_consistent(engine: Engine) -> dict[str, dict[str, Any]]:
    """The crash invariants: whatever was interrupted, nothing is half written.

    Every stored call's rows are exactly what its own ``raw_json`` says (so no
    call has partial or duplicated children), every ``done`` item has its
    call, and every stored completed call belongs to a ``done`` item.
    Returns the queue rows by id.
    """
    calls = stored_calls(engine)
    for call_id, call in calls.items():
        loaded = json.loads(call["raw_json"])
        data = loaded.get("data", loaded)  # v1's body, or the dated summary object
        assert comparable(call) == expected_call(data, call["raw_json"], call_id), call_id
    with engine.connect() as conn:
        queue = {r.call_id: dict(r._mapping) for r in conn.execute(sa.select(queue_t))}
    done = {i for i, r in queue.items() if r["state"] == "done"}
    completed = {i for i, c in calls.items() if c["status"] == "completed"}
    assert done == completed, (sorted(done - completed)[:10], sorted(completed - done)[:10])
    return queue


def runs(engine: Engine) -> list[dict[str, Any]]:
    with engine.connect() as conn:
        return [dict(r._mapping) for r in conn.execute(sa.select(runs_t).order_by(runs_t.c.id))]


def queue(engine: Engine) -> dict[str, dict[str, Any]]:
    """The queue rows by id, typed (datetimes are datetimes on SQLite too)."""
    with engine.connect() as conn:
        return {r.call_id: dict(r._mapping) for r in conn.execute(sa.select(queue_t))}


def run_served(engine: Engine, settings: Settings, fake: FakeOpenPhone, **options: Any) -> RunStats:
    """One in-process sync run against ``fake`` served on a real local HTTP socket."""
    with serve(fake) as url:
        return Etl(settings.replace(base_url=url), engine=engine).sync(**options)


def read_terminal(fd: int) -> bytes:
    """Everything a child writes to the pseudo-terminal ``fd`` until it closes its side."""
    out = b""
    while True:
        try:
            chunk = os.read(fd, 65536)
        except OSError:  # EIO: the child closed the terminal
            break
        if not chunk:
            break
        out += chunk
    return out


def webhook_secrets(stdout: str) -> list[str]:
    """The signing secrets `etl webhooks register` printed (its one `OPENPHONE_WEBHOOK_SECRETS=` line)."""
    (line,) = [x for x in stdout.splitlines() if x.startswith("OPENPHONE_WEBHOOK_SECRETS=")]
    return line.removeprefix("OPENPHONE_WEBHOOK_SECRETS=").split(",")
