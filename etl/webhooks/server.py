"""``etl serve``: the receiver app, the engine thread and uvicorn, put together.

uvicorn owns SIGTERM/SIGINT: it stops accepting, lets in-flight requests
finish (``graceful_timeout``), then runs the app's lifespan shutdown, which
stops the engine (in-flight fetches saved, leases released).  A signal is how
a service is stopped, so once that is done :func:`serve` returns normally
(exit 0); uvicorn's own habit of re-raising the signal afterwards (exit 143,
or ``Aborted!`` and 1 for Ctrl-C) is switched off.

The listening socket is bound here, before uvicorn starts, so that a port in
use or an address the host does not have is one ``Error: ...`` line (exit 2)
instead of uvicorn's own message and exit code 3 (which means "the API refused
the key" in this project).  Once it accepts, one line says where:
``listening on http://HOST:PORT``.

What a client may hold (the receiver faces the internet behind a proxy, but
must not depend on it):

* a request's line and headers must arrive within ``header_timeout`` of the
  connection (or of the previous response on a kept-alive one), else the
  connection is closed; idle kept-alive connections close after
  ``keep_alive`` seconds; headers are at most 16 KiB (h11's limit);
* at most ``max_connections`` connections are open: a new one beyond that
  closes the oldest connection that has no request in progress (a slow or
  idle client), else the oldest whose body is still arriving, else (every
  other one is being answered) itself; uvicorn's ``limit_concurrency``
  answers 503 beyond that many requests in progress;
* the body must arrive within the app's ``body_timeout`` (408,
  :mod:`etl.webhooks.app`).

Deliveries are stored through an engine of their own on SQLite, whose busy
timeout is short (:data:`INTAKE_BUSY_TIMEOUT_S`): a database locked by a long
writer elsewhere answers 503 within seconds, and OpenPhone retries.  Both
SQLite engines follow the file (:func:`serving_engines`): a file moved away or
swapped underneath is an outage until it is back, never writes into a file
nobody else sees.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
from collections.abc import Generator, Sequence
from dataclasses import dataclass
from typing import Any

import httpx
import uvicorn
from sqlalchemy.engine import Engine
from uvicorn.protocols.http.h11_impl import H11Protocol

from etl import db
from etl.clock import Clock
from etl.config import Settings
from etl.errors import UsageError
from etl.logs import get_logger
from etl.webhooks.app import ReceiverConfig, create_app
from etl.webhooks.metrics import Metrics
from etl.webhooks.worker import Housekeeper, SyncWorker

INTAKE_BUSY_TIMEOUT_S = 1.0
MAX_HEADER_BYTES = 16 * 1024


@dataclass
class ServeOptions:
    host: str = "127.0.0.1"
    port: int = 8080
    poll_interval: float = 30.0
    graceful_timeout: float = 30.0
    header_timeout: float = 10.0
    keep_alive: float = 5.0
    max_connections: int = 100


class GuardedH11Protocol(H11Protocol):
    """uvicorn's h11 protocol with a deadline for each request's headers and a cap on connections."""

    header_timeout = 10.0
    max_connections = 100

    _opened = 0.0
    _header_timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._opened = self.loop.time()
        self._arm()
        if len(self.connections) > self.max_connections:
            self._make_room()

    def connection_lost(self, exc: Exception | None) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()
        super().connection_lost(exc)

    def on_response_complete(self) -> None:
        super().on_response_complete()
        self._arm()  # the next request on this connection has its own deadline

    def _idle(self) -> bool:
        """No request in progress: its headers have not all arrived yet, or none was started."""
        return self.cycle is None or self.cycle.response_complete

    def _arm(self) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()
        self._header_timer = self.loop.call_later(self.header_timeout, self._headers_late)

    def _headers_late(self) -> None:
        if self._idle() and not self.transport.is_closing():
            self.transport.close()

    def _receiving(self) -> bool:
        """A request whose body is still arriving (legitimate bodies take milliseconds)."""
        return self.cycle is not None and self.cycle.more_body and not self.cycle.response_complete

    def _make_room(self) -> None:
        others = [c for c in self.connections if isinstance(c, GuardedH11Protocol) and c is not self]
        for waiting in (GuardedH11Protocol._idle, GuardedH11Protocol._receiving):
            candidates = [c for c in others if waiting(c)]
            if candidates:
                victim = min(candidates, key=lambda c: c._opened)
                break
        else:
            victim = self  # every other connection is being answered: no room
        victim.transport.close()
        # Gone now, not when the loop gets to connection_lost: uvicorn's limit_concurrency
        # counts this set for the requests that arrive meanwhile.
        self.connections.discard(victim)


def protocol_class(options: ServeOptions) -> type[GuardedH11Protocol]:
    """:class:`GuardedH11Protocol` with ``options``' limits (uvicorn instantiates the class itself)."""
    return type("GuardedH11Protocol", (GuardedH11Protocol,), {
        "header_timeout": options.header_timeout, "max_connections": options.max_connections})


def uvicorn_config(app: Any, options: ServeOptions) -> uvicorn.Config:
    """The uvicorn configuration of ``etl serve`` (the tests run the same one)."""
    return uvicorn.Config(
        app, host=options.host, port=options.port, log_config=None, access_log=False, lifespan="on",
        timeout_graceful_shutdown=int(options.graceful_timeout), server_header=False,
        http=protocol_class(options), timeout_keep_alive=max(1, round(options.keep_alive)),
        limit_concurrency=options.max_connections + 1, h11_max_incomplete_event_size=MAX_HEADER_BYTES,
    )


class ReceiverServer(uvicorn.Server):
    """uvicorn's server, saying where it listens, and taking a stop signal as a clean stop."""

    def __init__(self, config: uvicorn.Config, listen_url: str) -> None:
        super().__init__(config)
        self.listen_url = listen_url

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets)
        if not self.should_exit:
            get_logger().info(f"listening on {self.listen_url}", url=self.listen_url)

    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        with super().capture_signals():
            try:
                yield
            finally:
                # uvicorn re-raises the signals it caught once it has shut down; we have
                # drained and stopped cleanly by now, so the process exits 0 instead.
                self._captured_signals.clear()


class _UvicornToLog(logging.Handler):
    """uvicorn's own warnings ("Invalid HTTP request received.") as this project's log lines (JSON under
    systemd), not bare text; its start-up chatter (info) is left out: ``listening on`` says it."""

    def emit(self, record: logging.LogRecord) -> None:
        log = get_logger()
        write = log.error if record.levelno >= logging.ERROR else log.warning
        write(record.getMessage(), source="uvicorn", **({"exc_info": record.exc_info} if record.exc_info else {}))


def route_uvicorn_logs() -> None:
    uv = logging.getLogger("uvicorn")
    uv.handlers[:] = [_UvicornToLog()]
    uv.setLevel(logging.WARNING)
    uv.propagate = False


def serve(engine: Engine, workspaces: Sequence[Settings], receiver: ReceiverConfig, options: ServeOptions, *,
          transport: httpx.BaseTransport | None = None, clock: Clock) -> None:
    """Serve until SIGTERM/SIGINT: ``receiver.workspaces``' deliveries, and one engine thread per workspace
    on its settings (``workspaces``, one each: ``Settings.workspace`` names it, its key and rate)."""
    sock = listen(options.host, options.port)
    route_uvicorn_logs()
    engine, intake_engine = serving_engines(engine)
    metrics = Metrics(engine, clock)
    workers = [SyncWorker(engine, settings, metrics, transport=transport, poll_interval=options.poll_interval,
                          clock=clock) for settings in workspaces]
    housekeeper = Housekeeper(engine, metrics, receiver.retention, clock=clock,
                              workspaces=[ws.name for ws in receiver.workspaces])
    app = create_app(engine, receiver, metrics, workers, housekeeper, clock=clock, intake_engine=intake_engine)
    try:
        ReceiverServer(uvicorn_config(app, options), listen_url(options.host, sock)).run(sockets=[sock])
    finally:
        sock.close()
        if intake_engine is not None:
            intake_engine.dispose()
            engine.dispose()


def serving_engines(engine: Engine) -> tuple[Engine, Engine | None]:
    """The engines a server uses: (everything, deliveries).  On SQLite both follow the file
    (``db.create_engine(follow_file=True)``) and the deliveries' one waits briefly for a lock;
    elsewhere ``engine`` does everything (the second is None)."""
    if engine.dialect.name != "sqlite":
        return engine, None
    url = engine.url.render_as_string(hide_password=False)
    return (db.create_engine(url, follow_file=True),
            db.create_engine(url, follow_file=True, busy_timeout_s=INTAKE_BUSY_TIMEOUT_S))


def listen_url(host: str, sock: socket.socket) -> str:
    """``http://HOST:PORT`` of a listening socket (IPv6 hosts in brackets)."""
    port = sock.getsockname()[1]
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


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
