"""The sync loop: claim due items, fetch them concurrently, save in batches.

Three kinds of thread, each doing one thing:

* the event loop (this module's coroutines) orchestrates: a claimer keeps a
  small backlog of leased items, a flusher saves finished items in batches,
  a watchdog enforces ``--max-runtime``, and signal handlers request a stop;
* ``concurrency`` fetch threads each take an item, fetch it through the one
  shared client and connection pool (retries included), decide its queue
  update and normalise its rows;
* one database thread runs every transaction, so a slow commit never stalls
  the requests in flight and SQLAlchemy connections stay on one thread.

Threads, not coroutines, fetch because httpx's synchronous path costs about
half the CPU per request of its asynchronous one (bench/README.md).  A
finished item's summary, child rows and queue update are written in one
transaction, so an item is never ``done`` without its rows.

Stopping (SIGTERM/SIGINT, ``--max-runtime``, ``--limit``, nothing due) always
takes the same path: stop claiming, let in-flight fetches finish, save them,
release every leased item not fetched, and finish the ``sync_runs`` row.  An
:class:`~etl.errors.AuthError` stops the run at once: requests already on the
wire land, nothing new is sent, and every unsaved item is released unchanged.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import queue
import random
import socket
import threading
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, TypeVar

import httpx
from sqlalchemy.engine import Engine
from sqlalchemy.exc import DBAPIError, OperationalError

from etl import store
from etl.api import FetchResult, NotSent, OpenPhoneClient
from etl.clock import utcnow
from etl.config import Settings
from etl.db import describe_db_error
from etl.errors import AuthError, DatabaseError
from etl.health import NOTHING_FETCHED, is_answer, nothing_fetched
from etl.logs import batched, call_log_level, get_logger
from etl.normalize import normalize
from etl.policy import ClaimedItem, decide, unexpected
from etl.store import Entry

T = TypeVar("T")

# Do not start a fetch on an item whose lease ends sooner than this.
_LEASE_SAFETY_S = 15.0
_FLUSH_INTERVAL_S = 0.25
_DEADLOCK_RETRIES = 3


@dataclass
class RunOptions:
    command: str = "sync"
    limit: int | None = None
    max_runtime: float | None = None


@dataclass
class RunStats:
    run_id: int = 0
    claimed: int = 0
    completed: int = 0
    rescheduled: int = 0
    failed: int = 0
    errors: int = 0
    fetched: int = 0  # items the API answered (etl.health.is_answer); 0 of many = an outage
    released: int = 0
    lost_leases: int = 0
    stop_reason: str | None = None
    exit_code: int = 0
    started: float = field(default_factory=time.monotonic)
    fatal: BaseException | None = None

    @property
    def processed(self) -> int:
        return self.completed + self.rescheduled + self.failed + self.errors

    def as_dict(self) -> dict[str, Any]:
        return {
            "run_id": self.run_id, "claimed": self.claimed, "completed": self.completed,
            "rescheduled": self.rescheduled, "failed": self.failed, "errors": self.errors, "fetched": self.fetched,
            "released": self.released, "exit_code": self.exit_code, "stop_reason": self.stop_reason,
            "duration_s": round(time.monotonic() - self.started, 3),
        }


class Syncer:
    """Runs one sync; construct per run.  ``transport`` replaces the network (tests, demo)."""

    def __init__(self, engine: Engine, settings: Settings, *,
                 transport: httpx.BaseTransport | None = None,
                 on_progress: Callable[[RunStats], None] | None = None) -> None:
        self.engine = engine
        self.settings = settings
        self.transport = transport
        self.on_progress = on_progress
        self.stats = RunStats()
        self.log = get_logger()
        self.owner = f"{socket.gethostname()[:30]}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self._db = ThreadPoolExecutor(max_workers=1, thread_name_prefix="etl-db")
        self._stop = asyncio.Event()
        self._abort = False
        self._claimed: dict[str, ClaimedItem] = {}  # leased and not yet saved or released
        self._buffer: list[Entry] = []  # appended by worker threads, swapped out by the flusher
        self._buffer_lock = threading.Lock()
        self._stop_flag = threading.Event()  # the worker threads' view of _stop
        self._claim_requested = False
        self._running_workers = 0
        self._workers_done: asyncio.Future[None] | None = None
        self._threads: list[threading.Thread] = []
        self._loop: asyncio.AbstractEventLoop | None = None  # the run's loop, set in _run
        self._flush_wanted = asyncio.Event()
        self._claim_wanted = asyncio.Event()
        self._work: queue.SimpleQueue[tuple[ClaimedItem, float] | None] = queue.SimpleQueue()
        self._deadline: float | None = None
        self._save_lock = asyncio.Lock()
        self._closing = False
        self._client: OpenPhoneClient | None = None

    # -- public -------------------------------------------------------------------

    def request_stop(self, reason: str) -> None:
        """Stop claiming and finish in-flight work (signals, max runtime)."""
        if not self._stop.is_set():
            self.stats.stop_reason = self.stats.stop_reason or reason
            self.log.warning("stopping", reason=reason)
            self._stop.set()
            self._stop_flag.set()
            self._claim_wanted.set()
            if self._client is not None:
                # Requests still waiting for a rate slot are not in flight: drop them.
                self._client.limiter.close()

    def abort(self) -> None:
        """Second Ctrl-C: abandon in-flight requests too (their items are released)."""
        self._abort = True
        self.request_stop("aborted")
        if self._workers_done is not None and not self._workers_done.done():
            self._workers_done.set_result(None)

    async def run(self, options: RunOptions) -> RunStats:
        try:
            return await self._run(options)
        finally:
            self._db.shutdown(wait=True)

    # -- the run ------------------------------------------------------------------

    async def _run(self, options: RunOptions) -> RunStats:
        stats = self.stats
        if options.max_runtime:
            self._deadline = time.monotonic() + options.max_runtime
        stats.run_id = await self._in_db(self._tx, store.start_run, options.command, utcnow())
        self.log = self.log.bind(run_id=stats.run_id)
        self.log.info("run started", command=options.command, limit=options.limit,
                      max_runtime=options.max_runtime, rate=self.settings.rate,
                      concurrency=self.settings.concurrency, base_url=self.settings.base_url)
        loop = self._loop = asyncio.get_running_loop()
        client = self._client = OpenPhoneClient(self.settings, transport=self.transport, loop=loop)
        if self._stop.is_set():
            client.limiter.close()
        tasks: list[asyncio.Task[None]] = []
        flusher: asyncio.Task[None] | None = None
        try:
            claimer = asyncio.create_task(self._claimer(options.limit))
            flusher = asyncio.create_task(self._flusher())
            workers_done = self._workers_done = loop.create_future()
            self._running_workers = self.settings.concurrency
            self._threads = [
                threading.Thread(target=self._worker, args=(client,), name=f"etl-fetch-{n}", daemon=True)
                for n in range(self.settings.concurrency)
            ]
            for thread in self._threads:
                thread.start()
            tasks = [claimer, flusher, asyncio.create_task(self._watch_deadline())]
            watched: set[asyncio.Future[Any]] = {workers_done, claimer, flusher}
            # Any task's exception (a 401, a lost database) ends the run now.
            while workers_done in watched:
                done, _ = await asyncio.wait(watched, return_when=asyncio.FIRST_COMPLETED)
                for finished in done:
                    exc = finished.exception()
                    if exc is not None:
                        raise exc
                    watched.discard(finished)
        except AuthError as exc:
            self._abort = True
            stats.stop_reason = f"the API refused the key (HTTP {exc.http_status}): {exc}"
            stats.exit_code = 3
            stats.fatal = exc
        except DatabaseError as exc:
            self._abort = True
            stats.stop_reason = str(exc)
            stats.exit_code = 1
            stats.fatal = exc
        except Exception as exc:  # a bug or an unforeseen database error: stop cleanly, explain
            self.log.exception("run failed")
            self._abort = True
            stats.stop_reason = f"unexpected error: {_short(exc)}"
            stats.exit_code = 1
            stats.fatal = exc
        finally:
            # The flusher is never cancelled mid-save: a save that commits while
            # its task is cancelled would go uncounted and unlogged.
            self._closing = True
            self._flush_wanted.set()
            for task in tasks:
                if task is not flusher:
                    task.cancel()
            for task in tasks:
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
            self._stop_flag.set()
            client.limiter.close()
            for _ in self._threads:
                self._work.put(None)
            if not self._abort or isinstance(stats.fatal, AuthError):
                # Let requests already on the wire land (bounded by the read timeout).
                await self._in_thread(self._join_workers)
            client.close()
        await self._finish()
        return stats

    async def _finish(self) -> None:
        stats = self.stats
        db_ok = not isinstance(stats.fatal, DatabaseError)
        if db_ok:
            try:
                await self._flush()
                leftovers = list(self._claimed.values())
                if leftovers:
                    stats.released += await self._in_db(self._tx, store.release, self.owner, leftovers)
                    self._claimed.clear()
            except (DatabaseError, DBAPIError) as exc:
                db_ok = False
                stats.fatal = stats.fatal or exc
                stats.stop_reason = stats.stop_reason or str(exc)
                stats.exit_code = stats.exit_code or 1
        if stats.exit_code == 0 and (stats.errors or (self._stop.is_set() and stats.stop_reason
                                     and not stats.stop_reason.startswith(("max runtime", "limit")))):
            stats.exit_code = 1
        if db_ok:
            with contextlib.suppress(DatabaseError):
                await self._in_db(self._tx, store.finish_run, stats.run_id, utcnow(),
                                  stats.exit_code, stats.stop_reason)
        if nothing_fetched(stats.as_dict()):
            self.log.warning(NOTHING_FETCHED, processed=stats.processed, base_url=self.settings.base_url)
        self.log.info("run finished", **stats.as_dict(), lost_leases=stats.lost_leases)

    def _join_workers(self) -> None:
        limit = time.monotonic() + self.settings.read_timeout + self.settings.connect_timeout + 5
        for thread in self._threads:
            thread.join(max(0.0, limit - time.monotonic()))

    async def _in_thread(self, fn: Callable[[], None]) -> None:
        await asyncio.get_running_loop().run_in_executor(None, fn)

    async def _watch_deadline(self) -> None:
        if self._deadline is None:
            return
        await asyncio.sleep(max(0.0, self._deadline - time.monotonic()))
        self.request_stop("max runtime reached")

    # -- claiming -----------------------------------------------------------------

    def _claim_batch(self) -> int:
        s = self.settings
        per_claim = int(s.rate * 10) if s.rate > 0 else 1000
        return max(s.concurrency * 2, min(per_claim, 1000))

    async def _claimer(self, limit: int | None) -> None:
        try:
            while not self._stop.is_set():
                remaining = None if limit is None else limit - self.stats.claimed
                if remaining is not None and remaining <= 0:
                    if self.stats.stop_reason is None:
                        self.stats.stop_reason = "limit reached"
                    break
                n = self._claim_batch() if remaining is None else min(self._claim_batch(), remaining)
                items = await self._in_db(self._tx, self._claim_and_count, n)
                if not items:
                    break
                self.stats.claimed += len(items)
                claimed_at = time.monotonic()
                for item in items:
                    self._claimed[item.call_id] = item
                    self._work.put((item, claimed_at))
                self._claim_requested = False
                # Refill when the backlog drops below one batch of workers, and
                # not while unsaved results pile up (a slow database bounds memory).
                while (self._work.qsize() > self.settings.concurrency
                       or len(self._buffer) > 4 * self.settings.write_batch) and not self._stop.is_set():
                    self._claim_wanted.clear()
                    self._claim_requested = False
                    await self._claim_wanted.wait()
        finally:
            for _ in range(self.settings.concurrency):
                self._work.put(None)

    def _claim_and_count(self, conn: Any, n: int) -> list[ClaimedItem]:
        items = store.claim(conn, self.owner, n, utcnow(), self.settings.lease_seconds)
        store.add_run_counts(conn, self.stats.run_id, claimed=len(items))
        return items

    # -- fetching (worker threads) -----------------------------------------------

    def _worker(self, client: OpenPhoneClient) -> None:
        """One fetch thread: take an item, fetch it, decide, normalise, hand it over."""
        rng = random.Random()
        try:
            while True:
                if self._work.qsize() <= self.settings.concurrency and not self._claim_requested:
                    self._claim_requested = True
                    self._post(self._claim_wanted.set)
                job = self._work.get()
                if job is None:
                    return
                if self._stop_flag.is_set():
                    continue  # left in self._claimed: released at the end
                item, claimed_at = job
                self._fetch_one(client, item, claimed_at, rng)
        except BaseException as exc:  # a 401, or a bug: the loop ends the run
            self._post(self._worker_failed, exc)
        finally:
            self._post(self._worker_exited)

    def _fetch_one(self, client: OpenPhoneClient, item: ClaimedItem, claimed_at: float,
                   rng: random.Random) -> None:
        lease_left = (claimed_at + self.settings.lease_seconds
                      - time.monotonic() - _LEASE_SAFETY_S - self.settings.read_timeout)
        if lease_left <= 0:
            return  # too late to fetch safely: released at the end, due again at once
        deadline = self._deadline
        max_wait = lease_left if deadline is None else min(
            lease_left, max(0.0, deadline - time.monotonic()) + self.settings.read_timeout)
        try:
            result = client.fetch_summary_sync(item.call_id, max_wait=max_wait, stop=self._stop_flag)
        except AuthError:
            raise
        except NotSent:
            return  # never sent: left in self._claimed, released unchanged at the end
        except Exception as exc:  # a bug must cost one item, not the run
            self.log.exception("unexpected error fetching", call_id=item.call_id)
            self._add(Entry(item, None, unexpected(item, utcnow(), f"unexpected error: {exc!r}"), None))
            return
        self._record(item, result, rng)

    def _record(self, item: ClaimedItem, result: FetchResult, rng: random.Random) -> None:
        now = utcnow()
        try:
            update = decide(item, result, now, self.settings.backoff, rng)
            rows = None
            if result.summary is not None and update.state in ("done", "failed"):
                assert result.raw_json is not None and result.content_hash is not None
                rows = normalize(result.summary, result.raw_json, result.content_hash, now)
        except Exception as exc:
            self.log.exception("unexpected error normalising", call_id=item.call_id)
            self._add(Entry(item, result, unexpected(item, now, f"unexpected error: {exc!r}"), None))
            return
        self._add(Entry(item, result, update, rows))

    def _add(self, entry: Entry) -> None:
        """From a worker thread: queue an entry for the flusher."""
        with self._buffer_lock:
            self._buffer.append(entry)
            full = len(self._buffer) == self.settings.write_batch
        if full:
            self._post(self._flush_wanted.set)

    def _post(self, callback: Callable[..., object], *args: Any) -> None:
        """Run ``callback`` on the event loop (from any thread); ignored once the loop is gone."""
        if self._loop is not None:
            with contextlib.suppress(RuntimeError):  # the loop closed under a late thread
                self._loop.call_soon_threadsafe(callback, *args)

    def _worker_failed(self, exc: BaseException) -> None:
        if self._workers_done is not None and not self._workers_done.done():
            self._workers_done.set_exception(exc)

    def _worker_exited(self) -> None:
        self._running_workers -= 1
        if self._running_workers == 0 and self._workers_done is not None and not self._workers_done.done():
            self._workers_done.set_result(None)

    # -- saving -------------------------------------------------------------------

    async def _flusher(self) -> None:
        while not self._closing:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._flush_wanted.wait(), _FLUSH_INTERVAL_S)
            self._flush_wanted.clear()
            await self._flush()

    async def _flush(self) -> None:
        async with self._save_lock:
            while self._buffer:
                size = self.settings.write_batch
                with self._buffer_lock:
                    batch, self._buffer = self._buffer[:size], self._buffer[size:]
                written = await self._in_db(self._save_batch, batch)
                self._account(batch, written)
                self._claim_wanted.set()

    def _account(self, batch: list[Entry], written: list[Entry]) -> None:
        stats = self.stats
        done_ids = {e.item.call_id for e in written}
        with batched():
            self._log_batch(batch, done_ids)
        for key, n in _count_outcomes(written).items():
            setattr(stats, key, getattr(stats, key) + n)
        if self.on_progress is not None:
            self.on_progress(stats)

    def _log_batch(self, batch: list[Entry], done_ids: set[str]) -> None:
        stats = self.stats
        for entry in batch:
            self._claimed.pop(entry.item.call_id, None)
            u, r = entry.update, entry.result
            if entry.item.call_id not in done_ids:
                stats.lost_leases += 1
                self.log.warning("lease lost; result discarded", call_id=u.call_id)
                continue
            getattr(self.log, call_log_level(r.kind if r else None, u.state))(
                "call", call_id=u.call_id, outcome=u.state, http_status=r.http_status if r else None,
                api_status=u.last_api_status, attempt=u.attempts, tries=r.tries if r else 0,
                latency_ms=r.latency_ms if r else None,
                **({"error": u.last_error} if u.last_error else {}),
            )

    def _save_batch(self, batch: list[Entry]) -> list[Entry]:
        """Runs on the database thread: save ``batch``; isolate an entry the database rejects."""
        try:
            return self._tx(self._save_and_count, batch)
        except DatabaseError:
            raise
        except DBAPIError as exc:
            if len(batch) == 1:
                entry = batch[0]
                message = f"database rejected this summary: {_short(exc)}"
                self.log.error("database rejected item", call_id=entry.item.call_id, error=message)
                failed = Entry(entry.item, entry.result, unexpected(entry.item, utcnow(), message), None)
                return self._tx(self._save_and_count, [failed])
            written: list[Entry] = []
            for entry in batch:
                written.extend(self._save_batch([entry]))
            return written

    def _save_and_count(self, conn: Any, batch: list[Entry]) -> list[Entry]:
        written = store.save_entries(conn, self.owner, batch, utcnow())
        store.add_run_counts(conn, self.stats.run_id, **_count_outcomes(written))
        return written

    # -- database plumbing ---------------------------------------------------------

    async def _in_db(self, fn: Callable[..., T], *args: Any) -> T:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._db, fn, *args)

    def _tx(self, fn: Callable[..., T], *args: Any) -> T:
        """Run ``fn(conn, *args)`` in a transaction; retry deadlocks; a lost database is fatal."""
        for attempt in range(_DEADLOCK_RETRIES + 1):
            try:
                with self.engine.begin() as conn:
                    return fn(conn, *args)
            except DBAPIError as exc:
                if exc.connection_invalidated or _is_disconnect(exc):
                    raise DatabaseError(describe_db_error(str(self.engine.url), exc)) from None
                if _is_retryable(exc) and attempt < _DEADLOCK_RETRIES:
                    time.sleep(0.05 * (attempt + 1) * (1 + random.random()))
                    continue
                raise
        raise AssertionError("unreachable")  # pragma: no cover


# sync_runs counter (and RunStats field) for each QueueUpdate.outcome.
_COUNTER_OF = {"completed": "completed", "rescheduled": "rescheduled", "failed": "failed", "error": "errors"}


def _count_outcomes(entries: list[Entry]) -> dict[str, int]:
    counts = dict.fromkeys(_COUNTER_OF.values(), 0)
    for entry in entries:
        counts[_COUNTER_OF[entry.update.outcome]] += 1
    counts["fetched"] = sum(1 for entry in entries if is_answer(entry.result))
    return counts


def _short(exc: BaseException) -> str:
    orig = getattr(exc, "orig", None) or exc
    return " ".join(str(orig).split())[:300]


def _is_disconnect(exc: DBAPIError) -> bool:
    if not isinstance(exc, OperationalError):
        return False
    text = str(getattr(exc, "orig", exc)).lower()
    markers = ("connection", "server closed", "gone away", "lost connection", "unable to open",
               "can't connect", "could not connect", "terminating", "disk i/o")
    return any(m in text for m in markers)


def _is_retryable(exc: DBAPIError) -> bool:
    orig = getattr(exc, "orig", None)
    code = getattr(orig, "sqlstate", None) or (orig.args[0] if orig is not None and orig.args else None)
    return code in ("40P01", "40001", 1213, 1205) or "database is locked" in str(orig)

