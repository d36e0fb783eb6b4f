"""The queue state machine of docs/contract.md: (claimed item, API answer, now) -> queue row update.

Pure functions, no I/O, so every transition is unit-tested without a server.

Counters: ``attempts`` counts fetches of the item (in-run retries are one
attempt; a run stopped by a 401 counts none).  ``consecutive_errors`` counts
queue attempts in a row that ended transient; it is what ``max_attempts``
limits, so a summary that is "in-progress" for hours is never mistaken for a
failing one.  ``incomplete_since`` is when the API first said in-progress or
absent; the give-up windows (48 h / 24 h) are measured from it.

``absent`` depends on the answer's surface (``SummaryAnswer.absent_is_final``):
on v1 it may still turn into a summary and is asked again for 24 h; on the
dated API 2026-03-30 it means none will ever be generated, so the item ends
``absent`` at once.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, Literal

from etl.config import Backoff
from etl.states import QueueState, TranscriptState

if TYPE_CHECKING:
    from etl.results import ApiResult, SummaryAnswer, SummaryResult, Transcript

Outcome = Literal["completed", "rescheduled", "failed", "error"]
QueueName = Literal["summary", "transcript"]

_MAX_ERROR = 2000


@dataclass(frozen=True, slots=True, kw_only=True)
class ClaimedItem:
    """A queue row this run holds a lease on, as it was when claimed."""

    call_id: str
    attempts: int
    consecutive_errors: int
    incomplete_since: datetime | None
    next_attempt_at: datetime  # the value before claiming, restored on release
    # When the not-found window starts (see not_found_window_start); None: the
    # engine gave no timing, and a 404 is final at once.
    enqueued_at: datetime | None = None
    call_completed_at: datetime | None = None
    # Call context (etl.store.claim fills these in the claim's own query): the
    # first GET /v1/calls/{id} 404, and whether the engine still has to fetch
    # the call (no calls row, and its lookup not given up).
    call_first_not_found_at: datetime | None = None
    needs_call: bool = False
    # Which queue the item is leased from: summary_queue, or transcript_queue (issue 19).
    queue: QueueName = "summary"
    # The call's start (calls.created_at) when its row is stored: a dated transcript's time base.
    call_created_at: datetime | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class QueueUpdate:
    call_id: str
    state: QueueState | TranscriptState
    outcome: Outcome
    attempts: int
    consecutive_errors: int
    next_attempt_at: datetime
    last_api_status: str | None
    last_error: str | None
    incomplete_since: datetime | None
    finished_at: datetime | None

    def params(self, now: datetime) -> dict[str, Any]:
        return {
            "b_call_id": self.call_id,
            "state": self.state,
            "attempts": self.attempts,
            "consecutive_errors": self.consecutive_errors,
            "next_attempt_at": self.next_attempt_at,
            "last_api_status": self.last_api_status,
            "last_error": self.last_error,
            "incomplete_since": self.incomplete_since,
            "finished_at": self.finished_at,
            "updated_at": now,
        }


def _grow(elapsed: float, first: float, cap: float) -> float:
    """Delay that doubles the time waited so far: first, then ~elapsed, capped."""
    return min(cap, max(first, elapsed))


NEVER_SUMMARISED = "the API reports that no summary will be generated for this call"


def _final(answer: SummaryAnswer) -> tuple[QueueState, Outcome, str | None] | None:
    """The end state a summary's answer puts its item in, or None while a summary may still come."""
    if answer.status == "completed":
        return "done", "completed", None
    if answer.status == "failed":
        return "failed", "failed", "the API reports that the summary failed"
    if answer.status == "absent" and answer.absent_is_final:
        # The answer's surface says absent means never (elsewhere absent may still turn into a summary).
        return "absent", "failed", NEVER_SUMMARISED
    return None


def settle_listed(answer: SummaryAnswer, now: datetime) -> QueueUpdate | None:
    """The queue row of a summary that arrived final in a listing (discovery's ``GET /calls`` pages), as if
    its first fetch had answered it; None when it is not final (the id is queued instead)."""
    final = _final(answer)
    if final is None:
        return None
    state, outcome, error = final
    return QueueUpdate(
        call_id=answer.call_id, state=state, outcome=outcome, attempts=1, consecutive_errors=0,
        next_attempt_at=now, last_api_status=answer.status, last_error=error[:_MAX_ERROR] if error else None,
        incomplete_since=None, finished_at=now,
    )


def decide(item: ClaimedItem, result: SummaryResult, now: datetime, backoff: Backoff,
           rng: random.Random | None = None) -> QueueUpdate:
    rng = rng or random.Random()
    attempts = item.attempts + 1
    api_status = result.api_status

    def done(state: QueueState, outcome: Outcome, error: str | None = None) -> QueueUpdate:
        return QueueUpdate(
            call_id=item.call_id, state=state, outcome=outcome, attempts=attempts, consecutive_errors=0,
            next_attempt_at=now, last_api_status=api_status, last_error=error[:_MAX_ERROR] if error else None,
            incomplete_since=None, finished_at=now,
        )

    def later(delay: float, error: str | None, since: datetime | None, errors: int = 0) -> QueueUpdate:
        return QueueUpdate(
            call_id=item.call_id, state="pending", outcome="rescheduled", attempts=attempts,
            consecutive_errors=errors, next_attempt_at=now + timedelta(seconds=delay), last_api_status=api_status,
            last_error=error[:_MAX_ERROR] if error else None, incomplete_since=since, finished_at=None,
        )

    if result.kind == "ok":
        answer = result.data
        assert answer is not None
        status = answer.status
        final = _final(answer)
        if final is not None:
            return done(*final)
        since = item.incomplete_since or now
        elapsed = (now - since).total_seconds()
        if status == "in-progress":
            if elapsed >= backoff.in_progress_give_up:
                return done("error", "error", f"summary still in progress after {elapsed / 3600:.0f} h")
            delay = _grow(elapsed, backoff.in_progress_first, backoff.in_progress_cap)
        else:  # absent
            if elapsed >= backoff.absent_give_up:
                return done("absent", "failed", f"no summary after {elapsed / 3600:.0f} h")
            delay = _grow(elapsed, backoff.absent_first, backoff.absent_cap)
        return later(delay, None, since)
    return _not_answered(item, result, api_status, now, backoff, rng)


def _not_answered(item: ClaimedItem, result: ApiResult[Any], api_status: str, now: datetime, backoff: Backoff,
                  rng: random.Random) -> QueueUpdate:
    """Either queue's item when the API gave no answer about its content: 404, 400, a refused body, transient."""
    if result.kind == "not_found":
        return _not_found(item, result.error, api_status, now, backoff)
    if result.kind in ("invalid", "rejected"):
        state: QueueState = "invalid" if result.kind == "invalid" else "error"
        return QueueUpdate(
            call_id=item.call_id, state=state, outcome="failed" if state == "invalid" else "error",
            attempts=item.attempts + 1, consecutive_errors=0, next_attempt_at=now, last_api_status=api_status,
            last_error=result.error[:_MAX_ERROR] if result.error else None, incomplete_since=None, finished_at=now,
        )
    return _transient(item, result.error, result.retry_after, api_status, now, backoff, rng)


def _not_found(item: ClaimedItem, error: str | None, api_status: str, now: datetime,
               backoff: Backoff) -> QueueUpdate:
    """A 404: retried within the not-found window (from the call's completion, else enqueueing), then final."""
    attempts = item.attempts + 1
    start = not_found_window_start(item.enqueued_at, item.call_completed_at)
    retry_at = not_found_retry_at(start, now, backoff)
    if retry_at is not None:
        assert start is not None
        until = start + timedelta(seconds=backoff.not_found_window)
        text = f"{error or 'HTTP 404'}; retrying until {until:%Y-%m-%d %H:%M} UTC"
        return QueueUpdate(
            call_id=item.call_id, state="pending", outcome="rescheduled", attempts=attempts, consecutive_errors=0,
            next_attempt_at=retry_at, last_api_status=api_status, last_error=text[:_MAX_ERROR],
            incomplete_since=item.incomplete_since, finished_at=None,
        )
    return QueueUpdate(call_id=item.call_id, state="not_found", outcome="failed", attempts=attempts,
                       consecutive_errors=0, next_attempt_at=now, last_api_status=api_status,
                       last_error=error[:_MAX_ERROR] if error else None, incomplete_since=None, finished_at=now)


def _transient(item: ClaimedItem, error: str | None, retry_after: float | None, api_status: str, now: datetime,
               backoff: Backoff, rng: random.Random) -> QueueUpdate:
    """Reschedule with exponential backoff and jitter (never sooner than Retry-After), or give up."""
    attempts = item.attempts + 1
    errors = item.consecutive_errors + 1
    text = (error or "transient error")[:_MAX_ERROR]
    if errors >= backoff.max_attempts:
        return QueueUpdate(
            call_id=item.call_id, state="error", outcome="error", attempts=attempts, consecutive_errors=errors,
            next_attempt_at=now, last_api_status=api_status,
            last_error=f"gave up after {errors} attempts: {text}"[:_MAX_ERROR],
            incomplete_since=item.incomplete_since, finished_at=now,
        )
    delay = min(backoff.transient_cap, backoff.transient_first * 2 ** (errors - 1))
    delay = delay * (0.5 + rng.random() / 2)
    if retry_after:
        delay = max(delay, retry_after)
    return QueueUpdate(
        call_id=item.call_id, state="pending", outcome="rescheduled", attempts=attempts, consecutive_errors=errors,
        next_attempt_at=now + timedelta(seconds=delay), last_api_status=api_status, last_error=text,
        incomplete_since=item.incomplete_since, finished_at=None,
    )


def decide_transcript(item: ClaimedItem, result: ApiResult[Transcript], now: datetime, backoff: Backoff,
                      rng: random.Random | None = None) -> QueueUpdate:
    """A transcript_queue item's update from the API's answer (docs/contract.md, "Transcripts").

    completed: done; failed: failed; absent (or no segment at all): absent, at
    once (no transcript will exist); in-progress: retried as a summary is, for
    ``in_progress_give_up``; 403: forbidden (the plan has no transcripts); 404,
    400, an oversized body and transient failures as for summaries.
    """
    rng = rng or random.Random()
    attempts = item.attempts + 1
    transcript = result.data if result.kind == "ok" else None
    if transcript is not None:
        api_status = transcript.status
    else:
        api_status = f"http {result.http_status}" if result.http_status is not None else "no response"

    def done(state: TranscriptState, outcome: Outcome, error: str | None = None) -> QueueUpdate:
        return QueueUpdate(
            call_id=item.call_id, state=state, outcome=outcome, attempts=attempts, consecutive_errors=0,
            next_attempt_at=now, last_api_status=api_status, last_error=error[:_MAX_ERROR] if error else None,
            incomplete_since=None, finished_at=now,
        )

    if transcript is not None:
        status = transcript.status
        if status == "completed":
            return done("done", "completed")
        if status == "failed":
            return done("failed", "failed", "the API reports that the transcript failed")
        if status == "absent":
            return done("absent", "failed", "the API reports that no transcript exists for this call")
        since = item.incomplete_since or now
        elapsed = (now - since).total_seconds()
        if elapsed >= backoff.in_progress_give_up:
            return done("error", "error", f"transcript still in progress after {elapsed / 3600:.0f} h")
        delay = _grow(elapsed, backoff.in_progress_first, backoff.in_progress_cap)
        return QueueUpdate(
            call_id=item.call_id, state="pending", outcome="rescheduled", attempts=attempts, consecutive_errors=0,
            next_attempt_at=now + timedelta(seconds=delay), last_api_status=api_status, last_error=None,
            incomplete_since=since, finished_at=None,
        )
    if result.http_status == 403:
        return done("forbidden", "failed", result.error or "HTTP 403: the plan has no transcripts")
    return _not_answered(item, result, api_status, now, backoff, rng)


def unexpected(item: ClaimedItem, now: datetime, error: str) -> QueueUpdate:
    """The item could not be processed at all (e.g. the database rejected its rows)."""
    return QueueUpdate(
        call_id=item.call_id, state="error", outcome="error", attempts=item.attempts + 1,
        consecutive_errors=item.consecutive_errors, next_attempt_at=now, last_api_status=None,
        last_error=error[:_MAX_ERROR], incomplete_since=item.incomplete_since, finished_at=now,
    )


# --- 404 soon after a call (summary or call context) -------------------------------


def not_found_window_start(enqueued_at: datetime | None, call_completed_at: datetime | None) -> datetime | None:
    """A 404 is not final until the window from the call's completion (else from enqueueing) is over."""
    return call_completed_at or enqueued_at


def not_found_retry_at(start: datetime | None, now: datetime, backoff: Backoff) -> datetime | None:
    """When to ask again after a 404, or None when the 404 is final (window over, or no start known).

    The delay grows with the time already waited (first ``not_found_first``,
    capped at ``not_found_cap``) and never goes past the window's end by more
    than one step, so the final answer comes soon after the window closes.
    """
    if start is None or backoff.not_found_window <= 0:
        return None
    elapsed = max(0.0, (now - start).total_seconds())
    if elapsed >= backoff.not_found_window:
        return None
    delay = _grow(elapsed, backoff.not_found_first, backoff.not_found_cap)
    return now + timedelta(seconds=delay)


CallLookupState = Literal["retrying", "not_found"]


def call_not_found(enqueued_at: datetime | None, first_not_found_at: datetime | None, now: datetime,
                   backoff: Backoff) -> CallLookupState:
    """A ``GET /v1/calls/{id}`` 404: keep trying on later attempts, or give up for good.

    A call that 404s has no stored completion time, so the window runs from
    enqueueing (else from the first 404).  Either way the summary goes on: a
    call 404 never blocks it.
    """
    start = not_found_window_start(enqueued_at or first_not_found_at, None) or now
    return "retrying" if not_found_retry_at(start, now, backoff) is not None else "not_found"
