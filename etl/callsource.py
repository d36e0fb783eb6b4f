"""What discovery's two call sources share: the interface, how a walk ends, and when a call is still open.

Discovery takes its calls from the surface (:attr:`etl.api.OpenPhoneClient.discovery`):
the lines walk (:mod:`etl.discover_lines`: lines -> conversations -> calls) or
the workspace listing (:mod:`etl.discover_listing`: ``GET /calls`` pages).
Each is a :class:`CallSource` driven by :class:`etl.discover.Discoverer`,
which owns the run, its counters and its log.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, NoReturn, Protocol

from sqlalchemy.engine import Engine

from etl import store
from etl.api import OpenPhoneClient
from etl.clock import Clock
from etl.config import Settings
from etl.results import Call

# Call statuses after which a call can no longer change into a completed one.
ENDED_STATUSES = frozenset(
    {"completed", "busy", "failed", "no-answer", "canceled", "missed", "forwarded", "abandoned"}
)


@dataclass(frozen=True)
class DiscoverOptions:
    since: datetime | None = None  # naive UTC; moves the start of every walk back to it
    phone_numbers: tuple[str, ...] = ()  # ids (PN…) or E.164 numbers; empty = every line
    dry_run: bool = False
    command: str = "discover"
    # After the walk, users and lines are refreshed every run and contacts when due (etl.refresh);
    # ``refresh_contacts`` lists contacts now, in full, whatever their schedule says.
    refresh_contacts: bool = False
    overlap_seconds: float = 300.0
    page_size: int = 100
    dated_page_size: int = 50  # GET /calls takes at most 50
    # Expired cursors tolerated per scope before the walk gives up.
    max_restarts: int = 20
    # A server that keeps sending empty pages with a next token is broken: stop that walk.
    max_empty_pages: int = 20


class WalkCounts(Protocol):
    """The run's counters a call source adds to (:class:`etl.discover.DiscoveryStats`)."""

    run_id: int | None
    phone_numbers: int
    conversations: int
    pages: int
    calls_seen: int
    enqueued: int
    skipped_conversations: int
    would_enqueue: int
    stored: int
    restarts: int
    rejected: int


class WalkRun(Protocol):
    """What a call source reads from and reports to its run (:class:`etl.discover.Discoverer`)."""

    engine: Engine
    settings: Settings
    clock: Clock
    client: OpenPhoneClient
    options: DiscoverOptions
    log: Any  # a bound structlog logger
    walk_started: datetime
    overlap: timedelta

    @property
    def stats(self) -> WalkCounts: ...

    def stop_requested(self) -> bool: ...

    def walk_error(self, message: str, *, fatal: bool = False, **fields: Any) -> NoReturn: ...

    def reject(self, endpoint: str, item: Any, reason: str, log: Any) -> store.Rejected:
        """A call that cannot be stored (``item``: its JSON as listed): logged, to be kept with its page."""
        ...

    def page_done(self, event: str, **fields: Any) -> None: ...


class CallSource(Protocol):
    """One discovery's way to the workspace's calls."""

    def walk(self) -> None:
        """Walk every scope; raises :class:`WalkStopped` when the run must end now and
        :class:`etl.errors.UsageError` when the run is refused (nothing walked)."""
        ...


class Source:
    """What both call sources hold of their run."""

    def __init__(self, run: WalkRun) -> None:
        self.run = run
        self.client = run.client
        self.options = run.options
        self.stats = run.stats


class WalkStopped(Exception):
    """The walk must end now (a signal, or the API refused the key)."""


class WalkFailed(Exception):
    """One walk (a line, a conversation, a scope) cannot go on; the others can."""


def still_open(call: Call) -> bool:
    """The call has not ended: it may still become a completed call."""
    return call.completed_at is None and (call.status or "") not in ENDED_STATUSES
