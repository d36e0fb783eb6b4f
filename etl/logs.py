"""Logging: one :func:`configure_logging`, console on a terminal, JSON lines otherwise.

Everything logs through structlog to stderr (stdout stays free for command
output such as ``etl status --json``).  Two safety nets keep secrets out of the
logs whatever a caller passes: the API key is replaced wherever it appears in
an event, and httpx/httpcore's own loggers (which would print request headers
at DEBUG) are held at WARNING.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, Literal, TextIO, cast

import structlog
from structlog.typing import EventDict, WrappedLogger

LogFormat = Literal["auto", "console", "json"]

_secrets: list[str] = []


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
                if secret in value:
                    value = value.replace(secret, "***")
            event[key] = value
    return event


def configure_logging(fmt: LogFormat = "auto", level: str = "info", secrets: list[str] | None = None) -> None:
    """Configure structlog once per process (safe to call again, e.g. in tests)."""
    _secrets[:] = [s for s in (secrets or []) if s and len(s) >= 4]
    use_json = fmt == "json" or (fmt == "auto" and not sys.stderr.isatty())
    renderer: Any = (
        structlog.processors.JSONRenderer()
        if use_json
        else structlog.dev.ConsoleRenderer(colors=sys.stderr.isatty())
    )
    structlog.configure(
        processors=[
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
def redirected(write: Callable[[str], object]) -> Iterator[None]:
    """Send log lines through ``write`` while a progress bar owns the terminal."""
    stream = _stream
    if stream is None:
        yield
        return
    original = stream.stream
    stream.stream = cast(TextIO, _Through(write))
    try:
        yield
    finally:
        stream.stream = original


def _new_stream() -> TextIO:
    global _stream
    _stream = _BatchingStream(sys.stderr)
    return cast(TextIO, _stream)


def get_logger(**bind: Any) -> Any:
    return structlog.get_logger("etl").bind(**bind)
