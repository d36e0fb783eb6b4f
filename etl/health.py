"""Health rules: what `etl status --check` calls unhealthy, and what counts as a fetch.

Pure functions over rows that :mod:`etl.report` reads, so every rule is
unit-tested without a database.  The rules exist so that an operator is never
misled: a run that could not reach the API at all looks, in its counters, like
a run that rescheduled in-progress summaries; only ``sync_runs.fetched`` (items
the API answered) tells them apart.

One failed run pages nobody (the API blinks; items are retried with backoff).
An outage pages someone: ``--check`` fails once no fetch has succeeded for
longer than ``max_fetch_gap`` while work is waiting.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from etl.clock import iso_z
from etl.config import MAX_AGE, MAX_ERRORS, MAX_FETCH_GAP

if TYPE_CHECKING:
    from etl.results import SummaryResult

NOTHING_FETCHED = ("nothing could be fetched: every attempt failed to connect, timed out, got a 5xx/429 "
                   "or a 404 from a route the API does not have (is --base-url right?)")


# The stop reason of a run that had work and never reached the API (exit 4, docs/contract.md).
UNREACHABLE = ("the API was never reached: every request failed to connect, timed out or got a 5xx/429 "
               "(is --base-url right? is the network up?)")


def is_answer(result: SummaryResult | None) -> bool:
    """True when the API gave a definitive answer for the item (200, 400, 404, an oversized body).

    Connection errors, timeouts, 5xx and 429 that survived the in-run retries
    are not answers: the API could not be reached or would not serve us.
    """
    return result is not None and result.kind != "transient"


def nothing_fetched(run: Mapping[str, Any]) -> bool:
    """A run (a ``sync_runs`` row or ``RunStats.as_dict()``) that processed items and got no answer.

    ``completed`` and ``failed`` items were answered by definition, which also
    reads rows written before ``fetched`` existed correctly.  Items of both
    queues count (a run that only fetched transcripts reached the API).
    """
    answered = sum(run.get(name) or 0 for name in ANSWERED)
    return bool(answered == 0 and sum(run.get(name) or 0 for name in UNANSWERED) > 0)


# The run counters that prove an answer, and those of items that may have had none.
ANSWERED = ("fetched", "completed", "failed", "transcripts_fetched", "transcripts_completed", "transcripts_failed")
UNANSWERED = ("rescheduled", "errors", "transcripts_rescheduled", "transcripts_errors")


@dataclass(frozen=True)
class FetchHistory:
    """What `sync_runs` says about reaching the API (see :func:`etl.report.fetch_history`)."""

    last_fetch_ok_at: datetime | None  # end of the newest run that fetched anything
    failing_since: datetime | None  # start of the oldest run, after that one, that fetched nothing
    failed_runs: int  # runs since the last good one that processed items and fetched nothing


@dataclass(frozen=True)
class Limits:
    """What ``status --check`` tolerates; each field declared once in :mod:`etl.config` (``STATUS_SETTINGS``)."""

    max_age_s: int = MAX_AGE.default
    max_errors: int = MAX_ERRORS.default
    max_fetch_gap_s: int = MAX_FETCH_GAP.default


def problems(now: datetime, runs: list[dict[str, Any]], last_ok: dict[str, Any] | None,
             fetches: FetchHistory, pending: int, limits: Limits) -> list[str]:
    """Every reason the job is unhealthy, one short sentence each (empty: healthy)."""
    found = []
    if last_ok is None:
        found.append("no successful run recorded")
    elif now - last_ok["finished_at"] > timedelta(seconds=limits.max_age_s):
        age = int((now - last_ok["finished_at"]).total_seconds())
        found.append(f"last successful run finished {age} s ago (more than {limits.max_age_s} s)")
    finished = [r for r in runs if r["finished_at"] is not None]
    if finished and finished[0]["exit_code"] == 3:
        # Every later run will fail the same way until someone fixes the key.
        found.append(f"last run stopped: {finished[0]['stop_reason'] or 'the API refused the key'}")
    if finished and finished[0]["errors"] > limits.max_errors:
        found.append(f"last run had {finished[0]['errors']} errors (more than {limits.max_errors})")
    gap = fetch_gap_problem(now, fetches, pending, limits.max_fetch_gap_s)
    if gap:
        found.append(gap)
    return found


def fetch_gap_problem(now: datetime, fetches: FetchHistory, pending: int, max_gap_s: int) -> str | None:
    """The outage rule: nothing fetched for longer than ``max_gap_s`` while items wait."""
    if fetches.failed_runs == 0 or pending == 0 or fetches.failing_since is None:
        return None
    since = fetches.last_fetch_ok_at or fetches.failing_since
    gap = (now - since).total_seconds()
    if gap <= max_gap_s:
        return None
    return (f"no successful fetch since {iso_z(since)} ({int(gap)} s ago, more than {max_gap_s} s; "
            f"{fetches.failed_runs} run{'s' if fetches.failed_runs != 1 else ''} fetched nothing) "
            f"while {pending} item{'s wait' if pending != 1 else ' waits'}: is the API reachable?")


def fetch_line(fetches: FetchHistory) -> str | None:
    """The status line about reaching the API, or None when there is nothing to say yet."""
    if fetches.failed_runs:
        since = fetches.last_fetch_ok_at or fetches.failing_since
        assert since is not None
        return (f"no successful fetch since {iso_z(since)}: the last {fetches.failed_runs} "
                f"run{'s' if fetches.failed_runs != 1 else ''} with work fetched nothing")
    if fetches.last_fetch_ok_at is not None:
        return f"last successful fetch {iso_z(fetches.last_fetch_ok_at)}"
    return None
