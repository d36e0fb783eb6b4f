"""The simulated API on a real socket: the standard library's ``ThreadingHTTPServer``.

HTTP parsing, keep-alive and framing are the library's; this module only
carries out ``FakeOpenPhone.route``'s decisions: answer, drop the connection
without an answer, or hold the answer (latency, hangs). One thread per
connection: clients keep connections alive, so threads are few and reused.
``serve(fake)`` runs it on a background thread for tests; ``stop`` aborts open
connections, so a hanging request never blocks shutdown.
"""

from __future__ import annotations

import contextlib
import select
import socket
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from etl.testing._fake import FakeOpenPhone, Reply
from etl.testing._faults import DROP

_MAX_BODY = 1024 * 1024


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request: object, client_address: object) -> None:
        # A client hanging up mid-answer (a timeout, a body it refused) is
        # routine here; anything else is a bug of the fake and is printed.
        if not isinstance(sys.exc_info()[1], ConnectionError | TimeoutError):
            super().handle_error(request, client_address)  # type: ignore[arg-type]

    # Old sockets in TIME_WAIT must not block a restart on the same port.
    allow_reuse_address = True
    # socketserver's default backlog of 5 drops connects of a burst (a 1 s SYN retry each).
    request_queue_size = 128

    def __init__(self, address: tuple[str, int], fake: FakeOpenPhone) -> None:
        self.fake = fake
        self.stopping = threading.Event()
        self.connections: set[socket.socket] = set()
        self.conn_lock = threading.Lock()
        family = socket.AF_INET6 if ":" in address[0] else socket.AF_INET
        self.address_family = family
        super().__init__(address, _Handler)

    def abort_connections(self) -> None:
        with self.conn_lock:
            conns = list(self.connections)
        for conn in conns:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    protocol_version = "HTTP/1.1"  # keep-alive, Content-Length framing
    # The library's knob for answers to a malformed request line: a status line, not HTTP/0.9.
    default_request_version = "HTTP/1.1"
    # A buffered wfile (the library flushes it after each request) sends
    # headers and body in one write; Nagle would only add delay.
    wbufsize = 64 * 1024
    disable_nagle_algorithm = True

    def setup(self) -> None:
        super().setup()
        with self.server.conn_lock:
            self.server.connections.add(self.connection)

    def finish(self) -> None:
        with self.server.conn_lock:
            self.server.connections.discard(self.connection)
        with contextlib.suppress(OSError):
            super().finish()

    def do_GET(self) -> None:
        self._answer()

    do_POST = do_PUT = do_PATCH = do_DELETE = do_GET

    def _answer(self) -> None:
        length_text = self.headers.get("content-length") or "0"
        if not length_text.isdigit() or int(length_text) > _MAX_BODY:
            self.send_error(HTTPStatus.BAD_REQUEST, "Bad Content-Length")
            return
        body = self.rfile.read(int(length_text)) if int(length_text) else b""
        fake = self.server.fake
        reply = fake.route(self.command, self.path, self.headers.get("authorization"), body, self._client_gone,
                           version=self.headers.get("quo-api-version"))
        try:
            wait = reply.delay + reply.hold
            if wait and not self._hold(wait):
                self.close_connection = True  # the client left, or the server stops: abandon
                return
            if reply.action == DROP:
                self.close_connection = True
                return
            self._write(reply)
        finally:
            fake.land(reply)

    def _client_gone(self) -> bool:
        """True if the client closed its end (EOF waiting on the socket); never blocks."""
        try:
            readable, _, _ = select.select([self.connection], [], [], 0)
            return bool(readable) and not self.connection.recv(1, socket.MSG_PEEK)
        except (OSError, ValueError):
            return True

    def _hold(self, seconds: float) -> bool:
        """Wait before answering; False as soon as the client hangs up or the server stops.

        A client that timed out and retries must not find its first request
        still "in flight" (the fake counts overlapping requests per id).
        """
        clock = self.server.fake.clock.clock
        deadline = clock.monotonic() + seconds
        while (left := deadline - clock.monotonic()) > 0:
            readable, _, _ = select.select([self.connection], [], [], left)
            if not readable:
                break
            try:
                if not self.connection.recv(1, socket.MSG_PEEK):
                    return False  # EOF: closed by the client, or shut down by stop()
            except OSError:
                return False
            # A pipelined request is waiting: nothing more to learn from the socket.
            return not clock.idle(deadline - clock.monotonic(), self.server.stopping)
        return not self.server.stopping.is_set()

    def _write(self, reply: Reply) -> None:
        self.send_response_only(reply.status)
        self.send_header("content-length", str(len(reply.body)))
        for name, value in reply.headers:
            self.send_header(name, value)
        if self.close_connection:
            self.send_header("connection", "close")
        self.end_headers()
        self.wfile.write(reply.body)

    def send_error(self, code: int, message: str | None = None, explain: str | None = None) -> None:
        """The library's refusals (malformed request line, bad version...) in the API's error shape."""
        self.server.fake.count_refused(str(int(code)))
        body = self.server.fake.error_body(int(code), message or HTTPStatus(code).phrase)
        self.close_connection = True
        self.send_response_only(code)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(body)))
        self.send_header("connection", "close")
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass  # one stderr line per request would cost more than the answer


class Running:
    """A started server on a background thread; ``url`` is its base URL."""

    def __init__(self, fake: FakeOpenPhone, host: str = "127.0.0.1", port: int = 0) -> None:
        self._server = _Server((host, port), fake)
        bound = self._server.server_address[1]
        shown = f"[{host}]" if ":" in host else host
        self.url = f"http://{shown}:{bound}"
        self._thread = threading.Thread(target=self._server.serve_forever, name="fake-openphone", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._server.stopping.set()
        self._server.shutdown()
        self._server.server_close()
        self._server.abort_connections()
        self._thread.join(timeout=30)


@contextmanager
def serve(fake: FakeOpenPhone, host: str = "127.0.0.1", port: int = 0) -> Iterator[str]:
    """Run fake on a real HTTP/1.1 server in a background thread; yields the base
    URL (``http://127.0.0.1:54321``); stops cleanly on exit, aborting open connections."""
    running = Running(fake, host, port)
    try:
        yield running.url
    finally:
        running.stop()
