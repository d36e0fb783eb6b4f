"""Read-side queries for operators: `etl status`, `sync --dry-run`, `backfill` selection.

Every query here is bounded by an index (``ix_summary_queue_due`` on
``(workspace, state, next_attempt_at)``) or by a small table, so ``etl status`` stays fast
on a queue of millions.  Every query is of one workspace (issue 27: ``workspace``, the
settings' ``workspace``; ``default`` without a workspaces file).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from etl import store
from etl.config import DEFAULT_WORKSPACE
from etl.health import ANSWERED, UNANSWERED, FetchHistory
from etl.states import ENDED_BADLY, QUEUE_STATES, TERMINAL_STATES, TRANSCRIPT_STATES
from etl.tables import discovery_runs_t, queue_t, rejected_t, runs_t, transcript_queue_t


def queue_counts(conn: Connection, *, workspace: str = DEFAULT_WORKSPACE) -> dict[str, int]:
    """``summary_queue`` items of ``workspace`` per state; every state, 0 when none."""
    q = queue_t.c
    counts: dict[str, int] = dict.fromkeys(QUEUE_STATES, 0)
    for state, n in conn.execute(sa.select(q.state, sa.func.count()).where(q.workspace == workspace)
                                 .group_by(q.state)):
        counts[state] = int(n)
    return counts


def rejected_count(conn: Connection, *, workspace: str = DEFAULT_WORKSPACE) -> int:
    """Rows of ``rejected_records`` of ``workspace``: API records kept aside because they could not be stored."""
    return int(conn.execute(sa.select(sa.func.count()).select_from(rejected_t)
                            .where(rejected_t.c.workspace == workspace)).scalar_one())


def transcript_counts(conn: Connection, *, workspace: str = DEFAULT_WORKSPACE) -> dict[str, int]:
    """``transcript_queue`` items of ``workspace`` per state (issue 19); every state, 0 when none."""
    t = transcript_queue_t.c
    counts: dict[str, int] = dict.fromkeys(TRANSCRIPT_STATES, 0)
    for state, n in conn.execute(sa.select(t.state, sa.func.count()).where(t.workspace == workspace)
                                 .group_by(t.state)):
        counts[state] = int(n)
    return counts


def due_now(conn: Connection, now: datetime, *, workspace: str = DEFAULT_WORKSPACE) -> tuple[int, datetime | None]:
    """How many pending items of ``workspace`` are due, and the oldest due time among them."""
    q = queue_t.c
    row = conn.execute(
        sa.select(sa.func.count(), sa.func.min(q.next_attempt_at))
        .where(store.due(queue_t, now, workspace))
    ).one()
    return int(row[0]), row[1]


def transcripts_due_now(conn: Connection, now: datetime, *, workspace: str = DEFAULT_WORKSPACE) -> int:
    """How many transcript items of ``workspace`` are due (what a sync with transcripts on claims after the
    summaries)."""
    return int(conn.execute(sa.select(sa.func.count())
                            .where(store.due(transcript_queue_t, now, workspace))).scalar_one())


# Summary items whose call the API answered for: their transcript is worth asking for.
SYNCED_STATES = ("done", "failed", "absent")


def without_transcript(since: datetime | None = None, until: datetime | None = None, *,
                       workspace: str = DEFAULT_WORKSPACE) -> list[sa.ColumnElement[bool]]:
    """``workspace``'s summary items already synced whose call has no transcript item (transcripts turned on
    later); ``since``/``until``: only those whose summary item finished in that window."""
    q, t = queue_t.c, transcript_queue_t.c
    clauses: list[sa.ColumnElement[bool]] = [
        q.workspace == workspace, q.state.in_(SYNCED_STATES), ~sa.exists().where(t.call_id == q.call_id)]
    if since is not None:
        clauses.append(q.finished_at >= since)
    if until is not None:
        clauses.append(q.finished_at < until)
    return clauses


def count_without_transcript(conn: Connection, since: datetime | None = None, until: datetime | None = None, *,
                             workspace: str = DEFAULT_WORKSPACE) -> int:
    return int(conn.execute(sa.select(sa.func.count()).select_from(queue_t)
                            .where(*without_transcript(since, until, workspace=workspace))).scalar_one())


def queue_missing_transcripts(conn: Connection, now: datetime, since: datetime | None = None,
                              until: datetime | None = None, batch: int = 1000, *,
                              workspace: str = DEFAULT_WORKSPACE) -> int:
    """Queue (due now) the transcripts of up to ``batch`` synced calls of ``workspace`` that have none; how
    many were queued."""
    ids = conn.execute(sa.select(queue_t.c.call_id).where(*without_transcript(since, until, workspace=workspace))
                       .order_by(queue_t.c.call_id).limit(batch)).scalars().all()
    return store.enqueue_transcripts(conn, list(ids), now, workspace=workspace) if ids else 0


def transcript_lines_stored(conn: Connection, *, workspace: str = DEFAULT_WORKSPACE) -> tuple[int, int]:
    """(transcript lines stored, calls they belong to) in ``workspace``: what a prune of everything would
    delete."""
    from etl.tables import transcript_lines_t

    lines = transcript_lines_t.c
    row = conn.execute(sa.select(sa.func.count(), sa.func.count(sa.distinct(lines.call_id)))
                       .where(lines.workspace == workspace)).one()
    return int(row[0]), int(row[1])


def due_ids(conn: Connection, now: datetime, limit: int, *, workspace: str = DEFAULT_WORKSPACE) -> list[dict[str, Any]]:
    q = queue_t.c
    rows = conn.execute(
        sa.select(q.call_id, q.attempts, q.next_attempt_at, q.last_error)
        .where(store.due(queue_t, now, workspace))
        .order_by(q.next_attempt_at)
        .limit(limit)
    )
    return [dict(r._mapping) for r in rows]


def last_runs(conn: Connection, limit: int = 5, *, workspace: str = DEFAULT_WORKSPACE) -> list[dict[str, Any]]:
    rows = conn.execute(sa.select(runs_t).where(runs_t.c.workspace == workspace)
                        .order_by(runs_t.c.id.desc()).limit(limit))
    return [dict(r._mapping) for r in rows]


def _answered() -> sa.ColumnElement[int]:
    """A run's items that the API answered, both queues (the rule of etl.health.nothing_fetched, in SQL)."""
    r = runs_t.c
    return sum((r[name] for name in ANSWERED[1:]), r[ANSWERED[0]])


def _unanswered() -> sa.ColumnElement[int]:
    r = runs_t.c
    return sum((r[name] for name in UNANSWERED[1:]), r[UNANSWERED[0]])


def last_successful_run(conn: Connection, *, workspace: str = DEFAULT_WORKSPACE) -> dict[str, Any] | None:
    """``workspace``'s newest run that finished with exit 0 and reached the API (or had nothing to ask it)."""
    r = runs_t.c
    row = conn.execute(
        sa.select(runs_t).where(r.workspace == workspace, r.exit_code == 0, r.finished_at.is_not(None),
                                sa.or_(_answered() > 0, _unanswered() == 0))
        .order_by(r.id.desc()).limit(1)
    ).first()
    return dict(row._mapping) if row else None


def fetch_history(conn: Connection, *, workspace: str = DEFAULT_WORKSPACE) -> FetchHistory:
    """When the API last answered ``workspace``'s runs, and its runs with work that got no answer since."""
    r = runs_t.c
    good = conn.execute(
        sa.select(r.id, sa.func.coalesce(r.finished_at, r.started_at))
        .where(r.workspace == workspace, _answered() > 0).order_by(r.id.desc()).limit(1)
    ).first()
    failed = conn.execute(
        sa.select(sa.func.count(), sa.func.min(r.started_at))
        .where(r.workspace == workspace, r.id > (good[0] if good else 0), _answered() == 0, _unanswered() > 0)
    ).one()
    return FetchHistory(good[1] if good else None, failed[1], int(failed[0]))


def top_errors(conn: Connection, limit: int = 5, *, workspace: str = DEFAULT_WORKSPACE) -> list[dict[str, Any]]:
    """Most frequent ``last_error`` texts among ``workspace``'s items that ended badly or are being retried.

    A pending item has a ``last_error`` only while transient failures
    (connection errors, timeouts, 5xx, 429) reschedule it: an outage shows here.
    """
    q = queue_t.c
    rows = conn.execute(
        sa.select(q.state, q.last_error, sa.func.count().label("count"))
        .where(q.workspace == workspace, q.state.in_(("pending", *ENDED_BADLY)), q.last_error.is_not(None))
        .group_by(q.state, q.last_error)
        .order_by(sa.desc("count"))
        .limit(limit)
    )
    return [dict(r._mapping) for r in rows]


@dataclass(frozen=True)
class Selection:
    """Which terminal items `etl backfill` re-queues."""

    states: tuple[str, ...]
    since: datetime | None = None
    until: datetime | None = None

    def where(self) -> list[sa.ColumnElement[bool]]:
        q = queue_t.c
        clauses: list[sa.ColumnElement[bool]] = [q.state.in_(self.states)]
        if self.since is not None:
            clauses.append(q.finished_at >= self.since)
        if self.until is not None:
            clauses.append(q.finished_at < self.until)
        return clauses


def count_selected(conn: Connection, selection: Selection, *, workspace: str = DEFAULT_WORKSPACE) -> dict[str, int]:
    q = queue_t.c
    rows = conn.execute(sa.select(q.state, sa.func.count()).where(q.workspace == workspace, *selection.where())
                        .group_by(q.state))
    return {state: int(n) for state, n in rows}


def requeue(conn: Connection, selection: Selection, now: datetime, *, workspace: str = DEFAULT_WORKSPACE) -> int:
    """Make ``workspace``'s selected terminal items due now, with fresh counters."""
    assert all(s in TERMINAL_STATES for s in selection.states)
    return store.requeue(conn, selection.where(), now, workspace=workspace)


def last_discovery(conn: Connection, *, workspace: str = DEFAULT_WORKSPACE) -> dict[str, Any] | None:
    """``workspace``'s newest ``discovery_runs`` row (finished or not), for `etl status`."""
    d = discovery_runs_t.c
    row = conn.execute(sa.select(discovery_runs_t).where(d.workspace == workspace)
                       .order_by(d.id.desc()).limit(1)).first()
    return dict(row._mapping) if row else None
