"""Call-context storage on real databases: the functions the sync engine calls per claimed id.

How the engine uses them (one transaction per batch, as for summaries):
``claim`` carries each item's call context (``needs_call``, the not-found
window's start for ``policy.decide``) -> fetch ``GET /v1/calls/{id}`` for those
that need it -> ``save_entries`` writes ``save_calls`` (or
``record_call_not_found``) in the transaction of the queue update.
"""

from __future__ import annotations

import json
from datetime import datetime, timedelta

import pytest
import sqlalchemy as sa

from etl import store
from etl.api import webhook_call
from etl.config import Backoff
from etl.logs import configure_logging
from etl.normalize import call_json, normalize_call
from etl.policy import ClaimedItem, call_not_found, decide
from tests.integration.calls_fake import make_call

NOW = datetime(2026, 11, 25, 12, 0, 0)
LATER = datetime(2100, 1, 1)  # every queued item is due by then


@pytest.fixture(autouse=True)
def _fresh_logging() -> None:
    # A test that captured the log (capsys) leaves structlog writing to its closed stream.
    configure_logging("json", "info")


def rows_for(raw: dict, now: datetime = NOW):
    return normalize_call(webhook_call(raw), call_json(raw), now)


def participants(engine, call_id: str) -> list[tuple[int, str, bool]]:
    with engine.connect() as conn:
        return [(p, n, bool(e)) for p, n, e in conn.execute(sa.text(
            "SELECT position, number, is_e164 FROM call_participants WHERE call_id = :c ORDER BY position"),
            {"c": call_id})]


def test_save_calls_upserts_and_replaces_participants_as_a_whole(engine):
    first = make_call("ACs1", "PN1", "+15550001111", NOW - timedelta(hours=1), participants=["+15550001111", "x"])
    with engine.begin() as conn:
        saved = store.save_calls(conn, [rows_for(first), rows_for(first)], NOW)
    assert saved == store.CallsSaved(new=1, changed=0, unchanged=0)
    assert participants(engine, "ACs1") == [(0, "+15550001111", True), (1, "x", False)]
    later = NOW + timedelta(minutes=5)
    with engine.begin() as conn:  # same content: only last_synced_at moves
        saved = store.save_calls(conn, [rows_for(first, later)], later)
    assert saved == store.CallsSaved(new=0, changed=0, unchanged=1)
    changed = dict(first, participants=["+15550002222"], duration=99)
    with engine.begin() as conn:
        saved = store.save_calls(conn, [rows_for(changed, later)], later)
    assert saved == store.CallsSaved(new=0, changed=1, unchanged=0)
    assert participants(engine, "ACs1") == [(0, "+15550002222", True)]
    with engine.connect() as conn:
        row = conn.execute(sa.text("SELECT duration_seconds, participant_count, raw_json, first_synced_at, "
                                   "last_synced_at FROM calls WHERE call_id = 'ACs1'")).one()
    assert (row[0], row[1], json.loads(row[2])) == (99, 1, changed)
    assert str(row[3])[:19] == str(NOW) and str(row[4])[:19] == str(later)


def test_a_failed_transaction_leaves_no_half_call(engine):
    raw = make_call("ACs2", "PN1", "+15550001111", NOW)
    try:
        with engine.begin() as conn:
            store.save_calls(conn, [rows_for(raw)], NOW)
            raise RuntimeError("the summary's rows failed")
    except RuntimeError:
        pass
    with engine.connect() as conn:
        assert conn.execute(sa.text("SELECT COUNT(*) FROM calls")).scalar_one() == 0
        assert conn.execute(sa.text("SELECT COUNT(*) FROM call_participants")).scalar_one() == 0


def test_ids_needing_call_and_the_not_found_lifecycle(engine):
    with engine.begin() as conn:
        store.enqueue_ids(conn, ["ACa", "ACb", "ACc"])
        conn.execute(sa.text("INSERT INTO summary_queue (call_id) VALUES ('ACbare')"))  # another system's INSERT
        store.save_calls(conn, [rows_for(make_call("ACa", "PN1", "+15550001111", NOW))], NOW)
        store.record_call_not_found(conn, "ACb", "retrying", NOW, "HTTP 404 Not Found: Call not found")
        store.record_call_not_found(conn, "ACc", "retrying", NOW, "HTTP 404 Not Found: Call not found")
        store.record_call_not_found(conn, "ACc", "not_found", NOW + timedelta(days=1), "HTTP 404 Not Found")
    with engine.begin() as conn:
        # The claim carries each item's call context: the engine needs no query of its own.
        timings = {i.call_id: i for i in store.claim(conn, "run-t", 10, LATER, 300)}
        lookups = conn.execute(sa.text("SELECT call_id, state, attempts FROM call_lookups ORDER BY call_id")).all()
    assert sorted(i for i, t in timings.items() if t.needs_call) == ["ACb", "ACbare"]
    assert [tuple(r) for r in lookups] == [("ACb", "retrying", 1), ("ACc", "not_found", 2)]
    assert str(timings["ACa"].call_completed_at)[:19] == str(NOW + timedelta(seconds=60))
    assert timings["ACb"].call_completed_at is None and timings["ACb"].call_first_not_found_at is not None
    assert timings["ACbare"].enqueued_at is not None
    # A call found after all: its pending 404 record goes.
    with engine.begin() as conn:
        store.save_calls(conn, [rows_for(make_call("ACb", "PN1", "+15550001111", NOW))], NOW)
        store.release(conn, "run-t", timings.values())
        assert [i.needs_call for i in store.claim(conn, "run-u", 10, LATER, 300) if i.call_id == "ACb"] == [False]
        assert conn.execute(sa.text("SELECT COUNT(*) FROM call_lookups WHERE call_id = 'ACb'")).scalar_one() == 0


def test_summary_404_window_measured_from_the_stored_call_end(engine):
    """The engine's decision for a summary 404, with the timing read from the database."""
    ended = NOW - timedelta(hours=2)
    with engine.begin() as conn:
        store.enqueue_ids(conn, ["ACw"])
        store.save_calls(conn, [rows_for(make_call("ACw", "PN1", "+15550001111", ended - timedelta(seconds=60)))],
                         NOW)
    with engine.begin() as conn:
        (timing,) = store.claim(conn, "run-t", 10, LATER, 300)
    item = ClaimedItem(call_id="ACw", attempts=0, consecutive_errors=0, incomplete_since=None, next_attempt_at=NOW,
                       enqueued_at=timing.enqueued_at, call_completed_at=timing.call_completed_at)

    class NotFound:
        kind, http_status, error, retry_after, summary = "not_found", 404, "HTTP 404 Not Found", None, None
        api_status = "http 404"

    soon = decide(item, NotFound(), NOW, Backoff())  # type: ignore[arg-type]
    assert (soon.state, soon.outcome, soon.next_attempt_at) == ("pending", "rescheduled", NOW + timedelta(hours=1))
    late = decide(item, NotFound(), ended + timedelta(hours=24), Backoff())  # type: ignore[arg-type]
    assert (late.state, late.last_error) == ("not_found", "HTTP 404 Not Found")
    # The call's own 404 follows the same window, from enqueueing.
    assert call_not_found(timing.enqueued_at, None, NOW, Backoff()) == "retrying"
    assert call_not_found(timing.enqueued_at, None, timing.enqueued_at + timedelta(hours=25), Backoff()) == "not_found"


def test_watermarks_and_run_records(engine):
    with engine.begin() as conn:
        store.set_watermark(conn, "PN1", "+15550000001", NOW, NOW)
        store.set_watermark(conn, "PN1", "+15550000001", NOW + timedelta(hours=1), NOW)
        store.set_conversation_mark(conn, "PN1", "+15550001111", "CN1", NOW, NOW)
        run = store.start_discovery_run(conn, "discover", NOW)
        store.add_discovery_counts(conn, run, pages=2, enqueued=3)
        store.add_discovery_counts(conn, run, pages=1)
        store.finish_discovery_run(conn, run, NOW, 0, None)
    with engine.connect() as conn:
        assert {k: str(v)[:19] for k, v in store.watermarks(conn).items()} == {"PN1": str(NOW + timedelta(hours=1))}
        assert list(store.conversation_marks(conn, "PN1")) == ["+15550001111"]
        row = conn.execute(sa.text("SELECT pages, enqueued, exit_code FROM discovery_runs")).one()
    assert tuple(row) == (3, 3, 0)
