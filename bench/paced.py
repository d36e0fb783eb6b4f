"""Workload 1: the API limited to 10 requests/s (burst 10, 150 ms latency), `etl sync` with
no tuning flags: summaries/s in the run and end to end, the share of 429s."""

from __future__ import annotations

from harness import W1_MAX_429_SHARE, W1_MIN_RATE, Bench, Row, Simulator


def run(bench: Bench, backend: str) -> None:
    n = bench.sizes.w1_ids
    target = f">= {W1_MIN_RATE}/s in run, <= {W1_MAX_429_SHARE:.0%} of requests 429"
    url, _ = bench.fresh_db(backend, n, seed=1)
    with Simulator(bench.workdir, rate=10, burst=10, latency_ms=150, name=f"sim-w1-{backend}") as sim:
        res = bench.etl(url, ["sync"], base_url=sim.url)
    if res.failure():
        bench.failed("1", backend, target, res.failure() or "")
        return
    fin = bench.finished_line(res)
    done = bench.queue_counts(url).get("done", 0)
    run_s = float(fin.get("duration_s") or res.wall_s)
    total = int(sim.stats.get("total_requests", 0))
    n429 = int(sim.stats.get("outcomes", {}).get("429", 0))
    share = n429 / total if total else 0.0
    rate_run, rate_e2e = done / run_s, done / res.wall_s
    met = done == n and rate_run >= W1_MIN_RATE and share <= W1_MAX_429_SHARE
    bench.add(Row("1", backend,
                 f"{done}/{n} done; {rate_run:.2f}/s in run ({run_s:.1f} s), {rate_e2e:.2f}/s end to end "
                 f"({res.wall_s:.1f} s); 429: {n429} of {total} requests ({share:.1%})"
                 + bench.accounting(done, fin),
                 target, met,
                 {"ids": n, "completed": done, "run_s": run_s, "wall_s": res.wall_s, "rate_in_run": rate_run,
                  "rate_end_to_end": rate_e2e, "requests": total, "http_429": n429, "share_429": share,
                  "cpu_s": res.cpu_s, "maxrss_mib": res.maxrss_mib, "sim": sim.stats, "finished": fin}))
