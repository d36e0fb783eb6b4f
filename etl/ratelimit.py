"""Client-side throttle shared by every request of a run, adaptive on 429.

OpenPhone allows 10 requests per second per key.  Requests take a slot from an
:class:`aiolimiter.AsyncLimiter` (a leaky bucket: waiting tasks are woken when
capacity frees up, no sleep loops).  When a 429 arrives anyway, :meth:`penalize`
makes *every* worker hold back until the server's ``Retry-After`` (or a short
pause) has passed, and lowers the rate; each later success raises it again
towards the configured ceiling (additive increase, multiplicative decrease).
"""

from __future__ import annotations

import asyncio
import contextlib
import time

from aiolimiter import AsyncLimiter

_DECREASE = 0.7
_RECOVER_PER_SUCCESS = 0.02  # fraction of the ceiling regained per success
_MIN_RATE = 0.5
_DEFAULT_PAUSE = 1.0


class Abandoned(Exception):
    """No slot before the caller's deadline, or the run is stopping: the request was not sent."""


class AdaptiveLimiter:
    def __init__(self, rate: float) -> None:
        """``rate`` requests per second; 0 or less means unthrottled."""
        self.ceiling = rate
        self.rate = rate
        self._limiter = AsyncLimiter(rate, 1.0) if rate > 0 else None
        self._paused_until = 0.0
        self.penalties = 0
        self._closed = asyncio.Event()

    def engaged(self) -> bool:
        """Whether a request must go through :meth:`acquire` (safe to call from any thread)."""
        return (self._limiter is not None or self._closed.is_set()
                or self._paused_until > time.monotonic())

    def recovering(self) -> bool:
        """Whether successes still raise the rate back towards its ceiling."""
        return self.ceiling > 0 and self.rate < self.ceiling

    def close(self) -> None:
        """The run is stopping: every waiting and later :meth:`acquire` raises :class:`Abandoned`."""
        self._closed.set()

    async def acquire(self, until: float | None = None) -> None:
        """Wait for a slot; raise :class:`Abandoned` past ``until`` (monotonic) or once closed.

        A 429's pause can be long (``Retry-After``); a run with a deadline or a
        stop request must not sit it out and then send anyway.
        """
        while True:
            if self._closed.is_set():
                raise Abandoned("the run is stopping")
            wait = self._paused_until - time.monotonic()
            if wait <= 0:
                break
            if until is not None and time.monotonic() + wait > until:
                raise Abandoned(f"rate-limit pause of {wait:.1f} s outlasts this item's time")
            await self._wait_or_close(wait)
        if self._limiter is not None:
            if self._limiter.has_capacity():
                await self._limiter.acquire()
                return
            waiter = asyncio.ensure_future(self._limiter.acquire())
            remaining = None if until is None else max(0.0, until - time.monotonic())
            closed = asyncio.ensure_future(self._closed.wait())
            done, _ = await asyncio.wait({waiter, closed}, timeout=remaining,
                                         return_when=asyncio.FIRST_COMPLETED)
            closed.cancel()
            if waiter not in done:
                waiter.cancel()
                raise Abandoned("no rate-limit slot before this item's time ran out")

    async def _wait_or_close(self, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._closed.wait(), seconds)

    def penalize(self, retry_after: float | None) -> None:
        """A 429 arrived: pause everyone, then continue at a lower rate."""
        self.penalties += 1
        pause = retry_after if retry_after and retry_after > 0 else _DEFAULT_PAUSE
        self._paused_until = max(self._paused_until, time.monotonic() + pause)
        if self.ceiling > 0:
            self._set_rate(max(_MIN_RATE, self.rate * _DECREASE))

    def succeeded(self) -> None:
        if self.ceiling > 0 and self.rate < self.ceiling:
            self._set_rate(min(self.ceiling, self.rate + self.ceiling * _RECOVER_PER_SUCCESS))

    def _set_rate(self, rate: float) -> None:
        # AsyncLimiter exposes its rate; changing it keeps the current level and waiters.
        self.rate = rate
        if self._limiter is not None:
            self._limiter.has_capacity(0)  # drain the bucket at the old rate first
            self._limiter.max_rate = rate
            self._limiter._rate_per_sec = rate / self._limiter.time_period
