"""The Starlette app of ``etl serve``: ``POST /webhooks/<workspace>``, ``GET /healthz``, ``GET /metrics``.

Each workspace the server receives for (issue 27) has its own path,
``/webhooks/<name>``, verified with that workspace's own secrets only: a
delivery signed with another workspace's secret is a forgery here (401
``bad_signature``).  ``/webhooks/openphone``, the path of every deployment
before workspaces, is the ``default`` workspace's too (:func:`workspace_of_path`).
A path no served workspace has is 404 ``unknown_workspace`` before a byte of
its body is read.

A delivery is answered as soon as it is verified and committed (a few
milliseconds): the fetch happens afterwards, on the engine thread the commit
wakes.  Order of checks, so that nothing unauthenticated is parsed or stored:
the workspace (404), size (413, the body is read in chunks and never past the limit) and time (408:
the whole body within ``body_timeout``), signature (401), JSON (400, also for
a body nested too deeply to parse), then one transaction (replay 401;
otherwise 200).  A database that cannot be reached, or a SQLite database
locked for more than a few seconds, answers 503 with ``Retry-After``, so
OpenPhone retries later.  A client that goes away mid-body is one log line.

``/healthz`` says what is wrong in fixed words and exception type names only:
no error text, which may hold SQL, parameters, host, user or database name.
Its queries (and the metrics') only read, so on SQLite they take no write lock.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy.engine import Engine
from sqlalchemy.exc import DBAPIError
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from etl import report
from etl.clock import Clock
from etl.config import DEFAULT_WORKSPACE
from etl.db import reader
from etl.logs import get_logger
from etl.normalize import clean_text
from etl.webhooks import intake
from etl.webhooks.events import EventError, parse_event
from etl.webhooks.metrics import CONTENT_TYPE, Metrics, WorkspaceMetrics
from etl.webhooks.signatures import DEFAULT_TOLERANCE_S, SignatureError, load_secrets, verify
from etl.webhooks.worker import Housekeeper, SyncWorker

# Today's path, kept for the default workspace (every deployment before workspaces registered it).
WEBHOOK_PATH = "/webhooks/openphone"
WEBHOOKS_PREFIX = "/webhooks/"
LEGACY_SEGMENT = "openphone"  # reserved: no workspace may be named so (etl.workspaces.RESERVED_NAMES)
DEFAULT_MAX_BODY = 1024 * 1024
DEFAULT_RETENTION = timedelta(days=7)
DEFAULT_BODY_TIMEOUT_S = 10.0
# Seconds OpenPhone is asked to wait before retrying a delivery answered 503.
RETRY_AFTER_S = 5


@dataclass(frozen=True)
class ServedWorkspace:
    """One workspace the receiver takes deliveries for: its name (its path) and its own signing secrets."""

    name: str
    secrets: Sequence[str] = field(repr=False)
    transcripts: bool = False  # its transcripts setting: a transcript event queues the call's transcript


@dataclass
class ReceiverConfig:
    workspaces: Sequence[ServedWorkspace]
    tolerance: float = DEFAULT_TOLERANCE_S
    max_body_bytes: int = DEFAULT_MAX_BODY
    retention: timedelta = DEFAULT_RETENTION
    body_timeout: float = DEFAULT_BODY_TIMEOUT_S  # the whole body must arrive within this

    @classmethod
    def single(cls, secrets: Sequence[str], transcripts: bool = False, **options: Any) -> ReceiverConfig:
        """The receiver of a deployment without a workspaces file: the one workspace ``default``."""
        return cls([ServedWorkspace(DEFAULT_WORKSPACE, secrets, transcripts)], **options)


def workspace_path(name: str) -> str:
    """Where workspace ``name``'s deliveries arrive: ``/webhooks/<name>``."""
    return WEBHOOKS_PREFIX + name


def receiver_paths(name: str) -> tuple[str, ...]:
    """Every path ``etl serve`` takes workspace ``name``'s deliveries on (``default``: also today's path)."""
    return (WEBHOOK_PATH, workspace_path(name)) if name == DEFAULT_WORKSPACE else (workspace_path(name),)


def workspace_of_path(segment: str) -> str:
    """The workspace a ``/webhooks/<segment>`` path is for: ``openphone`` is ``default``'s."""
    return DEFAULT_WORKSPACE if segment == LEGACY_SEGMENT else segment


@dataclass(frozen=True)
class _Lane:
    """What the app holds per workspace: verified secrets, its engine thread, its metrics."""

    name: str
    secrets: list[Any] = field(repr=False)
    transcripts: bool
    worker: SyncWorker | None
    metrics: WorkspaceMetrics


class _TooLarge(Exception):
    pass


async def _read_limited(request: Request, limit: int) -> bytes:
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise _TooLarge
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise _TooLarge
        chunks.append(chunk)
    return b"".join(chunks)


def create_app(engine: Engine, config: ReceiverConfig, metrics: Metrics, workers: Sequence[SyncWorker] = (),
               housekeeper: Housekeeper | None = None, *, clock: Clock,
               intake_engine: Engine | None = None) -> Starlette:
    """The ASGI app; ``workers`` (one per workspace, ``worker.workspace`` naming it) and ``housekeeper``
    are started and stopped with it (lifespan).

    ``intake_engine`` stores deliveries (default ``engine``; ``etl serve`` gives a
    SQLite database one with a short busy timeout, so a locked file is a quick 503).
    """
    by_name = {w.workspace: w for w in workers}
    lanes = {ws.name: _Lane(ws.name, load_secrets(ws.secrets), ws.transcripts, by_name.get(ws.name),
                            metrics.workspace(ws.name))
             for ws in config.workspaces}
    log = get_logger()
    store_engine = intake_engine if intake_engine is not None else engine
    several = len(lanes) > 1

    def refuse(lane: _Lane | None, status: int, reason: str, message: str, **extra: Any) -> JSONResponse:
        metrics.refused(lane.name if lane is not None else None, reason)
        where = {"workspace": lane.name} if lane is not None else {}
        log.warning("webhook refused", http_status=status, reason=reason, detail=message, **where, **extra)
        # A body left unread (too large, too slow, no such workspace) ends the connection: nothing else
        # may follow it.
        headers = {"connection": "close"} if status in (404, 408, 413) else None
        return JSONResponse({"error": reason, "message": message}, status_code=status, headers=headers)

    async def receive(request: Request) -> Response:
        segment = str(request.path_params.get("workspace", ""))
        lane = lanes.get(workspace_of_path(segment))
        if lane is None:
            # Before a byte of the body: a path no workspace has costs nothing but this answer.
            return refuse(None, 404, "unknown_workspace", "no workspace receives deliveries on this path",
                          path=clean_text(segment)[:80])
        try:
            async with asyncio.timeout(config.body_timeout):
                body = await _read_limited(request, config.max_body_bytes)
        except _TooLarge:
            return refuse(lane, 413, "too_large", f"body larger than {config.max_body_bytes} bytes")
        except TimeoutError:
            return refuse(lane, 408, "body_timeout", f"body not received within {config.body_timeout:g} s")
        except ClientDisconnect:
            lane.metrics.refused("disconnected")
            log.info("webhook client disconnected before sending the whole body", workspace=lane.name)
            return Response(status_code=400)  # nobody reads it
        now = clock.utcnow()
        try:
            # Only this workspace's secrets: another workspace's signature is a forgery here.
            verified = verify(request.headers, body, lane.secrets, now, config.tolerance)
        except SignatureError as exc:
            return refuse(lane, 401, exc.reason, str(exc))
        try:
            event = parse_event(body)
        except EventError as exc:
            return refuse(lane, 400, "bad_json", str(exc))
        except RecursionError:
            return refuse(lane, 400, "bad_json", "body is nested too deeply to parse")
        try:
            accepted = await run_in_threadpool(intake.accept, store_engine, verified, event, now, clock=clock,
                                               transcripts=lane.transcripts, workspace=lane.name)
        except DBAPIError as exc:
            log.error("webhook not stored: database unavailable; answered 503 so OpenPhone retries",
                      workspace=lane.name, error_type=type(exc.orig or exc).__name__)
            return JSONResponse({"error": "database_unavailable"}, status_code=503,
                                headers={"retry-after": str(RETRY_AFTER_S)})
        shown_type = None if event.type is None else clean_text(event.type)[:64]
        if accepted.outcome == "replay":
            return refuse(lane, 401, "replay", "this signed message was received before", call_id=event.call_id)
        lane.metrics.delivery(event.type, accepted.outcome)
        log.info("webhook", workspace=lane.name, event_type=shown_type, call_id=event.call_id,
                 outcome=accepted.outcome, scheme=verified.scheme,
                 **({"note": clean_text(event.note)[:200]} if event.note else {}),
                 **({"contact_id": clean_text(event.contact_id)[:80]} if event.contact_id else {}))
        if accepted.outcome == "queued":
            if event.action == "summary_completed" and housekeeper is not None and event.call_id:
                housekeeper.track(event.call_id, now, lane.name)
            if lane.worker is not None:
                lane.worker.wake()
        return JSONResponse({"status": accepted.outcome})

    async def healthz(request: Request) -> Response:
        problems: list[str] = []
        fetched: dict[str, str | None] = dict.fromkeys(lanes)
        try:
            history = await asyncio.wait_for(run_in_threadpool(_fetch_history, engine, list(lanes)), timeout=5)
            fetched.update({name: at.isoformat(timespec="seconds") + "Z" for name, at in history.items()
                            if at is not None})
        except Exception as exc:  # any failure to reach the database is the answer here
            problems.append(f"database unreachable: {type(getattr(exc, 'orig', None) or exc).__name__}")
        per_workspace: dict[str, dict[str, Any]] = {}
        for lane in lanes.values():
            worker = lane.worker
            engine_error = worker.error if worker is not None else None
            # With several workspaces a problem says whose (a fixed word: a configured name).
            of = f" ({lane.name})" if several else ""
            if worker is not None and not worker.alive:
                problems.append(f"sync engine not running{of}")
            elif engine_error is not None:
                problems.append(f"sync engine paused{of}: {engine_error.reason} ({engine_error.type}); retrying")
            per_workspace[lane.name] = {
                "engine_alive": worker.alive if worker is not None else None,
                "engine_error": engine_error.as_dict() if engine_error is not None else None,
                "last_successful_fetch_unix": lane.metrics.last_success_unix,
                "last_successful_fetch_run_at": fetched[lane.name],
                "last_run": worker.last_run if worker is not None else None,
            }
        first = next(iter(per_workspace.values()))
        erring = next((w for w in per_workspace.values() if w["engine_error"] is not None), first)
        alive = [w["engine_alive"] for w in per_workspace.values() if w["engine_alive"] is not None]
        answered = [w["last_successful_fetch_unix"] for w in per_workspace.values()
                    if w["last_successful_fetch_unix"] is not None]
        ran = [lane.worker for lane in lanes.values() if lane.worker is not None and lane.worker.last_run is not None]
        body = {
            "healthy": not problems,
            "problems": problems,
            # Over every workspace: all engines alive; the first engine error; the newest answer and run.
            "engine_alive": all(alive) if alive else None,
            "engine_error": erring["engine_error"],
            # This server's last API answer, and the end of the last run of any etl process
            # (this one or a cron sync) that fetched something, from sync_runs.
            "last_successful_fetch_unix": max(answered) if answered else None,
            "last_successful_fetch_run_at": max((at for at in fetched.values() if at is not None), default=None),
            "last_run": max(ran, key=lambda w: w.last_run_ended).last_run if ran else None,  # the newest
            "workspaces": per_workspace,
        }
        return JSONResponse(body, status_code=200 if not problems else 503)

    async def metrics_endpoint(request: Request) -> Response:
        data = await run_in_threadpool(metrics.render)
        return Response(data, media_type=CONTENT_TYPE)

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        if housekeeper is not None:
            housekeeper.start()
        for worker in workers:
            worker.start()
            worker.wake()  # whatever is due already
        for lane in lanes.values():
            log.info("receiver started", workspace=lane.name, paths=list(receiver_paths(lane.name)),
                     secrets=len(lane.secrets), tolerance_s=config.tolerance, max_body_bytes=config.max_body_bytes)
        try:
            yield
        finally:
            # uvicorn has stopped accepting and drained in-flight requests by now.  The engines stop
            # together: each saves its in-flight fetches and releases its leases.
            stops = [threading.Thread(target=w.stop, name=f"etl-serve-stop-{w.workspace}") for w in workers]
            for thread in stops:
                thread.start()
            for thread in stops:
                await run_in_threadpool(thread.join)
            if housekeeper is not None:
                await run_in_threadpool(housekeeper.stop)
            log.info("receiver stopped")

    routes = [
        Route(WEBHOOKS_PREFIX + "{workspace}", receive, methods=["POST"]),
        Route("/healthz", healthz, methods=["GET"]),
        Route("/metrics", metrics_endpoint, methods=["GET"]),
    ]
    return Starlette(routes=routes, lifespan=lifespan)


def _fetch_history(engine: Engine, workspaces: list[str]) -> dict[str, datetime | None]:
    """When each workspace's runs last got an answer from the API (any etl process: ``sync_runs``)."""
    with reader(engine).connect() as conn:
        return {name: report.fetch_history(conn, workspace=name).last_fetch_ok_at for name in workspaces}

