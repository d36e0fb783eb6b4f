"""Turn one validated summary into the rows of docs/contract.md's tables (pure, no I/O).

Text that a database cannot hold is replaced, the same way on every database:
a NUL character (PostgreSQL ``text`` refuses it) and an unpaired surrogate
(not encodable as UTF-8) each become U+FFFD ``�``.  ``raw_json`` is the body as
received, where such characters are still JSON escapes, so nothing is lost.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from etl.schema import SummaryData

REPLACEMENT = "\ufffd"

Row = dict[str, Any]


def clean_text(value: str) -> str:
    """``value`` with NUL and unpaired surrogates replaced by U+FFFD."""
    if value.isascii():
        return value.replace("\x00", REPLACEMENT) if "\x00" in value else value
    if "\x00" in value:
        value = value.replace("\x00", REPLACEMENT)
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        # UTF-16 rejoins valid pairs and gives one U+FFFD per lone surrogate.
        value = value.encode("utf-16", "surrogatepass").decode("utf-16", "replace")
    return value


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


def normalize(data: SummaryData, raw_json: str, content_hash: str, now: datetime) -> CallRows:
    call_id = data.callId
    summary = data.summary
    steps = data.nextSteps
    jobs = data.jobs or []
    rows = CallRows(
        parent={
            "call_id": call_id,
            "status": data.status,
            "summary_text": None if summary is None else "\n".join(clean_text(s) for s in summary),
            "line_count": len(summary or ()),
            "next_step_count": len(steps or ()),
            "job_count": len(jobs),
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
        for f, fld in enumerate(job.result.data):
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
