"""Benchmark of the real `etl` commands against the simulated API, on throwaway databases.

One command (``python bench/run.py``; ``--help`` for options) runs the
workloads of the issue "Performance: saturate the API's rate limit and never
be the bottleneck" and prints one table: workload, database, figures, target,
met/missed.  It asserts nothing; it measures and reports.  Each workload is a
module next to this one (``paced`` 1, ``unthrottled`` 2, ``big_queue`` 3-5,
``shared_key`` 6 and 6s, ``side_by_side`` 7); what they share is ``harness``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any

import big_queue
import harness
import paced
import shared_key
import side_by_side
import unthrottled
from harness import BACKENDS, DEFAULT_SERVERS, Bench, Databases, Spawner, machine_info, print_table

# --- main --------------------------------------------------------------------------


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--db", default="sqlite,postgresql,mysql",
                   help="comma-separated: sqlite, postgresql, mysql (default: all three)")
    p.add_argument("--only", default="1,2,3,4,5,6", help="comma-separated workload numbers (default: 1-6; "
                   "7 needs --old-etl)")
    p.add_argument("--old-etl", default=None, metavar="PATH",
                   help="workload 7: the etl executable of the previous engine (of another checkout, in its own venv)")
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
    if not Path(harness.ETL).exists():
        print(f"no etl executable next to {sys.executable}: install the package first", file=sys.stderr)
        return 2
    for etl in (harness.ETL, *([args.old_etl] if args.old_etl else [])):
        harness.compile_bytecode(etl)
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
        steps.append(("1", lambda backend: paced.run(bench, backend)))
    if "2" in args.only:
        steps.append(("2", lambda backend: unthrottled.run(bench, backend)))
    if args.only & {"3", "4", "5"}:
        steps.append(("3-5", lambda backend: big_queue.run(bench, backend, args.only)))
    if "6" in args.only:
        steps.append(("6", lambda backend: shared_key.run(bench, backend)))
        steps.append(("6s", lambda backend: shared_key.slow_rate(bench, backend)))
    if "7" in args.only:
        steps.append(("7", lambda backend: side_by_side.run(bench, backend, args.old_etl)))
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
            perf_report = unthrottled.perf_w2(bench, args.db[0], args.perf)
        if args.profile is not None:
            print(f"profiling workload 2 on {args.db[0]} with py-spy", flush=True)
            profile = unthrottled.profile_w2(bench, args.db[0], args.profile, args.profile_args.split())
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
        unthrottled.print_profile(profile)
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
