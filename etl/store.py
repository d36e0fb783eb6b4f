"""Storage: the queue (enqueue, claim, release), saving results, call context, run records.

Every function takes a :class:`sqlalchemy.engine.Connection` inside a
transaction the caller opened (``engine.begin()``), so the caller decides what
commits together.  SQL is SQLAlchemy Core with bound parameters only, plus the
one native feature each job needs per dialect: ``FOR UPDATE SKIP LOCKED`` to
claim on PostgreSQL/MariaDB (SQLite serialises writers with ``BEGIN
IMMEDIATE``, see :mod:`etl.db`) and the native upsert.

Claiming moves ``next_attempt_at`` to the lease's expiry: the claim query stays
``state = 'pending' AND next_attempt_at <= now`` on one index, and an item whose
run died becomes due again by itself when the lease runs out.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa
from sqlalchemy.dialects import mysql as mysql_dialect
from sqlalchemy.dialects import postgresql as pg_dialect
from sqlalchemy.dialects import sqlite as sqlite_dialect
from sqlalchemy.engine import Connection

from etl.policy import ClaimedItem, QueueUpdate
from etl.tables import (
    call_lookups_t,
    calls_t,
    conversation_marks_t,
    discovery_runs_t,
    fields_t,
    jobs_t,
    lines_t,
    participants_t,
    queue_t,
    runs_t,
    steps_t,
    summaries_t,
    watermarks_t,
)

if TYPE_CHECKING:
    from etl.normalize import CallContextRows, CallRows
    from etl.results import FetchResult

# Children first: the order deletes must run in (and the reverse for inserts).
_CHILD_TABLES = (fields_t, jobs_t, steps_t, lines_t)
_PARENT_UPDATE_COLUMNS = (
    "status", "summary_text", "line_count", "next_step_count", "job_count",
    "content_hash", "raw_json", "last_synced_at",
)


_IN_CHUNK = 500


def _is_server(conn: Connection) -> bool:
    return conn.dialect.name != "sqlite"


# --- enqueue ----------------------------------------------------------------------


def enqueue_ids(conn: Connection, ids: Sequence[str]) -> int:
    """Insert ids not yet queued; existing rows (whatever their state) are untouched.

    Returns how many were new.  One statement per call, whatever the batch size.
    """
    if not ids:
        return 0
    dialect = conn.dialect.name
    if dialect == "postgresql":
        stmt = sa.text(
            "INSERT INTO summary_queue (call_id) SELECT unnest(CAST(:ids AS varchar[])) "
            "ON CONFLICT (call_id) DO NOTHING"
        )
        return conn.execute(stmt, {"ids": list(ids)}).rowcount
    rows = [{"call_id": i} for i in ids]
    if dialect == "sqlite":
        ins: Any = sqlite_dialect.insert(queue_t).on_conflict_do_nothing(index_elements=["call_id"])
    else:
        ins = mysql_dialect.insert(queue_t).prefix_with("IGNORE")
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


# --- claim / release --------------------------------------------------------------


def claim(conn: Connection, run_id: str, limit: int, now: datetime, lease_seconds: float) -> list[ClaimedItem]:
    """Lease up to ``limit`` due items to ``run_id``; oldest due first."""
    if limit <= 0:
        return []
    q = queue_t.c
    # Only call_id is selected while locking: the claim index covers it, so the
    # scan stops after `limit` rows.  Selecting more columns lets MariaDB pick a
    # table scan plus sort, which locks every due row and starves other runs.
    pick = (
        sa.select(q.call_id)
        .where(q.state == "pending", q.next_attempt_at <= now)
        .order_by(q.next_attempt_at)
        .limit(limit)
    )
    if _is_server(conn):
        pick = pick.with_for_update(skip_locked=True)
    ids = list(conn.execute(pick).scalars())
    if not ids:
        return []
    items: list[ClaimedItem] = []
    c, lk = calls_t.c, call_lookups_t.c
    for start in range(0, len(ids), _IN_CHUNK):
        # The call context rides on this query (primary-key outer joins): what
        # the not-found window is measured from, and whether the call must be
        # fetched, cost no query of their own.
        rows = conn.execute(
            sa.select(q.call_id, q.attempts, q.consecutive_errors, q.incomplete_since, q.next_attempt_at,
                      q.enqueued_at, c.completed_at, lk.first_not_found_at, c.call_id.is_(None), lk.state)
            .select_from(queue_t.outerjoin(calls_t, c.call_id == q.call_id)
                         .outerjoin(call_lookups_t, lk.call_id == q.call_id))
            .where(q.call_id.in_(ids[start:start + _IN_CHUNK]))
        )
        items.extend(
            ClaimedItem(call_id, attempts, errors, since, due, enqueued, completed, first_404,
                        needs_call=bool(no_call) and lookup != "not_found")
            for call_id, attempts, errors, since, due, enqueued, completed, first_404, no_call, lookup in rows
        )
    by_id = {i.call_id: i for i in items}
    items = [by_id[i] for i in ids]  # oldest due first, as picked
    expires = now + timedelta(seconds=lease_seconds)
    # Chunks well under MariaDB's in_predicate_conversion_threshold (1000): a
    # longer IN list becomes a join that scans, and locks, the whole index.
    for start in range(0, len(ids), _IN_CHUNK):
        conn.execute(
            sa.update(queue_t)
            .where(q.call_id.in_(ids[start:start + _IN_CHUNK]))
            .values(lease_owner=run_id, lease_expires_at=expires, next_attempt_at=expires)
        )
    return items


_release_stmt = (
    sa.update(queue_t)
    .where(queue_t.c.call_id == sa.bindparam("b_call_id"), queue_t.c.lease_owner == sa.bindparam("b_owner"))
    .values(next_attempt_at=sa.bindparam("b_next"), lease_owner=None, lease_expires_at=None)
)


def release(conn: Connection, run_id: str, items: Iterable[ClaimedItem]) -> int:
    """Give leased items back exactly as they were claimed (attempts not counted)."""
    params = [{"b_call_id": i.call_id, "b_owner": run_id, "b_next": i.next_attempt_at} for i in items]
    if not params:
        return 0
    return conn.execute(_release_stmt, params).rowcount


# --- save results -----------------------------------------------------------------


@dataclass(slots=True)
class Entry:
    """One processed item: the claim, the API's answer, the decision, the rows.

    ``call``: the call's context fetched in this attempt (``GET /v1/calls/{id}``);
    ``call_not_found``: that fetch answered 404 (``(lookup state, error)``).
    Both land in the transaction of the queue update, only while the lease holds.
    """

    item: ClaimedItem
    result: FetchResult | None
    update: QueueUpdate
    rows: CallRows | None
    call: CallContextRows | None = None
    call_not_found: tuple[str, str | None] | None = None


_queue_update_stmt = (
    sa.update(queue_t)
    .where(queue_t.c.call_id == sa.bindparam("b_call_id"), queue_t.c.lease_owner == sa.bindparam("b_owner"))
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


def owned(conn: Connection, run_id: str, call_ids: Sequence[str]) -> set[str]:
    """Which of ``call_ids`` this run still holds, locked until commit on servers."""
    q = queue_t.c
    stmt = sa.select(q.call_id).where(q.call_id.in_(call_ids), q.lease_owner == run_id)
    if _is_server(conn):
        stmt = stmt.with_for_update()
    return {row[0] for row in conn.execute(stmt)}


def save_entries(conn: Connection, run_id: str, entries: Sequence[Entry], now: datetime) -> list[Entry]:
    """Write summaries and queue updates of ``entries`` in the caller's transaction.

    Returns the entries actually written: an entry whose lease this run lost
    (it expired and another run claimed the item) is skipped entirely.
    """
    if not entries:
        return []
    mine = owned(conn, run_id, [e.item.call_id for e in entries])
    entries = [e for e in entries if e.item.call_id in mine]
    if not entries:
        return []
    calls = [e.call for e in entries if e.call is not None]
    if calls:
        save_calls(conn, calls, now)
    for e in entries:
        if e.call_not_found is not None:
            record_call_not_found(conn, e.item.call_id, e.call_not_found[0], now, e.call_not_found[1])
    with_rows = [e.rows for e in entries if e.rows is not None]
    if with_rows:
        _save_rows(conn, with_rows, now)
    params = [e.update.params(now) for e in entries]
    if conn.dialect.name == "postgresql":
        _queue_update_unnest(conn, run_id, params)
    else:
        conn.execute(_queue_update_stmt, [dict(p, b_owner=run_id) for p in params])
    return entries


# PostgreSQL: every queue update of a batch in one statement (psycopg's
# executemany would send one per row).
_PG_QUEUE_UPDATE = """\
UPDATE summary_queue AS q SET
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


def _queue_update_unnest(conn: Connection, run_id: str, params: list[dict[str, Any]]) -> None:
    columns = {key: [p[key] for p in params] for key in params[0]}
    conn.exec_driver_sql(_PG_QUEUE_UPDATE, dict(columns, b_owner=run_id))


def _save_rows(conn: Connection, calls: Sequence[CallRows], now: datetime) -> None:
    ids = [c.parent["call_id"] for c in calls]
    s = summaries_t.c
    stored = dict(conn.execute(sa.select(s.call_id, s.content_hash).where(s.call_id.in_(ids))).all())
    changed = [c for c in calls if stored.get(c.parent["call_id"]) != c.parent["content_hash"]]
    unchanged = [c.parent["call_id"] for c in calls if stored.get(c.parent["call_id"]) == c.parent["content_hash"]]
    if unchanged:
        conn.execute(sa.update(summaries_t).where(s.call_id.in_(unchanged)).values(last_synced_at=now))
    if not changed:
        return
    _upsert_parents(conn, [c.parent for c in changed])
    changed_ids = [c.parent["call_id"] for c in changed]
    for table in _CHILD_TABLES:
        if any(stored.get(i) is not None for i in changed_ids):
            conn.execute(sa.delete(table).where(table.c.call_id.in_(changed_ids)))
    for table, attr in ((lines_t, "lines"), (steps_t, "next_steps"), (jobs_t, "jobs"), (fields_t, "job_fields")):
        rows = [r for c in changed for r in getattr(c, attr)]
        if rows:
            _bulk_insert(conn, table, rows)


_insert_sql_cache: dict[tuple[str, str], tuple[str, tuple[str, ...] | None]] = {}
_PG_ARRAY_TYPES = {"VARCHAR": "varchar", "INTEGER": "int4", "TEXT": "text", "DOUBLE": "float8",
                   "DOUBLE PRECISION": "float8", "BOOLEAN": "bool"}


def _bulk_insert_unnest(conn: Connection, table: sa.Table, rows: list[dict[str, Any]]) -> None:
    """PostgreSQL: one ``INSERT … SELECT FROM unnest(arrays)`` per table and batch.

    psycopg's executemany sends a statement per row; one array per column is a
    single round trip whatever the row count.
    """
    columns = list(rows[0])
    casts = []
    for name in columns:
        type_name = table.c[name].type.compile(dialect=conn.dialect).split("(")[0].upper()
        casts.append(f"CAST(%({name})s AS {_PG_ARRAY_TYPES[type_name]}[])")
    # Table and column names come from our own models, never from input.
    sql = (f"INSERT INTO {table.name} ({', '.join(columns)}) "  # noqa: S608
           f"SELECT * FROM unnest({', '.join(casts)})")
    conn.exec_driver_sql(sql, {name: [r[name] for r in rows] for name in columns})


def _bulk_insert(conn: Connection, table: sa.Table, rows: list[dict[str, Any]]) -> None:
    """executemany straight to the driver with SQL compiled once per dialect.

    Child rows are plain text, integers, floats and booleans, which every
    driver adapts itself; skipping SQLAlchemy's per-row parameter processing
    halves the cost of the most numerous rows of a sync.
    """
    if conn.dialect.name == "postgresql":
        _bulk_insert_unnest(conn, table, rows)
        return
    key = (conn.dialect.name, table.name)
    cached = _insert_sql_cache.get(key)
    if cached is None:
        compiled = sa.insert(table).compile(dialect=conn.dialect, column_keys=list(rows[0]))
        order = tuple(compiled.positiontup) if conn.dialect.positional and compiled.positiontup else None
        cached = _insert_sql_cache[key] = (str(compiled), order)
    sql, order = cached
    params: Any = [tuple(r[k] for k in order) for r in rows] if order is not None else rows
    conn.exec_driver_sql(sql, params)


def _upsert_parents(conn: Connection, parents: list[dict[str, Any]]) -> None:
    dialect = conn.dialect.name
    stmt: Any
    if dialect in ("postgresql", "sqlite"):
        mod: Any = pg_dialect if dialect == "postgresql" else sqlite_dialect
        stmt = mod.insert(summaries_t)
        stmt = stmt.on_conflict_do_update(
            index_elements=["call_id"], set_={c: stmt.excluded[c] for c in _PARENT_UPDATE_COLUMNS}
        )
    else:
        stmt = mysql_dialect.insert(summaries_t)
        stmt = stmt.on_duplicate_key_update({c: stmt.inserted[c] for c in _PARENT_UPDATE_COLUMNS})
    conn.execute(stmt, parents)


# --- run records ------------------------------------------------------------------


def start_run(conn: Connection, command: str, now: datetime) -> int:
    result = conn.execute(sa.insert(runs_t).values(command=command, started_at=now))
    pk = result.inserted_primary_key
    assert pk is not None
    return int(pk[0])


def add_run_counts(conn: Connection, run_id: int, **counts: int) -> None:
    if not any(counts.values()):
        return
    c = runs_t.c
    conn.execute(
        sa.update(runs_t).where(c.id == run_id).values({name: c[name] + n for name, n in counts.items() if n})
    )


def finish_run(conn: Connection, run_id: int, now: datetime, exit_code: int, stop_reason: str | None) -> None:
    conn.execute(
        sa.update(runs_t).where(runs_t.c.id == run_id)
        .values(finished_at=now, exit_code=exit_code, stop_reason=stop_reason)
    )


# --- call context (migration 0004) --------------------------------------------------
#
# The sync engine lands a call's context and its summary in one transaction:
# save_entries() calls save_calls() / record_call_not_found() on its connection.


def _upsert(conn: Connection, table: sa.Table, rows: list[dict[str, Any]], update: Sequence[str]) -> None:
    """Insert ``rows``; on a primary-key conflict overwrite the ``update`` columns."""
    dialect = conn.dialect.name
    keys = [c.name for c in table.primary_key.columns]
    stmt: Any
    if dialect in ("postgresql", "sqlite"):
        mod: Any = pg_dialect if dialect == "postgresql" else sqlite_dialect
        stmt = mod.insert(table)
        stmt = stmt.on_conflict_do_update(index_elements=keys, set_={c: stmt.excluded[c] for c in update})
    else:
        stmt = mysql_dialect.insert(table)
        stmt = stmt.on_duplicate_key_update({c: stmt.inserted[c] for c in update})
    conn.execute(stmt, rows)


_CALL_UPDATE_COLUMNS = tuple(
    c.name for c in calls_t.columns if c.name not in ("call_id", "first_synced_at")
)


@dataclass(frozen=True, slots=True)
class CallsSaved:
    new: int  # calls not stored before
    changed: int  # stored before with other content (rows rewritten)
    unchanged: int  # same content hash: only last_synced_at moved


def save_calls(conn: Connection, calls: Sequence[CallContextRows], now: datetime) -> CallsSaved:
    """Upsert calls and replace their participants, in the caller's transaction.

    A call whose ``content_hash`` is unchanged only gets ``last_synced_at``;
    a changed one has its participants replaced as a whole.  A call listed
    twice in ``calls`` is stored once (the last one wins).  A stored call is
    no longer a pending 404 (its ``call_lookups`` row goes).
    """
    by_id = {c.call_id: c for c in calls}
    if not by_id:
        return CallsSaved(0, 0, 0)
    ids = list(by_id)
    c = calls_t.c
    stored: dict[str, str] = {}
    for start in range(0, len(ids), _IN_CHUNK):
        chunk = ids[start:start + _IN_CHUNK]
        stored.update(conn.execute(sa.select(c.call_id, c.content_hash).where(c.call_id.in_(chunk))).all())
    changed = [r for i, r in by_id.items() if stored.get(i) != r.parent["content_hash"]]
    unchanged = [i for i, r in by_id.items() if stored.get(i) == r.parent["content_hash"]]
    for start in range(0, len(unchanged), _IN_CHUNK):
        conn.execute(sa.update(calls_t).where(c.call_id.in_(unchanged[start:start + _IN_CHUNK]))
                     .values(last_synced_at=now))
    if changed:
        _upsert(conn, calls_t, [dict(r.parent, last_synced_at=now) for r in changed], _CALL_UPDATE_COLUMNS)
        rewritten = [r.call_id for r in changed if r.call_id in stored]
        for start in range(0, len(rewritten), _IN_CHUNK):
            conn.execute(sa.delete(participants_t)
                         .where(participants_t.c.call_id.in_(rewritten[start:start + _IN_CHUNK])))
        rows = [p for r in changed for p in r.participants]
        if rows:
            _bulk_insert(conn, participants_t, rows)
    for start in range(0, len(ids), _IN_CHUNK):
        conn.execute(sa.delete(call_lookups_t).where(call_lookups_t.c.call_id.in_(ids[start:start + _IN_CHUNK])))
    new = sum(1 for i in by_id if i not in stored)
    return CallsSaved(new, len(changed) - new, len(unchanged))


def record_call_not_found(conn: Connection, call_id: str, state: str, now: datetime, error: str | None) -> None:
    """A ``GET /v1/calls/{id}`` 404: count it; ``state`` is ``retrying`` or ``not_found`` (given up)."""
    lk = call_lookups_t.c
    updated = conn.execute(
        sa.update(call_lookups_t).where(lk.call_id == call_id)
        .values(state=state, attempts=lk.attempts + 1, last_error=error and error[:2000], updated_at=now)
    ).rowcount
    if not updated:
        conn.execute(sa.insert(call_lookups_t).values(
            call_id=call_id, state=state, attempts=1, first_not_found_at=now,
            last_error=error and error[:2000], updated_at=now,
        ))


# --- discovery progress and runs (etl discover) ----------------------------------------


def watermarks(conn: Connection) -> dict[str, datetime]:
    """``{phone_number_id: conversations_updated_after}``."""
    w = watermarks_t.c
    return dict(conn.execute(sa.select(w.phone_number_id, w.conversations_updated_after)).all())


def set_watermark(conn: Connection, phone_number_id: str, number: str | None, value: datetime,
                  now: datetime) -> None:
    _upsert(conn, watermarks_t, [{
        "phone_number_id": phone_number_id, "phone_number": number,
        "conversations_updated_after": value, "updated_at": now,
    }], ("phone_number", "conversations_updated_after", "updated_at"))


def conversation_marks(conn: Connection, phone_number_id: str) -> dict[str, datetime]:
    """``{participant: calls_created_after}`` for one line."""
    m = conversation_marks_t.c
    return dict(conn.execute(
        sa.select(m.participant, m.calls_created_after).where(m.phone_number_id == phone_number_id)
    ).all())


def set_conversation_mark(conn: Connection, phone_number_id: str, participant: str, conversation_id: str | None,
                          value: datetime, now: datetime) -> None:
    _upsert(conn, conversation_marks_t, [{
        "phone_number_id": phone_number_id, "participant": participant, "conversation_id": conversation_id,
        "calls_created_after": value, "updated_at": now,
    }], ("conversation_id", "calls_created_after", "updated_at"))


def start_discovery_run(conn: Connection, command: str, now: datetime) -> int:
    result = conn.execute(sa.insert(discovery_runs_t).values(command=command, started_at=now))
    pk = result.inserted_primary_key
    assert pk is not None
    return int(pk[0])


def add_discovery_counts(conn: Connection, run_id: int, **counts: int) -> None:
    if not any(counts.values()):
        return
    d = discovery_runs_t.c
    conn.execute(sa.update(discovery_runs_t).where(d.id == run_id)
                 .values({name: d[name] + n for name, n in counts.items() if n}))


def finish_discovery_run(conn: Connection, run_id: int, now: datetime, exit_code: int,
                         stop_reason: str | None) -> None:
    conn.execute(sa.update(discovery_runs_t).where(discovery_runs_t.c.id == run_id)
                 .values(finished_at=now, exit_code=exit_code, stop_reason=stop_reason))


def drop_discovery_run(conn: Connection, run_id: int) -> None:
    """Forget a discovery that was refused before it walked anything (e.g. no ``--since``): no run happened."""
    conn.execute(sa.delete(discovery_runs_t).where(discovery_runs_t.c.id == run_id))
