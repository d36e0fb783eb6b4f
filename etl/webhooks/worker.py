"""The sync engine inside ``etl serve``: a background thread per workspace, woken by its stored deliveries.

Each workspace the server receives for has its own :class:`SyncWorker` (issue
27): its own thread, settings (``Settings.workspace``, key, API version), HTTP
client and rate budget (the key's, shared through the database), claiming only
its workspace's queue items.  So workspaces are fair to each other by
construction: a backlog in one never delays another's deliveries, and each
spends only its own key's budget.

:meth:`SyncWorker._attempt` starts each engine run through
:func:`etl.running.run_in_server`, the way every sync starts, on the key's rate
budget shared through the database (one budget for the server's life, so a cron
sync and this server together stay within the key's rate), on the server's clock,
without the signal handlers and ``gc.freeze()`` of a one-shot CLI run (uvicorn
owns SIGTERM; this module gets :meth:`SyncWorker.stop`).

The worker runs the engine until nothing is due, then sleeps until a delivery
wakes it or ``poll_interval`` passes (items rescheduled as in-progress become
due by themselves).  Leases make a cron ``etl sync`` at the same time safe.
Stopping asks the running engine to stop: in-flight requests land and are
saved, every other leased item is released.

Nothing the database does ends the thread: an outage (a server restart, a
SQLite file that went away) is one warning line, then the worker backs off
(:data:`BACKOFF_S`, doubling up to :data:`MAX_BACKOFF_S`), drops its pooled
connections and its budget connection, and tries again; the first run that
works clears the error.  So do :data:`NO_PROGRESS_RUNS` runs in a row that claim due work and
save none (a poison the engine cannot pass): unhealthy, not retried in a hot loop, until a run
saves something.  ``/healthz`` shows :attr:`SyncWorker.error`: the
error's type and a short fixed reason, never its text (which may hold SQL,
parameters, host, user and database name).

:class:`Housekeeper` is a second, small thread: it observes landing latency
for summary events, and prunes old delivery rows.
"""

from __future__ import annotations

import contextlib
import threading
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import httpx
import structlog
from sqlalchemy.engine import Engine
from sqlalchemy.exc import DBAPIError, SQLAlchemyError

from etl import store
from etl.budget import budget_for
from etl.clock import Clock
from etl.config import DEFAULT_WORKSPACE, Settings
from etl.db import reader
from etl.errors import AuthError, DatabaseError
from etl.logs import get_logger
from etl.ratelimit import RateBudget
from etl.running import run_in_server
from etl.runs import StopReason
from etl.webhooks import intake
from etl.webhooks.metrics import Metrics, WorkspaceMetrics

# Work claimed per claim, in seconds at the rate (``etl sync`` claims 10 s).  A summary
# event jumps to the head of the due line, but not ahead of what the engine has claimed
# already: up to 1.5 claims (2 s worth, then another when half is left).  So with a
# backlog a summary waits about 3 s for that, instead of 10-15 s (bench/README.md).
CLAIM_AHEAD_S = 2.0
# After a failed engine run: wait this long, doubling per failure up to the cap (so the engine
# is back within seconds of the database).
BACKOFF_S = 0.5
MAX_BACKOFF_S = 8.0
# This many runs in a row that claimed due work and saved none: the engine cannot make progress
# (a poison it cannot pass): /healthz says so instead of healthy while it retries (issue 25).
NO_PROGRESS_RUNS = 3


@dataclass(frozen=True, slots=True)
class EngineError:
    """Why the engine's last attempt failed, safe to show anyone: a type and a fixed reason."""

    type: str
    reason: str

    @classmethod
    def of(cls, exc: BaseException) -> EngineError:
        orig = getattr(exc, "orig", None)
        name = type(orig if isinstance(orig, BaseException) else exc).__name__
        if isinstance(exc, DatabaseError | DBAPIError | SQLAlchemyError):
            return cls(name, "database unavailable")
        if isinstance(exc, AuthError):
            return cls(name, "the API refused the key")
        if isinstance(exc, httpx.TransportError):
            return cls(name, "API unreachable")
        return cls(name, "unexpected error (see the log)")

    def as_dict(self) -> dict[str, str]:
        return {"type": self.type, "reason": self.reason}


class MeteredBudget:
    """The key's shared :class:`~etl.ratelimit.RateBudget`, counting the slots it grants this server."""

    def __init__(self, inner: RateBudget, metrics: WorkspaceMetrics) -> None:
        self.inner = inner
        self.metrics = metrics
        self.rate = inner.rate

    def acquire(self, max_wait: float | None = None, stop: threading.Event | None = None) -> None:
        self.inner.acquire(max_wait, stop)  # NotSent propagates: no slot, nothing counted
        self.metrics.slot_granted()

    def penalize(self, retry_after: float | None) -> None:
        self.metrics.pauses.inc()
        self.inner.penalize(retry_after)

    def close(self) -> None:
        self.inner.close()


class InstrumentedTransport(httpx.BaseTransport):
    """Counts every API request the engine sends (metrics, last successful fetch)."""

    def __init__(self, inner: httpx.BaseTransport, metrics: WorkspaceMetrics) -> None:
        self.inner = inner
        self.metrics = metrics

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        try:
            response = self.inner.handle_request(request)
        except httpx.TransportError:
            self.metrics.request_sent("error", ok=False)
            raise
        status = response.status_code
        outcome = str(status) if status in (404, 429) else f"{status // 100}xx"
        # A 404 is an answer about the call (not found yet), so the API was reachable.
        self.metrics.request_sent(outcome, ok=status < 400 or status == 404)
        return response

    def close(self) -> None:
        self.inner.close()


class SyncWorker:
    """Runs the engine of one workspace (``settings.workspace``) on its own thread whenever it may have due work."""

    def __init__(self, engine: Engine, settings: Settings, metrics: Metrics, *,
                 transport: httpx.BaseTransport | None = None, poll_interval: float = 30.0,
                 clock: Clock) -> None:
        self.engine = engine
        self.settings = settings
        self.workspace = settings.workspace
        self.metrics = metrics.workspace(settings.workspace, settings.rate)
        self.transport = transport
        self.poll_interval = poll_interval
        self.clock = clock
        self.log = get_logger(workspace=self.workspace)
        self.error: EngineError | None = None  # the last attempt failed (cleared by one that works)
        self.failures = 0  # consecutive failed attempts
        self.no_progress = 0  # consecutive runs that claimed work and saved none
        self.budget: RateBudget = self._new_budget()
        self.last_run: dict[str, Any] | None = None  # the last run's figures, taken when it ended
        self.last_run_ended = 0.0  # when (the clock's monotonic time)
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self._stop_current: Callable[[], None] | None = None
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._loop, name=f"etl-serve-engine-{self.workspace}", daemon=True)

    @property
    def alive(self) -> bool:
        return self._thread.is_alive()

    def start(self) -> None:
        self._thread.start()
        self.metrics.engine_alive.set(1)

    def wake(self) -> None:
        self._wake.set()

    def stop(self, timeout: float = 60.0) -> None:
        """Stop the running engine (in-flight work saved, leases released) and the thread."""
        self._stopping.set()
        self._wake.set()
        with self._lock:
            if self._stop_current is not None:
                self._stop_current()
        self._thread.join(timeout)
        self.budget.close()
        self.metrics.engine_alive.set(0)

    def _on_start(self, stop: Callable[[], None]) -> None:
        with self._lock:
            self._stop_current = stop
            if self._stopping.is_set():
                stop()

    def _new_budget(self) -> RateBudget:
        return MeteredBudget(budget_for(self.settings, self.engine, self.clock), self.metrics)

    def _new_transport(self) -> httpx.BaseTransport:
        if self.transport is not None:
            return self.transport
        n = self.settings.concurrency
        limits = httpx.Limits(max_connections=n, max_keepalive_connections=n, keepalive_expiry=30.0)
        return httpx.HTTPTransport(limits=limits, trust_env=False)

    def _anything_due(self) -> bool:
        """Whether a run would claim something (raises when the database cannot say)."""
        with reader(self.engine).connect() as conn:
            return store.anything_due(conn, self.clock.utcnow(), workspace=self.settings.workspace)

    def _loop(self) -> None:
        # Every line of this thread's runs names the workspace (the engine's fetch threads copy the context).
        structlog.contextvars.bind_contextvars(workspace=self.workspace)
        while not self._stopping.is_set():
            if self.failures:
                self._wake.clear()
                # Back off; a delivery does not cut it short (the database is what failed).
                if self.clock.wait(min(BACKOFF_S * 2 ** (self.failures - 1), MAX_BACKOFF_S), self._stopping):
                    break
            else:
                self.clock.idle(self.poll_interval, self._wake)
                self._wake.clear()
            if self._stopping.is_set():
                break
            try:
                self._attempt()
            except Exception as exc:  # nothing may end this thread (module docstring)
                self._failed(exc)

    def _attempt(self) -> None:
        if not self._anything_due():
            self._recovered()
            return  # no sync_runs row for a run that would claim nothing
        self.metrics.runs.inc()
        stats = run_in_server(self.engine, self.settings,
                              transport=InstrumentedTransport(self._new_transport(), self.metrics),
                              budget=self.budget, claim_ahead_s=CLAIM_AHEAD_S, on_start=self._on_start,
                              clock=self.clock)
        with self._lock:
            self._stop_current = None
        run = stats.as_dict()  # as_dict's duration counts until it is called
        # The stop reason's text may quote the database's error: show its kind only.
        run["stop_reason"] = stats.stop.value if stats.stop is not None else None
        self.last_run = run
        self.last_run_ended = self.clock.monotonic()
        if stats.stop in (StopReason.DATABASE_LOST, StopReason.UNEXPECTED) and not self._stopping.is_set():
            self._failed(stats.fatal or RuntimeError(stats.stop.value), logged=True)
            return
        if stats.claimed and not stats.processed and stats.exit_code != 3 and not self._stopping.is_set():
            self._stalled()
            return  # not woken again at once: the next delivery or poll tries again
        self.no_progress = 0
        self._recovered()
        if stats.exit_code == 3:
            self.log.error("the API refused the key; the engine waits for the next delivery or poll",
                           stop_reason=stats.stop_reason)
        elif stats.claimed:
            self._wake.set()  # more may have become due while it ran

    def _failed(self, exc: BaseException, *, logged: bool = False) -> None:
        self.failures += 1
        self.error = EngineError.of(exc)
        retry_in = min(BACKOFF_S * 2 ** (self.failures - 1), MAX_BACKOFF_S)
        if self.error.reason == "unexpected error (see the log)" and not logged:
            self.log.error("sync engine attempt failed; retrying", error_type=self.error.type,
                           retry_in_s=retry_in, exc_info=exc)
        elif self.failures == 1 or self.failures % 20 == 0:
            self.log.warning("sync engine paused: " + self.error.reason, error_type=self.error.type,
                             failures=self.failures, retry_in_s=retry_in)
        # Fresh connections next time: pooled ones may point at a replaced SQLite file or a
        # restarted server; the budget keeps a connection of its own.
        with contextlib.suppress(Exception):
            self.engine.dispose()
        with contextlib.suppress(Exception):
            self.budget.close()
        self.budget = self._new_budget()

    def _stalled(self) -> None:
        self.no_progress += 1
        if self.no_progress >= NO_PROGRESS_RUNS:
            self.error = EngineError("NoProgress", f"no progress: {self.no_progress} runs in a row claimed due "
                                                   "work and saved none")
            if self.no_progress == NO_PROGRESS_RUNS or self.no_progress % 20 == 0:
                self.log.error("sync engine makes no progress; /healthz reports it", runs=self.no_progress)

    def _recovered(self) -> None:
        if self.failures:
            self.log.info("sync engine resumed", after_failures=self.failures)
        self.failures = 0
        self.error = None


class Housekeeper:
    """Landing latency and pruning, on one small thread."""

    MAX_TRACKED = 50_000
    TRACK_FOR = timedelta(minutes=15)

    def __init__(self, engine: Engine, metrics: Metrics, retention: timedelta, *,
                 interval: float = 0.25, prune_every: float = 600.0, clock: Clock,
                 workspaces: Sequence[str] = (DEFAULT_WORKSPACE,)) -> None:
        self.engine = engine
        self.workspaces = tuple(workspaces)  # whose deliveries it prunes
        self.clock = clock
        self.metrics = metrics
        self.retention = retention
        self.interval = interval
        self.prune_every = prune_every
        self.log = get_logger()
        self._tracked: OrderedDict[str, tuple[datetime, str]] = OrderedDict()  # call id: (received, workspace)
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="etl-serve-housekeeper", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(10)

    def track(self, call_id: str, received_at: datetime, workspace: str) -> None:
        """Observe the landing latency of ``call_id`` (of ``workspace``) once its summary is stored."""
        with self._lock:
            self._tracked.setdefault(call_id, (received_at, workspace))
            while len(self._tracked) > self.MAX_TRACKED:
                self._tracked.popitem(last=False)

    def _loop(self) -> None:
        last_prune: float | None = None
        while not self.clock.idle(self.interval, self._stop):
            with contextlib.suppress(Exception):  # a database blip: try again next tick
                self._check_landed()
            if last_prune is None or self.clock.monotonic() - last_prune >= self.prune_every:
                last_prune = self.clock.monotonic()
                self.prune()

    def prune(self) -> int:
        """Delete each workspace's delivery rows older than the retention; a failure is one line, retried later."""
        pruned = 0
        for workspace in self.workspaces:
            try:
                n = intake.prune(self.engine, self.clock.utcnow(), self.retention, workspace=workspace)
            except Exception as exc:  # a database blip: the next prune catches up
                self.log.warning("pruning webhook deliveries failed; retrying later", workspace=workspace,
                                 error_type=type(getattr(exc, "orig", None) or exc).__name__)
                continue
            if n:
                self.log.info("pruned webhook deliveries", workspace=workspace, rows=n)
            pruned += n
        return pruned

    def _check_landed(self) -> None:
        expired = self.clock.utcnow() - self.TRACK_FOR
        with self._lock:
            while self._tracked and next(iter(self._tracked.values()))[0] < expired:
                self._tracked.popitem(last=False)  # still not landed: in progress for long
            ids = list(self._tracked)
        for start in range(0, len(ids), 500):
            with reader(self.engine).connect() as conn:
                rows = store.ended(conn, ids[start:start + 500])
            with self._lock:
                for call_id, state, finished_at in rows:
                    tracked = self._tracked.pop(call_id, None)
                    if tracked is None:
                        continue
                    received, workspace = tracked
                    # finished before the delivery: it was done already, nothing landed because of it.
                    if state == "done" and finished_at is not None and finished_at >= received:
                        self.metrics.workspace(workspace).landing.observe((finished_at - received).total_seconds())
