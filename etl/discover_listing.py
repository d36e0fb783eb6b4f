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

import json
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy.engine import Connection

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
from etl.storable import Malformed, Refused

_ENDPOINT = "GET /calls"


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
            marks = store.call_watermarks(conn, workspace=run.settings.workspace)
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

    def _commit_listing(self, items: tuple[SummaryAnswer | Call | Malformed, ...], raws: tuple[Any, ...],
                        seen: set[str], last_scope: str | None, log: Any) -> datetime | None:
        """One page: calls, final summaries, queue ids and (last page) the watermark, in one transaction.

        A call that cannot be stored (its model refused it, a date out of range, or the database
        refused it) is set aside in ``rejected_records``; the page's other calls are stored.
        Returns the oldest ``createdAt`` on the page (where a restarted listing may resume).
        """
        run = self.run
        now = run.clock.utcnow()
        page = _ListingPage()
        for listed, item in zip(items, raws, strict=False):
            if isinstance(listed, Malformed):
                page.rejected.append(run.reject(_ENDPOINT, item, listed.reason, log))
                continue
            try:
                self._listed_call(page, listed, item, seen, now, log)
            except Refused as exc:
                page.rejected.append(run.reject(_ENDPOINT, item, str(exc), log))
        self.stats.calls_seen += len(page.rows)
        self.stats.pages += 1
        if self.options.dry_run:
            with run.engine.connect() as conn:
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

    def _listed_call(self, page: _ListingPage, listed: SummaryAnswer | Call, item: Any, seen: set[str],
                     now: datetime, log: Any) -> None:
        """One call of the page sorted into ``page``; raises :class:`Refused` (``page`` unchanged) when
        the call or its summary cannot be stored."""
        answer = listed if isinstance(listed, SummaryAnswer) else None
        call = answer.call if answer is not None else listed
        assert isinstance(call, Call)
        if not is_valid_call_id(call.id):
            log.warning("call skipped: malformed call id", call_id=call.id[:80])
            return
        row = normalize_call(call, answer.call_json if answer and answer.call_json else call_json(item), now)
        created = row.parent["created_at"]
        if created is not None:
            page.oldest = created if page.oldest is None else min(page.oldest, created)
        if call.id in seen:
            log.info("call listed twice; stored once", call_id=call.id)
            return
        update = None
        summary = None
        if answer is not None:
            update = None if answer.status != "completed" and still_open(call) else settle_listed(answer, now)
            if update is not None and answer.status != "absent":
                # Normalised before the call is taken: a summary that cannot be stored refuses the call.
                summary = normalize(answer.summary, answer.raw_json, answer.content_hash, now)
        seen.add(call.id)
        page.rows.append(row)
        if answer is None:
            if call.status == "completed" or still_open(call):
                page.queued.append(call.id)  # no summary object: one request will tell
            return
        if update is None:
            page.queued.append(call.id)
            return
        page.finals.append(update)
        if answer.status == "absent":
            page.absent.add(call.id)  # never a summary: only a queued id is ended, none is added
        elif summary is not None:
            page.summaries.append(summary)

    def _write_listing(self, page: _ListingPage, last_scope: str | None, now: datetime, *, one_by_one: bool,
                       log: Any) -> tuple[int, int]:
        run = self.run
        rows, summaries, finals, queued = page.rows, page.summaries, page.finals, page.queued
        rejected = list(page.rejected)
        workspace = run.settings.workspace
        with run.engine.begin() as conn:
            if one_by_one:
                # The page failed as a whole: call by call, each call with its summary, in savepoints.
                by_id = {s.parent["call_id"]: s for s in summaries}

                def write(c: Connection, r: CallContextRows) -> None:
                    store.save_calls(c, [r], now, workspace=workspace)
                    if r.call_id in by_id:
                        store.save_summaries(c, [by_id[r.call_id]], now, workspace=workspace)

                _, refused = store.each_storable(conn, rows, write)
                bad = {r.call_id for r, _ in refused}
                rejected += [run.reject(_ENDPOINT, json.loads(r.parent["raw_json"]),
                                        f"the database refused it: {why}", log) for r, why in refused]
                summaries = [s for s in summaries if s.parent["call_id"] not in bad]
                finals = [u for u in finals if u.call_id not in bad]
                queued = [c for c in queued if c not in bad]
            else:
                store.save_calls(conn, rows, now, workspace=workspace)
            stored = store.save_listed_summaries(conn, [] if one_by_one else summaries, finals, now,
                                                 only_queued=page.absent, workspace=workspace)
            for r in rejected:
                store.record_rejected(conn, r, now, workspace=workspace)
            new = store.enqueue_ids(conn, queued, now, workspace=workspace)
            if run.settings.transcripts:
                # Every call answered on the page gets its transcript, whatever its summary's state
                # (completed, failed or absent: those are never synced); the queued ids get theirs
                # when the sync saves them.
                store.enqueue_transcripts(conn, [u.call_id for u in finals], now, workspace=workspace)
            assert self.stats.run_id is not None
            store.add_discovery_counts(conn, self.stats.run_id, pages=1, calls_seen=len(rows), enqueued=new)
            if last_scope is not None:
                store.set_call_watermark(conn, last_scope, run.walk_started, now, workspace=workspace)
        self.stats.rejected += len(rejected)
        return new, stored
