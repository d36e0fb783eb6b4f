"""Logging: one :func:`configure_logging`, console on a terminal, JSON lines otherwise.

On a terminal a line is for a person: the event and its outcome first and
short (``done       AC123  200  12ms``), the level only when it is not info,
colour unless ``NO_COLOR`` is set or stderr is not a terminal.  Under cron the
JSON lines carry every field.  :func:`call_log_level` decides the level of a
call line from its outcome, so warnings mean "transient, retried" and errors
mean "refused" whatever the format.

The commands log through structlog to stderr (stdout stays free for command
output such as ``etl status --json``); the package used as a library logs to
the standard library logger ``etl`` unless the caller configured structlog
(:func:`get_logger`), and configures nothing on import.  Two safety nets keep secrets out of the
logs whatever a caller passes: the API key is replaced wherever it appears in
an event, and httpx/httpcore's own loggers (which would print request headers
at DEBUG) are held at WARNING.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, Literal, TextIO, cast

import structlog
from structlog.typing import EventDict, WrappedLogger

from etl.config import redact_secret
from etl.storable import on_repair

LogFormat = Literal["auto", "console", "json"]

_secrets: list[str] = []
# While a progress bar owns the terminal, lines below this level are dropped.
_floor: list[int] = [0]

# ApiResult.kind values that are refusals of this id (the failed-type states of docs/contract.md).
_REFUSALS = frozenset({"not_found", "invalid", "rejected"})


def call_log_level(kind: str | None, state: str) -> str:
    """The level of a ``call`` line: ``kind`` is ApiResult.kind (None: no answer object), ``state`` the new state.

    * error: refusals (404 ``not_found``, 400 ``invalid``, a rejected body) and
      every item that ends in ``error`` (gave up, or an unexpected error);
    * warning: transient failures that survived the in-run retries (connection
      error, timeout, 5xx, 429) and summaries the API reports failed or absent
      for good;
    * info: done, and summaries rescheduled because they are still in progress
      or absent.
    """
    if state == "error" or kind is None or kind in _REFUSALS:
        return "error"
    if kind == "transient" or state in ("failed", "absent"):
        return "warning"
    return "info"


def run_end_level(exit_code: int) -> str:
    """The level of a run's last line (``run finished``, ``discovery finished``) from its exit code.

    0 ``info``; 1 (item errors, interrupted) ``warning``; 2 (usage) and 3 (the
    API refused the key) ``error``: a person must act before the next run.
    """
    return "info" if exit_code == 0 else "warning" if exit_code == 1 else "error"


class _BatchingStream:
    """stderr, except that inside :func:`batched` lines are joined into one write.

    A run logs one line per call; a write (and flush) per line was a visible
    share of the CPU per summary.  Batches are flushed as soon as they end, so
    a line is at most one database batch late.
    """

    def __init__(self, stream: TextIO) -> None:
        self.stream = stream
        self.pending: list[str] | None = None

    def write(self, text: str) -> int:
        if self.pending is not None:
            self.pending.append(text)
        else:
            self.stream.write(text)
        return len(text)

    def flush(self) -> None:
        if self.pending is None:
            self.stream.flush()


_stream: _BatchingStream | None = None


@contextmanager
def batched() -> Iterator[None]:
    """Group the log lines written inside into one write."""
    stream = _stream
    if stream is None or stream.pending is not None:
        yield
        return
    stream.pending = []
    try:
        yield
    finally:
        lines, stream.pending = stream.pending, None
        if lines:
            stream.stream.write("".join(lines))
            stream.stream.flush()


def _redact(_logger: WrappedLogger, _name: str, event: EventDict) -> EventDict:
    if not _secrets:
        return event
    for key, value in event.items():
        if isinstance(value, str):
            for secret in _secrets:
                value = redact_secret(value, secret)
            event[key] = value
    return event


def use_colour(stream: TextIO | None = None) -> bool:
    """Colour only on a terminal, and never when ``NO_COLOR`` is set (https://no-color.org)."""
    stream = stream or sys.stderr
    return stream.isatty() and not os.environ.get("NO_COLOR")


_COLOURS = {"warning": "\x1b[33m", "error": "\x1b[31;1m", "critical": "\x1b[31;1m", "debug": "\x1b[2m"}
_RESET = "\x1b[0m"
# Fields a person does not need on a terminal line (they stay in the JSON).
_HIDDEN = frozenset({"timestamp", "run_id", "api_status", "attempt", "tries", "exc_info"})


def _drop_below_floor(_logger: WrappedLogger, method: str, event: EventDict) -> EventDict:
    if _floor[0] and logging.getLevelNamesMapping().get(method.upper(), 100) < _floor[0]:
        raise structlog.DropEvent
    return event


class ConsoleLine:
    """Renders one event for a person: what happened first, details after, short."""

    def __init__(self, colours: bool) -> None:
        self.colours = colours

    def __call__(self, _logger: WrappedLogger, _name: str, event: EventDict) -> str:
        level = str(event.pop("level", "info"))
        text = str(event.pop("event", ""))
        exc = event.pop("exception", None)
        if text == "call":
            text = call_line(event)
        # A run without transcripts: its ten zero transcript counters would only widen the line.
        rest = " ".join(f"{k}={v}" for k, v in event.items() if k not in _HIDDEN and v is not None
                        and not (k.startswith("transcripts_") and v == 0))
        line = (f"{level.upper()} " if level != "info" else "") + text + (f"  {rest}" if rest else "")
        if exc:
            line += "\n" + str(exc)
        if self.colours and level in _COLOURS:
            line = _COLOURS[level] + line + _RESET
        return line


def call_line(event: EventDict) -> str:
    """``done AC123 200 12ms`` (the rate budget's wait when there was one, and the error, if any); pops the
    fields it shows."""
    outcome = event.pop("outcome", "?")
    call_id = event.pop("call_id", "?")
    status = event.pop("http_status", None)
    latency = event.pop("latency_ms", None)
    wait = event.pop("wait_ms", None)
    error = event.pop("error", None)
    parts = [f"{outcome:<9}", str(call_id), str(status) if status is not None else "-"]
    if latency is not None:
        parts.append(f"{latency:.0f}ms")
    if wait is not None and wait >= 1:
        parts.append(f"(+{wait:.0f}ms waiting for the rate budget)")
    if error:
        parts.append(f"— {error}")
    return " ".join(parts)


def configure_logging(fmt: LogFormat = "auto", level: str = "info", secrets: list[str] | None = None) -> None:
    """Configure structlog once per process (safe to call again, e.g. in tests)."""
    _secrets[:] = [s for s in (secrets or []) if s and len(s) >= 4]
    _floor[0] = 0
    use_json = fmt == "json" or (fmt == "auto" and not sys.stderr.isatty())
    renderer: Any = structlog.processors.JSONRenderer() if use_json else ConsoleLine(use_colour())
    structlog.configure(
        processors=[
            _drop_below_floor,
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            _redact,
            structlog.processors.format_exc_info,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(logging.getLevelNamesMapping()[level.upper()]),
        logger_factory=structlog.WriteLoggerFactory(file=_new_stream()),
        cache_logger_on_first_use=False,
    )
    for noisy in ("httpx", "httpcore", "hpack", "sqlalchemy", "alembic"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    # A connection cut by an outage fails its reset on return to the pool, which SQLAlchemy logs
    # with a traceback; the outage itself is already one line of ours (etl serve, sync).
    logging.getLogger("sqlalchemy.pool").setLevel(logging.CRITICAL)


class _Through:
    """A stream that hands whole lines to a function (e.g. ``tqdm.write``)."""

    def __init__(self, write: Callable[[str], object]) -> None:
        self._write = write

    def write(self, text: str) -> int:
        self._write(text.rstrip("\n"))
        return len(text)

    def flush(self) -> None:
        pass


@contextmanager
def redirected(write: Callable[[str], object], min_level: str = "warning") -> Iterator[None]:
    """Send log lines through ``write`` while a progress bar owns the terminal.

    Lines below ``min_level`` are dropped meanwhile: the bar already counts the
    calls, so only what needs a look (warnings, errors) is printed above it.
    """
    stream = _stream
    if stream is None:
        yield
        return
    original, floor = stream.stream, _floor[0]
    stream.stream = cast(TextIO, _Through(write))
    _floor[0] = max(floor, logging.getLevelNamesMapping()[min_level.upper()])
    try:
        yield
    finally:
        stream.stream = original
        _floor[0] = floor


def _new_stream() -> TextIO:
    global _stream
    _stream = _BatchingStream(sys.stderr)
    return cast(TextIO, _stream)


def keep_secret(value: str | None) -> None:
    """Scrub ``value`` (an API key) from every log line from now on, however logging is set up."""
    if value and len(value) >= 4 and value not in _secrets:
        _secrets.append(value)


def get_logger(**bind: Any) -> Any:
    """The ``etl`` logger: structlog as :func:`configure_logging` (or the caller) set it up.

    Used as a library (``etl.Etl`` in a notebook, Airflow, …) without
    structlog configured, lines go to the standard library's ``logging``
    logger ``etl`` instead, so the caller's logging decides where they go
    (unconfigured: warnings and errors on stderr, never stdout).  Nothing is
    configured on import.
    """
    if structlog.is_configured():
        return structlog.get_logger("etl").bind(**bind)
    return structlog.wrap_logger(
        logging.getLogger("etl"),
        # merge_contextvars: a run of several workspaces binds workspace=NAME to its thread (etl.fleet).
        processors=[structlog.stdlib.filter_by_level, structlog.contextvars.merge_contextvars, _redact,
                    ConsoleLine(colours=False)],
        wrapper_class=structlog.stdlib.BoundLogger,
    ).bind(**bind)


def _say_repair(kind: str) -> None:
    # Once per process and kind (etl.storable): the rows say the rest (U+FFFD, escaped raw_json).
    what = {"nul": "NUL characters", "surrogate": "unpaired surrogates (\\ud800-\\udfff)"}.get(kind, kind)
    get_logger().warning("unstorable text in an API answer made storable", what=what,
                         how="U+FFFD in text columns; escaped in raw_json")


on_repair(_say_repair)
