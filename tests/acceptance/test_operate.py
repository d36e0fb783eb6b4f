"""Operating the ETL: `etl sync` limits, run history, `etl backfill` and `etl status`.

Every command runs through click's CliRunner with ``--database-url`` on each
database, and every command that fetches talks to the fake API over real HTTP
(``serve(fake)``) with ``--rate 0``.  The resume and crash tests run `etl` as a
subprocess so a real SIGINT / SIGKILL can hit it mid-run.
"""

from __future__ import annotations

import fcntl
import json
import os
import pty
import re
import signal
import struct
import subprocess
import sys
import termios
import time
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from click.testing import CliRunner, Result
from sqlalchemy.engine import Engine

from etl import Etl, db
from etl.cli import cli
from etl.clock import utcnow
from etl.config import Settings
from etl.states import TRANSCRIPT_COUNTERS
from etl.tables import fields_t, jobs_t, lines_t, queue_t, runs_t, steps_t, summaries_t
from etl.testing import FakeOpenPhone, Faults, sample_summary, serve
from tests.support.db import API_KEY, fresh_url, make_due
from tests.support.proc import read_terminal

QUEUE = queue_t
RUNS = runs_t
SUMMARIES = summaries_t
CHILDREN = (lines_t, steps_t, jobs_t, fields_t)
ETL_BIN = Path(sys.executable).with_name("etl")
# The CLI reads these from the environment: the tests pass everything as options.
CLEAN_ENV: dict[str, str | None] = {
    "ETL_DATABASE_URL": None, "OPENPHONE_API_KEY": None, "OPENPHONE_BASE_URL": None,
    "ETL_LOG_FORMAT": None,
}
PAST = datetime(2000, 1, 1)
FUTURE = datetime(2999, 1, 1)
MAX_BODY = Settings().max_body_bytes


# --- helpers ---------------------------------------------------------------------


def etl(db_url: str, *args: object) -> Result:
    """``etl ARGS --database-url DB`` in-process; unexpected exceptions propagate."""
    argv = [str(a) for a in args]
    argv += ["--database-url", db_url]
    return CliRunner().invoke(cli, argv, env=CLEAN_ENV, catch_exceptions=False)


def api(url: str, key: str = API_KEY) -> list[str]:
    return ["--base-url", url, "--api-key", key, "--rate", "0"]


def plain(stderr: str) -> list[str]:
    """stderr without the JSON log lines: what a person reads (Error: …, notices)."""
    return [line for line in stderr.splitlines() if line and not line.startswith("{")]


def events(stderr: str, name: str) -> list[dict[str, Any]]:
    found = []
    for line in stderr.splitlines():
        if line.startswith("{"):
            record = json.loads(line)
            if record["event"] == name:
                found.append(record)
    return found


def put(engine: Engine, call_id: str, state: str = "pending", **cols: Any) -> None:
    with engine.begin() as conn:
        conn.execute(sa.insert(QUEUE).values(call_id=call_id, state=state, **cols))


def enqueue_in_order(engine: Engine, ids: list[str]) -> None:
    """Queue ``ids`` due in list order (claiming takes the oldest due first)."""
    for n, call_id in enumerate(ids):
        put(engine, call_id, next_attempt_at=PAST + timedelta(seconds=n))


def queue(engine: Engine) -> dict[str, dict[str, Any]]:
    with engine.connect() as conn:
        return {r.call_id: dict(r._mapping) for r in conn.execute(sa.select(QUEUE))}


def states(engine: Engine) -> dict[str, str]:
    return {call_id: row["state"] for call_id, row in queue(engine).items()}


def runs(engine: Engine) -> list[dict[str, Any]]:
    with engine.connect() as conn:
        return [dict(r._mapping) for r in conn.execute(sa.select(RUNS).order_by(RUNS.c.id))]


def add_run(engine: Engine, **cols: Any) -> int:
    with engine.begin() as conn:
        return int(conn.execute(sa.insert(RUNS).values(**cols)).inserted_primary_key[0])


def counts(run: dict[str, Any]) -> tuple[Any, ...]:
    return (run["command"], run["claimed"], run["completed"], run["rescheduled"], run["failed"],
            run["errors"], run["exit_code"], run["stop_reason"])


def summary_of(engine: Engine, call_id: str) -> dict[str, Any]:
    with engine.connect() as conn:
        return dict(conn.execute(sa.select(SUMMARIES).where(SUMMARIES.c.call_id == call_id)).one()
                    ._mapping)


def children_of(engine: Engine, call_id: str) -> dict[str, list[dict[str, Any]]]:
    with engine.connect() as conn:
        return {
            t.name: [dict(r._mapping) for r in conn.execute(
                sa.select(t).where(t.c.call_id == call_id).order_by(*t.primary_key.columns))]
            for t in CHILDREN
        }


def wait_for(check: Callable[[], bool], proc: subprocess.Popen[str], timeout: float, what: str) -> None:
    """Poll ``check`` while ``proc`` runs; fail at once, with its output, if it exits first."""
    deadline = time.monotonic() + timeout
    while not check():
        if proc.poll() is not None:
            out, err = proc.communicate()
            raise AssertionError(f"etl exited {proc.returncode} before {what}:\n{out or ''}{err or ''}")
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.05)


@pytest.fixture
def url(fake: FakeOpenPhone) -> Iterator[str]:
    """The fake API on a real HTTP server."""
    with serve(fake) as base_url:
        yield base_url


# --- etl sync: --limit, --max-runtime, --dry-run ------------------------------------


def test_sync_limit_claims_exactly_n_and_leaves_the_rest_pending(db_url, engine, fake, url):
    enqueue_in_order(engine, ["AC1", "AC2", "AC3", "AC4", "AC5"])
    before = queue(engine)

    result = etl(db_url, "sync", "--limit", 3, *api(url))

    [run] = runs(engine)
    assert (result.exit_code, result.stdout, plain(result.stderr)) == (
        0, f"Sync run {run['id']}: 3 completed, 0 rescheduled, 0 errors.\n", [])
    assert states(engine) == {"AC1": "done", "AC2": "done", "AC3": "done",
                              "AC4": "pending", "AC5": "pending"}
    after = queue(engine)
    # Never claimed: the rows are exactly as they were, still due.
    assert after["AC4"] == before["AC4"] and after["AC5"] == before["AC5"]
    assert after["AC4"]["lease_owner"] is None
    assert dict(fake.requests) == {"AC1": 1, "AC2": 1, "AC3": 1}
    [run] = runs(engine)
    assert counts(run) == ("sync", 3, 3, 0, 0, 0, 0, "limit reached")
    assert run["finished_at"] is not None

    result = etl(db_url, "sync", "--limit", 10, *api(url))
    assert result.exit_code == 0
    assert set(states(engine).values()) == {"done"}
    assert counts(runs(engine)[1]) == ("sync", 2, 2, 0, 0, 0, 0, None)


@pytest.mark.slow
def test_sync_max_runtime_stops_early_releases_the_rest_and_exits_0(db_url, engine, url):
    slow = FakeOpenPhone(api_key=API_KEY, latency_ms=500)
    ids = [f"AC{n:03d}" for n in range(60)]
    enqueue_in_order(engine, ids)
    with serve(slow) as slow_url:
        started = time.monotonic()
        # 2 s, not 1: room for the first claim on a machine busy with the rest of the suite.
        result = etl(db_url, "sync", "--max-runtime", 2, "--concurrency", 2, *api(slow_url))
        elapsed = time.monotonic() - started

    assert (result.exit_code, plain(result.stderr)) == (0, [])
    # Stopped by --max-runtime: exit 0, so the summary line has no "stopped:".
    assert re.fullmatch(r"Sync run \d+: \d+ completed, 0 rescheduled, 0 errors\.\n", result.stdout), result.stdout
    # 60 requests of ~0.5 s two at a time would take ~15 s.
    assert elapsed < 8, elapsed
    rows = queue(engine)
    done = {i for i, r in rows.items() if r["state"] == "done"}
    pending = {i for i, r in rows.items() if r["state"] == "pending"}
    assert 1 <= len(done) < 60 and len(done) + len(pending) == 60
    # Each fetched item was saved (in-flight work finished), nothing else fetched.
    assert set(slow.requests) == done and slow.stats()["requests"]["max_per_id"] == 1
    now = utcnow()
    for call_id in pending:
        row = rows[call_id]
        assert (row["lease_owner"], row["lease_expires_at"], row["attempts"]) == (None, None, 0)
        assert row["next_attempt_at"] <= now
    [run] = runs(engine)
    # claimed counts the released items too (how many depends on the claim batch size).
    assert len(done) <= run["claimed"] <= 60
    assert counts(run)[2:] == (len(done), 0, 0, 0, 0, "max runtime reached")

    result = etl(db_url, "sync", "--dry-run")
    assert result.stdout.splitlines()[0].startswith(f"{len(pending)} items due now, oldest due since")


def test_sync_dry_run_shows_what_is_due_and_changes_nothing(db_url, engine):
    put(engine, "AC1", next_attempt_at=PAST, attempts=2, last_error="timeout (ReadTimeout)")
    put(engine, "AC2", next_attempt_at=PAST + timedelta(days=1))
    put(engine, "AC3", next_attempt_at=FUTURE)
    put(engine, "AC4", state="done", next_attempt_at=PAST)
    before = queue(engine)

    # No API key and no API: a dry run fetches nothing.
    result = etl(db_url, "sync", "--dry-run")
    assert (result.exit_code, plain(result.stderr)) == (0, [])
    assert result.stdout == (
        "2 items due now, oldest due since 2000-01-01 00:00:00 UTC\n"
        "  AC1  attempts=2  last error: timeout (ReadTimeout)\n"
        "  AC2  attempts=0\n"
    )
    result = etl(db_url, "sync", "--dry-run", "--limit", 1)
    assert result.exit_code == 0
    assert result.stdout == (
        "2 items due now, oldest due since 2000-01-01 00:00:00 UTC; a run with --limit 1 would claim 1\n"
        "  AC1  attempts=2  last error: timeout (ReadTimeout)\n"
        "  … and 1 more\n"
    )
    assert queue(engine) == before
    assert runs(engine) == []


def test_sync_without_api_key_exits_2_and_records_no_run(db_url, engine):
    put(engine, "AC1")
    result = etl(db_url, "sync", "--base-url", "http://127.0.0.1:9")
    assert result.exit_code == 2
    assert plain(result.stderr) == ["Error: no API key: set OPENPHONE_API_KEY or pass --api-key"]
    assert runs(engine) == []


@pytest.mark.parametrize(("key", "http_status"), [("wrong-key-123", 401), ("forbidden-key-9", 403)])
def test_sync_refused_key_exits_3_and_leaves_items_as_they_were(db_url, engine, key, http_status):
    fake_forbids = FakeOpenPhone(api_key=API_KEY, forbidden_keys=frozenset({"forbidden-key-9"}))
    enqueue_in_order(engine, ["AC1", "AC2"])
    before = queue(engine)
    with serve(fake_forbids) as base_url:
        result = etl(db_url, "sync", *api(base_url, key))

    assert result.exit_code == 3
    [message] = plain(result.stderr)
    assert message.startswith(f"Error: the API refused the key (HTTP {http_status}): ")
    assert message.endswith("; the run stopped and every claimed item was left as it was. "
                            "Check OPENPHONE_API_KEY.")
    assert key not in result.stdout + result.stderr
    assert queue(engine) == before
    [run] = runs(engine)
    assert counts(run)[:7] == ("sync", 2, 0, 0, 0, 0, 3)
    assert run["stop_reason"].startswith(f"the API refused the key (HTTP {http_status})")


# --- run history ----------------------------------------------------------------


def test_sync_runs_row_has_exact_counts_and_exit_code(db_url, engine, fake, url):
    fake.set_summary("AC3", sample_summary("AC3", "in-progress"))
    fake.set_summary("AC4", sample_summary("AC4", "failed"))
    fake.set_response("AC5", 404, {"message": "Call summary not found", "status": 404})
    # Larger than max_body_bytes: "rejected", an item error (exit 1).
    fake.set_response("AC6", 200, b" " * (MAX_BODY + 1))
    enqueue_in_order(engine, ["AC1", "AC2", "AC3", "AC4", "AC5", "AC6"])

    result = etl(db_url, "sync", *api(url), "--not-found-window", "0")  # the 404 final at once

    [run] = runs(engine)
    assert result.exit_code == 1
    assert plain(result.stderr) == [
        f"Error: run {run['id']} did not finish cleanly: 1 item(s) hit an unexpected error; see the log"
    ]
    assert counts(run) == ("sync", 6, 2, 1, 1, 1, 1, None)
    assert (run["absent"], run["not_found"], run["invalid"]) == (0, 1, 0)  # not in failed (issue 20, item 10)
    assert run["started_at"] <= run["finished_at"]
    assert states(engine) == {"AC1": "done", "AC2": "done", "AC3": "pending", "AC4": "failed",
                              "AC5": "not_found", "AC6": "error"}
    [finished] = events(result.stderr, "run finished")
    assert {k: finished[k] for k in ("run_id", "claimed", "completed", "rescheduled", "failed", "not_found",
                                     "errors", "exit_code")} == {
        "run_id": run["id"], "claimed": 6, "completed": 2, "rescheduled": 1, "failed": 1, "not_found": 1,
        "errors": 1, "exit_code": 1}
    assert finished["level"] == "warning"  # exit 1: a run that needs a look (issue 20, item 13)
    assert sorted(e["call_id"] for e in events(result.stderr, "call")) == [
        "AC1", "AC2", "AC3", "AC4", "AC5", "AC6"]


def test_status_shows_an_unfinished_run_as_running_or_crashed(db_url, engine):
    base = utcnow().replace(microsecond=0)
    ok_id = add_run(engine, command="sync", started_at=base - timedelta(seconds=120),
                    finished_at=base - timedelta(seconds=60), claimed=1, completed=1, exit_code=0)
    crashed_id = add_run(engine, command="sync", started_at=base - timedelta(seconds=30), claimed=5,
                         completed=2)

    text = etl(db_url, "status")
    assert text.exit_code == 0
    lines = text.stdout.splitlines()
    start = lines.index("Last runs:")
    assert lines[start + 1] == (f"  #{crashed_id} sync     {(base - timedelta(seconds=30)).isoformat()}Z  "
                                "running or crashed: 5 claimed, 2 completed, 0 rescheduled, 0 errors")
    assert lines[start + 2] == (f"  #{ok_id} sync     {(base - timedelta(seconds=120)).isoformat()}Z  "
                                "exit 0: 1 claimed, 1 completed, 0 rescheduled, 0 errors")

    data = json.loads(etl(db_url, "status", "--json").stdout)
    assert [r["id"] for r in data["last_runs"]] == [crashed_id, ok_id]
    assert (data["last_runs"][0]["finished_at"], data["last_runs"][0]["exit_code"]) == (None, None)
    # An unfinished run is neither a success nor a failure for --check.
    assert data["last_successful_run_finished_at"] == f"{(base - timedelta(seconds=60)).isoformat()}Z"
    assert etl(db_url, "status", "--check").exit_code == 0


@pytest.mark.slow
def test_killed_run_stays_unfinished_and_its_items_come_back_after_the_lease(db_url, engine, tmp_path):
    slow = FakeOpenPhone(api_key=API_KEY, latency_ms=200)
    ids = [f"AC{n:03d}" for n in range(40)]
    enqueue_in_order(engine, ids)
    with serve(slow) as slow_url:
        proc = subprocess.Popen(
            [ETL_BIN, "sync", "--database-url", db_url, *api(slow_url), "--concurrency", "2",
             "--log-format", "json"],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=_subprocess_env(tmp_path))
        try:
            wait_for(lambda: list(states(engine).values()).count("done") >= 3, proc, 30, "3 items done")
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.communicate(timeout=10)
        done_at_kill = {i for i, s in states(engine).items() if s == "done"}

        [run] = runs(engine)
        rows = queue(engine)
        leased = {i for i, r in rows.items() if r["state"] == "pending" and r["lease_owner"] is not None}
        never_claimed = set(ids) - done_at_kill - leased
        assert (run["finished_at"], run["exit_code"]) == (None, None)
        assert run["claimed"] == len(done_at_kill) + len(leased)
        assert leased  # the kill caught work in flight
        status = etl(db_url, "status")
        assert f"#{run['id']} sync" in status.stdout
        assert f"running or crashed: {run['claimed']} claimed" in status.stdout
        # Leased to the dead run: not due until the lease expires.
        assert etl(db_url, "sync", "--dry-run").stdout.splitlines()[0].startswith(
            f"{len(never_claimed)} item")
        assert {rows[i]["next_attempt_at"] > utcnow() for i in leased} == {True}

        make_due(engine)  # the leases expired
        result = etl(db_url, "sync", *api(slow_url), "--concurrency", "8")

    assert result.exit_code == 0
    assert set(states(engine).values()) == {"done"}
    left = len(leased) + len(never_claimed)
    assert counts(runs(engine)[1]) == ("sync", left, left, 0, 0, 0, 0, None)
    # Only what the killed run fetched but never saved is fetched a second time.
    twice = {i for i, n in slow.requests.items() if n == 2}
    assert twice <= leased and slow.stats()["requests"]["max_per_id"] <= 2
    assert set(slow.requests) == set(ids)


# --- etl backfill -----------------------------------------------------------------


def test_backfill_file_enqueues_then_syncs_with_progress_lines(db_url, engine, fake, url, tmp_path):
    put(engine, "AC3", state="done", next_attempt_at=PAST)
    ids = tmp_path / "ids.txt"
    ids.write_text("AC1\n# a comment\n\nAC2\nBAD1\nAC3\n")

    result = etl(db_url, "backfill", "--file", ids, *api(url))

    [run] = runs(engine)
    assert result.exit_code == 0
    assert plain(result.stderr) == [
        f"{ids}:5: does not start with AC: 'BAD1' (skipped)",
        "Enqueued 2 new ids (1 already queued, 1 invalid skipped).",
    ]
    assert result.stdout == f"Backfill run {run['id']}: 2 completed, 0 rescheduled, 0 errors.\n"
    assert counts(run) == ("backfill", 2, 2, 0, 0, 0, 0, None)
    assert states(engine) == {"AC1": "done", "AC2": "done", "AC3": "done"}
    # An id already done is not fetched again by enqueueing it.
    assert dict(fake.requests) == {"AC1": 1, "AC2": 1}
    # Not a terminal: progress is logged (at least when everything is done).
    last = events(result.stderr, "progress")[-1]
    assert (last["done"], last["remaining"]) == (2, 0)


def _terminal_mix(engine: Engine) -> None:
    finished = datetime(2024, 1, 1)
    put(engine, "ACfailed1", state="failed", finished_at=finished, attempts=1,
        last_error="the API reports that the summary failed")
    put(engine, "ACfailed2", state="failed", finished_at=finished, attempts=1,
        last_error="the API reports that the summary failed")
    put(engine, "ACerror1", state="error", finished_at=finished, attempts=8, consecutive_errors=8,
        last_error="gave up after 8 attempts: timeout (ReadTimeout)")
    put(engine, "ACabsent1", state="absent", finished_at=finished, attempts=20,
        incomplete_since=finished - timedelta(days=1), last_error="no summary after 24 h")
    put(engine, "ACnotfound1", state="not_found", finished_at=finished, attempts=1,
        last_error="Call summary not found")
    put(engine, "ACinvalid1", state="invalid", finished_at=finished, attempts=1,
        last_error="Invalid call id")
    put(engine, "ACdone1", state="done", finished_at=finished, attempts=1)
    put(engine, "ACwaiting1", next_attempt_at=FUTURE)


def test_backfill_status_requeues_exactly_the_selected_states(db_url, engine, fake, url):
    _terminal_mix(engine)
    before = queue(engine)

    result = etl(db_url, "backfill", "--status", "failed,error,absent", *api(url))

    [run] = runs(engine)
    assert result.exit_code == 0
    assert plain(result.stderr) == ["Re-queued 4 items (failed, error, absent)."]
    assert result.stdout == f"Backfill run {run['id']}: 4 completed, 0 rescheduled, 0 errors.\n"
    requeued = {"ACfailed1", "ACfailed2", "ACerror1", "ACabsent1"}
    assert set(fake.requests) == requeued
    after = queue(engine)
    for call_id, row in after.items():
        if call_id in requeued:
            # Fresh counters: one attempt, the one this backfill made.
            assert (row["state"], row["attempts"], row["consecutive_errors"], row["last_error"],
                    row["incomplete_since"]) == ("done", 1, 0, None, None)
        else:
            assert row == before[call_id]


def test_backfill_since_until_select_by_finished_at(db_url, engine, fake, url):
    put(engine, "ACjan", state="failed", finished_at=datetime(2024, 1, 1))
    put(engine, "ACfeb", state="failed", finished_at=datetime(2024, 2, 1))
    put(engine, "ACfeb15", state="error", finished_at=datetime(2024, 2, 15))
    put(engine, "ACmar", state="failed", finished_at=datetime(2024, 3, 1))

    # --since is inclusive, --until exclusive.
    r = etl(db_url, "backfill", "--status", "failed", "--since", "2024-02-01", "--until", "2024-03-01",
            *api(url))
    assert (r.exit_code, plain(r.stderr)) == (0, ["Re-queued 1 item (failed)."])
    assert states(engine) == {"ACjan": "failed", "ACfeb": "done", "ACfeb15": "error", "ACmar": "failed"}

    r = etl(db_url, "backfill", "--status", "failed,error", "--since", "2024-02-01T00:00:00", *api(url))
    assert (r.exit_code, plain(r.stderr)) == (0, ["Re-queued 2 items (failed, error)."])
    assert states(engine) == {"ACjan": "failed", "ACfeb": "done", "ACfeb15": "done", "ACmar": "done"}

    r = etl(db_url, "backfill", "--status", "failed", "--until", "2024-02-01 00:00:00", *api(url))
    assert (r.exit_code, plain(r.stderr)) == (0, ["Re-queued 1 item (failed)."])
    assert set(states(engine).values()) == {"done"}
    assert dict(fake.requests) == {"ACjan": 1, "ACfeb": 1, "ACfeb15": 1, "ACmar": 1}
    assert [counts(run)[:3] for run in runs(engine)] == [("backfill", 1, 1), ("backfill", 2, 2),
                                                          ("backfill", 1, 1)]


def test_backfill_dry_run_counts_and_changes_nothing(db_url, engine, tmp_path):
    _terminal_mix(engine)
    put(engine, "ACdue1", next_attempt_at=PAST)
    ids = tmp_path / "ids.txt"
    ids.write_text("ACnew1\nnot-an-id\nACfailed1\n")
    before = queue(engine)

    r = etl(db_url, "backfill", "--dry-run", "--status", "failed,error", "--file", ids)
    assert (r.exit_code, plain(r.stderr)) == (0, [f"{ids}:2: does not start with AC: 'not-an-id' (skipped)"])
    assert r.stdout == (
        f"Would enqueue up to 2 ids from {ids} (1 invalid skipped).\n"
        "Would re-queue 1 error item.\n"
        "Would re-queue 2 failed items.\n"
        "Would re-queue 3 items in all; 1 item is due now.\n"
    )
    r = etl(db_url, "backfill", "--dry-run", "--force", "--status", "absent")
    assert r.stdout == (
        "Would re-queue 1 absent item.\n"
        "Would re-queue 1 done item.\n"
        "Would re-queue 2 items in all; 1 item is due now.\n"
    )
    r = etl(db_url, "backfill", "--dry-run", "--status", "failed", "--since", "2024-06-01")
    assert r.stdout == "Would re-queue 0 items in all; 1 item is due now.\n"
    assert queue(engine) == before
    assert runs(engine) == []


@pytest.mark.parametrize(("args", "message"), [
    (["--status", "bogus"],
     "Error: unknown state 'bogus' in --status; choose from done, failed, absent, not_found, invalid, error"),
    (["--status", "pending"],
     "Error: unknown state 'pending' in --status; choose from done, failed, absent, not_found, invalid, "
     "error"),
    (["--status", "done"], "Error: re-fetching done items needs --force"),
    (["--since", "2024-01-01"],
     "Error: --since/--until select items to re-queue: add --status STATES or --force"),
    (["--status", "failed"], "Error: no API key: set OPENPHONE_API_KEY or pass --api-key"),
])
def test_backfill_usage_errors_exit_2_and_change_nothing(db_url, engine, args, message):
    _terminal_mix(engine)
    before = queue(engine)
    r = etl(db_url, "backfill", *args)
    assert (r.exit_code, plain(r.stderr)) == (2, [message])
    assert queue(engine) == before
    assert runs(engine) == []


def test_backfill_force_rewrites_changed_content_only(db_url, engine, fake, url):
    enqueue_in_order(engine, ["AC1", "AC2"])
    assert etl(db_url, "sync", *api(url)).exit_code == 0
    # Marks that only a rewrite would erase, and an old sync time to see it advance.
    with engine.begin() as conn:
        lines = CHILDREN[0]
        conn.execute(sa.update(lines).where(lines.c.position == 0).values(text="SENTINEL"))
        conn.execute(sa.update(SUMMARIES).values(last_synced_at=PAST))
    before = {i: (summary_of(engine, i), children_of(engine, i)) for i in ("AC1", "AC2")}
    changed = {
        "callId": "AC2", "status": "completed", "summary": ["New first line.", "New second line."],
        "nextSteps": ["Call back."],
        "jobs": [{"icon": "📋", "name": "Recheck", "result": {"data": [
            {"name": "Score", "value": 7}, {"name": "Ok", "value": True}]}}],
    }
    fake.set_summary("AC2", changed)

    r = etl(db_url, "backfill", "--force", *api(url))

    [_, run] = runs(engine)
    assert r.exit_code == 0
    assert plain(r.stderr) == ["Re-queued 2 items (done)."]
    assert r.stdout == f"Backfill run {run['id']}: 2 completed, 0 rescheduled, 0 errors.\n"
    assert dict(fake.requests) == {"AC1": 2, "AC2": 2}
    assert {i: (row["state"], row["attempts"]) for i, row in queue(engine).items()} == {
        "AC1": ("done", 1), "AC2": ("done", 1)}

    # Unchanged content: children untouched (the sentinel survives), only last_synced_at moves.
    parent, kids = summary_of(engine, "AC1"), children_of(engine, "AC1")
    assert kids == before["AC1"][1] and kids["call_summary_lines"][0]["text"] == "SENTINEL"
    assert parent["last_synced_at"] > PAST
    assert {**parent, "last_synced_at": PAST} == before["AC1"][0]

    # Changed content: parent and children replaced as a whole.
    parent, kids = summary_of(engine, "AC2"), children_of(engine, "AC2")
    assert parent["content_hash"] != before["AC2"][0]["content_hash"]
    assert json.loads(parent["raw_json"]) == {"data": changed}
    assert (parent["summary_text"], parent["line_count"], parent["next_step_count"],
            parent["job_count"]) == ("New first line.\nNew second line.", 2, 1, 1)
    assert parent["first_synced_at"] == before["AC2"][0]["first_synced_at"]
    assert parent["last_synced_at"] > PAST
    assert [(r["position"], r["text"]) for r in kids["call_summary_lines"]] == [
        (0, "New first line."), (1, "New second line.")]
    assert [(r["position"], r["text"]) for r in kids["call_next_steps"]] == [(0, "Call back.")]
    assert [(r["job_position"], r["name"], r["icon"]) for r in kids["call_jobs"]] == [
        (0, "Recheck", "📋")]
    assert [(r["field_position"], r["name"], r["value_type"], r["value_number"], r["value_boolean"])
            for r in kids["call_job_fields"]] == [(0, "Score", "number", 7.0, None),
                                                  (1, "Ok", "boolean", None, True)]


@pytest.mark.slow
def test_backfill_resumes_after_an_interrupt(db_url, engine, tmp_path):
    slow = FakeOpenPhone(api_key=API_KEY, latency_ms=200)
    ids = [f"AC{n:03d}" for n in range(40)]
    id_file = tmp_path / "ids.txt"
    id_file.write_text("\n".join(ids) + "\n")
    with serve(slow) as slow_url:
        proc = subprocess.Popen(
            [ETL_BIN, "backfill", "--file", id_file, "--database-url", db_url, *api(slow_url),
             "--concurrency", "2", "--log-format", "json"],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=_subprocess_env(tmp_path))
        try:
            wait_for(lambda: list(states(engine).values()).count("done") >= 5, proc, 30, "5 items done")
            # The run is recorded when it starts, not only when it ends.
            [running] = runs(engine)
            assert (running["command"], running["finished_at"], running["exit_code"]) == (
                "backfill", None, None)
            proc.send_signal(signal.SIGINT)
            out, err = proc.communicate(timeout=30)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()

        [first] = runs(engine)
        done_first = {i for i, s in states(engine).items() if s == "done"}
        assert proc.returncode == 1
        assert plain(err)[-1] == (f"Error: run {first['id']} did not finish cleanly: "
                                  "interrupted by SIGINT")
        assert out == (f"Backfill run {first['id']}: {len(done_first)} completed, 0 rescheduled, 0 errors; "
                       "stopped: interrupted.\n")  # issue 26: the line says why it stopped
        assert first["finished_at"] is not None
        assert len(done_first) <= first["claimed"] <= 40
        assert counts(first)[2:] == (len(done_first), 0, 0, 0, 1, "interrupted by SIGINT")
        assert 5 <= len(done_first) < 40
        rows = queue(engine)
        now = utcnow()
        for call_id in set(ids) - done_first:
            assert rows[call_id]["state"] == "pending"
            assert (rows[call_id]["lease_owner"], rows[call_id]["attempts"]) == (None, 0)
            assert rows[call_id]["next_attempt_at"] <= now

        # Running it again continues with whatever is still due.
        again = etl(db_url, "backfill", *api(slow_url), "--concurrency", "8")

    [_, second] = runs(engine)
    left = 40 - len(done_first)
    assert again.exit_code == 0
    assert again.stdout == f"Backfill run {second['id']}: {left} completed, 0 rescheduled, 0 errors.\n"
    assert counts(second) == ("backfill", left, left, 0, 0, 0, 0, None)
    assert set(states(engine).values()) == {"done"}
    # Interrupted in-flight fetches were saved, never repeated: one request per id.
    assert dict(slow.requests) == dict.fromkeys(ids, 1)


def on_terminal(argv: list[object], env: dict[str, str]) -> tuple[int, str, str]:
    """Run argv with stderr on a pseudo-terminal: (exit code, stdout, terminal text sans colours)."""
    controller, terminal = pty.openpty()
    # A real terminal has a size; tqdm draws nothing on a 0-column one.
    fcntl.ioctl(terminal, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 120, 0, 0))
    try:
        proc = subprocess.Popen([str(a) for a in argv], stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                stderr=terminal, text=True, env=env)
        os.close(terminal)
        screen = read_terminal(controller)
        out, _ = proc.communicate(timeout=60)
    finally:
        os.close(controller)
    return proc.returncode, out, re.sub(r"\x1b\[[0-9;]*m", "", screen.decode("utf-8", "replace"))


@pytest.mark.slow
def test_backfill_shows_a_progress_bar_on_a_terminal(tmp_path, sqlite_template, fake, url):
    # The bar is a property of the terminal, not of the database: SQLite only.
    db_url = fresh_url("sqlite", tmp_path, sqlite_template)
    id_file = tmp_path / "ids.txt"
    id_file.write_text("AC1\nAC2\nAC3\n")
    code, out, screen = on_terminal(
        [ETL_BIN, "backfill", "--file", id_file, "--database-url", db_url, *api(url)],
        _subprocess_env(tmp_path))
    assert code == 0
    assert out == "Backfill run 1: 3 completed, 0 rescheduled, 0 errors.\n"
    assert re.search(r"100%\|[^|]*\| 3/3 ", screen), screen
    assert '"event": "progress"' not in screen  # a bar, not JSON lines


@pytest.mark.slow
def test_backfill_log_lines_do_not_garble_the_progress_bar(tmp_path, sqlite_template):
    db_url = fresh_url("sqlite", tmp_path, sqlite_template)
    slow = FakeOpenPhone(api_key=API_KEY, latency_ms=50)
    id_file = tmp_path / "ids.txt"
    id_file.write_text("".join(f"AC{n}\n" for n in range(20)))
    with serve(slow) as slow_url:
        code, _, screen = on_terminal(
            [ETL_BIN, "backfill", "--file", id_file, "--database-url", db_url, *api(slow_url),
             "--concurrency", "2"], _subprocess_env(tmp_path))
    assert code == 0
    renders = list(re.finditer(r"\| *\d+/20 \[[^\]]*\]", screen))
    assert len(renders) >= 2, screen
    # Whatever is printed while the bar is up goes above it (tqdm.write): a
    # rendering of the bar is only ever followed by a carriage return or newline.
    glued = [screen[m.end():m.end() + 40] for m in renders if screen[m.end():m.end() + 1] not in ("", "\r", "\n")]
    assert glued == []


def _subprocess_env(tmp_path: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in CLEAN_ENV}
    env["HOME"] = str(tmp_path)
    return env


# --- etl status -------------------------------------------------------------------

STATUS_KEYS = {"database", "workspace", "now", "queue", "total", "due_now", "oldest_due_at", "oldest_due_age_s",
               "last_runs", "last_successful_run_finished_at", "top_errors", "healthy", "problems",
               "last_fetch_ok_at", "runs_without_fetch", "fetch", "last_discovery", "transcript_queue",
               "dimension_refreshes", "rejected_records"}
RUN_KEYS = {"id", "started_at", "finished_at", "command", "claimed", "completed", "rescheduled",
            "failed", "absent", "not_found", "invalid", "errors", "fetched", "exit_code", "stop_reason",
            "workspace", *TRANSCRIPT_COUNTERS}


def test_status_json_reports_counts_due_runs_and_errors(db_url, engine):
    base = utcnow().replace(microsecond=0)
    put(engine, "ACdue1", next_attempt_at=base - timedelta(hours=1))
    put(engine, "ACdue2", next_attempt_at=base - timedelta(minutes=1))
    put(engine, "ACwait1", next_attempt_at=FUTURE)
    for n in range(3):
        put(engine, f"ACdone{n}", state="done")
    for n in range(2):
        put(engine, f"ACfail{n}", state="failed", last_error="the API reports that the summary failed")
    for n in range(3):
        put(engine, f"ACerr{n}", state="error", last_error="gave up after 8 attempts: timeout")
    put(engine, "ACnf", state="not_found", last_error="Call summary not found")
    old = add_run(engine, command="backfill", started_at=base - timedelta(hours=2),
                  finished_at=base - timedelta(hours=2) + timedelta(seconds=30), claimed=10,
                  completed=10, exit_code=0)
    recent = add_run(engine, command="sync", started_at=base - timedelta(seconds=90),
                     finished_at=base - timedelta(seconds=60), claimed=4, completed=3, rescheduled=1,
                     exit_code=0)

    r = etl(db_url, "status", "--json")
    assert (r.exit_code, r.stderr) == (0, "")
    data = json.loads(r.stdout)
    assert set(data) == STATUS_KEYS
    assert data["workspace"] == "default"  # no workspaces file: the one workspace
    assert data["queue"] == {"pending": 3, "done": 3, "failed": 2, "absent": 0, "not_found": 1,
                             "invalid": 0, "error": 3}
    assert (data["total"], data["due_now"]) == (12, 2)
    assert data["oldest_due_at"] == f"{(base - timedelta(hours=1)).isoformat()}Z"
    assert 3600 <= data["oldest_due_age_s"] <= 3660
    assert [set(run) for run in data["last_runs"]] == [RUN_KEYS, RUN_KEYS]
    assert data["last_runs"][0] == {
        "id": recent, "command": "sync", "started_at": f"{(base - timedelta(seconds=90)).isoformat()}Z",
        "finished_at": f"{(base - timedelta(seconds=60)).isoformat()}Z", "claimed": 4, "completed": 3,
        "rescheduled": 1, "failed": 0, "absent": 0, "not_found": 0, "invalid": 0, "errors": 0, "fetched": 0,
        **dict.fromkeys(TRANSCRIPT_COUNTERS, 0), "exit_code": 0, "stop_reason": None,
        "workspace": "default"}
    assert data["last_runs"][1]["id"] == old
    assert data["last_successful_run_finished_at"] == f"{(base - timedelta(seconds=60)).isoformat()}Z"
    assert data["top_errors"] == [
        {"state": "error", "last_error": "gave up after 8 attempts: timeout", "count": 3},
        {"state": "failed", "last_error": "the API reports that the summary failed", "count": 2},
        {"state": "not_found", "last_error": "Call summary not found", "count": 1},
    ]
    assert (data["healthy"], data["problems"]) == (True, [])

    text = etl(db_url, "status")
    lines = text.stdout.splitlines()
    assert text.exit_code == 0
    assert lines[1:9] == [
        "Queue (12 items):",
        "  pending             3",
        "  done                3",
        "  failed              2",
        "  absent              0",
        "  not_found           1",
        "  invalid             0",
        "  error               3",
    ]
    assert re.fullmatch(rf"Due now: 2 \(oldest due 36\d\d s ago, since "
                        rf"{re.escape(data['oldest_due_at'])}\)", lines[9])
    assert "Top errors:" in lines
    assert "       3  error      gave up after 8 attempts: timeout" in lines
    assert lines[-1] == "Health: OK"


def test_status_check_is_0_after_a_real_sync_and_1_without_any_run(db_url, engine, url):
    r = etl(db_url, "status", "--check")
    assert (r.exit_code, plain(r.stderr)) == (1, ["Error: unhealthy: no successful run recorded"])
    assert r.stdout.splitlines()[-1] == "Health: no successful run recorded"

    put(engine, "AC1")
    assert etl(db_url, "sync", *api(url)).exit_code == 0
    r = etl(db_url, "status", "--check")
    assert (r.exit_code, plain(r.stderr), r.stdout.splitlines()[-1]) == (0, [], "Health: OK")


def test_status_check_fails_when_the_last_success_is_stale(db_url, engine):
    finished = utcnow() - timedelta(hours=2)
    add_run(engine, command="sync", started_at=finished - timedelta(seconds=5), finished_at=finished,
            exit_code=0)

    r = etl(db_url, "status", "--check")
    assert r.exit_code == 1
    [message] = plain(r.stderr)
    assert re.fullmatch(r"Error: unhealthy: last successful run finished 72\d\d s ago \(more than 3600 s\)",
                        message)
    assert etl(db_url, "status", "--check", "--max-age", 3 * 3600).exit_code == 0

    data = json.loads(etl(db_url, "status", "--json", "--check").stdout)
    assert data["healthy"] is False and len(data["problems"]) == 1
    # Without --check, an unhealthy queue is reported but does not fail the command.
    assert etl(db_url, "status").exit_code == 0


def test_status_check_fails_when_the_last_run_had_item_errors(db_url, engine, fake, url):
    put(engine, "AC1")
    assert etl(db_url, "sync", *api(url)).exit_code == 0
    fake.set_response("AC2", 200, b" " * (MAX_BODY + 1))
    put(engine, "AC2")
    assert etl(db_url, "sync", *api(url)).exit_code == 1

    r = etl(db_url, "status", "--check")
    assert (r.exit_code, plain(r.stderr)) == (1, ["Error: unhealthy: last run had 1 errors (more than 0)"])
    assert etl(db_url, "status", "--check", "--max-errors", 1).exit_code == 0
    data = json.loads(etl(db_url, "status", "--json").stdout)
    assert data["top_errors"] == [{
        "state": "error", "count": 1,
        "last_error": f"response body larger than {MAX_BODY} bytes"}]


def test_status_check_fails_at_once_when_the_last_run_was_refused_the_key(db_url, engine):
    # A fresh success, then a run stopped by a 401: waiting for --max-age would
    # hide a revoked key for an hour.
    now = utcnow()
    add_run(engine, command="sync", started_at=now - timedelta(seconds=90),
            finished_at=now - timedelta(seconds=85), exit_code=0)
    add_run(engine, command="sync", started_at=now - timedelta(seconds=5), finished_at=now, exit_code=3,
            stop_reason="the API refused the key (HTTP 401): HTTP 401 Unauthorized")

    r = etl(db_url, "status", "--check")
    assert (r.exit_code, plain(r.stderr)) == (1, [
        "Error: unhealthy: last run stopped: the API refused the key (HTTP 401): HTTP 401 Unauthorized"])


def test_status_with_an_unusable_database_url_exits_2():
    r = CliRunner().invoke(cli, ["status", "--database-url", "nosuchdialect://x"], env=CLEAN_ENV)
    assert r.exit_code == 2
    assert plain(r.stderr)[0].startswith("Error: ")


def test_backfill_twice_fetches_nothing_the_second_time(db_url, engine, fake, url, tmp_path):
    ids = tmp_path / "ids.txt"
    ids.write_text("AC1\nAC2\n")
    assert etl(db_url, "backfill", "--file", ids, *api(url)).exit_code == 0
    r = etl(db_url, "backfill", "--file", ids, *api(url))
    assert len(runs(engine)) == 1  # nothing was due: no empty run recorded (issue 20, item 13)
    assert r.exit_code == 0
    assert plain(r.stderr) == ["Enqueued 0 new ids (2 already queued, 0 invalid skipped)."]
    assert r.stdout == "Nothing to sync: no item is due, so no run was recorded.\n"
    assert dict(fake.requests) == {"AC1": 1, "AC2": 1}
    with engine.connect() as conn:
        assert conn.execute(sa.select(sa.func.count()).select_from(SUMMARIES)).scalar_one() == 2


@pytest.mark.slow
def test_max_runtime_is_not_outlived_by_a_retry_after_pause(tmp_path, sqlite_template):
    # Scheduling, not storage: SQLite only.  A short read timeout keeps the bound small.
    db_url = fresh_url("sqlite", tmp_path, sqlite_template)
    limited = FakeOpenPhone(api_key=API_KEY, faults=Faults(rate_429=1.0, retry_after="6", max_per_id=None))
    engine = db.create_engine(db_url)
    try:
        enqueue_in_order(engine, [f"AC{n}" for n in range(10)])
        with serve(limited) as base_url:
            settings = Settings(database_url=db_url, api_key=API_KEY, base_url=base_url, rate=0,
                                concurrency=2, retry_initial=0.001, retry_max=0.01, connect_timeout=1,
                                read_timeout=1)
            started = time.monotonic()
            stats = Etl(settings, engine=engine).sync(max_runtime=1)
            elapsed = time.monotonic() - started
        rows = queue(engine)
    finally:
        engine.dispose()
    assert stats.exit_code == 0
    assert {(r["state"], r["lease_owner"]) for r in rows.values()} == {("pending", None)}
    # The deadline (1 s) plus one read timeout (1 s) is all that in-flight work may add;
    # a 6 s Retry-After pause is for the next run to honour, not this one to sit out.
    assert elapsed < 4, elapsed
