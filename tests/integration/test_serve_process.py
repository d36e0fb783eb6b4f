"""`etl serve` as the operator runs it: a subprocess, configured through the environment,
the simulated API on a real local socket, SIGTERM in the middle of a burst.
"""

from __future__ import annotations

import signal
import socket
import threading
import time
from pathlib import Path

import httpx
import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from etl.testing import FakeOpenPhone, serve, webhooks
from tests.support.proc import error_lines, etl_env, free_port, healthy, output_of, run_etl, start_etl, stop, wait_for

API_KEY = "test-key-0123456789"
WHSEC = webhooks.new_standard_secret(b"secret-std")
SECRET_A = webhooks.new_standard_secret(b"secret-a").removeprefix("whsec_")




def test_serve_refuses_to_start_without_a_usable_secret(tmp_path: Path) -> None:
    env = etl_env(f"sqlite:///{tmp_path / 'x.db'}", "http://127.0.0.1:9", API_KEY)
    env.pop("OPENPHONE_WEBHOOK_SECRETS", None)
    result = run_etl(["serve", "--port", str(free_port())], env, timeout=60)
    assert result.returncode == 2
    assert error_lines(result.stderr) == [
        "Error: no webhook secret: set OPENPHONE_WEBHOOK_SECRETS (comma-separated) or pass --webhook-secret "
        "(repeatable); `etl webhooks register` prints them"]
    result = run_etl(["serve", "--webhook-secret", SECRET_A, "--webhook-secret", "not-base64!"], env, timeout=60)
    assert result.returncode == 2
    assert error_lines(result.stderr) == [
        "Error: webhook secret #2 is not base64 (expected the signing key as shown by OpenPhone, "
        "optionally prefixed whsec_)"]
    assert "not-base64!" not in result.stderr


def test_serve_usage_errors_are_one_line(tmp_path: Path) -> None:
    env = etl_env(f"sqlite:///{tmp_path / 'x.db'}", "http://127.0.0.1:9", API_KEY,
                  OPENPHONE_WEBHOOK_SECRETS=SECRET_A)
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = run_etl(["serve", "--port", str(port)], env, timeout=60)
    assert (result.returncode, error_lines(result.stderr)) == (
        2, [f"Error: cannot listen on 127.0.0.1:{port}: Address already in use"])
    assert '"receiver started"' not in result.stderr  # refused before anything started
    result = run_etl(["serve", "--tolerance", "3600", "--delivery-retention", "1"], env, timeout=60)
    assert (result.returncode, error_lines(result.stderr)) == (
        2, ["Error: --delivery-retention must be at least twice --tolerance, or a replay could outlive its record"])
    no_key = {k: v for k, v in env.items() if k != "OPENPHONE_API_KEY"}
    result = run_etl(["serve", "--port", str(free_port())], no_key, timeout=60)
    assert (result.returncode, error_lines(result.stderr)) == (
        2, ["Error: no API key: set OPENPHONE_API_KEY or pass --api-key"])


@pytest.mark.slow
@pytest.mark.realtime
def test_sigterm_during_a_burst_then_restart_loses_nothing_answered(db_url: str, engine: Engine,
                                                                     tmp_path: Path) -> None:
    fake = FakeOpenPhone(api_key=API_KEY, latency_ms=20)
    with serve(fake) as api_url:
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        env = etl_env(db_url, api_url, API_KEY, OPENPHONE_WEBHOOK_SECRETS=f"{SECRET_A},{WHSEC}")
        args = ["serve", "--port", str(port), "--rate", "20"]
        proc = start_etl(args, env, tmp_path, "first")
        try:
            wait_for(lambda: healthy(url), 30, "the server to answer /healthz", proc)
            answered: set[str] = set()
            failures: list[str] = []
            started = time.monotonic()

            def send(k: int) -> None:
                with httpx.Client(timeout=10) as client:
                    for n in range(k, 1000, 4):
                        delay = started + n * 0.01 - time.monotonic()
                        if delay > 0:
                            time.sleep(delay)
                        body = webhooks.summary_completed(f"ACterm{n}")
                        try:
                            r = webhooks.deliver(url + "/webhooks/openphone", body, v1_key=SECRET_A, client=client)
                        except httpx.TransportError:
                            return  # the server stopped accepting
                        if r.status_code == 200:
                            answered.add(f"ACterm{n}")
                        else:
                            failures.append(r.text)

            senders = [threading.Thread(target=send, args=(k,)) for k in range(4)]
            for t in senders:
                t.start()
            wait_for(lambda: len(answered) >= 150, 30, "150 answered deliveries", proc)
            proc.send_signal(signal.SIGTERM)
            for t in senders:
                t.join(60)
            code = stop(proc, timeout=90)
        finally:
            if proc.poll() is None:
                proc.kill()
        out, err = output_of(tmp_path, "first")
        # uvicorn re-raises the SIGTERM it handled once it has drained: killed by the signal, by design.
        assert code in (0, -signal.SIGTERM), (code, err[-2000:])
        assert failures == []
        assert SECRET_A not in err + out and WHSEC not in err + out
        assert '"event": "receiver stopped"' in err
        assert 150 <= len(answered) < 1000
        with engine.connect() as conn:
            query = sa.text("SELECT call_id, state, lease_owner FROM summary_queue")
            rows = {r.call_id: r for r in conn.execute(query)}
        assert answered <= set(rows), sorted(answered - set(rows))[:10]
        assert [c for c, r in rows.items() if r.lease_owner is not None] == []  # every lease released
        with engine.connect() as conn:
            runs = conn.execute(sa.text("SELECT finished_at, stop_reason FROM sync_runs")).all()
        # Every engine run of the server was closed (the one SIGTERM caught says why); no result
        # fetched before the stop was discarded.
        assert runs and all(r.finished_at is not None for r in runs), runs
        # Deliveries come at 100/s and the engine fetches at 20/s: it was mid-run when SIGTERM came.
        assert {r.stop_reason for r in runs} - {None} == {"server stopping"}
        assert "lease lost" not in err
        # A restart lands everything that was answered 2xx (unthrottled: the pace was the point of the first).
        proc = start_etl(["serve", "--port", str(port), "--rate", "0"], env, tmp_path, "second")
        try:
            def all_done() -> bool:
                with engine.connect() as conn:
                    done = {r[0] for r in conn.execute(sa.text("SELECT call_id FROM summary_queue "
                                                                  "WHERE state = 'done'"))}
                return answered <= done
            wait_for(all_done, 120, "every answered id to land after the restart", proc)
        finally:
            proc.send_signal(signal.SIGTERM)
            stop(proc, timeout=90)
    with engine.connect() as conn:
        stored = {r[0] for r in conn.execute(sa.text("SELECT call_id FROM call_summaries"))}
    assert answered <= stored
