"""Turn one canonical summary, call or transcript into the rows of docs/contract.md's tables (pure, no I/O).

It sees the job's own types (:mod:`etl.results`) only: which API surface
served them is the adapters' business (:mod:`etl.api`).

Text that a database cannot hold is replaced, the same way on every database:
a NUL character (PostgreSQL ``text`` refuses it) and an unpaired surrogate
(not encodable as UTF-8) each become U+FFFD ``�``.  ``raw_json`` is the body as
received, where such characters are still JSON escapes, so nothing is lost.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from etl.models import API_ID_LENGTH
from etl.results import Call, Summary, Transcript
from etl.storable import REPLACEMENT, clean_text, json_text, utc_in_range

__all__ = ["REPLACEMENT", "clean_text"]  # re-exported: their home is etl.storable


Row = dict[str, Any]


@dataclass(slots=True)
class CallRows:
    """Every row one call contributes, ready for executemany."""

    parent: Row
    lines: list[Row] = field(default_factory=list)
    next_steps: list[Row] = field(default_factory=list)
    jobs: list[Row] = field(default_factory=list)
    job_fields: list[Row] = field(default_factory=list)


def typed_value(value: str | int | float | bool) -> tuple[str, str | None, float | None, bool | None]:
    """``(value_type, value_text, value_number, value_boolean)`` for a job field value.

    ``bool`` is tested first: in Python ``True`` is also an ``int``, and a
    boolean must never be stored as the number 1.
    """
    if isinstance(value, bool):
        return "boolean", None, None, value
    if isinstance(value, int | float):
        return "number", None, float(value), None
    return "string", clean_text(value), None, None


def normalize(data: Summary, raw_json: str, content_hash: str, now: datetime) -> CallRows:
    """One summary -> its rows (``type`` and ``title`` stay NULL where the surface has none)."""
    call_id = data.call_id
    summary = data.lines
    steps = data.next_steps
    jobs = data.jobs
    rows = CallRows(
        parent={
            "call_id": call_id,
            "status": data.status,
            "summary_text": None if summary is None else "\n".join(clean_text(s) for s in summary),
            "line_count": len(summary or ()),
            "next_step_count": len(steps or ()),
            "job_count": len(jobs),
            "type": _short(data.type),
            "title": None if data.title is None else clean_text(data.title),
            "content_hash": content_hash,
            "raw_json": raw_json,
            "first_synced_at": now,
            "last_synced_at": now,
        }
    )
    rows.lines = [
        {"call_id": call_id, "position": i, "text": clean_text(t)} for i, t in enumerate(summary or ())
    ]
    rows.next_steps = [
        {"call_id": call_id, "position": i, "text": clean_text(t)} for i, t in enumerate(steps or ())
    ]
    for j, job in enumerate(jobs):
        rows.jobs.append(
            {"call_id": call_id, "job_position": j, "name": clean_text(job.name), "icon": clean_text(job.icon)}
        )
        for f, fld in enumerate(job.fields):
            value_type, text, number, boolean = typed_value(fld.value)
            rows.job_fields.append({
                "call_id": call_id,
                "job_position": j,
                "field_position": f,
                "name": clean_text(fld.name),
                "value_type": value_type,
                "value_text": text,
                "value_number": number,
                "value_boolean": boolean,
            })
    return rows


# --- calls ------------------------------------------------------------------------

# E.164: "+", a country code that does not start with 0, at most 15 digits in all.
# The lower bound of 8 digits keeps out short codes and typos while accepting the
# shortest real national numbers.
_E164 = re.compile(r"\+[1-9][0-9]{7,14}")


def is_e164(number: str) -> bool:
    return _E164.fullmatch(number) is not None


def _utc(value: datetime | None, field: str = "time") -> datetime | None:
    """Naive UTC, as every timestamp column stores it; a time without an offset is taken as UTC.
    A time no database stores is refused (:class:`etl.storable.Refused`, naming ``field``)."""
    return utc_in_range(value, field)


def _short(value: str | None) -> str | None:
    return None if value is None else clean_text(value)[:API_ID_LENGTH]


def call_json(raw: Any) -> str:
    """The call object as stored in ``calls.raw_json``: compact JSON, non-ASCII kept as is where storable."""
    return json_text(raw)


@dataclass(slots=True)
class CallContextRows:
    """The rows one call contributes to ``calls``, ``call_participants`` and ``call_voicemails``."""

    parent: Row
    participants: list[Row] = field(default_factory=list)
    voicemails: list[Row] = field(default_factory=list)

    @property
    def call_id(self) -> str:
        return str(self.parent["call_id"])

    @property
    def not_e164(self) -> list[str]:
        """Participants kept with ``is_e164`` false (the caller logs them)."""
        return [p["number"] for p in self.participants if not p["is_e164"]]


def normalize_call(data: Call, raw_json: str, now: datetime) -> CallContextRows:
    """One call -> its rows.  ``raw_json`` is the call object's JSON text.

    A participant that is not E.164 is kept, flagged ``is_e164 = false``: the
    list is the API's own and its positions must stay the API's; analysts
    filter on the flag.  A party's actor and whether its number is the
    workspace's own are NULL where the surface does not say (v1).
    """
    rows = CallContextRows(parent={
        "call_id": data.id,
        "created_at": _utc(data.created_at, "createdAt"),
        "answered_at": _utc(data.answered_at, "answeredAt"),
        "completed_at": _utc(data.completed_at, "completedAt"),
        "updated_at": _utc(data.updated_at, "updatedAt"),
        "direction": _short(data.direction),
        "status": _short(data.status),
        "duration_seconds": data.duration,
        "phone_number_id": _short(data.phone_number_id),
        "user_id": _short(data.user_id),
        "answered_by": _short(data.answered_by),
        "initiated_by": _short(data.initiated_by),
        "forwarded_from": _short(data.forwarded_from),
        "forwarded_to": _short(data.forwarded_to),
        "actor_id": _short(data.actor_id),
        "call_route": _short(data.call_route),
        "ai_handled": _short(data.ai_handled),
        "participant_count": len(data.participants or ()),
        "content_hash": hashlib.sha256(raw_json.encode("utf-8", "surrogatepass")).hexdigest(),
        "raw_json": raw_json,
        "first_synced_at": now,
        "last_synced_at": now,
    })
    for position, party in enumerate(data.participants or ()):
        rows.participants.append({
            "call_id": data.id, "position": position,
            "number": clean_text(party.number)[:API_ID_LENGTH], "is_e164": is_e164(party.number),
            "actor_id": _short(party.actor_id), "is_own_number": party.is_own,
        })
    vm = data.voicemail
    if vm is not None:
        rows.voicemails.append({
            "call_id": data.id, "voicemail_id": _short(vm.id), "status": _short(vm.status),
            "duration_seconds": vm.duration,
            "recording_url": None if vm.recording_url is None else clean_text(vm.recording_url),
            "transcript": None if vm.transcript is None else clean_text(vm.transcript),
        })
    return rows


# --- transcripts (issue 19) -------------------------------------------------------------


@dataclass(slots=True)
class TranscriptRows:
    """Every row one call's transcript contributes to ``call_transcripts`` and ``call_transcript_lines``."""

    call_id: str
    content_hash: str
    segments: list[Row] = field(default_factory=list)
    lines: list[Row] = field(default_factory=list)


def transcript_base(transcript: Transcript, call_created_at: datetime | None) -> datetime | None:
    """What a dated segment's offsets are moved to: the call's start (``calls.created_at``) when stored,
    else the first segment's ``startTime``; None for a v1 transcript (its offsets are from the call's start)."""
    starts = [s.started_at for s in transcript.segments if s.started_at is not None]
    if not starts:
        return None
    return call_created_at or min(starts)


def normalize_transcript(transcript: Transcript, call_created_at: datetime | None, now: datetime) -> TranscriptRows:
    """One call's transcript -> its rows, every line's start/end in seconds from the call's start.

    A dated segment's offsets are from the segment's own start: its
    ``startTime`` minus the time base (:func:`transcript_base`) is added.  The
    stored hash covers the time base too, so a base that changes (the call
    row arrived) rewrites the lines.
    """
    base = transcript_base(transcript, call_created_at)
    digest = transcript.content_hash if base is None else f"{transcript.content_hash}|{base.isoformat()}"
    rows = TranscriptRows(transcript.call_id, hashlib.sha256(digest.encode()).hexdigest())
    seen: set[str] = set()
    for segment in transcript.segments:
        segment_id = clean_text(segment.segment_id)[:API_ID_LENGTH]
        if segment_id in seen:
            continue  # a segment listed twice (pages that shifted): stored once, as first listed
        seen.add(segment_id)
        offset = 0.0
        if base is not None and segment.started_at is not None:
            offset = (segment.started_at - base).total_seconds()
        dialogue = segment.dialogue or ()
        rows.segments.append({
            "call_id": transcript.call_id,
            "segment_id": segment_id,
            "status": segment.status,
            "started_at": segment.started_at,
            "created_at": segment.created_at,
            "duration_seconds": segment.duration,
            "offset_seconds": offset,
            "line_count": len(dialogue),
            "content_hash": rows.content_hash,
            "pruned_at": None,
            "first_synced_at": now,
            "last_synced_at": now,
        })
        rows.lines.extend({
            "call_id": transcript.call_id,
            "segment_id": segment_id,
            "position": position,
            "identifier": _short(line.identifier),
            "user_id": _short(line.user_id),
            "start_seconds": offset + line.start,
            "end_seconds": offset + line.end,
            "text": clean_text(line.content),
        } for position, line in enumerate(dialogue))
    return rows
