"""Issue 25, finding 6: a server that drips one byte a second never extends a run past its stop.

A real `etl sync` process against a real server on loopback that answers 200
at once and then sends its body one byte a second (each byte resets a per-read
timeout, so only a deadline on the whole request, and a stop checked while
the body arrives, end it).  Each run must end within a few seconds of its
stop: ``--max-runtime``, SIGTERM, SIGINT.
"""

from __future__ import annotations

import json
import signal
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from tests.support.db import API_KEY
from tests.support.proc import etl_env, run_etl, start_etl

SLACK_S = 6.0  # a loaded CI machine: start-up and shut-down, well under the 20 s read timeout


class _Drip(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Connection", "close")
        self.end_headers()
        try:
            for _ in range(600):
                if self.server.closing.is_set():  # type: ignore[attr-defined]
                    return
                self.wfile.write(b" ")
                self.wfile.flush()
                time.sleep(1.0)
        except OSError:
            return

    def log_message(self, *_args: object) -> None:
        pass


@pytest.fixture
def dripping() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Drip)
    server.daemon_threads = True
    server.closing = threading.Event()  # type: ignore[attr-defined]
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.closing.set()  # type: ignore[attr-defined]
        server.shutdown()
        server.server_close()


@pytest.fixture
def env(tmp_path: Path, dripping: str) -> dict[str, str]:
    env = etl_env(f"sqlite:///{tmp_path / 'etl.db'}", dripping, API_KEY)
    assert run_etl(["enqueue", "ACdrip0001", "ACdrip0002"], env).returncode == 0
    return env


def test_max_runtime_ends_the_run_despite_a_dripping_body(env: dict[str, str]) -> None:
    result = run_etl(["sync", "--max-runtime", "3"], env, timeout=120)
    # The run's own duration (process start-up under load is not the run's): within seconds of 3.
    finished = [json.loads(line) for line in result.stderr.splitlines()
                if line.startswith("{") and '"run finished"' in line]
    assert finished, result.stderr[-2000:]
    took = finished[-1]["duration_s"]
    assert took < 3 + SLACK_S, (took, result.stderr[-2000:])
    assert result.returncode in (0, 1), result.stderr[-2000:]
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_a_signal_ends_the_run_mid_request(env: dict[str, str], tmp_path: Path, sig: signal.Signals) -> None:
    proc = start_etl(["sync"], env, tmp_path, "drip")
    try:
        # Well into the dripping answers: the run has started (start-up is slow on a loaded machine).
        deadline = time.monotonic() + 60
        while '"run started"' not in (tmp_path / "drip.err").read_text() and time.monotonic() < deadline:
            time.sleep(0.2)
        time.sleep(2)
        assert proc.poll() is None, "the run ended before the signal"
        sent = time.monotonic()
        proc.send_signal(sig)
        proc.wait(timeout=60)
        took = time.monotonic() - sent
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    err = (tmp_path / "drip.err").read_text()
    assert took < SLACK_S, (took, err[-2000:])
    assert "Traceback" not in err
