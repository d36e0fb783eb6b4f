"""Read-side queries for operators: `etl status`, `sync --dry-run`, `backfill` selection.

Every query here is bounded by an index (``ix_summary_queue_due`` on
``(state, next_attempt_at)``) or by a small table, so ``etl status`` stays fast
on a queue of millions.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from etl import store
from etl.health import ANSWERED, UNANSWERED, FetchHistory
from etl.states import ENDED_BADLY, QUEUE_STATES, TERMINAL_STATES, TRANSCRIPT_STATES
from etl.tables import discovery_runs_t, queue_t, rejected_t, runs_t, transcript_queue_t


def queue_counts(conn: Connection) -> dict[str, int]:
    q = queue_t.c
    counts: dict[str, int] = dict.fromkeys(QUEUE_STATES, 0)
    for state, n in conn.execute(sa.select(q.state, sa.func.count()).group_by(q.state)):
        counts[state] = int(n)
    return counts


def rejected_count(conn: Connection) -> int:
    """Rows of ``rejected_records``: API records kept aside because they could not be stored."""
    return int(conn.execute(sa.select(sa.func.count()).select_from(rejected_t)).scalar_one())


def transcript_counts(conn: Connection) -> dict[str, int]:
    """``transcript_queue`` items per state (issue 19); every state, 0 when none."""
    t = transcript_queue_t.c
    counts: dict[str, int] = dict.fromkeys(TRANSCRIPT_STATES, 0)
    for state, n in conn.execute(sa.select(t.state, sa.func.count()).group_by(t.state)):
        counts[state] = int(n)
    return counts


def due_now(conn: Connection, now: datetime) -> tuple[int, datetime | None]:
    """How many pending items are due, and the oldest due time among them."""
    q = queue_t.c
    row = conn.execute(
        sa.select(sa.func.count(), sa.func.min(q.next_attempt_at))
        .where(store.due(queue_t, now))
    ).one()
    return int(row[0]), row[1]


def transcripts_due_now(conn: Connection, now: datetime) -> int:
    """How many transcript items are due (what a sync with transcripts on claims after the summaries)."""
    return int(conn.execute(sa.select(sa.func.count()).where(store.due(transcript_queue_t, now))).scalar_one())


# Summary items whose call the API answered for: their transcript is worth asking for.
SYNCED_STATES = ("done", "failed", "absent")


def without_transcript(since: datetime | None = None, until: datetime | None = None) -> list[sa.ColumnElement[bool]]:
    """Summary items already synced whose call has no transcript item (transcripts turned on later);
    ``since``/``until``: only those whose summary item finished in that window."""
    q, t = queue_t.c, transcript_queue_t.c
    clauses: list[sa.ColumnElement[bool]] = [
        q.state.in_(SYNCED_STATES), ~sa.exists().where(t.call_id == q.call_id)]
    if since is not None:
        clauses.append(q.finished_at >= since)
    if until is not None:
        clauses.append(q.finished_at < until)
    return clauses


def count_without_transcript(conn: Connection, since: datetime | None = None, until: datetime | None = None) -> int:
    return int(conn.execute(sa.select(sa.func.count()).select_from(queue_t)
                            .where(*without_transcript(since, until))).scalar_one())


def queue_missing_transcripts(conn: Connection, now: datetime, since: datetime | None = None,
                              until: datetime | None = None, batch: int = 1000) -> int:
    """Queue (due now) the transcripts of up to ``batch`` synced calls that have none; how many were queued."""
    ids = conn.execute(sa.select(queue_t.c.call_id).where(*without_transcript(since, until))
                       .order_by(queue_t.c.call_id).limit(batch)).scalars().all()
    return store.enqueue_transcripts(conn, list(ids), now) if ids else 0


def transcript_lines_stored(conn: Connection) -> tuple[int, int]:
    """(transcript lines stored, calls they belong to): what a prune of everything would delete."""
    from etl.tables import transcript_lines_t

    row = conn.execute(sa.select(sa.func.count(), sa.func.count(sa.distinct(transcript_lines_t.c.call_id)))).one()
    return int(row[0]), int(row[1])


def due_ids(conn: Connection, now: datetime, limit: int) -> list[dict[str, Any]]:
    q = queue_t.c
    rows = conn.execute(
        sa.select(q.call_id, q.attempts, q.next_attempt_at, q.last_error)
        .where(store.due(queue_t, now))
        .order_by(q.next_attempt_at)
        .limit(limit)
    )
    return [dict(r._mapping) for r in rows]


def last_runs(conn: Connection, limit: int = 5) -> list[dict[str, Any]]:
    rows = conn.execute(sa.select(runs_t).order_by(runs_t.c.id.desc()).limit(limit))
    return [dict(r._mapping) for r in rows]


def _answered() -> sa.ColumnElement[int]:
    """A run's items that the API answered, both queues (the rule of etl.health.nothing_fetched, in SQL)."""
    r = runs_t.c
    return sum((r[name] for name in ANSWERED[1:]), r[ANSWERED[0]])


def _unanswered() -> sa.ColumnElement[int]:
    r = runs_t.c
    return sum((r[name] for name in UNANSWERED[1:]), r[UNANSWERED[0]])


def last_successful_run(conn: Connection) -> dict[str, Any] | None:
    """The newest run that finished with exit 0 and reached the API (or had nothing to ask it)."""
    r = runs_t.c
    row = conn.execute(
        sa.select(runs_t).where(r.exit_code == 0, r.finished_at.is_not(None),
                                sa.or_(_answered() > 0, _unanswered() == 0))
        .order_by(r.id.desc()).limit(1)
    ).first()
    return dict(row._mapping) if row else None


def fetch_history(conn: Connection) -> FetchHistory:
    """When the API last answered, and the runs with work that got no answer since."""
    r = runs_t.c
    good = conn.execute(
        sa.select(r.id, sa.func.coalesce(r.finished_at, r.started_at))
        .where(_answered() > 0).order_by(r.id.desc()).limit(1)
    ).first()
    failed = conn.execute(
        sa.select(sa.func.count(), sa.func.min(r.started_at))
        .where(r.id > (good[0] if good else 0), _answered() == 0, _unanswered() > 0)
    ).one()
    return FetchHistory(good[1] if good else None, failed[1], int(failed[0]))


def top_errors(conn: Connection, limit: int = 5) -> list[dict[str, Any]]:
    """Most frequent ``last_error`` texts among items that ended badly or are being retried.

    A pending item has a ``last_error`` only while transient failures
    (connection errors, timeouts, 5xx, 429) reschedule it: an outage shows here.
    """
    q = queue_t.c
    rows = conn.execute(
        sa.select(q.state, q.last_error, sa.func.count().label("count"))
        .where(q.state.in_(("pending", *ENDED_BADLY)), q.last_error.is_not(None))
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


def count_selected(conn: Connection, selection: Selection) -> dict[str, int]:
    q = queue_t.c
    rows = conn.execute(sa.select(q.state, sa.func.count()).where(*selection.where()).group_by(q.state))
    return {state: int(n) for state, n in rows}


def requeue(conn: Connection, selection: Selection, now: datetime) -> int:
    """Make selected terminal items due now, with fresh counters."""
    assert all(s in TERMINAL_STATES for s in selection.states)
    return store.requeue(conn, selection.where(), now)


def last_discovery(conn: Connection) -> dict[str, Any] | None:
    """The newest ``discovery_runs`` row (finished or not), for `etl status`."""
    d = discovery_runs_t.c
    row = conn.execute(sa.select(discovery_runs_t).order_by(d.id.desc()).limit(1)).first()
    return dict(row._mapping) if row else None
