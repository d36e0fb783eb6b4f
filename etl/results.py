"""What the API answered for one request: the one result type of every endpoint.

:mod:`etl.api` produces an :class:`ApiResult` per request (after in-run
retries): a summary for an id (``data`` a :class:`SummaryAnswer`), a call, a
page of calls, lines or conversations.  :mod:`etl.policy` turns a summary's
result into a queue update and :mod:`etl.store` writes it.  It lives here, not
in the HTTP client, so those pure modules need no HTTP.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any, Generic, Literal, TypeVar

from etl.schema import CallData, DatedCall, DatedSummary, SummaryData

Kind = Literal["ok", "not_found", "invalid", "transient", "rejected"]

M = TypeVar("M")


@dataclass(frozen=True, slots=True, kw_only=True)
class ApiResult(Generic[M]):
    """What the API answered for one request, after in-run retries.

    kind: ``ok`` (a valid 200: ``data`` is the parsed value, ``raw`` its JSON),
    ``not_found`` (404), ``invalid`` (400), ``transient`` (retries exhausted;
    reschedule), ``rejected`` (a permanent problem with the answer, e.g. a body
    over the size limit).  ``what`` names the request (``GET /v1/calls/AC1``).
    ``latency_ms`` is the API's latency; ``wait_ms`` the rate budget's wait before it.
    """

    what: str
    kind: Kind
    http_status: int | None
    tries: int
    latency_ms: float  # the API's: from the first request sent to the answer (retries included)
    wait_ms: float = 0.0  # time this request waited for slots of the key's rate budget, apart from latency_ms
    data: M | None = None
    raw: Any = None
    error: str | None = None
    retry_after: float | None = None

    @property
    def api_status(self) -> str:
        """Short text for ``summary_queue.last_api_status``: the summary's status, else the HTTP status."""
        status = getattr(self.data, "status", None)
        if isinstance(status, str):
            return status
        if self.http_status is not None:
            return f"http {self.http_status}"
        return "no response"


@dataclass(frozen=True, slots=True, kw_only=True)
class SummaryAnswer:
    """A summary as one surface served it (``data`` of a summary's :class:`ApiResult`).

    ``raw_json`` is what ``call_summaries.raw_json`` stores: v1's response body,
    or the dated surface's ``summary`` object.  ``call``/``call_json``: the call
    that came in the same answer (the dated surface), else None.
    ``absent_is_final``: the surface's ``absent`` means no summary will ever
    exist (the dated surface), rather than "not yet" (v1).
    """

    call_id: str
    summary: SummaryData | DatedSummary
    raw_json: str
    content_hash: str
    call: CallData | DatedCall | None = None
    call_json: str | None = None
    absent_is_final: bool = False

    @property
    def status(self) -> str:
        return self.summary.status


SummaryResult = ApiResult[SummaryAnswer]




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


__all__ = ["V1_SEGMENT_ID", "ApiResult", "DialogueLine", "Kind", "SummaryAnswer", "SummaryResult", "Transcript",
           "TranscriptSegment"]
