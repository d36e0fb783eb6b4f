"""The two queues (``summary_queue``, ``transcript_queue``): enqueue, claim with a lease, release,
write the engine's decisions, make ids due, re-queue ended items.

Claiming moves ``next_attempt_at`` to the lease's expiry: the claim query stays
``workspace = :w AND state = 'pending' AND next_attempt_at <= now`` on one index, and an item whose
run died becomes due again by itself when the lease runs out.

Every queue is per workspace (issue 27): items are enqueued into, claimed from and made due
in the caller's ``workspace`` only.  Call ids are global, so an id queued under another
workspace is left as it is (enqueueing it again is a no-op, as for any queued id).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import mysql as mysql_dialect
from sqlalchemy.dialects import sqlite as sqlite_dialect
from sqlalchemy.engine import Connection

from etl.config import DEFAULT_WORKSPACE
from etl.policy import ClaimedItem, QueueName, QueueUpdate
from etl.store._sql import chunks, execute_many, is_server, prepare, read_in
from etl.tables import call_lookups_t, calls_t, queue_t, transcript_queue_t

# A call made due "at the head of the line" goes this much before the oldest due item.
_AHEAD = timedelta(milliseconds=1)


def queue_table(queue: QueueName) -> sa.Table:
    return transcript_queue_t if queue == "transcript" else queue_t


def due(table: sa.Table, now: datetime, workspace: str = DEFAULT_WORKSPACE) -> sa.ColumnElement[bool]:
    """What makes an item of a workspace's queue due: what a claim takes (on the
    ``(workspace, state, next_attempt_at)`` index)."""
    return sa.and_(table.c.workspace == workspace, table.c.state == "pending", table.c.next_attempt_at <= now)


# --- enqueue ----------------------------------------------------------------------


def enqueue_ids(conn: Connection, ids: Sequence[str], now: datetime | None = None, *,
                workspace: str = DEFAULT_WORKSPACE) -> int:
    """Insert ids not yet queued into ``workspace``'s queue, due at ``now``; existing rows (whatever their
    state or workspace) are untouched.

    Returns how many were new.  One statement per call, whatever the batch size.
    ``now`` is the app's clock: every caller in ``etl`` passes it (docs/architecture.md
    "Time"); None leaves the stamps to the server defaults, as for a row made by hand.
    """
    return _insert_ignore(conn, queue_t, ids, now, workspace)


def enqueue_transcripts(conn: Connection, ids: Sequence[str], now: datetime, *,
                        workspace: str = DEFAULT_WORKSPACE) -> int:
    """Queue the transcripts of these calls (``transcripts`` setting on); queued ids stay as they are.

    The one way transcript items are made: the sync engine calls it for every
    summary item the API answered, v1 discovery for the completed calls it
    enqueues, in their own transactions.  Due at ``now``, in ``workspace``.  Returns how many were new.
    """
    return _insert_ignore(conn, transcript_queue_t, ids, now, workspace)


def _insert_ignore(conn: Connection, table: sa.Table, ids: Sequence[str], now: datetime | None,
                   workspace: str) -> int:
    """Insert ``ids`` into a queue table in ``workspace``, skipping queued ones; ``now`` (None: server
    defaults) stamps them."""
    ids = list(dict.fromkeys(ids))
    if not ids:
        return 0
    dialect = conn.dialect.name
    if dialect == "postgresql":
        # Table name from our own models, never from input.
        if now is None:
            sql = (f"INSERT INTO {table.name} (call_id, workspace) SELECT unnest(CAST(:ids AS varchar[])), :ws "
                   "ON CONFLICT (call_id) DO NOTHING")
            return conn.execute(sa.text(sql), {"ids": ids, "ws": workspace}).rowcount
        sql = (f"INSERT INTO {table.name} (call_id, next_attempt_at, enqueued_at, updated_at, workspace) "
               "SELECT unnest(CAST(:ids AS varchar[])), :now, :now, :now, :ws ON CONFLICT (call_id) DO NOTHING")
        return conn.execute(sa.text(sql), {"ids": ids, "now": now, "ws": workspace}).rowcount
    stamp = {} if now is None else {"next_attempt_at": now, "enqueued_at": now, "updated_at": now}
    rows = [{"call_id": i, "workspace": workspace, **stamp} for i in ids]
    if dialect == "sqlite":
        ins: Any = sqlite_dialect.insert(table).on_conflict_do_nothing(index_elements=["call_id"])
    else:
        ins = mysql_dialect.insert(table).prefix_with("IGNORE")
    return conn.execute(ins, rows).rowcount


def analyze_queue(conn: Connection) -> None:
    """Refresh the planner's statistics of the queue after a bulk load."""
    dialect = conn.dialect.name
    if dialect == "postgresql":
        conn.exec_driver_sql("ANALYZE summary_queue")
    elif dialect in ("mysql", "mariadb"):
        conn.exec_driver_sql("ANALYZE TABLE summary_queue").fetchall()
    else:
        conn.exec_driver_sql("ANALYZE summary_queue")


def queued(conn: Connection, ids: Sequence[str]) -> set[str]:
    """Which of ``ids`` have a ``summary_queue`` row."""
    return set(read_in(conn, queue_t, ("call_id",), "call_id", ids))


# What queue_states says of a row another workspace holds: no state of this workspace's queue.
OTHER_WORKSPACE = "(another workspace)"


def queue_states(conn: Connection, ids: Sequence[str], *, workspace: str | None = None) -> dict[str, str]:
    """``{call_id: state}`` of the ``summary_queue`` rows of ``ids``; with ``workspace``, a row of
    another workspace reads :data:`OTHER_WORKSPACE`."""
    return {call_id: state if workspace is None or in_workspace == workspace else OTHER_WORKSPACE
            for call_id, (state, in_workspace) in read_in(conn, queue_t, ("call_id", "state", "workspace"),
                                                           "call_id", ids).items()}


def ended(conn: Connection, ids: Sequence[str]) -> list[tuple[str, str, datetime | None]]:
    """``(call_id, state, finished_at)`` of the ``summary_queue`` rows of ``ids`` no longer pending."""
    q = queue_t.c
    rows: list[tuple[str, str, datetime | None]] = []
    for chunk in chunks(ids):
        rows += conn.execute(sa.select(q.call_id, q.state, q.finished_at)
                             .where(q.call_id.in_(chunk), q.state != "pending")).all()
    return rows


def anything_due(conn: Connection, now: datetime, *, workspace: str = DEFAULT_WORKSPACE) -> bool:
    """Whether a run of ``workspace`` would claim a summary item now."""
    return conn.execute(sa.select(queue_t.c.call_id).where(due(queue_t, now, workspace)).limit(1)).first() is not None


# --- claim / release --------------------------------------------------------------


def claim(conn: Connection, run_id: str, limit: int, now: datetime, lease_seconds: float,
          queue: QueueName = "summary", *, workspace: str = DEFAULT_WORKSPACE) -> list[ClaimedItem]:
    """Lease up to ``limit`` due items of ``workspace``'s ``queue`` (summary_queue or transcript_queue)
    to ``run_id``.

    Oldest due first.
    """
    if limit <= 0:
        return []
    table = queue_table(queue)
    q = table.c
    # Only call_id is selected while locking: the claim index covers it, so the
    # scan stops after `limit` rows.  Selecting more columns lets MariaDB pick a
    # table scan plus sort, which locks every due row and starves other runs.
    pick = (
        sa.select(q.call_id)
        .where(due(table, now, workspace))
        .order_by(q.next_attempt_at)
        .limit(limit)
    )
    if is_server(conn):
        pick = pick.with_for_update(skip_locked=True)
    ids = list(conn.execute(pick).scalars())
    if not ids:
        return []
    items: list[ClaimedItem] = []
    c, lk = calls_t.c, call_lookups_t.c
    for chunk in chunks(ids):
        # The call context rides on this query (primary-key outer joins): what
        # the not-found window is measured from, and whether the call must be
        # fetched, cost no query of their own.
        rows = conn.execute(
            sa.select(q.call_id, q.attempts, q.consecutive_errors, q.incomplete_since, q.next_attempt_at,
                      q.enqueued_at, c.completed_at, lk.first_not_found_at, c.call_id.is_(None), lk.state,
                      c.created_at)
            .select_from(table.outerjoin(calls_t, c.call_id == q.call_id)
                         .outerjoin(call_lookups_t, lk.call_id == q.call_id))
            .where(q.call_id.in_(chunk))
        )
        items.extend(
            ClaimedItem(call_id=call_id, attempts=attempts, consecutive_errors=errors, incomplete_since=since,
                        next_attempt_at=due, enqueued_at=enqueued, call_completed_at=completed,
                        call_first_not_found_at=first_404,
                        needs_call=queue == "summary" and bool(no_call) and lookup != "not_found",
                        queue=queue, call_created_at=created)
            for call_id, attempts, errors, since, due, enqueued, completed, first_404, no_call, lookup, created
            in rows
        )
    by_id = {i.call_id: i for i in items}
    items = [by_id[i] for i in ids]  # oldest due first, as picked
    expires = now + timedelta(seconds=lease_seconds)
    for chunk in chunks(ids):
        conn.execute(
            sa.update(table)
            .where(q.call_id.in_(chunk))
            .values(lease_owner=run_id, lease_expires_at=expires, next_attempt_at=expires)
        )
    return items


def _release_stmt(table: sa.Table) -> sa.Update:
    return (
        sa.update(table)
        .where(table.c.call_id == sa.bindparam("b_call_id"), table.c.lease_owner == sa.bindparam("b_owner"))
        .values(next_attempt_at=sa.bindparam("b_next"), lease_owner=None, lease_expires_at=None)
    )


def release(conn: Connection, run_id: str, items: Iterable[ClaimedItem]) -> int:
    """Give leased items back exactly as they were claimed (attempts not counted), each to its own queue."""
    released = 0
    by_queue: dict[QueueName, list[dict[str, Any]]] = {}
    for i in items:
        param = {"b_call_id": i.call_id, "b_owner": run_id, "b_next": i.next_attempt_at}
        by_queue.setdefault(i.queue, []).append(param)
    for queue, params in by_queue.items():
        released += conn.execute(_release_stmt(queue_table(queue)), params).rowcount
    return released


def owned(conn: Connection, run_id: str, call_ids: Sequence[str], queue: QueueName = "summary") -> set[str]:
    """Which of ``call_ids`` this run still holds in ``queue``, locked until commit on servers."""
    stmt = _OWNED[(queue, is_server(conn))]
    found: set[str] = set()
    for chunk in chunks(call_ids):
        found.update(conn.execute(stmt, {"ids": chunk, "owner": run_id}).scalars())
    return found


def _owned_stmt(queue: QueueName, lock: bool) -> sa.Select[str]:
    q = queue_table(queue).c
    stmt = sa.select(q.call_id).where(q.call_id.in_(sa.bindparam("ids", expanding=True)),
                                      q.lease_owner == sa.bindparam("owner"))
    return stmt.with_for_update() if lock else stmt


# Built once: the claim path runs them every batch.
_OWNED = {(queue, lock): _owned_stmt(queue, lock) for queue in ("summary", "transcript") for lock in (False, True)}


def lease_holder(conn: Connection, call_id: str, now: datetime) -> str | None:
    """The run holding ``call_id``'s summary item right now (None: nobody), locked until commit on servers
    so a claim (``SKIP LOCKED``) passes the row by meanwhile."""
    q = queue_t.c
    held = sa.select(q.lease_owner, q.lease_expires_at).where(q.call_id == call_id)
    if is_server(conn):
        held = held.with_for_update()
    owner, expires = conn.execute(held).one()
    return owner if owner is not None and expires is not None and expires > now else None


# --- the engine's decisions -----------------------------------------------------------


def _queue_update_stmt(table: sa.Table) -> sa.Update:
    return (
        sa.update(table)
        .where(table.c.call_id == sa.bindparam("b_call_id"), table.c.lease_owner == sa.bindparam("b_owner"))
        .values(
            state=sa.bindparam("state"),
            attempts=sa.bindparam("attempts"),
            consecutive_errors=sa.bindparam("consecutive_errors"),
            next_attempt_at=sa.bindparam("next_attempt_at"),
            last_api_status=sa.bindparam("last_api_status"),
            last_error=sa.bindparam("last_error"),
            incomplete_since=sa.bindparam("incomplete_since"),
            finished_at=sa.bindparam("finished_at"),
            updated_at=sa.bindparam("updated_at"),
            lease_owner=None,
            lease_expires_at=None,
        )
    )


_QUEUE_UPDATE = {queue: _queue_update_stmt(queue_table(queue)) for queue in ("summary", "transcript")}


def update_queue(conn: Connection, run_id: str, updates: Sequence[QueueUpdate], now: datetime,
                 queue: QueueName = "summary") -> None:
    """Write the queue updates of items this run holds (the caller checked ``owned``) and end their leases."""
    if not updates:
        return
    params = [u.params(now) for u in updates]
    table = queue_table(queue)
    if conn.dialect.name == "postgresql":
        _queue_update_unnest(conn, run_id, params, table.name)
    else:
        execute_many(conn, prepare(conn, ("queue_update", queue), lambda: _QUEUE_UPDATE[queue]),
                     [dict(p, b_owner=run_id) for p in params])


# PostgreSQL: every queue update of a batch in one statement (psycopg's
# executemany would send one per row).
_PG_QUEUE_UPDATE = """\
UPDATE {table} AS q SET
    state = v.state, attempts = v.attempts, consecutive_errors = v.consecutive_errors,
    next_attempt_at = v.next_attempt_at, last_api_status = v.last_api_status, last_error = v.last_error,
    incomplete_since = v.incomplete_since, finished_at = v.finished_at, updated_at = v.updated_at,
    lease_owner = NULL, lease_expires_at = NULL
FROM unnest(
    CAST(%(b_call_id)s AS varchar[]), CAST(%(state)s AS varchar[]), CAST(%(attempts)s AS int4[]),
    CAST(%(consecutive_errors)s AS int4[]), CAST(%(next_attempt_at)s AS timestamp[]),
    CAST(%(last_api_status)s AS varchar[]), CAST(%(last_error)s AS text[]),
    CAST(%(incomplete_since)s AS timestamp[]), CAST(%(finished_at)s AS timestamp[]),
    CAST(%(updated_at)s AS timestamp[])
) AS v(call_id, state, attempts, consecutive_errors, next_attempt_at, last_api_status, last_error,
       incomplete_since, finished_at, updated_at)
WHERE q.call_id = v.call_id AND q.lease_owner = %(b_owner)s"""


def _queue_update_unnest(conn: Connection, run_id: str, params: list[dict[str, Any]], table: str) -> None:
    columns = {key: [p[key] for p in params] for key in params[0]}
    conn.exec_driver_sql(_PG_QUEUE_UPDATE.replace("{table}", table), dict(columns, b_owner=run_id))


_ENDED_COLUMNS = ("call_id", "state", "attempts", "consecutive_errors", "next_attempt_at", "last_api_status",
                  "last_error", "incomplete_since", "finished_at", "enqueued_at", "updated_at", "workspace")


def insert_ended(conn: Connection, updates: Sequence[QueueUpdate], now: datetime, *,
                 workspace: str = DEFAULT_WORKSPACE) -> None:
    """New ``summary_queue`` rows of ``workspace`` already in the end state of ``updates`` (nothing left
    to fetch)."""
    if updates:
        execute_many(conn, prepare(conn, ("insert", "summary_queue", _ENDED_COLUMNS),
                                   lambda: sa.insert(queue_t), _ENDED_COLUMNS), [{
            "call_id": u.call_id, "state": u.state, "attempts": u.attempts, "consecutive_errors": 0,
            "next_attempt_at": u.next_attempt_at, "last_api_status": u.last_api_status, "last_error": u.last_error,
            "incomplete_since": None, "finished_at": u.finished_at, "enqueued_at": now, "updated_at": now,
            "workspace": workspace,
        } for u in updates])


_END_WAITING = (
    sa.update(queue_t).where(queue_t.c.call_id == sa.bindparam("b_call_id"))
    .values(state=sa.bindparam("state"), next_attempt_at=sa.bindparam("next_attempt_at"),
            last_api_status=sa.bindparam("last_api_status"), last_error=sa.bindparam("last_error"),
            incomplete_since=None, finished_at=sa.bindparam("finished_at"),
            updated_at=sa.bindparam("updated_at"), lease_owner=None, lease_expires_at=None))


def end_waiting(conn: Connection, updates: Sequence[QueueUpdate], now: datetime) -> None:
    """Give waiting ``summary_queue`` rows the end state of ``updates``, taking away any lease."""
    if updates:
        conn.execute(
            _END_WAITING,
            [{"b_call_id": u.call_id, "state": u.state, "next_attempt_at": u.next_attempt_at,
              "last_api_status": u.last_api_status, "last_error": u.last_error, "finished_at": u.finished_at,
              "updated_at": now} for u in updates],
        )


def mark_done(conn: Connection, call_id: str, now: datetime, *, workspace: str = DEFAULT_WORKSPACE) -> None:
    """End ``call_id``'s summary item in ``workspace`` ``done`` as if it had been fetched (its summary was
    stored)."""
    q = queue_t.c
    conn.execute(
        sa.update(queue_t).where(q.call_id == call_id, q.workspace == workspace)
        .values(state="done", consecutive_errors=0, last_api_status="completed", last_error=None,
                incomplete_since=None, finished_at=now, updated_at=now, lease_owner=None, lease_expires_at=None)
    )


# --- making ids due -----------------------------------------------------------------


def make_due_first(conn: Connection, call_id: str, now: datetime, requeue: Sequence[str], *,
                   workspace: str = DEFAULT_WORKSPACE) -> None:
    """Enqueue ``call_id`` or make its summary item due at the head of ``workspace``'s due line (1 ms
    before its oldest due item); an item ended in one of ``requeue`` is re-queued there with fresh
    counters.  An item a run holds is left to that run; one of another workspace is left as it is."""
    q = queue_t.c
    enqueue_ids(conn, [call_id], now, workspace=workspace)
    oldest = conn.execute(sa.select(sa.func.min(q.next_attempt_at))
                          .where(q.workspace == workspace, q.state == "pending")).scalar()
    # Strictly before the oldest: ids enqueued by one statement share one timestamp,
    # and a tie would leave the order among them to the database.
    head = min(now, oldest - _AHEAD) if oldest is not None else now
    conn.execute(
        sa.update(queue_t)
        .where(q.call_id == call_id, q.workspace == workspace, q.state == "pending", q.lease_owner.is_(None),
               q.next_attempt_at > head)
        .values(next_attempt_at=head)
    )
    conn.execute(
        sa.update(queue_t)
        .where(q.call_id == call_id, q.workspace == workspace, q.state.in_(requeue))
        .values(state="pending", next_attempt_at=head, consecutive_errors=0, incomplete_since=None,
                finished_at=None, last_error=None, updated_at=now, lease_owner=None, lease_expires_at=None)
    )


def make_transcript_due(conn: Connection, call_id: str, now: datetime, requeue: Sequence[str], *,
                        workspace: str = DEFAULT_WORKSPACE) -> None:
    """Enqueue ``call_id``'s transcript in ``workspace`` or make it due now; one ended in one of ``requeue``
    is re-queued.  An item a run holds is left to that run; one of another workspace as it is."""
    enqueue_transcripts(conn, [call_id], now, workspace=workspace)
    t = transcript_queue_t.c
    conn.execute(
        sa.update(transcript_queue_t)
        .where(t.call_id == call_id, t.workspace == workspace, t.lease_owner.is_(None),
               sa.or_(sa.and_(t.state == "pending", t.next_attempt_at > now), t.state.in_(requeue)))
        .values(state="pending", next_attempt_at=now, consecutive_errors=0, incomplete_since=None,
                finished_at=None, updated_at=now)
    )


def requeue(conn: Connection, where: Sequence[sa.ColumnElement[bool]], now: datetime, *,
            workspace: str = DEFAULT_WORKSPACE) -> int:
    """Make ``workspace``'s ``summary_queue`` items matching ``where`` due now, with fresh counters; how many."""
    stmt = (
        sa.update(queue_t)
        .where(queue_t.c.workspace == workspace, *where)
        .values(state="pending", next_attempt_at=now, attempts=0, consecutive_errors=0,
                incomplete_since=None, finished_at=None, updated_at=now,
                lease_owner=None, lease_expires_at=None)
    )
    return conn.execute(stmt).rowcount


def drop_pending(conn: Connection, ids: Sequence[str], *, workspace: str = DEFAULT_WORKSPACE) -> list[str]:
    """Delete the still pending items of ``ids`` from both of ``workspace``'s queues; the summary ids
    deleted, sorted."""
    q, t = queue_t.c, transcript_queue_t.c
    pending = sorted(conn.execute(sa.select(q.call_id).where(
        q.call_id.in_(ids), q.workspace == workspace, q.state == "pending")).scalars())
    if pending:
        conn.execute(sa.delete(queue_t).where(q.call_id.in_(pending), q.state == "pending"))
    conn.execute(sa.delete(transcript_queue_t).where(t.call_id.in_(ids), t.workspace == workspace,
                                                     t.state == "pending"))
    return pending
