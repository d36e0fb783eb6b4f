"""Benchmark of the write path (issue 27, part 5): CPU per stored summary on the dated page path, and
unthrottled v1 sync against dlt doing the same work.  One command, one printed table::

    .venv/bin/python bench/writepath.py --setup-dlt --db sqlite --repeat 1 --quick   # first: makes .venv-dlt
    .venv/bin/python bench/writepath.py                       # all three databases, 3 runs each (~15 min)
    .venv/bin/python bench/writepath.py --etl /tmp/old/.venv/bin/etl   # the same figures for another checkout
    git worktree add /tmp/old REV && python3 -m venv /tmp/old/.venv   # another checkout (REV: a commit)
    /tmp/old/.venv/bin/pip install -q -e '/tmp/old[postgres,mysql]'
    .venv/bin/python bench/writepath.py --only dated --against /tmp/old/.venv/bin/etl   # REV and this, alternating

Everything runs as separate processes, as in production and as in ``bench/run.py``
(``harness``): the simulator is ``python -m etl.testing`` on a loopback port,
every etl step the installed ``etl`` executable, each on a throwaway database.
CPU is the measured process's own user + sys time (``wait4``), never the
simulator's or the database server's; on a machine shared with other work
(two cores, other people's tests) CPU time is the figure to trust, wall time
and throughput vary with the load, which is why each measurement is repeated
and etl and dlt runs alternate.

* **dated page path** — ``etl discover --since … --rate 0`` on API version
  2026-03-30 against a seeded workspace of ``--calls`` calls (4 lines x 50
  one-to-one conversations, frozen clock; about 5 in 6 completed, each listed
  with its final summary): 200 ``GET /calls`` pages of 50 calls, every final
  summary stored from its page with its call, participants, voicemail, child
  rows and ended queue row (``etl/discover_listing.py``,
  ``policy.settle_listed``, the store), then users, lines and contacts
  refreshed as every discover does.  Figure: the discover process's CPU
  (start-up included) divided by the summaries it stored.
* **v1 unthrottled, etl** — workload 2 of ``bench/run.py``: ``--ids`` ids
  enqueued, each with its ``calls`` row (as discovery leaves them), simulator
  unthrottled with no latency, ``etl sync --rate 0`` (8 fetch threads): one
  ``GET /v1/call-summaries/{id}`` per id, the summary normalised into
  ``call_summaries`` and its four child tables, the queue row ended, in
  transactions of 500.  Figures: summaries stored per second of the sync
  process's wall time, and its CPU per summary.
* **v1 unthrottled, dlt** — ``bench/dlt_v1.py`` in its own venv (``--dlt-python``;
  ``--setup-dlt`` makes ``.venv-dlt``): the same ids from the same file,
  dlt's REST client asking the same endpoint of the same simulator from a
  ``parallelized`` transformer (8 threads), dlt normalising the nested
  summary into child tables and loading them (merge on ``callId``, i.e.
  upsert with children replaced) into the same kind of database (its
  ``postgres`` destination; ``sqlalchemy`` for SQLite and MariaDB).  Same
  figures, from the dlt process.  The ratio is etl's throughput over dlt's
  (and dlt's CPU per summary over etl's), best run of each.
* **against another checkout** (``--against PATH``, dated only) — the dated
  measurement of another checkout's ``etl`` (its own migrations, its own
  bytecode written first) and of this one, alternating within each repeat,
  the other first: on a machine whose speed moves between runs, a change is
  judged only against the code before it measured in the same minutes.
  Figures: each one's median CPU per summary and the change.
* **httpx alone** (once, with the v1 runs) — the same GETs one after another on
  one ``httpx.HTTPTransport`` (as each of etl's fetch threads has), bodies read,
  nothing parsed or stored: the client library's CPU per request, the floor
  under etl's v1 figure.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE), str(HERE.parent)]

import harness  # noqa: E402  (bench/harness.py, next to this script)
from harness import (  # noqa: E402
    API_KEY,
    BACKENDS,
    DEFAULT_SERVERS,
    Databases,
    Row,
    Simulator,
    Spawner,
    add_call_rows,
    log_event,
    machine_info,
    print_table,
    read_json_lines,
    run_etl,
    write_ids,
)

CLOCK = "2026-12-01T12:00:00Z"  # the simulator's frozen now: every process serves the same workspace
SINCE = "2026-11-01"
DATED = "2026-03-30"
DLT_VENV = HERE.parent / ".venv-dlt"
DLT_PACKAGES = ("dlt[postgres,sqlalchemy]>=1.5", "pymysql>=1.1")
TARGET_DATED_MS = 0.4
TARGET_RATIO = 3.0


def workspace(calls: int) -> list[str]:
    lines, conversations = 4, 50
    per = max(1, calls // (lines * conversations))
    return ["--phone-numbers", str(lines), "--conversations", str(conversations), "--calls", str(per),
            "--days", "21", "--seed", "17", "--clock-start", CLOCK]


def count(url: str, sql: str) -> int:
    import sqlalchemy as sa

    engine = sa.create_engine(url)
    try:
        with engine.connect() as conn:
            return int(conn.execute(sa.text(sql)).scalar_one())
    finally:
        engine.dispose()


class WritePath:
    """The three measurements on one database each; every database made here is dropped at the end."""

    def __init__(self, args: argparse.Namespace, workdir: Path, dbs: Databases) -> None:
        self.args = args
        self.workdir = workdir
        self.dbs = dbs
        self.n = 0

    def _env(self, url: str, base_url: str, **extra: str) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("ETL_", "OPENPHONE_"))}
        env.update(ETL_DATABASE_URL=url, OPENPHONE_API_KEY=API_KEY, OPENPHONE_BASE_URL=base_url,
                   ETL_LOG_FORMAT="json", **extra)
        return env

    def _etl(self, url: str, args: list[str], base_url: str = "http://127.0.0.1:9", **extra: str) -> harness.ProcResult:
        self.n += 1
        res = run_etl([*args, "--log-format", "json"], self._env(url, base_url, **extra), self.workdir,
                      f"{self.n:03d}-{args[0]}", self.args.timeout)
        if res.failure():
            raise RuntimeError(res.failure())
        return res

    def _fresh(self, backend: str) -> str:
        url = self.dbs.create(backend)
        self._etl(url, ["db", "upgrade"])
        return url

    def dated(self, backend: str, etl: str | None = None) -> dict[str, Any]:
        """``etl discover`` on the dated surface: CPU per summary stored from the pages (by ``etl``, another
        checkout's executable, every step of it, when given)."""
        with harness.measuring(etl):
            return self._dated(backend)

    def _dated(self, backend: str) -> dict[str, Any]:
        url = self._fresh(backend)
        try:
            sim = Simulator(self.workdir, rate=0, burst=10, latency_ms=0, name=f"sim-dated-{backend}-{self.n}")
            sim.cmd += workspace(self.args.calls)
            with sim:
                res = self._etl(url, ["discover", "--since", SINCE, "--rate", "0"], sim.url,
                                OPENPHONE_API_VERSION=DATED)
            done = log_event(read_json_lines(Path(res.log_path)), "discovery finished") or {}
            stored = int(done.get("stored", 0))
            in_db = count(url, "SELECT COUNT(*) FROM call_summaries")
            calls = count(url, "SELECT COUNT(*) FROM calls")
        finally:
            self.dbs.drop(url)
        return {"stored": stored, "in_db": in_db, "calls": calls, "cpu_s": res.cpu_s, "user_s": res.user_s,
                "sys_s": res.sys_s, "wall_s": res.wall_s, "requests": int(sim.stats.get("total_requests", 0)),
                "ms_per_summary": res.cpu_s / max(1, stored) * 1000}

    def etl_v1(self, backend: str, ids_file: Path) -> dict[str, Any]:
        """Workload 2: ``etl sync --rate 0`` of the ids (each with its call row) on v1."""
        url = self._fresh(backend)
        try:
            self._etl(url, ["enqueue", "--file", str(ids_file)])
            add_call_rows(url)
            with Simulator(self.workdir, rate=0, burst=10, latency_ms=0, name=f"sim-v1-{backend}-{self.n}") as sim:
                res = self._etl(url, ["sync", "--rate", "0"], sim.url)
            stored = count(url, "SELECT COUNT(*) FROM call_summaries")
        finally:
            self.dbs.drop(url)
        return self._v1_figures(res.wall_s, res.cpu_s, stored, sim)

    def dlt_v1(self, backend: str, ids_file: Path) -> dict[str, Any]:
        """The same ids through dlt (``bench/dlt_v1.py`` in its own venv)."""
        url = self.dbs.create(backend)
        dataset = url.rsplit("/", 1)[1] if backend == "mysql" else "openphone"
        if backend == "mysql":
            # dlt's staging dataset is a database of its own there: made with the same collation as the
            # dataset's (the server default differs, and dlt's merge compares keys across the two).
            import sqlalchemy as sa

            engine = sa.create_engine(url)
            try:
                with engine.begin() as conn:
                    conn.exec_driver_sql(f"CREATE DATABASE `{dataset}_staging` CHARACTER SET utf8mb4 "
                                         "COLLATE utf8mb4_unicode_ci")
            finally:
                engine.dispose()
            self.dbs.created.append(("mysql", f"{dataset}_staging"))
        try:
            with Simulator(self.workdir, rate=0, burst=10, latency_ms=0, name=f"sim-dlt-{backend}-{self.n}") as sim:
                self.n += 1
                out, err = self.workdir / f"{self.n:03d}-dlt.out", self.workdir / f"{self.n:03d}-dlt.log"
                env = {k: v for k, v in os.environ.items() if not k.startswith(("ETL_", "OPENPHONE_"))}
                got = Spawner.run({"cmd": [self.args.dlt_python, str(HERE / "dlt_v1.py"), "--base-url", sim.url,
                                           "--api-key", API_KEY, "--ids", str(ids_file), "--database-url", url,
                                           "--dataset", dataset, "--workers", "8"],
                                   "env": env, "cwd": str(self.workdir), "out": str(out), "err": str(err),
                                   "timeout": self.args.timeout})
            if got["rc"] != 0:
                tail = err.read_text(errors="replace").strip().splitlines()[-3:]
                raise RuntimeError(f"dlt exited {got['rc']}: " + " | ".join(tail)[-400:])
            stored = int(json.loads(out.read_text().strip().splitlines()[-1])["rows"])
        finally:
            self.dbs.drop(url)
            if backend == "mysql":
                self.dbs.drop(f"/{dataset}_staging")
        return self._v1_figures(got["wall"], got["user"] + got["sys"], stored, sim)

    @staticmethod
    def _v1_figures(wall_s: float, cpu_s: float, stored: int, sim: Simulator) -> dict[str, Any]:
        return {"stored": stored, "wall_s": wall_s, "cpu_s": cpu_s, "per_s": stored / wall_s if wall_s else 0.0,
                "ms_per_summary": cpu_s / max(1, stored) * 1000,
                "requests": int(sim.stats.get("total_requests", 0)),
                "sim_ms_per_request": sim.cpu_s / max(1, int(sim.stats.get("total_requests", 0))) * 1000}


# httpx alone: the same GETs as a sync's, one after another on one transport (as each fetch thread
# has), each body read whole; nothing parsed or stored.  What the client library costs per request.
_FLOOR = """
import json, sys, time, httpx
base, key, ids_file, n = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
ids = open(ids_file).read().split()[:n]
headers = httpx.Headers({"Authorization": key, "User-Agent": "bench", "Accept": "application/json",
                         "Accept-Encoding": "gzip, deflate"})
transport = httpx.HTTPTransport(limits=httpx.Limits(max_connections=1, max_keepalive_connections=1))
started = time.process_time()
for call_id in ids:
    response = transport.handle_request(httpx.Request("GET", f"{base}/v1/call-summaries/{call_id}", headers=headers))
    response.read()
    response.close()
print(json.dumps({"requests": len(ids), "cpu_s": time.process_time() - started}))
"""


def httpx_floor(workdir: Path, ids_file: Path, n: int) -> dict[str, Any]:
    """CPU per request of httpx alone against the same simulator: the floor under etl's figure."""
    with Simulator(workdir, rate=0, burst=10, latency_ms=0, name="sim-floor") as sim:
        got = subprocess.run([sys.executable, "-c", _FLOOR, sim.url, API_KEY, str(ids_file), str(n)],
                             capture_output=True, text=True, check=True, timeout=600)
    figures = json.loads(got.stdout.strip().splitlines()[-1])
    figures["ms_per_request"] = figures["cpu_s"] / max(1, figures["requests"]) * 1000
    return figures


def spread(values: list[float], fmt: str) -> str:
    if len(values) == 1:
        return format(values[0], fmt)
    return (f"{format(statistics.median(values), fmt)} (median; {format(min(values), fmt)} to "
            f"{format(max(values), fmt)} over {len(values)})")


def setup_dlt(python: str) -> int:
    """Make the dlt venv: dlt is a benchmark's reference, never a dependency of the package."""
    venv = Path(python).parent.parent
    if not Path(python).exists():
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    return subprocess.run([python, "-m", "pip", "install", "-q", *DLT_PACKAGES], check=False).returncode


def main(argv: list[str] | None = None) -> int:
    # The docstring's first paragraph, and its commands as the help's epilog (a new user starts there).
    head, examples = (__doc__ or "").split("\n\n")[:2]
    p = argparse.ArgumentParser(description=head.removesuffix("::") + ".", epilog="examples:\n" + examples,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--db", default="sqlite,postgresql,mysql", help="comma-separated: sqlite, postgresql, mysql")
    p.add_argument("--only", default="dated,v1", help="comma-separated: dated, v1 (default: both)")
    p.add_argument("--repeat", type=int, default=3, help="runs of each measurement (etl and dlt alternate)")
    p.add_argument("--calls", type=int, default=10_000, help="calls in the dated workspace (default 10,000)")
    p.add_argument("--ids", type=int, default=10_000, help="ids of the v1 runs (default 10,000)")
    p.add_argument("--quick", action="store_true", help="2,000 calls and 2,000 ids: a sanity run")
    p.add_argument("--etl", default=harness.ETL, metavar="PATH",
                   help="the etl executable measured (default: the one of this venv), e.g. another checkout's")
    p.add_argument("--against", default=None, metavar="PATH",
                   help="another checkout's etl executable: its dated figure and this one's, alternating (dated only)")
    p.add_argument("--dlt-python", default=str(DLT_VENV / "bin" / "python"), metavar="PATH",
                   help="python of the venv dlt is installed in (default: %(default)s)")
    p.add_argument("--setup-dlt", action="store_true", help="create --dlt-python's venv and install dlt in it first")
    p.add_argument("--postgres-server", default=DEFAULT_SERVERS["postgresql"])
    p.add_argument("--mysql-server", default=DEFAULT_SERVERS["mysql"])
    p.add_argument("--timeout", type=float, default=900.0, help="seconds before one process is killed")
    p.add_argument("--json", type=Path, default=None, help="also write every figure here")
    args = p.parse_args(argv)
    backends = [d.strip() for d in args.db.split(",") if d.strip()]
    if bad := [b for b in backends if b not in BACKENDS]:
        p.error(f"unknown database {bad[0]!r}; choose from {', '.join(BACKENDS)}")
    only = {w.strip() for w in args.only.split(",") if w.strip()}
    if not only <= {"dated", "v1"}:
        p.error("--only takes dated, v1")
    if args.quick:
        args.calls, args.ids = 2_000, 2_000
    if args.against is not None and "dated" not in only:
        p.error("--against compares the dated path: leave dated in --only")
    if args.against is not None and not Path(args.against).exists():
        p.error(f"no etl executable at {args.against}")
    if args.setup_dlt and setup_dlt(args.dlt_python) != 0:
        print("could not install dlt", file=sys.stderr)
        return 2
    if "v1" in only and not Path(args.dlt_python).exists():
        p.error(f"no dlt venv at {args.dlt_python}: run once with --setup-dlt (or --dlt-python PATH)")
    harness.ETL = args.etl
    for etl in (args.etl, *([args.against] if args.against else [])):
        harness.compile_bytecode(etl)
    Spawner.start()
    info = machine_info()
    print(f"machine: {info['nproc']} CPUs, {info['cpu_model']}; load {info['loadavg_start'][0]:.2f}; {info['date']}; "
          f"etl: {args.etl}", flush=True)
    results: dict[str, dict[str, list[dict[str, Any]]]] = {}
    rows: list[Row] = []
    with tempfile.TemporaryDirectory(prefix="etl-bench-writepath-") as tmp:
        workdir = Path(tmp)
        dbs = Databases(workdir, {"postgresql": args.postgres_server, "mysql": args.mysql_server}, keep=False)
        bench = WritePath(args, workdir, dbs)
        ids_file = write_ids(workdir / f"ids-{args.ids}.txt", args.ids, seed=2)
        try:
            if "v1" in only:
                floor = httpx_floor(workdir, ids_file, args.ids)
                print(f"  httpx alone: {json.dumps(floor)}", flush=True)
                results["httpx"] = {"floor": [floor]}
                rows.append(Row("v1: httpx alone, CPU per request (the floor)", "-",
                                f"{floor['ms_per_request']:.3f} ms: {floor['requests']:,} GETs on one transport, "
                                "bodies read, nothing parsed or stored", "-", None, {"floor": floor}))
            for backend in backends:
                got = results.setdefault(backend, {"against": [], "dated": [], "etl": [], "dlt": []})
                for rep in range(args.repeat):
                    steps = []
                    if "dated" in only and args.against:
                        steps.append(("against", lambda b=backend: bench.dated(b, args.against)))
                    if "dated" in only:
                        steps.append(("dated", lambda b=backend: bench.dated(b)))
                    if "v1" in only:
                        steps += [("etl", lambda b=backend: bench.etl_v1(b, ids_file)),
                                  ("dlt", lambda b=backend: bench.dlt_v1(b, ids_file))]
                    for name, step in steps:
                        started = time.monotonic()
                        load = os.getloadavg()[0]
                        try:
                            figures = step()
                        except Exception as exc:  # one failure must not hide the other figures
                            print(f"  {backend} {name} #{rep + 1}: failed: {exc}", flush=True)
                            continue
                        figures["load"] = load
                        got[name].append(figures)
                        print(f"  {backend} {name} #{rep + 1}: {json.dumps(figures)} "
                              f"({time.monotonic() - started:.0f} s)", flush=True)
                rows += table_rows(backend, got, args.against)
        finally:
            dbs.drop_all()
            Spawner.stop()
    print_table(rows)
    print(f"\nload average at start {info['loadavg_start'][0]:.2f}, at end {os.getloadavg()[0]:.2f} "
          f"on {info['nproc']} CPUs; etl: {args.etl}")
    if args.json is not None:
        args.json.write_text(json.dumps({"machine": info, "etl": args.etl, "results": results}, indent=2) + "\n")
    return 0


def table_rows(backend: str, got: dict[str, list[dict[str, Any]]], against: str | None = None) -> list[Row]:
    rows: list[Row] = []
    dated = got["dated"]
    if dated and got["against"]:
        old = statistics.median(d["ms_per_summary"] for d in got["against"])
        new = statistics.median(d["ms_per_summary"] for d in dated)
        rows.append(Row("dated page path: the other checkout, then this one", backend,
                        f"{spread([d['ms_per_summary'] for d in got['against']], '.3f')} ms, then "
                        f"{spread([d['ms_per_summary'] for d in dated], '.3f')} ms: {(new / old - 1) * 100:+.0f} % "
                        f"(medians, alternating; other: {against})", "-", None,
                        {"against": got["against"], "runs": dated}))
    if dated:
        ms = [d["ms_per_summary"] for d in dated]
        last = dated[-1]
        rows.append(Row("dated page path: CPU per stored summary + call", backend,
                        f"{spread(ms, '.3f')} ms; {last['stored']:,} summaries with {last['calls']:,} calls "
                        f"from {last['requests']} requests; process CPU {last['cpu_s']:.2f} s",
                        f"<= {TARGET_DATED_MS} ms", min(ms) <= TARGET_DATED_MS, {"runs": dated}))
    etl, dlt = got["etl"], got["dlt"]
    if etl and dlt:
        best_etl = max(etl, key=lambda r: r["per_s"])
        best_dlt = max(dlt, key=lambda r: r["per_s"])
        ratio = best_etl["per_s"] / best_dlt["per_s"] if best_dlt["per_s"] else float("inf")
        cpu_ratio = min(r["ms_per_summary"] for r in dlt) / min(r["ms_per_summary"] for r in etl)
        rows.append(Row("v1 unthrottled: etl vs dlt, summaries/s", backend,
                        f"etl {spread([r['per_s'] for r in etl], ',.0f')}/s, "
                        f"{spread([r['ms_per_summary'] for r in etl], '.3f')} ms CPU; "
                        f"dlt {spread([r['per_s'] for r in dlt], ',.0f')}/s, "
                        f"{spread([r['ms_per_summary'] for r in dlt], '.3f')} ms CPU; "
                        f"best run each: {ratio:.1f}x the throughput, {cpu_ratio:.1f}x less CPU per summary",
                        f">= {TARGET_RATIO:.0f}x", ratio >= TARGET_RATIO, {"etl": etl, "dlt": dlt}))
    return rows


if __name__ == "__main__":
    sys.exit(main())
