"""What a verified webhook delivery is about: its type, event id, call id and what it carries (pure).

Two envelopes exist (docs/api/webhooks-2026-03-30.md); which one a delivery
comes in, and where its object sits, is its surface's adapter's business
(:func:`etl.api.event_surface`):

* **legacy** (webhooks created with ``/v1/webhooks/…``; quo.com/docs/mdx/guides/webhooks):
  ``{id, object: "event", apiVersion: "v4", createdAt, type, data: {object}}``;
* **dated** (webhooks created with ``POST /webhooks`` and ``Quo-Api-Version:
  2026-03-30``; quo.com/docs/mdx/beta/webhooks-overview):
  ``{id, apiVersion: "2026-03-30", createdAt, type, data: {resource, context, links}}``.

Five event types are used: ``call.completed`` (the resource is the call),
``call.summary.completed`` (also under the ``callSummary`` type the legacy
docs' sample shows), ``call.transcript.completed``, and the dated
``contact.updated`` / ``contact.deleted`` (the resource is the contact, as
``GET /v1/contacts/{id}`` shows it; docs/api/dimensions.md).  What a delivery
carries is handed on as plain dicts and validated by :mod:`.intake`, each part
apart: a call object or summary that does not validate never stops the call id
from being queued.  A delivery this job has no use for is not an error: it is
answered 2xx and ignored, so Quo does not retry it.

A **test event** (``POST /webhooks/{id}/events/test``, which ``etl webhooks
migrate`` asks for) is one of these: Quo sends it signed like any delivery,
with no header or field that says "test", but its payload is Quo's canonical
sample, whose ids are fixed sample ids (the call
``ACsampleactivity0000000000000000``, the contact ``CTsampleContact01234``;
docs/api/webhooks-2026-03-30.md).  An event about such an id
(:func:`is_sample_id`) is recorded (``migrate`` waits for the record) and
ignored: the sample call is never queued for a sync, where it could only end
``not_found``, and the sample contact never stored.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

from etl.api import event_surface
from etl.ids import is_valid_call_id
from etl.models import API_ID_LENGTH
from etl.storable import utc_in_range

Action = Literal["call_completed", "summary_completed", "transcript_completed", "contact_updated",
                 "contact_deleted", "ignore"]

CALL_COMPLETED = "call.completed"
SUMMARY_TYPES = frozenset({"call.summary.completed", "callSummary"})
TRANSCRIPT_COMPLETED = "call.transcript.completed"
CONTACT_UPDATED = "contact.updated"
CONTACT_DELETED = "contact.deleted"
# The event types a webhook of this job subscribes to (`etl webhooks register`): the legacy
# webhooks take the call events (one webhook per resource), a dated one all five.
SUBSCRIBED_EVENTS = (CALL_COMPLETED, "call.summary.completed", TRANSCRIPT_COMPLETED, CONTACT_UPDATED,
                     CONTACT_DELETED)


# Quo's sample ids: the id's two-letter prefix, then "sample" (ACsampleactivity0000000000000000,
# CTsampleContact01234, CNsampleconversation…, PNsamplephonenumber…, USsampleus).  Real ids are random
# letters and digits after the prefix, so one of them starts with these six letters once in 62**6.
_SAMPLE_ID = re.compile(r"[A-Z]{2}sample")


def is_sample_id(value: str) -> bool:
    """True for an id of the canonical sample payload Quo sends as a test event (module docstring)."""
    return _SAMPLE_ID.match(value) is not None


def _test_event_note(kind: str | None, sample_id: str) -> str:
    return f"test event: {kind} about Quo's sample {sample_id[:40]}; recorded, not applied"


class EventError(ValueError):
    """The body is not a JSON object (answered 400)."""


@dataclass(frozen=True, slots=True)
class Event:
    type: str | None
    event_key: str | None  # sha256 of the event's id; None when the body has none
    action: Action
    call_id: str | None
    payload: dict[str, Any]  # the event's object as sent (a call for call.completed): the call row's raw_json
    note: str | None = None  # why an event is ignored
    envelope: str = "legacy"  # the name of the envelope's surface (etl.api.Surface.envelope)
    # call.completed: the call object in the shape the call-row step reads
    # (etl.api.webhook_call; the surface's adapter shaped it); None for other events.
    call: dict[str, Any] | None = None
    # The whole summary a summary event carries (the dated summary object, with ``callId``),
    # to be stored without a request when it validates and is completed; None otherwise.
    summary: dict[str, Any] | None = None
    # The event's createdAt (naive UTC), when sent and sane: how new a carried summary is.
    created_at: datetime | None = None
    # contact.updated / contact.deleted: the contact's id (the object itself is ``payload``).
    contact_id: str | None = None


def _created_at(doc: dict[str, Any]) -> datetime | None:
    value = doc.get("createdAt")
    if not isinstance(value, str):
        return None
    try:
        return utc_in_range(datetime.fromisoformat(value.replace("Z", "+00:00")), "createdAt")
    except ValueError:  # not ISO 8601, or out of range (etl.storable.Refused)
        return None


def parse_event(body: bytes) -> Event:
    try:
        doc = json.loads(body)
    except (ValueError, UnicodeDecodeError) as exc:
        raise EventError(f"body is not JSON: {exc}") from None
    if not isinstance(doc, dict):
        raise EventError("body is not a JSON object")
    kind = doc.get("type") if isinstance(doc.get("type"), str) else None
    event_id = doc.get("id")
    key = hashlib.sha256(event_id.encode("utf-8", "replace")).hexdigest() if isinstance(event_id, str) and event_id \
        else None
    data = doc.get("data")
    data = data if isinstance(data, dict) else {}
    surface = event_surface(doc, data)
    envelope = surface.envelope
    obj = surface.event_object(data)
    context = data.get("context")
    context = context if isinstance(context, dict) else {}
    short_type = (kind or "")[:64] or None

    def ignored(note: str, call_id: str | None = None) -> Event:
        return Event(short_type, key, "ignore", call_id, obj, note, envelope)

    if kind == CALL_COMPLETED:
        call_id = obj.get("id")
        if not isinstance(call_id, str) or not is_valid_call_id(call_id):
            return ignored("call.completed without a valid call id")
        if is_sample_id(call_id):
            return ignored(_test_event_note(kind, call_id), call_id)
        return Event(short_type, key, "call_completed", call_id, obj, envelope=envelope, call=surface.event_call(obj))
    if kind in SUMMARY_TYPES or kind == TRANSCRIPT_COMPLETED:
        call_id = _call_id_of(obj, context)
        if call_id is None:
            return ignored(f"{kind} without a valid callId")
        if is_sample_id(call_id):
            return ignored(_test_event_note(kind, call_id), call_id)
        if kind == TRANSCRIPT_COMPLETED:
            return Event(short_type, key, "transcript_completed", call_id, obj, envelope=envelope)
        summary = surface.event_summary(obj, call_id)
        return Event(short_type, key, "summary_completed", call_id, obj, envelope=envelope, summary=summary,
                     created_at=_created_at(doc))
    if kind in (CONTACT_UPDATED, CONTACT_DELETED):
        contact_id = obj.get("id")
        if not isinstance(contact_id, str) or not contact_id.strip() or len(contact_id) > API_ID_LENGTH:
            return ignored(f"{kind} without a valid contact id")
        if is_sample_id(contact_id):
            return ignored(_test_event_note(kind, contact_id))
        action: Action = "contact_updated" if kind == CONTACT_UPDATED else "contact_deleted"
        return Event(short_type, key, action, None, obj, envelope=envelope, contact_id=contact_id)
    return ignored(f"event type {kind!r} is not used by this job")


def _call_id_of(resource: dict[str, Any], context: dict[str, Any]) -> str | None:
    """The call a summary or transcript event is about: ``resource.callId`` (both envelopes),
    else a call object's ``id`` (a resource or ``context.call``), else ``context.callId``."""
    call = context.get("call")
    candidates = (resource.get("callId"),
                  resource.get("id") if isinstance(resource.get("summary"), dict) else None,
                  call.get("id") if isinstance(call, dict) else None,
                  context.get("callId"))
    for value in candidates:
        if isinstance(value, str) and is_valid_call_id(value):
            return value
    return None
