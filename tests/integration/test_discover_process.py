"""`etl discover` as a real process (SIGKILL mid-walk then a re-run, SIGTERM), its CLI errors and
`etl status` line (in-process, click's CliRunner), then `etl sync`.

The fake workspace is served over real HTTP; the summaries come from the
project's simulator.  After any number of kills, a completed re-run must have
stored every call with all its participants and enqueued every completed call
exactly once (the runs' ``enqueued`` counters commit with the pages they count,
so their sum is the number of distinct ids enqueued).
"""

from __future__ import annotations

import signal
import time
from typing import Any

import pytest
import sqlalchemy as sa

from etl import Etl
from etl.config import Settings
from etl.logs import configure_logging
from etl.testing import FakeOpenPhone
from tests.integration.calls_fake import FakeWorkspace, serve
from tests.integration.test_discover import KEY, build, completed_ids, reachable
from tests.support.proc import cli_run, error_lines, etl_env, output_of, start_etl, stop, wait_for

pytestmark = pytest.mark.slow

DISCOVER = ["discover", "--since", "2026-11-01", "--rate", "0"]


@pytest.fixture(autouse=True)
def _fresh_logging() -> None:
    # A test that captured the log (capsys) leaves structlog writing to its closed stream.
    configure_logging("json", "info")


def count(engine, sql: str) -> int:
    with engine.connect() as conn:
        return int(conn.execute(sa.text(sql)).scalar_one())


def consistent(engine) -> dict[str, Any]:
    """No call is half written: each has exactly participant_count participant rows, positions 0..n-1."""
    with engine.connect() as conn:
        calls = dict(conn.execute(sa.text("SELECT call_id, participant_count FROM calls")).all())
        parts: dict[str, list[int]] = {}
        for call_id, position in conn.execute(sa.text("SELECT call_id, position FROM call_participants")):
            parts.setdefault(call_id, []).append(position)
    for call_id, n in calls.items():
        assert sorted(parts.get(call_id, [])) == list(range(n)), call_id
    assert set(parts) <= set(calls)
    return calls


@pytest.mark.realtime
def test_sigkill_mid_walk_then_rerun_finds_everything_and_enqueues_nothing_twice(engine, db_url, tmp_path):
    fake = FakeWorkspace(KEY, page_cap=5, latency_s=0.01)
    calls = build(fake)
    with serve(fake) as url:
        env = etl_env(db_url, url, KEY)
        for k, target in enumerate((20, 110, 230)):
            proc = start_etl(DISCOVER, env, tmp_path, f"kill{k}")
            try:
                wait_for(lambda t=target: count(engine, "SELECT COUNT(*) FROM calls") >= t, 60,
                         f"{target} calls", proc)
            finally:
                proc.send_signal(signal.SIGKILL)
                rc = stop(proc)
            assert rc == -signal.SIGKILL
            consistent(engine)
        assert count(engine, "SELECT COUNT(*) FROM calls") < len(reachable(calls)), "killed too late"
        fake.latency_s = 0  # slow answers only had to let the kills land mid-walk
        proc = start_etl(DISCOVER, env, tmp_path, "final")
        rc = stop(proc)
        out, err = output_of(tmp_path, "final")
    assert rc == 0, err
    last_id = count(engine, "SELECT MAX(id) FROM discovery_runs")
    assert out.startswith(f"Discovery run {last_id}: 2 phone numbers, 9 conversations, ")
    assert set(consistent(engine)) == set(reachable(calls))
    with engine.connect() as conn:
        queued = set(conn.execute(sa.text("SELECT call_id FROM summary_queue")).scalars())
        history = conn.execute(sa.text("SELECT finished_at IS NULL, enqueued, exit_code FROM discovery_runs "
                                       "ORDER BY id")).all()
    assert queued == completed_ids(calls)
    assert [h[0] for h in history] == [True, True, True, False]
    assert history[-1][2] == 0
    assert sum(h[1] for h in history) == len(completed_ids(calls))  # nothing enqueued twice
    # And again: nothing new, nothing changed.
    with serve(fake) as url:
        again = cli_run(["discover", "--rate", "0"], etl_env(db_url, url, KEY))
    assert again.returncode == 0, again.stderr
    assert "enqueued 0," in again.stdout
    assert count(engine, "SELECT COUNT(*) FROM summary_queue") == len(completed_ids(calls))


def test_sigterm_stops_cleanly_and_records_the_run(engine, db_url, tmp_path):
    fake = FakeWorkspace(KEY, page_cap=5, latency_s=0.02)
    build(fake)
    with serve(fake) as url:
        proc = start_etl(DISCOVER, etl_env(db_url, url, KEY), tmp_path, "term")
        try:
            wait_for(lambda: count(engine, "SELECT COUNT(*) FROM calls") >= 10, 60, "10 calls", proc)
        finally:
            proc.send_signal(signal.SIGTERM)
            rc = stop(proc)
    _, err = output_of(tmp_path, "term")
    assert rc == 1
    run_id = count(engine, "SELECT MAX(id) FROM discovery_runs")
    assert error_lines(err) == [f"Error: discovery run {run_id} did not finish cleanly: interrupted by SIGTERM"]
    with engine.connect() as conn:
        run = conn.execute(sa.text("SELECT exit_code, stop_reason, finished_at IS NOT NULL FROM discovery_runs")).one()
        marks = conn.execute(sa.text("SELECT COUNT(*) FROM discovery_watermarks")).scalar_one()
    assert tuple(run) == (1, "interrupted by SIGTERM", True)
    assert marks == 0
    consistent(engine)


def test_cli_errors_are_one_line_with_the_fix(engine, db_url):
    fake = FakeWorkspace(KEY)
    build(fake)
    with serve(fake) as url:
        env = etl_env(db_url, url, KEY)
        first = cli_run(["discover", "--rate", "0"], env)
        narrowed = cli_run(["discover", "--since", "2026-11-01", "--phone-number", "555"], env)
        unknown = cli_run(["discover", "--since", "2026-11-01", "--phone-number", "PNzzz"], env)
        refused = cli_run(["discover", "--since", "2026-11-01"], etl_env(db_url, url, "bad-key-123"))
    assert (first.returncode, error_lines(first.stderr)) == (2, [
        "Error: no discovery watermark yet for phone number PNline1 (+1 more): pass --since DATE for the first run"])
    assert (narrowed.returncode, error_lines(narrowed.stderr)) == (2, [
        "Error: --phone-number '555' is neither a phone number id (PN…) nor an E.164 number"])
    assert (unknown.returncode, error_lines(unknown.stderr)) == (2, [
        "Error: phone number 'PNzzz' is not in the workspace (known: PNline1, PNline2)"])
    assert (refused.returncode, error_lines(refused.stderr)) == (3, [
        "Error: the API refused the key (HTTP 401): HTTP 401 Unauthorized: Unauthorized; discovery stopped. "
        "Check OPENPHONE_API_KEY."])


def test_status_shows_the_last_discovery(engine, db_url):
    fake = FakeWorkspace(KEY)
    calls = build(fake)
    with serve(fake) as url:
        assert cli_run(DISCOVER, etl_env(db_url, url, KEY)).returncode == 0
    status = cli_run(["status"], etl_env(db_url))
    [line] = [x for x in status.stdout.splitlines() if x.startswith("Last discovery:")]
    run_id = count(engine, "SELECT MAX(id) FROM discovery_runs")
    assert line.startswith(f"Last discovery: #{run_id} discover ")
    assert line.endswith(f"exit 0: 2 phone numbers, 9 conversations, 11 pages, {len(reachable(calls))} calls seen, "
                         f"{len(completed_ids(calls))} enqueued, 0 errors")


def test_discover_then_sync_lands_every_call_with_its_summary(engine, db_url):
    fake = FakeWorkspace(KEY)
    calls = build(fake)
    with serve(fake) as url:
        assert cli_run(DISCOVER, etl_env(db_url, url, KEY)).returncode == 0
    summaries = FakeOpenPhone(api_key=KEY)
    settings = Settings(database_url=db_url, api_key=KEY, base_url="http://fake.test", rate=0, concurrency=4)
    started = time.monotonic()
    stats = Etl(settings, engine=engine).sync(transport=summaries.transport())
    assert (stats.completed, stats.errors) == (len(completed_ids(calls)), 0), time.monotonic() - started
    with engine.connect() as conn:
        landed = conn.execute(sa.text(
            "SELECT COUNT(*) FROM call_summary_overview WHERE call_created_at IS NOT NULL "
            "AND participants IS NOT NULL AND status = 'completed'")).scalar_one()
    assert landed == len(completed_ids(calls))


def test_backfill_discover_discovers_instead_of_an_id_file_then_syncs(engine, db_url, tmp_path):
    fake = FakeWorkspace(KEY)
    calls = build(fake)
    with serve(fake) as url:
        env = etl_env(db_url, url, KEY)
        both = cli_run(["backfill", "--discover", "--file", "-", "--rate", "0"], env)
        orphan = cli_run(["backfill", "--discover-since", "2026-11-01", "--rate", "0"], env)
        result = cli_run(["backfill", "--discover", "--discover-since", "2026-11-01", "--rate", "0"], env)
    assert (both.returncode, error_lines(both.stderr)) == (2, [
        "Error: --discover and --file are alternatives: discover ids, or read them from a file"])
    assert (orphan.returncode, error_lines(orphan.stderr)) == (2, ["Error: --discover-since needs --discover"])
    assert result.returncode == 0, result.stderr
    with engine.connect() as conn:
        discovery = conn.execute(sa.text("SELECT command, enqueued, exit_code FROM discovery_runs")).all()
        sync_runs = conn.execute(sa.text("SELECT command, claimed FROM sync_runs")).all()
    assert [tuple(r) for r in discovery] == [("backfill", len(completed_ids(calls)), 0)]
    # The workspace fake has no summaries: every claimed id was answered (404) and finished.
    assert [tuple(r) for r in sync_runs] == [("backfill", len(completed_ids(calls)))]
