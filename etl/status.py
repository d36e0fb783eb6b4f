"""What ``etl status`` reports, gathered once into a typed :class:`Status`.

Queue counts, what is due, the last runs and discovery, whether the API was
reached lately, the top errors, and the health verdict of :mod:`etl.health`, of one
workspace (issue 27: ``Status.workspace``).
``Status.as_dict()`` is the ``etl status --json`` document.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy.engine import Connection

from etl import health, report
from etl.clock import iso_z
from etl.config import DEFAULT_WORKSPACE, redact_url
from etl.states import plural, run_counts
from etl.store.dimensions import last_refreshes


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
    rejected: int = 0  # rows of rejected_records (issue 25)
    refreshes: dict[str, dict[str, Any]] | None = None  # newest finished refresh per resource (users, lines, contacts)
    workspace: str = DEFAULT_WORKSPACE  # whose queues, runs and records these are

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

    def text(self) -> str:
        """The ``etl status`` report for a person, one fact a line (``as_dict`` is the JSON one)."""
        return "\n".join(text_lines(self.as_dict()))

    def as_dict(self) -> dict[str, Any]:
        """The ``etl status --json`` document (times as ISO 8601 strings)."""
        return {
            "database": self.database,
            "workspace": self.workspace,
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
            "rejected_records": self.rejected,
            "dimension_refreshes": {k: _isos(v) for k, v in self.refreshes.items()} if self.refreshes else None,
        }


def gather(conn: Connection, database_url: str, now: datetime, limits: health.Limits, *,
           workspace: str = DEFAULT_WORKSPACE) -> Status:
    """Read everything ``etl status`` shows of ``workspace`` in one connection and judge its health."""
    ws = workspace
    counts = report.queue_counts(conn, workspace=ws)
    due, oldest_due = report.due_now(conn, now, workspace=ws)
    runs = report.last_runs(conn, workspace=ws)
    last_ok = report.last_successful_run(conn, workspace=ws)
    fetches = report.fetch_history(conn, workspace=ws)
    errors = report.top_errors(conn, workspace=ws)
    discovery = report.last_discovery(conn, workspace=ws)
    transcripts = report.transcript_counts(conn, workspace=ws)
    refreshes = last_refreshes(conn, workspace=ws)
    problems = health.problems(now, runs, last_ok, fetches, counts["pending"], limits)
    return Status(database=redact_url(database_url), now=now, queue=counts, due_now=due, oldest_due_at=oldest_due,
                  last_runs=runs, last_successful_run_finished_at=last_ok["finished_at"] if last_ok else None,
                  fetch=fetches, top_errors=errors, last_discovery=discovery, problems=problems,
                  transcripts=transcripts if any(transcripts.values()) else None, refreshes=refreshes or None,
                  rejected=report.rejected_count(conn, workspace=ws), workspace=ws)


def workspace_problems(reports: Mapping[str, Status]) -> list[str]:
    """Every workspace's health problems, each naming its workspace (``workspace north: …``), in order."""
    return [f"workspace {name}: {problem}" for name, status in reports.items() for problem in status.problems]


def workspaces_document(database: str, reports: Mapping[str, Status]) -> dict[str, Any]:
    """``etl status --json`` with a workspaces file: the database, the verdict over every workspace
    (``healthy``, ``problems`` naming theirs), and ``workspaces``: name → that workspace's document
    (:meth:`Status.as_dict`, the single-workspace document)."""
    problems = workspace_problems(reports)
    first = next(iter(reports.values()), None)
    return {
        "database": database,
        "now": iso_z(first.now) if first is not None else None,
        "healthy": not problems,
        "problems": problems,
        "workspaces": {name: status.as_dict() for name, status in reports.items()},
    }


def workspaces_text(database: str, reports: Mapping[str, Status]) -> str:
    """``etl status`` with a workspaces file: the database, then a section per workspace (its report,
    indented), and the verdict over all of them."""
    lines = [f"Database: {database}"]
    for name, status in reports.items():
        lines.append(f"Workspace {name}:")
        lines += ["  " + line for line in text_lines(status.as_dict())[1:]]  # the database is said once
    problems = workspace_problems(reports)
    lines.append("Health: " + ("OK" if not problems else "; ".join(problems)))
    return "\n".join(lines)


def text_lines(data: dict[str, Any]) -> list[str]:
    """The lines of :meth:`Status.text` from its ``as_dict`` document."""
    lines = [f"Database: {data['database']}", f"Queue ({data['total']} items):"]
    echo = lines.append
    for state, n in data["queue"].items():
        echo(f"  {state:<10} {n:>10}")
    age = data["oldest_due_age_s"]
    since = f" (oldest due {age} s ago, since {data['oldest_due_at']})" if age is not None else ""
    echo(f"Due now: {data['due_now']}{since}")
    if data.get("transcript_queue"):
        counts = data["transcript_queue"]
        echo(f"Transcripts ({sum(counts.values())} items): "
             + ", ".join(f"{state} {n}" for state, n in counts.items() if n))
    if data["fetch"]:
        echo(f"API: {data['fetch']}")
    echo("Last runs:")
    if not data["last_runs"]:
        echo("  none yet")
    for r in data["last_runs"]:
        state = "running or crashed" if r["finished_at"] is None else f"exit {r['exit_code']}"
        echo(f"  #{r['id']} {r['command']:<8} {r['started_at']}  {state}: {r['claimed']} claimed, "
             + run_counts(r) + (f" — {r['stop_reason']}" if r.get("stop_reason") else "")
             + (f" — {health.NOTHING_FETCHED}" if health.nothing_fetched(r) else ""))
    d = data.get("last_discovery")
    if d is None:
        echo("Last discovery: none yet")
    else:
        state = "running or crashed" if d["finished_at"] is None else f"exit {d['exit_code']}"
        # The dated API lists the workspace's calls directly: no lines or conversations to count.
        walked = (f"{plural(d['phone_numbers'], 'phone number')}, {plural(d['conversations'], 'conversation')}, "
                  if d["phone_numbers"] or d["conversations"] else "")
        echo(f"Last discovery: #{d['id']} {d['command']} {d['started_at']}  {state}: "
             f"{walked}{plural(d['pages'], 'page')}, "
             f"{plural(d['calls_seen'], 'call')} seen, {d['enqueued']} enqueued, {plural(d['errors'], 'error')}"
             + (f" — {d['stop_reason']}" if d.get("stop_reason") else ""))
    lines += refresh_lines(data.get("dimension_refreshes"))
    if data["top_errors"]:
        echo("Top errors:")
        for e in data["top_errors"]:
            echo(f"  {e['count']:>6}  {e['state']:<10} {str(e['last_error'])[:120]}")
    if data.get("rejected_records"):
        echo(f"Rejected records: {data['rejected_records']} (API records that could not be stored, with the "
             "reason: table rejected_records)")
    echo("Health: " + ("OK" if data["healthy"] else "; ".join(data["problems"])))
    return lines


def refresh_lines(refreshes: dict[str, dict[str, Any]] | None) -> list[str]:
    """When users, lines and contacts were last refreshed and what it cost (``dimension_refreshes``)."""
    if not refreshes:
        return []
    lines = ["Last refreshes:"]
    for resource, r in refreshes.items():
        plural = "" if r["requests"] == 1 else "s"
        how = " (changes only)" if r.get("updated_since") else ""
        lines.append(f"  {resource:<8} {r['finished_at']}{how}: {r['requests']} request{plural}, "
                     f"{r['rows_seen']} seen, {r['rows_new']} new, {r['rows_changed']} changed, {r['rows_gone']} gone"
                     + (f" — {str(r['problem'])[:120]}" if r.get("problem") else ""))
    return lines
