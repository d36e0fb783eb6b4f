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
import time

from aiolimiter import AsyncLimiter

_DECREASE = 0.7
_RECOVER_PER_SUCCESS = 0.02  # fraction of the ceiling regained per success
_MIN_RATE = 0.5
_DEFAULT_PAUSE = 1.0


class AdaptiveLimiter:
    def __init__(self, rate: float) -> None:
        """``rate`` requests per second; 0 or less means unthrottled."""
        self.ceiling = rate
        self.rate = rate
        self._limiter = AsyncLimiter(rate, 1.0) if rate > 0 else None
        self._paused_until = 0.0
        self.penalties = 0

    async def acquire(self) -> None:
        while True:
            wait = self._paused_until - time.monotonic()
            if wait <= 0:
                break
            await asyncio.sleep(wait)
        if self._limiter is not None:
            await self._limiter.acquire()

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
