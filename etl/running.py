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
"""

from __future__ import annotations

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


@contextmanager
def _signals(on_signal: Callable[[int, Any], None]) -> Iterator[None]:
    """SIGTERM and SIGINT go to ``on_signal`` while the block runs (main thread only; tests run others)."""
    previous: dict[int, Any] = {}
    if threading.current_thread() is threading.main_thread():
        for sig in (signal.SIGTERM, signal.SIGINT):
            previous[sig] = signal.signal(sig, on_signal)
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


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
