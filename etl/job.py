"""The job as a Python object: :class:`Etl` holds the settings and the database engine.

Everything the ``etl`` commands do is a method here (the CLI parses options,
calls one, prints the result and maps exceptions to exit codes), so Airflow,
Dagster or a notebook run exactly what cron runs::

    from etl import Etl

    with Etl(database_url="sqlite:///summaries.db", api_key="...") as job:
        job.upgrade()
        job.enqueue(["AC123abc"])
        stats = job.sync(max_runtime=60)

Expected failures raise :class:`etl.errors.EtlError` subclasses (each with its
``exit_code``); a run's outcome is in the returned stats (``exit_code``,
``stop_reason``), never an exception.
"""

from __future__ import annotations

import functools
import string
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, replace
from datetime import UTC, date, datetime
from types import TracebackType
from typing import TYPE_CHECKING, Any, BinaryIO, Unpack

from sqlalchemy.engine import Engine
from sqlalchemy.exc import OperationalError

from etl import db, report
from etl.backfill import Plan, selection
from etl.clock import SYSTEM, Clock
from etl.config import (
    BATCH_SIZE,
    DBT_ERROR_AFTER,
    DBT_SOURCE_NAME,
    DBT_WARN_AFTER,
    DEFAULT_BASE_URL,
    DELIVERY_RETENTION,
    HOST,
    IN_PROCESS_BASE_URL,
    MAX_CONNECTIONS,
    MIGRATE_WAIT,
    POLL_INTERVAL,
    PORT,
    REVISION,
    SERVE_READ_TIMEOUT,
    TOLERANCE,
    WEBHOOK_LABEL,
    WEBHOOK_MAX_BODY_BYTES,
    SettingOverrides,
    Settings,
    apply_overrides,
    command_hint,
    redact_url,
    require_api_key,
)
from etl.enqueue import EnqueueCounts, OnInvalid, count_ids, enqueue_stream, id_items, source_name
from etl.errors import DatabaseError, UsageError
from etl.health import Limits
from etl.logs import keep_secret
from etl.report import Selection
from etl.status import Status, gather
from etl.workspaces import DEFAULT, WorkspaceConfig, check_name, select, settings_for, webhook_secrets_for

if TYPE_CHECKING:
    import httpx

    from etl.discover import DiscoveryStats
    from etl.fleet import WorkspaceResults
    from etl.prune import PruneResult
    from etl.sync import RunStats
    from etl.webhooks.app import ServedWorkspace
    from etl.webhooks.manage import Deleted, Migrated, Registered


class Etl:
    """One database and one API key: enqueue, sync, backfill, discover, prune, status, serve, webhooks, demo.

    Pass a :class:`etl.config.Settings`, keyword overrides, or both: the keywords are the declared
    settings (:data:`etl.config.JOB_SETTINGS`, typed by :class:`etl.config.SettingOverrides`:
    ``database_url``, ``api_key``, ``base_url``, ``rate``, ``concurrency``, ``api_version``,
    ``fetch_calls``, ``transcripts``, ``not_found_window`` in hours); None keeps the settings' value.
    ``read_only``: the caller only reads
    (``status``, ``db current``, dry runs): a SQLite file that does not exist
    is refused (:class:`UsageError`), one this user cannot write is opened
    read-only; ``transport`` replaces the network for every request
    (``etl.testing.FakeOpenPhone().transport()``).  The engine opens on first
    use; SQLite files are created (unless ``read_only``) and migrated then.
    Close it (or use ``with``) to release the connections.  ``engine``: use this SQLAlchemy
    engine (of ``settings.database_url``) instead; it stays the caller's to dispose.
    ``clock``: what every run reads the time from and waits on (``etl.testing.FakeClock`` in tests).
    ``api_version``: the API surface, ``"v1"`` or ``"2026-03-30"`` (docs/contract.md); ``fetch_calls``:
    on v1, whether sync fetches the call of an id without one (a request of its own);
    ``contacts_refresh_hours``: how often ``discover`` lists the workspace's contacts (users and lines: every run).
    """

    def __init__(self, settings: Settings | None = None, *, read_only: bool = False,
                 transport: httpx.BaseTransport | None = None, engine: Engine | None = None, clock: Clock = SYSTEM,
                 workspaces: Sequence[WorkspaceConfig] | None = None,
                 **overrides: Unpack[SettingOverrides]) -> None:
        self.settings: Settings = apply_overrides(settings or Settings(), overrides)
        # The deployment's workspaces (etl.workspaces.load_workspaces); without a file, the one default.
        self.workspaces: tuple[WorkspaceConfig, ...] = tuple(workspaces) if workspaces else (DEFAULT,)
        db.check_url(self.settings.database_url)  # a malformed URL is a UsageError now, not at first use
        keep_secret(self.settings.api_key)
        # With a transport and no base URL of its own, requests never reach the default (real) API:
        # the log lines must not say they do.
        self._base_url_given = self.settings.base_url != DEFAULT_BASE_URL
        self.read_only = read_only
        self.transport = transport
        self.clock = clock
        self._stack = ExitStack()
        # An engine passed in belongs to the caller: used as it is, never disposed here.
        self._given_engine = engine
        self._engine: Engine | None = engine
        self._schema_checked = False

    # -- lifecycle ------------------------------------------------------------------

    @property
    def engine(self) -> Engine:
        """The SQLAlchemy engine, its schema checked (a new SQLite file is migrated)."""
        engine = self._raw_engine()
        if not self._schema_checked:
            # A read-only SQLite file is checked, never migrated (etl.db.ensure_schema).
            with self._database_errors():
                db.ensure_schema(engine, self.settings.database_url)
            self._schema_checked = True
        return engine

    def close(self) -> None:
        """Dispose of the engine (its pooled connections); the object may be used again."""
        self._stack.close()
        self._engine = self._given_engine
        self._schema_checked = False

    def __enter__(self) -> Etl:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    def __repr__(self) -> str:
        # Never the key; the database URL with its password hidden.
        return f"Etl(database_url={redact_url(self.settings.database_url)!r}, base_url={self.settings.base_url!r})"

    # -- workspaces -------------------------------------------------------------------

    @property
    def workspace_names(self) -> tuple[str, ...]:
        """The names of the deployment's workspaces, in the file's order (``("default",)`` without one)."""
        return tuple(w.name for w in self.workspaces)

    def workspace(self, name: str, *, environ: Mapping[str, str] | None = None, api: bool = True) -> Etl:
        """This job as workspace ``name`` runs it: its settings (key read from its variable now; a
        :class:`UsageError` for an unknown name or an unset variable) on this job's engine, clock and
        transport.  Every row it writes carries the name; it claims only its own queue items.
        ``api=False``: for what never calls the API (``enqueue``, ``status``): no key is read, none is kept."""
        chosen = select(self.workspaces, [check_name(name)])[0]
        if api:
            settings = settings_for(self.settings, chosen, environ)
        else:
            settings = settings_for(self.settings, replace(chosen, api_key_env=None), environ).replace(api_key=None)
        child = Etl(settings, read_only=self.read_only,
                    transport=self.transport, engine=self._raw_engine(), clock=self.clock,
                    workspaces=(chosen,))
        child._base_url_given = self._base_url_given or chosen.base_url is not None
        return child

    def selected(self, workspace_names: Iterable[str] = ()) -> tuple[str, ...]:
        """The workspaces ``workspace_names`` picks (all when empty), in the file's order; a name that is
        not valid or not configured is a :class:`UsageError`.  Without a workspaces file only ``default``."""
        names = [check_name(n) for n in workspace_names]
        if self.workspaces == (DEFAULT,):
            for name in names:
                if name != DEFAULT.name:
                    raise UsageError(f"unknown workspace {name!r}: without a workspaces file (--workspaces, "
                                     "ETL_WORKSPACES) the only workspace is 'default'")
        return tuple(w.name for w in select(self.workspaces, names))

    def single_workspace(self, workspace_names: Iterable[str], why: str, *, api: bool = True) -> Etl:
        """The one workspace ``workspace_names`` picks, as :meth:`workspace` gives it; with several
        configured and not one picked, a :class:`UsageError` saying ``why`` one is needed."""
        names = self.selected(workspace_names)
        if len(names) != 1:
            named = tuple(field for _, field, _, _ in string.Formatter().parse(why) if field)  # {phone_numbers}
            raise UsageError(f"{why}: pick one with {{workspace_names}} (the workspaces are {', '.join(names)})",
                             params=(*named, "workspace_names"))
        return self.workspace(names[0], api=api)

    # -- several workspaces at once (etl.fleet) ----------------------------------------

    def sync_workspaces(self, workspace_names: Iterable[str] = (), limit: int | None = None,
                        max_runtime: float | None = None) -> WorkspaceResults[RunStats]:
        """:meth:`sync` in every selected workspace at once (all when ``workspace_names`` is empty), one
        thread each, each on its own key's budget; ``limit`` and ``max_runtime`` apply to each run.

        Every key is read and checked before any run starts (a :class:`UsageError` otherwise).  SIGTERM/
        SIGINT stop every run (when called on the main thread).  Returns name → :class:`RunStats` and the
        combined ``exit_code`` (:func:`etl.fleet.combined_exit_code`).
        """
        from etl.fleet import run_each

        jobs = self._api_jobs(workspace_names)
        return run_each([(job.settings.workspace, functools.partial(job.sync, limit, max_runtime)) for job in jobs],
                        _exit_code, clock=self.clock)

    def discover_workspaces(self, workspace_names: Iterable[str] = (),
                            since: datetime | date | str | None = None, phone_numbers: Iterable[str] = (), *,
                            dry_run: bool = False, refresh_contacts: bool = False,
                            command: str = "discover") -> WorkspaceResults[DiscoveryStats]:
        """:meth:`discover` in every selected workspace at once, one thread each (see
        :meth:`sync_workspaces`).  ``phone_numbers`` are lines of one workspace: with them, pick one."""
        from etl.fleet import run_each

        self._check_since(utc_time(since, "since"))
        phone_numbers = tuple(phone_numbers)
        if phone_numbers:
            self.single_workspace(workspace_names, "--phone-number names lines of one workspace", api=False)
        jobs = self._api_jobs(workspace_names)
        return run_each([(job.settings.workspace,
                          functools.partial(job.discover, since, phone_numbers, dry_run=dry_run, progress=False,
                                            command=command, refresh_contacts=refresh_contacts))
                         for job in jobs], _exit_code, clock=self.clock)

    def backfill_workspaces(self, workspace_names: Iterable[str] = (), *, file: BinaryIO | None = None,
                            requeue: Selection | None = None, discover: bool = False,
                            discover_since: datetime | date | str | None = None, dry_run: bool = False,
                            limit: int | None = None, max_runtime: float | None = None,
                            on_invalid: OnInvalid | None = None,
                            on_step: Callable[[str, EnqueueCounts | Requeued | TranscriptsQueued], None] | None = None,
                            missing_transcripts: bool = False,
                            transcripts_since: datetime | date | str | None = None,
                            transcripts_until: datetime | date | str | None = None,
                            ) -> WorkspaceResults[BackfillResult]:
        """:meth:`backfill` in every selected workspace at once, one thread each (see
        :meth:`sync_workspaces`); no progress bar (a ``progress`` log line every 10 s per workspace).
        ``file``'s ids belong to one workspace: with it, pick one.  ``on_step(workspace, step)``."""
        from etl.fleet import run_each

        check_sources(file, discover, utc_time(discover_since, "discover_since"))
        if file is not None:
            self.single_workspace(workspace_names, "an id file's ids belong to one workspace", api=False)
        jobs = self._api_jobs(workspace_names) if not dry_run or discover else self._jobs(workspace_names)
        for job in jobs:
            if missing_transcripts and not job.settings.transcripts:
                raise UsageError("--missing-transcripts queues transcripts: it needs --transcripts (ETL_TRANSCRIPTS=1)"
                                 f" (workspace {job.settings.workspace!r})")

        def task(job: Etl) -> Callable[[], BackfillResult]:
            name = job.settings.workspace
            step = None if on_step is None else functools.partial(on_step, name)
            return functools.partial(job.backfill, file=file, requeue=requeue, discover=discover,
                                     discover_since=discover_since, dry_run=dry_run, limit=limit,
                                     max_runtime=max_runtime, progress=False, on_invalid=on_invalid, on_step=step,
                                     missing_transcripts=missing_transcripts, transcripts_since=transcripts_since,
                                     transcripts_until=transcripts_until)

        return run_each([(job.settings.workspace, task(job)) for job in jobs], _backfill_exit_code, clock=self.clock)

    def status_workspaces(self, workspace_names: Iterable[str] = (),
                          limits: Limits | None = None) -> dict[str, Status]:
        """:meth:`status` of every selected workspace (name → :class:`Status`, in the file's order)."""
        return {job.settings.workspace: job.status(limits) for job in self._jobs(workspace_names)}

    # -- schema ---------------------------------------------------------------------

    def upgrade(self, revision: str = REVISION.default) -> tuple[str | None, str | None]:
        """Apply migrations up to ``revision``; returns (revision before, revision after)."""
        engine = self._raw_engine()
        before = self._current(engine)
        db.upgrade(self.settings.database_url, revision)
        self._schema_checked = True
        return before, self._current(engine)

    def current(self) -> tuple[str | None, str | None]:
        """(the database's schema revision, the revision this code expects)."""
        return self._current(self._raw_engine()), db.head_revision(self.settings.database_url)

    def knows_revision(self, revision: str) -> bool:
        """Whether this code has a migration script for ``revision`` (False: the database is ahead)."""
        return db.is_known_revision(self.settings.database_url, revision)

    # -- the queue ------------------------------------------------------------------

    def enqueue(self, ids: Iterable[str] = (), *, file: BinaryIO | None = None,
                on_invalid: OnInvalid | None = None) -> EnqueueCounts:
        """Queue call ids (values, then one a line from ``file``); queued ids stay as they are.

        Invalid ids are skipped, counted and handed to ``on_invalid``.
        """
        with self._database_errors():
            return enqueue_stream(self.engine, id_items(ids, file), on_invalid, now=self.clock.utcnow(),
                                  workspace=self.settings.workspace)

    def due(self, limit: int = 20) -> tuple[int, datetime | None, list[dict[str, Any]]]:
        """(items due now, since when the oldest is due, the first ``limit`` of them)."""
        now = self.clock.utcnow()
        with self._database_errors(), self.engine.begin() as conn:
            count, oldest = report.due_now(conn, now, workspace=self.settings.workspace)
            return count, oldest, report.due_ids(conn, now, limit, workspace=self.settings.workspace)

    def requeue(self, chosen: Selection) -> int:
        """Make the selected items in end states due again (see :func:`etl.backfill.selection`)."""
        with self._database_errors(), self.engine.begin() as conn:
            return report.requeue(conn, chosen, self.clock.utcnow(), workspace=self.settings.workspace)

    # -- runs -----------------------------------------------------------------------

    def sync(self, limit: int | None = None, max_runtime: float | None = None, *,
             transport: httpx.BaseTransport | None = None,
             on_progress: Callable[[RunStats], None] | None = None, command: str = "sync") -> RunStats:
        """Fetch due summaries, upsert their rows, reschedule incomplete ones: one run, as cron's.

        SIGTERM/SIGINT stop it cleanly when called on the main thread.  The
        outcome is in the returned stats (``exit_code`` 0, 1 or 3, ``stop_reason``).
        """
        from etl.running import run_sync
        from etl.sync import RunOptions

        transport = transport or self.transport
        settings = self._api_settings(transport)
        with self._database_errors():
            options = RunOptions(command=command, limit=limit, max_runtime=max_runtime)
            return run_sync(self.engine, settings, options,
                            transport=transport, on_progress=on_progress, clock=self.clock)

    def discover(self, since: datetime | date | str | None = None, phone_numbers: Iterable[str] = (), *,
                 dry_run: bool = False, transport: httpx.BaseTransport | None = None,
                 progress: bool | None = False, command: str = "discover",
                 refresh_contacts: bool = False) -> DiscoveryStats:
        """Find the workspace's calls, store them, enqueue what needs a summary (``etl discover``).

        On v1: lines → conversations → calls, enqueueing completed calls; on the
        dated API: ``GET /calls`` pages, storing final summaries from the page.
        Then users and lines are refreshed, and contacts when due (every
        ``contacts_refresh_hours``) or when ``refresh_contacts`` asks (``stats.refresh``).

        ``since``: where a line without a watermark starts: a datetime (naive
        is UTC), a date, or ISO 8601 text (``"2026-11-20"``,
        ``"2026-11-20T08:00:00Z"``); anything else is a :class:`UsageError`.
        ``phone_numbers``: ids (PN…) or E.164 numbers, comma-separated allowed;
        ``progress``: a bar on stderr (None: when stderr is a terminal).
        """
        from etl.discover import DiscoverOptions, parse_phone_numbers
        from etl.progress import DiscoveryProgress
        from etl.running import run_discover

        start = utc_time(since, "since")
        self._check_since(start)
        transport = transport or self.transport
        settings = self._api_settings(transport)
        options = DiscoverOptions(since=start, phone_numbers=parse_phone_numbers(tuple(phone_numbers)),
                                  dry_run=dry_run, command=command, refresh_contacts=refresh_contacts)
        with self._database_errors(), DiscoveryProgress(progress) as bar:
            return run_discover(self.engine, settings, options, transport=transport,
                                on_page=bar.update, page_log_level=bar.page_log_level, clock=self.clock)

    def backfill(self, *, file: BinaryIO | None = None, requeue: Selection | None = None,
                 discover: bool = False, discover_since: datetime | date | str | None = None, dry_run: bool = False,
                 limit: int | None = None, max_runtime: float | None = None,
                 transport: httpx.BaseTransport | None = None, progress: bool | None = None,
                 on_invalid: OnInvalid | None = None,
                 on_step: Callable[[EnqueueCounts | Requeued | TranscriptsQueued], None] | None = None,
                 missing_transcripts: bool = False, transcripts_since: datetime | date | str | None = None,
                 transcripts_until: datetime | date | str | None = None) -> BackfillResult:
        """Discover or enqueue ids, re-queue the ``requeue`` selection, then sync until nothing is due.

        ``missing_transcripts``: first queue the transcript of every call already
        synced that has none (transcripts turned on later; needs the ``transcripts``
        setting), only of summary items finished in ``transcripts_since`` ..
        ``transcripts_until`` when given.
        ``progress``: a bar on stderr (None: when stderr is a terminal; else a
        log line every 10 s).  ``on_step`` hears what was enqueued and
        re-queued before the sync starts.  A failed discovery ends the
        backfill (``result.run`` is None), and so does finding nothing due
        (no empty run is recorded).  With ``dry_run`` nothing changes and
        ``result.plan`` says what would.
        """
        discover_since = utc_time(discover_since, "discover_since")
        check_sources(file, discover, discover_since)
        window = (utc_time(transcripts_since, "transcripts_since"), utc_time(transcripts_until, "transcripts_until"))
        if missing_transcripts and not self.settings.transcripts:
            raise UsageError("--missing-transcripts queues transcripts: it needs --transcripts (ETL_TRANSCRIPTS=1)")
        if not dry_run or discover:
            self._api_settings(transport or self.transport)  # no key: refused before anything changes
        result = BackfillResult()
        if discover:
            result.discovery = self.discover(discover_since, dry_run=dry_run, transport=transport,
                                             progress=progress, command="backfill")
            if result.discovery.exit_code != 0:
                return result
        if dry_run:
            result.plan = self._plan(file, requeue, on_invalid)
            if missing_transcripts:
                with self._database_errors(), self.engine.begin() as conn:
                    result.plan = replace(result.plan, transcripts=report.count_without_transcript(
                        conn, *window, workspace=self.settings.workspace))
            return result
        if missing_transcripts:
            result.transcripts_queued = TranscriptsQueued(self._queue_missing_transcripts(*window))
            if on_step is not None:
                on_step(result.transcripts_queued)
        if file is not None:
            result.enqueued = self.enqueue(file=file, on_invalid=on_invalid)
            if on_step is not None:
                on_step(result.enqueued)
        if requeue is not None:
            result.requeued = Requeued(self.requeue(requeue), requeue.states)
            if on_step is not None:
                on_step(result.requeued)
        result.run = self._sync_with_progress(limit, max_runtime, transport, progress)
        return result

    # -- retention ------------------------------------------------------------------

    def prune(self, *, transcripts_older_than: float | None = None, raw_json_older_than: float | None = None,
              dry_run: bool = False, batch_size: int = BATCH_SIZE.default) -> PruneResult:
        """Delete transcript lines, and clear raw JSON payloads, of calls that started more than so many days ago.

        Keeps the ``call_transcripts`` rows (marked ``pruned_at``); batches of
        ``batch_size`` calls per transaction, safe next to a running sync;
        ``dry_run`` only counts.  See :mod:`etl.prune`.
        """
        from etl.prune import prune

        if transcripts_older_than is None and raw_json_older_than is None:
            raise UsageError("nothing to prune: give {transcripts_older_than} DAYS and/or {raw_json_older_than} DAYS",
                             params=("transcripts_older_than", "raw_json_older_than"))
        for name, days in (("transcripts_older_than", transcripts_older_than),
                           ("raw_json_older_than", raw_json_older_than)):
            if days is not None and days < 0:
                raise UsageError(f"{{{name}}} must be 0 or more days (got {days:g})", params=(name,))
        if batch_size < 1:
            raise UsageError("{batch_size} must be at least 1", params=("batch_size",))
        with self._database_errors():
            return prune(self.engine, self.clock.utcnow(), transcripts_older_than=transcripts_older_than,
                         raw_json_older_than=raw_json_older_than, dry_run=dry_run, batch_size=batch_size,
                         workspace=self.settings.workspace)

    def transcript_lines_stored(self) -> tuple[int, int]:
        """(transcript lines stored, calls they belong to): a prune that would delete them all asks first."""
        with self._database_errors(), self.engine.begin() as conn:
            return report.transcript_lines_stored(conn, workspace=self.settings.workspace)

    # -- the webhook receiver ---------------------------------------------------------

    def serve(self, webhook_secrets: Sequence[str] = (), *, host: str = HOST.default, port: int = PORT.default,
              tolerance: float = TOLERANCE.default, max_body_bytes: int = WEBHOOK_MAX_BODY_BYTES.default,
              delivery_retention: float = DELIVERY_RETENTION.default, poll_interval: float = POLL_INTERVAL.default,
              read_timeout: float = SERVE_READ_TIMEOUT.default, max_connections: int = MAX_CONNECTIONS.default,
              workspace_names: Iterable[str] = ()) -> None:
        """Receive signed webhooks and sync each summary as it is ready (``etl serve``), until SIGTERM/SIGINT.

        Every workspace of the job (those ``workspace_names`` picks; all when empty) has its own path
        (``/webhooks/<name>``; the ``default`` workspace also today's ``/webhooks/openphone``), its own
        secrets and its own engine thread on its key and budget.  ``webhook_secrets``: the signing
        secrets ``webhooks.register`` printed, for a job without a workspaces file; with one, each
        workspace's come from its ``webhook_secrets_env`` (:func:`etl.workspaces.webhook_secrets_for`)
        and ``webhook_secrets`` must be empty.  Secrets are never logged.  ``delivery_retention`` in
        hours, at least twice ``tolerance`` (seconds).  See :mod:`etl.webhooks.server` for the limits
        a client meets.  Refused before listening (:class:`UsageError`): a workspace whose key or
        secrets variable is unset, a secret that is not base64, or one secret shared by two workspaces.
        """
        from datetime import timedelta

        from etl.webhooks.app import ReceiverConfig
        from etl.webhooks.server import ServeOptions
        from etl.webhooks.server import serve as run_server

        retention = timedelta(hours=delivery_retention)
        if retention.total_seconds() < 2 * tolerance:
            raise UsageError("{delivery_retention} must be at least twice {tolerance}, or a replay could outlive "
                             "its record", params=("delivery_retention", "tolerance"))
        served = self._served_workspaces(self.selected(workspace_names), [s for s in webhook_secrets if s])
        receiver = ReceiverConfig([ws for ws, _ in served], tolerance, max_body_bytes, retention,
                                  body_timeout=read_timeout)
        options = ServeOptions(host, port, poll_interval, header_timeout=read_timeout,
                               max_connections=max_connections)
        with self._database_errors():
            run_server(self.engine, [settings for _, settings in served], receiver, options,
                       transport=self.transport, clock=self.clock)

    def _served_workspaces(self, names: Sequence[str], given: list[str]) -> list[tuple[ServedWorkspace, Settings]]:
        """Each workspace ``serve`` receives for, with its secrets and its engine's settings (checked)."""
        from etl.webhooks.app import ServedWorkspace
        from etl.webhooks.signatures import SecretError, load_secrets, same_secret

        from_file = self.workspaces != (DEFAULT,)
        if from_file and given:
            raise UsageError("{webhook_secrets} is for a deployment without a workspaces file: with one, each "
                             "workspace's secrets are in the environment variable its webhook_secrets_env names",
                             params=("webhook_secrets",))
        served: list[tuple[ServedWorkspace, Settings]] = []
        for ws in select(self.workspaces, names):
            child = self.workspace(ws.name)  # its key: refused here when its variable is unset
            settings = child._api_settings(child.transport)
            secrets = list(webhook_secrets_for(ws)) if from_file else given
            if not secrets:
                raise UsageError(_no_secret(ws, from_file), params=() if from_file else ("webhook_secrets",))
            for secret in secrets:
                keep_secret(secret)
            try:
                load_secrets(secrets)
            except SecretError as exc:
                raise UsageError(f"workspace {ws.name!r}: {exc}" if from_file else str(exc)) from None
            for other, _ in served:
                if same_secret(secrets, other.secrets):
                    raise UsageError(f"workspaces {other.name!r} and {ws.name!r} share a webhook secret: each "
                                     "workspace's deliveries must be verified with its own (a delivery to one "
                                     "could be replayed to the other)")
            served.append((ServedWorkspace(ws.name, secrets, settings.transcripts), settings))
        return served

    @property
    def webhooks(self) -> Webhooks:
        """The API webhooks ``etl serve`` receives: ``register``, ``list``, ``delete``, ``migrate``."""
        return Webhooks(self)

    # -- the demo -------------------------------------------------------------------

    @staticmethod
    def demo_database_url() -> str:
        """A fresh SQLite file in the temporary directory for :meth:`demo` (each call replaces the last one's)."""
        from etl.demo import sandbox_url

        return sandbox_url()

    def demo(self, *, sandbox: bool = False) -> None:
        """``etl demo``: discover, sync and a BI query against the built-in simulated API, printed on stdout.

        Needs no key; the settings' ``api_version`` and ``transcripts`` apply.  ``sandbox``: the
        database is :meth:`demo_database_url`'s throwaway file (the closing line says so).
        """
        from etl.demo import run_demo

        with self._database_errors():
            run_demo(self.engine, self.settings.database_url, clock=self.clock, sandbox=sandbox,
                     transcripts=self.settings.transcripts, api_version=self.settings.api_version)

    # -- dbt --------------------------------------------------------------------------

    def dbt_sources(self, *, name: str = DBT_SOURCE_NAME.default, schema: str | None = None,
                    warn_after_hours: int = DBT_WARN_AFTER.default,
                    error_after_hours: int = DBT_ERROR_AFTER.default) -> str:
        """``etl dbt sources``: a dbt sources YAML of every table and view (etl.dbt; docs/bi.md).

        ``schema``: where the tables are (default: ``public`` on PostgreSQL, the database's name on
        MySQL/MariaDB, ``main`` on SQLite); freshness warns and errors after these many hours since
        the newest synced-at value.  Reads no database: the tables are this version's models.
        """
        from sqlalchemy.engine import make_url

        from etl import dbt
        from etl.models import VIEWS, Base

        url = make_url(self.settings.database_url)
        where = schema if schema is not None else dbt.default_schema(url.get_backend_name(), url.database)
        views = dbt.all_views(VIEWS, dbt.parse_view_docs(dbt.schema_doc_path().read_text(encoding="utf-8")))
        document = dbt.sources(Base.metadata, views, schema=where, name=name, warn_hours=warn_after_hours,
                               error_hours=error_after_hours)
        return dbt.sources_yaml(document)

    # -- health ---------------------------------------------------------------------

    def status(self, limits: Limits | None = None) -> Status:
        """Queue counts, what is due, last runs and discovery, top errors, and the health verdict."""
        with self._database_errors(), self.engine.connect() as conn:
            return gather(conn, self.settings.database_url, self.clock.utcnow(), limits or Limits(),
                          workspace=self.settings.workspace)

    @property
    def database(self) -> str:
        """The database URL as it may be shown (password hidden)."""
        return redact_url(self.settings.database_url)

    def hint(self, command: str) -> str:
        """``command`` as a user can paste it, with the ``--database-url`` this database needs."""
        return command_hint(command, self.settings.database_url)

    # -- internals ------------------------------------------------------------------

    def _api_settings(self, transport: httpx.BaseTransport | None) -> Settings:
        """The settings of a method that talks to the API, its key checked here for every one of them
        (:class:`UsageError` without a usable key); with a replaced transport and no base URL given,
        the in-process base URL."""
        require_api_key(self.settings)
        if transport is not None and not self._base_url_given:
            return self.settings.replace(base_url=IN_PROCESS_BASE_URL)
        return self.settings

    def _jobs(self, workspace_names: Iterable[str]) -> list[Etl]:
        """The selected workspaces' jobs, for what never calls the API (no key read)."""
        return self._checked([self.workspace(name, api=False) for name in self.selected(workspace_names)])

    def _api_jobs(self, workspace_names: Iterable[str]) -> list[Etl]:
        """The selected workspaces' jobs, every key read and checked before any of them runs."""
        jobs = [self.workspace(name) for name in self.selected(workspace_names)]
        for job in jobs:
            try:
                job._api_settings(job.transport)
            except UsageError as exc:
                if len(jobs) == 1 and self.workspaces == (DEFAULT,):
                    raise
                raise UsageError(f"workspace {job.settings.workspace!r}: {exc.template}", params=exc.params) from None
        return self._checked(jobs)

    def _checked(self, jobs: list[Etl]) -> list[Etl]:
        """``jobs`` on this job's engine, its schema checked (a new SQLite file migrated) once, here: never
        by several workspaces' threads at once."""
        self.engine  # noqa: B018  # the property checks the schema
        for job in jobs:
            job._schema_checked = True
        return jobs

    def _check_since(self, start: datetime | None) -> None:
        if start is not None and start > self.clock.utcnow():
            raise UsageError(f"--since {start:%Y-%m-%d %H:%M:%S} UTC is in the future: no call can have started "
                             "after it yet; give a past date")

    def _raw_engine(self) -> Engine:
        if self._engine is None:
            try:
                engine = db.create_engine(self.settings.database_url, read_only=self.read_only)
            except DatabaseError as exc:
                raise UsageError(str(exc)) from None
            self._stack.callback(engine.dispose)
            self._engine = engine
        return self._engine

    @contextmanager
    def _database_errors(self) -> Iterator[None]:
        """A database lost or refusing mid-way: one message naming it (password hidden)."""
        try:
            yield
        except OperationalError as exc:
            raise DatabaseError(db.describe_db_error(self.settings.database_url, exc)) from None

    def _current(self, engine: Engine) -> str | None:
        with self._database_errors():
            return db.current_revision(engine)

    def _plan(self, file: BinaryIO | None, chosen: Selection | None, on_invalid: OnInvalid | None) -> Plan:
        with self._database_errors(), self.engine.begin() as conn:
            due, _ = report.due_now(conn, self.clock.utcnow(), workspace=self.settings.workspace)
            selected = report.count_selected(conn, chosen, workspace=self.settings.workspace) if chosen else {}
        ids = count_ids(id_items((), file), on_invalid) if file is not None else None
        return Plan(due, selected, ids, source_name(file) if file is not None else None)

    def _queue_missing_transcripts(self, since: datetime | None, until: datetime | None) -> int:
        queued = 0
        while True:  # short transactions: safe next to a running sync
            with self._database_errors(), self.engine.begin() as conn:
                n = report.queue_missing_transcripts(conn, self.clock.utcnow(), since, until,
                                                     workspace=self.settings.workspace)
            queued += n
            if n == 0:
                return queued

    def _sync_with_progress(self, limit: int | None, max_runtime: float | None,
                            transport: httpx.BaseTransport | None, progress: bool | None) -> RunStats | None:
        from etl.progress import Progress

        transcripts = self.settings.transcripts
        with self._database_errors(), self.engine.begin() as conn:
            summaries, _ = report.due_now(conn, self.clock.utcnow(), workspace=self.settings.workspace)
            due_transcripts = (report.transcripts_due_now(conn, self.clock.utcnow(), workspace=self.settings.workspace)
                               if transcripts else 0)
        if summaries + due_transcripts == 0:
            return None  # nothing to do: a backfill records no empty run
        with Progress(summaries, progress, self.clock, transcripts=due_transcripts if transcripts else None,
                      limit=limit) as bar:
            return self.sync(limit, max_runtime, transport=transport, on_progress=bar.update, command="backfill")


class Webhooks:
    """``Etl.webhooks``: the workspace's API webhooks of its ``api_version`` (:mod:`etl.webhooks.manage`).

    One workspace at a time: the job's one workspace (``default`` without a workspaces file, or
    ``Etl.workspace(name)``'s); a job of several workspaces is refused (:class:`UsageError`), since each
    has its own key and its own receiver URL (``/webhooks/<name>``).
    """

    def __init__(self, job: Etl) -> None:
        self._job = job

    @property
    def workspace(self) -> str:
        """The workspace whose webhooks these are."""
        return self._workspace().name

    @property
    def secrets_variable(self) -> str | None:
        """The environment variable ``etl serve`` reads this workspace's signing secrets from
        (``OPENPHONE_WEBHOOK_SECRETS`` without a workspaces file; None: its table names none yet)."""
        ws = self._workspace()
        return "OPENPHONE_WEBHOOK_SECRETS" if ws == DEFAULT else ws.webhook_secrets_env

    def register(self, url: str, label: str | None = WEBHOOK_LABEL.default, *,
                 on_created: Callable[[Registered], None] | None = None) -> list[Registered]:
        """Create (or reuse) the webhooks ``etl serve`` needs at ``url`` (its path the workspace's,
        ``/webhooks/<name>``); new ones carry their secret.

        ``label``: the label of the webhooks it creates (None: none).  ``on_created`` sees each as soon as
        it exists: a failure on the second leaves the first's secret with the caller.
        """
        from etl.webhooks import manage

        manage.check_receiver_url(url, self.workspace)
        settings = self._settings()
        return manage.register(settings, url, label, clock=self._job.clock, on_created=on_created,
                               transport=self._job.transport)

    def list(self) -> list[dict[str, Any]]:
        """The webhooks of ``settings.api_version`` (``id``, ``status``, ``events``, ``url``)."""
        from etl.webhooks import manage

        return manage.list_all(self._settings(), clock=self._job.clock, transport=self._job.transport)

    def delete(self, webhook_id: str) -> Deleted:
        """Delete one webhook by id: of ``settings.api_version``, else of the other surface when only it has
        that id.  Says which API version's webhook it was (``Deleted``)."""
        from etl.webhooks import manage

        return manage.delete(self._settings(), webhook_id, clock=self._job.clock, transport=self._job.transport)

    def migrate(self, url: str, *, label: str | None = WEBHOOK_LABEL.default, wait: float = MIGRATE_WAIT.default,
                on_step: Callable[[str], None] | None = None) -> Migrated:
        """Move ``url`` from the legacy webhooks to a current one without a gap (:func:`etl.webhooks.manage.migrate`).

        The receiver's database is this object's; the test event must be recorded for this workspace.
        No test event recorded within ``wait`` seconds raises :class:`MigrationError` and deletes nothing.
        """
        from etl.webhooks import manage

        manage.check_receiver_url(url, self.workspace)
        settings = self._settings()
        job = self._job
        with job._database_errors():
            return manage.migrate(settings, url, job.engine, label=label, wait=wait, clock=job.clock,
                                  on_step=on_step, transport=job.transport, secrets_variable=self.secrets_variable)

    def _workspace(self) -> WorkspaceConfig:
        workspaces = self._job.workspaces
        if len(workspaces) != 1:
            names = ", ".join(w.name for w in workspaces)
            raise UsageError(f"webhooks belong to one workspace, and this job has {len(workspaces)} ({names}): "
                             "use Etl.workspace(name).webhooks")
        return workspaces[0]

    def _settings(self) -> Settings:
        """The workspace's settings (its key read now and checked), with the in-process base URL
        under a replaced transport and no base URL given."""
        job = self._job
        ws = self._workspace()
        settings = settings_for(job.settings, ws)
        require_api_key(settings)
        if job.transport is not None and not job._base_url_given and ws.base_url is None:
            return settings.replace(base_url=IN_PROCESS_BASE_URL)
        return settings


@dataclass(frozen=True)
class Requeued:
    """How many items in which end states a backfill made due again."""

    count: int
    states: tuple[str, ...]


@dataclass(frozen=True)
class TranscriptsQueued:
    """How many transcripts of calls already synced a backfill queued (``--missing-transcripts``)."""

    count: int


@dataclass
class BackfillResult:
    """What :meth:`Etl.backfill` did, step by step (None: the step did not run)."""

    discovery: DiscoveryStats | None = None
    plan: Plan | None = None
    enqueued: EnqueueCounts | None = None
    requeued: Requeued | None = None
    transcripts_queued: TranscriptsQueued | None = None
    run: RunStats | None = None


def _exit_code(outcome: RunStats | DiscoveryStats) -> int:
    return outcome.exit_code


def _backfill_exit_code(result: BackfillResult) -> int:
    """A backfill's exit code: its discovery's when that failed (no sync then), else its sync's, else 0."""
    if result.discovery is not None and result.discovery.exit_code != 0:
        return result.discovery.exit_code
    return result.run.exit_code if result.run is not None else 0


def utc_time(value: datetime | date | str | None, name: str) -> datetime | None:
    """A start time as the engine takes it (naive UTC) from a datetime, a date or ISO 8601 text.

    An aware datetime (or text with an offset or ``Z``) is converted to UTC; a
    naive one is UTC already.  Anything else is a :class:`UsageError` naming ``name``.
    """
    if value is None or (isinstance(value, datetime) and value.tzinfo is None):
        return value
    if isinstance(value, str):
        text = value
        try:
            value = datetime.fromisoformat(text.strip())
        except ValueError:
            raise UsageError(f"{name}={text[:40]!r} is not a date or an ISO 8601 time, "
                             "e.g. '2026-11-20' or '2026-11-20T08:00:00Z'") from None
    if isinstance(value, datetime):
        return value if value.tzinfo is None else value.astimezone(UTC).replace(tzinfo=None)
    if isinstance(value, date):
        return datetime(value.year, value.month, value.day)
    raise UsageError(f"{name} must be a datetime, a date or ISO 8601 text, not {type(value).__name__}")


def check_sources(file: BinaryIO | None, discover: bool, discover_since: datetime | None) -> None:
    """Where a backfill's ids come from: an id file or discovery, not both."""
    if discover and file is not None:
        raise UsageError("{discover} and {file} are alternatives: discover ids, or read them from a file",
                         params=("discover", "file"))
    if discover_since is not None and not discover:
        raise UsageError("{discover_since} needs {discover}", params=("discover_since", "discover"))


def _no_secret(workspace: WorkspaceConfig, from_file: bool) -> str:
    """Why ``etl serve`` has no webhook secret for ``workspace`` (a ``UsageError`` template)."""
    if not from_file:
        return ("no webhook secret: set OPENPHONE_WEBHOOK_SECRETS (comma-separated) or pass {webhook_secrets} "
                "(repeatable); `etl webhooks register` prints them")
    if workspace.webhook_secrets_env is None:
        return (f"workspace {workspace.name!r} has no webhook secret: add webhook_secrets_env to its "
                f"[workspace.{workspace.name}] table (the environment variable holding its comma-separated "
                "secrets), or serve only the other workspaces")
    return (f"workspace {workspace.name!r} has no webhook secret: the environment variable "
            f"{workspace.webhook_secrets_env} (its webhook_secrets_env) is not set")


__all__ = ["BackfillResult", "Etl", "Requeued", "TranscriptsQueued", "Webhooks", "check_sources", "selection",
           "utc_time"]
