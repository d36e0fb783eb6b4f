"""etl.health (the --check rules, what counts as a fetch) and etl.logs.call_log_level, pure."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

import pytest

from etl.health import FetchHistory, Limits, fetch_gap_problem, fetch_line, is_answer, nothing_fetched, problems
from etl.logs import call_log_level
from etl.results import FetchResult

NOW = datetime(2026, 11, 25, 12, 0, 0)


def result(kind: Any, status: int | None) -> FetchResult:
    return FetchResult("AC1", kind, status, 1, 1.0)


@pytest.mark.parametrize(("kind", "state", "level"), [
    ("summary", "done", "info"),
    ("summary", "pending", "info"),      # in-progress / absent, rescheduled
    ("summary", "failed", "warning"),    # the API says the summary failed
    ("summary", "absent", "warning"),    # absent for 24 h: given up
    ("summary", "error", "error"),       # in progress for 48 h: given up
    ("transient", "pending", "warning"),  # connection error, timeout, 5xx, 429 after retries
    ("transient", "error", "error"),     # gave up after max attempts
    ("not_found", "not_found", "error"),
    ("invalid", "invalid", "error"),
    ("rejected", "error", "error"),
    (None, "error", "error"),            # unexpected error, no answer object
])
def test_call_log_level(kind: str | None, state: str, level: str) -> None:
    assert call_log_level(kind, state) == level


def test_answers_are_every_definitive_reply_and_nothing_transient() -> None:
    assert is_answer(result("summary", 200))
    assert is_answer(result("not_found", 404))
    assert is_answer(result("invalid", 400))
    assert is_answer(result("rejected", 200))
    assert not is_answer(result("transient", 503))
    assert not is_answer(result("transient", None))
    assert not is_answer(None)
    counters = {"completed": 0, "rescheduled": 0, "failed": 0, "errors": 0, "fetched": 0}
    assert nothing_fetched(dict(counters, rescheduled=3))
    assert nothing_fetched(dict(counters, rescheduled=1, errors=2))
    assert not nothing_fetched(dict(counters, rescheduled=3, fetched=1))  # in progress: answered
    assert not nothing_fetched(dict(counters, completed=1))  # a row older than the fetched column
    assert not nothing_fetched(dict(counters, failed=1))
    assert not nothing_fetched(counters)  # an idle run is no outage


def run(**kw: Any) -> dict[str, Any]:
    row = {"id": 1, "finished_at": NOW - timedelta(minutes=1), "exit_code": 0, "errors": 0, "stop_reason": None}
    row.update(kw)
    return row


def test_one_failed_run_pages_nobody() -> None:
    blip = FetchHistory(NOW - timedelta(minutes=6), NOW - timedelta(minutes=5), failed_runs=1)
    assert fetch_gap_problem(NOW, blip, pending=10, max_gap_s=1800) is None
    assert problems(NOW, [run()], run(), blip, 10, Limits()) == []


def test_an_outage_longer_than_the_gap_pages_someone() -> None:
    outage = FetchHistory(NOW - timedelta(minutes=40), NOW - timedelta(minutes=35), failed_runs=7)
    assert problems(NOW, [run()], run(), outage, 12, Limits()) == [
        "no successful fetch since 2026-11-25T11:20:00Z (2400 s ago, more than 1800 s; 7 runs fetched nothing) "
        "while 12 items wait: is the API reachable?"
    ]
    # The threshold is an option.
    assert fetch_gap_problem(NOW, outage, 12, max_gap_s=3000) is None


def test_an_outage_from_the_first_run_counts_from_the_first_failed_run() -> None:
    never = FetchHistory(None, NOW - timedelta(hours=2), failed_runs=24)
    assert fetch_gap_problem(NOW, never, 1, 1800) == (
        "no successful fetch since 2026-11-25T10:00:00Z (7200 s ago, more than 1800 s; 24 runs fetched nothing) "
        "while 1 item waits: is the API reachable?")
    assert fetch_line(never) == ("no successful fetch since 2026-11-25T10:00:00Z: "
                                 "the last 24 runs with work fetched nothing")


def test_no_work_waiting_is_no_outage() -> None:
    outage = FetchHistory(NOW - timedelta(hours=5), NOW - timedelta(hours=4), failed_runs=3)
    assert fetch_gap_problem(NOW, outage, pending=0, max_gap_s=1800) is None


def test_fetch_line_when_healthy() -> None:
    assert fetch_line(FetchHistory(NOW, None, 0)) == "last successful fetch 2026-11-25T12:00:00Z"
    assert fetch_line(FetchHistory(None, None, 0)) is None


def test_older_rules_kept() -> None:
    assert problems(NOW, [], None, FetchHistory(None, None, 0), 0, Limits()) == ["no successful run recorded"]
    old = run(finished_at=NOW - timedelta(hours=2))
    assert problems(NOW, [old], old, FetchHistory(None, None, 0), 0, Limits(max_age_s=3600)) == [
        "last successful run finished 7200 s ago (more than 3600 s)"]
    refused = run(exit_code=3, stop_reason="the API refused the key (HTTP 401): bad key")
    assert problems(NOW, [refused], run(), FetchHistory(None, None, 0), 0, Limits()) == [
        "last run stopped: the API refused the key (HTTP 401): bad key"]  # said once (issue 20, item 13)
