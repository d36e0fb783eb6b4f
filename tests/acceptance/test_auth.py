"""A refused API key (401/403) stops the run with exit 3 and changes no queue item.

docs/contract.md: "401 / 403 — stop the run, exit 3, nothing changed".  The queue is
compared value for value before and after (state, attempts, next_attempt_at,
last_error, updated_at, lease columns), with items that already have a
history, so "unchanged" cannot pass by accident on fresh rows.
"""

from __future__ import annotations

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
    run_served,
    runs,
    start_etl,
    stop,
    stored_calls,
    wait_for,
    wire_json,
)

FORBIDDEN_KEY = "forbidden-key-1111"
REFUSALS = {
    401: ("wrong-key-0000", "HTTP 401 Unauthorized: Missing or invalid API key"),
    403: (FORBIDDEN_KEY, "HTTP 403 Forbidden: This API key is not allowed to access call summaries"),
}
ERROR_500 = {"message": "Something went wrong", "code": "0501500", "status": 500,
             "docs": "https://openphone.com/docs", "title": "Unknown"}


def stop_reason(status: int) -> str:
    return f"the API refused the key (HTTP {status}): {REFUSALS[status][1]}"


def with_history(engine, settings) -> tuple[FakeOpenPhone, list[str]]:
    """A queue where due items carry attempts, errors and old timestamps of earlier runs."""
    fake = FakeOpenPhone(api_key=API_KEY, forbidden_keys=frozenset({FORBIDDEN_KEY}))
    fake.set_response("ACerr1", 500, ERROR_500)
    fake.set_summary("ACprog1", sample_summary("ACprog1", "in-progress"))
    with engine.begin() as conn:
        store.enqueue_ids(conn, ["ACdone1", "ACerr1", "ACprog1"])
    stats = run_served(engine, settings.replace(retry_attempts=1), fake)
    assert (stats.completed, stats.rescheduled) == (1, 2)
    with engine.begin() as conn:
        store.enqueue_ids(conn, [f"ACnew{i}" for i in range(8)])
    make_due(engine)
    due = sorted(i for i, r in queue(engine).items() if r["state"] == "pending")
    assert len(due) == 10
    return fake, due


@pytest.mark.parametrize("status", [401, 403])
def test_refused_key_stops_run_and_changes_nothing(engine, settings, status):
    fake, due = with_history(engine, settings)
    before = queue(engine)
    calls_before = stored_calls(engine)
    stats = run_served(engine, settings.replace(api_key=REFUSALS[status][0]), fake)
    assert (stats.exit_code, stats.stop_reason) == (3, stop_reason(status))
    assert (stats.claimed, stats.released) == (len(due), len(due))
    assert (stats.completed, stats.rescheduled, stats.failed, stats.errors) == (0, 0, 0, 0)
    assert queue(engine) == before
    assert all(r["lease_owner"] is None and r["lease_expires_at"] is None for r in before.values())
    assert stored_calls(engine) == calls_before
    last = runs(engine)[-1]
    assert (last["exit_code"], last["stop_reason"], last["claimed"], last["completed"]) == (
        3, stop_reason(status), len(due), 0)
    assert last["finished_at"] is not None
    # The run stopped at the first refusal: at most one per worker, never a retry storm.
    assert 1 <= fake.outcomes[str(status)] <= settings.concurrency


@pytest.mark.slow
@pytest.mark.parametrize("status", [401, 403])
def test_cli_exits_3_with_explanation(engine, settings, db_url, status, tmp_path):
    fake, due = with_history(engine, settings)
    before = queue(engine)
    with serve(fake) as url:
        proc = start_etl(["sync", "--rate", "0", "--concurrency", "4"],
                         etl_env(db_url, url, REFUSALS[status][0]), tmp_path, "sync")
        rc = stop(proc)
    out, err = output_of(tmp_path, "sync")
    assert rc == 3, err
    assert error_lines(err) == [
        f"Error: {stop_reason(status)}; the run stopped and every claimed item was left as it was. "
        "Check OPENPHONE_API_KEY."
    ]
    assert queue(engine) == before
    last = runs(engine)[-1]
    # The one-line summary says why the run stopped (issue 26).
    assert out == f"Sync run {last['id']}: 0 completed, 0 rescheduled, 0 errors; stopped: the API refused the key.\n"
    assert (last["exit_code"], last["stop_reason"], last["claimed"]) == (3, stop_reason(status), len(due))


@pytest.mark.slow
def test_key_revoked_mid_run_keeps_saved_work_and_leaves_the_rest(engine, db_url, tmp_path):
    """A key revoked while a run is going: what was saved stays saved; every
    other item is exactly as before the run (no attempt counted, no lease left)."""
    ids = [f"ACrev{i:03d}" for i in range(120)]
    with engine.begin() as conn:
        store.enqueue_ids(conn, ids)
    before = queue(engine)
    fake = FakeOpenPhone(api_key=API_KEY, latency_ms=30)
    with serve(fake) as url:
        proc = start_etl(["sync", "--rate", "0", "--concurrency", "2"], etl_env(db_url, url, API_KEY),
                         tmp_path, "sync")
        try:
            wait_for(lambda: count(engine, "call_summaries") >= 10, 60, "the first saved summaries", proc)
        finally:
            fake.api_key = "revoked"  # every later request is refused
        rc = stop(proc)
    out, err = output_of(tmp_path, "sync")
    assert rc == 3, err
    assert out.endswith("; stopped: the API refused the key.\n"), out
    assert error_lines(err) == [
        f"Error: {stop_reason(401)}; the run stopped and every claimed item was left as it was. "
        "Check OPENPHONE_API_KEY."
    ]
    after = check_consistent(engine)
    done = {i for i, r in after.items() if r["state"] == "done"}
    assert 10 <= len(done) < len(ids)
    for call_id in set(ids) - done:
        assert after[call_id] == before[call_id], call_id
    data = {i: sample_summary(i) for i in done}
    assert {i: comparable(c) for i, c in stored_calls(engine).items()} == {
        i: expected_call(d, wire_json(d)) for i, d in data.items()}
    last = runs(engine)[-1]
    assert (last["exit_code"], last["completed"], last["stop_reason"]) == (3, len(done), stop_reason(401))
