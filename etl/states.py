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


def run_counts(run: Mapping[str, Any]) -> str:
    """``2 completed, 0 rescheduled, 1 not_found, 0 errors``: a run's counters (RunStats.as_dict() or a row).

    ``failed``, ``absent``, ``not_found`` and ``invalid`` show only when not 0.
    """
    ended = [f"{run[name]} {name}" for name in ("failed", "absent", "not_found", "invalid") if run.get(name)]
    rejected = [f"{run['rejected']} rejected"] if run.get("rejected") else []
    return ", ".join([f"{run['completed']} completed", f"{run['rescheduled']} rescheduled", *ended,
                      f"{run['errors']} errors", *rejected])
