"""``etl serve``: the receiver app, the engine thread and uvicorn, put together.

uvicorn owns SIGTERM/SIGINT: it stops accepting, lets in-flight requests
finish (``graceful_timeout``), then runs the app's lifespan shutdown, which
stops the engine (in-flight fetches saved, leases released).
"""

from __future__ import annotations

from dataclasses import dataclass

import httpx
import uvicorn
from sqlalchemy.engine import Engine

from etl.config import Settings
from etl.webhooks.app import ReceiverConfig, create_app
from etl.webhooks.metrics import Metrics
from etl.webhooks.worker import Housekeeper, SyncWorker


@dataclass
class ServeOptions:
    host: str = "127.0.0.1"
    port: int = 8080
    poll_interval: float = 30.0
    graceful_timeout: float = 30.0


def serve(engine: Engine, settings: Settings, receiver: ReceiverConfig, options: ServeOptions, *,
          transport: httpx.BaseTransport | None = None) -> None:
    """Serve until SIGTERM/SIGINT."""
    metrics = Metrics(engine, settings.rate)
    worker = SyncWorker(engine, settings, metrics, transport=transport, poll_interval=options.poll_interval)
    housekeeper = Housekeeper(engine, metrics, receiver.retention)
    app = create_app(engine, receiver, metrics, worker, housekeeper)
    config = uvicorn.Config(
        app, host=options.host, port=options.port, log_config=None, access_log=False, lifespan="on",
        timeout_graceful_shutdown=int(options.graceful_timeout), server_header=False,
    )
    uvicorn.Server(config).run()
