"""The wire below every surface: reading one HTTP answer into a value or a reason to retry (no I/O of its own).

What a request's answer means does not depend on the surface: a 401/403 ends
the run, 429 and 5xx and transport failures are worth another try, 400/404 are
answers about the thing asked for.  :class:`etl.api.OpenPhoneClient` sends;
this module classifies and words the errors.
"""

from __future__ import annotations

import email.utils
import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, TypeVar

import httpx
from pydantic import BaseModel, ValidationError
from tenacity import RetryCallState
from tenacity.stop import stop_base

from etl._version import __version__
from etl.clock import Clock
from etl.config import redact_secret
from etl.results import ApiResult

USER_AGENT = f"openphone-summary-sync/{__version__} (+httpx/{httpx.__version__})"
MAX_ERROR_TEXT = 300

M = TypeVar("M")
P = TypeVar("P", bound=BaseModel)
# Reads a 2xx body (bytes) into (parsed value, its JSON); raises ValidationError,
# ValueError (not JSON), UnicodeDecodeError or Transient (e.g. another call's id).
Parse = Callable[[bytes], tuple[M, Any]]


class Transient(Exception):
    """One try failed in a way worth retrying (a transport failure, 429, 5xx); never leaves a try."""

    def __init__(self, message: str, http_status: int | None = None, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.message = message[:MAX_ERROR_TEXT]
        self.http_status = http_status
        self.retry_after = retry_after


@dataclass(frozen=True, slots=True)
class Reply:
    """A final answer to one request: 2xx, 400, 404, or a body over the size limit (``body`` None)."""

    status: int
    body: bytes | None
    error: str | None  # the API's error text for a 400/404


def api_time(value: datetime) -> str:
    """A naive-UTC (or aware) datetime as the API's ISO 8601 UTC text, to the millisecond."""
    if value.tzinfo is not None:
        value = value.astimezone(UTC).replace(tzinfo=None)
    return value.isoformat(timespec="milliseconds") + "Z"


def whole(model: type[P]) -> Parse[P]:
    """A parser of a body that is ``model`` as a whole."""
    def parse(body: bytes) -> tuple[P, Any]:
        raw = json.loads(body)
        return model.model_validate(raw), raw

    return parse


def parse_retry_after(value: str | None, now: datetime) -> float | None:
    """Seconds to wait from a ``Retry-After`` header, or None to use our own backoff.

    Accepts delta-seconds or an HTTP date; missing, unparsable, zero or negative
    values give None so that a bad header never causes an instant retry loop.
    ``now`` (naive UTC or aware) is what an HTTP date is measured from.
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
        if now.tzinfo is None:
            now = now.replace(tzinfo=UTC)
        seconds = (when - now).total_seconds()
    if seconds != seconds or seconds <= 0:  # NaN or not in the future
        return None
    return min(seconds, 3600.0)


def is_api_error(body: bytes) -> bool:
    """The body is the API's error document: a JSON object with a ``message`` (docs/api/)."""
    try:
        parsed = json.loads(body)
    except ValueError:
        return False
    return isinstance(parsed, dict) and isinstance(parsed.get("message"), str)


def error_text(response: httpx.Response, body: bytes, secret: str | None = None) -> str:
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
    return redact_secret(" ".join(text.split()), secret)[:MAX_ERROR_TEXT]


_CONNECTION_DETAIL = re.compile(r"^(connection error \(\w+): .*\)$", re.DOTALL)


def brief_error(error: str) -> str:
    """An error for a person at a terminal: a connection error without the library's detail."""
    return _CONNECTION_DETAIL.sub(r"\1)", error)


def first_error(exc: ValidationError) -> str:
    errors = exc.errors(include_url=False, include_input=False)
    if not errors:
        return str(exc)[:MAX_ERROR_TEXT]
    first = errors[0]
    where = ".".join(str(p) for p in first.get("loc", ())) or "body"
    more = f" (+{len(errors) - 1} more)" if len(errors) > 1 else ""
    return f"{where}: {first.get('msg', '')}{more}"[:MAX_ERROR_TEXT]


def malformed(what: str) -> ApiResult[Any]:
    """Never build a URL from an unvalidated id (path injection)."""
    return ApiResult(what=what, kind="invalid", http_status=None, tries=0, latency_ms=0.0, error="malformed call id")


class StopBeforeGiveUp(stop_base):
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
