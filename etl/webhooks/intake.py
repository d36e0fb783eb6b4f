"""Store a verified delivery and update the queue, in one transaction.

Replay or redelivery (decided from the docs: deliveries repeat, and each
retry is signed again with a fresh timestamp):

* the *same signed message* again (:attr:`Verified.message_key`: for
  openphone-v1 the same timestamp and signature; for Standard Webhooks the same
  ``webhook-id`` with the same timestamp, however spelled: ``0<ts>`` is
  ``<ts>``) is a **replay**: refused (401), nothing stored;
* the *same message re-signed* (Standard Webhooks: the same ``webhook-id``, the
  message's idempotency key, with another timestamp) or the *same event*
  (same ``id`` in the body) in a newly signed message is a **redelivery**:
  accepted (2xx) and recorded as ``duplicate``, with no queue change, so the
  same event three times means one queue row and one fetch.

What an accepted event does to the queue:

* ``call.completed`` (either envelope): the id is enqueued (rows already queued are left as
  they are) and the call row is upserted from the event's call object, with
  its participants, in the same transaction (:func:`store.save_calls`, as
  discovery does), so the sync need not fetch ``GET /v1/calls/{id}``.  The
  call object is checked apart from the enqueue (:func:`save_call`): one that
  does not validate, holds values no column can (a duration of ``10**30``, a
  year outside 1970-2999) or is refused by the database (in a savepoint) is
  logged and skipped; the id is queued anyway.
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
* ``contact.updated`` (dated): the contact is stored as a refresh stores it
  (:func:`etl.store.dimensions.save_contact`: numbers, emails and custom fields
  replaced, ``gone_at`` cleared); ``contact.deleted``: the contact is kept and
  marked gone (``gone_reason = 'deleted'``).  A contact that cannot be stored
  (its object does not validate, a date no database holds, or the database
  refuses it) costs only itself (issue 25): kept in ``rejected_records``
  (source ``serve``, endpoint ``webhook contact.updated``) with the reason,
  one warning line; the delivery is still accepted (:func:`apply_contact`).
* anything else: recorded as ``ignored``.

Rows older than the retention window are pruned (:func:`prune`); retention
must outlast the signature tolerance on both sides, or a replay could come
back after its row is gone (``etl serve`` checks this).

A delivery holds its request open only briefly: a busy SQLite database (a
long writer elsewhere) is retried for at most :data:`MAX_WAIT_S` in all, then
the caller answers 503 and OpenPhone retries later.  A connection that failed
otherwise is dropped, not reused: a SQLite file swapped underneath or a
server restarted must not leave a pooled connection failing every delivery.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Literal

from pydantic import ValidationError
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import DBAPIError

from etl import store
from etl.api import webhook_call, webhook_contact, webhook_summary
from etl.clock import Clock
from etl.config import DEFAULT_WORKSPACE
from etl.logs import get_logger
from etl.normalize import CallContextRows, call_json, clean_text, normalize, normalize_call
from etl.storable import validation_reason
from etl.store import dimensions as dimension_store
from etl.store.fallback import short_error
from etl.webhooks.events import Event
from etl.webhooks.signatures import Verified

Outcome = Literal["queued", "duplicate", "ignored", "replay"]

# Terminal states a call.summary.completed event re-queues (see the module docstring).
REQUEUE_STATES = ("absent", "not_found", "error", "failed")
# A transcript event re-queues these transcript end states (a plan upgraded since a 403 included).
TRANSCRIPT_REQUEUE = ("absent", "not_found", "error", "failed", "forbidden")

# Where a contact that cannot be stored came from, in rejected_records.endpoint.
CONTACT_ENDPOINT = "webhook contact.updated"

# What a call row may hold; anything else in an event is the sender's error, not a reason to fail.
_MAX_DURATION_S = 2**31 - 1
_YEARS = range(1970, 3000)
_API_TIMES = ("created_at", "answered_at", "completed_at", "updated_at")

def save_call(conn: Connection, call: dict[str, Any], now: datetime, raw: dict[str, Any] | None = None, *,
              workspace: str = DEFAULT_WORKSPACE) -> bool:
    """Upsert the call row of a ``call.completed`` event, in the delivery's transaction.

    ``raw``: the call object as sent, stored as ``raw_json`` when ``call`` is an adapted view of it.
    Validated apart from the enqueue: a call object that does not validate or
    that the database refuses is logged and skipped (False), never an error
    of the delivery.
    """
    log = get_logger()
    call_id = clean_text(str(call.get("id")))[:80]
    try:
        rows = _call_rows(call, now, raw if raw is not None else call)
    except (ValidationError, ValueError, OverflowError) as exc:
        detail = str(exc.errors()[:1]) if isinstance(exc, ValidationError) else str(exc)
        log.warning("call object of a call.completed event does not validate; call row not stored",
                    call_id=call_id, error=clean_text(detail)[:300])
        return False
    try:
        with conn.begin_nested():
            store.save_calls(conn, [rows], now, workspace=workspace)
    except (DBAPIError, ValueError, OverflowError) as exc:
        # Whatever the database refuses in the call object must not cost the enqueue.
        reason = type(getattr(exc, "orig", None) or exc).__name__
        log.warning("database refused the call object of a call.completed event; call row not stored",
                    call_id=call_id, error=reason)
        return False
    return True


def _call_rows(call: dict[str, Any], now: datetime, sent: dict[str, Any]) -> CallContextRows:
    data = webhook_call(call)
    raw = call_json(sent)
    try:
        raw.encode("utf-8")
    except UnicodeEncodeError:  # an unpaired surrogate: keep it, escaped, as JSON can
        raw = json.dumps(sent, separators=(",", ":"))
    rows = normalize_call(data, raw, now)
    duration = rows.parent["duration_seconds"]
    if duration is not None and not 0 <= duration <= _MAX_DURATION_S:
        raise ValueError(f"duration is out of range ({len(str(duration))} digits)")
    for column in _API_TIMES:
        value = rows.parent[column]
        if value is not None and value.year not in _YEARS:
            raise ValueError(f"{column} {value.isoformat()} is outside the years {_YEARS[0]}-{_YEARS[-1]}")
    return rows


# A busy SQLite database (or a deadlock) is retried this long in all, then answered 503.
MAX_WAIT_S = 3.0


@dataclass(frozen=True, slots=True)
class Accepted:
    outcome: Outcome
    call_id: str | None


def accept(engine: Engine, verified: Verified, event: Event, now: datetime, *, clock: Clock,
           max_wait_s: float = MAX_WAIT_S, transcripts: bool = False, workspace: str = DEFAULT_WORKSPACE) -> Accepted:
    """Record the delivery and apply its event; ``replay`` means nothing was stored.

    ``transcripts``: the ``transcripts`` setting (a transcript event queues the call's transcript);
    ``workspace``: whose delivery it is (replays and redeliveries are checked among its deliveries; the
    rows and queue items it makes are its own).

    A :class:`DBAPIError` escapes when the database is unreachable, or stayed
    busy for ``max_wait_s``: the caller answers 503.
    """
    # A concurrent delivery of the same message or event may commit first (an IntegrityError):
    # the next pass sees its row and answers replay or duplicate.
    return store.transaction(engine, _accept, verified, event, now, transcripts, workspace, clock=clock,
                             retries=None, max_wait_s=max_wait_s, conflicts=3, fatal=False)


def _accept(conn: Connection, verified: Verified, event: Event, now: datetime, transcripts: bool,
            workspace: str) -> Accepted:
    if store.signed_at_of(conn, verified.message_key, workspace=workspace) is not None:
        # The exact signed message again (etl.webhooks.signatures keys it by id and timestamp): a replay,
        # in whatever order it arrives.  A copy signed at another time has a key of its own and is
        # answered by its event (duplicate once the event was seen).
        return Accepted("replay", event.call_id)
    event_key = redelivery_key(verified, event)
    duplicate = event_key is not None and store.event_seen(conn, event_key, workspace=workspace)
    outcome: Outcome = "duplicate" if duplicate else ("ignored" if event.action == "ignore" else "queued")
    store.record_delivery(
        conn, workspace=workspace, message_key=verified.message_key, event_key=None if duplicate else event_key,
        event_type=None if event.type is None else clean_text(event.type)[:64], call_id=event.call_id,
        scheme=verified.scheme, outcome=outcome, signed_at=verified.signed_at, received_at=now,
    )
    if outcome == "queued":
        apply_event(conn, event, now, transcripts=transcripts, workspace=workspace)
    return Accepted(outcome, event.call_id)


def redelivery_key(verified: Verified, event: Event) -> str | None:
    """What tells a redelivery from a new message: the event's id, else (a body without one) the
    Standard Webhooks ``webhook-id`` the sender re-signs each retry with; None when neither exists."""
    if event.event_key is not None:
        return event.event_key
    if verified.message_id is None:
        return None
    return hashlib.sha256(f"webhook-id:{verified.message_id}".encode()).hexdigest()


def summary_ready(conn: Connection, call_id: str, now: datetime, *, workspace: str = DEFAULT_WORKSPACE) -> None:
    """Make ``call_id`` due at the head of ``workspace``'s due line (module docstring)."""
    store.make_due_first(conn, call_id, now, REQUEUE_STATES, workspace=workspace)


# --- what an accepted event does (both envelopes; docs/webhooks.md "What each event does") ---


def apply_event(conn: Connection, event: Event, now: datetime, *, transcripts: bool = False,
                workspace: str = DEFAULT_WORKSPACE) -> None:
    """Apply a first delivery of an event to ``workspace``'s queue and tables, in the delivery's transaction.

    Each part is validated apart: the id is queued first, whatever the call
    object or summary that came with it looks like.
    """
    if event.action in ("contact_updated", "contact_deleted"):
        apply_contact(conn, event, now, workspace=workspace)
        return
    assert event.call_id is not None
    if event.action == "call_completed":
        store.enqueue_ids(conn, [event.call_id], now, workspace=workspace)
        save_call(conn, event.call if event.call is not None else event.payload, now, raw=event.payload,
                  workspace=workspace)
    elif event.action == "transcript_completed":
        transcript_ready(conn, event.call_id, now, transcripts=transcripts, workspace=workspace)
    elif event.summary is None or not save_carried_summary(conn, event.call_id, event.summary, now,
                                                           as_of=event.created_at, workspace=workspace):
        summary_ready(conn, event.call_id, now, workspace=workspace)


def apply_contact(conn: Connection, event: Event, now: datetime, *, workspace: str = DEFAULT_WORKSPACE) -> bool:
    """Store the contact of a ``contact.updated`` event, or mark the contact of a ``contact.deleted`` gone,
    in a savepoint of the delivery's transaction; False when the contact cannot be stored (its object does
    not validate, a date no database holds, the database refuses it: kept in ``rejected_records``, one
    warning line) or a deleted contact was not stored (or already gone)."""
    log = get_logger()
    contact_id = clean_text(str(event.contact_id))[:80]
    if event.action == "contact_deleted":
        gone = dimension_store.mark_contact_deleted(conn, str(event.contact_id), now, workspace=workspace)
        if not gone:
            log.info("contact.deleted for a contact not stored (or already gone)", contact_id=contact_id)
        return gone

    def reject(reason: str) -> bool:
        store.record_rejected(conn, store.Rejected("serve", CONTACT_ENDPOINT, str(event.contact_id), reason,
                                                   event.payload), now, workspace=workspace)
        log.warning("contact of a contact.updated event cannot be stored; kept in rejected_records",
                    contact_id=contact_id, reason=clean_text(reason)[:300])
        return False

    try:
        contact = webhook_contact(event.payload)
    except ValidationError as exc:
        return reject(validation_reason(exc))
    try:
        with conn.begin_nested():
            saved = dimension_store.save_contact(conn, contact, now, workspace=workspace, source="serve",
                                                 endpoint=CONTACT_ENDPOINT)
    except store.RECORD_ERRORS as exc:
        return reject(f"the database refused it: {short_error(exc)}")
    if saved.rejected:  # a date no database holds: kept in rejected_records by the store
        log.warning("contact of a contact.updated event cannot be stored; kept in rejected_records",
                    contact_id=contact_id, reason=clean_text(saved.rejected[0].reason)[:300])
        return False
    return True


def transcript_ready(conn: Connection, call_id: str, now: datetime, *, transcripts: bool = False,
                     workspace: str = DEFAULT_WORKSPACE) -> None:
    """``call.transcript.completed``: enqueue ``call_id`` or make it due as a summary event does (a
    ``done`` item stays done); with ``transcripts`` on, its transcript item too, due at the head of the
    line (re-queued from an end state other than ``done``: the API now says a transcript exists)."""
    summary_ready(conn, call_id, now, workspace=workspace)
    if transcripts:
        store.make_transcript_due(conn, call_id, now, TRANSCRIPT_REQUEUE, workspace=workspace)


def save_carried_summary(conn: Connection, call_id: str, summary: dict[str, Any], now: datetime, *,
                         as_of: datetime | None = None, workspace: str = DEFAULT_WORKSPACE) -> bool:
    """Store the completed summary a dated ``call.summary.completed`` carries, without a request.

    The rows are those sync writes (:func:`etl.normalize.normalize`,
    :func:`etl.store.save_summaries`); the queue item ends ``done`` as if it
    had been fetched.  False (nothing stored, the caller makes the id due
    instead) when the summary is not ``completed``, does not validate, or the
    item is held by a run right now (that run fetches it).  ``as_of``: the event's
    ``createdAt``; a summary older than the stored one is not written (the newer wins).
    """
    log = get_logger()
    if summary.get("status") != "completed":
        return False
    raw = call_json({"data": summary})  # storable: a lone surrogate stays escaped (etl.storable.json_text)
    try:
        data = webhook_summary(summary)
    except ValidationError as exc:
        log.warning("summary of a call.summary.completed event does not validate; fetched instead",
                    call_id=call_id, error=str(exc.errors(include_url=False, include_input=False)[:1])[:300])
        return False
    store.enqueue_ids(conn, [call_id], now, workspace=workspace)
    if store.lease_holder(conn, call_id, now) is not None:
        return False
    rows = normalize(data, raw, hashlib.sha256(raw.encode("utf-8", "surrogatepass")).hexdigest(), now)
    rows.parent["as_of"] = as_of or now
    try:
        with conn.begin_nested():
            older = store.save_summaries(conn, [rows], now, workspace=workspace)
        if older:
            log.info("summary of a call.summary.completed event is older than the stored one; not written",
                     call_id=call_id, event_created_at=None if as_of is None else as_of.isoformat())
    except (DBAPIError, ValueError, OverflowError) as exc:
        # What the database refuses in a carried summary must not cost the delivery: fetch it instead.
        log.warning("database refused the summary of a call.summary.completed event; fetched instead",
                    call_id=call_id, error=type(getattr(exc, "orig", None) or exc).__name__)
        return False
    store.mark_done(conn, call_id, now, workspace=workspace)
    return True


def prune(engine: Engine, now: datetime, retention: timedelta, *, workspace: str = DEFAULT_WORKSPACE) -> int:
    """Delete ``workspace``'s delivery rows received before ``now - retention``; returns how many."""
    with engine.begin() as conn:
        return store.prune_deliveries(conn, now - retention, workspace=workspace)
