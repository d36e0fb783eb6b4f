"""`etl discover`: fill the queue from the workspace itself, and store each call's context.

Which walk runs depends on what the client's surface can list
(:attr:`etl.api.OpenPhoneClient.lists_workspace`), not on its version name.

On a surface that lists the whole workspace (the dated API): ``GET /calls``
since the scope's ``createdAt`` watermark, newest first, 50 calls a page, each
with its summary and voicemail.  A summary that arrives final (completed,
failed; absent, which there means never) is stored from the page at once, in
the page's transaction, through the same normalising and storing path as a
sync (its queue row inserted or marked done, no second request); only
summaries still in progress and calls still live are queued.  Cursors are
never stored: an expired one (400) restarts the listing from the watermark,
below the calls already committed.  The scope's watermark (``*``, or one line
for ``--phone-number PN…``) moves to the walk's start after its last page.

Else (v1) the walk, per OpenPhone line (``GET /v1/phone-numbers``):

1. ``GET /v1/conversations`` for the line, updated after the line's watermark;
2. for each one-to-one conversation, ``GET /v1/calls`` for (line, participant),
   created after that conversation's watermark;
3. every listed call is upserted into ``calls``/``call_participants`` and the
   ids of completed calls are enqueued (ids already queued stay untouched).

Crash safety comes from the order of commits, not from a lock: each calls page
commits its calls and queue ids together; a conversation's watermark commits
with its last calls page; a line's watermark commits after its last
conversations page.  A run killed at any point has committed only whole pages,
its watermarks still point before the unfinished work, and a re-run walks that
work again: upserts are idempotent and enqueueing skips queued ids, so nothing
is lost and nothing is enqueued twice.

Watermarks are the walk's start time, never later than the creation time of a
call that had not ended when it was listed (so a call still ringing is listed
again once it has ended), and every listing looks back ``overlap`` seconds
further to absorb clock skew and late-indexed items.

Requests take slots from the key's :class:`~etl.ratelimit.RateBudget`, shared
through the database with every sync, through :class:`~etl.api.OpenPhoneClient`.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, NoReturn

import httpx
from sqlalchemy.engine import Connection, Engine

from etl import store
from etl.api import NotSent, OpenPhoneClient, dated_answer
from etl.budget import budget_for
from etl.clock import SYSTEM, Clock, iso_z
from etl.config import Settings
from etl.errors import AuthError, UsageError
from etl.ids import is_valid_call_id
from etl.logs import get_logger, run_end_level
from etl.normalize import CallContextRows, CallRows, call_json, is_e164, normalize, normalize_call
from etl.policy import ClaimedItem, QueueUpdate, decide
from etl.ratelimit import RateBudget
from etl.results import ApiResult
from etl.runs import RunOutcome, StopReason
from etl.schema import CallData, DatedCall, PhoneNumberData
from etl.storable import Malformed, Refused

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
    overlap_seconds: float = 300.0
    page_size: int = 100
    dated_page_size: int = 50  # GET /calls takes at most 50
    # Expired cursors tolerated per scope before the walk gives up.
    max_restarts: int = 20
    # A server that keeps sending empty pages with a next token is broken: stop that walk.
    max_empty_pages: int = 20


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

    def summary(self, dry_run: bool = False) -> str:
        """The one-line summary `etl discover` and `etl demo` print (one wording for both)."""
        run = "" if self.run_id is None else f" run {self.run_id}"
        verb, count = ("would enqueue", self.would_enqueue) if dry_run else ("enqueued", self.enqueued)
        # The dated surface lists the workspace's calls directly: no lines or conversations to count.
        walked = (f"{_plural(self.phone_numbers, 'phone number')}, {_plural(self.conversations, 'conversation')}, "
                  if self.phone_numbers or self.conversations else "")
        stored = f"{_plural(self.stored, 'summary')} stored from the listing, " if self.stored else ""
        rejected = f", {self.rejected} rejected (see rejected_records)" if self.rejected else ""
        return (f"Discovery{run}: {walked}{_plural(self.calls_seen, 'call')} seen, {stored}"
                f"{verb} {count}, {_plural(self.errors, 'error')}{rejected}.")

    def as_dict(self) -> dict[str, Any]:
        return {
            "run_id": self.run_id, "phone_numbers": self.phone_numbers, "conversations": self.conversations,
            "pages": self.pages, "calls_seen": self.calls_seen, "enqueued": self.enqueued,
            "errors": self.errors, "skipped_conversations": self.skipped_conversations,
            "stored": self.stored, "restarts": self.restarts, "rejected": self.rejected, **super().as_dict(),
        }


@dataclass
class _ListingPage:
    """What one ``GET /calls`` page brings, sorted for its transaction."""

    rows: list[CallContextRows] = field(default_factory=list)
    summaries: list[CallRows] = field(default_factory=list)
    finals: list[QueueUpdate] = field(default_factory=list)
    absent: set[str] = field(default_factory=set)
    queued: list[str] = field(default_factory=list)
    rejected: list[store.Rejected] = field(default_factory=list)
    oldest: datetime | None = None


class _Stopped(Exception):
    """The walk must end now (a signal, or the API refused the key)."""


class _WalkFailed(Exception):
    """One walk (a line or a conversation) cannot go on; the others can."""


class Discoverer:
    """Runs one discovery; construct per run.  ``transport`` replaces the network (tests)."""

    def __init__(self, engine: Engine, settings: Settings, *, transport: httpx.BaseTransport | None = None,
                 on_page: Callable[[DiscoveryStats], None] | None = None, page_log_level: str = "info",
                 budget: RateBudget | None = None, clock: Clock = SYSTEM) -> None:
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
        self.log = get_logger(command="discover")
        self._stop = threading.Event()

    def request_stop(self, reason: str) -> None:
        """Stop after the request in flight (signals); committed pages stay, watermarks stay put."""
        if not self._stop.is_set():
            self._stopped(StopReason.SIGNAL, reason)
            self.log.warning("stopping", reason=reason)
            self._stop.set()

    def _stopped(self, reason: StopReason, text: str) -> None:
        """The first reason a run stops is the one it reports."""
        if self.stats.stop is None:
            self.stats.stop, self.stats.stop_reason = reason, text

    # -- the run --------------------------------------------------------------------

    def run(self, options: DiscoverOptions) -> DiscoveryStats:
        stats = self.stats
        self.options = options
        self.walk_started = self.clock.utcnow()
        self.overlap = timedelta(seconds=options.overlap_seconds)
        if not options.dry_run:
            with self.engine.begin() as conn:
                stats.run_id = store.start_discovery_run(conn, options.command, self.walk_started)
            self.log = self.log.bind(discovery_run_id=stats.run_id)
        since = None if options.since is None else iso_z(options.since)
        self.log.info("discovery started", since=since, phone_numbers=list(options.phone_numbers),
                      dry_run=options.dry_run, rate=self.settings.rate)
        client = self.client = OpenPhoneClient(self.settings, transport=self.transport, budget=self.budget,
                                               stop=self._stop, clock=self.clock)
        try:
            if client.lists_workspace:
                self._walk_workspace()
            else:
                self._walk_all()
        except UsageError as exc:
            # A refusal (no --since for a new line, an unknown --phone-number) is no run: no row.
            stats.stop, stats.stop_reason = StopReason.REFUSED, str(exc)
            stats.exit_code = StopReason.REFUSED.exit_code
            if stats.run_id is not None:
                with self.engine.begin() as conn:
                    store.drop_discovery_run(conn, stats.run_id)
                stats.run_id = None
            self._finish()
            raise
        except AuthError as exc:
            stats.stop, stats.stop_reason = (StopReason.AUTH_REFUSED,
                                             f"the API refused the key (HTTP {exc.http_status}): {exc}")
        except _Stopped:
            pass
        finally:
            client.close()
            if self._own_budget:
                self.budget.close()
        if stats.errors:
            self._stopped(StopReason.WALK_ERRORS, f"{stats.errors} walk(s) stopped on an error; see the log")
        stats.exit_code = 0 if stats.stop is None else stats.stop.exit_code
        if stats.exit_code == 0 and stats.rejected:
            stats.exit_code = 1  # the walk went on, but records were set aside: an operator should look
        self._finish()
        return stats

    def _finish(self) -> None:
        stats = self.stats
        if stats.run_id is not None:
            with self.engine.begin() as conn:
                store.finish_discovery_run(conn, stats.run_id, self.clock.utcnow(), stats.exit_code,
                                           stats.stop_reason)
        extra = {"would_enqueue": stats.would_enqueue} if self.options.dry_run else {}
        getattr(self.log, run_end_level(stats.exit_code))("discovery finished", **stats.as_dict(), **extra)

    def _walk_all(self) -> None:
        lines = self._lines()
        with self.engine.connect() as conn:
            marks = store.watermarks(conn)
        since = self.options.since
        missing = [line.id for line in lines if line.id not in marks]
        if missing and since is None:
            more = f" (+{len(missing) - 1} more)" if len(missing) > 1 else ""
            raise UsageError(f"no discovery watermark yet for phone number {missing[0]}{more}: "
                             "pass --since DATE for the first run")
        for line in lines:
            starts = [t for t in (marks.get(line.id), since) if t is not None]
            self._walk_line(line, min(starts))
            self.stats.phone_numbers += 1
            if self.stats.run_id is not None:
                with self.engine.begin() as conn:
                    store.add_discovery_counts(conn, self.stats.run_id, phone_numbers=1)

    def _lines(self) -> list[PhoneNumberData]:
        lines: dict[str, PhoneNumberData] = {}
        for page in self._pages(lambda token: self.client.list_phone_numbers(token),
                                "phone numbers", fatal=True):
            for line in page.data:
                lines.setdefault(line.id, line)
        wanted = self.options.phone_numbers
        if not wanted:
            return list(lines.values())
        chosen = [line for line in lines.values() if line.id in wanted or line.number in wanted]
        found = {line.id for line in chosen} | {line.number for line in chosen}
        unknown = [w for w in wanted if w not in found]
        if unknown:
            raise UsageError(f"phone number {unknown[0]!r} is not in the workspace "
                             f"(known: {', '.join(sorted(lines)) or 'none'})")
        return chosen

    def _walk_line(self, line: PhoneNumberData, start: datetime) -> None:
        log = self.log.bind(phone_number_id=line.id)
        with self.engine.connect() as conn:
            conv_marks = store.conversation_marks(conn, line.id)
        done: set[str] = set()
        failed = False
        try:
            for page in self._pages(
                lambda token: self.client.list_conversations(
                    line.id, start - self.overlap, token, max_results=self.options.page_size),
                f"conversations of {line.id}",
            ):
                for conv in page.data:
                    parts = conv.participants
                    if len(parts) != 1:
                        # GET /v1/calls lists one-to-one conversations only.
                        self.stats.skipped_conversations += 1
                        log.info("conversation skipped: not one-to-one", conversation_id=conv.id,
                                 participants=len(parts))
                        continue
                    participant = parts[0]
                    if not is_e164(participant):
                        self.stats.skipped_conversations += 1
                        log.warning("conversation skipped: participant is not an E.164 number",
                                    conversation_id=conv.id, participant=participant[:80])
                        continue
                    if participant in done:
                        continue  # the same conversation listed twice
                    done.add(participant)
                    starts = [t for t in (conv_marks.get(participant), self.options.since) if t is not None]
                    try:
                        self._walk_conversation(line, conv.id, participant, min(starts) if starts else start)
                    except _WalkFailed:
                        failed = True  # the line's watermark must not pass this conversation
        except _WalkFailed:
            failed = True
        if failed or self.options.dry_run:
            return
        with self.engine.begin() as conn:
            store.set_watermark(conn, line.id, line.number, self.walk_started, self.clock.utcnow())
        log.info("line walked", watermark=iso_z(self.walk_started))

    def _walk_conversation(self, line: PhoneNumberData, conversation_id: str | None, participant: str,
                           created_after: datetime) -> None:
        seen: set[str] = set()
        oldest_open: datetime | None = None
        log = self.log.bind(phone_number_id=line.id, participant=participant)
        pages = self._pages(
            lambda token: self.client.list_calls(
                line.id, participant, created_after - self.overlap, token,
                max_results=self.options.page_size),
            f"calls of {line.id} with {participant}", raw_pages=True,
        )
        for page, raw, last in pages:
            rows: list[CallContextRows] = []
            completed: list[str] = []
            rejected: list[store.Rejected] = []
            now = self.clock.utcnow()
            items = raw.get("data") if isinstance(raw, dict) else None
            for call, item in zip(page.data, items or [], strict=False):
                if isinstance(call, Malformed):
                    rejected.append(self._reject("GET /v1/calls", item, call.reason, log))
                    continue
                if not is_valid_call_id(call.id):
                    log.warning("call skipped: malformed call id", call_id=call.id[:80])
                    continue
                if call.id in seen:
                    log.info("call listed twice; stored once", call_id=call.id)
                    continue
                seen.add(call.id)
                try:
                    row = normalize_call(call, call_json(item), now)
                except Refused as exc:
                    rejected.append(self._reject("GET /v1/calls", item, str(exc), log))
                    continue
                if row.not_e164:
                    log.warning("participants that are not E.164 kept with is_e164 = false",
                                call_id=call.id, numbers=[n[:80] for n in row.not_e164])
                rows.append(row)
                if call.status == "completed":
                    completed.append(call.id)
                elif _still_open(call) and call.createdAt is not None:
                    created = row.parent["created_at"]
                    oldest_open = created if oldest_open is None else min(oldest_open, created)
            mark = self.walk_started if oldest_open is None else min(self.walk_started, oldest_open)
            new = self._commit_calls(rows, completed, (line.id, participant, conversation_id, mark) if last else None,
                                     rejected, log)
            self.stats.calls_seen += len(rows)
            self.stats.enqueued += new
            self.stats.pages += 1
            self._page_done("calls page", phone_number_id=line.id, participant=participant, calls=len(rows),
                            completed=len(completed), enqueued=new, last_page=last)
        self.stats.conversations += 1

    def _reject(self, endpoint: str, item: Any, reason: str, log: Any) -> store.Rejected:
        """A call of a page that cannot be stored: said once, kept (with the page), the page goes on."""
        call_id = str(item.get("id", ""))[:80] if isinstance(item, dict) else ""
        log.error("record rejected", call_id=call_id, endpoint=endpoint, reason=reason)
        return store.Rejected("discover", endpoint, call_id, reason, item)

    def _commit_calls(self, rows: list[CallContextRows], completed: list[str],
                      mark: tuple[str, str, str | None, datetime] | None,
                      rejected: list[store.Rejected] | None = None, log: Any = None) -> int:
        """One calls page: calls, queue ids, counters and (on the last page) the conversation's watermark.

        Written as one; only when that fails, call by call (:func:`etl.store.each_storable`), the
        calls the database refuses set aside with its reason and the rest of the page kept.
        """
        rejected = list(rejected or [])
        if self.options.dry_run:
            with self.engine.connect() as conn:
                queued = store.queued(conn, completed)
            self.stats.would_enqueue += len(set(completed) - queued)
            return 0
        now = self.clock.utcnow()
        try:
            new = self._write_calls_page(rows, completed, mark, rejected, now, one_by_one=False)
        except store.RECORD_ERRORS:
            new = self._write_calls_page(rows, completed, mark, rejected, now, one_by_one=True, log=log)
        return new

    def _write_calls_page(self, rows: list[CallContextRows], completed: list[str],
                          mark: tuple[str, str, str | None, datetime] | None, rejected: list[store.Rejected],
                          now: datetime, *, one_by_one: bool, log: Any = None) -> int:
        with self.engine.begin() as conn:
            if one_by_one:
                _, refused = store.each_storable(conn, rows, lambda c, r: store.save_calls(c, [r], now))
                bad = {r.call_id for r, _ in refused}
                rejected = rejected + [self._reject("GET /v1/calls", json.loads(r.parent["raw_json"]),
                                                    f"the database refused it: {why}", log or self.log)
                                       for r, why in refused]
                completed = [c for c in completed if c not in bad]
            else:
                store.save_calls(conn, rows, now)
            for r in rejected:
                store.record_rejected(conn, r, now)
            new = store.enqueue_ids(conn, completed)
            if self.settings.transcripts:
                store.enqueue_transcripts(conn, completed, now)
            assert self.stats.run_id is not None
            store.add_discovery_counts(conn, self.stats.run_id, pages=1, calls_seen=len(rows), enqueued=new,
                                       conversations=1 if mark else 0)
            if mark is not None:
                store.set_conversation_mark(conn, *mark, now)
        self.stats.rejected += len(rejected)  # counted once the page is committed
        return new

    # -- the whole workspace at once (GET /calls) ----------------------------------------

    def _walk_workspace(self) -> None:
        wanted = self.options.phone_numbers
        for value in wanted:
            if not value.startswith("PN"):
                raise UsageError(f"--phone-number {value!r}: on API version {self.client.api_version} "
                                 "discovery filters by line id (PN…), not by number")
        scopes = list(wanted) or ["*"]
        with self.engine.connect() as conn:
            marks = store.call_watermarks(conn)
        since = self.options.since
        missing = [s for s in scopes if s not in marks]
        if missing and since is None:
            what = "the workspace" if missing[0] == "*" else f"phone number {missing[0]}"
            raise UsageError(f"no discovery watermark yet for {what}: pass --since DATE for the first run")
        for scope in scopes:
            starts = [t for t in (marks.get(scope), since) if t is not None]
            try:
                self._walk_scope(scope, min(starts))
            except _WalkFailed:
                continue  # logged and counted; its watermark stays
            if scope != "*":
                self.stats.phone_numbers += 1

    def _walk_scope(self, scope: str, start: datetime) -> None:
        """Every page of ``GET /calls`` created since ``start`` (less the overlap), newest first."""
        log = self.log.bind(scope=scope)
        gte = start - self.overlap
        lte: datetime | None = None  # after an expired cursor: below what is committed
        committed: datetime | None = None  # the oldest createdAt of the pages committed so far
        cursor: str | None = None
        cursors: set[str] = set()
        seen: set[str] = set()
        listed: set[str] = set()  # every id any page of this walk listed (rejected ones too)
        restarts = empty = 0
        while True:
            if self._stop.is_set():
                raise _Stopped
            try:
                result = self.client.list_workspace_calls(
                    created_gte=gte, created_lte=lte, phone_number_id=None if scope == "*" else scope,
                    cursor=cursor, limit=self.options.dated_page_size)
            except NotSent:
                raise _Stopped from None
            if result.kind == "invalid" and cursor is not None and restarts < self.options.max_restarts:
                # Cursors are short-lived: list again from the watermark, below the committed pages.
                restarts += 1
                self.stats.restarts += 1
                lte = committed
                log.info("cursor refused (expired?); listing again from the watermark",
                         error=result.error, created_lte=None if lte is None else iso_z(lte))
                cursor = None
                continue
            if result.kind != "ok" or result.data is None:
                self._walk_error(f"listing calls of {scope} failed: {result.error or result.kind}", what="calls",
                                 scope=scope, http_status=result.http_status, tries=result.tries)
            page = result.data
            next_cursor = page.nextCursor or None
            last = next_cursor is None
            page_ids = set(_ids(page.data))
            brought_new = bool(page_ids - listed)
            listed |= page_ids
            oldest = self._commit_listing(page.data, result.raw, seen, scope if last else None, log)
            if oldest is not None:
                committed = oldest if committed is None else min(committed, oldest)
            self._page_done("calls page", scope=scope, calls=len(page.data), last_page=last)
            if last:
                if not self.options.dry_run:
                    log.info("calls listed", watermark=iso_z(self.walk_started))
                return
            assert next_cursor is not None
            # A page of calls already listed (fresh cursors over the same calls) brings nothing: empty.
            empty = empty + 1 if not brought_new else 0
            if next_cursor in cursors:
                self._walk_error(f"listing calls of {scope}: the API sent cursor {next_cursor[:40]!r} twice; stopped",
                                 what="calls", scope=scope)
            if empty > self.options.max_empty_pages:
                self._walk_error(f"listing calls of {scope}: {empty} pages in a row with a next cursor brought no "
                                 "call not listed before; stopped", what="calls", scope=scope)
            cursors.add(next_cursor)
            cursor = next_cursor

    def _commit_listing(self, calls: list[DatedCall | Malformed], raw: Any, seen: set[str],
                        last_scope: str | None, log: Any) -> datetime | None:
        """One page: calls, final summaries, queue ids and (last page) the watermark, in one transaction.

        A call that cannot be stored (its model refused it, a date out of range, or the database
        refused it) is set aside in ``rejected_records``; the page's other calls are stored.
        Returns the oldest ``createdAt`` on the page (where a restarted listing may resume).
        """
        now = self.clock.utcnow()
        page = _ListingPage()
        items = raw.get("data") if isinstance(raw, dict) else None
        for call, item in zip(calls, items or [], strict=False):
            if isinstance(call, Malformed):
                page.rejected.append(self._reject("GET /calls", item, call.reason, log))
                continue
            if not is_valid_call_id(call.id):
                log.warning("call skipped: malformed call id", call_id=call.id[:80])
                continue
            try:
                self._listed_call(page, call, item, seen, now, log)
            except Refused as exc:
                page.rejected.append(self._reject("GET /calls", item, str(exc), log))
        self.stats.calls_seen += len(page.rows)
        self.stats.pages += 1
        if self.options.dry_run:
            with self.engine.connect() as conn:
                known = store.queued(conn, page.queued)
            self.stats.would_enqueue += len(set(page.queued) - known)
            return page.oldest
        try:
            new, stored = self._write_listing(page, last_scope, now, one_by_one=False, log=log)
        except store.RECORD_ERRORS:
            new, stored = self._write_listing(page, last_scope, now, one_by_one=True, log=log)
        self.stats.enqueued += new
        self.stats.stored += stored
        return page.oldest

    def _listed_call(self, page: _ListingPage, call: DatedCall, item: Any, seen: set[str], now: datetime,
                     log: Any) -> None:
        answer = dated_answer(call, item) if call.summary is not None else None
        row = normalize_call(call, answer.call_json if answer and answer.call_json else call_json(item), now)
        created = row.parent["created_at"]
        if created is not None:
            page.oldest = created if page.oldest is None else min(page.oldest, created)
        if call.id in seen:
            log.info("call listed twice; stored once", call_id=call.id)
            return
        summary = None
        if answer is not None and answer.status not in ("in-progress", "absent") and not (
                answer.status != "completed" and _still_open(call)):
            summary = normalize(answer.summary, answer.raw_json, answer.content_hash, now, call_id=call.id)
        seen.add(call.id)
        page.rows.append(row)
        if answer is None:
            if call.status == "completed" or _still_open(call):
                page.queued.append(call.id)  # no summary object: one request will tell
            return
        status = answer.status
        if status == "in-progress" or (status != "completed" and _still_open(call)):
            page.queued.append(call.id)
            return
        fresh = ClaimedItem(call_id=call.id, attempts=0, consecutive_errors=0, incomplete_since=None,
                            next_attempt_at=now)
        update = decide(fresh, ApiResult(what="GET /calls", kind="ok", http_status=200, tries=1,
                                         latency_ms=0.0, data=answer), now, self.settings.backoff)
        page.finals.append(update)
        if status == "absent":
            page.absent.add(call.id)  # never a summary: only a queued id is ended, none is added
        elif summary is not None:
            page.summaries.append(summary)

    def _write_listing(self, page: _ListingPage, last_scope: str | None, now: datetime, *, one_by_one: bool,
                       log: Any) -> tuple[int, int]:
        rows, summaries, finals, queued = page.rows, page.summaries, page.finals, page.queued
        rejected = list(page.rejected)
        with self.engine.begin() as conn:
            if one_by_one:
                # The page failed as a whole: call by call, each call with its summary, in savepoints.
                by_id = {s.parent["call_id"]: s for s in summaries}

                def write(c: Connection, r: CallContextRows) -> None:
                    store.save_calls(c, [r], now)
                    if r.call_id in by_id:
                        store.save_summaries(c, [by_id[r.call_id]], now)

                _, refused = store.each_storable(conn, rows, write)
                bad = {r.call_id for r, _ in refused}
                rejected += [self._reject("GET /calls", json.loads(r.parent["raw_json"]),
                                          f"the database refused it: {why}", log) for r, why in refused]
                summaries = [s for s in summaries if s.parent["call_id"] not in bad]
                finals = [u for u in finals if u.call_id not in bad]
                queued = [c for c in queued if c not in bad]
            else:
                store.save_calls(conn, rows, now)
            stored = store.save_listed_summaries(conn, [] if one_by_one else summaries, finals, now,
                                                 only_queued=page.absent)
            for r in rejected:
                store.record_rejected(conn, r, now)
            new = store.enqueue_ids(conn, queued)
            if self.settings.transcripts:
                # Every call answered on the page gets its transcript, whatever its summary's state
                # (completed, failed or absent: those are never synced); the queued ids get theirs
                # when the sync saves them.
                store.enqueue_transcripts(conn, [u.call_id for u in finals], now)
            assert self.stats.run_id is not None
            store.add_discovery_counts(conn, self.stats.run_id, pages=1, calls_seen=len(rows), enqueued=new)
            if last_scope is not None:
                store.set_call_watermark(conn, last_scope, self.walk_started, now)
        self.stats.rejected += len(rejected)
        return new, stored

    # -- paging -----------------------------------------------------------------------

    def _pages(self, fetch: Callable[[str | None], ApiResult[Any]], what: str, *, fatal: bool = False,
               raw_pages: bool = False) -> Iterator[Any]:
        """Every page of a listing: follows ``nextPageToken`` until it is null.

        A failed request, a token that comes back again (a loop) or too many
        empty pages in a row end the walk with an error line (:class:`_WalkFailed`;
        ``fatal``: the whole run).  ``raw_pages`` yields ``(page, raw JSON, is_last)``.
        """
        token: str | None = None
        tokens: set[str] = set()
        listed: set[str] = set()
        empty = 0
        while True:
            if self._stop.is_set():
                raise _Stopped
            try:
                result = fetch(token)
            except NotSent:
                raise _Stopped from None
            if result.kind != "ok" or result.data is None:
                self._walk_error(f"listing {what} failed: {result.error or result.kind}", what=what,
                                 http_status=result.http_status, tries=result.tries, fatal=fatal)
            page = result.data
            next_token = page.nextPageToken or None
            problem = None
            if next_token is not None and next_token in tokens:
                problem = f"listing {what}: the API sent page token {next_token[:40]!r} twice; stopped"
            # A page of items already listed (fresh tokens over the same items) brings nothing: empty.
            page_ids = set(_ids(page.data))
            empty = empty + 1 if not page_ids - listed else 0
            listed |= page_ids
            if next_token is not None and empty > self.options.max_empty_pages:
                problem = (f"listing {what}: {empty} pages in a row with a next page token brought nothing not "
                           "listed before; stopped")
            last = next_token is None
            yield (page, result.raw, last) if raw_pages else page
            if problem is not None:
                self._walk_error(problem, what=what, fatal=fatal)
            if last:
                return
            assert next_token is not None
            tokens.add(next_token)
            token = next_token

    def _walk_error(self, message: str, *, fatal: bool = False, **fields: Any) -> NoReturn:
        self.stats.errors += 1
        self.log.error("walk stopped", error=message, **fields)
        if self.stats.run_id is not None:
            with self.engine.begin() as conn:
                store.add_discovery_counts(conn, self.stats.run_id, errors=1)
        if fatal:
            # The error that ends the whole run is its reason, even after a signal.
            self.stats.stop, self.stats.stop_reason = StopReason.WALK_ERRORS, message
            raise _Stopped
        raise _WalkFailed(message)

    def _page_done(self, event: str, **fields: Any) -> None:
        getattr(self.log, self.page_log_level)(event, **fields)
        if self.on_page is not None:
            self.on_page(self.stats)


def _ids(items: Sequence[Any]) -> Iterator[str]:
    """The id of each listed item (a malformed one's id as sent), for telling a page that brings nothing new."""
    for item in items:
        if isinstance(item, Malformed):
            yield repr(item.raw.get("id") if isinstance(item.raw, dict) else item.raw)[:200]
        else:
            yield str(getattr(item, "id", item))


def _plural(n: int, word: str) -> str:
    if n == 1:
        return f"{n} {word}"
    return f"{n} {word[:-1]}ies" if word.endswith("y") else f"{n} {word}s"


def _still_open(call: CallData | DatedCall) -> bool:
    return call.completedAt is None and (call.status or "") not in ENDED_STATUSES


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
