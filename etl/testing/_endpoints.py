"""The answers of the workspace endpoints and webhooks CRUD of the simulated API.

``WorkspaceEndpoints`` (a base of ``FakeOpenPhone``) turns a well-formed,
authorised request into (status, JSON payload): ``GET /v1/phone-numbers``,
``GET /v1/conversations`` and ``GET /v1/calls`` with their filters and paging
(page tokens, and the list ``Quirks``), ``GET /v1/calls/{id}``, and
``POST /v1/webhooks/{kind}``, ``GET /v1/webhooks[/{id}]``, ``DELETE /v1/webhooks/{id}``,
and the dated API version's webhooks (``Quo-Api-Version: 2026-03-30``, paths without
``/v1``): ``POST /webhooks``, ``GET /webhooks[/{id}]``, ``DELETE /webhooks/{id}`` and
``POST /webhooks/{id}/events/test``, which really delivers a signed Standard Webhooks
test event to the webhook's URL over HTTP, on a thread (the API answers at once).
Auth, the rate limit, faults and counting stay with the routing in ``_fake``.
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import json
import threading
from collections.abc import Collection
from typing import TypeVar
from urllib.parse import unquote

import httpx

from etl.testing._data import CALL_ID_RE, iso, rng_for
from etl.testing._faults import Quirks
from etl.testing._workspace import ApiClock, Call, Workspace, parse_time
from etl.testing.webhooks import DATED_API_VERSION, SAMPLE_CALL_ID, deliver, sample_dated_event

T = TypeVar("T")

WEBHOOK_EVENTS = {
    "calls": ("call.completed", "call.ringing", "call.recording.completed"),
    "call-summaries": ("call.summary.completed",),
    "call-transcripts": ("call.transcript.completed",),
}

# The event types of dated webhooks (quo.com/docs/mdx/beta/webhooks-api-reference).
DATED_WEBHOOK_EVENTS = (
    "message.received", "message.delivered", "message.failed", "call.ringing", "call.answered",
    "call.completed", "call.forwarded", "call.missed", "call.recording.completed", "call.summary.completed",
    "call.transcript.completed", "call.voicemail.completed", "contact.updated", "contact.deleted",
)  # fmt: skip


class BadRequest(Exception):
    """A query parameter or body the API would refuse with 400."""

    def __init__(self, message: str, path: str = "") -> None:
        super().__init__(message)
        self.path = path


class WorkspaceEndpoints:
    """Answers of the workspace and webhook endpoints, over the state ``FakeOpenPhone`` holds."""

    workspace: Workspace
    quirks: Quirks
    clock: ApiClock
    webhooks: dict[str, dict[str, object]]
    default_status: str | None
    seed: int
    _webhook_n: int
    # Test events sent by POST /webhooks/{id}/events/test: {webhook_id, event_id, type, status | error}.
    test_deliveries: list[dict[str, object]]
    _delivery_threads: list[threading.Thread]

    def _answer(
        self, endpoint: str, method: str, arg: str, params: dict[str, list[str]], body: bytes
    ) -> tuple[int, dict[str, object] | None]:
        """(status, JSON payload) of a well-formed request; 404 payloads are replaced by the error shape."""
        ws = self.workspace
        if endpoint == "call":
            call_id = unquote(arg)
            if not CALL_ID_RE.fullmatch(call_id):
                raise BadRequest("Invalid call id", "/callId")
            with ws.lock:
                call = ws.calls.get(call_id)
            if call is None and self.default_status is not None and call_id != SAMPLE_CALL_ID:
                call = ws.synth_call(call_id)
            return (404, None) if call is None else (200, {"data": call.to_json()})
        if endpoint == "phone-numbers":
            user = _one(params, "userId")
            with ws.lock:
                numbers = [ws.line_json(p) for p in ws.phone_numbers.values() if user is None or user in p.users]
            return 200, {"data": numbers}
        if endpoint == "conversations":
            return 200, self._conversations(params)
        if endpoint == "calls":
            return 200, self._calls(params)
        return self._webhooks(method, arg, body)

    def _conversations(self, params: dict[str, list[str]]) -> dict[str, object]:
        ws = self.workspace
        wanted = set(_many(params, "phoneNumbers"))
        names = ("createdAfter", "createdBefore", "updatedAfter", "updatedBefore")
        bounds = {name: _time(params, name) for name in names}
        limit = _max_results(params)
        with ws.lock:
            convs = [
                c
                for c in ws.conversations.values()
                if (not wanted or c.phone_number_id in wanted or ws.phone_numbers[c.phone_number_id].number in wanted)
                and _within(c.created_at, bounds["createdAfter"], bounds["createdBefore"])
                and _within(c.updated_at, bounds["updatedAfter"], bounds["updatedBefore"])
            ]
            convs.sort(key=lambda c: (c.updated_at, c.id), reverse=True)
            items = [c.to_json() for c in convs]
        page, token = self._page(items, limit, _one(params, "pageToken"))
        return {"data": page, "nextPageToken": token}

    def _calls(self, params: dict[str, list[str]]) -> dict[str, object]:
        ws = self.workspace
        phone_number_id = _one(params, "phoneNumberId")
        if not phone_number_id:
            raise BadRequest("phoneNumberId is required", "/phoneNumberId")
        participants = _many(params, "participants")
        if not participants:
            raise BadRequest("participants is required", "/participants")
        after, before = _time(params, "createdAfter"), _time(params, "createdBefore")
        user = _one(params, "userId")
        limit = _max_results(params)
        twice = self.quirks.listed_twice
        with ws.lock:
            calls: list[Call] = [
                c
                for c in ws.calls.values()
                if c.phone_number_id == phone_number_id
                and sorted(c.participants) == sorted(participants)
                and _within(c.created_at, after, before)
                and (user is None or c.user_id == user)
            ]
            calls.sort(key=lambda c: (c.created_at, c.id), reverse=True)
            items: list[dict[str, object]] = []
            for call in calls:
                items.append(call.to_json())
                if call.id in twice:
                    items.append(call.to_json())
        page, token = self._page(items, limit, _one(params, "pageToken"))
        return {"data": page, "totalItems": len(items), "nextPageToken": token}

    def _page(self, items: list[T], limit: int, token: str | None) -> tuple[list[T], str | None]:
        offset, empty = _decode_token(token) if token else (0, False)
        if empty:
            return [], _encode_token(offset, False)
        if self.quirks.repeat_item and offset > 0 and limit >= 2:
            page = [items[offset - 1], *items[offset : offset + limit - 1]] if offset <= len(items) else []
            following = offset + limit - 1
        else:
            page = items[offset : offset + limit]
            following = offset + limit
        if following >= len(items):
            return page, None
        return page, _encode_token(following, self.quirks.empty_page and offset == 0)

    def _webhooks(self, method: str, arg: str, body: bytes) -> tuple[int, dict[str, object] | None]:
        if arg.startswith("/"):
            return self._dated_webhooks(method, arg.split("/")[2:], body)
        if method == "POST":
            return 201, {"data": self._create_webhook(arg, body)}
        # The two surfaces keep their own webhooks: /v1/webhooks never shows a dated one.
        legacy = {k: h for k, h in self.webhooks.items() if h.get("apiVersion") != DATED_API_VERSION}
        if method == "GET" and not arg:
            return 200, {"data": list(legacy.values())}
        hook = legacy.get(arg)
        if hook is None:
            return 404, None
        if method == "DELETE":
            del self.webhooks[arg]
            return 204, None
        return 200, {"data": hook}

    # -- the dated API version's webhooks --------------------------------------------------

    def _dated_webhooks(self, method: str, rest: list[str], body: bytes) -> tuple[int, dict[str, object] | None]:
        """``rest``: the path after ``/webhooks``, split (``[]``, ``[id]``, ``[id, "events", "test"]``)."""
        dated = {k: h for k, h in self.webhooks.items() if h.get("apiVersion") == DATED_API_VERSION}
        if not rest:
            if method == "POST":
                return 201, {"data": self._create_dated_webhook(body)}
            return 200, {"data": list(dated.values()), "nextCursor": None}
        hook = dated.get(rest[0])
        if hook is None:
            return 404, None
        if rest[1:] == ["events", "test"]:
            return 200, {"data": self._send_test_event(hook, body)}
        if method == "DELETE":
            del self.webhooks[rest[0]]
            return 204, None
        return 200, {"data": hook}

    def _create_dated_webhook(self, body: bytes) -> dict[str, object]:
        _spec, url, events, label, resource_ids = _webhook_spec(
            body, DATED_WEBHOOK_EVENTS, "events must be a non-empty list of supported event types")
        self._webhook_n += 1
        rng = rng_for("webhook", self.seed, self._webhook_n)
        now = iso(self.clock.now())
        hook: dict[str, object] = {
            "id": f"WH{rng.getrandbits(64):016x}",
            "apiVersion": DATED_API_VERSION,
            "label": label,
            "status": "enabled",
            "url": url,
            # The signing secret: whsec_ + base64 of 32 random bytes (Standard Webhooks).
            "key": "whsec_" + base64.b64encode(rng.randbytes(32)).decode(),
            "events": list(events),
            "resourceIds": list(resource_ids),
            "createdAt": now,
            "updatedAt": now,
        }
        self.webhooks[str(hook["id"])] = hook
        return hook

    def _send_test_event(self, hook: dict[str, object], body: bytes) -> dict[str, object]:
        """Deliver a signed sample event of ``eventType`` (default: the webhook's first event)
        to the webhook's URL on a thread; answer the sample payload at once."""
        spec = _json_object(body) if body else {}
        events = hook.get("events")
        default = events[0] if isinstance(events, list) and events else "call.completed"
        event_type = spec.get("eventType", default)
        if event_type not in DATED_WEBHOOK_EVENTS:
            raise BadRequest("eventType must be a supported event type", "/eventType")
        payload = sample_dated_event(str(event_type))
        record: dict[str, object] = {"webhook_id": hook["id"], "event_id": payload["id"], "type": event_type}
        self.test_deliveries.append(record)

        def send() -> None:
            try:
                record["status"] = deliver(str(hook["url"]), payload, standard_secret=str(hook["key"])).status_code
            except httpx.HTTPError as exc:
                record["error"] = type(exc).__name__

        thread = threading.Thread(target=send, name="sim-webhook-test-event", daemon=True)
        self._delivery_threads.append(thread)
        thread.start()
        return {"eventType": event_type, "payload": payload}

    def wait_for_test_deliveries(self, timeout: float = 15.0) -> list[dict[str, object]]:
        """Wait until every test event sent so far was answered (or failed); their records."""
        for thread in list(self._delivery_threads):
            thread.join(timeout)
        return list(self.test_deliveries)

    def _create_webhook(self, kind: str, body: bytes) -> dict[str, object]:
        allowed = WEBHOOK_EVENTS[kind]
        spec, url, events, label, resource_ids = _webhook_spec(
            body, allowed, f"events must be a non-empty list of {', '.join(allowed)}")
        user_id = spec.get("userId")
        if user_id is not None and not isinstance(user_id, str):
            raise BadRequest("userId must be a string", "/userId")
        status = spec.get("status", "enabled")
        if status not in ("enabled", "disabled"):
            raise BadRequest("status must be enabled or disabled", "/status")
        self._webhook_n += 1
        rng = rng_for("webhook", self.seed, self._webhook_n)
        now = iso(self.clock.now())
        hook: dict[str, object] = {
            "id": f"WH{rng.getrandbits(64):016x}",
            "userId": user_id or "USowner0001",
            "orgId": "ORsimulated01",
            "label": label,
            "status": status,
            "url": url,
            # The signing secret: base64 of 32 random bytes, like the real keys.
            "key": base64.b64encode(rng.randbytes(32)).decode(),
            "createdAt": now,
            "updatedAt": now,
            "deletedAt": None,
            "events": list(events),
            "resourceIds": list(resource_ids),
        }
        self.webhooks[str(hook["id"])] = hook
        return hook


def _webhook_spec(body: bytes, allowed: Collection[str], events_message: str
                  ) -> tuple[dict[str, object], str, list[object], str | None, list[object]]:
    """A webhook's creation body, checked as both API versions check it: (body, url, events, label, resourceIds)."""
    spec = _json_object(body)
    url = spec.get("url")
    if not isinstance(url, str) or not url.startswith(("http://", "https://")):
        raise BadRequest("url must be an http(s) URL", "/url")
    events = spec.get("events")
    if not isinstance(events, list) or not events or not all(e in allowed for e in events):
        raise BadRequest(events_message, "/events")
    label = spec.get("label")
    if label is not None and not isinstance(label, str):
        raise BadRequest("label must be a string", "/label")
    resource_ids = spec.get("resourceIds", ["*"])
    if not isinstance(resource_ids, list) or not all(isinstance(r, str) for r in resource_ids):
        raise BadRequest("resourceIds must be a list of strings", "/resourceIds")
    return spec, url, events, label, resource_ids


def _json_object(body: bytes) -> dict[str, object]:
    try:
        spec = json.loads(body)
    except ValueError as exc:
        raise BadRequest("Body is not JSON") from exc
    if not isinstance(spec, dict):
        raise BadRequest("Body must be an object")
    return spec


def _one(params: dict[str, list[str]], name: str) -> str | None:
    values = params.get(name)
    return values[-1] if values else None


def _many(params: dict[str, list[str]], name: str) -> list[str]:
    # Arrays arrive as name[]=a&name[]=b or name=a&name=b; both are accepted.
    return [*params.get(name, []), *params.get(name + "[]", [])]


def _time(params: dict[str, list[str]], name: str) -> dt.datetime | None:
    text = _one(params, name)
    if text is None:
        return None
    try:
        return parse_time(text)
    except ValueError as exc:
        raise BadRequest(f"{name} must be an ISO 8601 date-time", f"/{name}") from exc


def _max_results(params: dict[str, list[str]], top: int = 100) -> int:
    text = _one(params, "maxResults")
    if text is None:
        return 10
    if not text.isdigit() or not 1 <= int(text) <= top:
        raise BadRequest(f"maxResults must be an integer from 1 to {top}", "/maxResults")
    return int(text)


def _within(when: dt.datetime, after: dt.datetime | None, before: dt.datetime | None) -> bool:
    return (after is None or when > after) and (before is None or when < before)


def _encode_token(offset: int, empty: bool) -> str:
    return base64.urlsafe_b64encode(f"sim:{offset}:{int(empty)}".encode()).decode()


def _decode_token(token: str) -> tuple[int, bool]:
    try:
        prefix, offset, empty = base64.urlsafe_b64decode(token.encode()).decode().split(":")
        if prefix != "sim" or not offset.isdigit() or empty not in ("0", "1"):
            raise ValueError(token)
    except (ValueError, binascii.Error, UnicodeDecodeError) as exc:
        raise BadRequest("Invalid pageToken", "/pageToken") from exc
    return int(offset), empty == "1"
