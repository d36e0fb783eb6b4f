"""Store a verified delivery and update the queue, in one transaction.

Replay or redelivery (decided from the docs: deliveries repeat, and each
retry is signed again with a fresh timestamp):

* the *same signed message* again (same scheme, id, timestamp and signature:
  :attr:`Verified.message_key`) is a **replay**: refused (401), nothing stored;
* the *same event* (same ``id`` in the body) in a newly signed message is a
  **redelivery**: accepted (2xx) and recorded as ``duplicate``, with no queue
  change, so the same event three times means one queue row and one fetch.

What an accepted event does to the queue:

* ``call.completed`` (either envelope): the id is enqueued (rows already queued are left as
  they are) and the call row is upserted from the event's call object, with
  its participants, in the same transaction (:func:`store.save_calls`, as
  discovery does), so the sync need not fetch ``GET /v1/calls/{id}``.  A call
  object that does not validate is logged and skipped; the id is queued anyway.
* ``call.summary.completed``: the summary is ready, so one request lands it.
  A missing id is enqueued; a ``pending`` item not held by a run is made due
  at the head of the due line (1 ms before the oldest due item, so it is
  claimed next, and ``status``'s oldest-due age barely changes); an item that
  ended ``absent``, ``not_found``, ``error`` or ``failed`` is re-queued the
  same way with fresh counters, since the event says there now is a summary.
  ``done`` stays done (``backfill --force`` re-fetches) and ``invalid`` stays
  invalid (its id is refused by the API).  An item a run holds right now is
  left to that run.
* a dated ``call.summary.completed`` that carries the whole summary
  (``data.resource``: status, type, summary, nextSteps, jobs, title), completed
  and valid: stored without a request, as sync stores a fetched one, and the
  item ends ``done`` (:func:`save_carried_summary`); otherwise as above.
* ``call.transcript.completed``: for now as a summary event
  (:func:`transcript_ready`, where transcripts will be fetched).
* anything else: recorded as ``ignored``.

Rows older than the retention window are pruned (:func:`prune`); retention
must outlast the signature tolerance on both sides, or a replay could come
back after its row is gone (``etl serve`` checks this).
"""

from __future__ import annotations

import hashlib
import json
import random
import time
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Literal

import sqlalchemy as sa
from pydantic import ValidationError
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import DBAPIError, IntegrityError

from etl import store
from etl.logs import get_logger
from etl.normalize import call_json, normalize, normalize_call
from etl.schema import CallData, SummaryData
from etl.tables import deliveries_t, queue_t
from etl.webhooks.events import Event
from etl.webhooks.signatures import Verified

Outcome = Literal["queued", "duplicate", "ignored", "replay"]

# Terminal states a call.summary.completed event re-queues (see the module docstring).
REQUEUE_STATES = ("absent", "not_found", "error", "failed")

def save_call(conn: Connection, call: dict[str, Any], now: datetime, raw: dict[str, Any] | None = None) -> None:
    """Upsert the call row of a ``call.completed`` event, in the delivery's transaction.

    ``raw``: the call object as sent, stored as ``raw_json`` when ``call`` is an adapted view of it.
    """
    try:
        data = CallData.model_validate(call)
    except ValidationError as exc:
        get_logger().warning("call object of a call.completed event does not validate; call row not stored",
                             call_id=str(call.get("id"))[:80], error=str(exc.errors()[:1])[:300])
        return
    store.save_calls(conn, [normalize_call(data, call_json(raw if raw is not None else call), now)], now)


_RETRIES = 5
_AHEAD = timedelta(milliseconds=1)


@dataclass(frozen=True, slots=True)
class Accepted:
    outcome: Outcome
    call_id: str | None


def accept(engine: Engine, verified: Verified, event: Event, now: datetime) -> Accepted:
    """Record the delivery and apply its event; ``replay`` means nothing was stored."""
    for attempt in range(_RETRIES + 1):
        try:
            with engine.begin() as conn:
                return _accept(conn, verified, event, now)
        except IntegrityError:
            # A concurrent delivery of the same message or event committed first:
            # the next pass sees its row and answers replay or duplicate.
            if attempt == _RETRIES:
                raise
        except DBAPIError as exc:
            # A deadlock with the engine's claim (both touch the due index) is
            # normal under load on PostgreSQL/MariaDB: back off and try again.
            if not _is_retryable(exc) or attempt == _RETRIES:
                raise
            time.sleep(0.02 * 2 ** attempt * (0.5 + random.random()))
    raise AssertionError("unreachable")  # pragma: no cover


def _accept(conn: Connection, verified: Verified, event: Event, now: datetime) -> Accepted:
    d = deliveries_t.c
    if conn.execute(sa.select(d.message_key).where(d.message_key == verified.message_key)).first():
        return Accepted("replay", event.call_id)
    duplicate = event.event_key is not None and conn.execute(
        sa.select(d.message_key).where(d.event_key == event.event_key)).first() is not None
    outcome: Outcome = "duplicate" if duplicate else ("ignored" if event.action == "ignore" else "queued")
    conn.execute(sa.insert(deliveries_t).values(
        message_key=verified.message_key, event_key=None if duplicate else event.event_key,
        event_type=event.type, call_id=event.call_id, scheme=verified.scheme, outcome=outcome,
        signed_at=verified.signed_at, received_at=now,
    ))
    if outcome == "queued":
        apply_event(conn, event, now)
    return Accepted(outcome, event.call_id)


def summary_ready(conn: Connection, call_id: str, now: datetime) -> None:
    """Make ``call_id`` due at the head of the due line (module docstring)."""
    q = queue_t.c
    store.enqueue_ids(conn, [call_id])
    oldest = conn.execute(sa.select(sa.func.min(q.next_attempt_at)).where(q.state == "pending")).scalar()
    # Strictly before the oldest: ids enqueued by one statement share one timestamp,
    # and a tie would leave the order among them to the database.
    head = min(now, oldest - _AHEAD) if oldest is not None else now
    conn.execute(
        sa.update(queue_t)
        .where(q.call_id == call_id, q.state == "pending", q.lease_owner.is_(None), q.next_attempt_at > head)
        .values(next_attempt_at=head)
    )
    conn.execute(
        sa.update(queue_t)
        .where(q.call_id == call_id, q.state.in_(REQUEUE_STATES))
        .values(state="pending", next_attempt_at=head, consecutive_errors=0, incomplete_since=None,
                finished_at=None, last_error=None, updated_at=now, lease_owner=None, lease_expires_at=None)
    )


# --- what an accepted event does (both envelopes; docs/webhooks.md "What each event does") ---


def apply_event(conn: Connection, event: Event, now: datetime) -> None:
    """Apply a first delivery of an event to the queue and the tables, in the delivery's transaction.

    Each part is validated apart: the id is queued first, whatever the call
    object or summary that came with it looks like.
    """
    assert event.call_id is not None
    if event.action == "call_completed":
        store.enqueue_ids(conn, [event.call_id])
        save_call(conn, event.call if event.call is not None else event.payload, now, raw=event.payload)
    elif event.action == "transcript_completed":
        transcript_ready(conn, event.call_id, now)
    elif event.summary is None or not save_carried_summary(conn, event.call_id, event.summary, now):
        summary_ready(conn, event.call_id, now)


def transcript_ready(conn: Connection, call_id: str, now: datetime) -> None:
    """``call.transcript.completed``: for now, enqueue ``call_id`` or make it due like a summary
    event does (a ``done`` item stays done).  The hook where transcripts will be fetched."""
    summary_ready(conn, call_id, now)


def save_carried_summary(conn: Connection, call_id: str, summary: dict[str, Any], now: datetime) -> bool:
    """Store the completed summary a dated ``call.summary.completed`` carries, without a request.

    The rows are those sync writes (:func:`etl.normalize.normalize`,
    :func:`etl.store.save_summaries`); the queue item ends ``done`` as if it
    had been fetched.  False (nothing stored, the caller makes the id due
    instead) when the summary is not ``completed``, does not validate, or the
    item is held by a run right now (that run fetches it).
    """
    log = get_logger()
    if summary.get("status") != "completed":
        return False
    raw = call_json({"data": summary})
    try:
        raw.encode("utf-8")
    except UnicodeEncodeError:  # a lone surrogate (valid JSON escape): keep it escaped, as sync's raw_json does
        raw = json.dumps({"data": summary}, separators=(",", ":"))
    try:
        data = SummaryData.model_validate(summary)
    except ValidationError as exc:
        log.warning("summary of a call.summary.completed event does not validate; fetched instead",
                    call_id=call_id, error=str(exc.errors(include_url=False, include_input=False)[:1])[:300])
        return False
    store.enqueue_ids(conn, [call_id])
    q = queue_t.c
    held = sa.select(q.lease_owner, q.lease_expires_at).where(q.call_id == call_id)
    if conn.dialect.name != "sqlite":
        held = held.with_for_update()  # a claim (SKIP LOCKED) passes this row by until commit
    owner, expires = conn.execute(held).one()
    if owner is not None and expires is not None and expires > now:
        return False
    rows = normalize(data, raw, hashlib.sha256(raw.encode("utf-8", "surrogatepass")).hexdigest(), now)
    store.save_summaries(conn, [rows], now)
    conn.execute(
        sa.update(queue_t).where(q.call_id == call_id)
        .values(state="done", consecutive_errors=0, last_api_status="completed", last_error=None,
                incomplete_since=None, finished_at=now, updated_at=now, lease_owner=None, lease_expires_at=None)
    )
    return True


def prune(engine: Engine, now: datetime, retention: timedelta) -> int:
    """Delete delivery rows received before ``now - retention``; returns how many."""
    with engine.begin() as conn:
        return conn.execute(
            sa.delete(deliveries_t).where(deliveries_t.c.received_at < now - retention)).rowcount


def _is_retryable(exc: DBAPIError) -> bool:
    """Deadlock / serialization failure / SQLite busy: worth one more try."""
    orig = getattr(exc, "orig", None)
    code = getattr(orig, "sqlstate", None) or (orig.args[0] if orig is not None and orig.args else None)
    return code in ("40P01", "40001", 1213, 1205) or "database is locked" in str(orig)
