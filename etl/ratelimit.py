"""The rate budget: how many requests per second one API key may spend, and its pacing.

OpenPhone allows 10 requests per second per key.  Everything that sends a
request asks a :class:`RateBudget` first::

    budget.acquire(max_wait=30, stop=stop_event)   # blocks until this request may go
    ...send...
    budget.penalize(retry_after)                    # on a 429

The schedule is GCRA (the "virtual scheduling" form of a token bucket without
burst): the budget keeps ``next_slot``, the earliest time the next request may
be sent, and hands out slots ``1/rate`` apart.  Reserving a slot is a pure
function of a small :class:`BudgetState` (:func:`reserve`, :func:`penalized`),
so the same arithmetic runs in memory (:class:`LocalBudget`, one process) and on
a database row shared by every process using the key
(:class:`etl.budget.DatabaseBudget`).

A 429 pauses everyone until its ``Retry-After`` (or :data:`DEFAULT_PAUSE`) and
slows the rate to 70 %, never below :data:`MIN_FACTOR` of the configured rate
(a floor that still throttles); the rate then recovers linearly over time
(:data:`RECOVERY_PER_S`), so a success costs no bookkeeping at all.

Time goes through the project's one clock seam, :class:`etl.clock.Clock`
(``time()``: wall-clock seconds, shared between processes and hosts through
the database; ``wait()``), so unit tests drive it with
``etl.testing.clock.FakeClock`` without sleeping.
"""

from __future__ import annotations

import math
import threading
from collections import deque
from dataclasses import dataclass, replace
from typing import Protocol

from etl.clock import Clock

# Rates a user may ask for; 0 switches the throttle off (429 pauses still apply).
MIN_RATE = 0.1
MAX_RATE = 1000.0
# A 429 slows the rate to this fraction of what it was, never below MIN_FACTOR of the ceiling.
DECREASE = 0.7
MIN_FACTOR = 0.1
# Fraction of the configured rate regained per second after a slow-down.
RECOVERY_PER_S = 0.05
DEFAULT_PAUSE = 1.0
MAX_PAUSE = 600.0
# A process reserves slots at most this far ahead (bounds what a crash or a stop wastes).
LOOKAHEAD_S = 0.25
# Longest single wait, so that close() is noticed by waiting threads.
_WAIT_STEP_S = 0.5


class NotSent(Exception):
    """No slot before the caller's deadline, or the run is stopping: the request was not sent."""


def rate_problem(rate: float) -> str | None:
    """Why ``rate`` is not a usable ``--rate``, or None when it is."""
    if math.isnan(rate) or math.isinf(rate):
        return f"must be a number, got {rate}"
    if rate == 0:
        return None
    if rate < MIN_RATE or rate > MAX_RATE:
        return (f"must be 0 (unthrottled) or between {MIN_RATE:g} and {MAX_RATE:g} "
                f"requests per second, got {rate:g}")
    return None


class RateBudget(Protocol):
    """The seam every sender uses (sync, discovery, the webhook receiver). Thread-safe."""

    rate: float

    def acquire(self, max_wait: float | None = None, stop: threading.Event | None = None) -> None:
        """Block until one request may be sent; raise :class:`NotSent` if that is later
        than ``max_wait`` seconds from now, or once ``stop`` is set or the budget closed."""

    def penalize(self, retry_after: float | None) -> None:
        """A 429 arrived: pause every sender of this key, then continue slower."""

    def close(self) -> None:
        """Stop handing out slots: waiting and later :meth:`acquire` calls raise :class:`NotSent`."""


@dataclass(frozen=True, slots=True)
class BudgetState:
    """The shared schedule of one key (all times in :class:`Clock` seconds)."""

    next_slot: float = 0.0     # earliest time the next request may go
    paused_until: float = 0.0  # no request before this (a 429's Retry-After)
    slowed_at: float = 0.0     # when the last 429 slowed the rate
    slowdown: float = 1.0      # the rate factor set at slowed_at; recovers over time


def factor(state: BudgetState, now: float) -> float:
    """The fraction of the configured rate in force at ``now``."""
    return min(1.0, state.slowdown + max(0.0, now - state.slowed_at) * RECOVERY_PER_S)


def block_size(rate: float) -> int:
    """Slots one reservation takes: about LOOKAHEAD_S worth, at least one."""
    return max(1, int(rate * LOOKAHEAD_S))


def reserve(state: BudgetState, now: float, n: int, rate: float) -> tuple[BudgetState, list[float]]:
    """Take ``n`` consecutive slots at ``rate`` (> 0) requests per second."""
    interval = 1.0 / (rate * factor(state, now))
    start = max(state.next_slot, now, state.paused_until)
    slots = [start + i * interval for i in range(n)]
    return replace(state, next_slot=start + n * interval), slots


def penalized(state: BudgetState, now: float, retry_after: float | None) -> BudgetState:
    """The state after a 429: paused, and slowed once per pause (a burst of 429s
    answering requests sent before the pause counts as one)."""
    pause = min(retry_after, MAX_PAUSE) if retry_after and retry_after > 0 else DEFAULT_PAUSE
    until = max(state.paused_until, now + pause)
    if now < state.paused_until:
        return replace(state, paused_until=until, next_slot=max(state.next_slot, until))
    slowdown = max(MIN_FACTOR, factor(state, now) * DECREASE)
    return BudgetState(next_slot=max(state.next_slot, until), paused_until=until,
                       slowed_at=now, slowdown=slowdown)


class SlotBudget:
    """A :class:`RateBudget` over some store of :class:`BudgetState`.

    Subclasses say how a block of slots is reserved (:meth:`_reserve`) and how a
    429 is recorded (:meth:`_penalize`); this class hands the slots to threads
    and waits.  ``rate`` 0 means unthrottled: only 429 pauses apply.
    """

    def __init__(self, rate: float, clock: Clock) -> None:
        problem = rate_problem(rate)
        if problem:
            raise ValueError(f"rate {problem}")
        self.rate = rate
        self.clock = clock
        self._lock = threading.Lock()
        self._slots: deque[float] = deque()
        self._reserved_until = 0.0
        self._closed = threading.Event()
        self._paused_until = 0.0  # unthrottled mode only

    # -- the protocol ---------------------------------------------------------------

    def acquire(self, max_wait: float | None = None, stop: threading.Event | None = None) -> None:
        clock = self.clock
        give_up = None if max_wait is None else clock.time() + max_wait
        wake = stop or self._closed
        while True:
            self._check(stop)
            slot, ready_at = self._take_slot()
            target = slot if slot is not None else ready_at
            if give_up is not None and target > give_up:
                if slot is not None:
                    self._give_back(slot)
                raise NotSent(f"no rate slot within {max_wait:.1f} s")
            if slot is None:
                # This process already holds LOOKAHEAD_S of slots: wait, then reserve more.
                clock.wait(min(ready_at - clock.time(), _WAIT_STEP_S), wake)
                continue
            while (now := clock.time()) < slot:
                if clock.wait(min(slot - now, _WAIT_STEP_S), wake) or self._closed.is_set():
                    self._give_back(slot)
                    self._check(stop)
            return

    def penalize(self, retry_after: float | None) -> None:
        now = self.clock.time()
        with self._lock:
            self._slots.clear()  # reserved before the 429: not to be used
            self._reserved_until = 0.0
            if self.rate == 0:
                self._paused_until = penalized(BudgetState(paused_until=self._paused_until),
                                               now, retry_after).paused_until
                return
        self._penalize(now, retry_after)

    def close(self) -> None:
        self._closed.set()

    # -- for subclasses ----------------------------------------------------------------

    def _reserve(self, now: float, n: int) -> list[float]:
        raise NotImplementedError

    def _penalize(self, now: float, retry_after: float | None) -> None:
        raise NotImplementedError

    # -- internals ---------------------------------------------------------------------

    def _check(self, stop: threading.Event | None) -> None:
        if self._closed.is_set() or (stop is not None and stop.is_set()):
            raise NotSent("the run is stopping")

    def _take_slot(self) -> tuple[float | None, float]:
        """This process's earliest slot (reserving a block when none is left), or
        None and when to ask again."""
        with self._lock:
            if self.rate == 0:
                return self._paused_until, 0.0
            if not self._slots:
                now = self.clock.time()
                ready_at = self._reserved_until - LOOKAHEAD_S
                if now < ready_at:
                    return None, ready_at
                slots = self._reserve(now, block_size(self.rate))
                self._slots.extend(slots)
                self._reserved_until = slots[-1]
            return self._slots.popleft(), 0.0

    def _give_back(self, slot: float) -> None:
        if self.rate == 0:
            return
        with self._lock:
            self._slots.appendleft(slot)


class LocalBudget(SlotBudget):
    """One process's budget, in memory (``etl sync`` without a database budget, tests)."""

    def __init__(self, rate: float, clock: Clock) -> None:
        super().__init__(rate, clock)
        self.state = BudgetState()

    def _reserve(self, now: float, n: int) -> list[float]:
        self.state, slots = reserve(self.state, now, n, self.rate)
        return slots

    def _penalize(self, now: float, retry_after: float | None) -> None:
        with self._lock:
            self.state = penalized(self.state, now, retry_after)

