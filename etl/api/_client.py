"""The OpenPhone API client: one request path for every endpoint, on the surface its settings name.

HTTP lives here and only here.  One :class:`OpenPhoneClient` per run holds the
connections (an httpx transport per fetch thread, each keeping one connection
alive); the transport is injectable, so tests and ``etl demo`` hand in a
simulated API and everything above this package is the real code.

What differs between the v1 surface and the dated one sits in their adapters
(:mod:`etl.api._v1`, :mod:`etl.api._dated`); the client asks its adapter for
paths, parsers and paginators, and callers read capabilities
(:attr:`OpenPhoneClient.discovery`, :attr:`OpenPhoneClient.fetches_call_separately`),
never a version.

Outcomes are values, not exceptions: an :class:`etl.results.ApiResult` says
which row of docs/contract.md's queue table applies.  The one exception that escapes is
:class:`etl.errors.AuthError` (401/403), because it ends the whole run, and
:class:`etl.ratelimit.NotSent` when not even the first request could be sent.

Every request — reads, lists, webhook management — takes the same path
(:meth:`OpenPhoneClient.request`): a slot of the key's
:class:`etl.ratelimit.RateBudget`, one exchange, classification.  Transient
failures (429, 5xx, timeouts, dropped connections, bodies that are not JSON or
break the schema) come back as ``transient`` results and, for idempotent
requests, are retried inside the run by tenacity with exponential backoff and
full jitter, honouring ``Retry-After``, within the item's time.  Requests that
are not idempotent (creating or deleting a webhook, a test event) are sent once.
"""

from __future__ import annotations

import dataclasses
import json
import threading
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any, TypeVar

import httpx
from pydantic import ValidationError
from tenacity import Retrying, retry_if_result, stop_after_attempt, stop_when_event_set, wait_random_exponential

from etl.api._dated import Dated
from etl.api._http import (
    USER_AGENT,
    Parse,
    Reply,
    StopBeforeGiveUp,
    Transient,
    brief_error,
    error_text,
    first_error,
    is_api_error,
    malformed,
    parse_retry_after,
)
from etl.api._paging import CursorPages, TokenPages
from etl.api._surface import Discovery, Surface, WebhookSpec
from etl.api._v1 import V1
from etl.clock import Clock
from etl.config import Settings
from etl.dimensions import Contact, Line, Listing, User
from etl.errors import AuthError, EtlError
from etl.ids import is_valid_call_id
from etl.ratelimit import LocalBudget, NotSent, RateBudget
from etl.results import ApiResult, Call, Conversation, Kind, Page, SummaryAnswer, SummaryResult, Transcript
from etl.storable import Malformed

M = TypeVar("M")

LEGACY: Surface = V1()
CURRENT: Surface = Dated()
SURFACES: tuple[Surface, ...] = (LEGACY, CURRENT)
_BY_VERSION = {s.version: s for s in SURFACES}

# After a stop, how long a body still arriving may take before the request is abandoned.
STOP_GRACE_S = 2.0


def surface_for(api_version: str) -> Surface:
    """The adapter of ``api_version`` (``settings.api_version``, checked by :mod:`etl.config`)."""
    return _BY_VERSION[api_version]


class OpenPhoneClient:
    """Fetches call summaries, calls, transcripts, lists and webhooks from any number of threads at once.

    Requests go through httpx's synchronous transport: measured on this
    project's workload, that costs about half the CPU per request of httpx's
    async path, whose pool and anyio layers dominate at these speeds.
    """

    def __init__(self, settings: Settings, *, clock: Clock, transport: httpx.BaseTransport | None = None,
                 budget: RateBudget | None = None, stop: threading.Event | None = None,
                 surface: Surface | None = None) -> None:
        """``stop`` is the run's stop signal: once set, no new request (first or retry) is sent;
        ``clock`` measures latencies and time limits and waits between tries; ``surface``: another
        adapter than ``settings.api_version``'s (webhook migration)."""
        if not settings.api_key:
            raise ValueError("an API key is required")
        self.settings = settings
        self.clock = clock
        self.budget: RateBudget = budget if budget is not None else LocalBudget(settings.rate, clock)
        self.stop = stop or threading.Event()
        self.surface = surface or surface_for(settings.api_version)
        timeout = httpx.Timeout(
            connect=settings.connect_timeout,
            read=settings.read_timeout,
            write=settings.connect_timeout,
            pool=settings.read_timeout + settings.connect_timeout,
        )
        # Requests go to a transport directly, so what httpx.Client would add per request (cookies, auth
        # flow, redirects, URL merging) is done once, here.  Each thread has a transport of its own, one
        # keep-alive connection: httpcore's pool checks every connection it holds on every request (a
        # poll per idle socket, under one lock), which with 8 fetch threads on one pool cost more CPU
        # than the requests themselves (bench/writepath.py).  An injected transport serves every thread.
        self._shared = transport
        self._local = threading.local()
        self._own: list[httpx.BaseTransport] = []
        self._own_lock = threading.Lock()
        self._base = settings.base_url.rstrip("/")
        common = {
            "Authorization": settings.api_key,
            "User-Agent": USER_AGENT,
            "Accept": "application/json",
            "Accept-Encoding": "gzip, deflate",
        }
        # Each surface's headers (its version header), whatever this client's own surface.
        self._headers = {s.version: httpx.Headers({**common, **dict(s.headers)}) for s in SURFACES}
        self._extensions = {"timeout": timeout.as_dict()}
        self._backoff = wait_random_exponential(multiplier=settings.retry_initial, max=settings.retry_max)
        # One Retrying serves every call from every thread (tenacity keeps a
        # call's state thread-local); building one per call cost ~4 % of the CPU
        # per summary.  The per-call time limit is read from the call's kwargs.
        self._retrying = Retrying(
            stop=(stop_after_attempt(settings.retry_attempts) | StopBeforeGiveUp(clock)
                  | stop_when_event_set(self.stop)),
            wait=self._wait,
            retry=retry_if_result(lambda r: r.kind == "transient"),
            # Out of tries or time: the last answer (a transient result) stands.
            retry_error_callback=lambda state: state.outcome.result() if state.outcome else None,
            sleep=self._sleep,
        )

    def __enter__(self) -> OpenPhoneClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        if self._shared is not None:
            self._shared.close()
        with self._own_lock:
            own, self._own = self._own, []
        for transport in own:
            transport.close()

    def _transport(self) -> httpx.BaseTransport:
        """The injected transport, or this thread's own (made on its first request)."""
        if self._shared is not None:
            return self._shared
        transport: httpx.BaseTransport | None = getattr(self._local, "transport", None)
        if transport is None:
            transport = self._local.transport = httpx.HTTPTransport(
                limits=httpx.Limits(max_connections=1, max_keepalive_connections=1, keepalive_expiry=30.0),
                trust_env=False)
            with self._own_lock:
                self._own.append(transport)
        return transport

    # --- capabilities -----------------------------------------------------------------------
    @property
    def api_version(self) -> str:
        return self.surface.version

    @property
    def discovery(self) -> Discovery:
        """How discovery finds calls here: ``lines`` (lines -> conversations -> calls) or ``workspace``
        (``GET /calls`` lists every line and group call)."""
        return self.surface.discovery

    @property
    def fetches_call_separately(self) -> bool:
        """Whether a summary's call costs a request of its own (v1 with ``fetch_calls`` on).

        Where the summary's answer carries its call, or with ``fetch_calls`` off, no call is fetched.
        """
        return not self.surface.call_in_summary and self.settings.fetch_calls

    # --- one summary, one call, one transcript -------------------------------------------------
    def fetch_summary(self, call_id: str, *, max_wait: float | None = None) -> SummaryResult:
        """Fetch one summary (and, where the surface sends it along, its call), retrying transient
        failures within ``max_wait``.

        Raises :class:`AuthError` on 401/403, and :class:`NotSent` when the
        first request could not even be sent (the run is stopping, or no rate
        slot came in time); every other answer is a result.  A retry that
        cannot be sent (stopping, out of time) leaves the last answer standing.
        """
        path, params = self.surface.summary_route(call_id[:80])
        if not is_valid_call_id(call_id):
            return malformed(f"GET {path}")
        return self.get(path, params, self.surface.read_summary(call_id), surface=self.surface, max_wait=max_wait)

    def get_call(self, call_id: str, *, max_wait: float | None = None) -> ApiResult[Call]:
        """The call's context; ``raw`` is the call object."""
        path, params = self.surface.call_route(call_id[:80])
        if not is_valid_call_id(call_id):
            return malformed(f"GET {path}")
        return self.get(path, params, self.surface.read_call(call_id), surface=self.surface, max_wait=max_wait)

    def fetch_transcript(self, call_id: str, *, max_wait: float | None = None,
                         page_size: int = 50) -> ApiResult[Transcript]:
        """The call's whole transcript.  A 403 means the workspace's plan has no transcripts, not that the
        key is refused: an ``invalid`` result with ``http_status`` 403 instead of ending the run."""
        started = self.clock.monotonic()
        if not is_valid_call_id(call_id):
            return malformed(f"GET transcripts of {call_id[:80]}")
        try:
            return self.surface.transcript(self, call_id, max_wait=max_wait, page_size=page_size)
        except AuthError as exc:
            if exc.http_status != 403:
                raise
            return ApiResult(what=f"GET transcripts of {call_id}", kind="invalid", http_status=403, tries=1,
                             latency_ms=self._ms(started), error=str(exc))

    # --- listings -------------------------------------------------------------------------
    def list_phone_numbers(self, page_token: str | None = None) -> ApiResult[Page[Line | Malformed]]:
        """One page of the workspace's lines, for the lines walk (a line its model refused: a Malformed)."""
        return self.surface.line_page(self, {"pageToken": page_token} if page_token else {})

    def list_conversations(self, phone_number_id: str, updated_after: datetime | None,
                           page_token: str | None = None, *, max_results: int = 100) -> ApiResult[Page[Conversation]]:
        """One page of one line's conversations updated after ``updated_after`` (the lines walk)."""
        params = {"pageToken": page_token} if page_token else {}
        return self.surface.conversation_page(self, phone_number_id, updated_after, params, max_results)

    def list_calls(self, phone_number_id: str, participant: str, created_after: datetime | None,
                   page_token: str | None = None, *, max_results: int = 100) -> ApiResult[Page[Call | Malformed]]:
        """One page of the calls of one line with one participant (the lines walk); ``raws[i]`` is the JSON
        of ``items[i]``, a :class:`~etl.storable.Malformed` where the call's model refused it."""
        params = {"pageToken": page_token} if page_token else {}
        return self.surface.line_call_page(self, phone_number_id, participant, created_after, params, max_results)

    def list_workspace_calls(self, *, created_gte: datetime, created_lte: datetime | None = None,
                             phone_number_id: str | None = None, cursor: str | None = None,
                             limit: int = 50) -> ApiResult[Page[SummaryAnswer | Call | Malformed]]:
        """One page of the workspace's calls, newest first (the workspace listing)."""
        return self.surface.workspace_call_page(
            self, created_gte=created_gte, created_lte=created_lte, phone_number_id=phone_number_id,
            params={"after": cursor} if cursor else {}, limit=limit)

    def line_pages(self, *, max_empty: int = 20) -> TokenPages[Line | Malformed]:
        return TokenPages(lambda p: self.list_phone_numbers(p.get("pageToken")), "phone numbers", max_empty=max_empty)

    def conversation_pages(self, phone_number_id: str, updated_after: datetime | None, *, max_results: int,
                           max_empty: int = 20) -> TokenPages[Conversation]:
        return TokenPages(lambda p: self.list_conversations(phone_number_id, updated_after, p.get("pageToken"),
                                                            max_results=max_results),
                          f"conversations of {phone_number_id}", max_empty=max_empty)

    def call_pages(self, phone_number_id: str, participant: str, created_after: datetime | None, *,
                   max_results: int, max_empty: int = 20) -> TokenPages[Call | Malformed]:
        return TokenPages(lambda p: self.list_calls(phone_number_id, participant, created_after, p.get("pageToken"),
                                                    max_results=max_results),
                          f"calls of {phone_number_id} with {participant}", max_empty=max_empty)

    def workspace_call_pages(self, *, created_gte: datetime, created_lte: datetime | None,
                             phone_number_id: str | None, limit: int, what: str,
                             max_empty: int = 20) -> CursorPages[SummaryAnswer | Call | Malformed]:
        return CursorPages(lambda p: self.list_workspace_calls(
            created_gte=created_gte, created_lte=created_lte, phone_number_id=phone_number_id,
            cursor=p.get("after"), limit=limit), what, max_empty=max_empty)

    # --- users, lines, contacts (etl.dimensions.DimensionSource) ------------------------------------
    def list_users(self) -> Listing[User]:
        """Every user of the workspace."""
        return self.surface.list_users(self)

    def list_lines(self) -> Listing[Line]:
        """Every line of the workspace, with its members."""
        return self.surface.list_lines(self)

    def list_contacts(self, *, updated_since: datetime | None = None) -> Listing[Contact]:
        """Every contact (or, where the surface can, those updated since a time); a workspace whose contacts
        cannot be listed gets a :class:`Listing` with its ``problem``, never an exception."""
        return self.surface.list_contacts(self, updated_since)

    # --- webhooks: `etl webhooks register|list|delete|migrate` (etl/webhooks/manage.py) -----
    #
    # Management requests are sent once (a person runs these and sees the error): creating,
    # deleting and test events are not idempotent.  ``surface``: another surface than the
    # client's own (the legacy webhooks that `migrate` deletes).

    def webhook_specs(self, events: Sequence[str]) -> tuple[WebhookSpec, ...]:
        """The webhooks this surface needs to deliver ``events``."""
        return self.surface.webhook_specs(events)

    def create_webhook(self, spec: WebhookSpec, url: str, label: str | None = None) -> dict[str, Any]:
        """Create ``spec`` for ``url``; the answer's ``data`` (its ``key`` is the signing secret)."""
        return self._webhook_object("POST", spec.path, self.surface.webhook_body(spec, url, label))

    def list_webhooks(self, *, surface: Surface | None = None) -> list[dict[str, Any]]:
        """The webhooks this key's workspace has on ``surface`` (default: the client's)."""
        data = self._webhook_call("GET", "/webhooks", surface=surface)
        return [w for w in data if isinstance(w, dict)] if isinstance(data, list) else []

    def delete_webhook(self, webhook_id: str, *, surface: Surface | None = None) -> None:
        self._webhook_call("DELETE", f"/webhooks/{_webhook_id(webhook_id)}", surface=surface)

    def send_test_event(self, webhook_id: str, event_type: str) -> dict[str, Any]:
        """Quo delivers a signed sample event of ``event_type`` to the webhook's URL (surfaces that can);
        the answer's ``data`` (the sample payload)."""
        return self._webhook_object("POST", self.surface.test_event_path(_webhook_id(webhook_id)),
                                    {"eventType": event_type})

    def _webhook_object(self, method: str, path: str, body: dict[str, Any]) -> dict[str, Any]:
        data = self._webhook_call(method, path, body)
        if not isinstance(data, dict):
            raise EtlError(f"{method} {self.surface.webhook_path(path)}: the answer has no object in data")
        return data

    def _webhook_call(self, method: str, path: str, body: dict[str, Any] | None = None, *,
                      surface: Surface | None = None) -> Any:
        """One management request; ``path`` is unversioned (``/webhooks…``), the surface places it."""
        surface = surface or self.surface
        full = surface.webhook_path(path)

        def parse(raw: bytes) -> tuple[Any, Any]:
            if not raw:
                return None, None
            parsed = json.loads(raw)
            return (parsed.get("data") if isinstance(parsed, dict) else None), parsed

        result = self.request(method, full, parse, surface=surface, body=body, retry=False)
        if result.kind != "ok":
            raise EtlError(f"{method} {full} failed: {brief_error(result.error or result.kind)}"
                           if result.http_status is not None else f"{method} {full}: "
                           f"{brief_error(result.error or result.kind)}")
        return result.data

    # --- the one request path ------------------------------------------------------------------
    def monotonic(self) -> float:
        return self.clock.monotonic()

    def get(self, path: str, params: dict[str, Any], parse: Parse[M], *, surface: Surface,
            max_wait: float | None = None) -> ApiResult[M]:
        """A GET through :meth:`request` (retried)."""
        return self.request("GET", path, parse, params=params, surface=surface, max_wait=max_wait)

    def request(self, method: str, path: str, parse: Parse[M], *, surface: Surface,
                params: dict[str, Any] | None = None, body: dict[str, Any] | None = None,
                max_wait: float | None = None, retry: bool = True) -> ApiResult[M]:
        """Every request: a rate slot, one exchange, classification; transient answers retried within
        ``max_wait`` when ``retry`` (idempotent requests), else sent once."""
        headers = self._headers[surface.version]
        content = None
        if body is not None:
            headers = headers.copy()
            headers["Content-Type"] = "application/json"
            content = json.dumps(body).encode()
        request = httpx.Request(method, self._base + path, params=params or None, headers=headers,
                                content=content, extensions=self._extensions)
        started = self.clock.monotonic()
        what = f"{method} {path}"

        def one_try(tries: int) -> ApiResult[M]:
            return self._try(what, request, parse, started, tries)

        give_up_at = None if max_wait is None else started + max_wait
        sent: list[ApiResult[M]] = []
        waited: list[float] = []  # seconds each try waited for its rate slot
        if not retry:
            return _apart(self._attempt(one_try, sent, waited, give_up_at=give_up_at), waited)
        try:
            result: ApiResult[M] = self._retrying(self._attempt, one_try, sent, waited, give_up_at=give_up_at)
        except NotSent:
            if not sent:
                raise
            result = sent[-1]
        return _apart(result, waited)

    def _attempt(self, one_try: Callable[[int], ApiResult[M]], sent: list[ApiResult[M]], waited: list[float], *,
                 give_up_at: float | None) -> ApiResult[M]:
        """One try: a rate slot, then the request."""
        before = self.clock.monotonic()
        left = None if give_up_at is None else max(0.0, give_up_at - before)
        try:
            self.budget.acquire(max_wait=left, stop=self.stop)
        finally:
            waited.append(self.clock.monotonic() - before)
        result = one_try(len(sent) + 1)
        sent.append(result)
        if result.http_status == 429:
            self.budget.penalize(result.retry_after)
        return result

    def _sleep(self, seconds: float) -> None:
        """tenacity's sleep between tries, cut short by a stop (the next try then is not sent)."""
        self.clock.wait(seconds, self.stop)

    def _wait(self, state: Any) -> float:
        """Exponential backoff with full jitter, but never sooner than ``Retry-After``."""
        delay = self._backoff(state)
        result = state.outcome.result() if state.outcome and not state.outcome.failed else None
        if result is not None and result.retry_after:
            delay = max(delay, result.retry_after)
        return float(delay)

    def _try(self, what: str, request: httpx.Request, parse: Parse[M], started: float,
             tries: int) -> ApiResult[M]:
        """One request, classified.  Raises only :class:`AuthError`."""
        try:
            reply = self._exchange(request)
            if reply.body is None:
                return ApiResult(what=what, kind="rejected", http_status=reply.status, tries=tries,
                                 latency_ms=self._ms(started),
                                 error=f"response body larger than {self.settings.max_body_bytes} bytes")
            if not 200 <= reply.status < 300:
                kind: Kind = "not_found" if reply.status == 404 else "invalid"
                return ApiResult(what=what, kind=kind, http_status=reply.status, tries=tries,
                                 latency_ms=self._ms(started), error=reply.error)
            try:
                data, raw = parse(reply.body)
            except UnicodeDecodeError:
                raise Transient("200 with a body that is not UTF-8", 200) from None
            except ValidationError as exc:
                raise Transient(f"200 with a body that violates the schema: {first_error(exc)}", 200) from None
            except ValueError:
                raise Transient("200 with a body that is not JSON", 200) from None
        except Transient as exc:
            return ApiResult(what=what, kind="transient", http_status=exc.http_status, tries=tries,
                             latency_ms=self._ms(started), error=exc.message, retry_after=exc.retry_after)
        return ApiResult(what=what, kind="ok", http_status=reply.status, tries=tries, latency_ms=self._ms(started),
                         data=data, raw=raw)

    def _exchange(self, request: httpx.Request) -> Reply:
        """Send one request and read its body.

        Returns a final answer (2xx, 400, 404, or a body over the size limit);
        raises :class:`Transient` for what is worth retrying and
        :class:`AuthError` for 401/403.
        """
        # One deadline for the whole request (connect, headers, body), not per read: a server that
        # drips a byte a second never times a read out (issue 25, finding 6).
        deadline = self.clock.monotonic() + self.settings.connect_timeout + self.settings.read_timeout
        try:
            response = self._transport().handle_request(request)
        except httpx.TimeoutException as exc:
            raise Transient(f"timeout ({type(exc).__name__})") from None
        except httpx.TransportError as exc:
            raise Transient(f"connection error ({type(exc).__name__}: {exc})") from None
        try:
            body = self._read_body(response, deadline)
        except httpx.TimeoutException as exc:
            raise Transient(f"timeout reading body ({type(exc).__name__})", response.status_code) from None
        except httpx.TransportError as exc:
            raise Transient(f"connection error reading body ({type(exc).__name__})", response.status_code) from None
        finally:
            response.close()
        status = response.status_code
        response.request = request
        if body is None or 200 <= status < 300:
            return Reply(status, body, None)
        error = error_text(response, body, self.settings.api_key)
        if status in (401, 403):
            raise AuthError(status, error)
        if status == 404 and not is_api_error(body):
            # A 404 that is not the API's JSON error comes from a route the API does not have
            # (a wrong --base-url or proxy): it says nothing about the id, so it is no answer.
            raise Transient(f"{error} from a route the API does not have (not the API's error body): "
                            "is --base-url right?", status)
        if status in (404, 400):
            return Reply(status, body, error)
        raise Transient(error, status, parse_retry_after(response.headers.get("Retry-After"), self.clock.utcnow()))

    def _ms(self, started: float) -> float:
        return round((self.clock.monotonic() - started) * 1000, 1)

    def _read_body(self, response: httpx.Response, deadline: float | None = None) -> bytes | None:
        """The body, or None over the size limit; read chunk by chunk so that the request's
        ``deadline`` (a :meth:`Clock.monotonic` time) and a stop end it mid-body (:class:`Transient`)."""
        limit = self.settings.max_body_bytes
        declared = response.headers.get("Content-Length")
        # A compressed body's Content-Length says nothing about its decoded size.
        expected = (int(declared) if declared is not None and declared.isdigit()
                    and "Content-Encoding" not in response.headers else None)
        if expected is not None and expected > limit:
            return None
        chunks: list[bytes] = []
        size = 0
        stopped_at: float | None = None
        for chunk in response.iter_bytes():
            size += len(chunk)
            if size > limit:
                return None
            chunks.append(chunk)
            if self.stop.is_set():
                # In-flight answers land (a stop saves them); one still arriving after a grace is
                # abandoned as never answered: its item is released unchanged.
                now = self.clock.monotonic()
                stopped_at = now if stopped_at is None else stopped_at
                if now - stopped_at > STOP_GRACE_S:
                    raise NotSent("the run stopped while the body was still arriving")
            # A body already whole is kept, however late: the deadline ends waiting, not answers.
            whole_already = expected is not None and size >= expected
            if deadline is not None and not whole_already and self.clock.monotonic() > deadline:
                whole = self.settings.connect_timeout + self.settings.read_timeout
                raise Transient(f"the whole request took over {whole:g} s (the body was still arriving)",
                                response.status_code)
        return b"".join(chunks)


def _webhook_id(webhook_id: str) -> str:
    """``webhook_id`` if it can go into a URL path; never build a URL from anything else (path injection)."""
    if not webhook_id.isalnum():
        raise EtlError(f"not a webhook id: {webhook_id[:80]!r}")
    return webhook_id


def _apart(result: ApiResult[M], waited: list[float]) -> ApiResult[M]:
    """``latency_ms`` is the API's: the wait for the key's rate budget is ``wait_ms``, apart (issue 26)."""
    wait_ms = round(sum(waited) * 1000, 1)
    return dataclasses.replace(result, latency_ms=round(max(0.0, result.latency_ms - wait_ms), 1), wait_ms=wait_ms)
