"""``etl serve``: the receiver app, the engine thread and uvicorn, put together.

uvicorn owns SIGTERM/SIGINT: it stops accepting, lets in-flight requests
finish (``graceful_timeout``), then runs the app's lifespan shutdown, which
stops the engine (in-flight fetches saved, leases released).

The listening socket is bound here, before uvicorn starts, so that a port in
use or an address the host does not have is one ``Error: ...`` line (exit 2)
instead of uvicorn's own message and exit code 3 (which means "the API refused
the key" in this project).
"""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass

import httpx
import uvicorn
from sqlalchemy.engine import Engine

from etl.config import Settings
from etl.errors import UsageError
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
    sock = listen(options.host, options.port)
    metrics = Metrics(engine, settings.rate)
    worker = SyncWorker(engine, settings, metrics, transport=transport, poll_interval=options.poll_interval)
    housekeeper = Housekeeper(engine, metrics, receiver.retention)
    app = create_app(engine, receiver, metrics, worker, housekeeper)
    config = uvicorn.Config(
        app, host=options.host, port=options.port, log_config=None, access_log=False, lifespan="on",
        timeout_graceful_shutdown=int(options.graceful_timeout), server_header=False,
    )
    try:
        uvicorn.Server(config).run(sockets=[sock])
    finally:
        sock.close()


def listen(host: str, port: int) -> socket.socket:
    """A listening TCP socket on ``host:port`` (IPv4 or IPv6); :class:`UsageError` if it cannot be had."""
    try:
        family, _, _, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM,
                                                      flags=socket.AI_PASSIVE)[0]
        return socket.create_server(address[:2], family=family)
    except socket.gaierror as exc:
        raise UsageError(f"cannot listen on {host}:{port}: {exc.strerror}") from None
    except OSError as exc:
        reason = os.strerror(exc.errno) if exc.errno else str(exc)
        raise UsageError(f"cannot listen on {host}:{port}: {reason}") from None
