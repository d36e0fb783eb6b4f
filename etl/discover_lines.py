"""Discovery's lines walk (surfaces that list calls per conversation: v1).

Per OpenPhone line (the workspace's phone numbers):

1. the line's conversations, updated after the line's watermark;
2. for each one-to-one conversation, its calls for (line, participant),
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
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import datetime
from typing import Any, TypeVar

from etl import store
from etl.api import PagingError, TokenPages
from etl.callsource import Source, WalkFailed, WalkStopped, still_open
from etl.clock import iso_z
from etl.dimensions import Line
from etl.errors import UsageError
from etl.ids import is_valid_call_id
from etl.normalize import CallContextRows, call_json, is_e164, normalize_call
from etl.ratelimit import NotSent
from etl.results import ApiResult, Page
from etl.storable import Malformed, Refused

T = TypeVar("T")

_ENDPOINT = "GET /v1/calls"


class LineWalk(Source):
    """The lines walk of one discovery run."""

    def walk(self) -> None:
        run = self.run
        lines = self._lines()
        with run.engine.connect() as conn:
            marks = store.watermarks(conn, workspace=run.settings.workspace)
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
                with run.engine.begin() as conn:
                    store.add_discovery_counts(conn, self.stats.run_id, phone_numbers=1)

    def _pages(self, pages: TokenPages[T], *, fatal: bool = False) -> Iterator[tuple[ApiResult[Page[T]], bool]]:
        """Every page; a listing that cannot go on ends this walk (``fatal``: the run) with an error line."""
        if self.run.stop_requested():
            raise WalkStopped
        try:
            for result, last in pages:
                yield result, last
                if self.run.stop_requested():
                    raise WalkStopped
        except NotSent:
            raise WalkStopped from None
        except PagingError as exc:
            failed = exc.result
            fields: dict[str, Any] = {} if failed is None else {"http_status": failed.http_status,
                                                                "tries": failed.tries}
            self.run.walk_error(exc.message, what=pages.what, fatal=fatal, **fields)

    def _lines(self) -> list[Line]:
        lines: dict[str, Line] = {}
        for result, _last in self._pages(self.client.line_pages(max_empty=self.options.max_empty_pages), fatal=True):
            assert result.data is not None
            for line in result.data.items:
                if isinstance(line, Malformed):
                    # Not walked this run (its watermark stays: its calls are found once it reads again);
                    # the lines refresh after the walk keeps it in rejected_records.
                    self.run.log.warning("line not walked: its model refused it", reason=line.reason,
                                         phone_number_id=str(line.raw.get("id") if isinstance(line.raw, dict)
                                                             else "")[:80])
                    continue
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

    def _walk_line(self, line: Line, start: datetime) -> None:
        run = self.run
        log = run.log.bind(phone_number_id=line.id)
        with run.engine.connect() as conn:
            conv_marks = store.conversation_marks(conn, line.id, workspace=run.settings.workspace)
        done: set[str] = set()
        failed = False
        pages = self.client.conversation_pages(line.id, start - run.overlap, max_results=self.options.page_size,
                                               max_empty=self.options.max_empty_pages)
        try:
            for result, _last in self._pages(pages):
                assert result.data is not None
                for conv in result.data.items:
                    parts = conv.participants
                    if len(parts) != 1:
                        # The calls listing takes one-to-one conversations only.
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
                    except WalkFailed:
                        failed = True  # the line's watermark must not pass this conversation
        except WalkFailed:
            failed = True
        if failed or self.options.dry_run:
            return
        with run.engine.begin() as conn:
            store.set_watermark(conn, line.id, line.number, run.walk_started, run.clock.utcnow(),
                                workspace=run.settings.workspace)
        log.info("line walked", watermark=iso_z(run.walk_started))

    def _walk_conversation(self, line: Line, conversation_id: str | None, participant: str,
                           created_after: datetime) -> None:
        run = self.run
        seen: set[str] = set()
        oldest_open: datetime | None = None
        log = run.log.bind(phone_number_id=line.id, participant=participant)
        pages = self.client.call_pages(line.id, participant, created_after - run.overlap,
                                       max_results=self.options.page_size, max_empty=self.options.max_empty_pages)
        for result, last in self._pages(pages):
            assert result.data is not None
            page = result.data
            rows: list[CallContextRows] = []
            completed: list[str] = []
            rejected: list[store.Rejected] = []
            now = run.clock.utcnow()
            for call, item in zip(page.items, page.raws, strict=False):
                if isinstance(call, Malformed):
                    rejected.append(run.reject(_ENDPOINT, item, call.reason, log))
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
                    rejected.append(run.reject(_ENDPOINT, item, str(exc), log))
                    continue
                if row.not_e164:
                    log.warning("participants that are not E.164 kept with is_e164 = false",
                                call_id=call.id, numbers=[n[:80] for n in row.not_e164])
                rows.append(row)
                if call.status == "completed":
                    completed.append(call.id)
                elif still_open(call) and call.created_at is not None:
                    created = row.parent["created_at"]
                    oldest_open = created if oldest_open is None else min(oldest_open, created)
            mark = run.walk_started if oldest_open is None else min(run.walk_started, oldest_open)
            new = self._commit_calls(rows, completed, (line.id, participant, conversation_id, mark) if last else None,
                                     rejected, log)
            self.stats.calls_seen += len(rows)
            self.stats.enqueued += new
            self.stats.pages += 1
            run.page_done("calls page", phone_number_id=line.id, participant=participant, calls=len(rows),
                          completed=len(completed), enqueued=new, last_page=last)
        self.stats.conversations += 1

    def _commit_calls(self, rows: list[CallContextRows], completed: list[str],
                      mark: tuple[str, str, str | None, datetime] | None,
                      rejected: list[store.Rejected], log: Any) -> int:
        """One calls page: calls, queue ids, counters and (on the last page) the conversation's watermark.

        Written as one; only when that fails, call by call (:func:`etl.store.each_storable`), the
        calls the database refuses set aside with its reason and the rest of the page kept.
        """
        run = self.run
        if self.options.dry_run:
            with run.engine.connect() as conn:
                queued = store.queued(conn, completed)
            self.stats.would_enqueue += len(set(completed) - queued)
            return 0
        now = run.clock.utcnow()
        try:
            return self._write_calls_page(rows, completed, mark, rejected, now, one_by_one=False, log=log)
        except store.RECORD_ERRORS:
            return self._write_calls_page(rows, completed, mark, rejected, now, one_by_one=True, log=log)

    def _write_calls_page(self, rows: list[CallContextRows], completed: list[str],
                          mark: tuple[str, str, str | None, datetime] | None, rejected: list[store.Rejected],
                          now: datetime, *, one_by_one: bool, log: Any) -> int:
        run = self.run
        workspace = run.settings.workspace
        with run.engine.begin() as conn:
            if one_by_one:
                _, refused = store.each_storable(conn, rows,
                                                 lambda c, r: store.save_calls(c, [r], now, workspace=workspace))
                bad = {r.call_id for r, _ in refused}
                rejected = rejected + [run.reject(_ENDPOINT, json.loads(r.parent["raw_json"]),
                                                  f"the database refused it: {why}", log) for r, why in refused]
                completed = [c for c in completed if c not in bad]
            else:
                store.save_calls(conn, rows, now, workspace=workspace)
            for r in rejected:
                store.record_rejected(conn, r, now, workspace=workspace)
            new = store.enqueue_ids(conn, completed, now, workspace=workspace)
            if run.settings.transcripts:
                store.enqueue_transcripts(conn, completed, now, workspace=workspace)
            assert self.stats.run_id is not None
            store.add_discovery_counts(conn, self.stats.run_id, pages=1, calls_seen=len(rows), enqueued=new,
                                       conversations=1 if mark else 0)
            if mark is not None:
                store.set_conversation_mark(conn, *mark, now, workspace=workspace)
        self.stats.rejected += len(rejected)  # counted once the page is committed
        return new
