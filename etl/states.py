"""The named states of the contract, defined once: queue states and summary/transcript statuses.

``docs/contract.md`` "Queue semantics" describes them; the table check
constraints (etl/models.py), the strict API models (etl/schema.py), the queue
state machine (etl/policy.py) and the read-side queries (etl/report.py) all
take them from here.  Migrations keep their own frozen copies on purpose.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal, get_args

# A summary_queue row: pending until due, then one of the terminal states.
QueueState = Literal["pending", "done", "failed", "absent", "not_found", "invalid", "error"]
QUEUE_STATES: tuple[QueueState, ...] = get_args(QueueState)
TERMINAL_STATES: tuple[QueueState, ...] = tuple(s for s in QUEUE_STATES if s != "pending")
# Terminal states other than done: what `status` lists under top errors and `backfill --status` re-queues.
ENDED_BADLY: tuple[QueueState, ...] = tuple(s for s in TERMINAL_STATES if s != "done")

# A transcript_queue row (issue 19): the summary queue's states, plus ``forbidden``
# (403: the workspace's plan has no transcripts).  ``absent`` is final at once here:
# the API says no transcript will exist.
TranscriptState = Literal["pending", "done", "failed", "absent", "forbidden", "not_found", "invalid", "error"]
TRANSCRIPT_STATES: tuple[TranscriptState, ...] = get_args(TranscriptState)

# The API's `status` of a call summary (GET /v1/call-summaries/{callId}).
SummaryStatus = Literal["absent", "in-progress", "completed", "failed"]
SUMMARY_STATUSES: tuple[SummaryStatus, ...] = get_args(SummaryStatus)

# The API's `status` of a call transcript (v1: the merged transcript; 2026-03-30: each segment).
TranscriptStatus = Literal["absent", "in-progress", "completed", "failed"]
TRANSCRIPT_STATUSES: tuple[TranscriptStatus, ...] = get_args(TranscriptStatus)


# The run counter (RunStats field and sync_runs column) of each state an item ends a run in:
# each is the state's own name, except the three that predate the split (revision 0009).
RUN_COUNTER: dict[QueueState, str] = {
    "done": "completed", "pending": "rescheduled", "failed": "failed", "absent": "absent",
    "not_found": "not_found", "invalid": "invalid", "error": "errors",
}


# The same for an item of transcript_queue (revision 0013): its own columns, so that a
# plan without transcripts (``forbidden``) never reads as summaries that failed.
TRANSCRIPT_RUN_COUNTER: dict[TranscriptState, str] = {
    "done": "transcripts_completed", "pending": "transcripts_rescheduled", "failed": "transcripts_failed",
    "absent": "transcripts_absent", "forbidden": "transcripts_forbidden", "not_found": "transcripts_not_found",
    "invalid": "transcripts_invalid", "error": "transcripts_errors",
}
# Every transcript counter of a run (RunStats field and sync_runs column), claimed and fetched included.
TRANSCRIPT_COUNTERS: tuple[str, ...] = ("transcripts_claimed", *TRANSCRIPT_RUN_COUNTER.values(),
                                        "transcripts_fetched")


def plural(n: int, word: str, many: str | None = None) -> str:
    """``1 page``, ``2 pages``: a count and its noun (``many``: an irregular plural)."""
    return f"{n} {word if n == 1 else many or word + 's'}"


def run_counts(run: Mapping[str, Any]) -> str:
    """``2 completed, 0 rescheduled, 1 not_found, 0 errors``: a run's counters (RunStats.as_dict() or a row).

    ``failed``, ``absent``, ``not_found`` and ``invalid`` show only when not 0.  A run that
    handled transcripts adds their counters after ``; transcripts:`` (``forbidden``: the
    plan has none), so each queue's items are counted on their own.
    """
    ended = [f"{run[name]} {name}" for name in ("failed", "absent", "not_found", "invalid") if run.get(name)]
    text = ", ".join([f"{run['completed']} completed", f"{run['rescheduled']} rescheduled", *ended,
                      plural(run["errors"], "error")])
    if run.get("rejected"):
        text += f", {run['rejected']} rejected"
    if any(run.get(name) for name in TRANSCRIPT_COUNTERS):
        t_ended = [f"{run[f'transcripts_{name}']} {name}" for name in
                   ("failed", "forbidden", "absent", "not_found", "invalid") if run.get(f"transcripts_{name}")]
        text += "; transcripts: " + ", ".join([
            f"{run['transcripts_completed']} completed", f"{run['transcripts_rescheduled']} rescheduled",
            *t_ended, plural(run["transcripts_errors"], "error")])
    return text
