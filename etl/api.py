"""The OpenPhone API client: ``fetch_summary(call_id) -> ApiResult[SummaryAnswer]``, calls, lists.

HTTP lives here and only here.  One :class:`OpenPhoneClient` per run holds the
connection pool (an httpx transport, called from the sync engine's fetch
threads); the transport is injectable, so tests and ``etl demo`` hand in a
simulated API and everything above this module is the real code.

Two surfaces sit behind one interface (``settings.api_version``): ``v1`` and
the dated API ``2026-03-30`` (header ``Quo-Api-Version``, paths without
``/v1``; docs/api/calls-2026-03-30.md).  Which one is used stays inside this
module (a :class:`_Surface` per version): callers ask for a summary, a call or
a page of calls and read the capabilities (:attr:`OpenPhoneClient.lists_workspace`,
:attr:`OpenPhoneClient.fetches_call_separately`), never the version.

Outcomes are values, not exceptions: an :class:`etl.results.ApiResult` says
which row of docs/contract.md's queue table applies.  The one exception that escapes is
:class:`etl.errors.AuthError` (401/403), because it ends the whole run, and
:class:`etl.ratelimit.NotSent` when not even the first request could be sent.

Every request first takes a slot of the key's :class:`etl.ratelimit.RateBudget`.
Transient failures (429, 5xx, timeouts, dropped connections, bodies that are
not JSON or break the schema) come back as ``transient`` results and are
retried inside the run by tenacity with exponential backoff and full jitter,
honouring ``Retry-After``, within the item's time.
"""

from __future__ import annotations

import email.utils
import hashlib
import json
import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal, TypeVar

import httpx
from pydantic import BaseModel, ValidationError
from tenacity import (
    RetryCallState,
    Retrying,
    retry_if_result,
    stop_after_attempt,
    stop_when_event_set,
    wait_random_exponential,
)
from tenacity.stop import stop_base

from etl._version import __version__
from etl.clock import SYSTEM, Clock
from etl.config import DATED_API_VERSION, Settings, redact_secret
from etl.errors import AuthError, EtlError
from etl.ids import is_valid_call_id
from etl.normalize import call_json
from etl.ratelimit import LocalBudget, NotSent, RateBudget
from etl.results import (
    V1_SEGMENT_ID,
    ApiResult,
    DialogueLine,
    Kind,
    SummaryAnswer,
    SummaryResult,
    Transcript,
    TranscriptSegment,
)
from etl.schema import (
    CallData,
    CallEnvelope,
    CallList,
    ConversationList,
    DatedCall,
    DatedCallEnvelope,
    DatedCallList,
    DialogueData,
    PhoneNumberList,
    SummaryData,
    SummaryEnvelope,
    TranscriptPage,
    TranscriptV1Envelope,
)

__all__ = ["DATED_VERSION", "USER_AGENT", "ApiResult", "NotSent", "OpenPhoneClient", "SummaryResult", "api_time",
           "dated_answer", "parse_retry_after"]

USER_AGENT = f"openphone-summary-sync/{__version__} (+httpx/{httpx.__version__})"
_MAX_ERROR_TEXT = 300

_M = TypeVar("_M")
_P = TypeVar("_P", bound=BaseModel)
# Reads a 200 body (bytes) into (parsed value, its JSON); raises ValidationError,
# ValueError (not JSON), UnicodeDecodeError or _Transient (e.g. another call's id).
_Parse = Callable[[bytes], tuple[_M, Any]]


class _Transient(Exception):
    """One try failed in a way worth retrying (a transport failure, 429, 5xx); never leaves a try."""

    def __init__(self, message: str, http_status: int | None = None, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.message = message[:_MAX_ERROR_TEXT]
        self.http_status = http_status
        self.retry_after = retry_after


@dataclass(frozen=True, slots=True)
class _Reply:
    """A final answer to one request: 200, 400, 404, or a body over the size limit (``body`` None)."""

    status: int
    body: bytes | None
    error: str | None  # the API's error text for a 400/404


def api_time(value: datetime) -> str:
    """A naive-UTC (or aware) datetime as the API's ISO 8601 UTC text, to the millisecond."""
    if value.tzinfo is not None:
        value = value.astimezone(UTC).replace(tzinfo=None)
    return value.isoformat(timespec="milliseconds") + "Z"


def _whole(model: type[_P]) -> _Parse[_P]:
    def parse(body: bytes) -> tuple[_P, Any]:
        raw = json.loads(body)
        return model.model_validate(raw), raw

    return parse


DATED_VERSION = DATED_API_VERSION  # the dated surface's name (etl.config)
_CALL_INCLUDE = "summary,voicemail"


@dataclass(frozen=True, slots=True)
class _Surface:
    """One API surface: where its requests go and how its answers read (docs/api/)."""

    version: str
    headers: tuple[tuple[str, str], ...]
    # GET /calls lists the whole workspace (else: lines -> conversations -> calls).
    lists_workspace: bool
    # The summary's answer carries its call (no separate call request).
    call_in_summary: bool
    # ``absent`` means no summary will ever exist (v1: not yet).
    absent_is_final: bool

    def summary_path(self, call_id: str) -> tuple[str, dict[str, Any]]:
        if self.call_in_summary:
            return "/calls/" + call_id, {"include": _CALL_INCLUDE}
        return "/v1/call-summaries/" + call_id, {}

    def call_path(self, call_id: str) -> tuple[str, dict[str, Any]]:
        if self.call_in_summary:
            return "/calls/" + call_id, {"include": _CALL_INCLUDE}
        return "/v1/calls/" + call_id, {}


_SURFACES = {
    "v1": _Surface("v1", (), lists_workspace=False, call_in_summary=False, absent_is_final=False),
    DATED_VERSION: _Surface(DATED_VERSION, (("Quo-Api-Version", DATED_VERSION),), lists_workspace=True,
                            call_in_summary=True, absent_is_final=True),
}

def parse_retry_after(value: str | None, now: datetime | None = None) -> float | None:
    """Seconds to wait from a ``Retry-After`` header, or None to use our own backoff.

    Accepts delta-seconds or an HTTP date; missing, unparsable, zero or negative
    values give None so that a bad header never causes an instant retry loop.
    ``now`` (naive UTC or aware; default: the system clock) is what an HTTP date is measured from.
    """
    if not value:
        return None
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError, IndexError):
            return None
        if when.tzinfo is None:
            when = when.replace(tzinfo=UTC)
        now = now or SYSTEM.utcnow()
        if now.tzinfo is None:
            now = now.replace(tzinfo=UTC)
        seconds = (when - now).total_seconds()
    if seconds != seconds or seconds <= 0:  # NaN or not in the future
        return None
    return min(seconds, 3600.0)


def _is_api_error(body: bytes) -> bool:
    """The body is the API's error document: a JSON object with a ``message`` (docs/api/)."""
    try:
        parsed = json.loads(body)
    except ValueError:
        return False
    return isinstance(parsed, dict) and isinstance(parsed.get("message"), str)


def _error_text(response: httpx.Response, body: bytes, secret: str | None = None) -> str:
    """The API's error ``message`` if the body has one, else the reason phrase.

    The text is stored in ``summary_queue.last_error``: an API that echoes the
    key back must not get it written to the database.
    """
    message = ""
    try:
        parsed = json.loads(body)
        if isinstance(parsed, dict) and isinstance(parsed.get("message"), str):
            message = parsed["message"]
    except ValueError:
        pass
    text = f"HTTP {response.status_code} {response.reason_phrase}".rstrip()
    if message:
        text += f": {message}"
    # Collapsed first, so that an echo split by a line break is one run for redact_secret.
    return redact_secret(" ".join(text.split()), secret)[:_MAX_ERROR_TEXT]


# After a stop, how long a body still arriving may take before the request is abandoned.
STOP_GRACE_S = 2.0


class OpenPhoneClient:
    """Fetches call summaries, calls and workspace lists from any number of threads at once, on either surface.

    Every endpoint takes the same path: a slot of the rate budget, one request
    (:meth:`_exchange`), classification, and tenacity's retries of transient
    answers within the caller's time.

    Requests go through httpx's synchronous transport: measured on this
    project's workload, that costs about half the CPU per request of httpx's
    async path, whose pool and anyio layers dominate at these speeds.
    """

    def __init__(self, settings: Settings, *, transport: httpx.BaseTransport | None = None,
                 budget: RateBudget | None = None, stop: threading.Event | None = None,
                 clock: Clock = SYSTEM) -> None:
        """``stop`` is the run's stop signal: once set, no new request (first or retry) is sent;
        ``clock`` measures latencies and time limits and waits between tries."""
        if not settings.api_key:
            raise ValueError("an API key is required")
        self.settings = settings
        self.clock = clock
        self.budget: RateBudget = budget if budget is not None else LocalBudget(settings.rate, clock)
        self.stop = stop or threading.Event()
        limits = httpx.Limits(
            max_connections=settings.concurrency,
            max_keepalive_connections=settings.concurrency,
            keepalive_expiry=30.0,
        )
        timeout = httpx.Timeout(
            connect=settings.connect_timeout,
            read=settings.read_timeout,
            write=settings.connect_timeout,
            pool=settings.read_timeout + settings.connect_timeout,
        )
        # The transport owns the connection pool; requests go to it directly,
        # so what httpx.Client would add per request (cookies, auth flow,
        # redirects, URL merging) is done once, here.
        self._transport: httpx.BaseTransport = transport or httpx.HTTPTransport(limits=limits, trust_env=False)
        self._surface = _SURFACES[settings.api_version]
        self._base = settings.base_url.rstrip("/")
        self._headers = httpx.Headers({
            "Authorization": settings.api_key,
            "User-Agent": USER_AGENT,
            "Accept": "application/json",
            "Accept-Encoding": "gzip, deflate",
            **dict(self._surface.headers),
        })
        self._extensions = {"timeout": timeout.as_dict()}
        self._backoff = wait_random_exponential(multiplier=settings.retry_initial, max=settings.retry_max)
        # One Retrying serves every call from every thread (tenacity keeps a
        # call's state thread-local); building one per call cost ~4 % of the CPU
        # per summary.  The per-call time limit is read from the call's kwargs.
        self._retrying = Retrying(
            stop=(stop_after_attempt(settings.retry_attempts) | _StopBeforeGiveUp(clock)
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
        self._transport.close()

    @property
    def api_version(self) -> str:
        return self._surface.version

    @property
    def lists_workspace(self) -> bool:
        """Whether :meth:`list_workspace_calls` works (the dated surface): one listing for every line and group call."""
        return self._surface.lists_workspace

    @property
    def fetches_call_separately(self) -> bool:
        """Whether a summary's call costs a request of its own (v1 with ``fetch_calls`` on).

        On the dated surface the summary's answer carries its call; on v1 with
        ``fetch_calls`` off no call is fetched at all.
        """
        return not self._surface.call_in_summary and self.settings.fetch_calls

    def fetch_summary(self, call_id: str, *, max_wait: float | None = None) -> SummaryResult:
        """Fetch one summary (and, on the dated surface, its call), retrying transient failures within ``max_wait``.

        Raises :class:`AuthError` on 401/403, and :class:`NotSent` when the
        first request could not even be sent (the run is stopping, or no rate
        slot came in time); every other answer is a result.  A retry that
        cannot be sent (stopping, out of time) leaves the last answer standing.
        """
        path, params = self._surface.summary_path(call_id[:80])
        if not is_valid_call_id(call_id):
            # Never build a URL from an unvalidated id (path injection).
            return ApiResult(what=f"GET {path}", kind="invalid", http_status=None, tries=0, latency_ms=0.0,
                             error="malformed call id")
        parse = self._dated_summary(call_id) if self._surface.call_in_summary else self._v1_summary(call_id)
        return self._get(path, params, parse, max_wait=max_wait)

    def get_call(self, call_id: str, *, max_wait: float | None = None) -> ApiResult[CallData | DatedCall]:
        """The call's context (``GET /v1/calls/{id}``, or ``GET /calls/{id}``); ``raw`` is the call object."""
        path, params = self._surface.call_path(call_id[:80])
        if not is_valid_call_id(call_id):
            return ApiResult(what=f"GET {path}", kind="invalid", http_status=None, tries=0, latency_ms=0.0,
                             error="malformed call id")
        dated = self._surface.call_in_summary

        def parse(body: bytes) -> tuple[CallData | DatedCall, Any]:
            raw = json.loads(body)
            call: CallData | DatedCall = (DatedCallEnvelope if dated else CallEnvelope).model_validate(raw).data
            if call.id != call_id:
                raise _Transient(f"200 for another call id ({call.id[:80]!r})", 200)
            return call, raw["data"]

        return self._get(path, params, parse, max_wait=max_wait)

    def list_workspace_calls(self, *, created_gte: datetime, created_lte: datetime | None = None,
                             phone_number_id: str | None = None, cursor: str | None = None,
                             limit: int = 50) -> ApiResult[DatedCallList]:
        """One page of ``GET /calls`` (the dated surface): every call of the workspace, newest first.

        Each call comes with its summary and voicemail (``include``); bounds
        are inclusive.  ``raw["data"][i]`` is the JSON of ``data.data[i]``.
        Only on a surface that :attr:`lists_workspace`.
        """
        if not self._surface.lists_workspace:
            raise EtlError(f"API version {self._surface.version} cannot list the workspace's calls")
        params: dict[str, Any] = {"createdAt[gte]": api_time(created_gte), "include": _CALL_INCLUDE,
                                  "limit": limit}
        if created_lte is not None:
            params["createdAt[lte]"] = api_time(created_lte)
        if phone_number_id:
            params["phoneNumberId"] = phone_number_id
        if cursor:
            params["after"] = cursor
        return self._get("/calls", params, _whole(DatedCallList))

    def _v1_summary(self, call_id: str) -> _Parse[SummaryAnswer]:
        def parse(body: bytes) -> tuple[SummaryAnswer, Any]:
            raw = body.decode("utf-8")
            data = _validate(body)
            if data.callId != call_id:
                raise _Transient(f"200 for another call id ({data.callId[:80]!r})", 200)
            return SummaryAnswer(call_id=call_id, summary=data, raw_json=raw,
                                 content_hash=hashlib.sha256(body).hexdigest()), None

        return parse

    def _dated_summary(self, call_id: str) -> _Parse[SummaryAnswer]:
        def parse(body: bytes) -> tuple[SummaryAnswer, Any]:
            raw = json.loads(body)
            call = DatedCallEnvelope.model_validate(raw).data
            if call.id != call_id:
                raise _Transient(f"200 for another call id ({call.id[:80]!r})", 200)
            if call.summary is None:
                raise _Transient("200 without the summary that include=summary asks for", 200)
            return dated_answer(call, raw["data"]), raw

        return parse

    def _call(self, one_try: Callable[[int], ApiResult[_M]], max_wait: float | None) -> ApiResult[_M]:
        """Run ``one_try(tries)`` under the budget, retrying transient answers within ``max_wait``."""
        give_up_at = None if max_wait is None else self.clock.monotonic() + max_wait
        sent: list[ApiResult[_M]] = []
        try:
            result: ApiResult[_M] = self._retrying(self._attempt, one_try, sent, give_up_at=give_up_at)
        except NotSent:
            if not sent:
                raise
            result = sent[-1]
        return result

    def _attempt(self, one_try: Callable[[int], ApiResult[_M]], sent: list[ApiResult[_M]], *,
                 give_up_at: float | None) -> ApiResult[_M]:
        """One try: a rate slot, then the request."""
        left = None if give_up_at is None else max(0.0, give_up_at - self.clock.monotonic())
        self.budget.acquire(max_wait=left, stop=self.stop)
        result = one_try(len(sent) + 1)
        sent.append(result)
        if result.http_status == 429:
            self.budget.penalize(result.retry_after)
        return result

    def _sleep(self, seconds: float) -> None:
        """tenacity's sleep between tries, cut short by a stop (the next try then is not sent)."""
        self.clock.wait(seconds, self.stop)

    def _wait(self, state: RetryCallState) -> float:
        """Exponential backoff with full jitter, but never sooner than ``Retry-After``."""
        delay = self._backoff(state)
        result = state.outcome.result() if state.outcome and not state.outcome.failed else None
        if result is not None and result.retry_after:
            delay = max(delay, result.retry_after)
        return float(delay)

    def _exchange(self, request: httpx.Request) -> _Reply:
        """Send one request and read its body.

        Returns a final answer (200, 400, 404, or a body over the size limit);
        raises :class:`_Transient` for what is worth retrying and
        :class:`AuthError` for 401/403.
        """
        # One deadline for the whole request (connect, headers, body), not per read: a server that
        # drips a byte a second never times a read out (issue 25, finding 6).
        deadline = self.clock.monotonic() + self.settings.connect_timeout + self.settings.read_timeout
        try:
            response = self._transport.handle_request(request)
        except httpx.TimeoutException as exc:
            raise _Transient(f"timeout ({type(exc).__name__})") from None
        except httpx.TransportError as exc:
            raise _Transient(f"connection error ({type(exc).__name__}: {exc})") from None
        try:
            body = self._read_body(response, deadline)
        except httpx.TimeoutException as exc:
            raise _Transient(f"timeout reading body ({type(exc).__name__})", response.status_code) from None
        except httpx.TransportError as exc:
            raise _Transient(f"connection error reading body ({type(exc).__name__})", response.status_code) from None
        finally:
            response.close()
        status = response.status_code
        response.request = request
        if body is None or 200 <= status < 300:
            return _Reply(status, body, None)
        error = _error_text(response, body, self.settings.api_key)
        if status in (401, 403):
            raise AuthError(status, error)
        if status == 404 and not _is_api_error(body):
            # A 404 that is not the API's JSON error comes from a route the API does not have
            # (a wrong --base-url or proxy): it says nothing about the id, so it is no answer.
            raise _Transient(f"{error} from a route the API does not have (not the API's error body): "
                             "is --base-url right?", status)
        if status in (404, 400):
            return _Reply(status, body, error)
        raise _Transient(error, status, parse_retry_after(response.headers.get("Retry-After"), self.clock.utcnow()))

    def _ms(self, started: float) -> float:
        return round((self.clock.monotonic() - started) * 1000, 1)

    def _read_body(self, response: httpx.Response, deadline: float | None = None) -> bytes | None:
        """The body, or None over the size limit; read chunk by chunk so that the request's
        ``deadline`` (a :meth:`Clock.monotonic` time) and a stop end it mid-body (:class:`_Transient`)."""
        limit = self.settings.max_body_bytes
        declared = response.headers.get("Content-Length")
        # A compressed body's Content-Length says nothing about its decoded size.
        if (declared is not None and declared.isdigit() and "Content-Encoding" not in response.headers
                and int(declared) > limit):
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
            if deadline is not None and self.clock.monotonic() > deadline:
                whole = self.settings.connect_timeout + self.settings.read_timeout
                raise _Transient(f"the whole request took over {whole:g} s (the body was still arriving)",
                                 response.status_code)
        return b"".join(chunks)

    # --- v1 lists: phone numbers, conversations, calls of one conversation ----------
    #
    # The same path as every request (_call: budget, retries; _exchange: request,
    # classification, body limit); outcomes are ApiResult values.

    def list_phone_numbers(self, page_token: str | None = None) -> ApiResult[PhoneNumberList]:
        """``GET /v1/phone-numbers``: the workspace's lines."""
        params = {"pageToken": page_token} if page_token else {}
        return self._get("/v1/phone-numbers", params, _whole(PhoneNumberList))

    def list_conversations(self, phone_number_id: str, updated_after: datetime | None,
                           page_token: str | None = None, *, max_results: int = 100) -> ApiResult[ConversationList]:
        """One page of ``GET /v1/conversations`` for one line, updated after ``updated_after``."""
        params: dict[str, Any] = {"phoneNumbers[]": phone_number_id, "maxResults": max_results}
        if updated_after is not None:
            params["updatedAfter"] = api_time(updated_after)
        if page_token:
            params["pageToken"] = page_token
        return self._get("/v1/conversations", params, _whole(ConversationList))

    def list_calls(self, phone_number_id: str, participant: str, created_after: datetime | None,
                   page_token: str | None = None, *, max_results: int = 100) -> ApiResult[CallList]:
        """One page of ``GET /v1/calls`` for one line and one participant (one-to-one conversations).

        ``raw`` is the page body; ``raw["data"][i]`` is the JSON of ``data.data[i]``.
        """
        params: dict[str, Any] = {
            "phoneNumberId": phone_number_id, "participants[]": participant, "maxResults": max_results,
        }
        if created_after is not None:
            params["createdAfter"] = api_time(created_after)
        if page_token:
            params["pageToken"] = page_token
        return self._get("/v1/calls", params, _whole(CallList))

    def _headers_for(self, dated: bool) -> httpx.Headers:
        """This client's headers, with ``Quo-Api-Version`` for a dated path whatever its own surface."""
        if not dated or "Quo-Api-Version" in self._headers:
            return self._headers
        headers = self._headers.copy()
        headers["Quo-Api-Version"] = DATED_VERSION
        return headers

    def _get(self, path: str, params: dict[str, Any], parse: _Parse[_M], *,
             max_wait: float | None = None, dated: bool = False) -> ApiResult[_M]:
        """``dated``: a path of the dated surface, whatever this client's surface (its version header)."""
        request = httpx.Request("GET", self._base + path, params=params or None, headers=self._headers_for(dated),
                                extensions=self._extensions)
        started = self.clock.monotonic()
        what = f"GET {path}"
        return self._call(lambda tries: self._try(what, request, parse, started, tries), max_wait)

    def _try(self, what: str, request: httpx.Request, parse: _Parse[_M], started: float,
             tries: int) -> ApiResult[_M]:
        """One request, classified.  Raises only :class:`AuthError`."""
        try:
            reply = self._exchange(request)
            if reply.body is None:
                return ApiResult(what=what, kind="rejected", http_status=reply.status, tries=tries,
                                 latency_ms=self._ms(started),
                                 error=f"response body larger than {self.settings.max_body_bytes} bytes")
            if reply.status != 200:
                kind: Kind = "not_found" if reply.status == 404 else "invalid"
                return ApiResult(what=what, kind=kind, http_status=reply.status, tries=tries,
                                 latency_ms=self._ms(started), error=reply.error)
            try:
                data, raw = parse(reply.body)
            except UnicodeDecodeError:
                raise _Transient("200 with a body that is not UTF-8", 200) from None
            except ValidationError as exc:
                raise _Transient(f"200 with a body that violates the schema: {_first_error(exc)}", 200) from None
            except ValueError:
                raise _Transient("200 with a body that is not JSON", 200) from None
        except _Transient as exc:
            return ApiResult(what=what, kind="transient", http_status=exc.http_status, tries=tries,
                             latency_ms=self._ms(started), error=exc.message, retry_after=exc.retry_after)
        return ApiResult(what=what, kind="ok", http_status=200, tries=tries, latency_ms=self._ms(started),
                         data=data, raw=raw)

    # --- webhooks: `etl webhooks register|list|delete|migrate` (etl/webhooks/manage.py) -----
    #
    # ``dated``: the dated API version's surface (path without /v1, header Quo-Api-Version);
    # None: the surface of ``settings.api_version``.

    def create_webhook(self, resource: Literal["calls", "call-summaries"], url: str, events: list[str],
                       label: str | None = None) -> dict[str, Any]:
        """``POST /v1/webhooks/{resource}`` (legacy); the answer's ``data`` (its ``key`` is the signing secret)."""
        body: dict[str, Any] = {"url": url, "events": events, "resourceIds": ["*"], "status": "enabled"}
        if label:
            body["label"] = label
        return self._webhook_object("POST", f"/webhooks/{resource}", body, dated=False)

    def create_dated_webhook(self, url: str, events: list[str], label: str | None = None) -> dict[str, Any]:
        """``POST /webhooks`` (dated version): one webhook for every event in ``events``; ``key``
        is its ``whsec_…`` signing secret."""
        body: dict[str, Any] = {"url": url, "events": events, "resourceIds": ["*"]}
        if label:
            body["label"] = label
        return self._webhook_object("POST", "/webhooks", body, dated=True)

    def list_webhooks(self, *, dated: bool | None = None) -> list[dict[str, Any]]:
        """``GET /v1/webhooks`` or ``GET /webhooks``: the webhooks this key's workspace has there."""
        data = self._webhook_call("GET", "/webhooks", dated=dated)
        return [w for w in data if isinstance(w, dict)] if isinstance(data, list) else []

    def delete_webhook(self, webhook_id: str, *, dated: bool | None = None) -> None:
        """``DELETE /v1/webhooks/{id}`` or ``DELETE /webhooks/{id}``."""
        self._webhook_call("DELETE", f"/webhooks/{_webhook_id(webhook_id)}", dated=dated)

    def send_test_event(self, webhook_id: str, event_type: str) -> dict[str, Any]:
        """``POST /webhooks/{id}/events/test`` (dated version): Quo delivers a signed sample event
        of ``event_type`` to the webhook's URL; the answer's ``data`` (the sample payload)."""
        return self._webhook_object("POST", f"/webhooks/{_webhook_id(webhook_id)}/events/test",
                                    {"eventType": event_type}, dated=True)

    def _webhook_object(self, method: str, path: str, body: dict[str, Any], *, dated: bool) -> dict[str, Any]:
        data = self._webhook_call(method, path, body, dated=dated)
        if not isinstance(data, dict):
            raise EtlError(f"{method} {self._webhook_path(path, dated)}: the answer has no object in data")
        return data

    def _webhook_path(self, path: str, dated: bool | None) -> str:
        dated = self.settings.api_version == DATED_VERSION if dated is None else dated
        return path if dated else "/v1" + path

    def _webhook_call(self, method: str, path: str, body: dict[str, Any] | None = None, *,
                      dated: bool | None = None) -> Any:
        """One management request (no retries: a person runs these and sees the error).

        ``path`` is unversioned (``/webhooks…``): the legacy surface prefixes ``/v1``, the
        dated one sends ``Quo-Api-Version`` instead (it has no default version).
        """
        dated = self.settings.api_version == DATED_VERSION if dated is None else dated
        path = self._webhook_path(path, dated)
        headers = self._headers_for(dated).copy()
        content = None
        if body is not None:
            content = json.dumps(body).encode()
            headers["Content-Type"] = "application/json"
        request = httpx.Request(method, self._base + path, headers=headers,
                                content=content, extensions=self._extensions)
        self.budget.acquire(stop=self.stop)  # the key's budget covers management requests too
        try:
            response = self._transport.handle_request(request)
            try:
                raw = response.read()
            finally:
                response.close()
        except httpx.TransportError as exc:
            raise EtlError(f"{method} {path}: connection error ({type(exc).__name__})") from None
        status = response.status_code
        if status in (401, 403):
            raise AuthError(status, _error_text(response, raw, self.settings.api_key))
        if status >= 300:
            raise EtlError(f"{method} {path} failed: {_error_text(response, raw, self.settings.api_key)}")
        if not raw:
            return None
        try:
            parsed = json.loads(raw)
        except ValueError:
            raise EtlError(f"{method} {path}: the answer is not JSON") from None
        return parsed.get("data") if isinstance(parsed, dict) else None

    # --- transcripts (issue 19) -------------------------------------------------------
    #
    # The same request path (_call: budget, retries; _resource_try: request,
    # classification, body limit).  A 403 on a transcript means the workspace's
    # plan has no transcripts, not that the key is refused: it comes back as an
    # ``invalid`` result with ``http_status`` 403 instead of ending the run.

    def fetch_transcript(self, call_id: str, *, max_wait: float | None = None) -> ApiResult[Transcript]:
        """The call's transcript on this client's surface."""
        if self._surface.version == DATED_VERSION:
            return self.list_call_transcripts(call_id, max_wait=max_wait)
        return self.get_call_transcript(call_id, max_wait=max_wait)

    def get_call_transcript(self, call_id: str, *, max_wait: float | None = None) -> ApiResult[Transcript]:
        """v1 ``GET /v1/call-transcripts/{id}``: one merged transcript (segment ``merged``)."""
        what = f"GET /v1/call-transcripts/{call_id[:80]}"
        if not is_valid_call_id(call_id):
            return _malformed(what)

        def parse(body: bytes) -> tuple[Transcript, Any]:
            parsed = json.loads(body)
            data = TranscriptV1Envelope.model_validate(parsed).data
            if data.callId != call_id:
                raise _Transient(f"200 for another call id ({data.callId[:80]!r})", 200)
            raw = parsed["data"]
            segment = TranscriptSegment(V1_SEGMENT_ID, data.status, None, _naive_utc(data.createdAt),
                                        _float(data.duration), _dialogue(data.dialogue))
            return Transcript(call_id, (segment,), _json_hash(raw)), raw

        started = self.clock.monotonic()
        try:
            return self._get("/v1/call-transcripts/" + call_id, {}, parse, max_wait=max_wait)
        except AuthError as exc:
            return _plan_refused(what, exc, self._ms(started))

    def list_call_transcripts(self, call_id: str, *, max_wait: float | None = None,
                              page_size: int = 50) -> ApiResult[Transcript]:
        """2026-03-30 ``GET /calls/{callId}/transcripts``, every page (``limit`` ≤ 50, cursor ``after``).

        One transcript per recording segment, oldest first.  A later page that
        answers 400/404 (its short-lived cursor expired) makes the whole answer
        transient: the call's pages are asked again on the next attempt.
        """
        what = f"GET /calls/{call_id[:80]}/transcripts"
        if not is_valid_call_id(call_id):
            return _malformed(what)
        started = self.clock.monotonic()
        give_up_at = None if max_wait is None else started + max_wait
        segments: list[TranscriptSegment] = []
        raws: list[Any] = []
        cursor: str | None = None
        tries = 0

        def answer(kind: Kind, http_status: int | None, **extra: Any) -> ApiResult[Transcript]:
            return ApiResult(what=what, kind=kind, http_status=http_status, tries=tries,
                             latency_ms=self._ms(started), **extra)

        for page_number in range(_MAX_TRANSCRIPT_PAGES):
            params: dict[str, Any] = {"limit": max(1, min(page_size, 50))}
            if cursor:
                params["after"] = cursor
            left = None if give_up_at is None else max(0.0, give_up_at - self.clock.monotonic())
            try:
                page = self._get(f"/calls/{call_id}/transcripts", params, _whole(TranscriptPage), max_wait=left,
                                 dated=True)
            except AuthError as exc:
                return _plan_refused(what, exc, self._ms(started))
            except NotSent:
                if page_number == 0:
                    raise
                return answer("transient", None, error="stopped before the last page of transcripts")
            tries += page.tries
            if page.kind != "ok" or page.data is None:
                return answer(page.kind if page_number == 0 else "transient", page.http_status,
                              error=page.error, retry_after=page.retry_after)
            for item, raw in zip(page.data.data, page.raw.get("data", []), strict=False):
                segments.append(TranscriptSegment(
                    item.recordingId, item.status, _naive_utc(item.startTime), _naive_utc(item.createdAt),
                    _float(item.duration), _dialogue(item.dialogue)))
                raws.append(raw)
            cursor = page.data.nextCursor
            if not cursor:
                break
        else:
            return answer("rejected", 200, error=f"more than {_MAX_TRANSCRIPT_PAGES} pages of transcripts")
        segments.sort(key=lambda s: (s.started_at is None, s.started_at or datetime.min))
        return answer("ok", 200, data=Transcript(call_id, tuple(segments), _json_hash(raws)), raw=raws)


_MAX_TRANSCRIPT_PAGES = 100


def _plan_refused(what: str, exc: AuthError, latency_ms: float) -> ApiResult[Transcript]:
    """A 403 on a transcript: the plan has no transcripts (an answer for this call); a 401 still ends the run."""
    if exc.http_status != 403:
        raise exc
    return ApiResult(what=what, kind="invalid", http_status=403, tries=1, latency_ms=latency_ms, error=str(exc))


def _malformed(what: str) -> ApiResult[Transcript]:
    """Never build a URL from an unvalidated id (path injection)."""
    return ApiResult(what=what, kind="invalid", http_status=None, tries=0, latency_ms=0.0, error="malformed call id")


def _naive_utc(value: datetime | None) -> datetime | None:
    if value is None or value.tzinfo is None:
        return value
    return value.astimezone(UTC).replace(tzinfo=None)


def _float(value: float | None) -> float | None:
    return None if value is None else float(value)


def _dialogue(lines: list[DialogueData] | None) -> tuple[DialogueLine, ...] | None:
    if lines is None:
        return None
    return tuple(DialogueLine(d.content, float(d.start), float(d.end), d.identifier,
                              d.userId if d.userId is not None else d.actorId) for d in lines)


def _json_hash(raw: Any) -> str:
    """SHA-256 of the answer's JSON with keys sorted: the same transcript hashes alike whatever the paging."""
    text = json.dumps(raw, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()


def _webhook_id(webhook_id: str) -> str:
    """``webhook_id`` if it can go into a URL path; never build a URL from anything else (path injection)."""
    if not webhook_id.isalnum():
        raise EtlError(f"not a webhook id: {webhook_id[:80]!r}")
    return webhook_id


def _validate(body: bytes) -> SummaryData:
    """Validate a 200 body against the published schema.

    pydantic's fast JSON parser refuses lone surrogate escapes (``"\\ud800"``)
    that the JSON grammar allows; such a body is parsed by the standard library
    instead and validated by the same strict models (normalisation then stores
    U+FFFD for the surrogate, raw_json keeps the escape).
    """
    try:
        return SummaryEnvelope.model_validate_json(body).data
    except ValidationError as exc:
        if not any(e["type"] == "json_invalid" for e in exc.errors()):
            raise
        try:
            parsed = json.loads(body)
        except ValueError:
            raise exc from None
        return SummaryEnvelope.model_validate(parsed).data


def dated_answer(call: DatedCall, raw_call: Any) -> SummaryAnswer:
    """A dated call's summary as a :class:`SummaryAnswer` (``raw_call``: the call object's JSON).

    ``raw_json`` is the ``summary`` object as received; the call's own JSON
    (``call_json``) leaves the summary out, so a summary that moves from
    in-progress to completed does not rewrite its call.  Used for the answer
    of ``GET /calls/{id}`` and for each call of a ``GET /calls`` page alike.
    """
    assert call.summary is not None
    summary_json = call_json(raw_call.get("summary"))
    return SummaryAnswer(
        call_id=call.id, summary=call.summary, raw_json=summary_json,
        content_hash=hashlib.sha256(summary_json.encode("utf-8", "surrogatepass")).hexdigest(),
        call=call, call_json=call_json({k: v for k, v in raw_call.items() if k != "summary"}),
        absent_is_final=True,
    )


def _first_error(exc: ValidationError) -> str:
    errors = exc.errors(include_url=False, include_input=False)
    if not errors:
        return str(exc)[:_MAX_ERROR_TEXT]
    first = errors[0]
    where = ".".join(str(p) for p in first.get("loc", ())) or "body"
    more = f" (+{len(errors) - 1} more)" if len(errors) > 1 else ""
    return f"{where}: {first.get('msg', '')}{more}"[:_MAX_ERROR_TEXT]


class _StopBeforeGiveUp(stop_base):
    """tenacity's ``stop_before_delay`` on the client's clock, with each call's own limit.

    Stops when the next wait would end after the call's ``give_up_at`` keyword
    (a :meth:`Clock.monotonic` time; None: no limit).
    """

    def __init__(self, clock: Clock) -> None:
        self.clock = clock

    def __call__(self, retry_state: RetryCallState) -> bool:
        give_up_at = retry_state.kwargs.get("give_up_at")
        if give_up_at is None:
            return False
        return bool(self.clock.monotonic() + retry_state.upcoming_sleep >= give_up_at)
