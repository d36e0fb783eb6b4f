"""One run lifecycle, shared by every engine: the run record, the stop, the exit code, the finished line.

A sync (``etl sync``, ``etl backfill``, the engine inside ``etl serve``) and a
discovery start and end the same way, here:

* :class:`StopReason` says why a run ended before its work ran out, each with
  its exit code;
* :class:`RunOutcome` holds what every run counts and how it ended, and owns
  the two rules: **the first stop wins** (a failure — the key refused, the
  database lost, an unexpected error, a walk that ends the run — replaces an
  earlier stop that is not a failure, so a signal never hides why a run
  failed), and **the exit code** (the stop's code; a run that stopped cleanly
  or not at all but counted ``errors`` exits 1);
* :class:`Lifecycle` is one run on one engine: it writes the run record
  (``sync_runs`` or ``discovery_runs`` through :mod:`etl.store.runs`), is the
  one stop signal (:meth:`Lifecycle.request_stop`, the same signature for
  every engine), and ends the run with the one canonical log line
  (``run finished`` / ``discovery finished``, fields of :meth:`RunOutcome.as_dict`).

:class:`etl.sync.RunStats` and :class:`etl.discover.DiscoveryStats` extend
:class:`RunOutcome`.
"""

from __future__ import annotations

import contextlib
import enum
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy.engine import Connection, Engine

from etl import store
from etl.clock import Clock
from etl.config import DEFAULT_WORKSPACE
from etl.errors import DatabaseError
from etl.logs import run_end_level

__all__ = ["DISCOVERY_RECORD", "SYNC_RECORD", "Lifecycle", "RunOutcome", "RunRecord", "StopReason"]


class StopReason(enum.Enum):
    """Why a run ended before its work ran out; each has its exit code."""

    LIMIT = "limit"
    MAX_RUNTIME = "max_runtime"
    SIGNAL = "signal"
    ABORTED = "aborted"
    AUTH_REFUSED = "auth_refused"
    DATABASE_LOST = "database_lost"
    UNEXPECTED = "unexpected"
    # Discovery: a walk stopped on an error (the others went on).
    WALK_ERRORS = "walk_errors"
    # Discovery refused before it walked anything (no --since for a new line, an unknown line): no run.
    REFUSED = "refused"
    # Items were there and the API never answered one (connection refused, timeouts, 5xx/429): exit 4.
    UNREACHABLE = "unreachable"

    @property
    def exit_code(self) -> int:
        if self is StopReason.AUTH_REFUSED:
            return 3
        if self is StopReason.REFUSED:
            return 2
        if self is StopReason.UNREACHABLE:
            return 4
        return 0 if self in (StopReason.LIMIT, StopReason.MAX_RUNTIME) else 1

    @property
    def is_failure(self) -> bool:
        """Something went wrong (not an operator's limit, a signal or an abort)."""
        return self not in (StopReason.LIMIT, StopReason.MAX_RUNTIME, StopReason.SIGNAL, StopReason.ABORTED)


@dataclass(kw_only=True)
class RunOutcome:
    """What every run counts and how it ended; ``duration_s`` is measured on ``clock`` (a FakeClock in tests)."""

    clock: Clock = field(repr=False, compare=False)
    errors: int = 0
    stop: StopReason | None = None
    stop_reason: str | None = None  # the text stored in the run record's stop_reason
    exit_code: int = 0
    started: float = field(default=-1.0, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.started < 0:
            self.started = self.clock.monotonic()

    def record_stop(self, reason: StopReason, text: str) -> bool:
        """Record why the run stops, unless a reason is recorded already (the first stop wins)."""
        if self.stop is not None:
            return False
        self.stop, self.stop_reason = reason, text
        return True

    def record_failure(self, reason: StopReason, text: str) -> bool:
        """Record a failure: it replaces an earlier stop that is not a failure (a signal, a limit)."""
        if self.stop is not None and self.stop.is_failure:
            return False
        self.stop, self.stop_reason = reason, text
        return True

    def settle(self) -> int:
        """The exit code, by the one rule: the stop's code; ``errors`` with a clean end (or none) exits 1."""
        code = 0 if self.stop is None else self.stop.exit_code
        self.exit_code = 1 if code == 0 and self.item_errors else code
        return self.exit_code

    @property
    def item_errors(self) -> int:
        """Items that ended in error, every queue of the run (a sync adds its transcripts')."""
        return self.errors

    @property
    def duration_s(self) -> float:
        return round(self.clock.monotonic() - self.started, 3)

    @property
    def stopped_because(self) -> str | None:
        """Why a run that exits non-zero stopped, in a few words for its summary line; None when it exits 0
        or when its item errors (counted in the line already) are the reason."""
        if self.exit_code == 0 or self.stop is None:
            return None
        return _STOPPED.get(self.stop) or self.stop_reason or self.stop.value

    def as_dict(self) -> dict[str, Any]:
        """The outcome fields, last in every run's ``… finished`` log line and ``--json`` output."""
        return {"exit_code": self.exit_code, "stop_reason": self.stop_reason, "duration_s": self.duration_s}


# What a summary line says after "stopped:" (discovery's walk errors and refusals say their own reason).
_STOPPED = {StopReason.AUTH_REFUSED: "the API refused the key", StopReason.SIGNAL: "interrupted",
            StopReason.ABORTED: "interrupted", StopReason.UNREACHABLE: "the API was never reached",
            StopReason.DATABASE_LOST: "the database was lost", StopReason.UNEXPECTED: "an unexpected error"}


@dataclass(frozen=True)
class RunRecord:
    """Where a kind of run is recorded and what its log lines are called."""

    start: Callable[..., int]  # (conn, command, now, *, workspace) -> the run's id
    finish: Callable[[Connection, int, datetime, int, str | None], None]
    event: str  # "run" (a sync) or "discovery": "<event> started", "<event> finished"


SYNC_RECORD = RunRecord(store.start_run, store.finish_run, "run")
DISCOVERY_RECORD = RunRecord(store.start_discovery_run, store.finish_discovery_run, "discovery")


class Lifecycle:
    """One run of one engine, from its record to its finished line; ``stop`` is the run's one stop signal.

    ``log`` is a structlog logger (bound to the run once it starts); every
    method but :meth:`start` and :meth:`finish` is safe from any thread,
    signal handlers included.
    """

    def __init__(self, outcome: RunOutcome, engine: Engine, record: RunRecord, clock: Clock, log: Any, *,
                 workspace: str = DEFAULT_WORKSPACE) -> None:
        self.outcome = outcome
        self.engine = engine
        self.record = record
        self.clock = clock
        self.log = log
        self.workspace = workspace  # the run record's (etl.workspaces): the run works for this workspace only
        self.stop = threading.Event()
        self.run_id: int | None = None

    def request_stop(self, reason: StopReason, text: str) -> None:
        """Stop the run (signals, limits, a lost database): the first reason is the one it reports."""
        if not self.stop.is_set():
            self.outcome.record_stop(reason, text)
            self.log.warning("stopping", reason=text)
            self.stop.set()

    def fail(self, reason: StopReason, text: str) -> None:
        """The run cannot go on: this failure is its reason (over a signal or a limit) and it stops now."""
        self.outcome.record_failure(reason, text)
        self.stop.set()

    def start(self, command_: str, now: datetime, *, record: bool = True, bind: str = "run_id",
              **fields: Any) -> int | None:
        """Write the run record (``command_``, started at ``now``; none when ``record`` is false: a dry
        run) and log ``<event> started`` with ``fields``; the run's id, bound to the log as ``bind``."""
        if record:
            self.run_id = self._write(lambda conn: self.record.start(conn, command_, now, workspace=self.workspace))
            self.log = self.log.bind(**{bind: self.run_id})
        self.log.info(f"{self.record.event} started", **fields)
        return self.run_id

    def finish(self, fields: dict[str, Any] | None = None, *, record: bool = True) -> int:
        """Settle the exit code, finish the run record (unless ``record`` is false: the database is lost)
        and log the one ``<event> finished`` line, ``fields`` after the outcome's; returns the exit code."""
        outcome = self.outcome
        code = outcome.settle()
        if record and self.run_id is not None:
            # The run's work is saved already; a record that cannot be finished is left to `etl status`.
            with contextlib.suppress(DatabaseError):
                self._write(self.record.finish, self.run_id, self.clock.utcnow(), code, outcome.stop_reason)
        getattr(self.log, run_end_level(code))(f"{self.record.event} finished", **outcome.as_dict(), **(fields or {}))
        return code

    def forget(self) -> None:
        """Drop the run record: the run was refused before it did anything (no run happened)."""
        if self.run_id is not None:
            self._write(store.drop_discovery_run, self.run_id)
            self.run_id = None

    def _write(self, fn: Callable[..., Any], *args: Any) -> Any:
        return store.transaction(self.engine, fn, *args, clock=self.clock)
