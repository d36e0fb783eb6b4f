"""The one clock: naive UTC datetimes, as every timestamp column stores them.

``utcnow()`` is what code without a seam calls.  Code that waits or measures
time takes a :class:`Clock` (default :data:`SYSTEM`), so tests can hand it
``etl.testing.clock.FakeClock`` and move time forward without sleeping.
"""

from __future__ import annotations

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

    def sleep(self, seconds: float) -> None:
        """Wait ``seconds`` (a fake clock advances instead)."""
        ...


class SystemClock:
    """The real clock: datetime, time.monotonic and time.sleep."""

    def utcnow(self) -> datetime:
        return datetime.now(UTC).replace(tzinfo=None)

    def monotonic(self) -> float:
        return time.monotonic()

    def sleep(self, seconds: float) -> None:
        if seconds > 0:
            time.sleep(seconds)


SYSTEM: Clock = SystemClock()


def utcnow() -> datetime:
    """Now as a naive UTC datetime, from the system clock."""
    return SYSTEM.utcnow()
