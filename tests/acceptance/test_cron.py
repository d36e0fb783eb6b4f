"""The cron wrapper (cron/etl-sync.sh) run for real, and the schedule files around it.

The wrapper is executed as cron would (a clean environment, an env file, no
terminal) against the fake API over real HTTP, with ETL_BIN pointing at this
virtualenv's `etl`.  What an operator relies on is checked from the outside:
exit codes, silence on stdout/stderr unless a human must act, a log made only
of JSON lines, the API key never written anywhere, and no two runs at once.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from etl import db, store
from etl.config import Settings
from etl.models import SummaryQueue, SyncRun
from etl.testing import FakeOpenPhone, serve
from tests.support.db import API_KEY, fresh_url

CRON = Path(__file__).resolve().parents[2] / "cron"
WRAPPER = CRON / "etl-sync.sh"
ETL_BIN = Path(sys.executable).with_name("etl")
QUEUE = SummaryQueue.__table__
RUNS = SyncRun.__table__


# --- helpers ---------------------------------------------------------------------


class Wrapper:
    """One installation of the wrapper: env file, log file and lock file in tmp_path."""

    def __init__(self, tmp_path: Path, db_url: str | None, base_url: str, key: str = API_KEY,
                 **settings: str) -> None:
        self.dir = tmp_path
        self.env_file = tmp_path / "env"
        self.log_file = tmp_path / "sync.jsonl"
        self.lock_file = tmp_path / "sync.lock"
        values = {"OPENPHONE_API_KEY": key, "OPENPHONE_BASE_URL": base_url, "ETL_BIN": str(ETL_BIN),
                  "ETL_LOG_FILE": str(self.log_file), "ETL_LOCK_FILE": str(self.lock_file), **settings}
        if db_url is not None:
            values["ETL_DATABASE_URL"] = db_url
        # Single quotes, as cron/etl-sync.env.example recommends.
        self.env_file.write_text("".join(f"{k}='{v}'\n" for k, v in values.items()))
        self.env_file.chmod(0o600)

    def env(self, **extra: str) -> dict[str, str]:
        # What cron gives a job: a bare environment, nothing of this test process.
        return {"PATH": "/usr/local/bin:/usr/bin:/bin", "HOME": str(self.dir), "LANG": "C.UTF-8",
                "ETL_ENV_FILE": str(self.env_file), **extra}

    def run(self, *args: str, timeout: float = 60, **extra: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([str(WRAPPER), *args], env=self.env(**extra), capture_output=True,
                              text=True, timeout=timeout)

    def start(self, *args: str) -> subprocess.Popen[str]:
        # Its own process group, like a cron job or a systemd unit.
        return subprocess.Popen([str(WRAPPER), *args], env=self.env(), stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True, start_new_session=True)

    def log_text(self) -> str:
        return self.log_file.read_text() if self.log_file.exists() else ""

    def log(self) -> list[dict[str, Any]]:
        """Every line of the log, each of which must be a JSON object."""
        return [json.loads(line) for line in self.log_text().splitlines()]

    def events(self, name: str) -> list[dict[str, Any]]:
        return [r for r in self.log() if r["event"] == name]


def enqueue(db_url: str, ids: list[str]) -> None:
    engine = db.create_engine(db_url)
    try:
        with engine.begin() as conn:
            store.enqueue_ids(conn, ids)
    finally:
        engine.dispose()


def fetch(db_url: str, table: sa.Table) -> list[dict[str, Any]]:
    engine = db.create_engine(db_url)
    try:
        with engine.connect() as conn:
            return [dict(r._mapping) for r in conn.execute(sa.select(table))]
    finally:
        engine.dispose()


def states(db_url: str) -> dict[str, str]:
    return {r["call_id"]: r["state"] for r in fetch(db_url, QUEUE)}


@pytest.fixture
def sqlite_url(tmp_path: Path, sqlite_template: Path) -> str:
    """Wrapper behaviour does not depend on the database: these tests use SQLite."""
    return fresh_url("sqlite", tmp_path, sqlite_template)


@pytest.fixture
def url(fake: FakeOpenPhone):
    with serve(fake) as base_url:
        yield base_url


# --- a real run -------------------------------------------------------------------


def test_wrapper_runs_sync_and_appends_json_lines(db_url, tmp_path, fake, url):
    fake.set_response("AC404", 404, {"message": "Call summary not found", "status": 404})
    enqueue(db_url, ["AC1", "AC2", "AC3", "AC404"])
    wrapper = Wrapper(tmp_path, db_url, url)

    result = wrapper.run("--rate", "0", "--not-found-window", "0")  # the 404 final at once

    # Silent on success: cron mails whatever a job prints.
    assert (result.returncode, result.stdout, result.stderr) == (0, "", "")
    assert states(db_url) == {"AC1": "done", "AC2": "done", "AC3": "done", "AC404": "not_found"}
    [run] = fetch(db_url, RUNS)
    assert (run["command"], run["claimed"], run["completed"], run["failed"], run["not_found"], run["exit_code"]) == (
        "sync", 4, 3, 0, 1, 0)
    [started] = wrapper.events("run started")
    # The wrapper's default bound, well below the 5-minute schedule.
    assert (started["command"], started["max_runtime"], started["rate"]) == ("sync", 240.0, 0.0)
    calls = {e["call_id"]: e["outcome"] for e in wrapper.events("call")}
    assert calls == {"AC1": "done", "AC2": "done", "AC3": "done", "AC404": "not_found"}
    [finished] = wrapper.events("run finished")
    assert {k: finished[k] for k in ("run_id", "claimed", "completed", "failed", "not_found", "errors",
                                     "exit_code", "level")} == {
        "run_id": run["id"], "claimed": 4, "completed": 3, "failed": 0, "not_found": 1, "errors": 0,
        "exit_code": 0, "level": "info"}
    assert API_KEY not in wrapper.log_text()

    # A second run appends to the same log.
    lines_before = len(wrapper.log())
    assert wrapper.run().returncode == 0
    assert len(wrapper.log()) > lines_before
    assert len(wrapper.events("run finished")) == 2


def test_extra_arguments_go_to_etl_sync(sqlite_url, tmp_path, fake, url):
    enqueue(sqlite_url, ["AC1", "AC2", "AC3"])
    wrapper = Wrapper(tmp_path, sqlite_url, url, ETL_MAX_RUNTIME="60")

    result = wrapper.run("--limit", "1", "--rate", "0")

    assert result.returncode == 0
    assert sorted(states(sqlite_url).values()) == ["done", "pending", "pending"]
    [started] = wrapper.events("run started")
    assert (started["limit"], started["max_runtime"]) == (1, 60.0)


# --- no overlap -------------------------------------------------------------------


@pytest.mark.slow
def test_wrapper_refuses_to_overlap_and_a_term_stops_etl_cleanly(sqlite_url, tmp_path):
    slow = FakeOpenPhone(api_key=API_KEY, latency_ms=300)
    ids = [f"AC{n:02d}" for n in range(30)]
    enqueue(sqlite_url, ids)
    with serve(slow) as slow_url:
        wrapper = Wrapper(tmp_path, sqlite_url, slow_url)
        first = wrapper.start("--rate", "0", "--concurrency", "1")
        try:
            deadline = time.monotonic() + 30
            while not any(e["event"] == "call" for e in wrapper.log()):
                assert time.monotonic() < deadline, "the first run never fetched anything"
                assert first.poll() is None, first.communicate()
                time.sleep(0.05)

            started = time.monotonic()
            second = wrapper.run("--rate", "0")
            took = time.monotonic() - started

            # The second run gives up at once, quietly, with exit 0: cron must not mail.
            assert (second.returncode, second.stdout, second.stderr) == (0, "", "")
            assert took < 5, took
            [skipped] = [r for r in wrapper.log() if r.get("logger") == "etl-sync.sh"]
            assert skipped["event"] == "skipped: another etl sync is still running (lock held)"
            assert (skipped["level"], skipped["lock_file"], skipped["exit_code"]) == (
                "info", str(wrapper.lock_file), 0)
            assert len(fetch(sqlite_url, RUNS)) == 1  # the second never started etl

            # What systemd does on stop: SIGTERM to the whole group.  etl stops
            # claiming, saves what it fetched, and the wrapper returns its code.
            os.killpg(first.pid, signal.SIGTERM)
            out, err = first.communicate(timeout=30)
        finally:
            if first.poll() is None:
                os.killpg(first.pid, signal.SIGKILL)
                first.wait()
        assert (first.returncode, out, err) == (1, "", "")
        [run] = fetch(sqlite_url, RUNS)
        assert (run["exit_code"], run["stop_reason"]) == (1, "interrupted by SIGTERM")
        errors = [r for r in wrapper.log() if r.get("logger") == "etl"]
        events = [e["event"] for e in errors]
        assert events[-1] == f"Error: run {run['id']} did not finish cleanly: interrupted by SIGTERM"
        assert events[0].endswith("; stopped: interrupted.")
        assert wrapper.log()[-1] == errors[-1]  # nothing lost after etl's last words
        done_first = [i for i, s in states(sqlite_url).items() if s == "done"]
        assert 1 <= len(done_first) < 30

        # The lock went with the process: the next run proceeds and finishes the queue.
        third = wrapper.run("--rate", "0")
    assert third.returncode == 0
    assert set(states(sqlite_url).values()) == {"done"}
    assert dict(slow.requests) == dict.fromkeys(ids, 1)
    assert slow.stats()["overlap_count"] == 0


# --- exit codes and messages --------------------------------------------------------


def test_refused_key_exits_3_tells_cron_and_never_shows_the_key(sqlite_url, tmp_path, fake, url):
    wrong = "wrong-key-4242"
    enqueue(sqlite_url, ["AC1"])
    wrapper = Wrapper(tmp_path, sqlite_url, url, key=wrong)

    result = wrapper.run()

    assert result.returncode == 3
    assert result.stdout == ""
    assert result.stderr == f"etl-sync.sh: etl sync exited 3; see {wrapper.log_file}\n"
    wrapped = [r for r in wrapper.log() if r.get("logger") == "etl"]
    # The run's summary line (news: info) says why it stopped; the Error: line is the alarm.
    assert (wrapped[0]["level"], wrapped[0]["event"]) == (
        "info", "Sync run 1: 0 completed, 0 rescheduled, 0 errors; stopped: the API refused the key.")
    errors = [r for r in wrapped if r["level"] == "error"]
    assert len(errors) == 1
    assert errors[0]["event"].startswith("Error: the API refused the key (HTTP 401)")
    assert wrong not in wrapper.log_text() + result.stdout + result.stderr
    assert states(sqlite_url) == {"AC1": "pending"}


def test_a_failed_discovery_is_blamed_on_discover_not_on_sync(sqlite_url, tmp_path, fake, url):
    # Issue 26: ETL_DISCOVER=1 and no watermark yet: discover exits 2, sync succeeds.
    fake.workspace.generate(phone_numbers=1, conversations=1, calls=1, days=1)
    enqueue(sqlite_url, ["AC1"])
    wrapper = Wrapper(tmp_path, sqlite_url, url, ETL_DISCOVER="1")
    result = wrapper.run("--rate", "0")
    assert (result.returncode, result.stdout) == (2, "")
    assert result.stderr == f"etl-sync.sh: etl discover exited 2; see {wrapper.log_file}\n"
    assert states(sqlite_url) == {"AC1": "done"}
    [finished] = wrapper.events("run finished")
    assert finished["exit_code"] == 0


def test_stderr_alerts_can_be_turned_off(sqlite_url, tmp_path, fake, url):
    enqueue(sqlite_url, ["AC1"])  # with nothing due, etl never calls the API
    wrapper = Wrapper(tmp_path, sqlite_url, url, key="wrong-key-4242", ETL_STDERR_ON="")
    result = wrapper.run()
    assert (result.returncode, result.stdout, result.stderr) == (3, "", "")


def test_missing_api_key_is_etls_exit_2_wrapped_as_json(sqlite_url, tmp_path, url):
    wrapper = Wrapper(tmp_path, sqlite_url, url, key="")
    result = wrapper.run()
    assert result.returncode == 2
    assert result.stderr == f"etl-sync.sh: etl sync exited 2; see {wrapper.log_file}\n"
    assert [(r["logger"], r["level"], r["event"]) for r in wrapper.log()] == [
        ("etl", "error", "Error: no API key: set OPENPHONE_API_KEY or pass --api-key")]


def test_item_errors_exit_1_quietly(sqlite_url, tmp_path, fake, url):
    # Larger than etl's 8 MiB body limit: an item error (exit 1), which is for
    # `etl status --check` to report, not for cron to mail every five minutes.
    fake.set_response("AC1", 200, b" " * (Settings().max_body_bytes + 1))
    enqueue(sqlite_url, ["AC1"])
    wrapper = Wrapper(tmp_path, sqlite_url, url)
    result = wrapper.run("--rate", "0")
    assert (result.returncode, result.stdout, result.stderr) == (1, "", "")
    assert states(sqlite_url) == {"AC1": "error"}
    [finished] = wrapper.events("run finished")
    assert (finished["errors"], finished["exit_code"]) == (1, 1)


def _stand_in_etl(tmp_path: Path, body: str) -> Path:
    """A stand-in for `etl` that the wrapper runs like the real one."""
    script = tmp_path / "fake-etl"
    script.write_text("#!/bin/sh\n" + body)
    script.chmod(0o755)
    return script


def test_key_is_masked_and_any_exit_code_propagates(tmp_path):
    # Defence in depth: even if something printed the key, the log would not hold it.
    key = "sk-live-Sup3r$ecret.*"
    stand_in = _stand_in_etl(tmp_path, (
        'echo "{\\"event\\": \\"leak\\", \\"key\\": \\"$OPENPHONE_API_KEY\\"}"\n'
        'echo "plain $OPENPHONE_API_KEY" >&2\n'
        'echo "args: $*" >&2\n'
        "printf 'Error: \"quoted\" C:\\\\dir\\ttab\\001bell\\n' >&2\n"
        "exit 7\n"))
    wrapper = Wrapper(tmp_path, "sqlite:///unused.db", "http://127.0.0.1:9", key=key,
                      ETL_BIN=str(stand_in))

    result = wrapper.run("--limit", "5")

    assert (result.returncode, result.stdout, result.stderr) == (7, "", "")
    assert key not in wrapper.log_text()
    assert [(r.get("logger"), r["event"], r.get("key")) for r in wrapper.log()] == [
        (None, "leak", "***"),
        ("etl", "plain ***", None),
        ("etl", "args: sync --log-format json --max-runtime 240 --limit 5", None),
        # Quotes, backslashes and tabs survive; other control characters are dropped.
        ("etl", 'Error: "quoted" C:\\dir\ttabbell', None),
    ]


def test_etl_killed_by_a_signal_is_logged(tmp_path):
    stand_in = _stand_in_etl(tmp_path, "kill -KILL $$\n")
    wrapper = Wrapper(tmp_path, "sqlite:///unused.db", "http://127.0.0.1:9", ETL_BIN=str(stand_in))
    result = wrapper.run()
    assert (result.returncode, result.stdout) == (137, "")
    [line] = wrapper.log()
    assert (line["logger"], line["level"], line["event"], line["exit_code"]) == (
        "etl-sync.sh", "error", "etl sync was killed by signal 9", 137)


@pytest.mark.parametrize(("case", "message"), [
    ("no database url", "ETL_DATABASE_URL is not set (put it in the env file): refusing to use a default "
                        "SQLite file"),
    ("bad etl bin", "etl executable '/nonexistent/etl' not found (set ETL_BIN)"),
    ("bad max runtime", "ETL_MAX_RUNTIME must be a whole number of seconds >= 1, not '4m'"),
], ids=["no-database-url", "bad-etl-bin", "bad-max-runtime"])
def test_configuration_errors_exit_2_on_stderr_and_in_the_log(sqlite_url, tmp_path, case, message):
    settings = {"bad etl bin": {"ETL_BIN": "/nonexistent/etl"},
                "bad max runtime": {"ETL_MAX_RUNTIME": "4m"}}.get(case, {})
    db = None if case == "no database url" else sqlite_url
    wrapper = Wrapper(tmp_path, db, "http://127.0.0.1:9", **settings)

    result = wrapper.run()

    assert (result.returncode, result.stdout) == (2, "")
    assert result.stderr == f"etl-sync.sh: {message}\n"
    [line] = wrapper.log()
    assert (line["logger"], line["level"], line["event"], line["exit_code"]) == (
        "etl-sync.sh", "error", message, 2)
    assert not wrapper.lock_file.exists()  # never got as far as running


def test_missing_env_file_exits_2(tmp_path):
    wrapper = Wrapper(tmp_path, None, "http://127.0.0.1:9")
    missing = tmp_path / "nope" / "env"
    result = wrapper.run(ETL_ENV_FILE=str(missing))
    assert (result.returncode, result.stdout) == (2, "")
    # No log file is known yet: the JSON line goes to stderr.
    [line] = [json.loads(x) for x in result.stderr.splitlines()]
    assert line["event"] == (f"cannot read env file {missing} (set ETL_ENV_FILE, or ETL_ENV_FILE= to "
                             "load none)")
    assert line["exit_code"] == 2
    assert not wrapper.log_file.exists()


def test_unwritable_log_file_exits_2(sqlite_url, tmp_path):
    wrapper = Wrapper(tmp_path, sqlite_url, "http://127.0.0.1:9",
                      ETL_LOG_FILE=str(tmp_path / "no-such-dir" / "sync.jsonl"))
    result = wrapper.run()
    assert result.returncode == 2
    [line] = [json.loads(x) for x in result.stderr.splitlines()]
    assert line["event"].startswith(f"cannot append to log file {tmp_path}/no-such-dir/sync.jsonl")


def test_world_readable_env_file_is_warned_about(tmp_path):
    wrapper = Wrapper(tmp_path, None, "http://127.0.0.1:9")
    wrapper.env_file.chmod(0o644)
    assert wrapper.run().returncode == 2  # no database URL: stops right after the check
    warning = wrapper.log()[0]
    assert (warning["level"], warning["event"], warning["env_file"]) == (
        "warning", "env file is world-readable and holds the API key: chmod o-r it",
        str(wrapper.env_file))


def test_log_to_stderr_for_systemd(sqlite_url, tmp_path, fake, url):
    enqueue(sqlite_url, ["AC1"])
    wrapper = Wrapper(tmp_path, sqlite_url, url, ETL_LOG_FILE="-")
    result = wrapper.run("--rate", "0")
    assert (result.returncode, result.stdout) == (0, "")
    records = [json.loads(line) for line in result.stderr.splitlines()]
    assert [r["event"] for r in records] == ["run started", "call", "run finished",
                                             "Sync run 1: 1 completed, 0 rescheduled, 0 errors."]
    assert records[-1]["level"] == "info"
    assert not wrapper.log_file.exists()


# --- the script and the schedule files ------------------------------------------------


def test_wrapper_is_valid_bash_with_strict_mode():
    text = WRAPPER.read_text()
    assert text.startswith("#!/usr/bin/env bash\n")
    assert "\nset -euo pipefail\n" in text
    assert os.access(WRAPPER, os.X_OK)
    assert subprocess.run(["bash", "-n", str(WRAPPER)], capture_output=True).returncode == 0


@pytest.mark.skipif(shutil.which("shellcheck") is None, reason="shellcheck is not installed")
def test_wrapper_passes_shellcheck():
    result = subprocess.run(["shellcheck", str(WRAPPER)], capture_output=True, text=True)
    assert (result.returncode, result.stdout) == (0, "")


def _minutes(cron_field: str) -> int:
    match = re.fullmatch(r"\*/(\d+)", cron_field)
    assert match, cron_field
    return int(match.group(1))


def _unit(path: Path) -> dict[str, str]:
    return dict(line.split("=", 1) for line in path.read_text().splitlines()
                if "=" in line and not line.startswith("#"))


def test_schedules_leave_room_for_the_max_runtime():
    default = re.search(r"ETL_MAX_RUNTIME=\$\{ETL_MAX_RUNTIME:-(\d+)\}", WRAPPER.read_text())
    assert default
    max_runtime = int(default.group(1))

    jobs = [line.split() for line in (CRON / "crontab").read_text().splitlines()
            if line and not line.startswith("#") and "etl-sync.sh" in line and " prune " not in line]
    assert len(jobs) == 1 and jobs[0][5].endswith("/cron/etl-sync.sh")
    cron_interval = _minutes(jobs[0][0]) * 60

    service, timer = _unit(CRON / "etl-sync.service"), _unit(CRON / "etl-sync.timer")
    assert service["Type"] == "oneshot" and service["ExecStart"].endswith("/cron/etl-sync.sh")
    assert timer["Unit"] == "etl-sync.service"
    timer_interval = _minutes(timer["OnCalendar"].split(":", 1)[1].replace("0/", "*/")) * 60
    start_timeout = int(service["TimeoutStartSec"])

    # etl stops claiming after max_runtime and finishes in-flight requests
    # (read timeout 20 s) well before the next run is due.
    assert max_runtime + 30 <= start_timeout < timer_interval == cron_interval


def test_env_example_names_only_settings_that_exist():
    example = (CRON / "etl-sync.env.example").read_text()
    names = re.findall(r"^#?([A-Z][A-Z0-9_]+)=", example, flags=re.MULTILINE)
    # Read by etl itself (click's envvar), exported to it by the wrapper's `set -a`.
    known_to_etl = {"ETL_DATABASE_URL", "OPENPHONE_API_KEY", "OPENPHONE_BASE_URL", "ETL_TRANSCRIPTS"}
    script = WRAPPER.read_text()
    assert {"ETL_DATABASE_URL", "OPENPHONE_API_KEY"} <= set(names)
    for name in names:
        assert name in known_to_etl or f"{name}=${{{name}" in script, name
    # It is shell syntax the wrapper can source as it stands.
    shown = subprocess.run(["bash", "-c", 'set -a; . "$1"; printf %s "$ETL_DATABASE_URL"', "-",
                            str(CRON / "etl-sync.env.example")], capture_output=True, text=True)
    assert shown.stdout == "postgresql+psycopg://etl:change-me@db.internal:5432/openphone"
