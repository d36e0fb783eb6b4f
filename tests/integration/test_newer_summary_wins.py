"""Issue 25, finding 7: the newer summary wins, whichever way it arrives (docs/contract.md).

A summary fetched by sync is as of when the API answered; one carried by a
``call.summary.completed`` webhook is as of the event's ``createdAt``.  An
older event does not overwrite what sync stored; a later sync corrects what an
event stored.
"""

from __future__ import annotations

from datetime import timedelta

import sqlalchemy as sa

from etl import store
from etl.clock import utcnow
from etl.testing import sample_summary, webhooks
from etl.webhooks.events import parse_event
from etl.webhooks.intake import apply_event
from tests.support.db import run


def deliver(engine, doc) -> None:
    with engine.begin() as conn:
        apply_event(conn, parse_event(webhooks.body_bytes(doc)), utcnow())


def stored_text(engine, call_id: str) -> str | None:
    with engine.connect() as conn:
        return conn.execute(sa.text("SELECT summary_text FROM call_summaries WHERE call_id = :c"),
                            {"c": call_id}).scalar()


def event(call_id: str, lines: list[str], created_at) -> dict:
    summary = dict(sample_summary(call_id), summary=lines)
    doc = webhooks.dated_summary_completed(call_id, summary)
    doc["createdAt"] = created_at.isoformat(timespec="milliseconds") + "Z"
    return doc


def test_an_older_event_does_not_overwrite_what_sync_stored(engine, settings, fake):
    fake.set_summary("ACnewer1", dict(sample_summary("ACnewer1"), summary=["from the API"]))
    with engine.begin() as conn:
        store.enqueue_ids(conn, ["ACnewer1"])
    assert run(engine, settings, fake).completed == 1
    assert stored_text(engine, "ACnewer1") == "from the API"
    deliver(engine, event("ACnewer1", ["an older event"], utcnow() - timedelta(hours=1)))
    assert stored_text(engine, "ACnewer1") == "from the API"
    deliver(engine, event("ACnewer1", ["a newer event"], utcnow() + timedelta(seconds=1)))
    assert stored_text(engine, "ACnewer1") == "a newer event"


def test_a_later_sync_corrects_what_an_event_stored(engine, settings, fake):
    deliver(engine, event("ACnewer2", ["from the event"], utcnow() - timedelta(minutes=5)))
    assert stored_text(engine, "ACnewer2") == "from the event"
    fake.set_summary("ACnewer2", dict(sample_summary("ACnewer2"), summary=["corrected by the API"]))
    with engine.begin() as conn:  # re-queued (as `etl backfill --requeue` does), due now
        conn.execute(sa.text("UPDATE summary_queue SET state = 'pending', next_attempt_at = :t WHERE call_id = :c"),
                     {"t": "2000-01-01 00:00:00", "c": "ACnewer2"})
    assert run(engine, settings, fake).completed == 1
    assert stored_text(engine, "ACnewer2") == "corrected by the API"
