"""Run records: ``sync_runs`` (``etl sync``, the webhook worker) and ``discovery_runs`` (``etl discover``),
one row per run, counters added as work commits."""

from __future__ import annotations

from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from etl.config import DEFAULT_WORKSPACE
from etl.tables import discovery_runs_t, runs_t


def _start(conn: Connection, table: sa.Table, command: str, now: datetime, workspace: str) -> int:
    pk = conn.execute(sa.insert(table).values(command=command, started_at=now,
                                              workspace=workspace)).inserted_primary_key
    assert pk is not None
    return int(pk[0])


def _add_counts(conn: Connection, table: sa.Table, run_id: int, counts: dict[str, int]) -> None:
    if any(counts.values()):
        c = table.c
        conn.execute(sa.update(table).where(c.id == run_id)
                     .values({name: c[name] + n for name, n in counts.items() if n}))


def _finish(conn: Connection, table: sa.Table, run_id: int, now: datetime, exit_code: int,
            stop_reason: str | None) -> None:
    conn.execute(sa.update(table).where(table.c.id == run_id)
                 .values(finished_at=now, exit_code=exit_code, stop_reason=stop_reason))


def start_run(conn: Connection, command: str, now: datetime, *, workspace: str = DEFAULT_WORKSPACE) -> int:
    """A new ``sync_runs`` row of ``workspace``; its id."""
    return _start(conn, runs_t, command, now, workspace)


def add_run_counts(conn: Connection, run_id: int, **counts: int) -> None:
    _add_counts(conn, runs_t, run_id, counts)


def finish_run(conn: Connection, run_id: int, now: datetime, exit_code: int, stop_reason: str | None) -> None:
    _finish(conn, runs_t, run_id, now, exit_code, stop_reason)


def start_discovery_run(conn: Connection, command: str, now: datetime, *, workspace: str = DEFAULT_WORKSPACE) -> int:
    """A new ``discovery_runs`` row of ``workspace``; its id."""
    return _start(conn, discovery_runs_t, command, now, workspace)


def add_discovery_counts(conn: Connection, run_id: int, **counts: int) -> None:
    _add_counts(conn, discovery_runs_t, run_id, counts)


def finish_discovery_run(conn: Connection, run_id: int, now: datetime, exit_code: int,
                         stop_reason: str | None) -> None:
    _finish(conn, discovery_runs_t, run_id, now, exit_code, stop_reason)


def drop_discovery_run(conn: Connection, run_id: int) -> None:
    """Forget a discovery that was refused before it walked anything (e.g. no ``--since``): no run happened."""
    conn.execute(sa.delete(discovery_runs_t).where(discovery_runs_t.c.id == run_id))
