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
from typing import Any, Literal

import structlog
from structlog.typing import EventDict, WrappedLogger

LogFormat = Literal["auto", "console", "json"]

_secrets: list[str] = []


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
        logger_factory=structlog.WriteLoggerFactory(file=sys.stderr),
        cache_logger_on_first_use=False,
    )
    for noisy in ("httpx", "httpcore", "hpack", "sqlalchemy", "alembic"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def get_logger(**bind: Any) -> Any:
    return structlog.get_logger("etl").bind(**bind)
