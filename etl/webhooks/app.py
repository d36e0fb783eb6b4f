"""The Starlette app of ``etl serve``: ``POST /webhooks/openphone``, ``GET /healthz``, ``GET /metrics``.

A delivery is answered as soon as it is verified and committed (a few
milliseconds): the fetch happens afterwards, on the engine thread the commit
wakes.  Order of checks, so that nothing unauthenticated is parsed or stored:
size (413, the body is read in chunks and never past the limit) and time (408:
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
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import timedelta
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
from etl.health import FetchHistory
from etl.logs import get_logger
from etl.normalize import clean_text
from etl.webhooks import intake
from etl.webhooks.events import EventError, parse_event
from etl.webhooks.metrics import CONTENT_TYPE, Metrics, type_label
from etl.webhooks.signatures import DEFAULT_TOLERANCE_S, SignatureError, load_secrets, verify
from etl.webhooks.worker import Housekeeper, SyncWorker

WEBHOOK_PATH = "/webhooks/openphone"
DEFAULT_MAX_BODY = 1024 * 1024
DEFAULT_RETENTION = timedelta(days=7)
DEFAULT_BODY_TIMEOUT_S = 10.0
# Seconds OpenPhone is asked to wait before retrying a delivery answered 503.
RETRY_AFTER_S = 5


@dataclass
class ReceiverConfig:
    secrets: Sequence[str] = field(repr=False)
    tolerance: float = DEFAULT_TOLERANCE_S
    max_body_bytes: int = DEFAULT_MAX_BODY
    retention: timedelta = DEFAULT_RETENTION
    body_timeout: float = DEFAULT_BODY_TIMEOUT_S  # the whole body must arrive within this
    transcripts: bool = False  # the transcripts setting: a transcript event queues the call's transcript
    workspace: str = DEFAULT_WORKSPACE  # whose deliveries these are (etl.workspaces): its queue, its rows


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


def create_app(engine: Engine, config: ReceiverConfig, metrics: Metrics, worker: SyncWorker | None,
               housekeeper: Housekeeper | None = None, *, clock: Clock,
               intake_engine: Engine | None = None) -> Starlette:
    """The ASGI app; ``worker``/``housekeeper`` are started and stopped with it (lifespan).

    ``intake_engine`` stores deliveries (default ``engine``; ``etl serve`` gives a
    SQLite database one with a short busy timeout, so a locked file is a quick 503).
    """
    secrets = load_secrets(config.secrets)
    log = get_logger()
    store_engine = intake_engine if intake_engine is not None else engine

    def refuse(status: int, reason: str, message: str, **extra: Any) -> JSONResponse:
        metrics.refusals.labels(reason).inc()
        log.warning("webhook refused", http_status=status, reason=reason, detail=message, **extra)
        # A body left unread (too large, too slow) ends the connection: nothing else may follow it.
        headers = {"connection": "close"} if status in (408, 413) else None
        return JSONResponse({"error": reason, "message": message}, status_code=status, headers=headers)

    async def receive(request: Request) -> Response:
        try:
            async with asyncio.timeout(config.body_timeout):
                body = await _read_limited(request, config.max_body_bytes)
        except _TooLarge:
            return refuse(413, "too_large", f"body larger than {config.max_body_bytes} bytes")
        except TimeoutError:
            return refuse(408, "body_timeout", f"body not received within {config.body_timeout:g} s")
        except ClientDisconnect:
            metrics.refusals.labels("disconnected").inc()
            log.info("webhook client disconnected before sending the whole body")
            return Response(status_code=400)  # nobody reads it
        now = clock.utcnow()
        try:
            verified = verify(request.headers, body, secrets, now, config.tolerance)
        except SignatureError as exc:
            return refuse(401, exc.reason, str(exc))
        try:
            event = parse_event(body)
        except EventError as exc:
            return refuse(400, "bad_json", str(exc))
        except RecursionError:
            return refuse(400, "bad_json", "body is nested too deeply to parse")
        try:
            accepted = await run_in_threadpool(intake.accept, store_engine, verified, event, now, clock=clock,
                                               transcripts=config.transcripts, workspace=config.workspace)
        except DBAPIError as exc:
            log.error("webhook not stored: database unavailable; answered 503 so OpenPhone retries",
                      error_type=type(exc.orig or exc).__name__)
            return JSONResponse({"error": "database_unavailable"}, status_code=503,
                                headers={"retry-after": str(RETRY_AFTER_S)})
        shown_type = None if event.type is None else clean_text(event.type)[:64]
        if accepted.outcome == "replay":
            return refuse(401, "replay", "this signed message was received before", call_id=event.call_id)
        metrics.deliveries.labels(type_label(event.type), accepted.outcome).inc()
        log.info("webhook", event_type=shown_type, call_id=event.call_id, outcome=accepted.outcome,
                 scheme=verified.scheme, **({"note": clean_text(event.note)[:200]} if event.note else {}),
                 **({"contact_id": clean_text(event.contact_id)[:80]} if event.contact_id else {}))
        if accepted.outcome == "queued":
            if event.action == "summary_completed" and housekeeper is not None and event.call_id:
                housekeeper.track(event.call_id, now)
            if worker is not None:
                worker.wake()
        return JSONResponse({"status": accepted.outcome})

    async def healthz(request: Request) -> Response:
        problems: list[str] = []
        fetched_at: str | None = None
        try:
            fetches = await asyncio.wait_for(run_in_threadpool(_fetch_history, engine, config.workspace), timeout=5)
            if fetches.last_fetch_ok_at is not None:
                fetched_at = fetches.last_fetch_ok_at.isoformat(timespec="seconds") + "Z"
        except Exception as exc:  # any failure to reach the database is the answer here
            problems.append(f"database unreachable: {type(getattr(exc, 'orig', None) or exc).__name__}")
        engine_error = worker.error if worker is not None else None
        if worker is not None and not worker.alive:
            problems.append("sync engine not running")
        elif engine_error is not None:
            problems.append(f"sync engine paused: {engine_error.reason} ({engine_error.type}); retrying")
        body = {
            "healthy": not problems,
            "problems": problems,
            "engine_alive": worker.alive if worker is not None else None,
            "engine_error": engine_error.as_dict() if engine_error is not None else None,
            # This server's last API answer, and the end of the last run of any etl process
            # (this one or a cron sync) that fetched something, from sync_runs.
            "last_successful_fetch_unix": metrics.last_success_unix,
            "last_successful_fetch_run_at": fetched_at,
            "last_run": worker.last_run if worker is not None else None,
        }
        return JSONResponse(body, status_code=200 if not problems else 503)

    async def metrics_endpoint(request: Request) -> Response:
        data = await run_in_threadpool(metrics.render)
        return Response(data, media_type=CONTENT_TYPE)

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        if housekeeper is not None:
            housekeeper.start()
        if worker is not None:
            worker.start()
            worker.wake()  # whatever is due already
        log.info("receiver started", path=WEBHOOK_PATH, secrets=len(secrets), tolerance_s=config.tolerance,
                 max_body_bytes=config.max_body_bytes)
        try:
            yield
        finally:
            # uvicorn has stopped accepting and drained in-flight requests by now.
            if worker is not None:
                await run_in_threadpool(worker.stop)
            if housekeeper is not None:
                await run_in_threadpool(housekeeper.stop)
            log.info("receiver stopped")

    routes = [
        Route(WEBHOOK_PATH, receive, methods=["POST"]),
        Route("/healthz", healthz, methods=["GET"]),
        Route("/metrics", metrics_endpoint, methods=["GET"]),
    ]
    return Starlette(routes=routes, lifespan=lifespan)


def _fetch_history(engine: Engine, workspace: str) -> FetchHistory:
    with reader(engine).connect() as conn:
        return report.fetch_history(conn, workspace=workspace)

