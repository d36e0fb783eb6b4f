"""Progress of a long run: a tqdm bar on a terminal, a log line every 10 s otherwise.

:class:`Progress` follows a sync (``backfill``), :class:`DiscoveryProgress` a
discovery; while a bar shows, log lines are written above it instead of
through it.  Both are used as context managers.
"""

from __future__ import annotations

import sys
from types import TracebackType
from typing import TYPE_CHECKING, Any, Self

from etl import logs
from etl.clock import Clock
from etl.logs import get_logger

if TYPE_CHECKING:
    from etl.discover import DiscoveryStats
    from etl.sync import RunStats

LOG_EVERY_S = 10.0


class _Bar:
    """A tqdm bar on stderr with log lines redirected above it, or nothing off a terminal."""

    def __init__(self, tty: bool | None, **tqdm_args: Any) -> None:
        self.tty = sys.stderr.isatty() if tty is None else tty
        self.bar: Any = None
        self._logs: Any = None
        if self.tty:
            from tqdm import tqdm

            self.bar = tqdm(dynamic_ncols=True, file=sys.stderr, **tqdm_args)
            self._logs = logs.redirected(lambda line: tqdm.write(line, file=sys.stderr))
            self._logs.__enter__()

    def close(self) -> None:
        if self._logs is not None:
            self._logs.__exit__(None, None, None)
            self._logs = None
        if self.bar is not None:
            self.bar.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()


class Progress(_Bar):
    """A sync's progress over the items of both queues (done, remaining, rate, ETA).

    ``summaries`` due at the start; ``transcripts`` due at the start, or None when the run
    syncs no transcripts.  With transcripts, every summary still to do may queue one more
    item, so the total is the summaries and transcripts due, plus the transcripts the run
    queued, plus one for each summary not done yet; it is exact once the summaries are done
    (issue 26: the bar used to reach ``21/21`` halfway).  ``limit``: the run claims at most
    that many items.  Off a terminal: one log line every :data:`LOG_EVERY_S` seconds, and one
    when the last item is done.
    """

    def __init__(self, summaries: int, tty: bool | None, clock: Clock, *,
                 transcripts: int | None = None, limit: int | None = None) -> None:
        self.summaries = summaries
        self.transcripts = transcripts
        self.limit = limit
        self.total = self._expected(0, 0)
        super().__init__(tty, total=self.total, unit="item", smoothing=0.1)
        self.clock = clock
        self.started = clock.monotonic()
        self.last_log = self.started
        self.done = 0
        self._logged_done = False

    def _expected(self, summaries_done: int, queued: int) -> int:
        total = self.summaries
        if self.transcripts is not None:
            total += self.transcripts + queued + max(0, self.summaries - summaries_done)
        return total if self.limit is None else min(total, self.limit)

    def update(self, stats: RunStats) -> None:
        delta = stats.processed - self.done
        self.done = stats.processed
        self.total = max(self.done, self._expected(stats.summaries_processed, stats.transcripts_queued))
        if self.bar is not None:
            self.bar.total = self.total
            self.bar.update(delta)
            return
        now = self.clock.monotonic()
        finished = self.done >= self.total
        if now - self.last_log >= LOG_EVERY_S or (finished and not self._logged_done):
            self.last_log = now
            self._logged_done = finished
            elapsed = now - self.started
            rate = self.done / elapsed if elapsed > 0 else 0.0
            remaining = max(0, self.total - self.done)
            eta = remaining / rate if rate > 0 else None
            get_logger().info("progress", done=self.done, total=self.total, remaining=remaining,
                              rate_per_s=round(rate, 2), eta_s=round(eta) if eta is not None else None)


class DiscoveryProgress(_Bar):
    """Calls seen by a discovery, with pages and ids enqueued (off a terminal the page log lines say it)."""

    def __init__(self, tty: bool | None = None) -> None:
        super().__init__(tty, unit="call", desc="discover")

    @property
    def page_log_level(self) -> str:
        """Each calls page is a log line under cron, and only a debug line beside a bar."""
        return "debug" if self.tty else "info"

    def update(self, stats: DiscoveryStats) -> None:
        if self.bar is not None:
            self.bar.update(stats.calls_seen - self.bar.n)
            self.bar.set_postfix(pages=stats.pages, enqueued=stats.enqueued, refresh=False)
