"""``etl prune``: forget transcripts and raw payloads on schedule (issue 19, part 5).

Retention runs from the call, not from when it was synced: a call's age is
``now - calls.created_at``; a transcript whose call has no ``calls`` row ages
from the transcript's ``createdAt`` (else from when it was first stored), a
summary without a call row from when it was first stored.

* ``--transcripts-older-than DAYS`` deletes the ``call_transcript_lines`` of
  such calls and marks their ``call_transcripts`` rows ``pruned_at`` (the rows
  that say a transcript existed, its status, duration and line count, stay).
  A pruned transcript is never written again: its queue item stays ``done``, and
  should it be fetched again (a re-queue) the stored rows only get
  ``last_synced_at`` (:func:`etl.store.save_transcripts`).
* ``--raw-json-older-than DAYS`` sets ``call_summaries.raw_json`` and
  ``calls.raw_json`` to ``''`` (both columns are NOT NULL).  Their content
  hashes stay, so an unchanged re-sync does not bring the payload back; a
  changed one stores the new payload, which the next prune clears again.

Work is done in batches of ``batch_size`` calls, each in a transaction of its
own that touches those calls' rows only (primary-key lookups), so it runs from
cron next to ``etl sync`` without long locks.  Batches walk the primary key in
order (keyset), so each row is looked at once.  ``dry_run`` counts and changes nothing.
A prune is of one workspace's rows (``workspace``; issue 27), as each has its own retention.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from etl import store
from etl.config import DEFAULT_WORKSPACE
from etl.errors import UsageError
from etl.logs import get_logger
from etl.tables import calls_t, summaries_t, transcript_lines_t, transcripts_t

__all__ = ["MAX_AGE_DAYS", "PruneResult", "check_age", "prune"]

# An age beyond this is a slip (a number of seconds typed as days, 1e9): nothing here is that old.
MAX_AGE_DAYS = 36_500.0


@dataclass
class PruneResult:
    """What a prune removed (or, with ``dry_run``, would remove)."""

    dry_run: bool
    transcripts_before: datetime | None = None  # calls that started before this lose their lines
    raw_json_before: datetime | None = None
    transcript_calls: int = 0  # calls whose transcript lines were deleted
    transcript_lines: int = 0
    summary_payloads: int = 0  # call_summaries.raw_json cleared
    call_payloads: int = 0  # calls.raw_json cleared
    batches: int = 0

    def as_dict(self) -> dict[str, Any]:
        return {
            "dry_run": self.dry_run, "transcripts_before": _iso(self.transcripts_before),
            "raw_json_before": _iso(self.raw_json_before), "transcript_calls": self.transcript_calls,
            "transcript_lines": self.transcript_lines, "summary_payloads": self.summary_payloads,
            "call_payloads": self.call_payloads, "batches": self.batches,
        }


def check_age(option: str, days: float | None) -> None:
    """Refuse (:class:`UsageError`, exit 2) an age that is not a finite number of days from 0 to 100 years."""
    if days is None:
        return
    if not math.isfinite(days) or not 0 <= days <= MAX_AGE_DAYS:
        raise UsageError(f"--{option} must be a number of days from 0 to {MAX_AGE_DAYS:g} (got {days:g})")


def _iso(value: datetime | None) -> str | None:
    return None if value is None else value.isoformat(timespec="seconds")


def prune(engine: Engine, now: datetime, *, transcripts_older_than: float | None = None,
          raw_json_older_than: float | None = None, dry_run: bool = False, batch_size: int = 500,
          workspace: str = DEFAULT_WORKSPACE) -> PruneResult:
    """Prune ``workspace``'s rows older than the given numbers of days (None: leave them); see the module
    docstring."""
    check_age("transcripts-older-than", transcripts_older_than)
    check_age("raw-json-older-than", raw_json_older_than)
    result = PruneResult(dry_run)
    log = get_logger()
    if transcripts_older_than is not None:
        result.transcripts_before = now - timedelta(days=transcripts_older_than)
        _prune_transcripts(engine, result, result.transcripts_before, now, batch_size, workspace)
    if raw_json_older_than is not None:
        result.raw_json_before = before = now - timedelta(days=raw_json_older_than)
        c, s = calls_t.c, summaries_t.c
        summary_start = sa.func.coalesce(
            sa.select(c.created_at).where(c.call_id == s.call_id).scalar_subquery(), s.first_synced_at)
        result.summary_payloads = _clear_payloads(engine, result, summaries_t, summary_start, before, batch_size,
                                                  workspace)
        call_start = sa.func.coalesce(c.created_at, c.first_synced_at)
        result.call_payloads = _clear_payloads(engine, result, calls_t, call_start, before, batch_size, workspace)
    log.info("prune finished" if not dry_run else "prune dry run", **result.as_dict())
    return result


def _transcript_ages(workspace: str) -> sa.Select[Any]:
    """(call_id, the call's start) of every call of ``workspace`` with transcript lines not pruned yet."""
    t, c = transcripts_t.c, calls_t.c
    started = sa.func.coalesce(sa.func.max(c.created_at), sa.func.min(t.created_at), sa.func.min(t.first_synced_at))
    return (
        sa.select(t.call_id, started.label("started"))
        .select_from(transcripts_t.outerjoin(calls_t, c.call_id == t.call_id))
        .where(t.workspace == workspace, t.pruned_at.is_(None))
        .group_by(t.call_id)
    )


def _prune_transcripts(engine: Engine, result: PruneResult, before: datetime, now: datetime,
                       batch_size: int, workspace: str) -> None:
    ages = _transcript_ages(workspace).subquery()
    old = sa.select(ages.c.call_id).where(ages.c.started < before)
    lines = transcript_lines_t.c
    if result.dry_run:
        with engine.connect() as conn:
            result.transcript_calls = conn.execute(sa.select(sa.func.count()).select_from(old.subquery())).scalar_one()
            result.transcript_lines = conn.execute(
                sa.select(sa.func.count()).select_from(transcript_lines_t).where(lines.call_id.in_(old))
            ).scalar_one()
        return
    last = ""
    while True:
        with engine.begin() as conn:
            ids = list(conn.execute(
                old.where(ages.c.call_id > last).order_by(ages.c.call_id).limit(batch_size)).scalars())
            if not ids:
                return
            result.transcript_lines += store.prune_transcript_lines(conn, ids, now)
        result.transcript_calls += len(ids)
        result.batches += 1
        last = ids[-1]


def _clear_payloads(engine: Engine, result: PruneResult, table: sa.Table, started: Any, before: datetime,
                    batch_size: int, workspace: str) -> int:
    """Set ``raw_json`` to '' for ``workspace``'s rows of ``table`` whose call started before ``before``; how
    many."""
    key = table.c.call_id
    pick = sa.select(key).where(table.c.workspace == workspace, table.c.raw_json != "", started < before)
    if result.dry_run:
        with engine.connect() as conn:
            return int(conn.execute(sa.select(sa.func.count()).select_from(pick.subquery())).scalar_one())
    cleared = 0
    last = ""
    while True:
        with engine.begin() as conn:
            ids = list(conn.execute(pick.where(key > last).order_by(key).limit(batch_size)).scalars())
            if not ids:
                return cleared
            cleared += store.clear_raw_json(conn, table, ids)
        result.batches += 1
        last = ids[-1]
