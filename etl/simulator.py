"""A simulated OpenPhone (Quo) call-summaries API.

The ETL has to be exercised against the real API's shapes (the published
OpenAPI document, ``docs/api/call-summaries.md``) and against its bad
days -- rate limits, 5xx, dropped connections, hangs, truncated or malformed
bodies -- without a network, an API key or a business-plan account.

One routing function (``FakeOpenPhone._route``) decides every answer; two thin
adapters serve it:

* ``FakeOpenPhone.transport()`` -- an ``httpx.MockTransport`` for ``etl demo``
  and unit tests: no sockets, so dropped connections and hangs are raised as
  the httpx exceptions a real network would produce;
* ``serve(fake)`` and ``python -m etl.simulator`` -- a real HTTP/1.1 server
  (keep-alive, Content-Length framing) for subprocess tests and the benchmark,
  where timeouts and closed sockets are real.

Everything is reproducible: sample summaries derive from a hash of the call
id, and fault decisions from (fault seed, call id, n-th request for that id),
so a failing run replays identically whatever the concurrency order.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import functools
import hashlib
import json
import os
import random
import re
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from http import HTTPStatus
from pathlib import Path
from urllib.parse import unquote, urlsplit

import httpx

__all__ = [
    "API_PATH_PREFIX",
    "STATUSES",
    "FakeOpenPhone",
    "Faults",
    "main",
    "sample_summary",
    "serve",
]

API_PATH_PREFIX = "/v1/call-summaries/"
STATUSES = ("absent", "in-progress", "completed", "failed")
DOCS_URL = "https://openphone.com/docs"

# The schema's pattern ^AC(.*)$ is evaluated by a JavaScript engine: "." stops
# at line terminators and "$" matches only at the very end -- unlike Python's
# "$", which also matches before a trailing "\n" and would let "AC1\n" through.
_CALL_ID_RE = re.compile("AC[^\n\r\u2028\u2029]*")

# (code, title) of the schema's error bodies. 429 is not in the published
# document; it gets the same shape so clients can parse every error alike.
_ERRORS: dict[int, tuple[str, str]] = {
    400: ("0500400", "Bad Request"),
    401: ("0500401", "Unauthorized"),
    403: ("0500403", "Forbidden"),
    404: ("0500404", "Not Found"),
    429: ("0500429", "Too Many Requests"),
    500: ("0501500", "Unknown"),
}

_JSON: tuple[tuple[str, str], ...] = (("content-type", "application/json"),)
_HTML: tuple[tuple[str, str], ...] = (("content-type", "text/html"),)
_GARBAGE = b"<html>oops</html>"

_RESPOND, _DROP, _HANG = "respond", "drop", "hang"


def _dumps(obj: object) -> bytes:
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False).encode()


# ---------------------------------------------------------------------------
# Sample data

_SUMMARY_LINES = (
    "You talked about the weather.",
    "The customer asked about pricing for the Business plan.",
    "Renewal is due next month; they want a multi-year discount.",
    "The caller reported that exports fail on large workspaces.",
    "Zoë confirmed the delivery address in Zürich.",
    "They compared us with two competitors.",
    "The invoice from March was paid twice by mistake.",
    'The customer said the onboarding was "surprisingly easy".',
    "A demo is booked for Thursday at 10:00.",
    "They need SSO before rolling out to 40 seats 👍",
    "Nobody picked up the first transfer; the second one worked.",
    "José will send the signed contract by Friday.",
)
_NEXT_STEPS = (
    "Bring an umbrella.",
    "Send the pricing sheet.",
    "Refund the duplicate March invoice.",
    "Schedule a follow-up call next week.",
    "Open a ticket with engineering about exports.",
    "Share the SSO setup guide.",
    "Ask finance to approve the discount.",
)
_JOBS = (
    ("📋", "Lead qualification"),
    ("📞", "Call outcome"),
    ("💰", "Deal details"),
    ("🛠️", "Support triage"),
)
_FIELDS: tuple[tuple[str, Callable[[random.Random], object]], ...] = (
    ("Qualified", lambda r: r.random() < 0.5),
    ("Follow-up needed", lambda r: r.random() < 0.5),
    # 0/1 ints next to real booleans: a loader must not confuse the two.
    ("Callback requested", lambda r: r.randint(0, 1)),
    ("Lead score", lambda r: r.randint(0, 100)),
    ("Seats", lambda r: r.randint(1, 500)),
    ("Budget (USD)", lambda r: round(r.uniform(100, 50_000), 2)),
    ("Confidence", lambda r: round(r.random(), 3)),
    # Whole floats serialise as "2.0": still a number, not an int-looking string.
    ("Hours estimated", lambda r: r.choice((0.25, 1.5, 2.0, 10.0))),
    ("Sentiment", lambda r: r.choice(("positive", "neutral", "negative", "mixed"))),
    (
        "Contact name",
        lambda r: r.choice(("Zoë Martin", "José Núñez", "Ana O'Neil", "李雷", 'Sam "Sammy" Lee')),
    ),
    ("Notes", lambda r: r.choice(("", "Prefers email 👍", "Call after 5pm", "N/A"))),
)


def _rng_for(*parts: object) -> random.Random:
    # hashlib rather than hash(): str hashes are salted per process.
    digest = hashlib.blake2b(":".join(map(str, parts)).encode(), digest_size=8).digest()
    return random.Random(int.from_bytes(digest, "big"))


def sample_summary(call_id: str, status: str = "completed") -> dict[str, object]:
    """The ``data`` object the API would return for ``call_id``.

    Deterministic from a hash of ``call_id``. ``completed`` summaries have 1-4
    summary lines, 0-3 next steps and 0-2 jobs with 1-4 fields whose values mix
    str, int, float and bool. Other statuses have ``summary`` and ``nextSteps``
    null and either no ``jobs`` key or ``jobs`` null (both are valid).
    """
    if status not in STATUSES:
        raise ValueError(f"status must be one of {STATUSES}, not {status!r}")
    rng = _rng_for("summary", call_id)
    data: dict[str, object] = {"callId": call_id, "status": status}
    if status != "completed":
        data["summary"] = None
        data["nextSteps"] = None
        if rng.random() < 0.5:
            data["jobs"] = None
        return data
    data["summary"] = rng.sample(_SUMMARY_LINES, rng.randint(1, 4))
    data["nextSteps"] = rng.sample(_NEXT_STEPS, rng.randint(0, 3))
    jobs: list[dict[str, object]] = []
    for icon, name in rng.sample(_JOBS, rng.randint(0, 2)):
        fields = [
            {"name": n, "value": gen(rng)} for n, gen in rng.sample(_FIELDS, rng.randint(1, 4))
        ]
        jobs.append({"icon": icon, "name": name, "result": {"data": fields}})
    data["jobs"] = jobs
    return data


@functools.lru_cache(maxsize=1 << 15)
def _sample_body(call_id: str, status: str) -> bytes:
    # Bytes (immutable) are cached, never the dict, which callers may mutate.
    return _dumps({"data": sample_summary(call_id, status)})


# ---------------------------------------------------------------------------
# The fake API


@dataclass
class Faults:
    """Probabilities of injected faults, per request that reaches an id.

    One draw decides at most one fault, in field order; if the probabilities
    add up to more than 1 the later ones are squeezed out.
    """

    seed: int = 0
    error_500: float = 0.0
    rate_429: float = 0.0
    retry_after: str | None = "1"
    drop: float = 0.0
    hang: float = 0.0
    hang_seconds: float = 5.0
    truncated: float = 0.0
    garbage: float = 0.0
    schema_violation: float = 0.0
    max_per_id: int | None = 3


@dataclass(slots=True)
class _Reply:
    status: int
    body: bytes
    headers: tuple[tuple[str, str], ...]
    outcome: str
    action: str = _RESPOND
    delay: float = 0.0  # simulated latency, both adapters
    hold: float = 0.0  # extra wait of a "hang", real server only
    flight: str | None = None  # call id counted in flight until the reply lands


_FRAMING_HEADERS = frozenset({"content-length", "transfer-encoding", "connection"})


class FakeOpenPhone:
    """In-memory OpenPhone API: routing, auth, rate limiting, faults, statistics."""

    def __init__(
        self,
        *,
        api_key: str = "test-key",
        default_status: str | None = "completed",
        faults: Faults | None = None,
        rate: float = 0.0,
        burst: int = 10,
        latency_ms: float = 0.0,
        seed: int = 0,
        forbidden_keys: frozenset[str] = frozenset(),
    ) -> None:
        if default_status is not None and default_status not in STATUSES:
            raise ValueError(f"default_status must be one of {STATUSES} or None")
        self.api_key = api_key
        self.default_status = default_status
        self.faults = faults if faults is not None else Faults()
        self.rate = rate
        self.burst = burst
        self.latency_ms = latency_ms
        self.seed = seed
        self.forbidden_keys = forbidden_keys
        self.summaries: dict[str, dict[str, object]] = {}
        self.requests: collections.Counter[str] = collections.Counter()
        self.outcomes: collections.Counter[str] = collections.Counter()
        self.overlaps: list[str] = []
        self.max_in_flight = 0
        self.total_requests = 0
        self._overrides: dict[str, tuple[int, bytes, tuple[tuple[str, str], ...]]] = {}
        self._injected: collections.Counter[str] = collections.Counter()
        self._flight: collections.Counter[str] = collections.Counter()
        self._flight_total = 0
        self._tokens = float(burst)
        self._refilled = time.monotonic()
        self._latency_rng = random.Random(seed)
        # The real server mutates statistics on its own thread while tests read
        # them; the lock keeps stats() a consistent snapshot.
        self._lock = threading.Lock()

    # -- configuration -----------------------------------------------------

    def set_summary(self, call_id: str, data: dict[str, object]) -> None:
        """Answer 200 ``{"data": data}`` for call_id (stored as given, not validated)."""
        self.summaries[call_id] = data

    def set_response(
        self,
        call_id: str,
        status: int,
        body: bytes | dict[str, object],
        headers: dict[str, str] | None = None,
    ) -> None:
        """Answer exactly this for call_id (after auth, rate limit and id validation)."""
        raw = body if isinstance(body, bytes) else _dumps(body)
        merged = {"content-type": "application/json"}
        for name, value in (headers or {}).items():
            # Framing belongs to the adapters; a stray Content-Length would corrupt it.
            if name.lower() not in _FRAMING_HEADERS:
                merged[name.lower()] = value
        self._overrides[call_id] = (status, raw, tuple(merged.items()))

    # -- statistics --------------------------------------------------------

    def stats(self) -> dict[str, object]:
        """JSON-able snapshot of the statistics."""
        with self._lock:
            counts = list(self.requests.values())
            overlaps = list(self.overlaps)
            return {
                "total_requests": self.total_requests,
                "max_in_flight": self.max_in_flight,
                "outcomes": dict(sorted(self.outcomes.items())),
                "requests": {
                    "ids": len(counts),
                    "total": sum(counts),
                    "max_per_id": max(counts, default=0),
                },
                "overlap_count": len(overlaps),
                "overlap_ids": sorted(set(overlaps))[:100],
            }

    # -- the httpx adapter -------------------------------------------------

    def handle_sync(self, request: httpx.Request) -> httpx.Response:
        """Answer one request from any thread; the handler of ``transport()``."""
        target = request.url.raw_path.decode("latin-1")
        reply = self._route(request.method, target, request.headers.get("authorization"))
        try:
            if reply.delay:
                time.sleep(reply.delay)
            if reply.action == _DROP:
                raise httpx.RemoteProtocolError(
                    "Server disconnected without sending a response.", request=request
                )
            if reply.action == _HANG:
                raise httpx.ReadTimeout("simulated read timeout", request=request)
            return httpx.Response(reply.status, headers=reply.headers, content=reply.body)
        finally:
            self._land(reply)

    def transport(self) -> httpx.MockTransport:
        """An httpx transport for ``httpx.Client`` or ``httpx.AsyncClient`` (``transport=...``).

        The handler is synchronous, which MockTransport accepts for both kinds
        of client; the project's client sends from a thread pool.
        """
        return httpx.MockTransport(self.handle_sync)

    # -- routing, shared by both adapters -----------------------------------

    def _route(self, method: str, target: str, authorization: str | None) -> _Reply:
        """Decide the answer to one request and count it in flight."""
        # A target not starting with "/" is the absolute form (http://host/path).
        path = target.partition("?")[0] if target.startswith("/") else urlsplit(target).path
        call_id: str | None = None
        if path.startswith(API_PATH_PREFIX):
            segment = path[len(API_PATH_PREFIX) :]
            if segment and "/" not in segment:
                call_id = unquote(segment)
        with self._lock:
            self.total_requests += 1
            self._flight_total += 1
            if self._flight_total > self.max_in_flight:
                self.max_in_flight = self._flight_total
            if call_id is not None:
                if self._flight[call_id]:
                    self.overlaps.append(call_id)
                self._flight[call_id] += 1
            reply = self._decide(method, call_id, authorization)
            reply.flight = call_id
            self.outcomes[reply.outcome] += 1
            if self.latency_ms > 0:
                reply.delay = self.latency_ms / 1000 * self._latency_rng.uniform(0.5, 1.5)
        return reply

    def _land(self, reply: _Reply) -> None:
        """The reply was written (or abandoned): the request is no longer in flight."""
        with self._lock:
            self._flight_total -= 1
            if reply.flight is not None:
                left = self._flight[reply.flight] - 1
                if left:
                    self._flight[reply.flight] = left
                else:
                    del self._flight[reply.flight]

    def _decide(self, method: str, call_id: str | None, authorization: str | None) -> _Reply:
        if method != "GET" or call_id is None:
            return self._error(404, "Not Found")
        if authorization is not None and authorization in self.forbidden_keys:
            return self._error(403, "This API key is not allowed to access call summaries")
        if authorization != self.api_key:
            return self._error(401, "Missing or invalid API key")
        if self.rate > 0 and not self._take_token():
            return self._error(429, "Too many requests", retry_after="1")
        nth = self.requests[call_id]
        self.requests[call_id] = nth + 1
        if not _CALL_ID_RE.fullmatch(call_id):
            return self._error(
                400,
                "Invalid call id",
                errors=[
                    {
                        "path": "/callId",
                        "message": "Expected string to match '^AC(.*)$'",
                        "value": call_id,
                        "schema": {"type": "string"},
                    }
                ],
            )
        override = self._overrides.get(call_id)
        if override is not None:
            status, body, headers = override
            return _Reply(status, body, headers, str(status))
        fault = self._fault(call_id, nth)
        if fault is not None:
            return fault
        ok = self._ok_body(call_id)
        if ok is None:
            return self._error(404, "Call summary not found")
        return _Reply(200, ok, _JSON, "200")

    def _ok_body(self, call_id: str) -> bytes | None:
        data = self.summaries.get(call_id)
        if data is not None:
            return _dumps({"data": data})
        if self.default_status is not None:
            return _sample_body(call_id, self.default_status)
        return None

    def _error(
        self,
        status: int,
        message: str,
        *,
        retry_after: str | None = None,
        errors: list[dict[str, object]] | None = None,
    ) -> _Reply:
        code, title = _ERRORS[status]
        payload: dict[str, object] = {
            "message": message,
            "code": code,
            "status": status,
            "docs": DOCS_URL,
            "title": title,
            "trace": f"sim-{self.seed:x}-{self.total_requests:08x}",
        }
        if errors is not None:
            payload["errors"] = errors
        headers = _JSON if retry_after is None else (*_JSON, ("retry-after", retry_after))
        return _Reply(status, _dumps(payload), headers, str(status))

    def _take_token(self) -> bool:
        now = time.monotonic()
        self._tokens = min(float(self.burst), self._tokens + (now - self._refilled) * self.rate)
        self._refilled = now
        if self._tokens >= 1.0:
            self._tokens -= 1.0
            return True
        return False

    def _fault(self, call_id: str, nth: int) -> _Reply | None:
        f = self.faults
        table = (
            ("500", f.error_500),
            ("429", f.rate_429),
            (_DROP, f.drop),
            (_HANG, f.hang),
            ("truncated", f.truncated),
            ("garbage", f.garbage),
            ("schema_violation", f.schema_violation),
        )
        if not any(p > 0 for _, p in table):
            return None
        if f.max_per_id is not None and self._injected[call_id] >= f.max_per_id:
            return None
        # Depends only on (seed, id, n): the same requests for an id get the
        # same faults however requests for different ids interleave.
        rng = _rng_for("fault", f.seed, call_id, nth)
        draw = rng.random()
        kind = None
        for name, p in table:
            if draw < p:
                kind = name
                break
            draw -= p
        if kind is None:
            return None
        self._injected[call_id] += 1
        if kind == "500":
            return self._error(500, "Something went wrong")
        if kind == "429":
            return self._error(429, "Too many requests", retry_after=f.retry_after)
        if kind in (_DROP, _HANG):
            base = self._ok_body(call_id) or _sample_body(call_id, "completed")
            hold = f.hang_seconds if kind == _HANG else 0.0
            return _Reply(200, base, _JSON, kind, action=kind, hold=hold)
        if kind == "truncated":
            base = self._ok_body(call_id) or _sample_body(call_id, "completed")
            return _Reply(200, base[: len(base) // 2], _JSON, kind)
        if kind == "garbage":
            return _Reply(200, _GARBAGE, _HTML, kind)
        return _Reply(200, self._schema_violation(call_id, rng), _JSON, kind)

    def _schema_violation(self, call_id: str, rng: random.Random) -> bytes:
        data = dict(self.summaries.get(call_id) or sample_summary(call_id, "completed"))
        variant = rng.randrange(7)
        if variant == 0:
            data["status"] = "done"
        elif variant == 1:
            data["summary"] = "one string where a list of strings belongs"
        elif variant == 2:
            del data["callId"]
        elif variant == 3:
            data["nextSteps"] = [1, 2]
        elif variant == 4:
            bad_field = {"name": "Nested", "value": {"not": "a scalar"}}
            data["jobs"] = [{"icon": "📋", "name": "Broken", "result": {"data": [bad_field]}}]
        elif variant == 5:
            return _dumps({"data": None})
        else:
            return _dumps([data])
        return _dumps({"data": data})


# ---------------------------------------------------------------------------
# Real HTTP/1.1 server

_MAX_HEAD = 64 * 1024
_MAX_BODY = 1024 * 1024
_REASONS = {s.value: s.phrase for s in HTTPStatus}
_BAD_REQUEST = _dumps(
    {
        "message": "Malformed HTTP request",
        "code": "0500400",
        "status": 400,
        "docs": DOCS_URL,
        "title": "Bad Request",
        "trace": "sim-http",
    }
)


def _encode(reply: _Reply, keep_alive: bool) -> bytes:
    body = reply.body
    head = (
        f"HTTP/1.1 {reply.status} {_REASONS.get(reply.status, 'Unknown')}\r\n"
        f"content-length: {len(body)}\r\n"
    )
    for name, value in reply.headers:
        head += f"{name}: {value}\r\n"
    if not keep_alive:
        head += "connection: close\r\n"
    return (head + "\r\n").encode("latin-1") + body


def _parse_head(head: str) -> tuple[str, str, str | None, bool, int] | None:
    """(method, target, authorization, keep_alive, body length), or None if malformed."""
    lines = head.split("\r\n")
    parts = lines[0].split(" ")
    if len(parts) != 3 or not parts[0] or not parts[1]:
        return None
    method, target, version = parts
    if version == "HTTP/1.1":
        keep_alive = True
    elif version == "HTTP/1.0":
        keep_alive = False
    else:
        return None
    authorization: str | None = None
    length = 0
    for line in lines[1:]:
        name, sep, value = line.partition(":")
        # Whitespace before the colon or a folded line is a smuggling vector; refuse it.
        if not sep or not name or name != name.strip():
            return None
        lname = name.lower()
        if lname == "authorization":
            authorization = value.strip(" \t")
        elif lname == "connection":
            tokens = {t.strip().lower() for t in value.split(",")}
            if "close" in tokens:
                keep_alive = False
            elif "keep-alive" in tokens:
                keep_alive = True
        elif lname == "content-length":
            value = value.strip(" \t")
            if not value.isdigit() or int(value) > _MAX_BODY:
                return None
            length = int(value)
        elif lname == "transfer-encoding":
            # No request to this API has a body; chunked decoding isn't worth having.
            return None
    return method, target, authorization, keep_alive, length


class _Connection(asyncio.Protocol):
    """One client connection. Requests are answered strictly in order."""

    def __init__(self, fake: FakeOpenPhone, conns: set[_Connection]) -> None:
        self._fake = fake
        self._conns = conns
        self._transport: asyncio.Transport | None = None
        self._buf = bytearray()
        # A delayed reply is pending: pipelined requests behind it must wait.
        self._busy = False
        self._closed = False
        self._task: asyncio.Task[None] | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self._transport = transport
        self._conns.add(self)

    def connection_lost(self, exc: Exception | None) -> None:
        self._closed = True
        self._conns.discard(self)
        if self._task is not None:
            self._task.cancel()

    def data_received(self, data: bytes) -> None:
        self._buf += data
        if not self._busy:
            self._drain()

    def abort(self) -> None:
        if self._transport is not None:
            self._transport.abort()

    def _drain(self) -> None:
        buf = self._buf
        while not self._busy and not self._closed:
            end = buf.find(b"\r\n\r\n")
            if end < 0:
                if len(buf) > _MAX_HEAD:
                    self._bad_request()
                return
            parsed = _parse_head(buf[:end].decode("latin-1"))
            if parsed is None:
                self._bad_request()
                return
            method, target, authorization, keep_alive, length = parsed
            if len(buf) < end + 4 + length:
                return  # wait for the rest of the body
            del buf[: end + 4 + length]
            reply = self._fake._route(method, target, authorization)
            if reply.delay or reply.hold:
                self._busy = True
                self._task = asyncio.get_running_loop().create_task(self._later(reply, keep_alive))
            else:
                self._send(reply, keep_alive)

    async def _later(self, reply: _Reply, keep_alive: bool) -> None:
        try:
            await asyncio.sleep(reply.delay + reply.hold)
        except asyncio.CancelledError:
            self._fake._land(reply)
            raise
        self._task = None
        self._send(reply, keep_alive)
        self._busy = False
        if self._buf:
            self._drain()

    def _send(self, reply: _Reply, keep_alive: bool) -> None:
        transport = self._transport
        assert transport is not None
        try:
            if reply.action == _DROP:
                self._closed = True
                transport.close()
                return
            if not transport.is_closing():
                transport.write(_encode(reply, keep_alive))
            if not keep_alive:
                self._closed = True
                transport.close()
        finally:
            self._fake._land(reply)

    def _bad_request(self) -> None:
        fake = self._fake
        with fake._lock:
            fake.total_requests += 1
            fake.outcomes["400"] += 1
        self._closed = True
        assert self._transport is not None
        self._transport.write(_encode(_Reply(400, _BAD_REQUEST, _JSON, "400"), False))
        self._transport.close()


async def _start_server(
    fake: FakeOpenPhone, host: str, port: int
) -> tuple[asyncio.Server, set[_Connection], str]:
    conns: set[_Connection] = set()
    server = await asyncio.get_running_loop().create_server(
        lambda: _Connection(fake, conns), host, port
    )
    bound_port = server.sockets[0].getsockname()[1]
    shown = f"[{host}]" if ":" in host else host
    return server, conns, f"http://{shown}:{bound_port}"


async def _stop_server(server: asyncio.Server, conns: set[_Connection]) -> None:
    server.close()
    # Python 3.11's Server.close() leaves accepted connections open (and 3.12's
    # wait_closed() waits for them), so a hanging client would block shutdown.
    for conn in list(conns):
        conn.abort()
    await server.wait_closed()


class _Background:
    """The server on its own thread and event loop, so sync code can call it."""

    def __init__(self, fake: FakeOpenPhone, host: str, port: int) -> None:
        self._fake = fake
        self._host = host
        self._port = port
        self.url = ""
        self._error: BaseException | None = None
        self._ready = threading.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._thread = threading.Thread(target=self._run, name="fake-openphone", daemon=True)

    def start(self) -> None:
        self._thread.start()
        if not self._ready.wait(timeout=30):
            raise RuntimeError("fake OpenPhone server did not start")
        if self._error is not None:
            self._thread.join()
            raise self._error

    def stop(self) -> None:
        if self._loop is not None and self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(timeout=30)

    def _run(self) -> None:
        asyncio.run(self._main())

    async def _main(self) -> None:
        try:
            server, conns, self.url = await _start_server(self._fake, self._host, self._port)
        except BaseException as exc:  # handed to the starting thread
            self._error = exc
            self._ready.set()
            return
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        self._ready.set()
        try:
            await self._stop.wait()
        finally:
            await _stop_server(server, conns)


@contextmanager
def serve(fake: FakeOpenPhone, host: str = "127.0.0.1", port: int = 0) -> Iterator[str]:
    """Run fake on a real HTTP/1.1 server in a background thread with its own
    asyncio loop; yields the base URL (``http://127.0.0.1:54321``); stops
    cleanly on exit, aborting open connections."""
    background = _Background(fake, host, port)
    background.start()
    try:
        yield background.url
    finally:
        background.stop()


# ---------------------------------------------------------------------------
# Command line


def _probability(text: str) -> float:
    value = float(text)
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"{text} is not a probability between 0 and 1")
    return value


def _optional_int(text: str) -> int | None:
    return None if text.lower() == "none" else int(text)


def _optional_str(text: str) -> str | None:
    return None if text.lower() == "none" else text


def _parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m etl.simulator",
        description="Serve a simulated OpenPhone call-summaries API over HTTP/1.1.",
    )
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=0, help="0 picks a free port")
    p.add_argument("--api-key", default="test-key")
    p.add_argument(
        "--forbidden-key", action="append", default=[], help="key answered with 403 (repeatable)"
    )
    p.add_argument(
        "--default-status",
        type=_optional_str,
        default="completed",
        choices=[*STATUSES, None],
        help="status of generated summaries for unknown ids; 'none' answers 404",
    )
    p.add_argument("--rate", type=float, default=0.0, help="requests/s allowed; 0 = unlimited")
    p.add_argument("--burst", type=int, default=10)
    p.add_argument("--latency-ms", type=float, default=0.0)
    p.add_argument("--seed", type=int, default=0, help="seed of the simulated latency")
    d = Faults()
    p.add_argument("--fault-seed", type=int, default=d.seed)
    p.add_argument("--fault-500", type=_probability, default=d.error_500)
    p.add_argument("--fault-429", type=_probability, default=d.rate_429)
    p.add_argument(
        "--fault-retry-after",
        type=_optional_str,
        default=d.retry_after,
        help="Retry-After of injected 429s: seconds, an HTTP date, or 'none'",
    )
    p.add_argument("--fault-drop", type=_probability, default=d.drop)
    p.add_argument("--fault-hang", type=_probability, default=d.hang)
    p.add_argument("--fault-hang-seconds", type=float, default=d.hang_seconds)
    p.add_argument("--fault-truncated", type=_probability, default=d.truncated)
    p.add_argument("--fault-garbage", type=_probability, default=d.garbage)
    p.add_argument("--fault-schema-violation", type=_probability, default=d.schema_violation)
    p.add_argument(
        "--fault-max-per-id", type=_optional_int, default=d.max_per_id, help="int or 'none'"
    )
    p.add_argument("--stats-file", type=Path, help="write stats JSON here on shutdown")
    return p.parse_args(argv)


async def _serve_until_signal(fake: FakeOpenPhone, args: argparse.Namespace) -> None:
    server, conns, url = await _start_server(fake, args.host, args.port)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    print(f"listening on {url}", flush=True)
    await stop.wait()
    await _stop_server(server, conns)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``python -m etl.simulator``."""
    args = _parse_args(argv)
    faults = Faults(
        seed=args.fault_seed,
        error_500=args.fault_500,
        rate_429=args.fault_429,
        retry_after=args.fault_retry_after,
        drop=args.fault_drop,
        hang=args.fault_hang,
        hang_seconds=args.fault_hang_seconds,
        truncated=args.fault_truncated,
        garbage=args.fault_garbage,
        schema_violation=args.fault_schema_violation,
        max_per_id=args.fault_max_per_id,
    )
    fake = FakeOpenPhone(
        api_key=args.api_key,
        default_status=args.default_status,
        faults=faults,
        rate=args.rate,
        burst=args.burst,
        latency_ms=args.latency_ms,
        seed=args.seed,
        forbidden_keys=frozenset(args.forbidden_key),
    )
    asyncio.run(_serve_until_signal(fake, args))
    if args.stats_file is not None:
        # Write then rename, so a reader never sees half a file.
        tmp = args.stats_file.with_name(args.stats_file.name + ".tmp")
        tmp.write_text(json.dumps(fake.stats(), indent=2) + "\n", encoding="utf-8")
        os.replace(tmp, args.stats_file)
    return 0


if __name__ == "__main__":
    sys.exit(main())
