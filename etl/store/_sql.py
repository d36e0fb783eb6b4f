"""What every part of the store writes with: chunked ``IN`` lists, the one upsert, bulk inserts, and the
one routine that replaces a parent row and its children when their content hash changed.

Every row these write carries its workspace (issue 27): the caller's, stamped here on each row
(``workspace``), never updated afterwards.  Ids are global, so a row already stored under another
workspace is left as it is (:func:`replace_changed` counts it ``foreign``)."""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import mysql as mysql_dialect
from sqlalchemy.dialects import postgresql as pg_dialect
from sqlalchemy.dialects import sqlite as sqlite_dialect
from sqlalchemy.engine import Connection

from etl.config import DEFAULT_WORKSPACE

# Chunks well under MariaDB's in_predicate_conversion_threshold (1000): a
# longer IN list becomes a join that scans, and locks, the whole index.
IN_CHUNK = 500


def is_server(conn: Connection) -> bool:
    return conn.dialect.name != "sqlite"


def chunks(ids: Sequence[str]) -> Iterator[list[str]]:
    """``ids`` in slices of :data:`IN_CHUNK`, for ``IN`` lists."""
    for start in range(0, len(ids), IN_CHUNK):
        yield list(ids[start:start + IN_CHUNK])


def upsert(conn: Connection, table: sa.Table, rows: list[dict[str, Any]], update: Sequence[str]) -> None:
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


_insert_sql_cache: dict[tuple[str, str, tuple[str, ...]], tuple[str, tuple[str, ...] | None]] = {}
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


def stamp(rows: Sequence[dict[str, Any]], workspace: str) -> None:
    """Give each row its workspace (in place: the rows are the caller's fresh dicts)."""
    for row in rows:
        row["workspace"] = workspace


def bulk_insert(conn: Connection, table: sa.Table, rows: list[dict[str, Any]], *,
                workspace: str = DEFAULT_WORKSPACE) -> None:
    """executemany straight to the driver with SQL compiled once per dialect and set of columns;
    every row in ``workspace``.

    Child rows are plain text, integers, floats and booleans, which every
    driver adapts itself; skipping SQLAlchemy's per-row parameter processing
    halves the cost of the most numerous rows of a sync.
    """
    if not rows:
        return
    stamp(rows, workspace)
    if conn.dialect.name == "postgresql":
        _bulk_insert_unnest(conn, table, rows)
        return
    key = (conn.dialect.name, table.name, tuple(rows[0]))
    cached = _insert_sql_cache.get(key)
    if cached is None:
        compiled = sa.insert(table).compile(dialect=conn.dialect, column_keys=list(rows[0]))
        order = tuple(compiled.positiontup) if conn.dialect.positional and compiled.positiontup else None
        cached = _insert_sql_cache[key] = (str(compiled), order)
    sql, order = cached
    params: Any = [tuple(r[k] for k in order) for r in rows] if order is not None else rows
    conn.exec_driver_sql(sql, params)


@dataclass(frozen=True, slots=True, kw_only=True)
class Replaced:
    """What :func:`replace_changed` did."""

    new: int  # not stored before
    changed: int  # stored before with other content (rows rewritten)
    unchanged: int  # same content hash: only last_synced_at moved
    foreign: int = 0  # stored under another workspace: left as it is


@dataclass(frozen=True, slots=True, kw_only=True)
class Tree:
    """One parent row (keyed ``call_id``, with a ``content_hash``) and its child rows per table."""

    parent: dict[str, Any]
    children: Mapping[sa.Table, Sequence[dict[str, Any]]]


def replace_changed(conn: Connection, parent: sa.Table, children: Sequence[sa.Table], trees: Sequence[Tree],
                    update: Sequence[str], now: datetime, *, key: str = "call_id",
                    touch: Mapping[str, Any] | None = None, workspace: str = DEFAULT_WORKSPACE) -> Replaced:
    """Store ``trees`` whose ``content_hash`` changed, in the caller's transaction: upsert the parent,
    replace its children as a whole.  An unchanged one only gets ``last_synced_at = now``.

    ``children``: child tables in the order deletes must run (children of children first); inserts
    run in the reverse order.  A call listed twice is stored once (the last one wins).  Every
    ``IN`` list is chunked (:data:`IN_CHUNK`).  ``key``: the parent's key column, which every child
    table shares; ``touch``: what an unchanged row gets instead of ``last_synced_at = now``.
    New rows are in ``workspace``; a key stored under another workspace is left as it is, children
    and all (``foreign``); ``update`` never names ``workspace``.
    """
    by_id = {t.parent[key]: t for t in trees}
    ids = list(by_id)
    key_column, content_hash, owner = parent.c[key], parent.c.content_hash, parent.c.workspace
    stored: dict[str, str] = {}
    foreign: set[str] = set()
    for chunk in chunks(ids):
        for found, hashed, in_workspace in conn.execute(
                sa.select(key_column, content_hash, owner).where(key_column.in_(chunk))):
            if in_workspace == workspace:
                stored[found] = hashed
            else:
                foreign.add(found)
    unchanged = [i for i in ids if i in stored and stored[i] == by_id[i].parent["content_hash"]]
    changed = [i for i in ids if i not in foreign and (i not in stored or stored[i] != by_id[i].parent["content_hash"])]
    for chunk in chunks(unchanged):
        conn.execute(sa.update(parent).where(key_column.in_(chunk)).values(touch or {"last_synced_at": now}))
    if changed:
        parents = [by_id[i].parent for i in changed]
        stamp(parents, workspace)
        upsert(conn, parent, parents, [c for c in update if c != "workspace"])
        rewritten = [i for i in changed if i in stored]
        for chunk in chunks(rewritten):
            for table in children:
                conn.execute(sa.delete(table).where(table.c[key].in_(chunk)))
        for table in reversed(children):
            bulk_insert(conn, table, [row for i in changed for row in by_id[i].children.get(table, ())],
                        workspace=workspace)
    new = sum(1 for i in ids if i not in stored and i not in foreign)
    return Replaced(new=new, changed=len(changed) - new, unchanged=len(unchanged), foreign=len(foreign))
