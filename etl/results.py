"""What the API answered for one call id: the domain value the policy and the store act on.

:mod:`etl.api` produces a :class:`FetchResult` per id (after in-run retries);
:mod:`etl.policy` turns it into a queue update and :mod:`etl.store` writes it.
It lives here, not in the HTTP client, so those pure modules need no HTTP.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Literal

from etl.schema import SummaryData

Kind = Literal["summary", "not_found", "invalid", "transient", "rejected"]


@dataclass(frozen=True, slots=True)
class FetchResult:
    """What the API answered for one id, after in-run retries.

    kind: ``summary`` (a valid 200; see ``summary.status``), ``not_found``
    (404), ``invalid`` (400), ``transient`` (retries exhausted; reschedule),
    ``rejected`` (a permanent problem with this id's answer, e.g. too large).
    """

    call_id: str
    kind: Kind
    http_status: int | None
    tries: int
    latency_ms: float
    summary: SummaryData | None = None
    raw_json: str | None = None
    content_hash: str | None = None
    error: str | None = None
    retry_after: float | None = None

    @property
    def api_status(self) -> str:
        """Short text for ``summary_queue.last_api_status``."""
        if self.summary is not None:
            return self.summary.status
        if self.http_status is not None:
            return f"http {self.http_status}"
        return "no response"


# --- transcripts (issue 19) -----------------------------------------------------------

# The segment key of a v1 transcript: GET /v1/call-transcripts/{id} returns one merged
# transcript per call, with no recording id (the dated surface keys a segment by its CR... id).
V1_SEGMENT_ID = "merged"


@dataclass(frozen=True, slots=True)
class DialogueLine:
    """One line as the API sent it: offsets in seconds from its segment's start (v1: from the call's)."""

    content: str
    start: float
    end: float
    identifier: str | None
    user_id: str | None  # v1 userId, or the dated surface's actorId; None: an external party


@dataclass(frozen=True, slots=True)
class TranscriptSegment:
    """One recording segment's transcript (a v1 transcript is one segment, :data:`V1_SEGMENT_ID`)."""

    segment_id: str
    status: str
    started_at: datetime | None  # naive UTC; None on v1
    created_at: datetime | None  # naive UTC
    duration: float | None
    dialogue: tuple[DialogueLine, ...] | None


@dataclass(frozen=True, slots=True)
class Transcript:
    """A call's whole transcript, from either API surface; ``content_hash`` covers every segment."""

    call_id: str
    segments: tuple[TranscriptSegment, ...]
    content_hash: str

    @property
    def status(self) -> str:
        """The call's transcript status: in-progress while any segment is, else completed when any is.

        No segment at all (the dated surface's empty list) reads as ``absent``.
        """
        statuses = {s.status for s in self.segments}
        for status in ("in-progress", "completed", "failed"):
            if status in statuses:
                return status
        return "absent"
