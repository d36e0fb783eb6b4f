"""The shape every run shares: why it stopped (:class:`StopReason`, with its exit code) and
the counters, clock and outcome common to a sync and a discovery (:class:`RunOutcome`).

Pure: no database, no network. :class:`etl.sync.RunStats` and
:class:`etl.discover.DiscoveryStats` extend :class:`RunOutcome`.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Any

from etl.clock import SYSTEM, Clock

__all__ = ["RunOutcome", "StopReason"]


class StopReason(enum.Enum):
    """Why a run ended before its work ran out; each has its exit code."""

    LIMIT = "limit"
    MAX_RUNTIME = "max_runtime"
    SIGNAL = "signal"
    ABORTED = "aborted"
    AUTH_REFUSED = "auth_refused"
    DATABASE_LOST = "database_lost"
    UNEXPECTED = "unexpected"
    # Discovery: a walk stopped on an error (the others went on).
    WALK_ERRORS = "walk_errors"
    # Discovery refused before it walked anything (no --since for a new line, an unknown line): no run.
    REFUSED = "refused"
    # Items were there and the API never answered one (connection refused, timeouts, 5xx/429): exit 4.
    UNREACHABLE = "unreachable"

    @property
    def exit_code(self) -> int:
        if self is StopReason.AUTH_REFUSED:
            return 3
        if self is StopReason.REFUSED:
            return 2
        if self is StopReason.UNREACHABLE:
            return 4
        return 0 if self in (StopReason.LIMIT, StopReason.MAX_RUNTIME) else 1


@dataclass(kw_only=True)
class RunOutcome:
    """What every run counts and how it ended; ``duration_s`` is measured on ``clock`` (a FakeClock in tests)."""

    errors: int = 0
    stop: StopReason | None = None
    stop_reason: str | None = None  # the text stored in the run record's stop_reason
    exit_code: int = 0
    clock: Clock = field(default=SYSTEM, repr=False, compare=False)
    started: float = field(default=-1.0, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.started < 0:
            self.started = self.clock.monotonic()

    @property
    def duration_s(self) -> float:
        return round(self.clock.monotonic() - self.started, 3)

    @property
    def stopped_because(self) -> str | None:
        """Why a run that exits non-zero stopped, in a few words for its summary line; None when it exits 0
        or when its item errors (counted in the line already) are the reason."""
        if self.exit_code == 0 or self.stop is None:
            return None
        return _STOPPED.get(self.stop) or self.stop_reason or self.stop.value

    def as_dict(self) -> dict[str, Any]:
        """The outcome fields, last in every run's ``… finished`` log line and ``--json`` output."""
        return {"exit_code": self.exit_code, "stop_reason": self.stop_reason, "duration_s": self.duration_s}


# What a summary line says after "stopped:" (discovery's walk errors and refusals say their own reason).
_STOPPED = {StopReason.AUTH_REFUSED: "the API refused the key", StopReason.SIGNAL: "interrupted",
            StopReason.ABORTED: "interrupted", StopReason.UNREACHABLE: "the API was never reached",
            StopReason.DATABASE_LOST: "the database was lost", StopReason.UNEXPECTED: "an unexpected error"}
