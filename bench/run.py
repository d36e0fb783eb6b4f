"""Benchmark of the real `etl` commands against the simulated API, on throwaway databases.

One command (``python bench/run.py``; ``--help`` for options) runs the
workloads of the issue "Performance: saturate the API's rate limit and never
be the bottleneck" and prints one table: workload, database, figures, target,
met/missed.  It asserts nothing; it measures and reports.

Everything runs as separate processes, as in production: the fake API is
``python -m etl.testing`` on a loopback port, and every step is the installed
``etl`` executable (``db upgrade``, ``enqueue --file``, ``sync``, ``status``).
The CPU time and peak RSS of each etl process come from ``os.wait4`` (the
kernel's own accounting of that child), wall time from ``perf_counter``, and
counts from the JSON log lines the process writes to a file.

Databases are created for the run and dropped afterwards: a temporary SQLite
file, or ``etl_bench_<pid>_<n>`` on the PostgreSQL/MariaDB servers.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import os
import platform
import random
import select
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

BIN = Path(sys.executable).parent
ETL = str(BIN / "etl")
API_KEY = "bench-key-0123456789"
BACKENDS = ("sqlite", "postgresql", "mysql")
DEFAULT_SERVERS = {
    "postgresql": os.environ.get("ETL_BENCH_POSTGRES_SERVER", "postgresql+psycopg://postgres@127.0.0.1:5432"),
    "mysql": os.environ.get("ETL_BENCH_MYSQL_SERVER", "mysql+pymysql://root@127.0.0.1:3306"),
}


@dataclass(frozen=True)
class Sizes:
    """Queue sizes of each workload; ``--quick`` scales them down for a sanity run."""

    w1_ids: int = 600
    w2_ids: int = 10_000
    big_queue: int = 1_000_000
    w4_small_queue: int = 20_000
    w6_ids: int = 200
    w4_limit: int = 20_000


FULL = Sizes()
QUICK = Sizes(w1_ids=60, w2_ids=1_000, big_queue=50_000, w4_small_queue=2_000, w4_limit=2_000, w6_ids=60)

# The targets.
W1_MIN_RATE = 9.7
W1_MAX_429_SHARE = 0.01
W2_MIN_RATE = 1500.0
W2_MAX_CPU_MS = 0.5
W3_MAX_WALL_S = 20.0
W3_FLAT_RSS_MIB = 20.0  # "flat": the 1M enqueue may grow by at most this over a small one
W4_MAX_RSS_MIB = 120.0
W5_MAX_WALL_S = 1.0
W6_MIN_RATE = 9.5
W6_MAX_429_SHARE = 0.01
W6_PROCESSES = (1, 2, 4)


# --- processes ---------------------------------------------------------------------


@dataclass
class ProcResult:
    """One finished etl process: exit code, wall time, CPU and peak RSS (from wait4)."""

    args: list[str]
    rc: int
    wall_s: float
    user_s: float
    sys_s: float
    maxrss_mib: float
    stdout: str
    log_path: str
    timed_out: bool = False

    @property
    def cpu_s(self) -> float:
        return self.user_s + self.sys_s

    def log_lines(self) -> list[dict[str, Any]]:
        return read_json_lines(Path(self.log_path))

    def failure(self) -> str | None:
        if self.rc == 0 and not self.timed_out:
            return None
        tail = Path(self.log_path).read_text(errors="replace").strip().splitlines()[-3:]
        what = "timed out" if self.timed_out else f"exit {self.rc}"
        return f"{' '.join(self.args[:2])}: {what}: " + " | ".join(tail)[-400:]


def _wait_with_rusage(proc: subprocess.Popen[Any], timeout: float) -> tuple[int, Any, bool]:
    """``os.wait4`` the child (so its rusage is its own), killing it after ``timeout``."""
    timed_out = threading.Event()

    def kill() -> None:
        timed_out.set()
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(signal.SIGTERM)
        time.sleep(5)
        with contextlib.suppress(ProcessLookupError):
            proc.kill()

    timer = threading.Timer(timeout, kill)
    timer.daemon = True
    timer.start()
    try:
        _, status, usage = os.wait4(proc.pid, 0)
    finally:
        timer.cancel()
    rc = os.waitstatus_to_exitcode(status)
    proc.returncode = rc  # Popen must not wait for a pid already reaped
    return rc, usage, timed_out.is_set()


# The etl processes are started by this small helper process, not by the benchmark
# itself: at exec the kernel folds the *parent's* peak RSS into the child's
# ru_maxrss (exec_mmap keeps the old mm's high-water mark), so a child of the
# benchmark -- which holds SQLAlchemy, id lists and parsed logs -- would report
# the benchmark's peak instead of its own.  The helper stays at ~10 MiB.
_SPAWNER_CODE = r"""
import json, os, signal, subprocess, sys, threading, time
for line in sys.stdin:
    req = json.loads(line)
    with open(req["out"], "wb") as out, open(req["err"], "wb") as err:
        start = time.perf_counter()
        proc = subprocess.Popen(req["cmd"], stdout=out, stderr=err, stdin=subprocess.DEVNULL,
                                env=req["env"], cwd=req["cwd"])
        timed_out = threading.Event()
        def kill(proc=proc, timed_out=timed_out):
            timed_out.set()
            try:
                proc.send_signal(signal.SIGTERM)
                time.sleep(5)
                proc.kill()
            except ProcessLookupError:
                pass
        timer = threading.Timer(req["timeout"], kill)
        timer.daemon = True
        timer.start()
        _, status, ru = os.wait4(proc.pid, 0)
        timer.cancel()
        proc.returncode = os.waitstatus_to_exitcode(status)
        wall = time.perf_counter() - start
    print(json.dumps({"rc": proc.returncode, "wall": wall, "user": ru.ru_utime, "sys": ru.ru_stime,
                      "maxrss_kib": ru.ru_maxrss, "timed_out": timed_out.is_set()}), flush=True)
"""


class Spawner:
    """The helper process that starts and measures every etl process (see above)."""

    _proc: subprocess.Popen[str] | None = None

    @classmethod
    def start(cls) -> None:
        if cls._proc is None:
            cls._proc = subprocess.Popen([sys.executable, "-S", "-c", _SPAWNER_CODE], stdin=subprocess.PIPE,
                                         stdout=subprocess.PIPE, text=True, bufsize=1)

    @classmethod
    def run(cls, request: dict[str, Any]) -> dict[str, Any]:
        cls.start()
        assert cls._proc is not None and cls._proc.stdin is not None and cls._proc.stdout is not None
        cls._proc.stdin.write(json.dumps(request) + "\n")
        cls._proc.stdin.flush()
        answer = cls._proc.stdout.readline()
        if not answer:
            raise RuntimeError("the spawner helper died")
        return dict(json.loads(answer))

    @classmethod
    def stop(cls) -> None:
        if cls._proc is not None and cls._proc.stdin is not None:
            cls._proc.stdin.close()
            cls._proc.wait(timeout=30)
            cls._proc = None


def run_etl(args: list[str], env: dict[str, str], workdir: Path, log_name: str, timeout: float,
            wrapper: list[str] | None = None) -> ProcResult:
    """Run ``etl ARGS`` with logs (stderr) to a file; measure it."""
    log_path = workdir / f"{log_name}.log"
    out_path = workdir / f"{log_name}.out"
    got = Spawner.run({"cmd": [*(wrapper or []), ETL, *args], "env": env, "cwd": str(workdir),
                       "out": str(out_path), "err": str(log_path), "timeout": timeout})
    return ProcResult(args=[ETL, *args], rc=got["rc"], wall_s=got["wall"], user_s=got["user"], sys_s=got["sys"],
                      maxrss_mib=got["maxrss_kib"] / 1024, stdout=out_path.read_text(errors="replace"),
                      log_path=str(log_path), timed_out=got["timed_out"])


def read_json_lines(path: Path) -> list[dict[str, Any]]:
    lines = []
    with open(path, encoding="utf-8", errors="replace") as f:
        for line in f:
            if line.startswith("{"):
                with contextlib.suppress(ValueError):
                    lines.append(json.loads(line))
    return lines


def log_event(lines: list[dict[str, Any]], event: str) -> dict[str, Any] | None:
    return next((line for line in lines if line.get("event") == event), None)


def log_time(line: dict[str, Any] | None) -> dt.datetime | None:
    if line is None or "timestamp" not in line:
        return None
    return dt.datetime.fromisoformat(str(line["timestamp"]).replace("Z", "+00:00"))


class Simulator:
    """``python -m etl.testing`` as a separate process; stats and CPU on exit."""

    def __init__(self, workdir: Path, *, rate: float, burst: int, latency_ms: float, name: str) -> None:
        self.stats_file = workdir / f"{name}.stats.json"
        self.log_file = workdir / f"{name}.log"
        self.cmd = [sys.executable, "-m", "etl.testing", "--port", "0", "--api-key", API_KEY,
                    "--rate", str(rate), "--burst", str(burst), "--latency-ms", str(latency_ms),
                    "--stats-file", str(self.stats_file)]
        self.workdir = workdir
        self.url = ""
        self.stats: dict[str, Any] = {}
        self.cpu_s = 0.0
        self._proc: subprocess.Popen[bytes] | None = None
        self._err: Any = None

    def __enter__(self) -> Simulator:
        self._err = open(self.log_file, "wb")  # closed in __exit__
        self._proc = subprocess.Popen(self.cmd, stdout=subprocess.PIPE, stderr=self._err,
                                      stdin=subprocess.DEVNULL, cwd=self.workdir)
        assert self._proc.stdout is not None
        deadline = time.monotonic() + 30
        line = b""
        while time.monotonic() < deadline and not line.endswith(b"\n"):
            ready, _, _ = select.select([self._proc.stdout], [], [], 0.5)
            if ready:
                chunk = os.read(self._proc.stdout.fileno(), 4096)
                if not chunk:
                    break
                line += chunk
        text = line.decode(errors="replace").strip()
        if not text.startswith("listening on "):
            self.__exit__(None, None, None)
            raise RuntimeError(f"simulator did not start: {text!r}; see {self.log_file}")
        self.url = text.removeprefix("listening on ").strip()
        return self

    def __exit__(self, *exc: object) -> None:
        proc = self._proc
        if proc is None:
            return
        self._proc = None
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(signal.SIGTERM)
        _, usage, _ = _wait_with_rusage(proc, 30)
        self.cpu_s = usage.ru_utime + usage.ru_stime
        if proc.stdout is not None:
            proc.stdout.close()
        self._err.close()
        if self.stats_file.exists():
            self.stats = json.loads(self.stats_file.read_text())


# --- databases ---------------------------------------------------------------------


class Databases:
    """Creates throwaway databases and drops every one of them at the end."""

    def __init__(self, workdir: Path, servers: dict[str, str], keep: bool) -> None:
        self.workdir = workdir
        self.servers = servers
        self.keep = keep
        self.created: list[tuple[str, str]] = []  # (backend, name or path)
        self._n = 0

    def create(self, backend: str) -> str:
        self._n += 1
        name = f"etl_bench_{os.getpid()}_{self._n}"
        if backend == "sqlite":
            path = self.workdir / f"{name}.db"
            self.created.append((backend, str(path)))
            return f"sqlite:///{path}"
        server = self.servers[backend].rstrip("/")
        with self._admin(backend) as conn:
            if backend == "postgresql":
                conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}"')
                conn.exec_driver_sql(f'CREATE DATABASE "{name}"')
            else:
                conn.exec_driver_sql(f"DROP DATABASE IF EXISTS `{name}`")
                conn.exec_driver_sql(f"CREATE DATABASE `{name}` CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_ci")
        self.created.append((backend, name))
        return f"{server}/{name}"

    def drop(self, url: str) -> None:
        for backend, name in list(self.created):
            if url.endswith(name):
                self._drop(backend, name)
                self.created.remove((backend, name))

    def drop_all(self) -> None:
        for backend, name in reversed(self.created):
            try:
                self._drop(backend, name)
            except Exception as exc:
                print(f"warning: could not drop {backend} {name}: {exc}", file=sys.stderr)
        self.created.clear()

    def _drop(self, backend: str, name: str) -> None:
        if self.keep:
            print(f"kept {backend} database {name}", file=sys.stderr)
            return
        if backend == "sqlite":
            for suffix in ("", "-wal", "-shm"):
                Path(name + suffix).unlink(missing_ok=True)
            return
        with self._admin(backend) as conn:
            if backend == "postgresql":
                conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            else:
                conn.exec_driver_sql(f"DROP DATABASE IF EXISTS `{name}`")

    @contextlib.contextmanager
    def _admin(self, backend: str) -> Iterator[Any]:
        import sqlalchemy as sa

        server = self.servers[backend].rstrip("/")
        url = f"{server}/postgres" if backend == "postgresql" else f"{server}/"
        engine = sa.create_engine(url, isolation_level="AUTOCOMMIT")
        try:
            with engine.connect() as conn:
                yield conn
        finally:
            engine.dispose()


def add_call_rows(url: str) -> None:
    """A minimal ``calls`` row for every queued id (a database before 0004 has no such table: nothing)."""
    import sqlalchemy as sa

    engine = sa.create_engine(url)
    try:
        if not sa.inspect(engine).has_table("calls"):
            return
        with engine.begin() as conn:
            conn.execute(sa.text(
                "INSERT INTO calls (call_id, participant_count, content_hash, raw_json, first_synced_at, "
                "last_synced_at) SELECT call_id, 0, '', '{}', CURRENT_TIMESTAMP, CURRENT_TIMESTAMP FROM summary_queue"))
    finally:
        engine.dispose()


def write_ids(path: Path, n: int, seed: int) -> Path:
    """``n`` distinct ids ``AC`` + 32 hex digits, the same for the same (n, seed)."""
    if path.exists():
        return path
    rng = random.Random(seed)
    with open(path, "w", encoding="ascii") as f:
        for start in range(0, n, 100_000):
            f.write("".join(f"AC{rng.getrandbits(128):032x}\n" for _ in range(min(100_000, n - start))))
    return path


# --- results -----------------------------------------------------------------------


@dataclass
class Row:
    workload: str
    database: str
    figures: str
    target: str
    met: bool | None  # None: not measured (the run failed)
    data: dict[str, Any] = field(default_factory=dict)

    @property
    def verdict(self) -> str:
        return {True: "met", False: "MISSED", None: "n/a"}[self.met]


def print_table(rows: list[Row]) -> None:
    headers = ("workload", "db", "figures", "target", "result")
    table = [(r.workload, r.database, r.figures, r.target, r.verdict) for r in rows]
    widths = [max(len(h), *(len(t[i]) for t in table)) if table else len(h) for i, h in enumerate(headers)]
    line = "+".join("-" * (w + 2) for w in widths)
    print("\n" + " | ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True)))
    print(line)
    for t in table:
        print(" | ".join(c.ljust(w) for c, w in zip(t, widths, strict=True)))


def machine_info() -> dict[str, Any]:
    model = "?"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    mem_gib = 0.0
    with contextlib.suppress(OSError, ValueError, IndexError):
        first = Path("/proc/meminfo").read_text().splitlines()[0]
        mem_gib = int(first.split()[1]) / 1024 / 1024
    return {"nproc": os.cpu_count(), "cpu_model": model, "ram_gib": round(mem_gib, 1),
            "python": platform.python_version(), "platform": platform.platform(),
            "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"), "loadavg_start": os.getloadavg()}


# --- the workloads -----------------------------------------------------------------


class Bench:
    """The workloads; each adds its rows to ``self.rows`` and never raises for a failed etl step."""

    def __init__(self, args: argparse.Namespace, workdir: Path, dbs: Databases) -> None:
        self.args = args
        self.sizes = QUICK if args.quick else FULL
        self.workdir = workdir
        self.dbs = dbs
        self.rows: list[Row] = []
        self.timeout = args.timeout
        self._n = 0
        self._w4_done: dict[str, int] = {}
        self.rep = 1

    def env(self, url: str, base_url: str = "http://127.0.0.1:9") -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("ETL_", "OPENPHONE_"))}
        env.update(ETL_DATABASE_URL=url, OPENPHONE_API_KEY=API_KEY, OPENPHONE_BASE_URL=base_url,
                   ETL_LOG_FORMAT="json")
        return env

    def etl(self, url: str, args: list[str], *, base_url: str = "http://127.0.0.1:9",
            wrapper: list[str] | None = None) -> ProcResult:
        self._n += 1
        name = f"{self._n:03d}-{args[0]}"
        full = args if args[0].startswith("-") else [*args, "--log-format", "json"]
        return run_etl(full, self.env(url, base_url), self.workdir, name.replace("--", ""), self.timeout, wrapper)

    def fresh_db(self, backend: str, ids: int, seed: int, with_calls: bool = False) -> tuple[str, ProcResult | None]:
        """A migrated database with ``ids`` ids queued; returns its URL and the enqueue's result.

        ``with_calls``: every id also has its ``calls`` row, as `etl discover` leaves
        the ids it enqueues, so sync asks for the summary only (schemas from 0004 on).
        """
        url = self.dbs.create(backend)
        up = self.etl(url, ["db", "upgrade"])
        if up.failure():
            raise RuntimeError(up.failure())
        if not ids:
            return url, None
        ids_file = write_ids(self.workdir / f"ids-{ids}-{seed}.txt", ids, seed)
        enq = self.etl(url, ["enqueue", "--file", str(ids_file)])
        if enq.failure():
            raise RuntimeError(enq.failure())
        if with_calls:
            add_call_rows(url)
        return url, enq

    def add(self, row: Row) -> None:
        if self.args.repeat > 1:
            row.workload = f"{row.workload} #{self.rep}"
            row.data["repetition"] = self.rep
        self.rows.append(row)
        print(f"  {row.workload:<4} {row.database:<10} {row.figures}  [{row.verdict}]", flush=True)

    def failed(self, workload: str, backend: str, target: str, error: str) -> None:
        self.add(Row(workload, backend, f"failed: {error}", target, None, {"error": error}))

    @staticmethod
    def finished_line(res: ProcResult) -> dict[str, Any]:
        return log_event(res.log_lines(), "run finished") or {}

    def queue_counts(self, url: str) -> dict[str, int]:
        """Queue counts by state from ``etl status --json`` (untimed): what the database really holds."""
        res = self.etl(url, ["status", "--json"])
        try:
            return {k: int(v) for k, v in json.loads(res.stdout)["queue"].items()}
        except (ValueError, KeyError, TypeError):
            return {}

    @staticmethod
    def accounting(done_in_db: int, fin: dict[str, Any]) -> str:
        """A note when the run's own log disagrees with the database (a bookkeeping bug, not speed)."""
        logged = int(fin.get("completed", 0))
        if logged == done_in_db and not fin.get("released"):
            return ""
        return (f" [NOTE: log says completed {logged}, released {fin.get('released', 0)}; "
                f"database has {done_in_db} done]")

    # -- 1: rate-limited API ----------------------------------------------------------

    def w1(self, backend: str) -> None:
        n = self.sizes.w1_ids
        target = f">= {W1_MIN_RATE}/s in run, <= {W1_MAX_429_SHARE:.0%} of requests 429"
        url, _ = self.fresh_db(backend, n, seed=1)
        with Simulator(self.workdir, rate=10, burst=10, latency_ms=150, name=f"sim-w1-{backend}") as sim:
            res = self.etl(url, ["sync"], base_url=sim.url)
        if res.failure():
            self.failed("1", backend, target, res.failure() or "")
            return
        fin = self.finished_line(res)
        done = self.queue_counts(url).get("done", 0)
        run_s = float(fin.get("duration_s") or res.wall_s)
        total = int(sim.stats.get("total_requests", 0))
        n429 = int(sim.stats.get("outcomes", {}).get("429", 0))
        share = n429 / total if total else 0.0
        rate_run, rate_e2e = done / run_s, done / res.wall_s
        met = done == n and rate_run >= W1_MIN_RATE and share <= W1_MAX_429_SHARE
        self.add(Row("1", backend,
                     f"{done}/{n} done; {rate_run:.2f}/s in run ({run_s:.1f} s), {rate_e2e:.2f}/s end to end "
                     f"({res.wall_s:.1f} s); 429: {n429} of {total} requests ({share:.1%})"
                     + self.accounting(done, fin),
                     target, met,
                     {"ids": n, "completed": done, "run_s": run_s, "wall_s": res.wall_s, "rate_in_run": rate_run,
                      "rate_end_to_end": rate_e2e, "requests": total, "http_429": n429, "share_429": share,
                      "cpu_s": res.cpu_s, "maxrss_mib": res.maxrss_mib, "sim": sim.stats, "finished": fin}))

    # -- 2: unlimited API ------------------------------------------------------------

    def w2(self, backend: str, wrapper: list[str] | None = None) -> ProcResult | None:
        n = self.sizes.w2_ids
        target = f">= {W2_MIN_RATE:.0f}/s end to end, <= {W2_MAX_CPU_MS} ms CPU/summary"
        url, _ = self.fresh_db(backend, n, seed=2, with_calls=True)  # discovered ids: their call is stored
        with Simulator(self.workdir, rate=0, burst=10, latency_ms=0, name=f"sim-w2-{backend}") as sim:
            res = self.etl(url, ["sync", "--rate", "0", *self.args.sync_args.split()], base_url=sim.url,
                           wrapper=wrapper)
        if wrapper is not None:
            return res
        if res.failure():
            self.failed("2", backend, target, res.failure() or "")
            return None
        fin = self.finished_line(res)
        done = self.queue_counts(url).get("done", 0)
        run_s = float(fin.get("duration_s") or res.wall_s)
        rate = done / res.wall_s
        cpu_ms = res.cpu_s / done * 1000 if done else float("inf")
        sim_cpu_ms = sim.cpu_s / max(1, int(sim.stats.get("total_requests", 0))) * 1000
        met = done == n and rate >= W2_MIN_RATE and cpu_ms <= W2_MAX_CPU_MS
        self.add(Row("2", backend,
                     f"{done}/{n} done; {rate:.0f}/s end to end ({res.wall_s:.2f} s), {done / run_s:.0f}/s in run; "
                     f"CPU {cpu_ms:.3f} ms/summary (user {res.user_s:.2f} s + sys {res.sys_s:.2f} s); "
                     f"RSS {res.maxrss_mib:.0f} MiB; simulator CPU {sim_cpu_ms:.3f} ms/request"
                     + self.accounting(done, fin),
                     target, met,
                     {"ids": n, "completed": done, "wall_s": res.wall_s, "run_s": run_s, "rate_end_to_end": rate,
                      "rate_in_run": done / run_s, "cpu_ms_per_summary": cpu_ms, "user_s": res.user_s,
                      "sys_s": res.sys_s, "maxrss_mib": res.maxrss_mib, "sim_cpu_s": sim.cpu_s,
                      "sim": sim.stats, "finished": fin}))
        return res

    # -- 3, 4, 5: big queues ---------------------------------------------------------

    def big(self, backend: str, only: set[str]) -> None:
        s = self.sizes
        t3 = f"<= {W3_MAX_WALL_S:.0f} s; RSS flat (<= +{W3_FLAT_RSS_MIB:.0f} MiB over a small enqueue)"
        t4 = f"RSS <= {W4_MAX_RSS_MIB:.0f} MiB both; claim time independent of queue size"
        t5 = f"<= {W5_MAX_WALL_S} s"
        small_sync: ProcResult | None = None
        small_enq: ProcResult | None = None
        small_claim: float | None = None
        small_url = ""
        if "4" in only or "3" in only:
            try:
                small_url, small_enq = self.fresh_db(backend, s.w4_small_queue, seed=4)
            except RuntimeError as exc:
                self.failed("4", backend, t4, str(exc))
                return
            if "4" in only:
                small_sync, small_claim = self._w4_sync(small_url)
            self.dbs.drop(small_url)
        try:
            big_url, big_enq = self.fresh_db(backend, s.big_queue, seed=3)
        except RuntimeError as exc:
            self.failed("3", backend, t3, str(exc))
            return
        assert big_enq is not None
        if "3" in only:
            small_rss = small_enq.maxrss_mib if small_enq else float("nan")
            growth = big_enq.maxrss_mib - small_rss
            self.add(Row("3", backend,
                         f"enqueue {s.big_queue:,} ids: {big_enq.wall_s:.1f} s ({s.big_queue / big_enq.wall_s:,.0f}"
                         f" ids/s), CPU {big_enq.cpu_s:.1f} s; peak RSS {big_enq.maxrss_mib:.0f} MiB "
                         f"(enqueue of {s.w4_small_queue:,}: {small_rss:.0f} MiB)",
                         t3, big_enq.wall_s <= W3_MAX_WALL_S and growth <= W3_FLAT_RSS_MIB,
                         {"ids": s.big_queue, "wall_s": big_enq.wall_s, "cpu_s": big_enq.cpu_s,
                          "maxrss_mib": big_enq.maxrss_mib, "small_ids": s.w4_small_queue,
                          "small_maxrss_mib": small_rss, "stdout": big_enq.stdout.strip()}))
        if "4" in only:
            big_sync, big_claim = self._w4_sync(big_url)
            if small_sync is None or big_sync is None:
                err = (small_sync or big_sync).failure() if (small_sync or big_sync) else "sync failed"
                self.failed("4", backend, t4, err or "sync failed")
            else:
                self._w4_row(backend, t4, small_sync, small_claim, big_sync, big_claim)
        if "5" in only:
            runs = [self.etl(big_url, ["status"]) for _ in range(3)]
            bad = next((r.failure() for r in runs if r.failure()), None)
            if bad:
                self.failed("5", backend, t5, bad)
            else:
                walls = [r.wall_s for r in runs]
                base = self.etl(big_url, ["--version"])
                self.add(Row("5", backend,
                             f"status on {s.big_queue:,} rows: median {statistics.median(walls):.2f} s "
                             f"(runs {', '.join(f'{w:.2f}' for w in walls)}); `etl --version` "
                             f"takes {base.wall_s:.2f} s (import/startup baseline)",
                             t5, statistics.median(walls) <= W5_MAX_WALL_S,
                             {"rows": s.big_queue, "walls_s": walls, "median_s": statistics.median(walls),
                              "baseline_version_s": base.wall_s, "maxrss_mib": max(r.maxrss_mib for r in runs)}))
        self.dbs.drop(big_url)

    def _w4_sync(self, url: str) -> tuple[ProcResult | None, float | None]:
        # Probed before the sync, while the whole queue is pending, so both sizes claim a full batch.
        probe = probe_claim(url)
        with Simulator(self.workdir, rate=0, burst=10, latency_ms=0, name="sim-w4") as sim:
            res = self.etl(url, ["sync", "--rate", "0", "--limit", str(self.sizes.w4_limit),
                                 *self.args.sync_args.split()], base_url=sim.url)
        if res.failure():
            return None, None
        self._w4_done[res.log_path] = self.queue_counts(url).get("done", 0)
        return res, probe

    def _w4_row(self, backend: str, target: str, small: ProcResult, small_claim: float | None,
                big: ProcResult, big_claim: float | None) -> None:
        s = self.sizes
        parts, data = [], {}
        for label, queued, res, claim in (("small", s.w4_small_queue, small, small_claim),
                                          ("big", s.big_queue, big, big_claim)):
            lines = res.log_lines()
            fin = log_event(lines, "run finished") or {}
            started, first_call = log_time(log_event(lines, "run started")), log_time(log_event(lines, "call"))
            first = (first_call - started).total_seconds() if started and first_call else None
            done = self._w4_done.get(res.log_path, 0)
            parts.append(f"{queued:,} queued: {done:,} done in {res.wall_s:.1f} s ({done / res.wall_s:,.0f}/s), "
                         f"RSS {res.maxrss_mib:.0f} MiB, first saved {_ms(first)} after start, "
                         f"claim probe {_ms(claim)}" + self.accounting(done, fin))
            data[label] = {"queued": queued, "completed": done, "wall_s": res.wall_s,
                           "rate": done / res.wall_s, "maxrss_mib": res.maxrss_mib, "cpu_s": res.cpu_s,
                           "first_call_after_start_s": first, "claim_probe_s": claim, "finished": fin}
        rss_ok = max(small.maxrss_mib, big.maxrss_mib) <= W4_MAX_RSS_MIB
        claim_ok = (small_claim is not None and big_claim is not None
                    and big_claim <= max(2 * small_claim, small_claim + 0.05))
        self.add(Row("4", backend, "; ".join(parts), target, rss_ok and claim_ok, data))


class _ApiSampler:
    """Counts at the fake API (served in this process), sampled every 50 ms."""

    def __init__(self, fake: Any) -> None:
        self.fake = fake
        self.samples: list[tuple[float, int, int]] = []  # (time, 200s, all requests)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(0.05):
            stats: dict[str, Any] = self.fake.stats()
            self.samples.append((time.monotonic(), int(stats["outcomes"].get("200", 0)), int(stats["total_requests"])))

    def __enter__(self) -> _ApiSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def summaries_per_s(self) -> float:
        """200 answers per second from the first request to the last."""
        total = self.samples[-1][2]
        first = next((i for i, s in enumerate(self.samples) if s[2] > 0), None)
        last = next((i for i, s in enumerate(self.samples) if s[2] >= total), None)
        if first is None or last is None or last <= first:
            return 0.0
        # The sample before the first request bounds the window's start.
        t0, ok0, _ = self.samples[max(0, first - 1)]
        t1, ok1, _ = self.samples[last]
        return (ok1 - ok0) / (t1 - t0)


class SharedKey:
    """Workload 6: 1, 2 and 4 concurrent `etl sync` processes on one key limited to 10 req/s."""

    def __init__(self, bench: Bench) -> None:
        self.bench = bench

    def run(self, backend: str) -> None:
        from etl.testing import FakeOpenPhone, serve

        bench = self.bench
        n = bench.sizes.w6_ids
        target = f">= {W6_MIN_RATE}/s together at the API, <= {W6_MAX_429_SHARE:.0%} of requests 429"
        for procs in W6_PROCESSES:
            url, _ = bench.fresh_db(backend, n, seed=6)
            fake = FakeOpenPhone(api_key=API_KEY, rate=10, burst=10, latency_ms=50)
            with serve(fake) as api, _ApiSampler(fake) as sampler:
                results = _concurrent_syncs(bench, url, api, procs)
            bad = next(("no result" if r is None else r.failure() for r in results
                        if r is None or r.failure()), None)
            if bad:
                self.bench.failed(f"6/{procs}p", backend, target, bad)
                bench.dbs.drop(url)
                continue
            stats: dict[str, Any] = fake.stats()
            done = bench.queue_counts(url).get("done", 0)
            total, n429 = int(stats["total_requests"]), int(stats["outcomes"].get("429", 0))
            share = n429 / total if total else 0.0
            rate = sampler.summaries_per_s()
            cpu = sum(r.cpu_s for r in results if r is not None)
            bench.add(Row(f"6/{procs}p", backend,
                          f"{procs} process{'es' if procs > 1 else ''}: {done}/{n} done; {rate:.2f} summaries/s "
                          f"together at the API; 429: {n429} of {total} requests ({share:.1%}); "
                          f"CPU {cpu:.1f} s in all",
                          target, done == n and rate >= W6_MIN_RATE and share <= W6_MAX_429_SHARE,
                          {"processes": procs, "ids": n, "completed": done, "summaries_per_s": rate,
                           "requests": total, "http_429": n429, "share_429": share, "cpu_s": cpu}))
            bench.dbs.drop(url)


def _concurrent_syncs(bench: Bench, url: str, api: str, procs: int) -> list[ProcResult | None]:
    """``procs`` `etl sync` processes started together (the spawner helper runs one at a
    time, so these are children of the benchmark: their CPU is right, their RSS not reported)."""
    started = []
    for i in range(procs):
        bench._n += 1
        log_path = bench.workdir / f"{bench._n:03d}-sync-{i}.log"
        out_path = bench.workdir / f"{bench._n:03d}-sync-{i}.out"
        args = ["sync", "--log-format", "json"]
        with open(log_path, "wb") as err, open(out_path, "wb") as out:
            proc = subprocess.Popen([ETL, *args], env=bench.env(url, api), stdout=out, stderr=err,
                                    stdin=subprocess.DEVNULL, cwd=bench.workdir)
        started.append((proc, args, log_path, out_path, time.perf_counter()))
    results: list[ProcResult | None] = []
    for proc, args, log_path, out_path, t0 in started:
        rc, usage, timed_out = _wait_with_rusage(proc, bench.timeout)
        results.append(ProcResult(args=[ETL, *args], rc=rc, wall_s=time.perf_counter() - t0,
                                  user_s=usage.ru_utime, sys_s=usage.ru_stime, maxrss_mib=0.0,
                                  stdout=out_path.read_text(errors="replace"), log_path=str(log_path),
                                  timed_out=timed_out))
    return results


def slow_rate(bench: Bench, backend: str) -> None:
    """Workload 6s: `--rate 0.5` with 10 due ids takes about 18 s (measured at the API)."""
    from etl.testing import FakeOpenPhone, serve

    target = "9 gaps of 2 s: 18 s +- 1 s from first to last request"
    url, _ = bench.fresh_db(backend, 10, seed=7)
    fake = FakeOpenPhone(api_key=API_KEY)
    with serve(fake) as api, _ApiSampler(fake) as sampler:
        res = bench.etl(url, ["sync", "--rate", "0.5"], base_url=api)
    if res.failure():
        bench.failed("6s", backend, target, res.failure() or "")
        return
    times = [t for t, _, total in sampler.samples if total > 0]
    first = times[0]
    last = next(t for t, _, total in sampler.samples if total >= 10)
    span = last - first
    done = bench.queue_counts(url).get("done", 0)
    bench.add(Row("6s", backend, f"--rate 0.5, 10 ids: {done}/10 done; {span:.1f} s from first to last request "
                  f"(sampled every 50 ms), {res.wall_s:.1f} s end to end",
                  target, done == 10 and abs(span - 18) <= 1, {"span_s": span, "wall_s": res.wall_s}))
    bench.dbs.drop(url)


def engines_side_by_side(bench: Bench, backend: str, old_etl: str) -> None:
    """Workload 7: workload 2 (unthrottled) with this engine and the previous one, back to back."""
    global ETL
    target = "new engine: throughput and CPU/summary no worse than the previous one (same run)"
    figures: dict[str, tuple[float, float]] = {}
    for label, exe in (("previous", old_etl), ("new", ETL), ("previous again", old_etl), ("new again", ETL)):
        saved, ETL = ETL, exe
        try:
            n = bench.sizes.w2_ids
            url, _ = bench.fresh_db(backend, n, seed=2, with_calls=True)
            with Simulator(bench.workdir, rate=0, burst=10, latency_ms=0, name=f"sim-w7-{backend}") as sim:
                res = bench.etl(url, ["sync", "--rate", "0"], base_url=sim.url)
            done = bench.queue_counts(url).get("done", 0)  # by the same etl: its schema
        finally:
            ETL = saved
        bench.dbs.drop(url)
        if res.failure():
            bench.failed("7", backend, target, f"{label}: {res.failure()}")
            return
        figures[label] = (done / res.wall_s, res.cpu_s / max(1, done) * 1000)
    old = [figures["previous"], figures["previous again"]]
    new = [figures["new"], figures["new again"]]
    old_rate, old_cpu = max(r for r, _ in old), min(c for _, c in old)
    new_rate, new_cpu = max(r for r, _ in new), min(c for _, c in new)
    bench.add(Row("7", backend,
                  f"best of 2 each: new {new_rate:.0f}/s, {new_cpu:.3f} ms CPU/summary; previous (8a63ddc) "
                  f"{old_rate:.0f}/s, {old_cpu:.3f} ms CPU/summary",
                  target, new_rate >= 0.95 * old_rate and new_cpu <= 1.05 * old_cpu,
                  {"new": new, "previous": old}))


def _ms(seconds: float | None) -> str:
    return "n/a" if seconds is None else f"{seconds * 1000:.0f} ms"


def probe_claim(url: str, n: int = 1000, repeats: int = 3) -> float | None:
    """Median time of one claim of ``n`` items, rolled back: the queue is left as it was.

    Uses etl's own engine settings and ``store.claim``; returns None if that API
    has changed (the benchmark must not break when the lead reworks the store).
    """
    try:
        from etl import db, store
        from etl.sync import utcnow

        engine = db.create_engine(url)
    except Exception:
        return None
    times = []
    try:
        for _ in range(repeats):
            with engine.connect() as conn:
                tx = conn.begin()
                start = time.perf_counter()
                store.claim(conn, "bench-probe", n, utcnow(), 300.0)
                times.append(time.perf_counter() - start)
                tx.rollback()
    except Exception as exc:
        print(f"  (claim probe failed: {exc!r})", file=sys.stderr)
        return None
    finally:
        engine.dispose()
    return statistics.median(times)


# --- profiling ---------------------------------------------------------------------


def py_spy() -> str | None:
    candidate = BIN / "py-spy"
    return str(candidate) if candidate.exists() else shutil.which("py-spy")


def profile_w2(bench: Bench, backend: str, out: Path, extra: list[str]) -> dict[str, Any] | None:
    """Workload 2 again under ``py-spy record --format raw``; aggregate where CPU goes."""
    spy = py_spy()
    if spy is None:
        print("py-spy not found: pip install py-spy", file=sys.stderr)
        return None
    raw = out.with_suffix(".txt")
    wrapper = [spy, "record", "--format", "raw", "--threads", "--full-filenames", *extra, "-o", str(raw), "--"]
    res = bench.w2(backend, wrapper=wrapper)
    if res is None or not raw.exists():
        print(f"profiling failed: {res.failure() if res else ''}", file=sys.stderr)
        return None
    summary = aggregate_profile(raw)
    out.write_text(json.dumps(summary, indent=2) + "\n")
    return summary


def perf_w2(bench: Bench, backend: str, out: Path) -> dict[str, Any] | None:
    """Workload 2 again under ``perf record``: CPU by shared object (kernel, interpreter, sqlite, libc…).

    py-spy only sees Python frames; this shows the CPU spent outside them (system
    calls, lock hand-offs, the database driver's C code).
    """
    perf = shutil.which("perf")
    if perf is None:
        print("perf not found (apt-get install linux-perf)", file=sys.stderr)
        return None
    res = bench.w2(backend, wrapper=[perf, "record", "-F", "999", "-o", str(out), "--"])
    if res is None or not out.exists():
        return None
    report: dict[str, Any] = {}
    for key in ("dso", "sym"):
        text = subprocess.run([perf, "report", "-i", str(out), "--stdio", "--sort", key, "--comm", "etl"],
                              capture_output=True, text=True, check=False).stdout
        rows = []
        for line in text.splitlines():
            fields = line.split(None, 1)
            if len(fields) == 2 and fields[0].endswith("%"):
                rows.append((fields[1].strip(), float(fields[0].rstrip("%"))))
        report[f"by_{key}"] = rows[:25]
    return report


def _frame_parts(frame: str) -> tuple[str, str]:
    """``'func (path/to/file.py:12)'`` -> (func, path)."""
    func, _, rest = frame.rpartition(" (")
    return (func or frame), rest.rsplit(":", 1)[0].rstrip(")")


def _package(path: str) -> str:
    if "site-packages/" in path:
        return path.split("site-packages/", 1)[1].split("/", 1)[0].removesuffix(".py")
    if "/etl/" in path:
        return "etl." + path.rsplit("/etl/", 1)[1].removesuffix(".py").replace("/", ".")
    if "/lib/python3" in path:
        rest = path.split("/lib/python3", 1)[1].split("/", 1)[-1]
        return "stdlib." + rest.split("/", 1)[0].removesuffix(".py")
    if path.startswith("<frozen"):
        return "stdlib.importlib"
    return path or "?"


# Packages that only carry the call (entry points, thread and event-loop plumbing):
# "inclusive" shares skip them, and "attributed" time goes past them to the caller.
_PLUMBING = ("click", "etl.cli", "etl.job", "etl.running", "stdlib.")


def _attributed(packages: list[str]) -> str:
    """Who asked for this sample's CPU: the innermost frame that is not stdlib.

    Stdlib time (json, threading, selectors…) is charged to the library or etl
    module that called it.  When that caller is only plumbing (click, etl.cli, etl.job, etl.running,
    the entry script), the innermost stdlib module keeps it instead:
    "stdlib.asyncio" is the event loop itself, "stdlib.concurrent" the thread pools.
    """
    if "stdlib.importlib" in packages:
        return "startup: imports"
    below: str | None = None
    for pkg in reversed(packages):
        if pkg.startswith("stdlib.") or pkg == "<string>":
            below = below or pkg
            continue
        if pkg.startswith(_PLUMBING) or "/" in pkg:
            return below or pkg
        return pkg
    return below or "?"


def aggregate_profile(raw: Path, top: int = 25) -> dict[str, Any]:
    """Shares of samples: by thread role, attributed package, leaf package/function, nearest etl function."""
    counters: dict[str, Counter[str]] = {k: Counter() for k in (
        "by_thread", "attributed_by_package", "self_by_package", "inclusive_by_package",
        "by_nearest_etl_function", "self_by_function")}
    total = 0
    for line in raw.read_text(errors="replace").splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        frames = stack.split(";")
        if frames and frames[0].startswith("process "):
            frames = frames[1:]
        thread = "?"
        if frames and frames[0].startswith("thread "):
            # "thread (0x7f..): etl-http_3" -> "etl-http": ids and pool indexes differ from run to run.
            _, _, name = frames[0].partition("): ")
            thread = name.rstrip("0123456789").rstrip("_") if name else "MainThread"
            frames = frames[1:]
        if not frames:
            continue
        total += count
        parts = [_frame_parts(f) for f in frames]
        packages = [_package(p) for _, p in parts]
        func = parts[-1][0]
        counters["by_thread"][thread] += count
        counters["attributed_by_package"][_attributed(packages)] += count
        counters["self_by_package"][packages[-1]] += count
        counters["self_by_function"][f"{func} ({packages[-1]})"] += count
        for pkg in {p for p in packages if not p.startswith(_PLUMBING) and p != "<string>" and "/" not in p}:
            counters["inclusive_by_package"][pkg] += count
        nearest = next((f"{pkg}.{f}" for (f, _), pkg in zip(reversed(parts), reversed(packages), strict=True)
                        if pkg.startswith("etl.")), "(no etl frame)")
        counters["by_nearest_etl_function"][nearest] += count

    def pct(c: Counter[str]) -> list[tuple[str, float]]:
        return [(k, round(100 * v / total, 1)) for k, v in c.most_common(top)] if total else []

    return {"samples": total, **{k: pct(c) for k, c in counters.items()}}


def print_profile(summary: dict[str, Any], title: str = "workload 2") -> None:
    print(f"\nProfile of {title} ({summary['samples']} py-spy samples of the etl process)")
    for key, title in (("by_thread", "by thread"),
                       ("attributed_by_package", "attributed (stdlib time charged to its caller)"),
                       ("inclusive_by_package", "inclusive by package (anywhere on the stack)"),
                       ("by_nearest_etl_function", "by nearest etl function on the stack"),
                       ("self_by_function", "self time by function")):
        print(f"  {title}:")
        for name, share in summary[key][:15]:
            print(f"    {share:5.1f} %  {name}")


# --- main --------------------------------------------------------------------------


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--db", default="sqlite,postgresql,mysql",
                   help="comma-separated: sqlite, postgresql, mysql (default: all three)")
    p.add_argument("--only", default="1,2,3,4,5,6", help="comma-separated workload numbers (default: 1-6; "
                   "7 needs --old-etl)")
    p.add_argument("--old-etl", default=None, metavar="PATH",
                   help="workload 7: the etl executable of the previous engine (e.g. a venv of commit 8a63ddc)")
    p.add_argument("--quick", action="store_true", help="scaled-down sizes for a fast sanity run")
    p.add_argument("--repeat", type=int, default=1, help="run every selected workload this many times")
    p.add_argument("--json", type=Path, default=None, help="also write machine info and every figure here")
    p.add_argument("--sync-args", default="", metavar="ARGS",
                   help="extra `etl sync` options for workloads 2 and 4 (e.g. '--concurrency 4'); "
                        "workload 1 always runs with the defaults")
    p.add_argument("--profile", type=Path, default=None, metavar="OUT.json",
                   help="after the runs, profile workload 2 on the first --db with py-spy; "
                        "raw stacks go to OUT.txt, the aggregate to OUT.json")
    p.add_argument("--profile-args", default="--rate 200 --gil", metavar="ARGS",
                   help="extra py-spy record options (default: %(default)s, i.e. only the thread holding "
                        "the GIL: Python CPU; try '--rate 200' for every thread py-spy sees as active)")
    p.add_argument("--perf", type=Path, default=None, metavar="OUT.data",
                   help="after the runs, record workload 2 on the first --db with `perf record` "
                        "(CPU by shared object and native symbol, kernel included)")
    p.add_argument("--postgres-server", default=DEFAULT_SERVERS["postgresql"],
                   help="server URL without a database name [env: ETL_BENCH_POSTGRES_SERVER]")
    p.add_argument("--mysql-server", default=DEFAULT_SERVERS["mysql"],
                   help="server URL without a database name [env: ETL_BENCH_MYSQL_SERVER]")
    p.add_argument("--timeout", type=float, default=900.0, help="seconds before one etl process is killed")
    p.add_argument("--keep", action="store_true", help="keep the databases and temp dir (for debugging)")
    args = p.parse_args(argv)
    args.db = [d.strip() for d in args.db.split(",") if d.strip()]
    bad = [d for d in args.db if d not in BACKENDS]
    if bad:
        p.error(f"unknown database {bad[0]!r}; choose from {', '.join(BACKENDS)}")
    args.only = {w.strip() for w in args.only.split(",") if w.strip()}
    if not args.only <= {"1", "2", "3", "4", "5", "6", "7"}:
        p.error("--only takes workload numbers 1 to 7")
    if "7" in args.only and not args.old_etl:
        p.error("workload 7 needs --old-etl PATH")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if not Path(ETL).exists():
        print(f"no etl executable next to {sys.executable}: install the package first", file=sys.stderr)
        return 2
    Spawner.start()  # first, while this process is still small
    info = machine_info()
    print(f"machine: {info['nproc']} CPUs, {info['cpu_model']}, {info['ram_gib']} GiB RAM; "
          f"load {info['loadavg_start'][0]:.2f}; {info['date']}" + ("; QUICK sizes" if args.quick else ""))
    workdir = Path(tempfile.mkdtemp(prefix="etl-bench-"))
    dbs = Databases(workdir, {"postgresql": args.postgres_server, "mysql": args.mysql_server}, args.keep)
    bench = Bench(args, workdir, dbs)
    profile: dict[str, Any] | None = None
    perf_report: dict[str, Any] | None = None
    steps: list[tuple[str, Callable[[str], Any]]] = []
    if "1" in args.only:
        steps.append(("1", bench.w1))
    if "2" in args.only:
        steps.append(("2", bench.w2))
    if args.only & {"3", "4", "5"}:
        steps.append(("3-5", lambda backend: bench.big(backend, args.only)))
    if "6" in args.only:
        steps.append(("6", SharedKey(bench).run))
        steps.append(("6s", lambda backend: slow_rate(bench, backend)))
    if "7" in args.only:
        steps.append(("7", lambda backend: engines_side_by_side(bench, backend, args.old_etl)))
    try:
        for rep in range(args.repeat):
            bench.rep = rep + 1
            for backend in args.db:
                for name, step in steps:
                    print(f"[run {rep + 1}/{args.repeat}] {backend}: workload {name} "
                          f"(load {os.getloadavg()[0]:.2f})", flush=True)
                    try:
                        step(backend)
                    except Exception as exc:  # one broken workload must not hide the others
                        bench.failed(name, backend, "-", f"{type(exc).__name__}: {exc}")
        if args.perf is not None:
            print(f"perf record of workload 2 on {args.db[0]}", flush=True)
            perf_report = perf_w2(bench, args.db[0], args.perf)
        if args.profile is not None:
            print(f"profiling workload 2 on {args.db[0]} with py-spy", flush=True)
            profile = profile_w2(bench, args.db[0], args.profile, args.profile_args.split())
    except KeyboardInterrupt:
        print("interrupted; reporting what was measured", file=sys.stderr)
    finally:
        Spawner.stop()
        dbs.drop_all()
        if not args.keep:
            shutil.rmtree(workdir, ignore_errors=True)
        else:
            print(f"kept {workdir}", file=sys.stderr)
    info["loadavg_end"] = os.getloadavg()
    print_table(bench.rows)
    if profile:
        print_profile(profile)
    if perf_report:
        for key, title in (("by_dso", "by shared object"), ("by_sym", "by native symbol")):
            print(f"\nperf: CPU of the etl process {title}")
            for name, share in perf_report[key][:15]:
                print(f"  {share:5.1f} %  {name}")
    print(f"\nload average at start {info['loadavg_start'][0]:.2f}, at end {info['loadavg_end'][0]:.2f} "
          f"on {info['nproc']} CPUs (other work on the machine makes every figure noisy)")
    if args.json is not None:
        args.json.write_text(json.dumps({"machine": info, "quick": args.quick, "sizes": asdict(bench.sizes),
                                         "rows": [asdict(r) | {"verdict": r.verdict} for r in bench.rows],
                                         "profile": profile, "perf": perf_report}, indent=2, default=str) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
