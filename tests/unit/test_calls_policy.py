"""The 404 window (pure): a summary or call 404 soon after the call is retried, later it is final."""

from __future__ import annotations

from datetime import datetime, timedelta

from etl.api import webhook_call
from etl.config import Backoff
from etl.normalize import is_e164, normalize_call
from etl.policy import ClaimedItem, call_not_found, decide, not_found_retry_at, not_found_window_start
from etl.results import ApiResult

NOW = datetime(2026, 11, 25, 12, 0)
NOT_FOUND = ApiResult(what="GET /v1/call-summaries/" + "ACx", kind="not_found", http_status=404, tries=1,
                      latency_ms=1.0, error="HTTP 404 Not Found: Call summary not found")


def item(enqueued: datetime | None, completed: datetime | None = None) -> ClaimedItem:
    return ClaimedItem(call_id="ACx", attempts=2, consecutive_errors=0, incomplete_since=None, next_attempt_at=NOW,
                       enqueued_at=enqueued, call_completed_at=completed)


def test_window_starts_at_the_call_end_else_at_enqueueing():
    assert not_found_window_start(NOW, NOW - timedelta(hours=3)) == NOW - timedelta(hours=3)
    assert not_found_window_start(NOW, None) == NOW
    assert not_found_window_start(None, None) is None


def test_retry_delay_grows_and_the_window_closes():
    b = Backoff()
    assert not_found_retry_at(NOW, NOW, b) == NOW + timedelta(seconds=300)
    assert not_found_retry_at(NOW - timedelta(minutes=20), NOW, b) == NOW + timedelta(minutes=20)
    assert not_found_retry_at(NOW - timedelta(hours=5), NOW, b) == NOW + timedelta(hours=1)
    assert not_found_retry_at(NOW - timedelta(hours=24), NOW, b) is None
    assert not_found_retry_at(NOW, NOW, Backoff(not_found_window=0)) is None
    assert not_found_retry_at(None, NOW, b) is None


def test_summary_404_inside_the_window_is_rescheduled():
    u = decide(item(NOW - timedelta(minutes=1)), NOT_FOUND, NOW, Backoff())
    assert (u.state, u.outcome, u.attempts, u.consecutive_errors, u.finished_at) == (
        "pending", "rescheduled", 3, 0, None)
    assert u.next_attempt_at == NOW + timedelta(seconds=300)
    assert u.last_error == "HTTP 404 Not Found: Call summary not found; retrying until 2026-11-26 11:59 UTC"
    assert u.last_api_status == "http 404"


def test_summary_404_after_the_window_is_final():
    u = decide(item(NOW - timedelta(days=3), NOW - timedelta(hours=25)), NOT_FOUND, NOW, Backoff())
    assert (u.state, u.outcome, u.last_error, u.finished_at) == (
        "not_found", "failed", "HTTP 404 Not Found: Call summary not found", NOW)


def test_no_timing_keeps_todays_behaviour():
    assert decide(item(None), NOT_FOUND, NOW, Backoff()).state == "not_found"


def test_call_404_window():
    assert call_not_found(NOW - timedelta(hours=1), None, NOW, Backoff()) == "retrying"
    assert call_not_found(NOW - timedelta(hours=30), None, NOW, Backoff()) == "not_found"
    assert call_not_found(None, NOW - timedelta(hours=30), NOW, Backoff()) == "not_found"
    assert call_not_found(None, None, NOW, Backoff()) == "retrying"
    assert call_not_found(None, None, NOW, Backoff(not_found_window=0)) == "not_found"


FULLWIDTH = "+" + "".join(chr(0xFF10 + int(d)) for d in "15555550123")  # digits Python's \d would accept


def test_e164():
    assert [is_e164(n) for n in ("+15555550123", "+442071838750", "15555550123", "+0123456789", "+1555",
                                  "+1234567890123456", "+1 555 555 0123", "anonymous", FULLWIDTH)] == [
        True, True, False, False, False, False, False, False, False]


def test_normalize_call_times_to_naive_utc_and_cuts_long_text():
    raw = {"id": "ACn", "createdAt": "2026-11-25T10:00:00+02:00", "completedAt": None, "direction": "incoming",
           "status": "completed", "duration": 7, "userId": "US" + "x" * 400, "participants": ["+15555550123", "\x00"],
           "unknown": {"nested": True}}
    rows = normalize_call(webhook_call(raw), '{"id":"ACn"}', NOW)
    assert rows.parent["created_at"] == datetime(2026, 11, 25, 8, 0)
    assert rows.parent["completed_at"] is None and rows.parent["answered_at"] is None
    assert len(rows.parent["user_id"]) == 255
    assert rows.participants == [
        {"call_id": "ACn", "position": 0, "number": "+15555550123", "is_e164": True, "actor_id": None,
         "is_own_number": None},
        {"call_id": "ACn", "position": 1, "number": "\ufffd", "is_e164": False, "actor_id": None,
         "is_own_number": None},
    ]
    assert rows.not_e164 == ["\ufffd"]
