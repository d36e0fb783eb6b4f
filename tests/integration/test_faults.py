"""Transient API failures over a real HTTP server: nothing lost, nothing duplicated.

The simulated API runs on a real socket (``serve(fake)``), so timeouts, dropped
connections and truncated bodies are real network events, not raised
exceptions.  Runs are repeated (with ``make_due`` standing in for the passing
of time) until nothing is pending; then every id must be in its exact
expected state with exactly the rows the API sent.  The engine waits (429
pauses, retries, Retry-After) on a FakeClock, so they cost no wall-clock time
and their lengths are exact; only the network's own timeouts are real.
"""

from __future__ import annotations

import email.utils
from datetime import UTC, timedelta

import pytest

from etl import Etl, store
from etl.config import Backoff
from etl.testing import FakeOpenPhone, Faults, sample_summary, serve
from etl.testing.clock import FakeClock
from tests.support.db import API_KEY, clock_after_enqueue, make_due
from tests.support.proc import comparable, expected_call, queue, runs, stored_calls, wire_json

N_IDS = 300
MAX_PASSES = 12
NOT_FOUND_BODY = {"message": "Call summary not found", "code": "0500404", "status": 404,
                  "docs": "https://openphone.com/docs", "title": "Not Found"}
ERROR_500 = {"message": "Something went wrong", "code": "0501500", "status": 500,
             "docs": "https://openphone.com/docs", "title": "Unknown"}


def http_date(clock: FakeClock, seconds_ahead: float) -> str:
    when = clock.utcnow().replace(tzinfo=UTC) + timedelta(seconds=seconds_ahead)
    return email.utils.format_datetime(when, usegmt=True)



def enqueue(engine, ids) -> None:
    with engine.begin() as conn:
        store.enqueue_ids(conn, list(ids))


def kind_of(i: int) -> str:
    return {7: "not_found", 13: "failed", 3: "in_progress"}.get(i % 20, "completed")


# Each injected 429 without a usable Retry-After pauses every worker for the
# limiter's default second (about fifteen of them): on the FakeClock, at once.
@pytest.mark.slow
def test_random_faults_end_in_exact_states(engine, settings):
    faults = Faults(seed=20240611, error_500=0.10, rate_429=0.05, retry_after="0", drop=0.03, hang=0.02,
                    hang_seconds=1.5, truncated=0.03, garbage=0.03, schema_violation=0.03, max_per_id=3)
    fake = FakeOpenPhone(api_key=API_KEY, faults=faults)
    ids = [f"ACflt{i:04d}" for i in range(N_IDS)]
    kinds = {call_id: kind_of(i) for i, call_id in enumerate(ids)}
    for call_id, kind in kinds.items():
        if kind == "not_found":
            fake.set_response(call_id, 404, NOT_FOUND_BODY)
        elif kind == "failed":
            fake.set_summary(call_id, sample_summary(call_id, "failed"))
        elif kind == "in_progress":
            fake.set_summary(call_id, sample_summary(call_id, "in-progress"))
    enqueue(engine, ids)
    clock = clock_after_enqueue()

    # A 429 with Retry-After "0", with none at all, and with an HTTP date: each
    # must be survivable (the limiter pauses; the item is retried, not lost).
    retry_afters = [lambda: "0", lambda: None, lambda: http_date(clock, 1)]
    with serve(fake) as url:
        s = settings.replace(base_url=url, read_timeout=0.5, connect_timeout=2, retry_initial=0.01,
                             retry_max=0.05, concurrency=8,
                             backoff=Backoff(transient_first=0.0, transient_cap=0.0, not_found_window=0))
        for n in range(MAX_PASSES):
            fake.faults.retry_after = retry_afters[n % 3]()
            stats = Etl(s, engine=engine, clock=clock).sync()
            assert (stats.exit_code, stats.errors, stats.lost_leases) == (0, 0, 0), stats.as_dict()
            if n == 0:
                # The summaries that were still being written are ready now.
                for call_id, kind in kinds.items():
                    if kind == "in_progress":
                        fake.set_summary(call_id, sample_summary(call_id))
            make_due(engine)
            if not any(r["state"] == "pending" for r in queue(engine).values()):
                break
        else:
            pytest.fail(f"items still pending after {MAX_PASSES} runs")

    # Every kind of fault really happened, so the assertions below mean something.
    injected = {k: fake.outcomes[k] for k in ("500", "429", "drop", "hang", "truncated", "garbage",
                                              "schema_violation")}
    assert all(injected.values()), injected
    assert fake.overlaps == []
    # The limiter paused for the 429s on the clock, not in wall-clock time.
    assert clock.monotonic() >= 1.0

    expected_queue = {}
    for call_id, kind in kinds.items():
        expected_queue[call_id] = {
            "not_found": ("not_found", "http 404", "HTTP 404 Not Found: Call summary not found"),
            "failed": ("failed", "failed", "the API reports that the summary failed"),
        }.get(kind, ("done", "completed", None))
    got_queue = {i: (r["state"], r["last_api_status"], r["last_error"]) for i, r in queue(engine).items()}
    assert got_queue == expected_queue
    for call_id, row in queue(engine).items():
        assert (row["consecutive_errors"], row["lease_owner"], row["lease_expires_at"]) == (0, None, None), call_id
        assert row["finished_at"] is not None, call_id

    expected_calls = {}
    for call_id, kind in kinds.items():
        if kind != "not_found":
            data = sample_summary(call_id, "failed" if kind == "failed" else "completed")
            expected_calls[call_id] = expected_call(data, wire_json(data))
    assert {i: comparable(c) for i, c in stored_calls(engine).items()} == expected_calls

    # Each item completed exactly once across all runs; a fault costs one more request, no more.
    history = runs(engine)
    n_done = sum(1 for k in kinds.values() if k in ("completed", "in_progress"))
    assert sum(r["completed"] for r in history) == n_done
    for state in ("failed", "not_found"):  # each end state its own counter
        assert sum(r[state] for r in history) == sum(1 for k in kinds.values() if k == state), state
    assert sum(r["errors"] for r in history) == 0
    assert all(r["finished_at"] is not None and r["exit_code"] == 0 for r in history)
    for call_id, kind in kinds.items():
        limit = {"not_found": 1, "in_progress": 1 + faults.max_per_id + 1}.get(kind, 1 + faults.max_per_id)
        assert 1 <= fake.requests[call_id] <= limit, (call_id, fake.requests[call_id])


def test_consecutive_transient_failures_end_in_error_with_last_error(engine, settings):
    fake = FakeOpenPhone(api_key=API_KEY)
    good = [f"ACgood{i}" for i in range(5)]
    bad = "ACbad1"
    fake.set_response(bad, 500, ERROR_500)
    enqueue(engine, [*good, bad])
    backoff = Backoff(transient_first=10.0, transient_cap=10_000.0)  # max_attempts: the default, 8
    assert backoff.max_attempts == 8
    with serve(fake) as url:
        s = settings.replace(base_url=url, retry_attempts=2, retry_initial=0.001, retry_max=0.01, backoff=backoff)
        for attempt in range(1, 9):
            if attempt == 8:
                # The last error is the one reported, whatever came before.
                fake.set_response(bad, 502, b"<html>bad gateway</html>", {"content-type": "text/html"})
            stats = Etl(s, engine=engine).sync()
            row = queue(engine)[bad]
            assert row["attempts"] == row["consecutive_errors"] == attempt
            if attempt < 8:
                # Rescheduled; after the first run (which fetched the good ones) a run reached nothing:
                # exit 4 (issue 26).
                expected_exit = 0 if attempt == 1 else 4
                assert (stats.rescheduled, stats.errors, stats.exit_code) == (1, 0, expected_exit)
                assert (row["state"], row["last_api_status"], row["finished_at"]) == ("pending", "http 500", None)
                assert row["last_error"] == "HTTP 500 Internal Server Error: Something went wrong"
                # The delay doubles per attempt, with jitter between half and all of it.
                base = 10.0 * 2 ** (attempt - 1)
                delay = (row["next_attempt_at"] - row["updated_at"]).total_seconds()
                assert base * 0.5 - 1 <= delay <= base, (attempt, delay)
                make_due(engine)
        assert (stats.errors, stats.exit_code) == (1, 1)
    rows = queue(engine)
    row = rows[bad]
    assert (row["state"], row["last_api_status"]) == ("error", "http 502")
    assert row["last_error"] == "gave up after 8 attempts: HTTP 502 Bad Gateway"
    assert (row["lease_owner"], row["next_attempt_at"] == row["finished_at"]) == (None, True)
    assert fake.requests[bad] == 8 * 2  # 8 queue attempts of 2 in-run tries each
    for call_id in good:
        assert (rows[call_id]["state"], rows[call_id]["attempts"], fake.requests[call_id]) == ("done", 1, 1)
    assert set(stored_calls(engine)) == set(good)


def test_retry_after_is_honoured_in_run_and_in_queue(engine, settings):
    # In the run: the one 429 says "come back in 2 s" as an HTTP date; the retry waits for it.
    fake = FakeOpenPhone(api_key=API_KEY)
    enqueue(engine, ["ACwait1"])
    clock = clock_after_enqueue()
    with serve(fake) as url:
        s = settings.replace(base_url=url, retry_attempts=2, retry_initial=0.001, retry_max=0.01)
        fake.faults = Faults(rate_429=1.0, retry_after=http_date(clock, 2), max_per_id=1)
        started = clock.monotonic()
        stats = Etl(s, engine=engine, clock=clock).sync()
        elapsed = clock.monotonic() - started
    # One 429 for the call's context (GET /v1/calls/{id}) and one for its summary.
    assert (stats.completed, fake.requests["ACwait1"], fake.outcomes["429"]) == (1, 2, 2)
    assert elapsed >= 2.0, clock.sleeps

    # In the queue: retries exhausted on a 429 with Retry-After 120 -> not due before 120 s.
    fake = FakeOpenPhone(api_key=API_KEY)
    fake.set_response("ACwait2", 429, {"message": "Too many requests"}, {"Retry-After": "120"})
    enqueue(engine, ["ACwait2"])
    clock = clock_after_enqueue()
    with serve(fake) as url:
        s = settings.replace(base_url=url, retry_attempts=1)
        before = clock.utcnow()
        stats = Etl(s, engine=engine, clock=clock).sync()
        after = clock.utcnow()
    row = queue(engine)["ACwait2"]
    assert (stats.rescheduled, row["state"], row["last_api_status"]) == (1, "pending", "http 429")
    assert row["last_error"] == "HTTP 429 Too Many Requests: Too many requests"
    assert before + timedelta(seconds=120) <= row["next_attempt_at"] <= after + timedelta(seconds=120)
