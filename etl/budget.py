"""One rate budget per API key, shared through the database by every ``etl`` process.

The key's schedule (:class:`etl.ratelimit.BudgetState`) is one row of
``rate_budgets``, found by the SHA-256 of the key (the key is never stored).
A process reserves a block of slots (about :data:`etl.ratelimit.LOOKAHEAD_S`
worth: 2 at 10/s, 1 below 4/s, 25 at 100/s) in one short transaction:
read the row, compute the new schedule, write it back only if nobody changed
it meanwhile (a ``version`` compare-and-set).  That works the same on SQLite
(``BEGIN IMMEDIATE`` serialises it across processes on one host) and on
PostgreSQL and MariaDB (across hosts) with no lock held between statements and
no coordinator.  A 429 writes its pause into the row, so every process waits.

A crashed process holds nothing: at most the slots it reserved ahead (a
quarter of a second's worth) go unused.  Times are wall-clock seconds of each
host, so hosts sharing a key need synchronised clocks (NTP); a skew of *d*
seconds shifts the schedule by *d*.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from typing import TypeVar

from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import DBAPIError, IntegrityError

from etl import store
from etl.clock import Clock
from etl.config import Settings
from etl.db import describe_db_error
from etl.errors import DatabaseError
from etl.ratelimit import BudgetState, LocalBudget, RateBudget, SlotBudget, penalized, reserve

T = TypeVar("T")

_MAX_CONFLICTS = 200


def key_hash(api_key: str) -> str:
    """How a key is named in the database: its SHA-256, hex."""
    return hashlib.sha256(api_key.encode("utf-8")).hexdigest()


def budget_for(settings: Settings, engine: Engine | None, clock: Clock) -> RateBudget:
    """The budget a process should use: shared through ``engine`` when throttled,
    in memory when ``--rate 0`` (unthrottled: nothing to share but 429 pauses)."""
    if settings.rate == 0 or engine is None or not settings.api_key:
        return LocalBudget(settings.rate, clock)
    return DatabaseBudget(engine, settings.api_key, settings.rate, clock)


class DatabaseBudget(SlotBudget):
    """The key's budget kept in ``rate_budgets``; thread-safe, one per process and key."""

    def __init__(self, engine: Engine, api_key: str, rate: float, clock: Clock) -> None:
        super().__init__(rate, clock)
        self.engine = engine
        self.key_hash = key_hash(api_key)
        self._conn: Connection | None = None

    def close(self) -> None:
        super().close()
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None

    def _reserve(self, now: float, n: int) -> list[float]:
        return self._update(lambda state: reserve(state, now, n, self.rate))

    def _penalize(self, now: float, retry_after: float | None) -> None:
        with self._lock:
            self._update(lambda state: (penalized(state, now, retry_after), None))

    def _update(self, change: Callable[[BudgetState], tuple[BudgetState, T]]) -> T:
        """Apply ``change`` to the row (compare-and-set on ``version``); caller holds the lock."""
        # Not store.transaction: the budget keeps one connection for the process (a reservation
        # every quarter second must not pay a pool checkout), and a conflict here is no error to
        # back off from but the compare-and-set saying "read again", at once.
        for _ in range(_MAX_CONFLICTS):
            if self._conn is None or self._conn.invalidated:
                self._conn = self._connect()
            conn = self._conn
            try:
                with conn.begin():
                    found = store.read_budget(conn, self.key_hash)
                    if found is None:
                        state, out = change(BudgetState())
                        store.create_budget(conn, self.key_hash, state)
                        return out
                    version, state = found
                    state, out = change(state)
                    written = store.write_budget(conn, self.key_hash, version, state)
                if written:
                    return out
            except IntegrityError:
                continue  # another process inserted the row first: read it
            except DBAPIError as exc:
                if exc.connection_invalidated:
                    self._conn = None
                    continue
                raise DatabaseError(describe_db_error(str(self.engine.url), exc)) from None
        raise DatabaseError(f"the rate budget row stayed contended for {_MAX_CONFLICTS} tries")

    def _connect(self) -> Connection:
        try:
            return self.engine.connect()
        except DBAPIError as exc:
            raise DatabaseError(describe_db_error(str(self.engine.url), exc)) from None

