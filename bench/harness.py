"""What every benchmark workload shares: the measured ``etl`` processes, the simulator,
throwaway databases, the result table.

``python bench/run.py`` is the one command (see bench/README.md); each workload
lives in its own module next to this one (``paced``, ``unthrottled``,
``big_queue``, ``shared_key``, ``side_by_side``) and takes a :class:`Bench`.
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
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
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


@contextlib.contextmanager
def measuring(etl: str | None) -> Iterator[None]:
    """Every step run inside (migration, enqueue, the measured run) by ``etl``, another checkout's
    executable; ``None``: this one's."""
    global ETL
    saved = ETL
    ETL = etl or saved
    try:
        yield
    finally:
        ETL = saved


def compile_bytecode(etl: str) -> None:
    """Write the measured checkout's bytecode before measuring it, as installing a wheel does.

    An editable install leaves ``etl/`` as sources; where ``PYTHONDONTWRITEBYTECODE`` is set (as on
    this machine's sessions) every etl process would compile its 40-odd modules again at start,
    about 0.1 s of CPU that no installed deployment pays.  Python reads bytecode that exists
    whatever that variable says."""
    python = str(Path(etl).parent / "python")
    subprocess.run([python, "-c", "import compileall, os, etl; "
                    "compileall.compile_dir(os.path.dirname(etl.__file__), quiet=1)"], check=True)


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

    def __init__(self, workdir: Path, *, rate: float, burst: int, latency_ms: float, name: str,
                 api_key: str = API_KEY, extra: tuple[str, ...] = ()) -> None:
        self.stats_file = workdir / f"{name}.stats.json"
        self.log_file = workdir / f"{name}.log"
        self.cmd = [sys.executable, "-m", "etl.testing", "--port", "0", "--api-key", api_key,
                    "--rate", str(rate), "--burst", str(burst), "--latency-ms", str(latency_ms),
                    "--stats-file", str(self.stats_file), "--quiet", *extra]
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
        # The first line only: the hints that follow may come in the same read.
        text = line.decode(errors="replace").strip().split("\n")[0].strip()
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


class ApiSampler:
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

    def __enter__(self) -> ApiSampler:
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


def ms(seconds: float | None) -> str:
    return "n/a" if seconds is None else f"{seconds * 1000:.0f} ms"
