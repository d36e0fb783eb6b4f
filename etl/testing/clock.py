"""A controllable :class:`etl.clock.Clock` for tests: time moves only when told to.

``sleep()`` advances the clock instead of waiting and records each wait, so a
test of code that backs off or refills a budget runs in no wall-clock time and
can assert exactly how long the code chose to wait.
"""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta

DEFAULT_START = datetime(2026, 1, 1)


class FakeClock:
    """Starts at ``start`` (naive UTC) and monotonic ``0.0``; safe to share between threads."""

    def __init__(self, start: datetime = DEFAULT_START) -> None:
        if start.tzinfo is not None:
            raise ValueError("FakeClock works in naive UTC datetimes, like the database columns")
        self._start = start
        self._epoch = start.replace(tzinfo=UTC).timestamp()
        self._elapsed = 0.0
        self._lock = threading.Lock()
        self.sleeps: list[float] = []

    def utcnow(self) -> datetime:
        with self._lock:
            return self._start + timedelta(seconds=self._elapsed)

    def monotonic(self) -> float:
        with self._lock:
            return self._elapsed

    def time(self) -> float:
        with self._lock:
            return self._epoch + self._elapsed

    def sleep(self, seconds: float) -> None:
        with self._lock:
            self.sleeps.append(seconds)
            if seconds > 0:
                self._elapsed += seconds

    def wait(self, seconds: float, stop: threading.Event) -> bool:
        """Like :meth:`sleep` (recorded in ``sleeps``), unless ``stop`` is already set."""
        if stop.is_set():
            return True
        self.sleep(max(0.0, seconds))
        return False

    def idle(self, seconds: float, wake: threading.Event) -> bool:
        """Waits for real (other threads do real work meanwhile); fake time stands still."""
        return wake.wait(max(0.0, seconds))

    def advance(self, seconds: float) -> None:
        """Let ``seconds`` pass without anyone sleeping."""
        if seconds < 0:
            raise ValueError("time does not go back")
        with self._lock:
            self._elapsed += seconds
