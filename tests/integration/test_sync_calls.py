"""The sync engine fetches each queued call's context with its summary (issue 10, part 2 and 3).

On real databases, against the simulated API (``etl.testing``): an id with no
``calls`` row costs one ``GET /v1/calls/{id}`` and lands its call and its
summary in one transaction; an id that already has its call costs no extra
request; a call 404 never blocks the summary and is retried within the
not-found window, then recorded as given up; a summary 404 soon after the call
is retried for the window measured from the call's completion, then
``not_found``; a SIGKILLed ``etl sync`` re-run leaves no summary without its
call and nothing duplicated.
"""

from __future__ import annotations

import datetime as dt
import signal
from datetime import timedelta

import pytest
import sqlalchemy as sa

from etl import store
from etl.api import webhook_call
from etl.clock import utcnow
from etl.config import Backoff
from etl.logs import configure_logging
from etl.normalize import call_json, normalize_call
from etl.policy import unexpected
from etl.store import Entry
from etl.tables import calls_t
from etl.testing import FakeOpenPhone, Quirks, serve
from tests.support.db import API_KEY, make_due, run
from tests.support.proc import etl_env, start_etl, stop, wait_for


@pytest.fixture(autouse=True)
def _fresh_logging() -> None:
    # A test that captured the log (capsys) leaves structlog writing to its closed stream.
    configure_logging("json", "info")


def scalar(engine, sql: str, **params):
    with engine.connect() as conn:
        return conn.execute(sa.text(sql), params).scalar_one()


def rows(engine, sql: str, **params) -> list[tuple]:
    with engine.connect() as conn:
        return [tuple(r) for r in conn.execute(sa.text(sql), params)]


def call_requests(fake: FakeOpenPhone) -> int:
    endpoints = fake.stats()["endpoints"]
    assert isinstance(endpoints, dict)
    return int(endpoints.get("call", {}).get("requests", 0))


def workspace_call(fake: FakeOpenPhone, *, at: dt.datetime | None = None):
    ws = fake.workspace
    pn = ws.add_phone_number("+15550100000")
    conv = ws.add_conversation(pn.id, ["+15550100001"], at=at)
    return ws.add_call(conv.id, at=at)


def test_bare_insert_gets_its_call_and_summary_and_a_known_call_costs_no_request(engine, settings, fake):
    call = workspace_call(fake, at=fake.clock.now() - dt.timedelta(hours=2))
    known = "ACknown0000000000000000000000001"
    with engine.begin() as conn:
        # Another system's bare INSERT: every other column is a server default.
        conn.execute(sa.text("INSERT INTO summary_queue (call_id) VALUES (:c)"), {"c": call.id})
        store.enqueue_ids(conn, [known])
        # `known` was discovered: its call row is stored already.
        raw = fake.workspace.synth_call(known).to_json()
        store.save_calls(conn, [normalize_call(webhook_call(raw), call_json(raw), utcnow())], utcnow())
    stats = run(engine, settings, fake)
    assert (stats.completed, stats.errors) == (2, 0)
    assert call_requests(fake) == 1  # only the id without a call row
    assert fake.requests[call.id] == fake.requests[known] == 1  # one summary each
    c = calls_t.c
    with engine.connect() as conn:
        stored = [tuple(r) for r in conn.execute(
            sa.select(c.direction, c.status, c.duration_seconds, c.phone_number_id, c.user_id, c.completed_at)
            .where(c.call_id == call.id))]
    completed = call.completed_at.astimezone(dt.UTC).replace(tzinfo=None)
    assert stored == [(call.direction, "completed", call.duration, call.phone_number_id, call.user_id, completed)]
    assert rows(engine, "SELECT position, number FROM call_participants WHERE call_id = :c", c=call.id) == [
        (0, "+15550100001")]
    assert scalar(engine, "SELECT count(*) FROM call_summaries WHERE call_id IN (:a, :b)", a=call.id, b=known) == 2
    assert scalar(engine, "SELECT count(*) FROM call_lookups") == 0
    # The BI view joins them.
    assert rows(engine, "SELECT call_id, direction FROM call_summary_overview WHERE call_id = :c",
                c=call.id) == [(call.id, call.direction)]


def test_call_and_summary_are_written_only_while_the_run_holds_the_lease(engine, settings, fake):
    call = workspace_call(fake)
    with engine.begin() as conn:
        store.enqueue_ids(conn, [call.id])
        (item,) = store.claim(conn, "run-a", 10, utcnow(), 300)
    assert item.needs_call and item.enqueued_at is not None
    raw = call.to_json()
    rows_ = normalize_call(webhook_call(raw), call_json(raw), utcnow())
    # The lease expired and another run took the item: run-a's result lands nowhere.
    with engine.begin() as conn:
        conn.execute(sa.text("UPDATE summary_queue SET lease_owner = 'run-b'"))
    entry = Entry(item=item, result=None, update=unexpected(item, utcnow(), "x"), rows=None, call=rows_,
                  call_not_found=None)
    with engine.begin() as conn:
        assert store.save_entries(conn, "run-a", [entry], utcnow()) == []
    assert scalar(engine, "SELECT count(*) FROM calls") == 0
    with engine.begin() as conn:
        conn.execute(sa.text("UPDATE summary_queue SET lease_owner = 'run-a'"))
        assert store.save_entries(conn, "run-a", [entry], utcnow()) == [entry]
    assert scalar(engine, "SELECT count(*) FROM calls") == 1
    assert scalar(engine, "SELECT state FROM summary_queue") == "error"


def test_a_call_404_never_blocks_the_summary_is_retried_in_the_window_then_recorded(engine, settings):
    fake = FakeOpenPhone(api_key=API_KEY, default_status=None)  # ids outside the workspace: call 404
    call_id = "ACnocall000000000000000000000001"
    fake.set_summary(call_id, {"callId": call_id, "status": "in-progress", "summary": None, "nextSteps": None})
    with engine.begin() as conn:
        store.enqueue_ids(conn, [call_id])
    stats = run(engine, settings, fake)
    assert (stats.rescheduled, stats.errors) == (1, 0)  # the summary went on
    lookup = "SELECT state, attempts FROM call_lookups WHERE call_id = :c"
    assert rows(engine, lookup, c=call_id) == [("retrying", 1)]
    assert call_requests(fake) == 1
    # The next attempt asks for the call again (still inside the window) ...
    make_due(engine)
    run(engine, settings, fake)
    assert (call_requests(fake), rows(engine, lookup, c=call_id)) == (2, [("retrying", 2)])
    # ... and once the window (from enqueueing) is over, the lookup is given up for good,
    with engine.begin() as conn:
        conn.execute(sa.text("UPDATE summary_queue SET enqueued_at = :t"), {"t": utcnow() - timedelta(hours=25)})
    make_due(engine)
    run(engine, settings, fake)
    assert (call_requests(fake), rows(engine, lookup, c=call_id)) == (3, [("not_found", 3)])
    # after which no attempt asks for it again, and the summary still lands.
    fake.set_summary(call_id, {"callId": call_id, "status": "completed", "summary": ["Hi"], "nextSteps": []})
    make_due(engine)
    assert run(engine, settings, fake).completed == 1
    assert call_requests(fake) == 3
    assert scalar(engine, "SELECT count(*) FROM call_summaries") == 1
    assert scalar(engine, "SELECT count(*) FROM calls") == 0


def test_a_call_that_appears_later_clears_its_pending_404(engine, settings):
    fake = FakeOpenPhone(api_key=API_KEY, default_status=None)
    call_id = "ACappears00000000000000000000001"
    fake.set_summary(call_id, {"callId": call_id, "status": "absent", "summary": None, "nextSteps": None})
    with engine.begin() as conn:
        store.enqueue_ids(conn, [call_id])
    run(engine, settings, fake)
    assert scalar(engine, "SELECT state FROM call_lookups") == "retrying"
    fake.default_status = "completed"  # the API now knows the call (and its summary)
    fake.summaries.clear()
    make_due(engine)
    assert run(engine, settings, fake).completed == 1
    assert scalar(engine, "SELECT count(*) FROM calls WHERE call_id = :c", c=call_id) == 1
    assert scalar(engine, "SELECT count(*) FROM call_lookups") == 0


def test_a_summary_404_soon_after_the_call_is_retried_for_the_window_then_not_found(engine, settings):
    fake = FakeOpenPhone(api_key=API_KEY, default_status=None, quirks=Quirks(summary_pending_seconds=600))
    ended = workspace_call(fake, at=fake.clock.now() - dt.timedelta(minutes=3))
    missing = fake.workspace.add_call(ended.conversation_id or "", at=fake.clock.now() - dt.timedelta(minutes=2))
    fake.workspace.summary_missing.add(missing.id)
    with engine.begin() as conn:
        store.enqueue_ids(conn, [ended.id, missing.id])
    settings = settings.replace(backoff=Backoff())  # the default window: 24 h
    stats = run(engine, settings, fake)
    assert (stats.rescheduled, stats.failed) == (2, 0)
    q = {r[0]: r[1:] for r in rows(engine, "SELECT call_id, state, last_api_status, last_error FROM summary_queue")}
    until = missing.completed_at.astimezone(dt.UTC) + dt.timedelta(hours=24)
    assert q[missing.id] == ("pending", "http 404",
                             f"HTTP 404 Not Found: Call summary not found; retrying until {until:%Y-%m-%d %H:%M} UTC")
    # The window runs from the call's completion, which the engine stored first.
    assert scalar(engine, "SELECT count(*) FROM calls") == 2
    # The summary that was only "not generated yet" lands once it is; no call is asked for twice.
    fake.clock.advance(900)
    make_due(engine)
    assert run(engine, settings, fake).completed == 1
    assert call_requests(fake) == 2
    assert scalar(engine, "SELECT state FROM summary_queue WHERE call_id = :c", c=ended.id) == "done"
    # The other one never comes: once the window from its completion is over, it is not_found.
    with engine.begin() as conn:
        conn.execute(sa.text("UPDATE calls SET completed_at = :t WHERE call_id = :c"),
                     {"t": utcnow() - timedelta(hours=24, minutes=1), "c": missing.id})
    make_due(engine)
    stats = run(engine, settings, fake)
    assert (stats.not_found, stats.failed, stats.rescheduled) == (1, 0, 0)
    assert rows(engine, "SELECT state, last_error FROM summary_queue WHERE call_id = :c", c=missing.id) == [
        ("not_found", "HTTP 404 Not Found: Call summary not found")]


@pytest.mark.slow
def test_sigkill_mid_sync_then_rerun_leaves_no_summary_without_its_call(engine, db_url, tmp_path):
    fake = FakeOpenPhone(api_key=API_KEY, latency_ms=15)
    ids = [f"ACkillcall{i:03d}" for i in range(120)]
    with engine.begin() as conn:
        store.enqueue_ids(conn, ids)
    sync = ["sync", "--rate", "0", "--concurrency", "4"]
    with serve(fake) as url:
        env = etl_env(db_url, url, API_KEY)
        for k in range(2):
            target = scalar(engine, "SELECT count(*) FROM call_summaries") + 25
            proc = start_etl(sync, env, tmp_path, f"kill{k}")
            try:
                wait_for(lambda t=target: scalar(engine, "SELECT count(*) FROM call_summaries") >= t, 60,
                         f"{target} summaries", proc)
            finally:
                proc.send_signal(signal.SIGKILL)
                assert stop(proc) == -signal.SIGKILL
            # All or nothing per transaction: every summary has its call, every done item both.
            assert rows(engine, "SELECT s.call_id FROM call_summaries s LEFT JOIN calls c "
                                "ON c.call_id = s.call_id WHERE c.call_id IS NULL") == []
            assert scalar(engine, "SELECT count(*) FROM summary_queue WHERE state = 'done'") == scalar(
                engine, "SELECT count(*) FROM call_summaries")
            make_due(engine)  # the dead run's leases expire
        proc = start_etl(sync, env, tmp_path, "final")
        assert stop(proc) == 0
    assert scalar(engine, "SELECT count(*) FROM summary_queue WHERE state = 'done'") == len(ids)
    assert scalar(engine, "SELECT count(*) FROM calls") == scalar(engine, "SELECT count(*) FROM call_summaries") == 120
    assert scalar(engine, "SELECT count(*) FROM call_participants") == 120  # one each, none duplicated
    assert rows(engine, "SELECT call_id FROM call_participants GROUP BY call_id, position HAVING count(*) > 1") == []
