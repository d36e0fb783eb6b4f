"""Terminal log lines for people (etl.logs): outcome first and short, NO_COLOR, quiet under a bar."""

from __future__ import annotations

import io
from collections.abc import Iterator
from typing import Any

import pytest
import structlog

from etl import logs


class Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


@pytest.fixture(autouse=True)
def _reset() -> Iterator[None]:
    yield
    structlog.reset_defaults()


def call_event(**kw: Any) -> dict[str, Any]:
    event = {"event": "call", "level": "info", "timestamp": "2026-11-25T12:00:00Z", "run_id": 4,
             "call_id": "AC123", "outcome": "done", "http_status": 200, "api_status": "completed",
             "attempt": 1, "tries": 1, "latency_ms": 12.4}
    event.update(kw)
    return event


def test_a_call_line_starts_with_its_outcome_and_is_short() -> None:
    line = logs.ConsoleLine(colours=False)(None, "info", call_event())
    assert line == "done      AC123 200 12ms"


def test_a_failed_call_shows_its_level_and_error() -> None:
    line = logs.ConsoleLine(colours=False)(None, "warning", call_event(
        level="warning", outcome="pending", http_status=None, latency_ms=1101.0,
        error="connection error (ConnectError: [Errno 111] Connection refused)"))
    assert line == "WARNING pending   AC123 - 1101ms — connection error (ConnectError: [Errno 111] Connection refused)"


def test_colour_only_on_a_terminal_without_no_color(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NO_COLOR", raising=False)
    assert logs.use_colour(Tty())
    assert not logs.use_colour(io.StringIO())
    monkeypatch.setenv("NO_COLOR", "1")
    assert not logs.use_colour(Tty())
    coloured = logs.ConsoleLine(colours=True)(None, "error", call_event(level="error", outcome="not_found"))
    assert coloured.startswith("\x1b[31;1mERROR not_found") and coloured.endswith("\x1b[0m")


def test_console_under_no_color_has_no_escape_codes(monkeypatch: pytest.MonkeyPatch) -> None:
    err = Tty()
    monkeypatch.setattr("sys.stderr", err)
    monkeypatch.setenv("NO_COLOR", "1")
    logs.configure_logging("auto", "info")
    logs.get_logger().error("call", call_id="AC9", outcome="invalid", http_status=400, latency_ms=3.0,
                            error="Invalid call id")
    assert err.getvalue() == "ERROR invalid   AC9 400 3ms — Invalid call id\n"


def test_json_lines_keep_every_field(monkeypatch: pytest.MonkeyPatch) -> None:
    err = io.StringIO()
    monkeypatch.setattr("sys.stderr", err)
    logs.configure_logging("auto", "info")  # not a terminal: JSON
    logs.get_logger(run_id=3).warning("call", call_id="AC9", outcome="pending", http_status=503, api_status="http 503",
                                      attempt=2, tries=3, latency_ms=9.5, error="HTTP 503")
    import json

    line = json.loads(err.getvalue())
    assert {k: v for k, v in line.items() if k != "timestamp"} == {
        "run_id": 3, "call_id": "AC9", "outcome": "pending", "http_status": 503, "api_status": "http 503",
        "attempt": 2, "tries": 3, "latency_ms": 9.5, "error": "HTTP 503", "event": "call", "level": "warning"}


def test_under_a_progress_bar_only_warnings_and_errors_are_printed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("sys.stderr", io.StringIO())
    logs.configure_logging("console", "info")
    above_bar: list[str] = []
    with logs.redirected(above_bar.append):
        logs.get_logger().info("call", call_id="AC1", outcome="done", http_status=200, latency_ms=1.0)
        logs.get_logger().warning("call", call_id="AC2", outcome="pending", http_status=503, latency_ms=1.0)
    logs.get_logger().info("run finished", claimed=2)
    assert above_bar == ["WARNING pending   AC2 503 1ms"]
