"""Many workspaces at their keys' full rate (issue 27, part 6), in the style of bench/run.py.

One command, a printed table; it measures and reports, it asserts nothing.
Every step is a separate process, as in production:

* four simulators, ``python -m etl.testing --port 0 --api-key K --rate 10
  --burst 10 --latency-ms L --stats-file F --stats-times --stats-ids`` (each its
  own key and token bucket, as four OpenPhone workspaces are), read back from
  their stats files after SIGTERM: every request's time, the 429s, and how often
  each call id's summary was fetched;
* a workspaces file naming each workspace's ``base_url`` and ``api_key_env``;
  N ids queued per workspace with `etl enqueue --workspaces FILE --workspace
  NAME --file IDS`, each id with a minimal ``calls`` row (the discovered path:
  one request per summary);
* **A**: one `etl sync --workspaces FILE` process for all four workspaces;
* **B**: several `etl sync --workspaces FILE` processes started together on one
  server database (as on several machines: PostgreSQL, or MariaDB, is the only
  coordinator).

Figures per workspace: requests/s at its simulator (from its first request to
its last, and the busiest 10 s), its 429 count and share, summaries landed
(rows in ``call_summaries`` of that workspace), ids fetched once / more than
once (the simulator's per-id counts); per run: all workspaces together, the
etl processes' CPU, the machine's load before and after.  See bench/README.md
("Many workspaces at full rate").
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE), str(HERE.parent)]

import harness  # noqa: E402  (bench/harness.py, next to this script)
from harness import (  # noqa: E402
    DEFAULT_SERVERS,
    Databases,
    ProcResult,
    Row,
    Simulator,
    Spawner,
    _wait_with_rusage,
    machine_info,
    print_table,
    read_json_lines,
    run_etl,
    write_ids,
)

KEY_RATE = 10.0          # OpenPhone's limit per key: the simulators' token bucket and etl's default --rate
BURST = 10
MIN_SHARE = 0.95         # "at its key's 10 requests/s": at least 95 % of it over the busy window
MAX_429_SHARE = 0.01
MAX_WINDOW_RATE = 10.5   # requests/s in the busiest 10 s at one key: its 10/s, and the bucket's jitter allowance
WINDOW_S = 10.0


@dataclass
class Workspace:
    """One workspace of the run: its name, key, ids, simulator and what it saw."""

    name: str
    key: str
    ids_file: Path
    ids: list[str]
    sim: Simulator | None = None
    stats: dict[str, Any] = field(default_factory=dict)

    @property
    def key_env(self) -> str:
        return f"BENCH_KEY_{self.name.upper()}"


@dataclass
class KeyFigures:
    """What one simulator (one key) saw."""

    requests: int
    http_429: int
    rate: float            # requests/s from the first request to the last
    busiest: float         # requests/s in the busiest WINDOW_S
    span_s: float
    first: float
    last: float
    fetched: int           # distinct ids whose summary was fetched
    fetched_twice: int     # ids fetched more than once
    foreign: int           # ids fetched that this workspace never queued
    never: int             # queued ids never fetched

    @property
    def share_429(self) -> float:
        return self.http_429 / self.requests if self.requests else 0.0


def key_figures(ws: Workspace) -> KeyFigures:
    stats = ws.stats
    times = sorted(t for ts in stats.get("times", {}).values() for t in ts)
    total = int(stats.get("total_requests", 0))
    n429 = int(stats.get("outcomes", {}).get("429", 0))
    first, last = (times[0], times[-1]) if times else (0.0, 0.0)
    span = last - first
    rate = (len(times) - 1) / span if span > 0 else 0.0
    busiest, j = 0, 0
    for i, t in enumerate(times):  # the most requests in any WINDOW_S (two pointers)
        while times[j] <= t - WINDOW_S:
            j += 1
        busiest = max(busiest, i - j + 1)
    per_id: dict[str, int] = stats.get("per_id", {})
    queued = set(ws.ids)
    return KeyFigures(total, n429, rate, busiest / WINDOW_S, span, first, last,
                      len(per_id), sum(1 for n in per_id.values() if n > 1),
                      sum(1 for i in per_id if i not in queued), len(queued - set(per_id)))


# --- the set-up ----------------------------------------------------------------------


def workspaces_file(path: Path, workspaces: list[Workspace]) -> Path:
    lines = []
    for ws in workspaces:
        assert ws.sim is not None
        lines += [f"[workspace.{ws.name}]", f'api_key_env = "{ws.key_env}"', f'base_url = "{ws.sim.url}"', ""]
    path.write_text("\n".join(lines), encoding="utf-8")
    return path


def add_call_rows(url: str) -> None:
    """A minimal ``calls`` row (in the id's workspace) for every queued id: `etl discover` leaves ids so,
    and sync then asks for the summary only -- one request per summary."""
    import sqlalchemy as sa

    engine = sa.create_engine(url)
    try:
        columns = {c["name"] for c in sa.inspect(engine).get_columns("calls")}
        ws = ", workspace" if "workspace" in columns else ""
        with engine.begin() as conn:
            conn.execute(sa.text(
                f"INSERT INTO calls (call_id{ws}, participant_count, content_hash, raw_json, first_synced_at, "
                f"last_synced_at) SELECT call_id{ws}, 0, '', '{{}}', CURRENT_TIMESTAMP, CURRENT_TIMESTAMP "
                "FROM summary_queue"))
    finally:
        engine.dispose()


def landed(url: str) -> dict[str, dict[str, int]]:
    """Per workspace: summaries stored and queue items done (what the database really holds)."""
    import sqlalchemy as sa

    engine = sa.create_engine(url)
    try:
        with engine.connect() as conn:
            summaries = conn.execute(sa.text(
                "SELECT workspace, COUNT(*) FROM call_summaries GROUP BY workspace")).all()
            done = conn.execute(sa.text(
                "SELECT workspace, COUNT(*) FROM summary_queue WHERE state = 'done' GROUP BY workspace")).all()
    finally:
        engine.dispose()
    out: dict[str, dict[str, int]] = {}
    for name, n in summaries:
        out.setdefault(name, {"summaries": 0, "done": 0})["summaries"] = int(n)
    for name, n in done:
        out.setdefault(name, {"summaries": 0, "done": 0})["done"] = int(n)
    return out


class Run:
    """One measured run: a database, four simulators, a workspaces file, ids queued."""

    def __init__(self, args: argparse.Namespace, workdir: Path, dbs: Databases, backend: str, label: str) -> None:
        self.args = args
        self.workdir = workdir / label
        self.workdir.mkdir()
        self.dbs = dbs
        self.backend = backend
        self.url = ""
        self.workspaces = [
            Workspace(name, f"bench-key-{name}-{n:02d}-0123456789",
                      write_ids(workdir / f"ids-{args.ids}-{n}.txt", args.ids, seed=2700 + n), [])
            for n, name in enumerate(f"ws{i + 1}" for i in range(args.count))]
        for ws in self.workspaces:
            ws.ids = ws.ids_file.read_text().split()
        self.file = self.workdir / "workspaces.toml"
        self._stack = contextlib.ExitStack()
        self._n = 0

    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("ETL_", "OPENPHONE_", "BENCH_KEY_"))}
        env.update(ETL_DATABASE_URL=self.url, ETL_LOG_FORMAT="json")
        env.update({ws.key_env: ws.key for ws in self.workspaces})
        return env

    def etl(self, args: list[str]) -> ProcResult:
        self._n += 1
        return run_etl([*args, "--log-format", "json"], self.env(), self.workdir, f"{self._n:02d}-{args[0]}",
                       self.args.timeout)

    def __enter__(self) -> Run:
        try:
            self._start()
        except BaseException:
            self.__exit__(None, None, None)
            raise
        return self

    def _start(self) -> None:
        self._stack.callback(self._stop_simulators)
        for ws in self.workspaces:
            ws.sim = Simulator(self.workdir, rate=KEY_RATE, burst=BURST, latency_ms=self.args.latency_ms,
                               name=f"sim-{ws.name}", api_key=ws.key, extra=("--stats-times", "--stats-ids", "--quiet"))
            ws.sim.__enter__()
        workspaces_file(self.file, self.workspaces)
        self.url = self.dbs.create(self.backend)
        for step in (["db", "upgrade"], *(["enqueue", "--workspaces", str(self.file), "--workspace", ws.name,
                                           "--file", str(ws.ids_file)] for ws in self.workspaces)):
            res = self.etl(step)
            if res.failure():
                raise RuntimeError(res.failure())
        add_call_rows(self.url)

    def _stop_simulators(self) -> None:
        for ws in self.workspaces:
            if ws.sim is not None:
                ws.sim.__exit__(None, None, None)
                ws.stats = ws.sim.stats

    def finish(self) -> None:
        """Stop the simulators (their stats files are written on SIGTERM)."""
        self._stack.close()

    def __exit__(self, *exc: object) -> None:
        self._stack.close()
        if self.url:
            with contextlib.suppress(Exception):
                self.dbs.drop(self.url)


def start_together(run: Run, n: int) -> tuple[list[ProcResult], float]:
    """``n`` `etl sync --workspaces FILE` processes started together; their results and the wall time.

    Children of the benchmark (the spawner helper runs one process at a time), so
    their CPU is their own and their peak RSS is not reported."""
    started = []
    t0 = time.perf_counter()
    for i in range(n):
        args = ["sync", "--workspaces", str(run.file), "--log-format", "json"]
        log_path, out_path = run.workdir / f"sync-{i}.log", run.workdir / f"sync-{i}.out"
        with open(log_path, "wb") as err, open(out_path, "wb") as out:
            proc = subprocess.Popen([harness.ETL, *args], env=run.env(), stdout=out, stderr=err,
                                    stdin=subprocess.DEVNULL, cwd=run.workdir)
        started.append((proc, args, log_path, out_path))
    results = []
    for proc, args, log_path, out_path in started:
        rc, usage, timed_out = _wait_with_rusage(proc, run.args.timeout)
        results.append(ProcResult(args=[harness.ETL, *args], rc=rc, wall_s=time.perf_counter() - t0,
                                  user_s=usage.ru_utime, sys_s=usage.ru_stime, maxrss_mib=0.0,
                                  stdout=out_path.read_text(errors="replace"), log_path=str(log_path),
                                  timed_out=timed_out))
    return results, time.perf_counter() - t0


def split_of(result: ProcResult) -> dict[str, int]:
    """Items each workspace's run in this process completed (its ``run finished`` lines)."""
    out: dict[str, int] = {}
    for line in read_json_lines(Path(result.log_path)):
        if line.get("event") == "run finished":
            name = str(line.get("workspace", "default"))
            out[name] = out.get(name, 0) + int(line.get("completed", 0))
    return out


# --- the two parts -------------------------------------------------------------------


def load_note(before: tuple[float, ...], after: tuple[float, ...]) -> str:
    return f"load {before[0]:.1f}->{after[0]:.1f} on {os.cpu_count()} CPUs"


def report_keys(rows: list[Row], part: str, backend: str, run: Run, counts: dict[str, dict[str, int]],
                *, once: bool) -> tuple[list[KeyFigures], bool]:
    """A row per workspace; ``once``: the fetched-once check is part of the target (part B)."""
    figures, all_met = [], True
    n = run.args.ids
    for ws in run.workspaces:
        k = key_figures(ws)
        got = counts.get(ws.name, {"summaries": 0, "done": 0})
        fetched = (f"{k.fetched} ids fetched, {k.fetched_twice} more than once, {k.foreign} not its own, "
                   f"{k.never} never")
        if once:
            target = f"each id fetched once, all done; <= {MAX_429_SHARE:.0%} 429; <= {KEY_RATE:g}/s " \
                     f"(busiest {WINDOW_S:g} s <= {MAX_WINDOW_RATE:g}/s)"
            met = (k.fetched == n and not (k.fetched_twice or k.foreign or k.never) and got["done"] == n
                   and k.share_429 <= MAX_429_SHARE and k.busiest <= MAX_WINDOW_RATE)
        else:
            target = f">= {MIN_SHARE * KEY_RATE:g} requests/s, <= {MAX_429_SHARE:.0%} 429, all {n} landed"
            met = k.rate >= MIN_SHARE * KEY_RATE and k.share_429 <= MAX_429_SHARE and got["summaries"] == n
        all_met &= met
        figures.append(k)
        rows.append(Row(f"{part}/{ws.name}", backend,
                        f"{k.rate:.2f} requests/s ({k.requests} in {k.span_s:.1f} s; busiest {WINDOW_S:g} s "
                        f"{k.busiest:.2f}/s); 429: {k.http_429} ({k.share_429:.1%}); {got['summaries']}/{n} summaries "
                        f"landed, {got['done']} done; {fetched}",
                        target, met, {"workspace": ws.name, **asdict(k), **got}))
    return figures, all_met


def together(figures: list[KeyFigures]) -> tuple[float, float, int, int]:
    """All keys together: requests/s from the first request at any simulator to the last; requests; 429s."""
    first = min((k.first for k in figures if k.requests), default=0.0)
    last = max((k.last for k in figures if k.requests), default=0.0)
    requests = sum(k.requests for k in figures)
    return ((requests - 1) / (last - first) if last > first else 0.0), last - first, requests, \
        sum(k.http_429 for k in figures)


def part_a(args: argparse.Namespace, workdir: Path, dbs: Databases, backend: str, rows: list[Row]) -> None:
    """One `etl sync --workspaces FILE` process keeps every workspace at its key's rate."""
    with Run(args, workdir, dbs, backend, f"a-{backend}") as run:
        before = os.getloadavg()
        res = run.etl(["sync", "--workspaces", str(run.file)])
        after = os.getloadavg()
        run.finish()
        counts = landed(run.url)
        figures, met = report_keys(rows, "A", backend, run, counts, once=False)
        rate, span, requests, n429 = together(figures)
        summaries = sum(c["summaries"] for c in counts.values())
        n = args.ids * args.count
        bad = res.failure()
        rows.append(Row(
            "A/all", backend,
            (f"FAILED: {bad}; " if bad else "")
            + f"1 process, {args.count} workspaces: {rate:.2f} requests/s together ({requests} in {span:.1f} s), "
            f"429: {n429} ({n429 / requests if requests else 0:.1%}); {summaries}/{n} summaries landed; "
            f"{res.wall_s:.1f} s end to end; etl CPU {res.cpu_s:.1f} s "
            f"({res.cpu_s / max(1, summaries) * 1000:.2f} ms/summary), peak RSS {res.maxrss_mib:.0f} MiB; "
            f"{load_note(before, after)}",
            f">= {MIN_SHARE * KEY_RATE * args.count:g}/s together, every workspace's target met",
            not bad and met and summaries == n and rate >= MIN_SHARE * KEY_RATE * args.count,
            {"rate": rate, "requests": requests, "http_429": n429, "summaries": summaries, "wall_s": res.wall_s,
             "cpu_s": res.cpu_s, "maxrss_mib": res.maxrss_mib, "load_before": before, "load_after": after,
             "rc": res.rc}))


def part_b(args: argparse.Namespace, workdir: Path, dbs: Databases, backend: str, rows: list[Row]) -> None:
    """Several `etl sync --workspaces FILE` processes on one server database split the work."""
    procs = args.processes
    with Run(args, workdir, dbs, backend, f"b-{backend}") as run:
        before = os.getloadavg()
        results, wall = start_together(run, procs)
        after = os.getloadavg()
        run.finish()
        counts = landed(run.url)
        figures, met = report_keys(rows, "B", backend, run, counts, once=True)
        rate, span, requests, n429 = together(figures)
        n = args.ids * args.count
        done = sum(c["done"] for c in counts.values())
        cpu = sum(r.cpu_s for r in results)
        bad = next((r.failure() for r in results if r.failure()), None)
        splits = [split_of(r) for r in results]
        names = [ws.name for ws in run.workspaces]
        split_text = "; ".join(f"p{i + 1}: " + " ".join(str(s.get(name, 0)) for name in names)
                               for i, s in enumerate(splits))
        rows.append(Row(
            "B/all", backend,
            (f"FAILED: {bad}; " if bad else "")
            + f"{procs} processes, {args.count} workspaces: {done}/{n} done; {rate:.2f} requests/s together "
            f"({requests} in {span:.1f} s at the simulators, {wall:.1f} s end to end), 429: {n429}; "
            f"completed per process ({' '.join(names)}): {split_text}; CPU {cpu:.1f} s in all; "
            f"{load_note(before, after)}",
            f">= {MIN_SHARE * KEY_RATE * args.count:g}/s together, every workspace's target met",
            not bad and met and done == n and rate >= MIN_SHARE * KEY_RATE * args.count,
            {"rate": rate, "requests": requests, "http_429": n429, "done": done, "wall_s": wall, "cpu_s": cpu,
             "split": splits, "load_before": before, "load_after": after, "rcs": [r.rc for r in results]}))


# --- main ----------------------------------------------------------------------------


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--db", default="sqlite,postgresql",
                   help="comma-separated: sqlite, postgresql, mysql (default: sqlite,postgresql); part B runs on "
                        "the server databases among them")
    p.add_argument("--part", default="a,b", help="a (one process), b (several processes), or a,b (default)")
    p.add_argument("--ids", type=int, default=600, help="ids queued per workspace (default: 600, a minute at 10/s)")
    p.add_argument("--count", type=int, default=4, help="workspaces, each with its own key and simulator (default: 4)")
    p.add_argument("--processes", type=int, default=3, help="part B: etl sync processes started together (default: 3)")
    p.add_argument("--latency-ms", type=float, default=100.0, help="the simulators' mean latency (default: 100)")
    p.add_argument("--quick", action="store_true", help="100 ids per workspace: a sanity check, not a verdict")
    p.add_argument("--json", type=Path, default=None, help="also write machine info and every figure here")
    p.add_argument("--postgres-server", default=DEFAULT_SERVERS["postgresql"],
                   help="server URL without a database name [env: ETL_BENCH_POSTGRES_SERVER]")
    p.add_argument("--mysql-server", default=DEFAULT_SERVERS["mysql"],
                   help="server URL without a database name [env: ETL_BENCH_MYSQL_SERVER]")
    p.add_argument("--timeout", type=float, default=900.0, help="seconds before one etl process is killed")
    p.add_argument("--keep", action="store_true", help="keep the databases and temp dir (for debugging)")
    args = p.parse_args(argv)
    args.db = [d.strip() for d in args.db.split(",") if d.strip()]
    bad = [d for d in args.db if d not in harness.BACKENDS]
    if bad:
        p.error(f"unknown database {bad[0]!r}; choose from {', '.join(harness.BACKENDS)}")
    args.part = {x.strip().lower() for x in args.part.split(",") if x.strip()}
    if not args.part or not args.part <= {"a", "b"}:
        p.error("--part takes a, b or a,b")
    if args.quick:
        args.ids = 100
    if args.ids < 1 or args.count < 1 or args.processes < 1:
        p.error("--ids, --count and --processes must be at least 1")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if not Path(harness.ETL).exists():
        print(f"no etl executable next to {sys.executable}: install the package first", file=sys.stderr)
        return 2
    Spawner.start()  # first, while this process is still small
    info = machine_info()
    print(f"machine: {info['nproc']} CPUs, {info['cpu_model']}, {info['ram_gib']} GiB RAM; "
          f"load {info['loadavg_start'][0]:.2f}; {info['date']}; {args.count} workspaces x {args.ids} ids, "
          f"simulators at {KEY_RATE:g} requests/s (burst {BURST}), {args.latency_ms:g} ms latency", flush=True)
    workdir = Path(tempfile.mkdtemp(prefix="etl-bench-ws-"))
    dbs = Databases(workdir, {"postgresql": args.postgres_server, "mysql": args.mysql_server}, args.keep)
    rows: list[Row] = []
    steps = [("A", b, part_a) for b in args.db if "a" in args.part]
    steps += [("B", b, part_b) for b in args.db if "b" in args.part and b != "sqlite"]
    try:
        for name, backend, step in steps:
            print(f"part {name} on {backend} (load {os.getloadavg()[0]:.2f})", flush=True)
            start = len(rows)
            try:
                step(args, workdir, dbs, backend, rows)
            except Exception as exc:  # one broken part must not hide the others
                rows.append(Row(name, backend, f"failed: {type(exc).__name__}: {exc}", "-", None))
            for row in rows[start:]:
                print(f"  {row.workload:<8} {row.database:<10} {row.figures}  [{row.verdict}]", flush=True)
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
    print_table(rows)
    print(f"\nload average at start {info['loadavg_start'][0]:.2f}, at end {info['loadavg_end'][0]:.2f} "
          f"on {info['nproc']} CPUs (the rate figures barely depend on it; CPU figures do)")
    if args.json is not None:
        args.json.write_text(json.dumps({"machine": info, "args": {k: v if not isinstance(v, set) else sorted(v)
                                                                    for k, v in vars(args).items()},
                                         "rows": [asdict(r) | {"verdict": r.verdict} for r in rows]},
                                        indent=2, default=str) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
