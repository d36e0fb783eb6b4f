"""Workload 6: 1, 2 and 4 concurrent `etl sync` processes on one key limited to 10 requests/s
(summaries/s together at the API, 429 share); 6s: `--rate 0.5` takes the time it should."""

from __future__ import annotations

import subprocess
import time
from typing import Any

import harness
from harness import (
    API_KEY,
    W6_MAX_429_SHARE,
    W6_MIN_RATE,
    W6_PROCESSES,
    ApiSampler,
    Bench,
    ProcResult,
    Row,
    _wait_with_rusage,
)


def run(bench: Bench, backend: str) -> None:
    """Workload 6: 1, 2 and 4 concurrent `etl sync` processes on one key limited to 10 req/s."""
    from etl.testing import FakeOpenPhone, serve

    n = bench.sizes.w6_ids
    target = f">= {W6_MIN_RATE}/s together at the API, <= {W6_MAX_429_SHARE:.0%} of requests 429"
    for procs in W6_PROCESSES:
        url, _ = bench.fresh_db(backend, n, seed=6)
        fake = FakeOpenPhone(api_key=API_KEY, rate=10, burst=10, latency_ms=50)
        with serve(fake) as api, ApiSampler(fake) as sampler:
            results = _concurrent_syncs(bench, url, api, procs)
        bad = next(("no result" if r is None else r.failure() for r in results
                    if r is None or r.failure()), None)
        if bad:
            bench.failed(f"6/{procs}p", backend, target, bad)
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
            proc = subprocess.Popen([harness.ETL, *args], env=bench.env(url, api), stdout=out, stderr=err,
                                    stdin=subprocess.DEVNULL, cwd=bench.workdir)
        started.append((proc, args, log_path, out_path, time.perf_counter()))
    results: list[ProcResult | None] = []
    for proc, args, log_path, out_path, t0 in started:
        rc, usage, timed_out = _wait_with_rusage(proc, bench.timeout)
        results.append(ProcResult(args=[harness.ETL, *args], rc=rc, wall_s=time.perf_counter() - t0,
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
    with serve(fake) as api, ApiSampler(fake) as sampler:
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
