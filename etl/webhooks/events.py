"""What a verified webhook delivery is about: its type, event id and call id (pure).

Both payload shapes are read: the v1 webhooks' ``data.object`` (quo.com/docs/mdx/guides/webhooks)
and the dated API version's ``data.resource``.  ``call.summary.completed`` is
also accepted under the ``callSummary`` type the docs' sample shows.  A
delivery this job has no use for is not an error: it is answered 2xx and
ignored, so OpenPhone does not retry it.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any, Literal

from etl.ids import is_valid_call_id

Action = Literal["call_completed", "summary_completed", "ignore"]

CALL_COMPLETED = "call.completed"
SUMMARY_TYPES = frozenset({"call.summary.completed", "callSummary"})


class EventError(ValueError):
    """The body is not a JSON object (answered 400)."""


@dataclass(frozen=True, slots=True)
class Event:
    type: str | None
    event_key: str | None  # sha256 of the event's id; None when the body has none
    action: Action
    call_id: str | None
    payload: dict[str, Any]  # the event's object (a call for call.completed), for the call-row step
    note: str | None = None  # why an event is ignored


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
    obj = data.get("object", data.get("resource"))
    obj = obj if isinstance(obj, dict) else {}
    short_type = (kind or "")[:64] or None

    def ignored(note: str, call_id: str | None = None) -> Event:
        return Event(short_type, key, "ignore", call_id, obj, note)

    if kind == CALL_COMPLETED:
        call_id = obj.get("id")
        if not isinstance(call_id, str) or not is_valid_call_id(call_id):
            return ignored("call.completed without a valid call id")
        return Event(short_type, key, "call_completed", call_id, obj)
    if kind in SUMMARY_TYPES:
        call_id = obj.get("callId")
        if not isinstance(call_id, str) or not is_valid_call_id(call_id):
            return ignored(f"{kind} without a valid callId")
        return Event(short_type, key, "summary_completed", call_id, obj)
    return ignored(f"event type {kind!r} is not used by this job")
