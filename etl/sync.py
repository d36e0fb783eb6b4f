"""The sync loop: claim due items, fetch them concurrently, save in batches.

Two kinds of thread, each doing one thing:

* the calling thread is the run's coordinator and its only database writer:
  it claims a small backlog of leased items, saves finished items in batches
  (``write_batch`` per transaction), enforces ``--max-runtime`` and ends the run;
* ``concurrency`` fetch threads each take an item, wait for a slot of the
  key's :class:`~etl.ratelimit.RateBudget`, fetch it (retries included),
  decide its queue update and normalise its rows, and hand the result back.
  An item with no ``calls`` row (the claim says so: ``needs_call``) first
  gets ``GET /v1/calls/{id}`` on the same budget when the surface charges a
  request for it (v1 with ``fetch_calls`` on); on the dated surface the call
  comes with the summary's own answer.  Either way its rows (or its 404) are
  saved in the summary's transaction, and it never blocks the summary.

One :class:`threading.Event` is the stop signal: set by a signal handler,
``--max-runtime``, ``--limit``, a 401/403, or a fatal error.  Threads, not
coroutines, fetch because httpx's synchronous path costs about half the CPU
per request of its asynchronous one (bench/README.md).  A finished item's
summary, child rows and queue update are written in one transaction, so an
item is never ``done`` without its rows.

Stopping (SIGTERM/SIGINT, ``--max-runtime``, ``--limit``, nothing due) always
takes the same path: stop claiming, let in-flight fetches finish, save them,
release every leased item not fetched, and finish the ``sync_runs`` row.  A
second SIGINT/SIGTERM (:meth:`Syncer.abort`) stops waiting for in-flight
requests: what already finished is saved, everything else is released.  An
:class:`~etl.errors.AuthError` stops the run at once: requests already on the
wire land, nothing new is sent, and every unsaved item is released unchanged.
"""

from __future__ import annotations

import contextvars
import dataclasses
import json
import os
import queue
import random
import socket
import threading
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import httpx
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import DBAPIError

from etl import store
from etl.api import OpenPhoneClient
from etl.budget import budget_for
from etl.clock import Clock
from etl.config import Settings
from etl.errors import AuthError, DatabaseError
from etl.health import NOTHING_FETCHED, UNREACHABLE, is_answer, nothing_fetched
from etl.logs import batched, call_log_level, get_logger
from etl.normalize import CallContextRows, call_json, normalize, normalize_call, normalize_transcript
from etl.policy import CallLookupState, ClaimedItem, call_not_found, decide, decide_transcript, unexpected
from etl.ratelimit import NotSent, RateBudget
from etl.results import Call, SummaryResult
from etl.runs import SYNC_RECORD, Lifecycle, RunOutcome, StopReason
from etl.states import RUN_COUNTER, TRANSCRIPT_COUNTERS, TRANSCRIPT_RUN_COUNTER, run_counts
from etl.storable import Refused
from etl.store import Entry, TranscriptEntry

__all__ = ["RunOptions", "RunStats", "StopReason", "Syncer"]

T = TypeVar("T")

# Do not start a fetch on an item whose lease ends sooner than this.
_LEASE_SAFETY_S = 15.0
_FLUSH_INTERVAL_S = 0.25


@dataclass(kw_only=True)
class RunOptions:
    command: str = "sync"
    limit: int | None = None
    max_runtime: float | None = None


@dataclass
class RunStats(RunOutcome):
    """A run's counters; each item it processed counts once, under the queue state it ended in.

    ``completed`` ended ``done``, ``rescheduled`` is ``pending`` again, ``errors``
    ended ``error``; ``failed``, ``absent``, ``not_found`` and ``invalid`` count
    the states of those names (``sync_runs`` has the same columns).  They count
    summary items; a transcript item counts under ``transcripts_<name>``
    (``transcripts_forbidden``: the plan has none), never as a summary.
    """

    run_id: int = 0
    claimed: int = 0
    completed: int = 0
    rescheduled: int = 0
    failed: int = 0
    absent: int = 0
    not_found: int = 0
    invalid: int = 0
    fetched: int = 0  # items the API answered (etl.health.is_answer); 0 of many = an outage
    transcripts_claimed: int = 0
    transcripts_completed: int = 0
    transcripts_rescheduled: int = 0
    transcripts_failed: int = 0
    transcripts_forbidden: int = 0
    transcripts_absent: int = 0
    transcripts_not_found: int = 0
    transcripts_invalid: int = 0
    transcripts_errors: int = 0
    transcripts_fetched: int = 0
    transcripts_queued: int = 0  # transcript items this run queued (a backfill's progress counts them)
    released: int = 0
    lost_leases: int = 0
    rejected: int = 0  # records kept in rejected_records instead of stored (issue 25); the exit code says so
    fatal: BaseException | None = None

    @property
    def processed(self) -> int:
        """Items of both queues that ended this run in some state."""
        return self.summaries_processed + sum(int(getattr(self, name)) for name in TRANSCRIPT_RUN_COUNTER.values())

    @property
    def summaries_processed(self) -> int:
        return sum(int(getattr(self, name)) for name in RUN_COUNTER.values())

    @property
    def item_errors(self) -> int:
        # A record set aside (rejected_records) counts too: the run exits 1, an operator should look.
        return self.errors + self.transcripts_errors + self.rejected

    def summary(self) -> str:
        """The counters in one line, as `etl backfill` and `etl demo` print them (etl.states.run_counts)."""
        return run_counts(self.as_dict())

    def as_dict(self) -> dict[str, Any]:
        return {
            "run_id": self.run_id, "claimed": self.claimed, "completed": self.completed,
            "rescheduled": self.rescheduled, "failed": self.failed, "absent": self.absent,
            "not_found": self.not_found, "invalid": self.invalid, "errors": self.errors, "fetched": self.fetched,
            **{name: getattr(self, name) for name in TRANSCRIPT_COUNTERS},
            "released": self.released, "rejected": self.rejected, **super().as_dict(),
        }


@dataclass(frozen=True, slots=True, kw_only=True)
class _CallOutcome:
    """What ``GET /v1/calls/{id}`` gave one item in this attempt (nothing when it was not asked)."""

    rows: CallContextRows | None = None
    not_found: tuple[CallLookupState, str] | None = None
    seconds: float = 0.0
    rejected: store.Rejected | None = None  # the call could not be stored (etl.storable.Refused)


# What a fetch thread hands back for an item: its entry, None (never sent:
# release it unchanged), or the exception that ends the run (a 401/403).
_Outcome = tuple[ClaimedItem, Entry | TranscriptEntry | BaseException | None]
# A saved item of either queue.
_Saved = Entry | TranscriptEntry

_PLAN_HAS_NO_TRANSCRIPTS = ("the API refused transcripts (HTTP 403): this workspace's plan has no call transcripts "
                            "(Business and Scale plans only); no more transcripts are asked for in this run, "
                            "summaries go on. Turn transcripts off (ETL_TRANSCRIPTS=0, --no-transcripts) unless "
                            "the plan changes")


def _key(item: ClaimedItem) -> tuple[str, str]:
    """A leased item's key: the same call id can be leased from both queues at once."""
    return item.queue, item.call_id


class Syncer:
    """Runs one sync; construct per run.  ``transport`` replaces the network (tests, demo);
    ``budget`` is the key's rate budget (default: :func:`etl.budget.budget_for`);
    ``claim_ahead_s`` how many seconds of work at the rate one claim takes (``etl serve``
    claims less, so a summary event is not queued behind much already-claimed work)."""

    def __init__(self, engine: Engine, settings: Settings, *,
                 transport: httpx.BaseTransport | None = None,
                 on_progress: Callable[[RunStats], None] | None = None,
                 budget: RateBudget | None = None, claim_ahead_s: float = 10.0, clock: Clock) -> None:
        self.engine = engine
        self.clock = clock
        self.claim_ahead_s = claim_ahead_s
        self.settings = settings
        self.transport = transport
        self.on_progress = on_progress
        self.stats = RunStats(clock=clock)
        self.workspace = settings.workspace  # claims, rows and the run record: this workspace's only
        self.lifecycle = Lifecycle(self.stats, engine, SYNC_RECORD, clock, get_logger(), workspace=self.workspace)
        self.owner = f"{socket.gethostname()[:30]}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self._own_budget = budget is None
        self.budget = budget if budget is not None else budget_for(settings, engine, clock)
        self.stop = self.lifecycle.stop  # the one stop signal
        self._abandon = False  # second signal: stop waiting for in-flight requests
        self._claimed: dict[tuple[str, str], ClaimedItem] = {}  # leased and not yet saved or released
        self._work: queue.SimpleQueue[tuple[ClaimedItem, float] | None] = queue.SimpleQueue()
        self._done: queue.SimpleQueue[_Outcome] = queue.SimpleQueue()
        self._outstanding = 0  # items handed to fetch threads and not yet handed back
        # Fetch threads wake the coordinator only when it has something to do
        # (claim, save a full batch, end the run); otherwise it wakes every
        # _FLUSH_INTERVAL_S.  Waking it per item cost CPU at 1,000+ items/s.
        self._wake = threading.Event()
        self._low_water = max(settings.concurrency * 2, self._claim_batch() // 2)
        # Set by the first transcript 403 (the plan has none): no more transcripts this run.
        self._no_transcripts = threading.Event()
        self._no_transcripts_lock = threading.Lock()
        self._new_transcripts = False  # transcript items queued since the last claim (coordinator only)

    # -- public (any thread, signal handlers included) ---------------------------------

    @property
    def log(self) -> Any:
        return self.lifecycle.log

    def request_stop(self, reason: StopReason, text: str) -> None:
        """Stop claiming and finish in-flight work (:meth:`etl.runs.Lifecycle.request_stop`)."""
        self.lifecycle.request_stop(reason, text)

    def abort(self) -> None:
        """Second Ctrl-C: abandon in-flight requests too (their items are released)."""
        self._abandon = True
        self.request_stop(StopReason.ABORTED, "aborted")

    # -- the run -------------------------------------------------------------------------

    def run(self, options: RunOptions) -> RunStats:
        """The run: from its ``sync_runs`` record to its ``run finished`` line (:class:`etl.runs.Lifecycle`)."""
        stats = self.stats
        deadline = None if not options.max_runtime else self.clock.monotonic() + options.max_runtime
        stats.run_id = self.lifecycle.start(options.command, self.clock.utcnow(), command=options.command,
                                      limit=options.limit, max_runtime=options.max_runtime, rate=self.settings.rate,
                                      concurrency=self.settings.concurrency, base_url=self.settings.base_url) or 0
        client = OpenPhoneClient(self.settings, transport=self.transport, budget=self.budget, stop=self.stop,
                                 clock=self.clock)
        # Each fetch thread in a copy of this thread's context: its log lines carry what the caller bound
        # (structlog contextvars: a run of several workspaces binds workspace=NAME, etl.fleet).
        threads = [threading.Thread(target=contextvars.copy_context().run, args=(self._worker, client, deadline),
                                    name=f"etl-fetch-{n}", daemon=True) for n in range(self.settings.concurrency)]
        for thread in threads:
            thread.start()
        buffer: list[_Saved] = []
        db_ok = True
        try:
            self._coordinate(options.limit, deadline, buffer)
        except AuthError as exc:
            self._fail(StopReason.AUTH_REFUSED, f"the API refused the key (HTTP {exc.http_status}): {exc}", exc)
            self._drain(buffer)  # let requests already on the wire land
        except DatabaseError as exc:
            db_ok = False
            self._fail(StopReason.DATABASE_LOST, str(exc), exc)
        except Exception as exc:  # a bug or an unforeseen database error: stop cleanly, explain
            self.log.exception("run failed")
            self._fail(StopReason.UNEXPECTED, f"unexpected error: {_short(exc)}", exc)
        finally:
            self.stop.set()
            for _ in threads:
                self._work.put(None)
            if self._own_budget:
                self.budget.close()
        try:
            saved = db_ok and self._finish(buffer)
        finally:
            client.close()
        if nothing_fetched(stats.as_dict()):
            self.log.warning(NOTHING_FETCHED, processed=stats.processed, base_url=self.settings.base_url)
        self._classify_unreachable()
        self.lifecycle.finish({"lost_leases": stats.lost_leases}, record=saved)
        return stats

    def _coordinate(self, limit: int | None, deadline: float | None, buffer: list[_Saved]) -> None:
        """Claim, collect and save until the queue is dry or the run stops."""
        exhausted = False
        last_flush = self.clock.monotonic()
        while True:
            now = self.clock.monotonic()
            if deadline is not None and now >= deadline:
                self.request_stop(StopReason.MAX_RUNTIME, "max runtime reached")
            if not (exhausted or self.stop.is_set()) and self._wants_claim(len(buffer)):
                exhausted = self._claim(limit)
            if exhausted and self._outstanding == 0 and self.settings.transcripts and not self.stop.is_set():
                # Summaries saved last may have queued transcripts: save them, then claim once more.
                self._collect(buffer)
                self._flush(buffer)
                if self._new_transcripts:
                    self._new_transcripts = False
                    exhausted = False
                    continue
            if self._abandon or ((exhausted or self.stop.is_set()) and self._outstanding == 0):
                return
            wait = _FLUSH_INTERVAL_S if deadline is None else max(0.0, min(_FLUSH_INTERVAL_S, deadline - now))
            self.clock.idle(wait, self._wake)
            self._wake.clear()
            self._collect(buffer)
            due = buffer and self.clock.monotonic() - last_flush >= _FLUSH_INTERVAL_S
            if len(buffer) >= self.settings.write_batch or due:
                self._flush(buffer)
                last_flush = self.clock.monotonic()

    def _drain(self, buffer: list[_Saved]) -> None:
        """After a 401/403: collect what is on the wire (bounded by the timeouts), send nothing new."""
        limit = self.clock.monotonic() + self.settings.read_timeout + self.settings.connect_timeout + 5
        while self._outstanding > 0 and not self._abandon and self.clock.monotonic() < limit:
            self.clock.idle(_FLUSH_INTERVAL_S, self._wake)
            self._wake.clear()
            try:
                self._collect(buffer)
            except AuthError:
                continue  # another request refused: same reason, item released

    def _fail(self, reason: StopReason, text: str, exc: BaseException) -> None:
        self.stats.fatal = exc
        self.lifecycle.fail(reason, text)

    def _finish(self, buffer: list[_Saved]) -> bool:
        """Save what is left and release what was not fetched; False: the database is lost (no record)."""
        stats = self.stats
        try:
            self._flush(buffer)
            leftovers = list(self._claimed.values())
            if leftovers:
                stats.released += self._tx(store.release, self.owner, leftovers)
                self._claimed.clear()
        except (DatabaseError, DBAPIError) as exc:
            if stats.stop is None or stats.stop.exit_code == 0:
                stats.stop, stats.stop_reason = StopReason.DATABASE_LOST, str(exc)
            stats.fatal = stats.fatal or exc
            return False
        return True

    def _classify_unreachable(self) -> None:
        """Work was there and the API never answered: not a successful run (exit 4), unless items
        errored (exit 1 says that first) or the run stopped for a reason of its own."""
        stats = self.stats
        clean = stats.stop is None or stats.stop.exit_code == 0
        if clean and not stats.item_errors and nothing_fetched(stats.as_dict()):
            if stats.stop is None:
                stats.stop_reason = UNREACHABLE
            stats.stop = StopReason.UNREACHABLE

    # -- claiming ----------------------------------------------------------------------

    def _claim_batch(self) -> int:
        s = self.settings
        per_claim = int(s.rate * self.claim_ahead_s) if s.rate > 0 else 1000
        return max(s.concurrency * 2, min(per_claim, 1000))

    def _wants_claim(self, buffered: int) -> bool:
        # Keep a backlog for the fetch threads, but not while unsaved results
        # pile up (a slow database bounds memory).
        return self._outstanding <= self._low_water and buffered <= 4 * self.settings.write_batch

    def _claim(self, limit: int | None) -> bool:
        """Claim one batch; True when nothing more is to be claimed."""
        remaining = None if limit is None else limit - self.stats.claimed - self.stats.transcripts_claimed
        if remaining is not None and remaining <= 0:
            # Claimed all it may: the claimed items are still fetched (no stop signal).
            if self.stats.stop is None:
                self.stats.stop, self.stats.stop_reason = StopReason.LIMIT, "limit reached"
            return True
        n = self._claim_batch() if remaining is None else min(self._claim_batch(), remaining)
        items = self._tx(self._claim_and_count, n)
        transcripts = sum(1 for item in items if item.queue == "transcript")
        self.stats.claimed += len(items) - transcripts
        self.stats.transcripts_claimed += transcripts
        claimed_at = self.clock.monotonic()
        for item in items:
            self._claimed[_key(item)] = item
            self._outstanding += 1
            self._work.put((item, claimed_at))
        return not items

    def _claim_and_count(self, conn: Connection, n: int) -> list[ClaimedItem]:
        now = self.clock.utcnow()
        items = store.claim(conn, self.owner, n, now, self.settings.lease_seconds, workspace=self.workspace)
        if len(items) < n and self.settings.transcripts and not self._no_transcripts.is_set():
            # Transcripts after summaries, from the same claim budget (issue 19).
            items += store.claim(conn, self.owner, n - len(items), now, self.settings.lease_seconds, "transcript",
                                 workspace=self.workspace)
        transcripts = sum(1 for item in items if item.queue == "transcript")
        store.add_run_counts(conn, self.stats.run_id, claimed=len(items) - transcripts,
                             transcripts_claimed=transcripts)
        return items

    def _collect(self, buffer: list[_Saved]) -> None:
        """Take what the fetch threads handed back so far."""
        try:
            outcome = self._done.get_nowait()
        except queue.Empty:
            return
        fatal: BaseException | None = None
        while True:
            self._outstanding -= 1
            _item, result = outcome
            if isinstance(result, Entry | TranscriptEntry):
                buffer.append(result)
            elif isinstance(result, BaseException):
                fatal = fatal or result
            # None: never sent; stays in self._claimed and is released at the end.
            try:
                outcome = self._done.get_nowait()
            except queue.Empty:
                break
        if fatal is not None:
            raise fatal

    # -- fetching (fetch threads) ------------------------------------------------------

    def _worker(self, client: OpenPhoneClient, deadline: float | None) -> None:
        """One fetch thread: take an item, fetch it, decide, normalise, hand it back."""
        rng = random.Random()
        while (job := self._work.get()) is not None:
            item, claimed_at = job
            if self.stop.is_set():
                self._done.put((item, None))
                self._wake.set()
                continue
            try:
                outcome: Entry | TranscriptEntry | BaseException | None = (
                    self._fetch_transcript(client, item, claimed_at, deadline, rng) if item.queue == "transcript"
                    else self._fetch_one(client, item, claimed_at, deadline, rng))
            except AuthError as exc:
                self.stop.set()  # nothing new is sent from now on
                outcome = exc
            self._done.put((item, outcome))
            if not self._wake.is_set() and (not isinstance(outcome, Entry | TranscriptEntry)
                                            or self._work.qsize() <= self._low_water
                                            or self._done.qsize() >= self.settings.write_batch):
                self._wake.set()

    def _fetch_one(self, client: OpenPhoneClient, item: ClaimedItem, claimed_at: float,
                   deadline: float | None, rng: random.Random) -> Entry | None:
        lease_left = (claimed_at + self.settings.lease_seconds
                      - self.clock.monotonic() - _LEASE_SAFETY_S - self.settings.read_timeout)
        if lease_left <= 0:
            return None  # too late to fetch safely: released at the end, due again at once
        max_wait = lease_left if deadline is None else min(
            lease_left, max(0.0, deadline - self.clock.monotonic()) + self.settings.read_timeout)
        call = _CallOutcome()
        try:
            if item.needs_call and client.fetches_call_separately:
                # The call first: its completion time is what a summary 404's window runs from.
                item, call = self._fetch_call(client, item, max_wait)
                max_wait = max(0.0, max_wait - call.seconds)
            result = client.fetch_summary(item.call_id, max_wait=max_wait)
            answer = result.data
            if answer is not None and answer.call is not None and answer.call_json is not None:
                # The dated surface: the call came with its summary, at no extra request.
                item, call = self._call_rows(item, answer.call, answer.call_json, 0.0)
        except NotSent:
            return None  # the summary was never sent: released unchanged at the end (the call is fetched again)
        except AuthError:
            raise  # ends the run (the fetch thread hands it back)
        except DatabaseError as exc:
            # The rate budget's database is gone, so no slot and nothing sent: the run stops as
            # having lost its database, and the item is released unchanged (not an item error).
            self.request_stop(StopReason.DATABASE_LOST, str(exc))
            return None
        except Exception as exc:  # a bug must cost one item, not the run
            self.log.exception("unexpected error fetching", call_id=item.call_id)
            return Entry(item=item, result=None, rows=None, call=call.rows, call_not_found=call.not_found,
                         update=unexpected(item, self.clock.utcnow(), f"unexpected error: {exc!r}"))
        return self._record(item, result, rng, call)

    def _fetch_call(self, client: OpenPhoneClient, item: ClaimedItem,
                    max_wait: float) -> tuple[ClaimedItem, _CallOutcome]:
        """``GET /v1/calls/{id}`` for an item with no call row; never blocks the summary.

        200: the call's rows, and the item's not-found window now runs from the
        call's completion.  404: retried on later attempts within the window,
        then given up (``call_lookups``).  Anything else: logged, retried on the
        next attempt.  Raises NotSent / AuthError like the summary fetch.
        """
        started = self.clock.monotonic()
        answer = client.get_call(item.call_id, max_wait=max_wait)
        now = self.clock.utcnow()
        seconds = self.clock.monotonic() - started
        if answer.kind == "ok" and answer.data is not None:
            return self._call_rows(item, answer.data, call_json(answer.raw), seconds)
        if answer.kind == "not_found":
            state = call_not_found(item.enqueued_at, item.call_first_not_found_at, now, self.settings.backoff)
            error = answer.error or "HTTP 404"
            log = self.log.info if state == "retrying" else self.log.warning
            log("call not found", call_id=item.call_id, http_status=404, lookup=state, error=error)
            return item, _CallOutcome(not_found=(state, error), seconds=seconds)
        self.log.warning("call context not fetched; retried on the next attempt", call_id=item.call_id,
                         outcome=answer.kind, http_status=answer.http_status, tries=answer.tries,
                         error=answer.error)
        return item, _CallOutcome(seconds=seconds)

    def _call_rows(self, item: ClaimedItem, data: Call, raw_json: str,
                   seconds: float) -> tuple[ClaimedItem, _CallOutcome]:
        """A call's rows; the item's not-found window now runs from the call's completion."""
        try:
            rows = normalize_call(data, raw_json, self.clock.utcnow())
        except Refused as exc:  # a date no database holds: the call is kept aside, the summary goes on
            self.log.error("record rejected", call_id=item.call_id, record="call", reason=str(exc))
            return item, _CallOutcome(seconds=seconds, rejected=store.Rejected(
                "sync", "GET /calls/{id}", item.call_id, str(exc), json.loads(raw_json)))
        except Exception:  # a bug must cost the call context, not the summary
            self.log.exception("unexpected error normalising the call", call_id=item.call_id)
            return item, _CallOutcome(seconds=seconds)
        if rows.not_e164:
            self.log.info("call participants not E.164, stored with is_e164 false",
                          call_id=item.call_id, participants=rows.not_e164)
        completed = rows.parent["completed_at"]
        if completed is not None:
            item = dataclasses.replace(item, call_completed_at=completed)
        return item, _CallOutcome(rows=rows, seconds=seconds)

    def _record(self, item: ClaimedItem, result: SummaryResult, rng: random.Random, call: _CallOutcome) -> Entry:
        now = self.clock.utcnow()
        try:
            update = decide(item, result, now, self.settings.backoff, rng)
            rows = None
            answer = result.data
            if answer is not None and update.state in ("done", "failed"):
                rows = normalize(answer.summary, answer.raw_json, answer.content_hash, now)
        except Exception as exc:
            self.log.exception("unexpected error normalising", call_id=item.call_id)
            return Entry(item=item, result=result, rows=None, call=call.rows, call_not_found=call.not_found,
                         update=unexpected(item, now, f"unexpected error: {exc!r}"))
        return Entry(item=item, result=result, update=update, rows=rows, call=call.rows,
                     call_not_found=call.not_found, rejected=call.rejected)

    # -- transcripts (fetch threads; issue 19) ---------------------------------------------

    def _fetch_transcript(self, client: OpenPhoneClient, item: ClaimedItem, claimed_at: float,
                          deadline: float | None, rng: random.Random) -> TranscriptEntry | None:
        """Fetch, decide and normalise one transcript item; None: never sent (released unchanged).

        A 403 is the plan's answer (no transcripts): this item ends
        ``forbidden``, one warning says so, and the run asks for no more
        transcripts (items not yet sent are released unchanged); summaries go on.
        """
        if self._no_transcripts.is_set():
            return None
        lease_left = (claimed_at + self.settings.lease_seconds
                      - self.clock.monotonic() - _LEASE_SAFETY_S - self.settings.read_timeout)
        if lease_left <= 0:
            return None
        max_wait = lease_left if deadline is None else min(
            lease_left, max(0.0, deadline - self.clock.monotonic()) + self.settings.read_timeout)
        try:
            result = client.fetch_transcript(item.call_id, max_wait=max_wait)
        except NotSent:
            return None
        now = self.clock.utcnow()
        if result.http_status == 403:
            with self._no_transcripts_lock:
                first = not self._no_transcripts.is_set()
                self._no_transcripts.set()
            if first:
                self.log.warning(_PLAN_HAS_NO_TRANSCRIPTS, call_id=item.call_id, error=result.error)
        try:
            update = decide_transcript(item, result, now, self.settings.backoff, rng)
            rows = None
            if result.data is not None and update.state in ("done", "failed"):
                rows = normalize_transcript(result.data, item.call_created_at, now)
        except Exception as exc:  # a bug must cost one item, not the run
            self.log.exception("unexpected error normalising a transcript", call_id=item.call_id)
            return TranscriptEntry(item, result, unexpected(item, now, f"unexpected error: {exc!r}"), None)
        return TranscriptEntry(item, result, update, rows)

    # -- saving (coordinator thread) -----------------------------------------------------

    def _flush(self, buffer: list[_Saved]) -> None:
        size = self.settings.write_batch
        while buffer:
            batch = buffer[:size]
            written = self._save_batch(batch)
            del buffer[:size]
            self._account(batch, written)

    def _account(self, batch: list[_Saved], written: list[_Saved]) -> None:
        stats = self.stats
        done_ids = {_key(e.item) for e in written}
        with batched():
            self._log_batch(batch, done_ids)
        for key, n in _count_outcomes(written).items():
            setattr(stats, key, getattr(stats, key) + n)
        stats.rejected += sum(1 for e in written if isinstance(e, Entry) and e.rejected is not None)
        if self.on_progress is not None:
            self.on_progress(stats)

    def _log_batch(self, batch: list[_Saved], done_ids: set[tuple[str, str]]) -> None:
        stats = self.stats
        for entry in batch:
            self._claimed.pop(_key(entry.item), None)
            u, r = entry.update, entry.result
            if _key(entry.item) not in done_ids:
                stats.lost_leases += 1
                self.log.warning("lease lost; result discarded", call_id=u.call_id, queue=entry.item.queue)
                continue
            if isinstance(entry, TranscriptEntry):
                self._log_transcript(entry)
                continue
            getattr(self.log, call_log_level(r.kind if r else None, u.state))(
                "call", call_id=u.call_id, outcome=u.state, http_status=r.http_status if r else None,
                api_status=u.last_api_status, attempt=u.attempts, tries=r.tries if r else 0,
                latency_ms=r.latency_ms if r else None,
                wait_ms=r.wait_ms if r else None,
                **({"error": u.last_error} if u.last_error else {}),
            )

    def _log_transcript(self, entry: TranscriptEntry) -> None:
        u, r = entry.update, entry.result
        kind = None if r is None else ("transcript" if r.kind == "ok" else r.kind)
        level = call_log_level(kind, "error" if u.state == "forbidden" else u.state)
        getattr(self.log, "warning" if u.state == "forbidden" else level)(
            "transcript", call_id=u.call_id, outcome=u.state, http_status=r.http_status if r else None,
            api_status=u.last_api_status, attempt=u.attempts, tries=r.tries if r else 0,
            latency_ms=r.latency_ms if r else None,
            wait_ms=r.wait_ms if r else None, lines=len(entry.rows.lines) if entry.rows else None,
            **({"error": u.last_error} if u.last_error else {}),
        )

    def _save_batch(self, batch: list[_Saved]) -> list[_Saved]:
        """Save ``batch`` as one write; only when that fails, isolate the entry it cannot store (halving
        until it is alone), which ends ``error`` and is kept in ``rejected_records`` with the reason."""
        try:
            return self._tx(self._save_and_count, batch)
        except DatabaseError:
            raise
        except (DBAPIError, ValueError, ArithmeticError) as exc:
            # ValueError: a driver refusing a value before the database sees it (UnicodeEncodeError).
            if len(batch) == 1:
                entry = batch[0]
                what = "transcript" if isinstance(entry, TranscriptEntry) else "summary"
                message = f"database rejected this {what}: {_short(exc)}"
                self.log.error("database rejected item", call_id=entry.item.call_id, error=message)
                update = unexpected(entry.item, self.clock.utcnow(), message)
                rejected = store.Rejected("sync", f"GET {what}", entry.item.call_id, message, _payload(entry))
                failed: _Saved = (TranscriptEntry(entry.item, entry.result, update, None)
                                  if isinstance(entry, TranscriptEntry)
                                  else Entry(item=entry.item, result=entry.result, rows=None, update=update,
                                             rejected=rejected))
                if isinstance(failed, TranscriptEntry):
                    return self._tx(self._save_rejected_transcript, failed, rejected)
                return self._tx(self._save_and_count, [failed])
            half = len(batch) // 2
            return self._save_batch(batch[:half]) + self._save_batch(batch[half:])

    def _save_rejected_transcript(self, conn: Connection, entry: TranscriptEntry,
                                  rejected: store.Rejected) -> list[_Saved]:
        store.record_rejected(conn, rejected, self.clock.utcnow(), workspace=self.workspace)
        self.stats.rejected += 1
        return self._save_and_count(conn, [entry])

    def _save_and_count(self, conn: Connection, batch: list[_Saved]) -> list[_Saved]:
        now = self.clock.utcnow()
        summaries = [e for e in batch if isinstance(e, Entry)]
        written: list[_Saved] = []
        saved = store.save_entries(conn, self.owner, summaries, now, workspace=self.workspace)
        written += saved
        if self.settings.transcripts:
            # Every call the API answered a summary for gets its transcript, in this transaction.
            answered = [e.item.call_id for e in saved if is_answer(e.result) and e.update.state != "invalid"]
            queued = store.enqueue_transcripts(conn, answered, now, workspace=self.workspace)
            if queued:
                self._new_transcripts = True
                self.stats.transcripts_queued += queued
        transcripts = [e for e in batch if isinstance(e, TranscriptEntry)]
        written += store.save_transcript_entries(conn, self.owner, transcripts, now, workspace=self.workspace)
        store.add_run_counts(conn, self.stats.run_id, **_count_outcomes(written))
        return written

    # -- database plumbing ---------------------------------------------------------------

    def _tx(self, fn: Callable[..., T], *args: Any) -> T:
        """Run ``fn(conn, *args)`` in a transaction; retry deadlocks; a lost database is fatal."""
        return store.transaction(self.engine, fn, *args, clock=self.clock)


def _count_outcomes(entries: list[_Saved]) -> dict[str, int]:
    """The run counters of saved entries: each queue's items under its own names (etl.states)."""
    counts = dict.fromkeys([*RUN_COUNTER.values(), "fetched", *TRANSCRIPT_RUN_COUNTER.values(),
                            "transcripts_fetched"], 0)
    for entry in entries:
        if isinstance(entry, TranscriptEntry):
            counts[TRANSCRIPT_RUN_COUNTER[entry.update.state]] += 1
            counts["transcripts_fetched"] += _answered(entry)
        else:
            counts[RUN_COUNTER[entry.update.state]] += 1  # type: ignore[index]  # a summary's state
            counts["fetched"] += _answered(entry)
    return counts


def _answered(entry: _Saved) -> bool:
    if isinstance(entry, TranscriptEntry):
        return entry.result is not None and entry.result.kind != "transient"
    return is_answer(entry.result)


def _payload(entry: _Saved) -> dict[str, Any]:
    """What an entry brought from the API, for ``rejected_records`` (made storable there)."""
    if isinstance(entry, TranscriptEntry):
        return {"transcript": None if entry.rows is None else repr(entry.rows)[:100_000]}
    answer = entry.result.data if entry.result is not None else None
    return {"summary": getattr(answer, "raw_json", None),
            "call": None if entry.call is None else entry.call.parent.get("raw_json")}


def _short(exc: BaseException) -> str:
    orig = getattr(exc, "orig", None) or exc
    return " ".join(str(orig).split())[:300]
