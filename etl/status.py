"""What ``etl status`` reports, gathered once into a typed :class:`Status`.

Queue counts, what is due, the last runs and discovery, whether the API was
reached lately, the top errors, and the health verdict of :mod:`etl.health`.
``Status.as_dict()`` is the ``etl status --json`` document.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy.engine import Connection

from etl import health, report
from etl.clock import iso_z
from etl.config import redact_url


def iso(value: datetime | None) -> str | None:
    return iso_z(value) if value else None


def _isos(row: dict[str, Any]) -> dict[str, Any]:
    return {k: iso(v) if isinstance(v, datetime) else v for k, v in row.items()}


@dataclass(frozen=True)
class Status:
    database: str  # the URL, password redacted
    now: datetime
    queue: dict[str, int]  # items per state
    due_now: int
    oldest_due_at: datetime | None
    last_runs: list[dict[str, Any]]  # newest first, as in sync_runs
    last_successful_run_finished_at: datetime | None
    fetch: health.FetchHistory
    top_errors: list[dict[str, Any]]
    last_discovery: dict[str, Any] | None
    problems: list[str]  # empty: healthy
    transcripts: dict[str, int] | None = None  # transcript_queue items per state; None: the queue is empty

    @property
    def total(self) -> int:
        return sum(self.queue.values())

    @property
    def healthy(self) -> bool:
        return not self.problems

    @property
    def oldest_due_age_s(self) -> int | None:
        return round((self.now - self.oldest_due_at).total_seconds()) if self.oldest_due_at else None

    @property
    def fetch_line(self) -> str | None:
        """One line about reaching the API, or None when there is nothing to say."""
        return health.fetch_line(self.fetch)

    def as_dict(self) -> dict[str, Any]:
        """The ``etl status --json`` document (times as ISO 8601 strings)."""
        return {
            "database": self.database,
            "now": iso_z(self.now),
            "queue": self.queue,
            "total": self.total,
            "due_now": self.due_now,
            "oldest_due_at": iso(self.oldest_due_at),
            "oldest_due_age_s": self.oldest_due_age_s,
            "last_runs": [_isos(r) for r in self.last_runs],
            "last_successful_run_finished_at": iso(self.last_successful_run_finished_at),
            "last_fetch_ok_at": iso(self.fetch.last_fetch_ok_at),
            "runs_without_fetch": self.fetch.failed_runs,
            "fetch": self.fetch_line,
            "top_errors": self.top_errors,
            "last_discovery": _isos(self.last_discovery) if self.last_discovery else None,
            "healthy": self.healthy,
            "problems": self.problems,
            "transcript_queue": self.transcripts,
        }


def gather(conn: Connection, database_url: str, now: datetime, limits: health.Limits) -> Status:
    """Read everything ``etl status`` shows in one connection and judge its health."""
    counts = report.queue_counts(conn)
    due, oldest_due = report.due_now(conn, now)
    runs = report.last_runs(conn)
    last_ok = report.last_successful_run(conn)
    fetches = report.fetch_history(conn)
    errors = report.top_errors(conn)
    discovery = report.last_discovery(conn)
    transcripts = report.transcript_counts(conn)
    problems = health.problems(now, runs, last_ok, fetches, counts["pending"], limits)
    return Status(database=redact_url(database_url), now=now, queue=counts, due_now=due, oldest_due_at=oldest_due,
                  last_runs=runs, last_successful_run_finished_at=last_ok["finished_at"] if last_ok else None,
                  fetch=fetches, top_errors=errors, last_discovery=discovery, problems=problems,
                  transcripts=transcripts if any(transcripts.values()) else None)
