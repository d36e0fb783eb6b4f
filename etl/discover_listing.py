"""Discovery's workspace listing (surfaces that list every call of the workspace: the dated API).

The workspace's calls since the scope's ``createdAt`` watermark, newest first,
50 calls a page, each with its summary and voicemail.  A summary that arrives
final (completed, failed; absent, where the surface says that means never) is
stored from the page at once, in the page's transaction, through the same
normalising and storing path as a sync (its queue row inserted or marked done
as :func:`etl.policy.settle_listed` says, no second request); only summaries
still in progress and calls still live are queued.  Cursors are never stored:
an expired one (400) restarts the listing from the watermark, below the calls
already committed.  The scope's watermark (``*``, or one line for
``--phone-number PN…``) moves to the walk's start after its last page.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from etl import store
from etl.api import PagingError
from etl.callsource import Source, WalkFailed, WalkStopped, still_open
from etl.clock import iso_z
from etl.errors import UsageError
from etl.ids import is_valid_call_id
from etl.normalize import CallContextRows, CallRows, call_json, normalize, normalize_call
from etl.policy import QueueUpdate, settle_listed
from etl.ratelimit import NotSent
from etl.results import Call, SummaryAnswer


class WorkspaceListing(Source):
    """The workspace listing of one discovery run."""

    def walk(self) -> None:
        run = self.run
        wanted = self.options.phone_numbers
        for value in wanted:
            if not value.startswith("PN"):
                raise UsageError(f"--phone-number {value!r}: on API version {self.client.api_version} "
                                 "discovery filters by line id (PN…), not by number")
        scopes = list(wanted) or ["*"]
        with run.engine.connect() as conn:
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
            except WalkFailed:
                continue  # logged and counted; its watermark stays
            if scope != "*":
                self.stats.phone_numbers += 1

    def _walk_scope(self, scope: str, start: datetime) -> None:
        """Every page of the listing created since ``start`` (less the overlap), newest first; an expired
        cursor lists again from the watermark, below the pages committed so far."""
        run = self.run
        log = run.log.bind(scope=scope)
        gte = start - run.overlap
        lte: datetime | None = None  # after an expired cursor: below what is committed
        committed: datetime | None = None  # the oldest createdAt of the pages committed so far
        seen: set[str] = set()
        restarts = 0
        while True:
            pages = self.client.workspace_call_pages(
                created_gte=gte, created_lte=lte, phone_number_id=None if scope == "*" else scope,
                limit=self.options.dated_page_size, what=f"calls of {scope}", max_empty=self.options.max_empty_pages)
            try:
                if run.stop_requested():
                    raise WalkStopped
                for result, last in pages:
                    assert result.data is not None
                    page = result.data
                    oldest = self._commit_listing(page.items, page.raws, seen, scope if last else None, log)
                    if oldest is not None:
                        committed = oldest if committed is None else min(committed, oldest)
                    run.page_done("calls page", scope=scope, calls=len(page.items), last_page=last)
                    if last and not self.options.dry_run:
                        log.info("calls listed", watermark=iso_z(run.walk_started))
                    if run.stop_requested():
                        raise WalkStopped
                return
            except NotSent:
                raise WalkStopped from None
            except PagingError as exc:
                failed = exc.result
                if (failed is not None and failed.kind == "invalid" and exc.token is not None
                        and restarts < self.options.max_restarts):
                    # Cursors are short-lived: list again from the watermark, below the committed pages.
                    restarts += 1
                    self.stats.restarts += 1
                    lte = committed
                    log.info("cursor refused (expired?); listing again from the watermark",
                             error=failed.error, created_lte=None if lte is None else iso_z(lte))
                    continue
                fields: dict[str, Any] = {} if failed is None else {"http_status": failed.http_status,
                                                                    "tries": failed.tries}
                run.walk_error(exc.message, what="calls", scope=scope, **fields)

    def _commit_listing(self, items: tuple[SummaryAnswer | Call, ...], raws: tuple[Any, ...], seen: set[str],
                        last_scope: str | None, log: Any) -> datetime | None:
        """One page: calls, final summaries, queue ids and (last page) the watermark, in one transaction.

        Returns the oldest ``createdAt`` on the page (where a restarted listing may resume).
        """
        run = self.run
        now = run.clock.utcnow()
        rows: list[CallContextRows] = []
        summaries: list[CallRows] = []
        finals: list[QueueUpdate] = []
        absent: set[str] = set()
        queued: list[str] = []
        oldest: datetime | None = None
        for listed, item in zip(items, raws, strict=False):
            answer = listed if isinstance(listed, SummaryAnswer) else None
            call = answer.call if answer is not None else listed
            assert isinstance(call, Call)
            if not is_valid_call_id(call.id):
                log.warning("call skipped: malformed call id", call_id=call.id[:80])
                continue
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
                if call.status == "completed" or still_open(call):
                    queued.append(call.id)  # no summary object: one request will tell
                continue
            status = answer.status
            update = None if status != "completed" and still_open(call) else settle_listed(answer, now)
            if update is None:
                queued.append(call.id)
                continue
            finals.append(update)
            if status == "absent":
                absent.add(call.id)  # never a summary: only a queued id is ended, none is added
            else:
                summaries.append(normalize(answer.summary, answer.raw_json, answer.content_hash, now))
        self.stats.calls_seen += len(rows)
        self.stats.pages += 1
        if self.options.dry_run:
            with run.engine.connect() as conn:
                known = store.queued(conn, queued)
            self.stats.would_enqueue += len(set(queued) - known)
            return oldest
        with run.engine.begin() as conn:
            store.save_calls(conn, rows, now)
            stored = store.save_listed_summaries(conn, summaries, finals, now, only_queued=absent)
            new = store.enqueue_ids(conn, queued, now)
            if run.settings.transcripts:
                # A summary stored from the page is never synced, so its transcript is queued here
                # (the queued ids get theirs when the sync saves them).
                store.enqueue_transcripts(conn, [rows.parent["call_id"] for rows in summaries], now)
            assert self.stats.run_id is not None
            store.add_discovery_counts(conn, self.stats.run_id, pages=1, calls_seen=len(rows), enqueued=new)
            if last_scope is not None:
                store.set_call_watermark(conn, last_scope, run.walk_started, now)
        self.stats.enqueued += new
        self.stats.stored += stored
        return oldest
