"""The OpenPhone API client: ``fetch_summary(call_id) -> FetchResult``.

HTTP lives here and only here.  One :class:`OpenPhoneClient` per run holds the
connection pool (an httpx transport, called from the sync engine's fetch
threads); the transport is injectable, so tests and ``etl demo`` hand in a
simulated API and everything above this module is the real code.

Per-id outcomes are values, not exceptions: a :class:`etl.results.FetchResult`
says which row of docs/contract.md's queue table applies.  The one exception that escapes is
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
from typing import Any, Generic, Literal, Protocol, TypeVar

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
from etl.config import Settings
from etl.errors import AuthError, EtlError
from etl.ids import is_valid_call_id
from etl.ratelimit import LocalBudget, NotSent, RateBudget
from etl.results import FetchResult, Kind
from etl.schema import (
    CallData,
    CallEnvelope,
    CallList,
    ConversationList,
    PhoneNumberList,
    SummaryData,
    SummaryEnvelope,
)

__all__ = ["USER_AGENT", "ApiResult", "FetchResult", "NotSent", "OpenPhoneClient", "api_time", "parse_retry_after"]

USER_AGENT = f"openphone-summary-sync/{__version__} (+httpx/{httpx.__version__})"
_MAX_ERROR_TEXT = 300

ResourceKind = Literal["ok", "not_found", "invalid", "transient", "rejected"]
_M = TypeVar("_M")
_P = TypeVar("_P", bound=BaseModel)


class _Answer(Protocol):
    """What the retry loop reads of any one try's result."""

    @property
    def kind(self) -> str: ...
    @property
    def http_status(self) -> int | None: ...
    @property
    def retry_after(self) -> float | None: ...


_R = TypeVar("_R", bound=_Answer)


@dataclass(frozen=True, slots=True)
class ApiResult(Generic[_M]):
    """What the API answered for one request of the calls, lines and conversations endpoints.

    kind: ``ok`` (a valid 200: ``data`` is the parsed model, ``raw`` its JSON),
    ``not_found`` (404), ``invalid`` (400), ``transient`` (retries exhausted),
    ``rejected`` (the body is over the size limit).
    """

    what: str
    kind: ResourceKind
    http_status: int | None
    tries: int
    latency_ms: float
    data: _M | None = None
    raw: Any = None
    error: str | None = None
    retry_after: float | None = None


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


def _whole(model: type[_P]) -> Callable[[Any], tuple[_P, Any]]:
    def parse(body: Any) -> tuple[_P, Any]:
        return model.model_validate(body), body

    return parse

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
    if secret:
        text = text.replace(secret, "***")
    return " ".join(text.split())[:_MAX_ERROR_TEXT]


class OpenPhoneClient:
    """Fetches call summaries, calls and workspace lists from any number of threads at once.

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
        self._url_prefix = settings.base_url.rstrip("/") + "/v1/call-summaries/"
        self._headers = httpx.Headers({
            "Authorization": settings.api_key,
            "User-Agent": USER_AGENT,
            "Accept": "application/json",
            "Accept-Encoding": "gzip, deflate",
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

    def fetch_summary(self, call_id: str, *, max_wait: float | None = None) -> FetchResult:
        """Fetch one summary, retrying transient failures within ``max_wait`` seconds.

        Raises :class:`AuthError` on 401/403, and :class:`NotSent` when the
        first request could not even be sent (the run is stopping, or no rate
        slot came in time); every other answer is a result.  A retry that
        cannot be sent (stopping, out of time) leaves the last answer standing.
        """
        if not is_valid_call_id(call_id):
            # Never build a URL from an unvalidated id (path injection).
            return FetchResult(call_id, "invalid", None, 0, 0.0, error="malformed call id")
        started = self.clock.monotonic()
        return self._call(lambda tries: self._summary_try(call_id, started, tries), max_wait)

    def _call(self, one_try: Callable[[int], _R], max_wait: float | None) -> _R:
        """Run ``one_try(tries)`` under the budget, retrying transient answers within ``max_wait``."""
        give_up_at = None if max_wait is None else self.clock.monotonic() + max_wait
        sent: list[_R] = []
        try:
            result: _R = self._retrying(self._attempt, one_try, sent, give_up_at=give_up_at)
        except NotSent:
            if not sent:
                raise
            result = sent[-1]
        return result

    def _attempt(self, one_try: Callable[[int], _R], sent: list[_R], *, give_up_at: float | None) -> _R:
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
        try:
            response = self._transport.handle_request(request)
        except httpx.TimeoutException as exc:
            raise _Transient(f"timeout ({type(exc).__name__})") from None
        except httpx.TransportError as exc:
            raise _Transient(f"connection error ({type(exc).__name__}: {exc})") from None
        try:
            body = self._read_body(response)
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

    def _summary_try(self, call_id: str, started: float, tries: int) -> FetchResult:
        """One request for a summary, classified.  Raises only :class:`AuthError`."""
        request = httpx.Request("GET", self._url_prefix + call_id, headers=self._headers,
                                extensions=self._extensions)
        try:
            reply = self._exchange(request)
        except _Transient as exc:
            return FetchResult(call_id, "transient", exc.http_status, tries, self._ms(started),
                               error=exc.message, retry_after=exc.retry_after)
        if reply.body is None:
            return FetchResult(call_id, "rejected", reply.status, tries, self._ms(started),
                               error=f"response body larger than {self.settings.max_body_bytes} bytes")
        if reply.status == 200:
            return self._parse_ok(call_id, reply.body, started, tries)
        kind: Kind = "not_found" if reply.status == 404 else "invalid"
        return FetchResult(call_id, kind, reply.status, tries, self._ms(started), error=reply.error)

    def _ms(self, started: float) -> float:
        return round((self.clock.monotonic() - started) * 1000, 1)

    def _read_body(self, response: httpx.Response) -> bytes | None:
        limit = self.settings.max_body_bytes
        declared = response.headers.get("Content-Length")
        # A compressed body's Content-Length says nothing about its decoded size.
        if declared is not None and declared.isdigit() and "Content-Encoding" not in response.headers:
            if int(declared) > limit:
                return None
            return response.read()
        chunks: list[bytes] = []
        size = 0
        for chunk in response.iter_bytes():
            size += len(chunk)
            if size > limit:
                return None
            chunks.append(chunk)
        return b"".join(chunks)

    def _parse_ok(self, call_id: str, body: bytes, started: float, tries: int) -> FetchResult:
        def transient(message: str) -> FetchResult:
            return FetchResult(call_id, "transient", 200, tries, self._ms(started), error=message[:_MAX_ERROR_TEXT])

        try:
            raw = body.decode("utf-8")
            data = _validate(body)
        except UnicodeDecodeError:
            return transient("200 with a body that is not UTF-8")
        except ValidationError as exc:
            return transient(f"200 with a body that violates the schema: {_first_error(exc)}")
        if data.callId != call_id:
            return transient(f"200 for another call id ({data.callId[:80]!r})")
        return FetchResult(
            call_id, "summary", 200, tries, self._ms(started), summary=data, raw_json=raw,
            content_hash=hashlib.sha256(body).hexdigest(),
        )

    # --- calls, phone numbers, conversations -----------------------------------------
    #
    # The same path as summaries (_call: budget, retries; _exchange: request,
    # classification, body limit); per-request outcomes are ApiResult values.

    def get_call(self, call_id: str, *, max_wait: float | None = None) -> ApiResult[CallData]:
        """``GET /v1/calls/{callId}``: the call's context; ``raw`` is the call object."""
        if not is_valid_call_id(call_id):
            return ApiResult(f"GET /v1/calls/{call_id[:80]}", "invalid", None, 0, 0.0, error="malformed call id")

        def parse(body: Any) -> tuple[CallData, Any]:
            call = CallEnvelope.model_validate(body).data
            if call.id != call_id:
                raise _Transient(f"200 for another call id ({call.id[:80]!r})", 200)
            return call, body["data"]

        return self._get_resource("/v1/calls/" + call_id, {}, parse, max_wait=max_wait)

    def list_phone_numbers(self, page_token: str | None = None) -> ApiResult[PhoneNumberList]:
        """``GET /v1/phone-numbers``: the workspace's lines."""
        params = {"pageToken": page_token} if page_token else {}
        return self._get_resource("/v1/phone-numbers", params, _whole(PhoneNumberList))

    def list_conversations(self, phone_number_id: str, updated_after: datetime | None,
                           page_token: str | None = None, *, max_results: int = 100) -> ApiResult[ConversationList]:
        """One page of ``GET /v1/conversations`` for one line, updated after ``updated_after``."""
        params: dict[str, Any] = {"phoneNumbers[]": phone_number_id, "maxResults": max_results}
        if updated_after is not None:
            params["updatedAfter"] = api_time(updated_after)
        if page_token:
            params["pageToken"] = page_token
        return self._get_resource("/v1/conversations", params, _whole(ConversationList))

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
        return self._get_resource("/v1/calls", params, _whole(CallList))

    def _get_resource(self, path: str, params: dict[str, Any], parse: Callable[[Any], tuple[_M, Any]], *,
                      max_wait: float | None = None) -> ApiResult[_M]:
        request = httpx.Request("GET", self.settings.base_url.rstrip("/") + path, params=params,
                                headers=self._headers, extensions=self._extensions)
        started = self.clock.monotonic()
        return self._call(lambda tries: self._resource_try(f"GET {path}", request, parse, started, tries), max_wait)

    def _resource_try(self, what: str, request: httpx.Request, parse: Callable[[Any], tuple[_M, Any]],
                      started: float, tries: int) -> ApiResult[_M]:
        """One request for a resource, classified.  Raises only :class:`AuthError`."""
        try:
            reply = self._exchange(request)
            if reply.body is None:
                return ApiResult(what, "rejected", reply.status, tries, self._ms(started),
                                 error=f"response body larger than {self.settings.max_body_bytes} bytes")
            if reply.status != 200:
                kind: ResourceKind = "not_found" if reply.status == 404 else "invalid"
                return ApiResult(what, kind, reply.status, tries, self._ms(started), error=reply.error)
            try:
                data, raw = parse(json.loads(reply.body))
            except UnicodeDecodeError:
                raise _Transient("200 with a body that is not UTF-8", 200) from None
            except ValidationError as exc:
                raise _Transient(f"200 with a body that violates the schema: {_first_error(exc)}", 200) from None
            except ValueError:
                raise _Transient("200 with a body that is not JSON", 200) from None
        except _Transient as exc:
            return ApiResult(what, "transient", exc.http_status, tries, self._ms(started),
                             error=exc.message, retry_after=exc.retry_after)
        return ApiResult(what, "ok", 200, tries, self._ms(started), data=data, raw=raw)

    # --- webhooks: `etl webhooks register|list|delete` (etl/webhooks/manage.py) -----

    def create_webhook(self, resource: Literal["calls", "call-summaries"], url: str, events: list[str],
                       label: str | None = None) -> dict[str, Any]:
        """``POST /v1/webhooks/{resource}``; the answer's ``data`` (its ``key`` is the signing secret)."""
        body: dict[str, Any] = {"url": url, "events": events, "resourceIds": ["*"], "status": "enabled"}
        if label:
            body["label"] = label
        data = self._webhook_call("POST", f"/v1/webhooks/{resource}", body)
        if not isinstance(data, dict):
            raise EtlError(f"POST /v1/webhooks/{resource}: the answer has no webhook in data")
        return data

    def list_webhooks(self) -> list[dict[str, Any]]:
        """``GET /v1/webhooks``: the webhooks this key's workspace has."""
        data = self._webhook_call("GET", "/v1/webhooks")
        return [w for w in data if isinstance(w, dict)] if isinstance(data, list) else []

    def delete_webhook(self, webhook_id: str) -> None:
        """``DELETE /v1/webhooks/{id}``."""
        if not webhook_id.isalnum():
            # Never build a URL from an unvalidated id (path injection).
            raise EtlError(f"not a webhook id: {webhook_id[:80]!r}")
        self._webhook_call("DELETE", f"/v1/webhooks/{webhook_id}")

    def _webhook_call(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        """One management request (no retries: a person runs these and sees the error)."""
        headers = self._headers.copy()
        content = None
        if body is not None:
            content = json.dumps(body).encode()
            headers["Content-Type"] = "application/json"
        request = httpx.Request(method, self.settings.base_url.rstrip("/") + path, headers=headers,
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
