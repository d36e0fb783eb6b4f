"""Soak of `etl serve` (issue 18 "Done means"): N minutes of mixed traffic, a database outage, slow clients.

``python bench/soak.py [--minutes 10] [--database-url URL]`` prints one table
of checks.  Everything is a separate process, as in production: the simulated
API (``python -m etl.testing``, 10 requests/s), ``etl serve --rate 10`` on a
loopback port, and this script as OpenPhone and as the attackers:

* **valid deliveries**, two senders, each a new call id about every second:
  ``call.summary.completed`` (openphone-v1) or ``call.completed`` (Standard
  Webhooks); a ``503`` or a dropped connection is retried every 2 s, as
  OpenPhone retries;
* **duplicates**: an earlier event signed again (openphone-v1 with a fresh
  timestamp; Standard Webhooks with the same ``webhook-id``, later) and an
  exact replay of an earlier signed message;
* **hostile deliveries**: huge timestamps, a wrong signature, 100 k nested
  ``[``, NUL and unpaired surrogates in ``type`` and in the call object,
  ``duration: 10**30``, year 1 and 9999, a 2 MiB body, a body that is not JSON;
* **slow clients**: two bursts of 150 sockets (idle, headers a byte at a time,
  a body a byte at a time), each held for 30 s;
* **a database outage** in the middle, for ``--outage`` seconds: a SQLite
  database's directory is moved away and back (so no connection can open it),
  a PostgreSQL/MariaDB one is reached through a TCP proxy that is cut and
  restored (the server itself keeps running).

Checks: every delivery answered ``queued``/``duplicate`` has its summary in
``call_summaries`` (waited for up to 2 minutes after the traffic stops), no
``500``, no traceback in the server's log, ``/healthz`` green within 30 s of
the database coming back, and ``etl serve`` exits 0 on SIGTERM.  A
PostgreSQL/MariaDB URL must name a throwaway database: its tables are emptied.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import hashlib
import json
import os
import random
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import sqlalchemy as sa
from sqlalchemy.engine import make_url

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))
from harness import API_KEY, ETL, Row, Simulator, machine_info, print_table  # noqa: E402

from etl.testing import webhooks  # noqa: E402
from tests.support.db import empty_tables  # noqa: E402
from tests.support.tcpproxy import TcpProxy  # noqa: E402

V1_SECRET = base64.b64encode(hashlib.sha256(b"soak-v1-secret").digest()).decode()
STD_SECRET = webhooks.new_standard_secret(b"soak-standard-secret")
JSON = {"content-type": "application/json"}
HEALTHY_WITHIN_S = 30.0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Soak:
    def __init__(self, workdir: Path, db_url: str, minutes: float, outage_s: float) -> None:
        self.workdir = workdir
        self.db_url = db_url
        self.duration = minutes * 60
        self.outage_s = outage_s
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.hook = self.url + "/webhooks/openphone"
        self.stop = threading.Event()
        self.lock = threading.Lock()
        self.statuses: Counter[tuple[str, int]] = Counter()  # (kind, status) -> n
        self.mismatches: Counter[str] = Counter()  # hostile/duplicate answers other than expected
        self.accepted: set[str] = set()  # ids answered queued/duplicate
        self.gave_up: set[str] = set()  # valid ids never accepted after all retries
        self.sent: list[tuple[bytes, dict[str, str], str]] = []  # earlier valid messages (body, headers, scheme)
        self.health: list[tuple[float, int]] = []  # (monotonic, status)
        self.outage: tuple[float, float] | None = None  # (start, end), monotonic
        self.slow_cut = 0
        self.slow_open = 0
        self.proxy: TcpProxy | None = None
        self.serve_url = db_url
        self.sqlite_dir: Path | None = None
        if make_url(db_url).get_backend_name() == "sqlite":
            self.sqlite_dir = Path(make_url(db_url).database or "").parent
        else:
            self.proxy, self.serve_url = TcpProxy.for_url(db_url)

    # --- bookkeeping ------------------------------------------------------------------

    def count(self, kind: str, status: int) -> None:
        with self.lock:
            self.statuses[kind, status] += 1

    def post(self, client: httpx.Client, kind: str, body: bytes, headers: dict[str, str]) -> httpx.Response | None:
        try:
            answer = client.post(self.hook, content=body, headers=headers)
        except httpx.TransportError:
            self.count(kind, 0)  # no answer (connection refused/cut: the slow-client bursts)
            return None
        self.count(kind, answer.status_code)
        return answer

    # --- traffic ----------------------------------------------------------------------

    def valid(self, k: int) -> None:
        rng = random.Random(k)
        n = 0
        with httpx.Client(timeout=15) as client:
            while not self.stop.is_set():
                n += 1
                call_id = f"ACsoak{k}x{n}"
                if n % 2:
                    body = webhooks.body_bytes(webhooks.summary_completed(call_id))
                    headers, scheme = {**webhooks.sign_v1(body, V1_SECRET), **JSON}, "v1"
                else:
                    call = {"id": call_id, "object": "call", "direction": "incoming", "status": "completed",
                            "createdAt": "2026-11-25T10:00:00Z", "completedAt": "2026-11-25T10:04:00Z",
                            "duration": 240, "participants": ["+15555550100", "+15555550123"]}
                    body = webhooks.body_bytes(webhooks.call_completed(call))
                    headers, scheme = {**webhooks.sign_standard(body, STD_SECRET), **JSON}, "standard"
                self.deliver(client, call_id, body, headers, scheme)
                self.stop.wait(rng.uniform(0.5, 1.5))

    def deliver(self, client: httpx.Client, call_id: str, body: bytes, headers: dict[str, str], scheme: str) -> None:
        for attempt in range(60):
            if attempt:  # OpenPhone retries; each retry is signed again
                time.sleep(2)
                headers = {**webhooks.sign_v1(body, V1_SECRET), **JSON} if scheme == "v1" else {
                    **webhooks.sign_standard(body, STD_SECRET, msg_id=headers["webhook-id"]), **JSON}
            answer = self.post(client, "valid", body, headers)
            if answer is not None and answer.status_code == 200:
                if answer.json().get("status") in ("queued", "duplicate"):
                    with self.lock:
                        self.accepted.add(call_id)
                        self.sent.append((body, headers, scheme))
                return
            if answer is not None and answer.status_code not in (503,):
                self.mismatches[f"valid answered {answer.status_code}"] += 1
                return
        self.gave_up.add(call_id)

    def duplicates(self) -> None:
        rng = random.Random(7)
        signed: set[tuple[bytes, int]] = set()  # (body, timestamp) already re-signed: that again is a replay
        with httpx.Client(timeout=15) as client:
            while not self.stop.wait(2):
                with self.lock:
                    if not self.sent:
                        continue
                    body, headers, scheme = rng.choice(self.sent[-200:])
                replay = self.post(client, "replay", body, headers)
                if replay is not None and replay.status_code not in (401, 503):
                    self.mismatches[f"replay answered {replay.status_code}"] += 1
                later = int(time.time()) + rng.randint(1, 60)
                while (body, later) in signed:
                    later += 1
                signed.add((body, later))
                again = {**webhooks.sign_v1(body, V1_SECRET, later * 1000), **JSON} if scheme == "v1" else {
                    **webhooks.sign_standard(body, STD_SECRET, msg_id=headers["webhook-id"],
                                             timestamp=datetime.fromtimestamp(later, UTC)), **JSON}
                answer = self.post(client, "redelivery", body, again)
                if answer is not None and answer.status_code != 503 and (
                        answer.status_code != 200 or answer.json().get("status") != "duplicate"):
                    self.mismatches[f"redelivery answered {answer.status_code} {answer.text[:40]}"] += 1

    def hostile_cases(self, n: int) -> list[tuple[str, bytes, dict[str, str], set[int], str | None]]:
        """(name, body, headers, expected statuses, call id that must land or None)."""
        def v1(body: bytes) -> dict[str, str]:
            return {**webhooks.sign_v1(body, V1_SECRET), **JSON}

        def call(call_id: str, **changes: object) -> bytes:
            obj: dict[str, object] = {"id": call_id, "status": "completed", "createdAt": "2026-11-25T10:00:00Z",
                                      "duration": 30, "participants": ["+15555550100"]}
            obj.update(changes)
            return json.dumps(webhooks.call_completed(obj)).encode()

        plain = webhooks.body_bytes(webhooks.summary_completed(f"AChostile{n}"))
        nested = b'{"type":"call.completed","data":{"object":' + b"[" * 100_000 + b"]" * 100_000 + b"}}"
        nul_type = json.dumps(webhooks.event("call.completed\x00", {"id": f"AChostile{n}"})).encode()
        cases: list[tuple[str, bytes, dict[str, str], set[int], str | None]] = [
            ("huge v1 timestamp", plain, {"openphone-signature": "hmac;1;9999999999999999;AAAA", **JSON}, {401}, None),
            ("huge standard timestamp", plain, {"webhook-id": "m", "webhook-timestamp": "999999999999",
                                                "webhook-signature": "v1,AAAA", **JSON}, {401}, None),
            ("wrong signature", plain, {**webhooks.sign_v1(plain, base64.b64encode(b"x" * 32).decode()), **JSON},
             {401}, None),
            ("nested 100k", nested, v1(nested), {400}, None),
            ("NUL in type", nul_type, v1(nul_type), {200}, None),
            ("not JSON", b"{nope", v1(b"{nope"), {400}, None),
            ("2 MiB body", b"{" + b" " * (2 << 20) + b"}", v1(b"{}"), {413}, None),
        ]
        for name, changes in (("surrogate in call", {"userId": "US\ud800x"}), ("NUL in call", {"direction": "a\x00b"}),
                              ("duration 10**30", {"duration": 10**30}),
                              ("year 1", {"createdAt": "0001-01-01T00:00:00Z"}),
                              ("year 9999", {"completedAt": "9999-12-31T23:59:59-05:00"})):
            call_id = f"AChostile{n}{name.split()[0][:4]}"
            body = call(call_id, **changes)
            cases.append((name, body, v1(body), {200}, call_id))
        return cases

    def hostile(self) -> None:
        n = 0
        with httpx.Client(timeout=30) as client:
            while not self.stop.wait(3):
                n += 1
                for name, body, headers, expected, must_land in self.hostile_cases(n):
                    if must_land is not None:
                        self.deliver(client, must_land, body, headers, "v1")
                        continue
                    answer = self.post(client, "hostile", body, headers)
                    if answer is not None and answer.status_code not in expected | {503}:
                        self.mismatches[f"{name} answered {answer.status_code}"] += 1

    def slow_burst(self) -> None:
        sockets: list[socket.socket] = []
        for n in range(150):
            try:
                s = socket.create_connection(("127.0.0.1", self.port), timeout=5)
            except OSError:
                continue
            if n % 3 == 1:
                s.sendall(b"POST /webhooks/op")
            elif n % 3 == 2:
                s.sendall(b"POST /webhooks/openphone HTTP/1.1\r\nHost: x\r\nContent-Length: 900\r\n\r\n{")
            s.setblocking(False)
            sockets.append(s)
        self.slow_open += len(sockets)
        cut: set[int] = set()
        for _ in range(15):  # 30 s, a byte every 2 s
            if self.stop.wait(2):
                break
            for i, s in enumerate(sockets):
                if i in cut:
                    continue
                try:
                    if s.recv(4096) == b"":
                        cut.add(i)
                        continue
                except BlockingIOError:
                    pass
                except OSError:
                    cut.add(i)
                    continue
                with contextlib.suppress(OSError):
                    s.send(b" ")
        self.slow_cut += len(cut)
        for s in sockets:
            s.close()

    def healthz(self) -> None:
        with httpx.Client(timeout=5) as client:
            while not self.stop.wait(0.5):
                try:
                    status = client.get(self.url + "/healthz").status_code
                except httpx.TransportError:
                    status = 0
                self.health.append((time.monotonic(), status))

    # --- the outage -------------------------------------------------------------------

    def outage_start(self) -> None:
        if self.proxy is not None:
            self.proxy.cut()
        elif self.sqlite_dir is not None:
            self.sqlite_dir.rename(self.sqlite_dir.with_name(self.sqlite_dir.name + "-aside"))

    def outage_end(self) -> None:
        if self.proxy is not None:
            self.proxy.restore()
        elif self.sqlite_dir is not None:
            self.sqlite_dir.with_name(self.sqlite_dir.name + "-aside").rename(self.sqlite_dir)

    # --- the run ----------------------------------------------------------------------

    def run(self) -> list[Row]:
        prepare(self.db_url)
        with Simulator(self.workdir, rate=10, burst=10, latency_ms=30, name="soak-api") as sim:
            log_path = self.workdir / "serve.log"
            log = log_path.open("wb")
            env = {**os.environ, "ETL_DATABASE_URL": self.serve_url, "OPENPHONE_API_KEY": API_KEY,
                   "OPENPHONE_BASE_URL": sim.url, "OPENPHONE_WEBHOOK_SECRETS": f"{V1_SECRET},{STD_SECRET}",
                   "ETL_LOG_FORMAT": "json"}
            proc = subprocess.Popen([ETL, "serve", "--port", str(self.port), "--rate", "10", "--poll-interval", "5",
                                     "--read-timeout", "5"], env=env, stdout=log, stderr=log,
                                    stdin=subprocess.DEVNULL)
            try:
                wait(lambda: status_of(self.url) == 200, 60, "etl serve to start")
                started = time.monotonic()
                threads = [threading.Thread(target=self.valid, args=(k,)) for k in range(2)]
                threads += [threading.Thread(target=t) for t in (self.duplicates, self.hostile, self.healthz)]
                for t in threads:
                    t.start()
                schedule = [(0.3, self.slow_burst), (0.5, self.database_outage), (0.75, self.slow_burst)]
                for at, action in schedule:
                    delay = started + at * self.duration - time.monotonic()
                    if delay > 0 and self.stop.wait(delay):
                        break
                    threading.Thread(target=action).start() if action == self.slow_burst else action()
                self.stop.wait(max(0.0, started + self.duration - time.monotonic()))
                self.stop.set()
                for t in threads:
                    t.join(120)
                landed, missing = self.wait_landed()
                proc.send_signal(signal.SIGTERM)
                try:
                    code = proc.wait(120)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    code = -9
            finally:
                self.stop.set()
                if proc.poll() is None:
                    proc.kill()
                log.close()
                if self.proxy is not None:
                    self.proxy.close()
            return self.report(landed, missing, code, log_path, time.monotonic() - started)

    def database_outage(self) -> None:
        start = time.monotonic()
        self.outage_start()
        self.stop.wait(self.outage_s)
        self.outage_end()
        self.outage = (start, time.monotonic())

    def wait_landed(self) -> tuple[int, list[str]]:
        engine = sa.create_engine(self.db_url)
        try:
            deadline = time.monotonic() + 120
            while True:
                with engine.connect() as conn:
                    stored = set(conn.execute(sa.text("SELECT call_id FROM call_summaries")).scalars())
                missing = sorted(self.accepted - stored)
                if not missing or time.monotonic() > deadline:
                    return len(self.accepted & stored), missing
                time.sleep(1)
        finally:
            engine.dispose()

    def report(self, landed: int, missing: list[str], code: int, log_path: Path, elapsed: float) -> list[Row]:
        db = make_url(self.db_url).get_backend_name()
        text = log_path.read_text("utf-8", "replace")
        tracebacks = text.count("Traceback")
        lines = text.count("\n")
        answered = sum(n for (_, status), n in self.statuses.items() if status)
        by_status = Counter[int]()
        for (_, status), n in self.statuses.items():
            by_status[status] += n
        fives = by_status[500]
        green_after = None
        if self.outage is not None:
            end = self.outage[1]
            green = [t for t, status in self.health if t >= end and status == 200]
            green_after = green[0] - end if green else None
        during = [s for t, s in self.health if self.outage and self.outage[0] + 2 < t < self.outage[1]]
        kinds = ", ".join(f"{k} {n}" for k, n in sorted(Counter(k for (k, _) in self.statuses.elements()).items()))
        statuses = ", ".join(f"{s or 'no answer'}: {n}" for s, n in sorted(by_status.items()))
        rows = [
            Row("traffic", db, f"{elapsed / 60:.1f} min; {answered} answers ({kinds}); {statuses}", "(reported)", None),
            Row("every accepted delivery landed", db,
                f"{landed} of {len(self.accepted)} accepted ids have their summary; {len(self.gave_up)} never accepted"
                + (f"; missing e.g. {missing[:3]}" if missing else ""), "all", not missing),
            Row("no 500", db, f"{fives} answers 500", "0", fives == 0),
            Row("answers as expected", db, "; ".join(f"{k}: {n}" for k, n in self.mismatches.items()) or "all",
                "all", not self.mismatches),
            Row("no traceback in the log", db, f"{tracebacks} tracebacks in {lines} log lines", "0", tracebacks == 0),
            Row(f"database outage ({self.outage_s:.0f} s)", db,
                f"/healthz during it: {dict(Counter(during))}; green {green_after:.1f} s after it ended"
                if green_after is not None else "/healthz never green again",
                f"green <= {HEALTHY_WITHIN_S:.0f} s", green_after is not None and green_after <= HEALTHY_WITHIN_S),
            Row("slow clients", db, f"{self.slow_cut} of {self.slow_open} cut off by the server within 30 s",
                "all", self.slow_cut == self.slow_open),
            Row("SIGTERM", db, f"exit {code}", "0", code == 0),
        ]
        return rows


def status_of(url: str) -> int:
    try:
        return httpx.get(url + "/healthz", timeout=2).status_code
    except httpx.TransportError:
        return 0


def wait(predicate: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.2)
    raise RuntimeError(f"timed out waiting for {what}")


def prepare(db_url: str) -> None:
    """Migrate; empty a server database's tables (it must be a throwaway one)."""
    subprocess.run([ETL, "db", "upgrade", "--database-url", db_url], check=True, capture_output=True)
    if make_url(db_url).get_backend_name() != "sqlite":
        empty_tables(db_url)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--minutes", type=float, default=10.0)
    p.add_argument("--outage", type=float, default=20.0, help="seconds the database is away (default 20)")
    p.add_argument("--database-url", default=None,
                   help="a throwaway database (emptied!); default: a new SQLite file in a temporary folder")
    p.add_argument("--json", type=Path, default=None)
    args = p.parse_args(argv)
    info = machine_info()
    print(f"machine: {info['nproc']} CPUs, {info['cpu_model']}; load {info['loadavg_start'][0]:.2f}; {info['date']}")
    workdir = Path(tempfile.mkdtemp(prefix="etl-soak-"))
    db_dir = workdir / "db"
    db_dir.mkdir()
    db_url = args.database_url or f"sqlite:///{db_dir / 'soak.db'}"
    print(f"soak of {args.minutes:g} min on {make_url(db_url).render_as_string(hide_password=True)}; "
          f"logs in {workdir}", flush=True)
    rows = Soak(workdir, db_url, args.minutes, args.outage).run()
    print_table(rows)
    print(f"\nload average at end {os.getloadavg()[0]:.2f} on {info['nproc']} CPUs")
    if args.json is not None:
        args.json.write_text(json.dumps({"machine": info, "rows": [r.__dict__ for r in rows]}, default=str,
                                        indent=2) + "\n")
    return 0 if all(r.met is not False for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
