"""The one clock: naive UTC datetimes, as every timestamp column stores them.

This is the only module that reads the system's time or waits on it
(``tests/unit/test_layers.py``).  :data:`SYSTEM` is chosen at the composition
root (:class:`etl.Etl`, and the simulator's own entry points in
``etl.testing``); everything below takes a :class:`Clock` as a required
argument, so tests hand it ``etl.testing.clock.FakeClock`` and move time
forward without sleeping.  The rate budget (:mod:`etl.ratelimit`) uses the
same seam: :meth:`Clock.time` for wall-clock slots shared between processes,
:meth:`Clock.wait` to wait for one.

Two kinds of wait, both here: :meth:`Clock.wait` is time the code means to
let pass (a backoff, a rate slot: a fake clock advances instead);
:meth:`Clock.idle` is a heartbeat while other threads work (a fake clock
waits for real, because those threads do, and its time stands still).
"""

from __future__ import annotations

import threading
import time
from datetime import UTC, datetime
from typing import Protocol


class Clock(Protocol):
    """Wall time for timestamps, a monotonic time for intervals, and waiting."""

    def utcnow(self) -> datetime:
        """Now as a naive UTC datetime."""
        ...

    def monotonic(self) -> float:
        """Seconds on a clock that never goes back (only differences mean anything)."""
        ...

    def time(self) -> float:
        """Wall-clock seconds since the epoch (the same scale in every process and on every host)."""
        ...

    def sleep(self, seconds: float) -> None:
        """Wait ``seconds`` (a fake clock advances instead)."""
        ...

    def wait(self, seconds: float, stop: threading.Event) -> bool:
        """Wait up to ``seconds`` or until ``stop`` is set; True if it was set (at once or meanwhile)."""
        ...

    def idle(self, seconds: float, wake: threading.Event) -> bool:
        """Wait up to ``seconds`` of real time for another thread to set ``wake`` (a heartbeat, not time
        the code means to pass); True if it was set."""
        ...


class SystemClock:
    """The real clock: datetime, time.monotonic and time.sleep."""

    def utcnow(self) -> datetime:
        return datetime.now(UTC).replace(tzinfo=None)

    def monotonic(self) -> float:
        return time.monotonic()

    def time(self) -> float:
        return time.time()

    def sleep(self, seconds: float) -> None:
        if seconds > 0:
            time.sleep(seconds)

    def wait(self, seconds: float, stop: threading.Event) -> bool:
        return stop.wait(max(0.0, seconds))

    def idle(self, seconds: float, wake: threading.Event) -> bool:
        return wake.wait(max(0.0, seconds))


SYSTEM: Clock = SystemClock()


def utcnow() -> datetime:
    """Now as a naive UTC datetime, from the system clock: for tests and scripts outside the package
    (inside it, only the composition root names the system clock)."""
    return SYSTEM.utcnow()


def iso_z(value: datetime) -> str:
    """A naive UTC datetime as messages and ``--json`` show it: ``2026-11-25T11:20:00Z``."""
    return value.isoformat(timespec="seconds") + "Z"
