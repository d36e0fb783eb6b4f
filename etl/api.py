"""The OpenPhone API client: ``fetch_summary(call_id) -> FetchResult``.

HTTP lives here and only here.  One :class:`httpx.AsyncClient` per run holds
the connection pool; the transport is injectable, so tests and ``etl demo``
hand in a simulated API and everything above this module is the real code.

Per-id outcomes are values, not exceptions: a :class:`FetchResult` says which
row of SPEC.md's queue table applies.  The one exception that escapes is
:class:`etl.errors.AuthError` (401/403), because it ends the whole run.

Transient failures (429, 5xx, timeouts, dropped connections, bodies that are
not JSON or break the schema) are retried inside the run by tenacity with
exponential backoff and full jitter, honouring ``Retry-After``.
"""

from __future__ import annotations

import asyncio
import email.utils
import functools
import hashlib
import json
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal

import httpx
from pydantic import ValidationError
from tenacity import (
    RetryCallState,
    Retrying,
    retry_if_exception_type,
    stop_after_attempt,
    wait_random_exponential,
)

from etl import __version__
from etl.config import Settings
from etl.errors import AuthError, EtlError
from etl.ids import is_valid_call_id
from etl.ratelimit import Abandoned, AdaptiveLimiter
from etl.schema import SummaryData, SummaryEnvelope

USER_AGENT = f"openphone-summary-sync/{__version__} (+httpx/{httpx.__version__})"
_MAX_ERROR_TEXT = 300

Kind = Literal["summary", "not_found", "invalid", "transient", "rejected"]


@dataclass(frozen=True, slots=True)
class FetchResult:
    """What the API answered for one id, after in-run retries.

    kind: ``summary`` (a valid 200; see ``summary.status``), ``not_found``
    (404), ``invalid`` (400), ``transient`` (retries exhausted; reschedule),
    ``rejected`` (a permanent problem with this id's answer, e.g. too large).
    """

    call_id: str
    kind: Kind
    http_status: int | None
    tries: int
    latency_ms: float
    summary: SummaryData | None = None
    raw_json: str | None = None
    content_hash: str | None = None
    error: str | None = None
    retry_after: float | None = None

    @property
    def api_status(self) -> str:
        """Short text for ``summary_queue.last_api_status``."""
        if self.summary is not None:
            return self.summary.status
        if self.http_status is not None:
            return f"http {self.http_status}"
        return "no response"


class NotSent(Exception):
    """The first request for an id was never sent (run stopping, or no rate slot in time)."""


class TransientError(Exception):
    """One try failed in a way worth retrying."""

    def __init__(self, message: str, http_status: int | None = None,
                 retry_after: float | None = None) -> None:
        super().__init__(message)
        self.http_status = http_status
        self.retry_after = retry_after


class _Final(Exception):
    def __init__(self, result: FetchResult) -> None:
        self.result = result


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
    """Fetches call summaries: :meth:`fetch_summary_sync` from worker threads,
    or ``await`` :meth:`fetch_summary` from an event loop.

    Requests go through httpx's synchronous transport, called from threads:
    measured on this project's workload, that costs about half the CPU per
    request of httpx's async path, whose pool and anyio layers dominate at
    these speeds.  The rate limiter lives on an event loop (``loop``); threads
    reach it only when a throttle or a 429 pause is in force.
    """

    def __init__(self, settings: Settings, *, transport: httpx.BaseTransport | None = None,
                 limiter: AdaptiveLimiter | None = None,
                 loop: asyncio.AbstractEventLoop | None = None) -> None:
        if not settings.api_key:
            raise ValueError("an API key is required")
        self.settings = settings
        self.limiter = limiter or AdaptiveLimiter(settings.rate)
        self.loop = loop
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
        self._io: ThreadPoolExecutor | None = None

    async def __aenter__(self) -> OpenPhoneClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        self.close()

    def close(self) -> None:
        if self._io is not None:
            self._io.shutdown(wait=False, cancel_futures=True)
        self._transport.close()

    async def fetch_summary(self, call_id: str, *, max_wait: float | None = None) -> FetchResult:
        """:meth:`fetch_summary_sync` on a thread, for callers on an event loop."""
        loop = asyncio.get_running_loop()
        self.loop = self.loop or loop
        if self._io is None:
            self._io = ThreadPoolExecutor(max_workers=self.settings.concurrency, thread_name_prefix="etl-http")
        return await loop.run_in_executor(
            self._io, functools.partial(self.fetch_summary_sync, call_id, max_wait=max_wait))

    def fetch_summary_sync(self, call_id: str, *, max_wait: float | None = None,
                           stop: threading.Event | None = None) -> FetchResult:
        """Fetch one summary, retrying transient failures within ``max_wait`` seconds.

        Raises :class:`AuthError` on 401/403, and :class:`NotSent` when the
        first request could not even be sent (``stop`` is set, or no rate slot
        came in time); every other answer is a result.
        """
        if not is_valid_call_id(call_id):
            # Never build a URL from an unvalidated id (path injection).
            return FetchResult(call_id, "invalid", None, 0, 0.0, error="malformed call id")
        started = time.perf_counter()
        budget_end = None if max_wait is None else time.monotonic() + max_wait
        try:
            # Most requests succeed at once; tenacity only takes over for retries.
            return self._try(call_id, started, 1, budget_end)
        except Abandoned as exc:
            raise NotSent(str(exc)) from None
        except TransientError as exc:
            last_error = exc
        except _Final as final:
            return final.result
        stop_event = stop or threading.Event()

        def sleep(seconds: float) -> None:
            if stop_event.wait(seconds):
                raise Abandoned("the run is stopping")

        retrying = Retrying(
            stop=stop_after_attempt(self.settings.retry_attempts),
            wait=self._make_wait(budget_end),
            retry=retry_if_exception_type(TransientError),
            reraise=True,
            sleep=sleep,
        )
        tries = 1
        try:
            for attempt in retrying:
                with attempt:
                    if attempt.retry_state.attempt_number == 1:
                        # Replay the first try's failure so tenacity schedules the retry.
                        raise last_error
                    number = attempt.retry_state.attempt_number
                    try:
                        return self._try(call_id, started, number, budget_end)
                    except TransientError as exc:
                        last_error, tries = exc, number
                        raise
        except (Abandoned, _GiveUp, TransientError):
            pass  # out of tries, of time, or stopping: the last sent try's error stands
        except _Final as final:
            return final.result
        return FetchResult(
            call_id, "transient", last_error.http_status, tries, _ms(started),
            error=str(last_error)[:_MAX_ERROR_TEXT], retry_after=last_error.retry_after,
        )

    def _make_wait(self, budget_end: float | None) -> Callable[[RetryCallState], float]:
        backoff = wait_random_exponential(
            multiplier=self.settings.retry_initial, max=self.settings.retry_max
        )

        def wait(state: RetryCallState) -> float:
            exc = state.outcome.exception() if state.outcome else None
            delay = backoff(state)
            retry_after = getattr(exc, "retry_after", None)
            if retry_after:
                delay = max(delay, retry_after)
            if budget_end is not None and time.monotonic() + delay > budget_end:
                # Waiting would outlive this item's lease: give up for this run
                # and let the queue reschedule it.
                raise _GiveUp
            return float(delay)

        return wait

    def _try(self, call_id: str, started: float, tries: int, budget_end: float | None) -> FetchResult:
        """One request: wait for a rate slot (if any throttle applies), send, classify."""
        limiter, loop = self.limiter, self.loop
        if limiter.engaged():
            if loop is None or loop.is_closed():
                raise Abandoned("no event loop for the rate limiter")
            asyncio.run_coroutine_threadsafe(limiter.acquire(until=budget_end), loop).result()
        try:
            result = self._fetch_sync(call_id, started, tries)
        except TransientError as exc:
            if exc.http_status == 429 and loop is not None and not loop.is_closed():
                loop.call_soon_threadsafe(limiter.penalize, exc.retry_after)
            raise
        if result.http_status == 200 and limiter.recovering() and loop is not None and not loop.is_closed():
            loop.call_soon_threadsafe(limiter.succeeded)
        return result

    def _fetch_sync(self, call_id: str, started: float, tries: int) -> FetchResult:
        """One request, on an I/O thread.  Returns a result or raises what ends this try."""
        request = httpx.Request("GET", self._url_prefix + call_id, headers=self._headers,
                                extensions=self._extensions)
        try:
            response = self._transport.handle_request(request)
        except httpx.TimeoutException as exc:
            raise TransientError(f"timeout ({type(exc).__name__})") from None
        except httpx.TransportError as exc:
            raise TransientError(f"connection error ({type(exc).__name__}: {exc})") from None
        try:
            body = self._read_body(response)
        except httpx.TimeoutException as exc:
            raise TransientError(f"timeout reading body ({type(exc).__name__})", response.status_code) from None
        except httpx.TransportError as exc:
            message = f"connection error reading body ({type(exc).__name__})"
            raise TransientError(message, response.status_code) from None
        finally:
            response.close()
        status = response.status_code
        response.request = request
        if body is None:
            raise _Final(FetchResult(
                call_id, "rejected", status, tries, _ms(started),
                error=f"response body larger than {self.settings.max_body_bytes} bytes",
            ))
        if status == 200:
            return self._parse_ok(call_id, body, started, tries)
        if status in (401, 403):
            raise AuthError(status, _error_text(response, body, self.settings.api_key))
        if status in (404, 400):
            kind: Kind = "not_found" if status == 404 else "invalid"
            error = _error_text(response, body, self.settings.api_key)
            return FetchResult(call_id, kind, status, tries, _ms(started), error=error)
        retry_after = parse_retry_after(response.headers.get("Retry-After"))
        raise TransientError(_error_text(response, body, self.settings.api_key), status, retry_after)

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
        try:
            raw = body.decode("utf-8")
            data = _validate(body)
        except UnicodeDecodeError:
            raise TransientError("200 with a body that is not UTF-8", 200) from None
        except ValidationError as exc:
            raise TransientError(f"200 with a body that violates the schema: {_first_error(exc)}", 200) from None
        if data.callId != call_id:
            raise TransientError(f"200 for another call id ({data.callId[:80]!r})", 200)
        return FetchResult(
            call_id, "summary", 200, tries, _ms(started), summary=data, raw_json=raw,
            content_hash=hashlib.sha256(body).hexdigest(),
        )


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


class _GiveUp(Exception):
    """Raised from the wait function: stop retrying now; the last error stands."""


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


def _ms(started: float) -> float:
    return round((time.perf_counter() - started) * 1000, 1)
