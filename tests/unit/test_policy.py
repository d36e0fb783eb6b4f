"""The queue state machine (etl/policy.py decide()): every row of docs/contract.md's queue table.

Pure unit tests: a claimed item plus an API answer at a fixed "now" gives an
exact QueueUpdate.  Jitter is pinned with a Random whose draws are fixed.
"""

from __future__ import annotations

import random
from datetime import datetime, timedelta

import pytest

from etl.config import Backoff
from etl.policy import ClaimedItem, QueueUpdate, decide, unexpected
from etl.results import ApiResult, Summary, SummaryAnswer, SummaryResult

NOW = datetime(2026, 3, 1, 12, 0, 0)
BACKOFF = Backoff()
CALL = "ACpolicy1"


class FixedRandom(random.Random):
    """random() always returns ``value``: jitter becomes a known factor 0.5 + value / 2."""

    def __init__(self, value: float) -> None:
        super().__init__(0)
        self.value = value

    def random(self) -> float:
        return self.value


FULL = FixedRandom(1.0)  # jitter factor 1.0: the un-jittered delay
HALF = FixedRandom(0.0)  # jitter factor 0.5: the smallest delay


def item(attempts: int = 0, consecutive_errors: int = 0, incomplete_since: datetime | None = None) -> ClaimedItem:
    return ClaimedItem(call_id=CALL, attempts=attempts, consecutive_errors=consecutive_errors,
                       incomplete_since=incomplete_since, next_attempt_at=NOW - timedelta(minutes=5))


def summary(status: str) -> SummaryResult:
    data = Summary(call_id=CALL, status=status, lines=None, next_steps=None)
    answer = SummaryAnswer(call_id=CALL, summary=data, raw_json="{}", content_hash="0" * 64)
    return ApiResult(what="GET /v1/call-summaries/" + CALL, kind="ok", http_status=200, tries=1, latency_ms=12.0,
                     data=answer)


def transient(error: str = "HTTP 500 Internal Server Error: boom", status: int | None = 500,
              retry_after: float | None = None, tries: int = 3) -> SummaryResult:
    return ApiResult(what="GET /v1/call-summaries/" + CALL, kind="transient", http_status=status, tries=tries,
                     latency_ms=5.0, error=error, retry_after=retry_after)


def decide_at(it: ClaimedItem, result: SummaryResult, rng: random.Random = FULL) -> QueueUpdate:
    return decide(it, result, NOW, BACKOFF, rng)


def at(seconds: float) -> datetime:
    return NOW + timedelta(seconds=seconds)


def test_completed_is_done():
    assert decide_at(item(attempts=2, consecutive_errors=3), summary("completed")) == QueueUpdate(
        call_id=CALL, state="done", outcome="completed", attempts=3, consecutive_errors=0, next_attempt_at=NOW,
            last_api_status="completed", last_error=None, incomplete_since=None, finished_at=NOW,
    )


def test_failed_is_failed():
    assert decide_at(item(), summary("failed")) == QueueUpdate(
        call_id=CALL, state="failed", outcome="failed", attempts=1, consecutive_errors=0, next_attempt_at=NOW,
            last_api_status="failed", last_error="the API reports that the summary failed", incomplete_since=None,
                finished_at=NOW,
    )


def test_in_progress_first_time_waits_about_a_minute():
    assert decide_at(item(), summary("in-progress")) == QueueUpdate(
        call_id=CALL, state="pending", outcome="rescheduled", attempts=1, consecutive_errors=0,
            next_attempt_at=at(60), last_api_status="in-progress", last_error=None, incomplete_since=NOW,
                               finished_at=None,
    )


@pytest.mark.parametrize(("waited", "delay"), [
    (0, 60), (30, 60), (60, 60), (600, 600), (1800, 1800), (3600, 3600), (7200, 3600), (47 * 3600, 3600),
])
def test_in_progress_delay_grows_and_caps_at_an_hour(waited, delay):
    since = NOW - timedelta(seconds=waited)
    update = decide_at(item(attempts=4, incomplete_since=since), summary("in-progress"))
    assert (update.state, update.next_attempt_at, update.incomplete_since, update.attempts) == (
        "pending", at(delay), since, 5)


def test_in_progress_past_48_hours_is_error():
    since = NOW - timedelta(hours=48, seconds=1)
    assert decide_at(item(attempts=30, incomplete_since=since), summary("in-progress")) == QueueUpdate(
        call_id=CALL, state="error", outcome="error", attempts=31, consecutive_errors=0, next_attempt_at=NOW,
            last_api_status="in-progress", last_error="summary still in progress after 48 h", incomplete_since=None,
                finished_at=NOW,
    )


def test_in_progress_at_exactly_48_hours_gives_up():
    since = NOW - timedelta(hours=48)
    assert decide_at(item(incomplete_since=since), summary("in-progress")).state == "error"


def test_absent_first_time_waits_longer_than_in_progress():
    update = decide_at(item(), summary("absent"))
    assert update == QueueUpdate(call_id=CALL, state="pending", outcome="rescheduled", attempts=1,
                                 consecutive_errors=0, next_attempt_at=at(300), last_api_status="absent",
                                                                          last_error=None, incomplete_since=NOW,
                                                                              finished_at=None)
    assert update.next_attempt_at > decide_at(item(), summary("in-progress")).next_attempt_at


@pytest.mark.parametrize(("waited", "delay"), [
    (0, 300), (100, 300), (3600, 3600), (4 * 3600, 4 * 3600), (10 * 3600, 4 * 3600), (23 * 3600, 4 * 3600),
])
def test_absent_delay_grows_and_caps(waited, delay):
    since = NOW - timedelta(seconds=waited)
    update = decide_at(item(incomplete_since=since), summary("absent"))
    assert (update.state, update.next_attempt_at, update.incomplete_since) == ("pending", at(delay), since)


def test_absent_past_24_hours_is_absent():
    since = NOW - timedelta(hours=24, minutes=1)
    assert decide_at(item(attempts=9, incomplete_since=since), summary("absent")) == QueueUpdate(
        call_id=CALL, state="absent", outcome="failed", attempts=10, consecutive_errors=0, next_attempt_at=NOW,
            last_api_status="absent", last_error="no summary after 24 h", incomplete_since=None, finished_at=NOW,
    )


def test_not_found():
    result = ApiResult(what="GET /v1/call-summaries/" + CALL, kind="not_found", http_status=404, tries=1,
                       latency_ms=3.0, error="HTTP 404 Not Found: Call summary not found")
    assert decide_at(item(consecutive_errors=2), result) == QueueUpdate(
        call_id=CALL, state="not_found", outcome="failed", attempts=1, consecutive_errors=0, next_attempt_at=NOW,
            last_api_status="http 404", last_error="HTTP 404 Not Found: Call summary not found",
                incomplete_since=None, finished_at=NOW,
    )


def test_invalid():
    result = ApiResult(what="GET /v1/call-summaries/" + CALL, kind="invalid", http_status=400, tries=1,
                       latency_ms=3.0, error="HTTP 400 Bad Request: Invalid call id")
    assert decide_at(item(attempts=1), result) == QueueUpdate(
        call_id=CALL, state="invalid", outcome="failed", attempts=2, consecutive_errors=0, next_attempt_at=NOW,
            last_api_status="http 400", last_error="HTTP 400 Bad Request: Invalid call id", incomplete_since=None,
                finished_at=NOW,
    )


def test_rejected_is_error():
    result = ApiResult(what="GET /v1/call-summaries/" + CALL, kind="rejected", http_status=200, tries=1,
                       latency_ms=3.0, error="response body larger than 8388608 bytes")
    assert decide_at(item(), result) == QueueUpdate(
        call_id=CALL, state="error", outcome="error", attempts=1, consecutive_errors=0, next_attempt_at=NOW,
            last_api_status="http 200", last_error="response body larger than 8388608 bytes", incomplete_since=None,
                finished_at=NOW,
    )


def test_transient_first_failure_is_rescheduled():
    assert decide_at(item(), transient()) == QueueUpdate(
        call_id=CALL, state="pending", outcome="rescheduled", attempts=1, consecutive_errors=1,
            next_attempt_at=at(30), last_api_status="http 500", last_error="HTTP 500 Internal Server Error: boom",
                               incomplete_since=None, finished_at=None,
    )


@pytest.mark.parametrize(("errors_before", "full"), [(0, 30), (1, 60), (2, 120), (3, 240), (6, 1920)])
def test_transient_delay_grows_exponentially_with_jitter(errors_before, full):
    it = item(attempts=errors_before, consecutive_errors=errors_before)
    assert decide_at(it, transient(), FULL).next_attempt_at == at(full)
    assert decide_at(it, transient(), HALF).next_attempt_at == at(full / 2)
    assert decide_at(it, transient(), FULL).consecutive_errors == errors_before + 1


def test_transient_delay_is_capped():
    backoff = Backoff(transient_first=30, transient_cap=100, max_attempts=50)
    update = decide(item(consecutive_errors=20), transient(), NOW, backoff, FULL)
    assert update.next_attempt_at == at(100)


def test_transient_jitter_stays_within_half_to_full():
    rng = random.Random(1234)
    delays = {(decide(item(consecutive_errors=2), transient(), NOW, BACKOFF, rng).next_attempt_at - NOW)
              .total_seconds() for _ in range(200)}
    assert min(delays) >= 60 and max(delays) <= 120
    assert len(delays) > 100  # really jittered


def test_transient_honours_retry_after():
    update = decide_at(item(), transient("HTTP 429 Too Many Requests", 429, retry_after=900.0))
    assert (update.next_attempt_at, update.last_api_status, update.last_error) == (
        at(900), "http 429", "HTTP 429 Too Many Requests")


def test_transient_retry_after_shorter_than_backoff_does_not_shorten_it():
    update = decide_at(item(consecutive_errors=3), transient("HTTP 429", 429, retry_after=5.0))
    assert update.next_attempt_at == at(240)


def test_transient_without_response():
    result = ApiResult(what="GET /v1/call-summaries/" + CALL, kind="transient", http_status=None, tries=3,
                       latency_ms=5.0, error="timeout (ReadTimeout)")
    update = decide_at(item(), result)
    assert (update.last_api_status, update.last_error) == ("no response", "timeout (ReadTimeout)")


def test_transient_without_error_text():
    update = decide_at(item(), ApiResult(what="GET /v1/call-summaries/" + CALL, kind="transient", http_status=503,
                       tries=3, latency_ms=5.0))
    assert update.last_error == "transient error"


def test_after_max_attempts_transient_is_error_with_last_error():
    it = item(attempts=11, consecutive_errors=BACKOFF.max_attempts - 1, incomplete_since=NOW - timedelta(hours=1))
    assert decide_at(it, transient("HTTP 503 Service Unavailable: down", 503)) == QueueUpdate(
        call_id=CALL, state="error", outcome="error", attempts=12, consecutive_errors=8, next_attempt_at=NOW,
            last_api_status="http 503",
        last_error="gave up after 8 attempts: HTTP 503 Service Unavailable: down",
            incomplete_since=NOW - timedelta(hours=1), finished_at=NOW,
    )


def test_one_below_max_attempts_is_still_rescheduled():
    update = decide_at(item(consecutive_errors=BACKOFF.max_attempts - 2), transient())
    assert (update.state, update.consecutive_errors) == ("pending", BACKOFF.max_attempts - 1)


def test_attempts_count_fetches_not_tries():
    # An item that needed 3 in-run tries is still one attempt.
    assert decide_at(item(attempts=5), transient(tries=3)).attempts == 6
    assert decide_at(item(attempts=5), summary("completed")).attempts == 6


@pytest.mark.parametrize("status", ["completed", "in-progress", "absent", "failed"])
def test_consecutive_errors_reset_by_a_non_transient_answer(status):
    assert decide_at(item(consecutive_errors=6), summary(status)).consecutive_errors == 0


def test_transient_keeps_incomplete_since():
    since = NOW - timedelta(hours=3)
    assert decide_at(item(incomplete_since=since), transient()).incomplete_since == since


def test_in_progress_after_transient_errors_resumes_its_own_backoff():
    since = NOW - timedelta(minutes=20)
    update = decide_at(item(attempts=7, consecutive_errors=4, incomplete_since=since), summary("in-progress"))
    assert (update.state, update.consecutive_errors, update.next_attempt_at) == ("pending", 0, at(1200))


def test_long_error_text_is_truncated():
    update = decide_at(item(), transient("x" * 5000))
    assert update.last_error == "x" * 2000


def test_unexpected_error():
    it = item(attempts=2, consecutive_errors=1)
    assert unexpected(it, NOW, "unexpected error: KeyError('x')") == QueueUpdate(
        call_id=CALL, state="error", outcome="error", attempts=3, consecutive_errors=1, next_attempt_at=NOW,
            last_api_status=None, last_error="unexpected error: KeyError('x')", incomplete_since=None, finished_at=NOW,
    )


def test_update_params():
    update = decide_at(item(), summary("completed"))
    assert update.params(NOW) == {
        "b_call_id": CALL, "state": "done", "attempts": 1, "consecutive_errors": 0, "next_attempt_at": NOW,
        "last_api_status": "completed", "last_error": None, "incomplete_since": None, "finished_at": NOW,
        "updated_at": NOW,
    }
