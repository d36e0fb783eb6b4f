"""Transcripts (``call_transcripts``, ``call_transcript_lines``): the engine's batch write, the
rows, and pruning old lines and raw payloads (``etl prune``)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from etl.config import DEFAULT_WORKSPACE
from etl.policy import ClaimedItem, QueueUpdate
from etl.store._sql import bulk_insert, chunks, stamp
from etl.store.queue import owned, update_queue
from etl.tables import transcript_lines_t, transcripts_t

if TYPE_CHECKING:
    from etl.normalize import TranscriptRows
    from etl.results import ApiResult, Transcript


@dataclass(slots=True)
class TranscriptEntry:
    """One processed transcript item: the claim, the API's answer, the decision, the rows (None: none to write)."""

    item: ClaimedItem
    result: ApiResult[Transcript] | None
    update: QueueUpdate
    rows: TranscriptRows | None


def save_transcript_entries(conn: Connection, run_id: str, entries: Sequence[TranscriptEntry],
                            now: datetime, *, workspace: str = DEFAULT_WORKSPACE) -> list[TranscriptEntry]:
    """Write transcripts and transcript_queue updates of ``entries`` in the caller's transaction, the
    rows in ``workspace``.

    As :func:`etl.store.save_entries`: an entry whose lease this run lost is skipped entirely.
    """
    if not entries:
        return []
    mine = owned(conn, run_id, [e.item.call_id for e in entries], "transcript")
    entries = [e for e in entries if e.item.call_id in mine]
    if not entries:
        return []
    save_transcripts(conn, [e.rows for e in entries if e.rows is not None], now, workspace=workspace)
    update_queue(conn, run_id, [e.update for e in entries], now, "transcript")
    return entries


def save_transcripts(conn: Connection, transcripts: Sequence[TranscriptRows], now: datetime, *,
                     workspace: str = DEFAULT_WORKSPACE) -> None:
    """Replace each call's transcript rows as a whole, in the caller's transaction, new rows in
    ``workspace`` (a call's transcript stored under another workspace is left as it is).

    Unchanged content (the same hash) only moves ``last_synced_at``; so does a
    transcript ``etl prune`` pruned: its lines are never written again.  A call
    has one row per segment, so this is not :func:`etl.store._sql.replace_changed`.
    """
    by_id = {t.call_id: t for t in transcripts}
    if not by_id:
        return
    ids = list(by_id)
    t = transcripts_t.c
    stored: dict[str, tuple[str, bool, datetime]] = {}
    foreign: set[str] = set()
    for chunk in chunks(ids):
        for call_id, content_hash, pruned, first, owner in conn.execute(
            sa.select(t.call_id, sa.func.max(t.content_hash), sa.func.max(t.pruned_at), sa.func.min(t.first_synced_at),
                      sa.func.max(t.workspace))
            .where(t.call_id.in_(chunk)).group_by(t.call_id)
        ):
            if owner == workspace:
                stored[call_id] = (content_hash, pruned is not None, first)
            else:
                foreign.add(call_id)
    ids = [i for i in ids if i not in foreign]
    keep = [i for i in ids if i in stored and (stored[i][1] or stored[i][0] == by_id[i].content_hash)]
    for chunk in chunks(keep):
        conn.execute(sa.update(transcripts_t).where(t.call_id.in_(chunk)).values(last_synced_at=now))
    changed = [by_id[i] for i in ids if i not in keep]
    if not changed:
        return
    for chunk in chunks([c.call_id for c in changed if c.call_id in stored]):
        conn.execute(sa.delete(transcript_lines_t).where(transcript_lines_t.c.call_id.in_(chunk)))
        conn.execute(sa.delete(transcripts_t).where(t.call_id.in_(chunk)))
    segments = [dict(row, first_synced_at=stored[c.call_id][2]) if c.call_id in stored else row
                for c in changed for row in c.segments]
    if segments:
        stamp(segments, workspace)
        conn.execute(sa.insert(transcripts_t), segments)
    bulk_insert(conn, transcript_lines_t, [row for c in changed for row in c.lines], workspace=workspace)


def prune_transcript_lines(conn: Connection, ids: Sequence[str], now: datetime) -> int:
    """Delete the transcript lines of ``ids`` and mark their transcripts pruned at ``now``; lines deleted."""
    t = transcripts_t.c
    deleted = int(conn.execute(
        sa.delete(transcript_lines_t).where(transcript_lines_t.c.call_id.in_(ids))).rowcount)
    conn.execute(sa.update(transcripts_t).where(t.call_id.in_(ids), t.pruned_at.is_(None)).values(pruned_at=now))
    return deleted


def clear_raw_json(conn: Connection, table: sa.Table, ids: Sequence[str]) -> int:
    """Set ``raw_json`` to '' in the rows of ``table`` (``calls`` or ``call_summaries``) of ``ids``; how many."""
    return int(conn.execute(sa.update(table).where(table.c.call_id.in_(ids)).values(raw_json="")).rowcount)
