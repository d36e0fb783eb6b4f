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
import time
from datetime import UTC, datetime

import httpx
from pydantic import ValidationError
from tenacity import (
    RetryCallState,
    Retrying,
    retry_if_result,
    stop_after_attempt,
    stop_before_delay,
    stop_when_event_set,
    wait_random_exponential,
)
from tenacity.stop import stop_base

from etl import __version__
from etl.config import Settings
from etl.errors import AuthError
from etl.ids import is_valid_call_id
from etl.ratelimit import LocalBudget, NotSent, RateBudget
from etl.results import FetchResult, Kind
from etl.schema import SummaryData, SummaryEnvelope

__all__ = ["USER_AGENT", "FetchResult", "NotSent", "OpenPhoneClient", "parse_retry_after"]

USER_AGENT = f"openphone-summary-sync/{__version__} (+httpx/{httpx.__version__})"
_MAX_ERROR_TEXT = 300

def parse_retry_after(value: str | None, now: datetime | None = None) -> float | None:
    """Seconds to wait from a ``Retry-After`` header, or None to use our own backoff.

    Accepts delta-seconds or an HTTP date; missing, unparsable, zero or negative
    values give None so that a bad header never causes an instant retry loop.
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
        seconds = (when - (now or datetime.now(UTC))).total_seconds()
    if seconds != seconds or seconds <= 0:  # NaN or not in the future
        return None
    return min(seconds, 3600.0)


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
    """Fetches call summaries from any number of threads at once.

    Requests go through httpx's synchronous transport: measured on this
    project's workload, that costs about half the CPU per request of httpx's
    async path, whose pool and anyio layers dominate at these speeds.
    """

    def __init__(self, settings: Settings, *, transport: httpx.BaseTransport | None = None,
                 budget: RateBudget | None = None, stop: threading.Event | None = None) -> None:
        """``stop`` is the run's stop signal: once set, no new request (first or retry) is sent."""
        if not settings.api_key:
            raise ValueError("an API key is required")
        self.settings = settings
        self.budget: RateBudget = budget if budget is not None else LocalBudget(settings.rate)
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
            stop=stop_after_attempt(settings.retry_attempts) | _stop_before_max_wait | stop_when_event_set(self.stop),
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
        started = time.perf_counter()
        give_up_at = None if max_wait is None else time.monotonic() + max_wait
        sent: list[FetchResult] = []
        try:
            result: FetchResult = self._retrying(self._attempt, call_id, started, give_up_at, sent,
                                                 max_wait=max_wait)
        except NotSent:
            if not sent:
                raise
            result = sent[-1]
        return result

    def _attempt(self, call_id: str, started: float, give_up_at: float | None, sent: list[FetchResult],
                 *, max_wait: float | None) -> FetchResult:
        """One try: a rate slot, then the request."""
        left = None if give_up_at is None else max(0.0, give_up_at - time.monotonic())
        self.budget.acquire(max_wait=left, stop=self.stop)
        result = self._request(call_id, started, len(sent) + 1)
        sent.append(result)
        if result.http_status == 429:
            self.budget.penalize(result.retry_after)
        return result

    def _sleep(self, seconds: float) -> None:
        """tenacity's sleep between tries, cut short by a stop (the next try then is not sent)."""
        self.stop.wait(seconds)

    def _wait(self, state: RetryCallState) -> float:
        """Exponential backoff with full jitter, but never sooner than ``Retry-After``."""
        delay = self._backoff(state)
        result = state.outcome.result() if state.outcome and not state.outcome.failed else None
        if result is not None and result.retry_after:
            delay = max(delay, result.retry_after)
        return float(delay)

    def _request(self, call_id: str, started: float, tries: int) -> FetchResult:
        """One request: send, classify.  Raises only :class:`AuthError`."""
        def transient(message: str, status: int | None = None, retry_after: float | None = None) -> FetchResult:
            return FetchResult(call_id, "transient", status, tries, _ms(started),
                               error=message[:_MAX_ERROR_TEXT], retry_after=retry_after)

        request = httpx.Request("GET", self._url_prefix + call_id, headers=self._headers,
                                extensions=self._extensions)
        try:
            response = self._transport.handle_request(request)
        except httpx.TimeoutException as exc:
            return transient(f"timeout ({type(exc).__name__})")
        except httpx.TransportError as exc:
            return transient(f"connection error ({type(exc).__name__}: {exc})")
        try:
            body = self._read_body(response)
        except httpx.TimeoutException as exc:
            return transient(f"timeout reading body ({type(exc).__name__})", response.status_code)
        except httpx.TransportError as exc:
            return transient(f"connection error reading body ({type(exc).__name__})", response.status_code)
        finally:
            response.close()
        status = response.status_code
        response.request = request
        if body is None:
            return FetchResult(call_id, "rejected", status, tries, _ms(started),
                               error=f"response body larger than {self.settings.max_body_bytes} bytes")
        if status == 200:
            return self._parse_ok(call_id, body, started, tries)
        if status in (401, 403):
            raise AuthError(status, _error_text(response, body, self.settings.api_key))
        if status in (404, 400):
            kind: Kind = "not_found" if status == 404 else "invalid"
            error = _error_text(response, body, self.settings.api_key)
            return FetchResult(call_id, kind, status, tries, _ms(started), error=error)
        retry_after = parse_retry_after(response.headers.get("Retry-After"))
        return transient(_error_text(response, body, self.settings.api_key), status, retry_after)

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
            return FetchResult(call_id, "transient", 200, tries, _ms(started), error=message[:_MAX_ERROR_TEXT])

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
            call_id, "summary", 200, tries, _ms(started), summary=data, raw_json=raw,
            content_hash=hashlib.sha256(body).hexdigest(),
        )


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


class _StopBeforeMaxWait(stop_base):
    """``stop_before_delay`` with each call's own limit (its ``max_wait`` keyword)."""

    def __call__(self, retry_state: RetryCallState) -> bool:
        limit = retry_state.kwargs.get("max_wait")
        if limit is None:
            return False
        return bool(stop_before_delay(limit)(retry_state))


_stop_before_max_wait = _StopBeforeMaxWait()


def _ms(started: float) -> float:
    return round((time.perf_counter() - started) * 1000, 1)
