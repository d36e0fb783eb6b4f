"""A small fake of the workspace endpoints (phone numbers, conversations, calls) for the discovery tests.

Shaped as ``docs/api/more-endpoints.md`` and the official pages say:
``{data: [...], nextPageToken}`` lists (``totalItems`` sent and deliberately
wrong, as the spec warns), conversations newest activity first, calls newest
first, ``phoneNumbers[]`` / ``participants[]`` array parameters, ISO 8601 UTC
times.  Served as an ``httpx.MockTransport`` handler or over real HTTP (a
standard-library threading server) for subprocess tests.

The simulated API (``etl.testing``) serves these endpoints too, and the
end-to-end tests (tests/acceptance/test_discover_then_sync.py,
tests/integration/test_cron_discover.py, tests/integration/test_sync_calls.py,
``etl demo``, bench/discover.py) use it.  This fake stays for the targeted
discovery tests (test_discover*.py, test_bi_calls.py) because they need what
``etl.testing`` cannot express: one-shot faults on one path in a given order
(``faults``), arbitrary page rewrites (a page token that loops, endless empty
pages, an earlier page's item mixed in: ``page_hooks``), a call whose
participants differ from its conversation's (``etl.testing`` copies the
conversation's), caller-chosen line ids and exact call times (``etl.testing``
draws the answer delay at random, which the exact BI answers cannot absorb),
a page size cap below ``maxResults``, and a wrong ``totalItems``.
"""

from __future__ import annotations

import collections
import json
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx

Reply = tuple[int, dict[str, str], bytes]
BASE = datetime(2026, 11, 20, 9, 0, 0, tzinfo=UTC)


def iso(value: datetime) -> str:
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.") + f"{value.microsecond // 1000:03d}Z"


def parse_time(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def make_call(call_id: str, line: str, participant: str, created: datetime, *, status: str = "completed",
              direction: str = "incoming", duration: int = 60, user: str = "USalice",
              participants: list[str] | None = None, **extra: Any) -> dict[str, Any]:
    ended = status not in ("queued", "initiated", "ringing", "in-progress")
    call: dict[str, Any] = {
        "id": call_id, "object": "call", "createdAt": iso(created),
        "answeredAt": iso(created + timedelta(seconds=5)) if status == "completed" else None,
        "completedAt": iso(created + timedelta(seconds=duration)) if ended else None,
        "updatedAt": iso(created + timedelta(seconds=duration + 1)),
        "direction": direction, "status": status, "duration": duration if ended else 0,
        "phoneNumberId": line, "userId": user,
        "answeredBy": user if status == "completed" and direction == "incoming" else None,
        "initiatedBy": user if direction == "outgoing" else None,
        "forwardedFrom": None, "forwardedTo": None,
        "participants": participants if participants is not None else [participant],
        "contactIds": ["CT1"],  # an extra field: ignored, kept in raw_json
    }
    call.update(extra)
    return call


class FakeWorkspace:
    """Phone numbers, conversations and calls, with paging and fault injection."""

    def __init__(self, api_key: str, *, page_cap: int = 100, latency_s: float = 0.0) -> None:
        self.api_key = api_key
        self.page_cap = page_cap
        self.latency_s = latency_s
        self.lines: list[dict[str, Any]] = []
        self.conversations: list[dict[str, Any]] = []
        self.calls: dict[str, dict[str, Any]] = {}
        self.requests: collections.Counter[str] = collections.Counter()
        self.log: list[str] = []
        # path -> replies served (in order) before the normal answer, e.g. a 429 then a 500.
        self.faults: dict[str, list[Reply]] = collections.defaultdict(list)
        # path -> function(page dict, offset) -> page dict: repeat items, empty pages, looping tokens.
        self.page_hooks: dict[str, Callable[[dict[str, Any], int], dict[str, Any]]] = {}
        self._lock = threading.Lock()

    # -- data ------------------------------------------------------------------------

    def add_line(self, line_id: str, number: str, name: str = "Main line") -> None:
        self.lines.append({"id": line_id, "object": "phoneNumber", "number": number,
                           "formattedNumber": number, "name": name, "groupId": "GR1", "users": []})

    def add_conversation(self, conv_id: str, line: str, participants: list[str], updated: datetime) -> None:
        self.conversations.append({
            "id": conv_id, "object": "conversation", "phoneNumberId": line, "participants": participants,
            "createdAt": iso(BASE - timedelta(days=30)), "updatedAt": iso(updated),
            "lastActivityAt": iso(updated), "deletedAt": None, "name": None, "assignedTo": None,
        })

    def add_call(self, call: dict[str, Any]) -> None:
        self.calls[call["id"]] = call

    # -- routing ---------------------------------------------------------------------

    def route(self, method: str, url: str, authorization: str | None) -> Reply:
        parts = urlsplit(url)
        path, query = parts.path, parse_qs(parts.query)
        with self._lock:
            self.requests[path] += 1
            self.log.append(url)
            pending = self.faults.get(path)
            fault = pending.pop(0) if pending else None
        if self.latency_s:
            time.sleep(self.latency_s)
        if authorization != self.api_key:
            return _json(401, {"message": "Unauthorized", "code": "0100401"})
        if fault is not None:
            return fault
        if method != "GET":
            return _json(405, {"message": "Method not allowed"})
        if path == "/v1/phone-numbers":
            return self._page(path, self.lines, query)
        if path == "/v1/conversations":
            lines = query.get("phoneNumbers[]", [])
            after = query.get("updatedAfter")
            items = [c for c in self.conversations if not lines or c["phoneNumberId"] in lines]
            if after:
                items = [c for c in items if parse_time(c["updatedAt"]) > parse_time(after[0])]
            items.sort(key=lambda c: c["updatedAt"], reverse=True)
            return self._page(path, items, query)
        if path == "/v1/calls":
            line = query.get("phoneNumberId", [""])[0]
            participant = query.get("participants[]", [""])[0]
            if not line or not participant:
                return _json(400, {"message": "phoneNumberId and participants are required"})
            after = query.get("createdAfter")
            items = [c for c in self.calls.values()
                     if c["phoneNumberId"] == line and participant in c["participants"]]
            if after:
                items = [c for c in items if parse_time(c["createdAt"]) > parse_time(after[0])]
            items.sort(key=lambda c: (c["createdAt"], c["id"]), reverse=True)
            return self._page(path, items, query)
        if path.startswith("/v1/calls/"):
            call = self.calls.get(path.rsplit("/", 1)[1])
            if call is None:
                return _json(404, {"message": "Call not found", "code": "0300404"})
            return _json(200, {"data": call})
        return _json(404, {"message": "Not found"})

    def _page(self, path: str, items: list[dict[str, Any]], query: dict[str, list[str]]) -> Reply:
        size = min(int(query.get("maxResults", ["10"])[0]), self.page_cap)
        offset = int(query.get("pageToken", ["0"])[0])
        chunk = items[offset:offset + size]
        more = offset + size < len(items)
        page: dict[str, Any] = {"data": chunk, "totalItems": len(items) + 7,
                                "nextPageToken": str(offset + size) if more else None}
        hook = self.page_hooks.get(path)
        if hook is not None:
            page = hook(page, offset)
        return _json(200, page)

    # -- adapters --------------------------------------------------------------------

    def handle(self, request: httpx.Request) -> httpx.Response:
        status, headers, body = self.route(request.method, str(request.url), request.headers.get("authorization"))
        return httpx.Response(status, headers=headers, content=body)

    def transport(self) -> httpx.MockTransport:
        return httpx.MockTransport(self.handle)


def _json(status: int, body: object, headers: dict[str, str] | None = None) -> Reply:
    return status, {"content-type": "application/json", **(headers or {})}, json.dumps(body).encode()


def reply(status: int, body: object | bytes, headers: dict[str, str] | None = None) -> Reply:
    """A fault reply: JSON for objects, the bytes as they are otherwise."""
    if isinstance(body, bytes):
        return status, {"content-type": "text/html", **(headers or {})}, body
    return _json(status, body, headers)


@contextmanager
def serve(fake: FakeWorkspace) -> Iterator[str]:
    """Serve ``fake`` over real HTTP on 127.0.0.1; yields the base URL."""

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_GET(self) -> None:
            status, headers, body = fake.route("GET", f"http://fake{self.path}", self.headers.get("Authorization"))
            self.send_response(status)
            for name, value in headers.items():
                self.send_header(name, value)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
