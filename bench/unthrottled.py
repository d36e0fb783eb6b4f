"""Workload 2: an unthrottled API and `etl sync --rate 0` on ids with their call rows:
summaries/s end to end and CPU per summary; ``--profile`` / ``--perf`` run it again
under py-spy or perf to show where the CPU goes."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from collections import Counter
from pathlib import Path
from typing import Any

from harness import BIN, W2_MAX_CPU_MS, W2_MIN_RATE, Bench, ProcResult, Row, Simulator


def run(bench: Bench, backend: str, wrapper: list[str] | None = None) -> ProcResult | None:
    n = bench.sizes.w2_ids
    target = f">= {W2_MIN_RATE:.0f}/s end to end, <= {W2_MAX_CPU_MS} ms CPU/summary"
    url, _ = bench.fresh_db(backend, n, seed=2, with_calls=True)  # discovered ids: their call is stored
    with Simulator(bench.workdir, rate=0, burst=10, latency_ms=0, name=f"sim-w2-{backend}") as sim:
        res = bench.etl(url, ["sync", "--rate", "0", *bench.args.sync_args.split()], base_url=sim.url,
                       wrapper=wrapper)
    if wrapper is not None:
        return res
    if res.failure():
        bench.failed("2", backend, target, res.failure() or "")
        return None
    fin = bench.finished_line(res)
    done = bench.queue_counts(url).get("done", 0)
    run_s = float(fin.get("duration_s") or res.wall_s)
    rate = done / res.wall_s
    cpu_ms = res.cpu_s / done * 1000 if done else float("inf")
    sim_cpu_ms = sim.cpu_s / max(1, int(sim.stats.get("total_requests", 0))) * 1000
    met = done == n and rate >= W2_MIN_RATE and cpu_ms <= W2_MAX_CPU_MS
    bench.add(Row("2", backend,
                 f"{done}/{n} done; {rate:.0f}/s end to end ({res.wall_s:.2f} s), {done / run_s:.0f}/s in run; "
                 f"CPU {cpu_ms:.3f} ms/summary (user {res.user_s:.2f} s + sys {res.sys_s:.2f} s); "
                 f"RSS {res.maxrss_mib:.0f} MiB; simulator CPU {sim_cpu_ms:.3f} ms/request"
                 + bench.accounting(done, fin),
                 target, met,
                 {"ids": n, "completed": done, "wall_s": res.wall_s, "run_s": run_s, "rate_end_to_end": rate,
                  "rate_in_run": done / run_s, "cpu_ms_per_summary": cpu_ms, "user_s": res.user_s,
                  "sys_s": res.sys_s, "maxrss_mib": res.maxrss_mib, "sim_cpu_s": sim.cpu_s,
                  "sim": sim.stats, "finished": fin}))
    return res


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
    res = run(bench, backend, wrapper=wrapper)
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
    res = run(bench, backend, wrapper=[perf, "record", "-F", "999", "-o", str(out), "--"])
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
