"""`etl discover`: fill the queue from the workspace itself, and store each call's context.

Where the calls come from is the surface's to say (:attr:`etl.api.OpenPhoneClient.discovery`),
never its version name: the lines walk (:mod:`etl.discover_lines`: lines ->
conversations -> calls, v1) or the workspace listing (:mod:`etl.discover_listing`:
``GET /calls`` pages, the dated API).  Each is an :class:`etl.callsource.CallSource`
driven by :class:`Discoverer`, which owns the run: its record, counters, stop
signal, error lines and progress.

Watermarks are the walk's start time, never later than the creation time of a
call that had not ended when it was listed (so a call still ringing is listed
again once it has ended), and every listing looks back ``overlap`` seconds
further to absorb clock skew and late-indexed items.

Requests take slots from the key's :class:`~etl.ratelimit.RateBudget`, shared
through the database with every sync, through :class:`~etl.api.OpenPhoneClient`.

After the call walk, the same client refreshes the workspace's users and lines
(every run) and its contacts (when due, or on ``refresh_contacts``) through
:func:`etl.refresh.refresh`: after, so a refresh never delays the calls a sync
is waiting for (docs/contract.md "Users, lines and contacts").  A dry run, a
stopped run and a refused key refresh nothing.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, NoReturn

import httpx
from sqlalchemy.engine import Engine

from etl import store
from etl.api import Discovery, OpenPhoneClient
from etl.budget import budget_for
from etl.callsource import ENDED_STATUSES, CallSource, DiscoverOptions, WalkFailed, WalkRun, WalkStopped
from etl.clock import Clock, iso_z
from etl.config import Settings
from etl.discover_lines import LineWalk
from etl.discover_listing import WorkspaceListing
from etl.errors import AuthError, UsageError
from etl.logs import get_logger
from etl.normalize import is_e164
from etl.ratelimit import RateBudget
from etl.refresh import RefreshOptions, RefreshReport, refresh
from etl.runs import DISCOVERY_RECORD, Lifecycle, RunOutcome, StopReason

# Each surface's way to its calls (etl.api.Surface.discovery).
SOURCES: dict[Discovery, Callable[[WalkRun], CallSource]] = {
    "lines": lambda run: LineWalk(run),
    "workspace": lambda run: WorkspaceListing(run),
}
__all__ = ["ENDED_STATUSES", "SOURCES", "DiscoverOptions", "Discoverer", "DiscoveryStats", "parse_phone_numbers"]


@dataclass
class DiscoveryStats(RunOutcome):
    run_id: int | None = None
    phone_numbers: int = 0
    conversations: int = 0
    pages: int = 0
    calls_seen: int = 0
    enqueued: int = 0
    skipped_conversations: int = 0
    would_enqueue: int = 0  # dry run: completed calls not queued yet
    stored: int = 0  # summaries stored straight from a listing (dated surface)
    restarts: int = 0  # listings restarted after an expired cursor (dated surface)
    rejected: int = 0  # calls kept in rejected_records instead of stored (issue 25); the exit code says so
    refresh: RefreshReport | None = None  # users, lines and contacts after the walk; None: not refreshed

    @property
    def item_errors(self) -> int:
        # Calls, users, lines and contacts set aside (rejected_records) count: the walk and the refresh
        # went on, but an operator should look (exit 1).
        return self.errors + self.rejected + (0 if self.refresh is None else self.refresh.rejected)

    def summary(self, dry_run: bool = False) -> str:
        """The summary `etl discover` and `etl demo` print (one wording for both): the walk's line, then
        (when the run refreshed them) what each of users, lines and contacts cost."""
        run = "" if self.run_id is None else f" run {self.run_id}"
        verb, count = ("would enqueue", self.would_enqueue) if dry_run else ("enqueued", self.enqueued)
        # The dated surface lists the workspace's calls directly: no lines or conversations to count.
        walked = (f"{_plural(self.phone_numbers, 'phone number')}, {_plural(self.conversations, 'conversation')}, "
                  if self.phone_numbers or self.conversations else "")
        stored = f"{_plural(self.stored, 'summary')} stored from the listing, " if self.stored else ""
        rejected = f", {self.rejected} rejected (see rejected_records)" if self.rejected else ""
        line = (f"Discovery{run}: {walked}{_plural(self.calls_seen, 'call')} seen, {stored}"
                f"{verb} {count}, {_plural(self.errors, 'error')}{rejected}.")
        if self.refresh is not None:
            line += f"\nRefreshed {self.refresh.text()}."
        return line

    def as_dict(self) -> dict[str, Any]:
        return {
            "run_id": self.run_id, "phone_numbers": self.phone_numbers, "conversations": self.conversations,
            "pages": self.pages, "calls_seen": self.calls_seen, "enqueued": self.enqueued,
            "errors": self.errors, "skipped_conversations": self.skipped_conversations,
            "stored": self.stored, "restarts": self.restarts, "rejected": self.rejected, **super().as_dict(),
            **({} if self.refresh is None else {"refresh_requests": self.refresh.requests,
                                                "refresh_rejected": self.refresh.rejected,
                                                "refresh": self.refresh.text()}),
        }


class Discoverer:
    """Runs one discovery; construct per run.  ``transport`` replaces the network (tests)."""

    def __init__(self, engine: Engine, settings: Settings, *, transport: httpx.BaseTransport | None = None,
                 on_page: Callable[[DiscoveryStats], None] | None = None, page_log_level: str = "info",
                 budget: RateBudget | None = None, clock: Clock) -> None:
        """``budget``: the key's rate budget to share (default: the one shared through ``engine``)."""
        self.engine = engine
        self.clock = clock
        self._own_budget = budget is None
        self.budget = budget if budget is not None else budget_for(settings, engine, clock)
        self.settings = settings
        self.transport = transport
        self.on_page = on_page
        self.page_log_level = page_log_level
        self.stats = DiscoveryStats(clock=clock)
        self.workspace = settings.workspace  # what it stores and its watermarks: this workspace's
        self.lifecycle = Lifecycle(self.stats, engine, DISCOVERY_RECORD, clock, get_logger(command="discover"),
                                   workspace=self.workspace)
        self._stop = self.lifecycle.stop

    @property
    def log(self) -> Any:
        return self.lifecycle.log

    @log.setter
    def log(self, value: Any) -> None:
        self.lifecycle.log = value

    def request_stop(self, reason: StopReason, text: str) -> None:
        """Stop after the request in flight (signals); committed pages stay, watermarks stay put."""
        self.lifecycle.request_stop(reason, text)

    # -- the run --------------------------------------------------------------------

    def run(self, options: DiscoverOptions) -> DiscoveryStats:
        stats = self.stats
        self.options = options
        self.walk_started = self.clock.utcnow()
        self.overlap = timedelta(seconds=options.overlap_seconds)
        since = None if options.since is None else iso_z(options.since)
        stats.run_id = self.lifecycle.start(options.command, self.walk_started, record=not options.dry_run,
                                            bind="discovery_run_id", since=since,
                                            phone_numbers=list(options.phone_numbers), dry_run=options.dry_run,
                                            rate=self.settings.rate)
        client = self.client = OpenPhoneClient(self.settings, transport=self.transport, budget=self.budget,
                                               stop=self._stop, clock=self.clock)
        try:
            SOURCES[client.discovery](self).walk()
            self._refresh(client)
        except UsageError as exc:
            # A refusal (no --since for a new line, an unknown --phone-number) is no run: no row.
            self.lifecycle.fail(StopReason.REFUSED, str(exc))
            self.lifecycle.forget()
            stats.run_id = None
            self._finish()
            raise
        except AuthError as exc:
            self.lifecycle.fail(StopReason.AUTH_REFUSED, f"the API refused the key (HTTP {exc.http_status}): {exc}")
        except WalkStopped:
            pass
        finally:
            client.close()
            if self._own_budget:
                self.budget.close()
        if stats.errors:
            # A walk's error is recorded as the run's stop reason (its text says where to look).
            stats.record_stop(StopReason.WALK_ERRORS, f"{stats.errors} walk(s) stopped on an error; see the log")
        self._finish()
        return stats

    def _refresh(self, client: OpenPhoneClient) -> None:
        """Users and lines, and contacts when due, on the run's client (the key's shared budget).

        After the walk, never before: the calls are enqueued first.  A refused key raises
        :class:`AuthError` (the run's outcome); a resource that cannot be listed is one warning line.
        """
        if self.options.dry_run or self._stop.is_set():
            return
        options = RefreshOptions(contacts_every=timedelta(hours=self.settings.contacts_refresh_hours),
                                 force_contacts=self.options.refresh_contacts)
        self.stats.refresh = refresh(self.engine, client, options, clock=self.clock, workspace=self.workspace)
        self.log.info("dimensions refreshed", refresh=self.stats.refresh.text(),
                      refresh_requests=self.stats.refresh.requests)

    def _finish(self) -> None:
        extra = {"would_enqueue": self.stats.would_enqueue} if self.options.dry_run else {}
        self.lifecycle.finish(extra)

    # -- what the call sources report to the run -------------------------------------------

    def stop_requested(self) -> bool:
        return self._stop.is_set()

    def walk_error(self, message: str, *, fatal: bool = False, **fields: Any) -> NoReturn:
        """A walk cannot go on: one error line and count; :class:`WalkFailed` (``fatal``: :class:`WalkStopped`)."""
        self.stats.errors += 1
        self.log.error("walk stopped", error=message, **fields)
        if self.stats.run_id is not None:
            with self.engine.begin() as conn:
                store.add_discovery_counts(conn, self.stats.run_id, errors=1)
        if fatal:
            # The error that ends the whole run is its reason, even after a signal.
            self.lifecycle.fail(StopReason.WALK_ERRORS, message)
            raise WalkStopped
        raise WalkFailed(message)

    def reject(self, endpoint: str, item: Any, reason: str, log: Any) -> store.Rejected:
        """A call of a page that cannot be stored: said once, kept (with the page), the page goes on."""
        call_id = str(item.get("id", ""))[:80] if isinstance(item, dict) else ""
        log.error("record rejected", call_id=call_id, endpoint=endpoint, reason=reason)
        return store.Rejected("discover", endpoint, call_id, reason, item)

    def page_done(self, event: str, **fields: Any) -> None:
        getattr(self.log, self.page_log_level)(event, **fields)
        if self.on_page is not None:
            self.on_page(self.stats)


def _plural(n: int, word: str) -> str:
    if n == 1:
        return f"{n} {word}"
    return f"{n} {word[:-1]}ies" if word.endswith("y") else f"{n} {word}s"


def parse_phone_numbers(values: Sequence[str]) -> tuple[str, ...]:
    """``--phone-number`` values: PN… ids or E.164 numbers, comma-separated or repeated."""
    out: list[str] = []
    for value in values:
        for part in value.split(","):
            part = part.strip()
            if not part:
                continue
            if not (part.startswith("PN") or is_e164(part)):
                raise UsageError(f"--phone-number {part!r} is neither a phone number id (PN…) nor an E.164 number")
            out.append(part)
    return tuple(dict.fromkeys(out))
