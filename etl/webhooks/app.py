"""The Starlette app of ``etl serve``: ``POST /webhooks/openphone``, ``GET /healthz``, ``GET /metrics``.

A delivery is answered as soon as it is verified and committed (a few
milliseconds): the fetch happens afterwards, on the engine thread the commit
wakes.  Order of checks, so that nothing unauthenticated is parsed or stored:
size (413, the body is read in chunks and never past the limit), signature
(401), JSON (400), then one transaction (replay 401; otherwise 200).  A
database that cannot be reached answers 503, so OpenPhone retries later.
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
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from etl import report
from etl.clock import utcnow
from etl.health import FetchHistory
from etl.logs import get_logger
from etl.webhooks import intake
from etl.webhooks.events import EventError, parse_event
from etl.webhooks.metrics import CONTENT_TYPE, Metrics
from etl.webhooks.signatures import DEFAULT_TOLERANCE_S, SignatureError, load_secrets, verify
from etl.webhooks.worker import Housekeeper, SyncWorker

WEBHOOK_PATH = "/webhooks/openphone"
DEFAULT_MAX_BODY = 1024 * 1024
DEFAULT_RETENTION = timedelta(days=7)


@dataclass
class ReceiverConfig:
    secrets: Sequence[str] = field(repr=False)
    tolerance: float = DEFAULT_TOLERANCE_S
    max_body_bytes: int = DEFAULT_MAX_BODY
    retention: timedelta = DEFAULT_RETENTION


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
               housekeeper: Housekeeper | None = None) -> Starlette:
    """The ASGI app; ``worker``/``housekeeper`` are started and stopped with it (lifespan)."""
    secrets = load_secrets(config.secrets)
    log = get_logger()

    def refuse(status: int, reason: str, message: str, **extra: Any) -> JSONResponse:
        metrics.refusals.labels(reason).inc()
        log.warning("webhook refused", http_status=status, reason=reason, detail=message, **extra)
        return JSONResponse({"error": reason, "message": message}, status_code=status)

    async def receive(request: Request) -> Response:
        try:
            body = await _read_limited(request, config.max_body_bytes)
        except _TooLarge:
            return refuse(413, "too_large", f"body larger than {config.max_body_bytes} bytes")
        now = utcnow()
        try:
            verified = verify(request.headers, body, secrets, now, config.tolerance)
        except SignatureError as exc:
            return refuse(401, exc.reason, str(exc))
        try:
            event = parse_event(body)
        except EventError as exc:
            return refuse(400, "bad_json", str(exc))
        try:
            accepted = await run_in_threadpool(intake.accept, engine, verified, event, now)
        except DBAPIError as exc:
            log.error("webhook not stored: database error", error=" ".join(str(exc.orig).split())[:300])
            return JSONResponse({"error": "database_unavailable"}, status_code=503)
        if accepted.outcome == "replay":
            return refuse(401, "replay", "this signed message was received before", call_id=event.call_id)
        metrics.deliveries.labels(event.type or "unknown", accepted.outcome).inc()
        log.info("webhook", event_type=event.type, call_id=event.call_id, outcome=accepted.outcome,
                 scheme=verified.scheme, **({"note": event.note} if event.note else {}))
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
            fetches = await asyncio.wait_for(run_in_threadpool(_fetch_history, engine), timeout=5)
            if fetches.last_fetch_ok_at is not None:
                fetched_at = fetches.last_fetch_ok_at.isoformat(timespec="seconds") + "Z"
        except Exception as exc:  # any failure to reach the database is the answer here
            problems.append(f"database unreachable: {type(exc).__name__}")
        if worker is not None and not worker.alive:
            problems.append("sync engine not running" + (f": {worker.crashed}" if worker.crashed else ""))
        body = {
            "healthy": not problems,
            "problems": problems,
            "engine_alive": worker.alive if worker is not None else None,
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


def _fetch_history(engine: Engine) -> FetchHistory:
    with engine.connect() as conn:
        return report.fetch_history(conn)

