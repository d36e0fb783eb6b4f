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

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, NoReturn

import httpx
from sqlalchemy.engine import Engine

from etl import store
from etl.api import NotSent, OpenPhoneClient, dated_answer
from etl.budget import budget_for
from etl.clock import Clock, iso_z
from etl.config import Settings
from etl.errors import AuthError, UsageError
from etl.ids import is_valid_call_id
from etl.logs import get_logger
from etl.normalize import CallContextRows, CallRows, call_json, is_e164, normalize, normalize_call
from etl.policy import ClaimedItem, QueueUpdate, decide
from etl.ratelimit import RateBudget
from etl.results import ApiResult
from etl.runs import DISCOVERY_RECORD, Lifecycle, RunOutcome, StopReason
from etl.schema import CallData, DatedCall, PhoneNumberData

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

    def summary(self, dry_run: bool = False) -> str:
        """The one-line summary `etl discover` and `etl demo` print (one wording for both)."""
        run = "" if self.run_id is None else f" run {self.run_id}"
        verb, count = ("would enqueue", self.would_enqueue) if dry_run else ("enqueued", self.enqueued)
        # The dated surface lists the workspace's calls directly: no lines or conversations to count.
        walked = (f"{_plural(self.phone_numbers, 'phone number')}, {_plural(self.conversations, 'conversation')}, "
                  if self.phone_numbers or self.conversations else "")
        stored = f"{_plural(self.stored, 'summary')} stored from the listing, " if self.stored else ""
        return (f"Discovery{run}: {walked}{_plural(self.calls_seen, 'call')} seen, {stored}"
                f"{verb} {count}, {_plural(self.errors, 'error')}.")

    def as_dict(self) -> dict[str, Any]:
        return {
            "run_id": self.run_id, "phone_numbers": self.phone_numbers, "conversations": self.conversations,
            "pages": self.pages, "calls_seen": self.calls_seen, "enqueued": self.enqueued,
            "errors": self.errors, "skipped_conversations": self.skipped_conversations,
            "stored": self.stored, "restarts": self.restarts, **super().as_dict(),
        }


class _Stopped(Exception):
    """The walk must end now (a signal, or the API refused the key)."""


class _WalkFailed(Exception):
    """One walk (a line or a conversation) cannot go on; the others can."""


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
        self.lifecycle = Lifecycle(self.stats, engine, DISCOVERY_RECORD, clock, get_logger(command="discover"))
        self._stop = self.lifecycle.stop

    @property
    def log(self) -> Any:
        return self.lifecycle.log

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
            if client.lists_workspace:
                self._walk_workspace()
            else:
                self._walk_all()
        except UsageError as exc:
            # A refusal (no --since for a new line, an unknown --phone-number) is no run: no row.
            self.lifecycle.fail(StopReason.REFUSED, str(exc))
            self.lifecycle.forget()
            stats.run_id = None
            self._finish()
            raise
        except AuthError as exc:
            self.lifecycle.fail(StopReason.AUTH_REFUSED, f"the API refused the key (HTTP {exc.http_status}): {exc}")
        except _Stopped:
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

    def _finish(self) -> None:
        extra = {"would_enqueue": self.stats.would_enqueue} if self.options.dry_run else {}
        self.lifecycle.finish(extra)

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
            now = self.clock.utcnow()
            items = raw.get("data") if isinstance(raw, dict) else None
            for call, item in zip(page.data, items or [], strict=False):
                if not is_valid_call_id(call.id):
                    log.warning("call skipped: malformed call id", call_id=call.id[:80])
                    continue
                if call.id in seen:
                    log.info("call listed twice; stored once", call_id=call.id)
                    continue
                seen.add(call.id)
                row = normalize_call(call, call_json(item), now)
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
            new = self._commit_calls(rows, completed, (line.id, participant, conversation_id, mark) if last else None)
            self.stats.calls_seen += len(rows)
            self.stats.enqueued += new
            self.stats.pages += 1
            self._page_done("calls page", phone_number_id=line.id, participant=participant, calls=len(rows),
                            completed=len(completed), enqueued=new, last_page=last)
        self.stats.conversations += 1

    def _commit_calls(self, rows: list[CallContextRows], completed: list[str],
                      mark: tuple[str, str, str | None, datetime] | None) -> int:
        """One calls page: calls, queue ids, counters and (on the last page) the conversation's watermark."""
        if self.options.dry_run:
            with self.engine.connect() as conn:
                queued = store.queued(conn, completed)
            self.stats.would_enqueue += len(set(completed) - queued)
            return 0
        now = self.clock.utcnow()
        with self.engine.begin() as conn:
            store.save_calls(conn, rows, now)
            new = store.enqueue_ids(conn, completed, now)
            if self.settings.transcripts:
                store.enqueue_transcripts(conn, completed, now)
            assert self.stats.run_id is not None
            store.add_discovery_counts(conn, self.stats.run_id, pages=1, calls_seen=len(rows), enqueued=new,
                                       conversations=1 if mark else 0)
            if mark is not None:
                store.set_conversation_mark(conn, *mark, now)
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
            oldest = self._commit_listing(page.data, result.raw, seen, scope if last else None, log)
            if oldest is not None:
                committed = oldest if committed is None else min(committed, oldest)
            self._page_done("calls page", scope=scope, calls=len(page.data), last_page=last)
            if last:
                if not self.options.dry_run:
                    log.info("calls listed", watermark=iso_z(self.walk_started))
                return
            assert next_cursor is not None
            empty = empty + 1 if not page.data else 0
            if next_cursor in cursors:
                self._walk_error(f"listing calls of {scope}: the API sent cursor {next_cursor[:40]!r} twice; stopped",
                                 what="calls", scope=scope)
            if empty > self.options.max_empty_pages:
                self._walk_error(f"listing calls of {scope}: {empty} empty pages in a row with a next cursor; "
                                 "stopped", what="calls", scope=scope)
            cursors.add(next_cursor)
            cursor = next_cursor

    def _commit_listing(self, calls: list[DatedCall], raw: Any, seen: set[str], last_scope: str | None,
                        log: Any) -> datetime | None:
        """One page: calls, final summaries, queue ids and (last page) the watermark, in one transaction.

        Returns the oldest ``createdAt`` on the page (where a restarted listing may resume).
        """
        now = self.clock.utcnow()
        rows: list[CallContextRows] = []
        summaries: list[CallRows] = []
        finals: list[QueueUpdate] = []
        absent: set[str] = set()
        queued: list[str] = []
        oldest: datetime | None = None
        items = raw.get("data") if isinstance(raw, dict) else None
        for call, item in zip(calls, items or [], strict=False):
            if not is_valid_call_id(call.id):
                log.warning("call skipped: malformed call id", call_id=call.id[:80])
                continue
            answer = dated_answer(call, item) if call.summary is not None else None
            row = normalize_call(call, answer.call_json if answer and answer.call_json else call_json(item), now)
            created = row.parent["created_at"]
            if created is not None:
                oldest = created if oldest is None else min(oldest, created)
            if call.id in seen:
                log.info("call listed twice; stored once", call_id=call.id)
                continue
            seen.add(call.id)
            rows.append(row)
            if answer is None:
                if call.status == "completed" or _still_open(call):
                    queued.append(call.id)  # no summary object: one request will tell
                continue
            status = answer.status
            if status == "in-progress" or (status != "completed" and _still_open(call)):
                queued.append(call.id)
                continue
            fresh = ClaimedItem(call_id=call.id, attempts=0, consecutive_errors=0, incomplete_since=None,
                                next_attempt_at=now)
            update = decide(fresh, ApiResult(what="GET /calls", kind="ok", http_status=200, tries=1,
                                             latency_ms=0.0, data=answer), now, self.settings.backoff)
            finals.append(update)
            if status == "absent":
                absent.add(call.id)  # never a summary: only a queued id is ended, none is added
            else:
                summaries.append(normalize(answer.summary, answer.raw_json, answer.content_hash, now,
                                           call_id=call.id))
        self.stats.calls_seen += len(rows)
        self.stats.pages += 1
        if self.options.dry_run:
            with self.engine.connect() as conn:
                known = store.queued(conn, queued)
            self.stats.would_enqueue += len(set(queued) - known)
            return oldest
        with self.engine.begin() as conn:
            store.save_calls(conn, rows, now)
            stored = store.save_listed_summaries(conn, summaries, finals, now, only_queued=absent)
            new = store.enqueue_ids(conn, queued, now)
            if self.settings.transcripts:
                # A summary stored from the page is never synced, so its transcript is queued here
                # (the queued ids get theirs when the sync saves them).
                store.enqueue_transcripts(conn, [rows.parent["call_id"] for rows in summaries], now)
            assert self.stats.run_id is not None
            store.add_discovery_counts(conn, self.stats.run_id, pages=1, calls_seen=len(rows), enqueued=new)
            if last_scope is not None:
                store.set_call_watermark(conn, last_scope, self.walk_started, now)
        self.stats.enqueued += new
        self.stats.stored += stored
        return oldest

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
            empty = empty + 1 if not page.data else 0
            if next_token is not None and empty > self.options.max_empty_pages:
                problem = f"listing {what}: {empty} empty pages in a row with a next page token; stopped"
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
            self.lifecycle.fail(StopReason.WALK_ERRORS, message)
            raise _Stopped
        raise _WalkFailed(message)

    def _page_done(self, event: str, **fields: Any) -> None:
        getattr(self.log, self.page_log_level)(event, **fields)
        if self.on_page is not None:
            self.on_page(self.stats)


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
