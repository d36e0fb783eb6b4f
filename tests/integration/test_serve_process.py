"""`etl serve` as the operator runs it: a subprocess, configured through the environment,
the simulated API on a real local socket, SIGTERM in the middle of a burst.
"""

from __future__ import annotations

import json
import signal
import socket
import subprocess
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
        assert code == 0, (code, err[-2000:])  # a clean stop (issue 20 #3)
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


# --- issue 18 #1 and #3, issue 20 #3 and #11: what the operator sees of a hostile client ---------


def _serve_proc(tmp_path: Path, api_url: str, name: str, *extra: str) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    env = etl_env(f"sqlite:///{tmp_path / 'serve.db'}", api_url, API_KEY,
                  OPENPHONE_WEBHOOK_SECRETS=f"{SECRET_A},{WHSEC}")
    proc = start_etl(["serve", "--port", str(port), *extra], env, tmp_path, name)
    url = f"http://127.0.0.1:{port}"
    wait_for(lambda: healthy(url), 30, "the server to answer /healthz", proc)
    return proc, url


def _log_events(err: str) -> list[dict[str, object]]:
    return [json.loads(line) for line in err.splitlines() if line.startswith("{")]


def test_huge_timestamps_and_a_client_gone_mid_body_are_one_line_each_and_sigterm_exits_0(
        tmp_path: Path) -> None:
    """Before: a 500 and a 45-line traceback per huge timestamp, a traceback for the client that
    went away, exit 143 on SIGTERM, and no line saying where the server listens."""
    fake = FakeOpenPhone(api_key=API_KEY)
    with serve(fake) as api_url:
        proc, url = _serve_proc(tmp_path, api_url, "hostile")
        try:
            body = webhooks.body_bytes(webhooks.summary_completed("AChuge1"))
            for headers in ({"openphone-signature": "hmac;1;9999999999999999;AAAA"},
                            {"webhook-id": "msg_1", "webhook-timestamp": "999999999999",
                             "webhook-signature": "v1,AAAA"}):
                answer = httpx.post(url + "/webhooks/openphone", content=body, headers=headers, timeout=10)
                assert (answer.status_code, answer.json()["error"]) == (401, "stale_timestamp"), answer.text
            with socket.create_connection(("127.0.0.1", int(url.rsplit(":", 1)[1]))) as gone:
                gone.sendall(b"POST /webhooks/openphone HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n"
                             b"openphone-signature: hmac;1;1;AAAA\r\n\r\n" + b"{" * 10)
                time.sleep(0.2)
            scraped = ""

            def refusals_counted() -> bool:
                nonlocal scraped
                scraped = httpx.get(url + "/metrics", timeout=10).text
                return 'etl_webhook_refusals_total{reason="disconnected",workspace="default"} 1.0' in scraped
            wait_for(refusals_counted, 10, "the disconnect to be counted", proc)
            assert 'etl_webhook_refusals_total{reason="stale_timestamp",workspace="default"} 2.0' in scraped
            proc.send_signal(signal.SIGTERM)
            code = stop(proc, timeout=60)
        finally:
            if proc.poll() is None:
                proc.kill()
    out, err = output_of(tmp_path, "hostile")
    assert code == 0, err[-2000:]
    assert "Traceback" not in err + out
    events = _log_events(err)
    port = url.rsplit(":", 1)[1]
    assert [e["event"] for e in events if str(e["event"]).startswith("listening")] == [
        f"listening on http://127.0.0.1:{port}"]
    assert len([e for e in events if e.get("reason") == "stale_timestamp"]) == 2
    assert len([e for e in events if "disconnected" in str(e["event"])]) == 1
    assert events[-1]["event"] == "receiver stopped"


def test_ctrl_c_is_a_clean_stop_with_exit_0(tmp_path: Path) -> None:
    """Ctrl-C is a clean stop of the service: exit 0, no `Aborted!` (it printed that and exited 1)."""
    fake = FakeOpenPhone(api_key=API_KEY)
    with serve(fake) as api_url:
        proc, _ = _serve_proc(tmp_path, api_url, "ctrl-c")
        try:
            proc.send_signal(signal.SIGINT)
            code = stop(proc, timeout=60)
        finally:
            if proc.poll() is None:
                proc.kill()
    out, err = output_of(tmp_path, "ctrl-c")
    assert code == 0, err[-2000:]
    assert "Aborted!" not in err + out
    assert _log_events(err)[-1]["event"] == "receiver stopped"


def _accepted(port: int) -> int:
    """Connections the server on ``port`` holds open (established, its side), from /proc/net/tcp."""
    count = 0
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        local, _remote, state = line.split()[1:4]
        count += int(local.split(":")[1], 16) == port and state == "01"
    return count


def test_slow_and_idle_clients_are_cut_off_and_bounded(tmp_path: Path) -> None:
    """Slow clients are cut off: idle sockets and bodies trickled a byte at a time stayed open for ever, until
    the file limit made valid deliveries and /healthz time out."""
    fake = FakeOpenPhone(api_key=API_KEY)
    with serve(fake) as api_url:
        proc, url = _serve_proc(tmp_path, api_url, "slow", "--read-timeout", "1", "--max-connections", "20")
        address = ("127.0.0.1", int(url.rsplit(":", 1)[1]))
        sockets: list[socket.socket] = []
        try:
            port = address[1]
            for n in range(60):
                s = socket.create_connection(address)
                if n % 3 == 1:  # headers, a byte at a time (a slowloris)
                    s.sendall(b"POST /webhooks/open")
                elif n % 3 == 2:  # whole headers, then a body that never comes
                    s.sendall(b"POST /webhooks/openphone HTTP/1.1\r\nHost: x\r\nContent-Length: 500\r\n\r\n{")
                sockets.append(s)
            with socket.create_connection(address) as garbage:  # uvicorn's own warning: a log line too
                garbage.sendall(b"NOT HTTP AT ALL\r\n\r\n")
                garbage.recv(4096)
            # Valid traffic goes on meanwhile (it takes the place of the oldest idle connection).
            started = time.monotonic()
            body = webhooks.body_bytes(webhooks.summary_completed("ACslow1"))
            answer = webhooks.deliver(url + "/webhooks/openphone", body, v1_key=SECRET_A)
            assert answer.json() == {"status": "queued"}, answer.text
            assert httpx.get(url + "/healthz", timeout=5).status_code == 200
            assert time.monotonic() - started < 3
            assert _accepted(port) <= 20
            time.sleep(1.5)  # past --read-timeout: every slow client is cut off
            closed, timed_out = 0, 0
            for s in sockets:
                s.settimeout(5)
                try:
                    data = s.recv(4096)
                except ConnectionResetError:
                    data = b""
                closed += 1
                timed_out += data.startswith(b"HTTP/1.1 408")
            assert closed == 60
            assert timed_out >= 1  # a trickled body that was still open gets its answer
            wait_for(lambda: _accepted(port) == 0, 3, "every slow connection to be closed", proc)
            proc.send_signal(signal.SIGTERM)
            assert stop(proc, timeout=60) == 0
        finally:
            for s in sockets:
                s.close()
            if proc.poll() is None:
                proc.kill()
    out, err = output_of(tmp_path, "slow")
    assert "Traceback" not in err + out
    assert [line for line in err.splitlines() if not line.startswith("{")] == []  # every line is JSON
    assert [e["event"] for e in _log_events(err) if e.get("source") == "uvicorn"] == ["Invalid HTTP request received."]
