"""Starting the engines: the one way every sync and discovery begins (``etl sync``, ``etl backfill``,
``etl discover``, ``etl demo`` and the engine inside ``etl serve``).

A foreground run (:func:`run_sync`, :func:`run_discover`) adds what a process
needs around :class:`etl.sync.Syncer` and :class:`etl.discover.Discoverer`:
SIGTERM/SIGINT become a clean stop (a second signal abandons in-flight
requests of a sync), installed only on the main thread and restored
afterwards, and the garbage collector is told that what was imported so far
lives for the whole run.  The receiver's engine (:func:`run_in_server`) gets
neither: uvicorn owns the signals, and in a long-running server ``gc.freeze()``
would make every later object alive at that moment immortal; it is stopped
through the function it hands its caller.  Each run starts and ends through
:class:`etl.runs.Lifecycle`.

Several runs in one process (one per workspace, :mod:`etl.fleet`) run on
worker threads, where no signal handler can be installed: :func:`together`
installs one on the main thread, and each foreground run started on a thread
of that group hands it the handler it would have installed, so one SIGTERM
stops every run (and a second one abandons every sync's in-flight requests).
"""

from __future__ import annotations

import contextvars
import gc
import signal
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from sqlalchemy.engine import Engine

from etl.clock import Clock
from etl.config import Settings
from etl.logs import get_logger

if TYPE_CHECKING:
    # Imported when a run starts: `etl status` and `etl enqueue` stay fast to start.
    import httpx

    from etl.discover import DiscoverOptions, DiscoveryStats
    from etl.ratelimit import RateBudget
    from etl.sync import RunOptions, RunStats

# The receiver's engine gets a function that stops the run it started (thread-safe).
StopHook = Callable[[Callable[[], None]], None]


SignalHandler = Callable[[int, Any], None]


class StopGroup:
    """The one signal handler of several runs in one process: every run of the group registers the
    handler it would have installed, and a signal goes to each (a run that registers after a signal
    hears it at once: it stops before it claims anything)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._handlers: list[SignalHandler] = []
        self.received: list[int] = []

    def add(self, handler: SignalHandler) -> None:
        with self._lock:
            self._handlers.append(handler)
            missed = list(self.received)
        for signum in missed:
            handler(signum, None)

    def remove(self, handler: SignalHandler) -> None:
        with self._lock:
            if handler in self._handlers:
                self._handlers.remove(handler)

    def __call__(self, signum: int, frame: Any) -> None:
        with self._lock:
            self.received.append(signum)
            handlers = list(self._handlers)
        for handler in handlers:
            handler(signum, frame)


# The group of the runs started on this thread (set by `together`, inherited by the threads it starts
# in a copy of its context).
_GROUP: contextvars.ContextVar[StopGroup | None] = contextvars.ContextVar("etl_stop_group", default=None)


@contextmanager
def together() -> Iterator[StopGroup]:
    """Runs started in a copy of this context (``contextvars.copy_context().run`` on a worker thread)
    share one SIGTERM/SIGINT handler, installed here when this is the main thread."""
    group = StopGroup()
    # Installed before the group is current: on a thread of an outer group, this group joins that one.
    with _signals(group):
        token = _GROUP.set(group)
        try:
            yield group
        finally:
            _GROUP.reset(token)


@contextmanager
def _signals(on_signal: SignalHandler) -> Iterator[None]:
    """SIGTERM and SIGINT go to ``on_signal`` while the block runs: installed on the main thread; on
    another thread, through the :class:`StopGroup` it was started in (:func:`together`), if any."""
    previous: dict[int, Any] = {}
    group = _GROUP.get()
    if threading.current_thread() is threading.main_thread():
        for sig in (signal.SIGTERM, signal.SIGINT):
            previous[sig] = signal.signal(sig, on_signal)
    elif group is not None:
        group.add(on_signal)
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
        if group is not None and not previous:
            group.remove(on_signal)


def run_sync(engine: Engine, settings: Settings, options: RunOptions, *,
             transport: httpx.BaseTransport | None = None,
             on_progress: Callable[[RunStats], None] | None = None, clock: Clock) -> RunStats:
    """Run one sync on this thread; SIGTERM/SIGINT stop it (when this is the main thread)."""
    from etl.runs import StopReason
    from etl.sync import Syncer

    # Everything imported so far lives for the whole run: keep it out of the
    # garbage collector's scans.
    gc.freeze()
    syncer = Syncer(engine, settings, transport=transport, on_progress=on_progress, clock=clock)
    interrupts = 0

    def on_signal(signum: int, _frame: object) -> None:
        nonlocal interrupts
        interrupts += 1
        name = signal.Signals(signum).name
        if interrupts == 1:
            syncer.request_stop(StopReason.SIGNAL, f"interrupted by {name}")
        else:
            get_logger().warning("second signal: abandoning in-flight requests", signal=name)
            syncer.abort()

    with _signals(on_signal):
        return syncer.run(options)


def run_discover(engine: Engine, settings: Settings, options: DiscoverOptions, *,
                 transport: httpx.BaseTransport | None = None,
                 on_page: Callable[[DiscoveryStats], None] | None = None,
                 page_log_level: str = "info", clock: Clock) -> DiscoveryStats:
    """Run one discovery on this thread; SIGTERM/SIGINT stop it cleanly (committed pages stay)."""
    from etl.discover import Discoverer
    from etl.runs import StopReason

    discoverer = Discoverer(engine, settings, transport=transport, on_page=on_page, page_log_level=page_log_level,
                            clock=clock)

    def on_signal(signum: int, _frame: object) -> None:
        discoverer.request_stop(StopReason.SIGNAL, f"interrupted by {signal.Signals(signum).name}")

    with _signals(on_signal):
        return discoverer.run(options)


def run_in_server(engine: Engine, settings: Settings, *, transport: httpx.BaseTransport, budget: RateBudget,
                  claim_ahead_s: float, on_start: StopHook, clock: Clock) -> RunStats:
    """One sync inside ``etl serve`` until nothing is due (command ``serve``); ``on_start(stop)`` receives a
    thread-safe function that stops it as a server stops (reason ``server stopping``)."""
    from etl.runs import StopReason
    from etl.sync import RunOptions, Syncer

    syncer = Syncer(engine, settings, transport=transport, budget=budget, claim_ahead_s=claim_ahead_s, clock=clock)
    on_start(lambda: syncer.request_stop(StopReason.SIGNAL, "server stopping"))
    return syncer.run(RunOptions(command="serve"))
