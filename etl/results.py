"""What the API answered, in the job's own terms: the result type of every request and the canonical
call, summary and transcript.

:mod:`etl.api` produces an :class:`ApiResult` per request (after in-run
retries): a summary for an id (``data`` a :class:`SummaryAnswer`), a call, a
:class:`Page` of a listing.  Each API surface's adapter maps its wire models
(:mod:`etl.schema`) to the canonical :class:`Call`, :class:`Summary` and
:class:`Transcript` here; :mod:`etl.normalize`, :mod:`etl.policy` and the store
see only these, never a surface.  It lives here, not in the HTTP client, so
those pure modules need no HTTP.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any, Generic, Literal, TypeVar

Kind = Literal["ok", "not_found", "invalid", "transient", "rejected"]

M = TypeVar("M")


JobValue = str | int | float | bool


@dataclass(frozen=True, slots=True)
class JobField:
    """One field of a job's result: ``value`` exactly as sent (never coerced: ``true`` is no ``1``)."""

    name: str
    value: JobValue


@dataclass(frozen=True, slots=True)
class Job:
    """One AI job run on a call (e.g. lead qualification) and its fields."""

    name: str
    icon: str
    fields: tuple[JobField, ...]


@dataclass(frozen=True, slots=True, kw_only=True)
class Summary:
    """A call's AI summary, whichever surface served it.

    ``lines``/``next_steps``: None when the API sent null.  ``type`` (human or
    agent) and ``title`` exist on the dated surface only (None on v1).
    """

    call_id: str
    status: str
    lines: tuple[str, ...] | None
    next_steps: tuple[str, ...] | None
    jobs: tuple[Job, ...] = ()
    type: str | None = None
    title: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class Party:
    """One party of a call: its number as sent and, where the surface says, its actor and whether the
    number is the workspace's own (None: the surface does not say, as on v1)."""

    number: str
    actor_id: str | None = None
    is_own: bool | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class Voicemail:
    """A voicemail left on a call (the dated surface's ``include=voicemail``)."""

    id: str | None = None
    status: str | None = None
    duration: int | None = None
    recording_url: str | None = None
    transcript: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class Call:
    """A call, whichever surface served it.  Times as sent (aware or naive UTC); ``user_id``: the
    user who handled it (v1 ``userId``; dated: the actor when it is a user)."""

    id: str
    created_at: datetime | None = None
    answered_at: datetime | None = None
    completed_at: datetime | None = None
    updated_at: datetime | None = None
    direction: str | None = None
    status: str | None = None
    duration: int | None = None
    phone_number_id: str | None = None
    user_id: str | None = None
    answered_by: str | None = None
    initiated_by: str | None = None
    forwarded_from: str | None = None
    forwarded_to: str | None = None
    actor_id: str | None = None  # dated surface only
    call_route: str | None = None  # dated surface only
    ai_handled: str | None = None  # dated surface only
    participants: tuple[Party, ...] | None = None
    voicemail: Voicemail | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class Conversation:
    """A conversation of one line (the v1 walk's middle step): its id and the other parties' numbers."""

    id: str | None
    participants: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Page(Generic[M]):
    """One page of a listing: its items (canonical, or a surface's own for the v1 walk's lines and
    conversations), each item's JSON as received, and the token or cursor of the next page (None: last)."""

    items: tuple[M, ...]
    raws: tuple[Any, ...]
    next: str | None


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
    summary: Summary
    raw_json: str
    content_hash: str
    call: Call | None = None
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


__all__ = ["V1_SEGMENT_ID", "ApiResult", "Call", "Conversation", "DialogueLine", "Job", "JobField", "JobValue",
           "Kind", "Page", "Party", "Summary", "SummaryAnswer", "SummaryResult", "Transcript", "TranscriptSegment",
           "Voicemail"]
