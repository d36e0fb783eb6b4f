"""One transaction with the deadlock / lock-wait retry, for every writer that shares the queue.

A deadlock with another run's claim (both touch the due index) or a busy
SQLite database is normal under load: the work is run again in a fresh
transaction after a short random pause, a bounded number of times and (for a
caller that holds a request open) within a time budget.  A database that went
away (server gone, connection refused, file unusable) is never retried.
"""

from __future__ import annotations

import random
import sqlite3
from collections.abc import Callable
from typing import Any, TypeVar

from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import DBAPIError, IntegrityError, OperationalError

from etl.clock import Clock
from etl.db import describe_db_error
from etl.errors import DatabaseError

T = TypeVar("T")

DEADLOCK_RETRIES = 3

# SQLite primary result codes meaning the database file itself is gone or
# unusable.  SQLite has no connection to lose, so SQLAlchemy never sets
# ``connection_invalidated`` for it; these codes are its equivalent.
_SQLITE_LOST = {10: "SQLITE_IOERR", 11: "SQLITE_CORRUPT", 14: "SQLITE_CANTOPEN", 26: "SQLITE_NOTADB"}
# Deadlocks, serialisation failures and lock waits: PostgreSQL SQLSTATEs, MySQL error numbers.
_RETRYABLE_SQLSTATES = {"40P01", "40001"}
_RETRYABLE_MYSQL = {1213, 1205}
_SQLITE_BUSY = 5


def is_lost(exc: DBAPIError) -> bool:
    """The database went away (server gone, connection refused, file unusable)."""
    if exc.connection_invalidated:
        return True
    orig = exc.orig
    if isinstance(orig, sqlite3.Error):
        return (getattr(orig, "sqlite_errorcode", 0) & 0xFF) in _SQLITE_LOST
    return False


def is_retryable(exc: BaseException) -> bool:
    """Deadlock / serialization failure / lock wait / SQLite busy: worth one more try."""
    if not isinstance(exc, DBAPIError) or is_lost(exc):
        return False
    orig = exc.orig
    if isinstance(orig, sqlite3.Error):
        return (getattr(orig, "sqlite_errorcode", 0) & 0xFF) == _SQLITE_BUSY or "database is locked" in str(orig)
    code = getattr(orig, "sqlstate", None) or (orig.args[0] if orig is not None and orig.args else None)
    return code in _RETRYABLE_SQLSTATES or code in _RETRYABLE_MYSQL


def transaction(engine: Engine, fn: Callable[..., T], *args: Any, clock: Clock,
                retries: int | None = DEADLOCK_RETRIES, max_wait_s: float | None = None, conflicts: int = 0,
                fatal: bool = True) -> T:
    """Run ``fn(conn, *args)`` in one transaction on a connection of ``engine``; return what it returns.

    A deadlock, lock wait or busy SQLite database is retried up to ``retries``
    times (None: no limit but ``max_wait_s``; with ``max_wait_s``, only while the pauses fit in it), after a
    random pause that doubles each time.  ``conflicts``: how many times an
    :class:`IntegrityError` is retried too (a concurrent writer inserted the
    same key first: the next pass sees its row).  A connection that failed
    otherwise is dropped, not handed to the next caller.

    ``fatal``: a database that cannot be reached or went away raises
    :class:`DatabaseError` (the run stops); without it the :class:`DBAPIError`
    escapes as it is (a webhook delivery answers 503).
    """
    started = clock.monotonic()
    attempt = 0
    while True:
        attempt += 1
        try:
            conn = _connect(engine, fatal)
            with conn:
                try:
                    with conn.begin():
                        return fn(conn, *args)
                except OperationalError as exc:
                    if not is_retryable(exc) and not conn.invalidated:
                        conn.invalidate()  # do not hand this connection to the next caller
                    raise
        except IntegrityError:
            if attempt > conflicts:
                raise
        except DBAPIError as exc:
            if fatal and is_lost(exc):
                raise DatabaseError(describe_db_error(str(engine.url), exc)) from None
            pause = 0.02 * 2 ** min(attempt, 6) * (0.5 + random.random())
            if not is_retryable(exc) or (retries is not None and attempt > retries) \
                    or (max_wait_s is not None and clock.monotonic() - started + pause > max_wait_s):
                raise
            clock.sleep(pause)


def _connect(engine: Engine, fatal: bool) -> Connection:
    try:
        return engine.connect()
    except DBAPIError as exc:
        if fatal:
            # No connection at all (server down, refused, bad file): the database is lost.
            raise DatabaseError(describe_db_error(str(engine.url), exc)) from None
        raise
