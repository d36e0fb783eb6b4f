"""The simulated OpenPhone API's request handling: routing, auth, rate limit, faults, statistics.

``FakeOpenPhone.route`` decides every answer, whatever carries the request:
``FakeOpenPhone.transport()`` (an ``httpx.MockTransport``, in process, no
sockets) or the real HTTP server of ``etl.testing._server``. Endpoints:

* ``GET /v1/call-summaries/{callId}``: summaries (set, overridden or sampled);
* ``GET /v1/calls/{callId}``, ``GET /v1/calls``, ``GET /v1/conversations``,
  ``GET /v1/phone-numbers``: the workspace (``etl.testing._workspace``);
* ``GET /v1/call-transcripts/{id}`` and (2026-03-30) ``GET /calls/{callId}/transcripts``:
  transcripts (``etl.testing._transcripts``);
* ``GET /calls``, ``GET /calls/{callId}``: the dated surface 2026-03-30
  (``etl.testing._dated``; header ``Quo-Api-Version`` required);
* users, lines and contacts: ``GET /v1/users[/{id}]``, ``GET /v1/contacts[/{id}]`` and the
  dated ``GET /users[/{id}]``, ``GET /phone-numbers``, ``GET /contacts/{id}``
  (``etl.testing._people_endpoints``);
* ``POST /v1/webhooks/calls|call-summaries|call-transcripts``,
  ``GET /v1/webhooks[/{id}]``, ``DELETE /v1/webhooks/{id}``: webhooks CRUD
  (the answers of these two groups are in ``etl.testing._endpoints``);
* ``POST /webhooks``, ``GET /webhooks[/{id}]``, ``DELETE /webhooks/{id}``,
  ``POST /webhooks/{id}/events/test``: the dated API version's webhooks, which
  require ``Quo-Api-Version: 2026-03-30`` (400 without, as the API answers).

Every endpoint shares the key check, the token bucket (``rate``/``burst``) and
the fault rules; every request is counted per endpoint with its time, and
``request_log`` keeps each request's path and ``Quo-Api-Version`` header.
"""

from __future__ import annotations

import array
import collections
import datetime as dt
import random
import threading
from collections.abc import Callable
from dataclasses import dataclass
from http import HTTPStatus
from urllib.parse import parse_qs, unquote, urlsplit

import httpx

from etl.clock import Clock
from etl.testing._data import CALL_ID_RE, STATUSES, dumps, sample_body, sample_summary
from etl.testing._dated import DATED_ENDPOINTS, DATED_VERSION, DatedEndpoints, match_dated
from etl.testing._endpoints import WEBHOOK_EVENTS, BadRequest, WorkspaceEndpoints
from etl.testing._faults import DROP, ENDPOINTS, HANG, Faults, Quirks, draw_fault
from etl.testing._people_endpoints import DATED_PEOPLE, PEOPLE_ENDPOINTS, PeopleEndpoints, match_people
from etl.testing._transcripts import DATED_TRANSCRIPTS, TRANSCRIPT_ENDPOINTS, TranscriptEndpoints, match_transcripts
from etl.testing._workspace import ApiClock, Workspace
from etl.testing.webhooks import SAMPLE_CALL_ID

API_PATH_PREFIX = "/v1/call-summaries/"
DOCS_URL = "https://openphone.com/docs"

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

JSON_HEADERS: tuple[tuple[str, str], ...] = (("content-type", "application/json"),)
_HTML: tuple[tuple[str, str], ...] = (("content-type", "text/html"),)
_GARBAGE = b"<html>oops</html>"
RESPOND = "respond"
_FRAMING_HEADERS = frozenset({"content-length", "transfer-encoding", "connection"})


@dataclass(slots=True)
class Reply:
    """One decided answer; the adapters carry it out (respond, drop or hang)."""

    status: int
    body: bytes
    headers: tuple[tuple[str, str], ...]
    outcome: str
    action: str = RESPOND
    delay: float = 0.0  # simulated latency, both adapters
    hold: float = 0.0  # extra wait of a "hang", real server only
    flight: str | None = None  # call id counted in flight until the reply lands
    # The real server's "has the client hung up?" probe, so a client that gave
    # up and retried is not counted as two requests in flight at once.
    gone: Callable[[], bool] | None = None
    landed: bool = False


class FakeOpenPhone(WorkspaceEndpoints, TranscriptEndpoints, DatedEndpoints, PeopleEndpoints):
    """In-memory OpenPhone API: routing, auth, rate limiting, faults, statistics."""

    def __init__(
        self,
        *,
        api_key: str = "test-key",
        default_status: str | None = "completed",
        faults: Faults | None = None,
        quirks: Quirks | None = None,
        rate: float = 0.0,
        burst: int = 10,
        latency_ms: float = 0.0,
        seed: int = 0,
        forbidden_keys: frozenset[str] = frozenset(),
        clock: ApiClock | Clock | None = None,
    ) -> None:
        if default_status is not None and default_status not in STATUSES:
            raise ValueError(f"default_status must be one of {STATUSES} or None")
        self.api_key = api_key
        self.default_status = default_status
        self.faults = faults if faults is not None else Faults()
        self.quirks = quirks if quirks is not None else Quirks()
        self.rate = rate
        self.burst = burst
        self.latency_ms = latency_ms
        self.seed = seed
        self.forbidden_keys = forbidden_keys
        # An etl Clock (a FakeClock the job also runs on) becomes the simulator's clock too.
        self.clock = clock if isinstance(clock, ApiClock) else ApiClock(clock=clock) if clock is not None \
            else ApiClock()
        self.workspace = Workspace(self.clock, seed)
        self.summaries: dict[str, dict[str, object]] = {}
        self.webhooks: dict[str, dict[str, object]] = {}
        # Summary fetches per call id (only requests that passed auth and the rate limit).
        self.requests: collections.Counter[str] = collections.Counter()
        self.outcomes: collections.Counter[str] = collections.Counter()
        # Every request that named an endpoint, refused or not, and its 429s.
        self.endpoint_requests: collections.Counter[str] = collections.Counter()
        self.endpoint_429: collections.Counter[str] = collections.Counter()
        self._times: dict[str, array.array[float]] = {}
        self.overlaps: list[str] = []
        self.max_in_flight = 0
        self.total_requests = 0
        self._overrides: dict[str, tuple[int, bytes, tuple[tuple[str, str], ...]]] = {}
        self._injected: collections.Counter[str] = collections.Counter()
        self._nth: collections.Counter[str] = collections.Counter()
        self._flight: dict[str, list[Reply]] = {}
        self._flight_total = 0
        self._tokens = float(burst)
        self._refilled = self.clock.clock.monotonic()
        self._latency_rng = random.Random(seed)
        self._webhook_n = 0
        self._init_transcripts()
        self.test_deliveries: list[dict[str, object]] = []
        self._delivery_threads: list[threading.Thread] = []
        # (method, path, Quo-Api-Version header) of every request, in arrival order.
        self.request_log: list[tuple[str, str, str | None]] = []
        self._init_dated()
        # The real server mutates statistics on its own threads while tests
        # read them; the lock keeps stats() a consistent snapshot.
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
        """Answer exactly this for call_id's summary (after auth, rate limit and id validation)."""
        raw = body if isinstance(body, bytes) else dumps(body)
        merged = {"content-type": "application/json"}
        for name, value in (headers or {}).items():
            # Framing belongs to the adapters; a stray Content-Length would corrupt it.
            if name.lower() not in _FRAMING_HEADERS:
                merged[name.lower()] = value
        self._overrides[call_id] = (status, raw, tuple(merged.items()))

    # -- statistics --------------------------------------------------------

    def stats(self, *, times: bool = False, ids: bool = False) -> dict[str, object]:
        """JSON-able snapshot of the statistics; ``times`` adds each request's Unix time per endpoint,
        ``ids`` the summary fetches of every call id (``per_id``: who fetched what how often)."""
        with self._lock:
            counts = list(self.requests.values())
            overlaps = list(self.overlaps)
            snapshot: dict[str, object] = {
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
                "endpoints": {
                    name: {"requests": n, "429": self.endpoint_429[name]}
                    for name, n in sorted(self.endpoint_requests.items())
                },
            }
            if times:
                snapshot["times"] = {name: list(ts) for name, ts in sorted(self._times.items())}
            if ids:
                snapshot["per_id"] = dict(sorted(self.requests.items()))
            return snapshot

    def request_times(self, endpoint: str | None = None) -> list[float]:
        """Unix times of the requests to ``endpoint`` (one of ``ENDPOINTS``; None: all), sorted."""
        with self._lock:
            if endpoint is not None:
                return list(self._times.get(endpoint, ()))
            return sorted(t for ts in self._times.values() for t in ts)

    # -- the httpx adapter -------------------------------------------------

    def handle_sync(self, request: httpx.Request) -> httpx.Response:
        """Answer one request from any thread; the handler of ``transport()``."""
        target = request.url.raw_path.decode("latin-1")
        reply = self.route(request.method, target, request.headers.get("authorization"), request.read(),
                           version=request.headers.get("quo-api-version"))
        try:
            if reply.delay:
                self.clock.clock.sleep(reply.delay)
            if reply.action == DROP:
                raise httpx.RemoteProtocolError(
                    "Server disconnected without sending a response.", request=request
                )
            if reply.action == HANG:
                raise httpx.ReadTimeout("simulated read timeout", request=request)
            return httpx.Response(reply.status, headers=reply.headers, content=reply.body)
        finally:
            self.land(reply)

    def transport(self) -> httpx.MockTransport:
        """An httpx transport for ``httpx.Client`` or ``httpx.AsyncClient`` (``transport=...``).

        The handler is synchronous, which MockTransport accepts for both kinds
        of client; the project's client sends from a thread pool.
        """
        return httpx.MockTransport(self.handle_sync)

    # -- routing, shared by both adapters -----------------------------------

    def route(
        self,
        method: str,
        target: str,
        authorization: str | None,
        body: bytes = b"",
        gone: Callable[[], bool] | None = None,
        *,
        version: str | None = None,
    ) -> Reply:
        """Decide the answer to one request and count it in flight (the adapters call ``land`` after).

        ``gone`` tells whether this request's client has hung up (real server only);
        ``version`` is its ``Quo-Api-Version`` header (the dated paths require it).
        """
        # A target not starting with "/" is the absolute form (http://host/path).
        if target.startswith("/"):
            path, _, query = target.partition("?")
        else:
            parts = urlsplit(target)
            path, query = parts.path, parts.query
        call_id: str | None = None
        endpoint: str | None = None
        arg = ""
        if path.startswith(API_PATH_PREFIX):
            segment = path[len(API_PATH_PREFIX) :]
            if segment and "/" not in segment and method == "GET":
                call_id = unquote(segment)
                endpoint = "call-summaries"
        else:
            endpoint, arg = _match(method, path)
            if endpoint is None:
                endpoint, arg = match_dated(method, path)
            if endpoint is None:
                endpoint, arg = match_people(method, path)
        now = self.clock.clock.time()
        with self._lock:
            self.request_log.append((method, path, version))
            self.total_requests += 1
            self._flight_total += 1
            if self._flight_total > self.max_in_flight:
                self.max_in_flight = self._flight_total
            if call_id is not None:
                flying = self._flight.get(call_id)
                if flying:
                    # The server may not have noticed yet that an earlier client gave up.
                    for left in [r for r in flying if r.gone is not None and r.gone()]:
                        self._land(left)
                    if self._flight.get(call_id):
                        self.overlaps.append(call_id)
            if endpoint is None:
                reply = self._error(404, "Not Found")
            else:
                self.endpoint_requests[endpoint] += 1
                times = self._times.get(endpoint)
                if times is None:
                    times = self._times[endpoint] = array.array("d")
                times.append(now)
                refused = self._gate(authorization)
                if refused is not None:
                    reply = refused
                    if reply.status == 429:
                        self.endpoint_429[endpoint] += 1  # the token bucket's; injected ones count in _fault
                elif call_id is not None:
                    reply = self._decide_summary(call_id)
                elif (endpoint in DATED_ENDPOINTS or endpoint in DATED_PEOPLE or endpoint == DATED_TRANSCRIPTS
                      or arg.startswith("/")) \
                        and version != DATED_VERSION:
                    # A dated path (no /v1) without the version header: the API has no default version.
                    reply = self._error(400, f"the Quo-Api-Version header is required ({DATED_VERSION}); "
                                             f"got {version!r}", errors=[{"path": "/headers/quo-api-version",
                                                                         "message": "required"}])
                else:
                    reply = self._decide(endpoint, method, path, arg, query, body)
            reply.flight = call_id
            reply.gone = gone
            if call_id is not None:
                self._flight.setdefault(call_id, []).append(reply)
            self.outcomes[reply.outcome] += 1
            if self.latency_ms > 0:
                reply.delay = self.latency_ms / 1000 * self._latency_rng.uniform(0.5, 1.5)
        return reply

    def land(self, reply: Reply) -> None:
        """The reply was written (or abandoned): the request is no longer in flight."""
        with self._lock:
            self._land(reply)

    def _land(self, reply: Reply) -> None:
        if reply.landed:
            return
        reply.landed = True
        self._flight_total -= 1
        if reply.flight is not None:
            flying = self._flight[reply.flight]
            flying.remove(reply)
            if not flying:
                del self._flight[reply.flight]

    def count_refused(self, outcome: str) -> None:
        """Count a request the HTTP server refused before it reached ``route`` (malformed)."""
        with self._lock:
            self.total_requests += 1
            self.outcomes[outcome] += 1

    def error_body(self, status: int, message: str) -> bytes:
        """An error body in the API's shape, for any status (the server's own refusals use it too)."""
        return self._error(status, message).body

    def _gate(self, authorization: str | None) -> Reply | None:
        if authorization is not None and authorization in self.forbidden_keys:
            return self._error(403, "This API key is not allowed to access call summaries")
        if authorization != self.api_key:
            return self._error(401, "Missing or invalid API key")
        if self.rate > 0 and not self._take_token():
            return self._error(429, "Too many requests", retry_after="1")
        return None

    # -- call summaries -------------------------------------------------------

    def _decide_summary(self, call_id: str) -> Reply:
        nth = self.requests[call_id]
        self.requests[call_id] = nth + 1
        if not CALL_ID_RE.fullmatch(call_id):
            return self._invalid_call_id(call_id)
        override = self._overrides.get(call_id)
        if override is not None:
            status, body, headers = override
            return Reply(status, body, headers, str(status))
        fault = self._fault(
            "call-summaries",
            call_id,
            nth,
            lambda: self._ok_body(call_id) or sample_body(call_id, "completed"),
            lambda rng: self._summary_violation(call_id, rng),
        )
        if fault is not None:
            return fault
        ok = self._ok_body(call_id)
        if ok is None:
            return self._error(404, "Call summary not found")
        return Reply(200, ok, JSON_HEADERS, "200")

    def _invalid_call_id(self, call_id: str) -> Reply:
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

    def _ok_body(self, call_id: str) -> bytes | None:
        data = self.summaries.get(call_id)
        if data is not None:
            return dumps({"data": data})
        call = self.workspace.calls.get(call_id)
        if call is not None:
            if call.status != "completed" or call_id in self.workspace.summary_missing:
                return None
            pending = self.quirks.summary_pending_seconds
            ready_at = call.completed_at + dt.timedelta(seconds=pending) if call.completed_at else None
            if pending and ready_at is not None and self.clock.now() < ready_at:
                return None  # "not generated yet": a 404 that later turns into a 200
            return sample_body(call_id, "completed")
        if self.default_status is not None and call_id != SAMPLE_CALL_ID:
            return sample_body(call_id, self.default_status)
        return None

    def _summary_violation(self, call_id: str, rng: random.Random) -> bytes:
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
            return dumps({"data": None})
        else:
            return dumps([data])
        return dumps({"data": data})

    # -- the other endpoints --------------------------------------------------

    def _decide(self, endpoint: str, method: str, path: str, arg: str, query: str, body: bytes) -> Reply:
        key = f"{endpoint}:{method}:{path}?{query}"
        nth = self._nth[key]
        self._nth[key] = nth + 1
        try:
            params = parse_qs(query, keep_blank_values=True)
            if endpoint in TRANSCRIPT_ENDPOINTS:
                status, payload = self._transcript_answer(endpoint, arg, params)
            elif endpoint in DATED_ENDPOINTS:
                status, payload = self._dated_answer(endpoint, arg, params)
            elif endpoint in PEOPLE_ENDPOINTS:
                status, payload = self._people_answer(endpoint, arg, params)
            else:
                status, payload = self._answer(endpoint, method, arg, params, body)
        except BadRequest as exc:
            errors: list[dict[str, object]] | None = (
                [{"path": exc.path, "message": str(exc)}] if exc.path else None
            )
            return self._error(400, str(exc), errors=errors)
        raw = b"" if payload is None else dumps(payload)
        fault = self._fault(endpoint, key, nth, lambda: raw or b"{}", lambda rng: _violation(payload, rng))
        if fault is not None:
            return fault
        if status == 404:
            return self._error(404, "Not Found")
        if status == 403:
            return self._error(403, "Call transcripts are only available on Business and Scale plans")
        headers = JSON_HEADERS if payload is not None else ()
        return Reply(status, raw, headers, str(status))

    # -- shared pieces ----------------------------------------------------------

    def _error(
        self,
        status: int,
        message: str,
        *,
        retry_after: str | None = None,
        errors: list[dict[str, object]] | None = None,
    ) -> Reply:
        code, title = _ERRORS.get(status) or (f"0500{status}", _phrase(status))
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
        headers = JSON_HEADERS if retry_after is None else (*JSON_HEADERS, ("retry-after", retry_after))
        return Reply(status, dumps(payload), headers, str(status))

    def _take_token(self) -> bool:
        now = self.clock.clock.monotonic()
        self._tokens = min(float(self.burst), self._tokens + (now - self._refilled) * self.rate)
        self._refilled = now
        if self._tokens >= 1.0:
            self._tokens -= 1.0
            return True
        return False

    def _fault(
        self,
        endpoint: str,
        key: str,
        nth: int,
        base: Callable[[], bytes],
        violate: Callable[[random.Random], bytes],
    ) -> Reply | None:
        """The injected fault for this request, or None; ``base`` is the body a fault mangles."""
        f = self.faults
        if not f.any() or (f.endpoints is not None and endpoint not in f.endpoints):
            return None
        if f.max_per_id is not None and self._injected[key] >= f.max_per_id:
            return None
        drawn = draw_fault(f, key, nth)
        if drawn is None:
            return None
        kind, rng = drawn
        self._injected[key] += 1
        if kind == "500":
            return self._error(500, "Something went wrong")
        if kind == "429":
            self.endpoint_429[endpoint] += 1
            return self._error(429, "Too many requests", retry_after=f.retry_after)
        if kind in (DROP, HANG):
            hold = f.hang_seconds if kind == HANG else 0.0
            return Reply(200, base(), JSON_HEADERS, kind, action=kind, hold=hold)
        if kind == "truncated":
            full = base()
            return Reply(200, full[: len(full) // 2], JSON_HEADERS, kind)
        if kind == "garbage":
            return Reply(200, _GARBAGE, _HTML, kind)
        return Reply(200, violate(rng), JSON_HEADERS, kind)


def _match(method: str, path: str) -> tuple[str | None, str]:
    """(endpoint, path argument) of a non-summary request; (None, "") if no endpoint takes it."""
    transcripts = match_transcripts(method, path)
    if transcripts is not None:
        return transcripts
    parts = path.split("/")
    if len(parts) >= 2 and parts[0] == "" and parts[1] == "webhooks":
        # The dated version's webhooks (no /v1): the argument keeps the whole path.
        rest = parts[2:]
        listed = not rest and method in ("GET", "POST")
        one = len(rest) == 1 and bool(rest[0]) and method in ("GET", "DELETE")
        test = len(rest) == 3 and bool(rest[0]) and rest[1:] == ["events", "test"] and method == "POST"
        return ("webhooks", path) if listed or one or test else (None, "")
    if len(parts) < 3 or parts[0] != "" or parts[1] != "v1":
        return None, ""
    rest = parts[2:]
    if method == "GET":
        if rest == ["calls"]:
            return "calls", ""
        if len(rest) == 2 and rest[0] == "calls" and rest[1]:
            return "call", rest[1]
        if rest == ["conversations"]:
            return "conversations", ""
        if rest == ["phone-numbers"]:
            return "phone-numbers", ""
    if rest and rest[0] == "webhooks":
        if method == "GET" and len(rest) == 1:
            return "webhooks", ""
        if len(rest) == 2 and rest[1]:
            if method == "POST" and rest[1] in WEBHOOK_EVENTS:
                return "webhooks", rest[1]
            if method in ("GET", "DELETE"):
                return "webhooks", rest[1]
    return None, ""


def _violation(payload: dict[str, object] | None, rng: random.Random) -> bytes:
    """A 200 body that breaks the endpoint's schema."""
    variant = rng.randrange(3)
    if variant == 0 or payload is None:
        return dumps({"data": None})
    if variant == 1:
        return dumps({**payload, "data": "not a list or object"})
    return dumps([payload])


def _phrase(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "Error"


__all__ = ["API_PATH_PREFIX", "ENDPOINTS", "FakeOpenPhone", "Reply"]
