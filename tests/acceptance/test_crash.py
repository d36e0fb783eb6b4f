"""A real `etl sync` process killed or interrupted mid-run loses and duplicates nothing.

SIGKILL is the crash cron cannot see coming (OOM killer, a reboot): whatever
the moment, every transaction is all or nothing, so no call is half written
and no item is ``done`` without its rows; the dead run's leases expire and a
later run finishes the work.  SIGTERM/SIGINT are the polite stop: stop
claiming, finish what is in flight, give back the rest, record the run, exit
non-zero.
"""

from __future__ import annotations

import json
import signal
import time

import pytest

from etl import store
from etl.testing import FakeOpenPhone, sample_summary, serve
from tests.support.db import API_KEY, make_due
from tests.support.proc import (
    check_consistent,
    comparable,
    count,
    error_lines,
    etl_env,
    expected_call,
    output_of,
    queue,
    runs,
    start_etl,
    stop,
    stored_calls,
    wait_for,
    wire_json,
)

pytestmark = pytest.mark.slow

N_IDS = 200
SYNC = ["sync", "--rate", "0", "--concurrency", "4"]


def enqueue(engine, n: int, prefix: str) -> list[str]:
    ids = [f"{prefix}{i:03d}" for i in range(n)]
    with engine.begin() as conn:
        store.enqueue_ids(conn, ids)
    return ids


def assert_all_exact(engine, ids) -> None:
    expected = {i: expected_call(sample_summary(i), wire_json(sample_summary(i))) for i in ids}
    assert {i: comparable(c) for i, c in stored_calls(engine).items()} == expected


@pytest.mark.realtime
def test_sigkill_at_any_moment_then_resume(engine, db_url, tmp_path):
    ids = enqueue(engine, N_IDS, "ACkill")
    fake = FakeOpenPhone(api_key=API_KEY, latency_ms=40)
    with serve(fake) as url:
        env = etl_env(db_url, url, API_KEY)
        # Three kills at different points, a little after a flush or right on it.
        for k, extra_wait in enumerate((0.0, 0.05, 0.13)):
            target = count(engine, "call_summaries") + 20
            proc = start_etl(SYNC, env, tmp_path, f"kill{k}")
            try:
                wait_for(lambda t=target: count(engine, "call_summaries") >= t, 60, f"{target} summaries", proc)
                time.sleep(extra_wait)
            finally:
                proc.send_signal(signal.SIGKILL)
                rc = stop(proc)
            assert rc == -signal.SIGKILL
            rows = check_consistent(engine)
            leased = [r for r in rows.values() if r["lease_owner"] is not None]
            # The dead run still holds leases: those items wait, they are not lost or done.
            assert leased, "the run finished before it was killed; the test proves nothing"
            assert {r["state"] for r in leased} == {"pending"}
            assert {r["state"] for r in rows.values()} == {"pending", "done"}
            make_due(engine)  # time passes: the dead run's leases expire
        fake.latency_ms = 0  # slow answers only had to let the kills land mid-run
        proc = start_etl(SYNC, env, tmp_path, "final")
        rc = stop(proc)
    assert rc == 0, output_of(tmp_path, "final")[1]
    rows = check_consistent(engine)
    assert {r["state"] for r in rows.values()} == {"done"}
    assert all(r["lease_owner"] is None and r["attempts"] == 1 for r in rows.values())
    assert_all_exact(engine, ids)
    history = runs(engine)
    assert [r["finished_at"] is None for r in history] == [True, True, True, False]
    assert history[-1]["exit_code"] == 0
    # Counts commit with the rows they count: every id completed exactly once.
    assert sum(r["completed"] for r in history) == N_IDS
    assert fake.overlaps == []


@pytest.mark.realtime
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_interrupt_finishes_in_flight_releases_the_rest(engine, db_url, tmp_path, sig):
    ids = enqueue(engine, N_IDS, "ACterm")
    before = queue(engine)
    fake = FakeOpenPhone(api_key=API_KEY, latency_ms=40)
    with serve(fake) as url:
        env = etl_env(db_url, url, API_KEY)
        proc = start_etl(SYNC, env, tmp_path, "interrupted")
        try:
            wait_for(lambda: count(engine, "call_summaries") >= 20, 60, "20 summaries", proc)
        finally:
            proc.send_signal(sig)
            rc = stop(proc)
        out, err = output_of(tmp_path, "interrupted")
        assert rc == 1, err
        name = sig.name
        [run] = runs(engine)
        assert out.startswith(f"Sync run {run['id']}: ") and out.endswith("; stopped: interrupted.\n"), out
        assert error_lines(err) == [f"Error: run {run['id']} did not finish cleanly: interrupted by {name}"]
        rows = check_consistent(engine)
        done = {i for i, r in rows.items() if r["state"] == "done"}
        assert 20 <= len(done) < N_IDS
        assert (run["exit_code"], run["stop_reason"], run["claimed"], run["completed"]) == (
            1, f"interrupted by {name}", N_IDS, len(done))
        assert run["finished_at"] is not None
        # Every item not saved is exactly as it was before the run: released, not counted.
        for call_id in set(ids) - done:
            assert rows[call_id] == before[call_id], call_id
        finished = [json.loads(line) for line in err.splitlines() if line.startswith("{")]
        [summary] = [e for e in finished if e.get("event") == "run finished"]
        assert (summary["released"], summary["completed"], summary["exit_code"]) == (
            N_IDS - len(done), len(done), 1)

        fake.latency_ms = 0  # slow answers only had to let the signal land mid-run
        proc = start_etl(SYNC, env, tmp_path, "resumed")
        rc = stop(proc)
    assert rc == 0, output_of(tmp_path, "resumed")[1]
    rows = check_consistent(engine)
    assert {r["state"] for r in rows.values()} == {"done"}
    assert_all_exact(engine, ids)
    # In-flight work was saved, not redone; released work was never fetched by the stopped run.
    assert {fake.requests[i] for i in ids} == {1}
    assert fake.overlaps == []
