"""Benchmark of `etl serve`: from a signed ``call.summary.completed`` delivery to its rows committed.

``python bench/webhooks.py [--db sqlite,postgresql,mysql] [--quick]`` prints
one table in run.py's style (it reuses harness.py's simulator process, throwaway
databases and table).  Everything is a separate process, as in production:
the simulated API limited to 10 requests/s (burst 10), ``etl serve --rate 10``
on a loopback port, and this script as OpenPhone: it signs each delivery
(openphone-v1 scheme), sends it, and polls the database until the summary's
row is there.  Landing latency = that moment minus the send.

Two workloads per database:

* **idle queue**: deliveries one after another, each to an empty queue;
  target (issue 11): p95 <= 5 s;
* **backlog**: 1,000 other ids due (``etl enqueue``), the deliveries sent
  every 2 s without waiting while the backlog drains; reported only (the
  issue sets no target).  A summary event jumps to the head of the due line,
  so what it waits for is the batch the engine already claimed ahead of it.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import sqlalchemy as sa

sys.path.insert(0, str(Path(__file__).resolve().parent))
from harness import API_KEY, ETL, Databases, Row, Simulator, machine_info, print_table

from etl.testing import webhooks

SECRET = base64.b64encode(hashlib.sha256(b"bench-webhook-secret").digest()).decode()
TARGET_P95_S = 5.0


def signed(call_id: str) -> tuple[bytes, dict[str, str]]:
    body = webhooks.body_bytes(webhooks.summary_completed(call_id))
    return body, {**webhooks.sign_v1(body, SECRET), "content-type": "application/json"}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))]


class Server:
    def __init__(self, workdir: Path, db_url: str, api_url: str, name: str) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        env = {**os.environ, "ETL_DATABASE_URL": db_url, "OPENPHONE_API_KEY": API_KEY, "OPENPHONE_BASE_URL": api_url,
               "OPENPHONE_WEBHOOK_SECRETS": SECRET, "ETL_LOG_FORMAT": "json"}
        self.log = open(workdir / f"{name}.serve.log", "wb")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen([ETL, "serve", "--port", str(self.port), "--rate", "10",
                                      "--poll-interval", "1"], env=env, stdout=self.log, stderr=self.log,
                                     stdin=subprocess.DEVNULL)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                if httpx.get(self.url + "/healthz", timeout=1).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            if self.proc.poll() is not None:
                break
            time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"etl serve did not start; see {workdir / (name + '.serve.log')}")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(90)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        self.log.close()


def landing(client: httpx.Client, engine: sa.Engine, server: Server, call_id: str, timeout: float = 120) -> float:
    body, headers = signed(call_id)
    started = time.perf_counter()
    response = client.post(server.url + "/webhooks/openphone", content=body, headers=headers)
    if response.status_code != 200:
        raise RuntimeError(f"delivery refused: {response.status_code} {response.text}")
    query = sa.text("SELECT 1 FROM call_summaries WHERE call_id = :c")
    while time.perf_counter() - started < timeout:
        with engine.connect() as conn:
            if conn.execute(query, {"c": call_id}).first():
                return time.perf_counter() - started
        time.sleep(0.01)
    raise RuntimeError(f"{call_id} did not land within {timeout} s")


def backlog_landings(client: httpx.Client, engine: sa.Engine, server: Server, n: int,
                     every: float = 2.0, timeout: float = 300) -> tuple[list[float], int]:
    """Send ``n`` deliveries every ``every`` s without waiting, while the backlog drains; time each landing.

    Returns the latencies and how many backlog ids were still pending when the
    last delivery was sent (so the figures were taken under a backlog).
    """
    sent: dict[str, float] = {}
    landed: dict[str, float] = {}
    started = time.perf_counter()
    left = 0
    query = sa.text("SELECT call_id FROM call_summaries WHERE call_id LIKE 'AChookbacklog%'")
    pending = sa.text("SELECT count(*) FROM summary_queue WHERE state = 'pending' AND call_id LIKE 'ACbacklog%'")
    while len(landed) < n and time.perf_counter() - started < timeout:
        if len(sent) < n and time.perf_counter() >= started + len(sent) * every:
            call_id = f"AChookbacklog{len(sent)}"
            body, headers = signed(call_id)
            sent[call_id] = time.perf_counter()
            response = client.post(server.url + "/webhooks/openphone", content=body, headers=headers)
            if response.status_code != 200:
                raise RuntimeError(f"delivery refused: {response.status_code} {response.text}")
            if len(sent) == n:
                with engine.connect() as conn:
                    left = conn.execute(pending).scalar_one()
        with engine.connect() as conn:
            now = time.perf_counter()
            for (call_id,) in conn.execute(query):
                landed.setdefault(call_id, now)
        time.sleep(0.01)
    if len(landed) < n:
        raise RuntimeError(f"only {len(landed)} of {n} deliveries landed within {timeout} s")
    return [landed[c] - sent[c] for c in sent], left


def run_backend(backend: str, dbs: Databases, workdir: Path, n: int, backlog: int) -> list[Row]:
    rows: list[Row] = []
    for workload in ("idle", "backlog"):
        url = dbs.create(backend)
        subprocess.run([ETL, "db", "upgrade", "--database-url", url], check=True, capture_output=True)
        engine = sa.create_engine(url)
        with Simulator(workdir, rate=10, burst=10, latency_ms=30, name=f"{backend}-{workload}") as sim:
            server = Server(workdir, url, sim.url, f"{backend}-{workload}")
            try:
                with httpx.Client(timeout=10) as client:
                    if workload == "backlog":
                        ids = workdir / "backlog.txt"
                        ids.write_text("".join(f"ACbacklog{i}\n" for i in range(backlog)))
                        subprocess.run([ETL, "enqueue", "--file", str(ids), "--database-url", url], check=True,
                                       capture_output=True)
                        time.sleep(2)  # the server's poll picks the backlog up and starts on it
                    if workload == "idle":
                        times = []
                        for i in range(n):
                            times.append(landing(client, engine, server, f"AChookidle{i}"))
                            time.sleep(0.2)
                        left = 0
                    else:
                        times, left = backlog_landings(client, engine, server, n)
            finally:
                server.stop()
                engine.dispose()
        p50, p95 = statistics.median(times), percentile(times, 0.95)
        figures = f"n={n} p50 {p50:.2f} s, p95 {p95:.2f} s, max {max(times):.2f} s" + (
            f"; {left} of {backlog} backlog ids still pending at the last delivery" if workload == "backlog" else "")
        if workload == "idle":
            rows.append(Row("webhook → rows, idle queue, 10 req/s", backend, figures, f"p95 <= {TARGET_P95_S:.0f} s",
                            p95 <= TARGET_P95_S, {"p50": p50, "p95": p95, "times": times}))
        else:
            rows.append(Row(f"webhook → rows, {backlog} due ids, 10 req/s", backend, figures, "(reported)", None,
                            {"p50": p50, "p95": p95, "times": times}))
        dbs.drop(url)
    return rows


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--db", default="sqlite,postgresql,mysql")
    p.add_argument("--quick", action="store_true", help="10 deliveries per workload instead of 30")
    p.add_argument("--backlog", type=int, default=1000)
    p.add_argument("--json", type=Path, default=None)
    args = p.parse_args(argv)
    info = machine_info()
    print(f"machine: {info['nproc']} CPUs, {info['cpu_model']}; load {info['loadavg_start'][0]:.2f}; {info['date']}")
    workdir = Path(tempfile.mkdtemp(prefix="etl-bench-webhooks-"))
    dbs = Databases(workdir, {"postgresql": os.environ.get("ETL_BENCH_POSTGRES_SERVER",
                                                           "postgresql+psycopg://postgres@127.0.0.1:5432"),
                              "mysql": os.environ.get("ETL_BENCH_MYSQL_SERVER", "mysql+pymysql://root@127.0.0.1:3306")},
                    keep=False)
    rows: list[Row] = []
    try:
        for backend in args.db.split(","):
            print(f"{backend}: idle queue, then {args.backlog} due ids", flush=True)
            try:
                rows.extend(run_backend(backend, dbs, workdir, 10 if args.quick else 30, args.backlog))
            except Exception as exc:  # one broken backend must not hide the others
                rows.append(Row("webhook → rows", backend, f"{type(exc).__name__}: {exc}", "-", None))
    finally:
        dbs.drop_all()
    print_table(rows)
    print(f"\nload average at end {os.getloadavg()[0]:.2f} on {info['nproc']} CPUs "
          "(other work on the machine makes every figure noisy)")
    if args.json is not None:
        args.json.write_text(json.dumps({"machine": info, "rows": [r.__dict__ for r in rows]}, default=str,
                                        indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())

