"""What a verified webhook delivery is about: its type, event id, call id and what it carries (pure).

Two envelopes are read (docs/api/webhooks-2026-03-30.md):

* **legacy** (webhooks created with ``/v1/webhooks/…``; quo.com/docs/mdx/guides/webhooks):
  ``{id, object: "event", apiVersion: "v4", createdAt, type, data: {object}}``;
* **dated** (webhooks created with ``POST /webhooks`` and ``Quo-Api-Version:
  2026-03-30``; quo.com/docs/mdx/beta/webhooks-overview):
  ``{id, apiVersion: "2026-03-30", createdAt, type, data: {resource, context, links}}``.

Three event types are used: ``call.completed`` (the resource is the call),
``call.summary.completed`` (also under the ``callSummary`` type the legacy
docs' sample shows) and ``call.transcript.completed``.  What a delivery
carries is handed on as plain dicts and validated by :mod:`.intake`, each part
apart: a call object or summary that does not validate never stops the call id
from being queued.  A delivery this job has no use for is not an error: it is
answered 2xx and ignored, so Quo does not retry it.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

from etl.ids import is_valid_call_id
from etl.storable import utc_in_range

Action = Literal["call_completed", "summary_completed", "transcript_completed", "ignore"]
Envelope = Literal["legacy", "dated"]

CALL_COMPLETED = "call.completed"
SUMMARY_TYPES = frozenset({"call.summary.completed", "callSummary"})
TRANSCRIPT_COMPLETED = "call.transcript.completed"
# The event types a webhook of this job subscribes to (`etl webhooks register`).
SUBSCRIBED_EVENTS = (CALL_COMPLETED, "call.summary.completed", TRANSCRIPT_COMPLETED)

_DATED_VERSION = re.compile(r"\d{4}-\d{2}-\d{2}")


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
    envelope: Envelope = "legacy"
    # call.completed: the call object in the shape the call-row step validates (the dated
    # version's renamed fields mapped back, :func:`dated_call_as_v1`); None for other events.
    call: dict[str, Any] | None = None
    # The whole summary a summary event carries (the dated summary object, with ``callId``),
    # to be stored without a request when it validates and is completed; None otherwise.
    summary: dict[str, Any] | None = None
    # The event's createdAt (naive UTC), when sent and sane: how new a carried summary is.
    created_at: datetime | None = None


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
    envelope = envelope_of(doc, data)
    obj = data.get("resource") if envelope == "dated" else data.get("object", data.get("resource"))
    obj = obj if isinstance(obj, dict) else {}
    context = data.get("context")
    context = context if isinstance(context, dict) else {}
    short_type = (kind or "")[:64] or None

    def ignored(note: str, call_id: str | None = None) -> Event:
        return Event(short_type, key, "ignore", call_id, obj, note, envelope)

    if kind == CALL_COMPLETED:
        call_id = obj.get("id")
        if not isinstance(call_id, str) or not is_valid_call_id(call_id):
            return ignored("call.completed without a valid call id")
        call = dated_call_as_v1(obj) if envelope == "dated" else obj
        return Event(short_type, key, "call_completed", call_id, obj, envelope=envelope, call=call)
    if kind in SUMMARY_TYPES or kind == TRANSCRIPT_COMPLETED:
        call_id = _call_id_of(obj, context)
        if call_id is None:
            return ignored(f"{kind} without a valid callId")
        if kind == TRANSCRIPT_COMPLETED:
            return Event(short_type, key, "transcript_completed", call_id, obj, envelope=envelope)
        summary = _whole_summary(obj, call_id) if envelope == "dated" else None
        return Event(short_type, key, "summary_completed", call_id, obj, envelope=envelope, summary=summary,
                     created_at=_created_at(doc))
    return ignored(f"event type {kind!r} is not used by this job")


def envelope_of(doc: dict[str, Any], data: dict[str, Any]) -> Envelope:
    """``dated`` for a dated ``apiVersion`` (``YYYY-MM-DD``); without an ``apiVersion``, for a
    ``data.resource`` without ``data.object``.  A legacy version (``v4``) stays legacy whatever
    its ``data`` holds: only a dated payload is trusted to carry the whole summary."""
    version = doc.get("apiVersion")
    if isinstance(version, str):
        return "dated" if _DATED_VERSION.fullmatch(version) else "legacy"
    return "dated" if "resource" in data and "object" not in data else "legacy"


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


_SUMMARY_FIELDS = ("status", "type", "summary", "nextSteps", "jobs", "title")


def _whole_summary(resource: dict[str, Any], call_id: str) -> dict[str, Any] | None:
    """The dated summary object a delivery carries, with ``callId`` set; None if it carries none.

    Either the resource is the summary (``status`` …) or a call with the summary under
    ``summary`` (as ``GET /calls/{id}?include=summary`` nests it).  ``summary`` and
    ``nextSteps`` are ``string[] | null`` in the dated version; missing means null.
    """
    nested = resource.get("summary")
    source = nested if isinstance(nested, dict) else resource
    if not isinstance(source.get("status"), str):
        return None
    summary = {name: source[name] for name in _SUMMARY_FIELDS if name in source}
    summary.setdefault("summary", None)
    summary.setdefault("nextSteps", None)
    summary["callId"] = call_id
    return summary


def dated_call_as_v1(call: dict[str, Any]) -> dict[str, Any]:
    """A dated call object in the shape the call-row step reads (``etl.schema.CallData``).

    The dated version names the user ``actorId`` (v1 ``userId``) and lists
    participants as ``{phoneNumber, actorId}`` objects (v1: numbers); the other
    fields keep their names.  Anything unexpected is left as it is, for the
    validation to refuse (the id is queued regardless).
    """
    adapted = dict(call)
    if "userId" not in adapted and "actorId" in adapted:
        adapted["userId"] = adapted["actorId"]
    participants = call.get("participants")
    if isinstance(participants, list) and all(isinstance(p, dict) for p in participants):
        # A party without a number (an internal leg) has nothing for call_participants.
        adapted["participants"] = [p.get("phoneNumber") for p in participants if p.get("phoneNumber") is not None]
    return adapted
