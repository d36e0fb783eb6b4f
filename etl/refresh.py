"""When users, lines and contacts are refreshed, and the record of what each refresh cost.

Users and lines are a few requests: every run lists them whole.  Contacts can
be tens of thousands (50 per request), so they are listed at most every
``contacts_every`` (the ``contacts_refresh_hours`` setting, 24 h by default) or
when asked (``force``), and incrementally where the surface can: changes since
the last good refresh (less :data:`OVERLAP`), with a full listing — the only
kind that can mark contacts gone — at least every :data:`FULL_EVERY` and on
``force``.  A refresh that failed is tried again after at most :data:`RETRY_AFTER`.

Each resource is recorded in ``dimension_refreshes`` (requests, rows seen /
new / changed / gone, complete, problem) before and after it runs, so a crash
leaves an unfinished row.  A listing with a ``problem`` (e.g. a workspace whose
contacts cannot be listed) or a source that raises costs one warning line for
that resource; the others go on.  Only a refused key (:class:`AuthError`) stops
the refresh, after recording it.

A bad record costs only itself (issue 25): a user, line or contact that cannot
be stored (its model refused it, a date no database holds, or — when the
listing written as one fails — the database refused it, found record by record)
is kept in ``rejected_records`` with its reason (``source``: the caller, e.g.
``discover``), one error line each, and counted (``rejected`` in the
resource's text); the others are stored and the listing stays complete.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy.engine import Engine

from etl.clock import Clock
from etl.config import DEFAULT_WORKSPACE
from etl.dimensions import DimensionSource, Listing
from etl.errors import AuthError
from etl.logs import get_logger
from etl.store import dimensions as store
from etl.store.fallback import RECORD_ERRORS
from etl.store.tx import transaction

OVERLAP = timedelta(minutes=5)  # an incremental listing reaches back this far: clocks differ
FULL_EVERY = timedelta(days=7)  # a full contacts listing at least this often, to find deleted ones
RETRY_AFTER = timedelta(hours=1)  # a failed contacts refresh waits at most this long before the next try


@dataclass(frozen=True, slots=True, kw_only=True)
class RefreshOptions:
    contacts_every: timedelta = timedelta(hours=24)
    force_contacts: bool = False  # list contacts now, in full, whatever the schedule says


@dataclass(frozen=True, slots=True, kw_only=True)
class ResourceRefresh:
    """One resource's refresh, as recorded in ``dimension_refreshes``."""

    resource: str
    requests: int
    saved: store.Saved | None  # None: nothing could be stored (the source raised)
    complete: bool
    problem: str | None
    updated_since: datetime | None

    @property
    def rejected(self) -> int:
        """Records kept in ``rejected_records`` instead of stored."""
        return 0 if self.saved is None else len(self.saved.rejected)

    def text(self) -> str:
        plural = "" if self.requests == 1 else "s"
        if self.saved is None:
            return f"{self.resource} failed ({self.requests} request{plural})"
        parts = [f"{self.requests} request{plural}"]
        parts += [f"{n} {what}" for n, what in ((self.saved.new, "new"), (self.saved.changed, "changed"),
                                                 (self.saved.gone, "gone"), (self.rejected, "rejected")) if n]
        if self.updated_since is not None:
            parts.append("changes only")
        if self.problem:
            parts.append("incomplete")
        return f"{self.resource} {self.saved.seen} ({', '.join(parts)})"


@dataclass(frozen=True, slots=True, kw_only=True)
class RefreshReport:
    """What one refresh of the dimensions did; ``text()`` is its part of the discovery line."""

    done: tuple[ResourceRefresh, ...]
    contacts_next_at: datetime | None = None  # contacts were not due: when they next are
    problems: tuple[str, ...] = field(default=())

    @property
    def requests(self) -> int:
        return sum(r.requests for r in self.done)

    @property
    def rejected(self) -> int:
        """Users, lines and contacts kept in ``rejected_records`` instead of stored (the run exits 1)."""
        return sum(r.rejected for r in self.done)

    def text(self) -> str:
        parts = [r.text() for r in self.done]
        if self.contacts_next_at is not None:
            parts.append(f"contacts not due until {self.contacts_next_at:%Y-%m-%d %H:%M} UTC")
        return "; ".join(parts)


def contacts_plan(last_attempt: dict[str, Any] | None, last_good: datetime | None, last_full: datetime | None,
                  now: datetime, options: RefreshOptions) -> tuple[bool, datetime | None, datetime | None]:
    """``(due, updated_since, next_at)`` of the contacts refresh (pure: the schedule's rules in one place)."""
    if options.force_contacts:
        return True, None, None
    if last_attempt is not None:
        wait = options.contacts_every
        if last_attempt.get("problem") is not None:
            wait = min(wait, RETRY_AFTER)
        next_at = last_attempt["started_at"] + wait
        if now < next_at:
            return False, None, next_at
    if last_good is None or last_full is None or now - last_full >= FULL_EVERY:
        return True, None, None
    return True, last_good - OVERLAP, None


def refresh(engine: Engine, source: DimensionSource, options: RefreshOptions = RefreshOptions(), *,
            clock: Clock, workspace: str = DEFAULT_WORKSPACE, caller: str = "discover") -> RefreshReport:
    """Refresh ``workspace``'s users and lines, and its contacts when due (on its own schedule); record each
    in ``dimension_refreshes``.  ``caller``: the ``source`` of the records it keeps in ``rejected_records``."""
    log = get_logger(command="refresh")
    done = [
        _one(engine, clock, log, "users", source.list_users, store.save_users, None, workspace, caller),
        _one(engine, clock, log, "lines", source.list_lines, store.save_lines, None, workspace, caller),
    ]
    now = clock.utcnow()

    def schedule(conn: Any) -> tuple[bool, datetime | None, datetime | None]:
        last = store.last_refreshes(conn, ("contacts",), workspace=workspace).get("contacts")
        return contacts_plan(last, store.last_good_refresh(conn, "contacts", workspace=workspace),
                             store.last_good_refresh(conn, "contacts", complete=True, workspace=workspace),
                             now, options)

    due, since, next_at = transaction(engine, schedule, clock=clock)
    if due:
        done.append(_one(engine, clock, log, "contacts", lambda: source.list_contacts(updated_since=since),
                         store.save_contacts, since, workspace, caller))
    return RefreshReport(done=tuple(done), contacts_next_at=next_at,
                         problems=tuple(f"{r.resource}: {r.problem}" for r in done if r.problem))


def _one(engine: Engine, clock: Clock, log: Any, resource: str, listing_of: Callable[[], Listing[Any]],
         save: Callable[..., store.Saved], since: datetime | None, workspace: str, caller: str) -> ResourceRefresh:
    started = clock.utcnow()
    refresh_id = transaction(engine, lambda conn: store.start_refresh(conn, resource, started, since,
                                                                      workspace=workspace), clock=clock)
    try:
        listing = listing_of()
    except Exception as exc:
        problem = f"{type(exc).__name__}: {exc}"
        transaction(engine, lambda conn: store.finish_refresh(conn, refresh_id, clock.utcnow(), requests=0,
                                                              saved=None, complete=False, problem=problem),
                    clock=clock)
        if isinstance(exc, AuthError):
            raise
        log.warning("dimension refresh failed", resource=resource, problem=problem[:300])
        return ResourceRefresh(resource=resource, requests=0, saved=None, complete=False, problem=problem,
                               updated_since=since)
    now = clock.utcnow()

    def write(conn: Any, one_by_one: bool) -> store.Saved:
        saved = save(conn, listing, now, workspace=workspace, source=caller, one_by_one=one_by_one)
        store.finish_refresh(conn, refresh_id, now, requests=listing.requests, saved=saved,
                             complete=listing.complete, problem=listing.problem)
        return saved

    try:
        saved = transaction(engine, write, False, clock=clock)
    except RECORD_ERRORS:
        # The listing written as one failed: record by record, so that only what the database refuses is kept aside.
        saved = transaction(engine, write, True, clock=clock)
    for r in saved.rejected:
        log.error("record rejected", resource=resource, record_id=r.record_id[:80], endpoint=r.endpoint,
                  reason=r.reason[:300])
    if listing.complete and saved.unnamed:
        log.warning("nothing marked gone: a rejected record without an id could be any of them", resource=resource,
                    rejected=saved.unnamed)
    if listing.problem:
        log.warning("dimension listing incomplete", resource=resource, problem=listing.problem[:300],
                    requests=listing.requests, rows=saved.seen)
    return ResourceRefresh(resource=resource, requests=listing.requests, saved=saved, complete=listing.complete,
                           problem=listing.problem, updated_since=since)
