"""What every part of the store writes with: chunked ``IN`` lists, the one upsert, bulk inserts, and the
one routine that replaces a parent row and its children when their content hash changed.

Every row these write carries its workspace (issue 27): the caller's, stamped here on each row
(``workspace``), never updated afterwards.  Ids are global, so a row already stored under another
workspace is left as it is (:func:`replace_changed` counts it ``foreign``)."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from operator import itemgetter
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection
from sqlalchemy.sql.compiler import SQLCompiler

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
    """Insert ``rows``; on a primary-key conflict overwrite the ``update`` columns.

    The statement is compiled once per dialect, table and set of columns
    (:func:`prepare`) and sent as one executemany: building and compiling an
    ``ON CONFLICT`` per batch cost more than the rows it wrote.
    """
    if not rows:
        return
    if conn.dialect.name == "postgresql":
        _pg_unnest(conn, table, rows, tuple(update))
        return
    columns = tuple(rows[0])

    def build() -> Any:
        # Imported here: each dialect's module loads all of its drivers' modules (a tenth of start-up).
        dialect = conn.dialect.name
        keys = [c.name for c in table.primary_key.columns]
        stmt: Any
        if dialect == "sqlite":
            from sqlalchemy.dialects import sqlite as sqlite_dialect

            stmt = sqlite_dialect.insert(table)
            return stmt.on_conflict_do_update(index_elements=keys, set_={c: stmt.excluded[c] for c in update})
        from sqlalchemy.dialects import mysql as mysql_dialect

        stmt = mysql_dialect.insert(table)
        return stmt.on_duplicate_key_update({c: stmt.inserted[c] for c in update})

    execute_many(conn, prepare(conn, ("upsert", table.name, columns, tuple(update)), build, columns), rows)


@dataclass(frozen=True, slots=True)
class Prepared:
    """A statement compiled for one dialect: its SQL, the order of its parameters, and the bind
    processors of the columns whose values the driver cannot take as they are (SQLite's datetimes)."""

    sql: str
    fixed: Mapping[str, Any]  # parameters with a value of their own in the statement (``values(x=None)``)
    # A positional driver: a row's values in parameter order (one C call per row), the processors by position.
    values: Callable[[Mapping[str, Any]], tuple[Any, ...]] | None
    at: tuple[tuple[int, Callable[[Any], Any]], ...]
    # A driver of named parameters: the processors by name.
    processors: tuple[tuple[str, Callable[[Any], Any]], ...]


_prepared: dict[tuple[Any, ...], Prepared] = {}


def prepare(conn: Connection, key: tuple[Any, ...], build: Callable[[], sa.ClauseElement],
            column_keys: Sequence[str] | None = None) -> Prepared:
    """``build()`` compiled once per dialect, driver (its placeholders), server version (MariaDB and
    MySQL spell an upsert differently) and ``key``; ``key`` must name everything else the statement
    depends on."""
    dialect = conn.dialect
    full = (dialect.name, dialect.driver, dialect.paramstyle, dialect.server_version_info, *key)
    found = _prepared.get(full)
    if found is None:
        compiled = build().compile(dialect=dialect, column_keys=None if column_keys is None else list(column_keys))
        assert isinstance(compiled, SQLCompiler)
        processors = []
        for name, bind in compiled.binds.items():
            process: Callable[[Any], Any] | None = bind.type.dialect_impl(dialect).bind_processor(dialect)
            if process is not None and dialect.name == "sqlite" and isinstance(bind.type, sa.DateTime):
                process = _fast_sqlite_datetime(process)
            if process is not None:
                processors.append((name, process))
        fixed = {name: bind.value for name, bind in compiled.binds.items()
                 if not bind.required and bind.callable is None and name not in (column_keys or ())}
        if dialect.positional:
            names = tuple(compiled.positiontup or ())
            values = _getter(names)
            at = tuple((i, process) for i, name in enumerate(names) for bound, process in processors if bound == name)
            found = Prepared(str(compiled), fixed, values, at, ())
        else:
            found = Prepared(str(compiled), fixed, None, (), tuple(processors))
        _prepared[full] = found
    return found


def _getter(names: tuple[str, ...]) -> Callable[[Mapping[str, Any]], tuple[Any, ...]]:
    """A row's values in the order of ``names``, as a tuple (``itemgetter`` returns a bare value for one)."""
    if len(names) > 1:
        return itemgetter(*names)
    return lambda row: tuple(row[name] for name in names)


def _fast_sqlite_datetime(process: Callable[[Any], Any]) -> Callable[[Any], Any]:
    """SQLite's datetime bind processor, with naive datetimes written by ``isoformat`` (C) instead of a
    ``%`` format per value: the same text (``YYYY-MM-DD HH:MM:SS.ffffff``, checked here), at a fifth of
    the CPU; it was the largest single cost of storing a page of calls."""
    sample = datetime(2026, 3, 30, 7, 5, 9, 42)
    if process(sample) != sample.isoformat(" ", "microseconds"):
        return process  # another storage format: keep SQLAlchemy's

    def fast(value: Any) -> Any:
        if type(value) is datetime and value.tzinfo is None:
            return value.isoformat(" ", "microseconds")
        return process(value)

    return fast


def execute_many(conn: Connection, prepared: Prepared, rows: Sequence[Mapping[str, Any]]) -> Any:
    """``prepared`` straight to the driver, once per row (one executemany)."""
    fixed = prepared.fixed
    if fixed:
        rows = [{**fixed, **r} for r in rows]
    params: list[Any]
    if prepared.values is not None:
        values, at = prepared.values, prepared.at
        if at:
            params = []
            for r in rows:
                row = list(values(r))
                for i, process in at:
                    row[i] = process(row[i])
                params.append(tuple(row))
        else:
            params = [values(r) for r in rows]
    elif prepared.processors:
        params = [_processed(r, prepared.processors) for r in rows]
    else:
        params = [dict(r) for r in rows]
    return conn.exec_driver_sql(prepared.sql, params)


def _processed(row: Mapping[str, Any], processors: Sequence[tuple[str, Callable[[Any], Any]]]) -> dict[str, Any]:
    out = dict(row)
    for name, process in processors:
        if name in out:
            out[name] = process(out[name])
    return out


_PG_ARRAY_TYPES = {"VARCHAR": "varchar", "INTEGER": "int4", "BIGINT": "int8", "TEXT": "text", "DOUBLE": "float8",
                   "DOUBLE PRECISION": "float8", "BOOLEAN": "bool", "TIMESTAMP WITHOUT TIME ZONE": "timestamp"}
_unnest_cache: dict[tuple[str, tuple[str, ...], tuple[str, ...] | None], tuple[str, tuple[str, ...]]] = {}


def _pg_unnest(conn: Connection, table: sa.Table, rows: Sequence[Mapping[str, Any]],
               update: tuple[str, ...] | None = None) -> None:
    """PostgreSQL: ``INSERT … SELECT FROM unnest(one array per column)`` (with ``update``, an upsert on
    the key), one statement per table and batch whatever the row count (psycopg's executemany sends a
    statement per row), its arrays sent in binary (``%(name)b``): psycopg quotes every element of a
    text array with a regular expression, which for a page of raw JSON cost more than the insert."""
    columns = tuple(rows[0])
    key = (table.name, columns, update)
    cached = _unnest_cache.get(key)
    if cached is None:
        casts = []
        for name in columns:
            type_name = table.c[name].type.compile(dialect=conn.dialect).split("(")[0].upper()
            casts.append(f"CAST(%({name})b AS {_PG_ARRAY_TYPES[type_name]}[])")
        # Table and column names come from our own models, never from input.
        sql = (f"INSERT INTO {table.name} ({', '.join(columns)}) "  # noqa: S608
               f"SELECT * FROM unnest({', '.join(casts)})")
        if update is not None:
            keys = ", ".join(c.name for c in table.primary_key.columns)
            sets = ", ".join(f"{c} = EXCLUDED.{c}" for c in update)
            sql += f" ON CONFLICT ({keys}) DO " + (f"UPDATE SET {sets}" if sets else "NOTHING")
        floats = tuple(c for c in columns if isinstance(table.c[c].type, sa.Float))
        cached = _unnest_cache[key] = (sql, floats)
    sql, floats = cached
    params = {name: [r[name] for r in rows] for name in columns}
    for name in floats:
        # One binary type per array: an integer among floats would pick the integer one.
        params[name] = [None if v is None else float(v) for v in params[name]]
    conn.exec_driver_sql(sql, params)


def stamp(rows: Sequence[dict[str, Any]], workspace: str) -> None:
    """Give each row its workspace (in place: the rows are the caller's fresh dicts)."""
    for row in rows:
        row["workspace"] = workspace


def bulk_insert(conn: Connection, table: sa.Table, rows: list[dict[str, Any]], *,
                workspace: str = DEFAULT_WORKSPACE) -> None:
    """executemany straight to the driver with SQL compiled once per dialect and set of columns
    (:func:`prepare`; on PostgreSQL one ``unnest`` statement); every row in ``workspace``.

    Child rows are the most numerous rows of a sync: SQLAlchemy's per-row
    parameter processing, skipped here, cost about half of their insert.
    """
    if not rows:
        return
    stamp(rows, workspace)
    if conn.dialect.name == "postgresql":
        _pg_unnest(conn, table, rows)
        return
    columns = tuple(rows[0])
    execute_many(conn, prepare(conn, ("insert", table.name, columns), lambda: sa.insert(table), columns), rows)


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
                    touch: Mapping[str, Any] | None = None, workspace: str = DEFAULT_WORKSPACE,
                    stored_rows: Mapping[str, tuple[str, str]] | None = None) -> Replaced:
    """Store ``trees`` whose ``content_hash`` changed, in the caller's transaction: upsert the parent,
    replace its children as a whole.  An unchanged one only gets ``last_synced_at = now``.

    ``children``: child tables in the order deletes must run (children of children first); inserts
    run in the reverse order.  A call listed twice is stored once (the last one wins).  Every
    ``IN`` list is chunked (:data:`IN_CHUNK`).  ``key``: the parent's key column, which every child
    table shares; ``touch``: what an unchanged row gets instead of ``last_synced_at = now``.
    New rows are in ``workspace``; a key stored under another workspace is left as it is, children
    and all (``foreign``); ``update`` never names ``workspace``.  ``stored_rows``: ``{key:
    (content_hash, workspace)}`` of every stored one among ``trees``, when the caller has just read
    them (one read of the parents per batch, not two).
    """
    by_id = {t.parent[key]: t for t in trees}
    ids = list(by_id)
    if stored_rows is None:
        stored_rows = read_in(conn, parent, (key, "content_hash", "workspace"), key, ids)
    stored = {i: hashed for i, (hashed, owner) in stored_rows.items() if owner == workspace}
    foreign = {i for i, (_, owner) in stored_rows.items() if owner != workspace}
    unchanged = [i for i in ids if i in stored and stored[i] == by_id[i].parent["content_hash"]]
    changed = [i for i in ids if i not in foreign and (i not in stored or stored[i] != by_id[i].parent["content_hash"])]
    if unchanged:
        values = dict(touch or {"last_synced_at": now})
        stmt = _statement(("touch", parent.name, key, tuple(values)), lambda: sa.update(parent).where(
            parent.c[key].in_(sa.bindparam("ids", expanding=True))).values(
            {c: sa.bindparam(f"v_{c}") for c in values}))
        for chunk in chunks(unchanged):
            conn.execute(stmt, {"ids": chunk, **{f"v_{c}": v for c, v in values.items()}})
    if changed:
        parents = [by_id[i].parent for i in changed]
        stamp(parents, workspace)
        upsert(conn, parent, parents, [c for c in update if c != "workspace"])
        rewritten = [i for i in changed if i in stored]
        for chunk in chunks(rewritten):
            for table in children:
                conn.execute(_delete_in(table, key), {"ids": chunk})
        for table in reversed(children):
            bulk_insert(conn, table, [row for i in changed for row in by_id[i].children.get(table, ())],
                        workspace=workspace)
    new = sum(1 for i in ids if i not in stored and i not in foreign)
    return Replaced(new=new, changed=len(changed) - new, unchanged=len(unchanged), foreign=len(foreign))


_statements: dict[tuple[Any, ...], Any] = {}


def _delete_in(table: sa.Table, key: str) -> Any:
    return _statement(("delete_in", table.name, key),
                      lambda: sa.delete(table).where(table.c[key].in_(sa.bindparam("ids", expanding=True))))


def _statement(key: tuple[Any, ...], build: Callable[[], Any]) -> Any:
    """A statement built once (SQLAlchemy then finds its compiled form in its cache, per dialect)."""
    found = _statements.get(key)
    if found is None:
        found = _statements[key] = build()
    return found


def read_in(conn: Connection, table: sa.Table, columns: Sequence[str], key: str,
            ids: Sequence[str]) -> dict[str, tuple[Any, ...]]:
    """``{key: (the other columns…)}`` of ``table``'s rows whose ``key`` is in ``ids`` (chunked)."""
    stmt = _statement(("read_in", table.name, tuple(columns), key), lambda: sa.select(
        *(table.c[c] for c in columns)).where(table.c[key].in_(sa.bindparam("ids", expanding=True))))
    found: dict[str, tuple[Any, ...]] = {}
    for chunk in chunks(ids):
        for row in conn.execute(stmt, {"ids": chunk}):
            found[row[0]] = tuple(row[1:])
    return found
