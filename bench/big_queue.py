"""Workloads 3-5 on big queues: `etl enqueue` of 1,000,000 ids (time, memory flat),
`etl sync --limit` on a queue of 20,000 and of 1,000,000 (memory, claim time
independent of the queue's size), `etl status` on the big queue."""

from __future__ import annotations

import statistics
import sys
import time

from harness import (
    W3_FLAT_RSS_MIB,
    W3_MAX_WALL_S,
    W4_MAX_RSS_MIB,
    W5_MAX_WALL_S,
    Bench,
    ProcResult,
    Row,
    Simulator,
    log_event,
    log_time,
    ms,
)


def run(bench: Bench, backend: str, only: set[str]) -> None:
    s = bench.sizes
    t3 = f"<= {W3_MAX_WALL_S:.0f} s; RSS flat (<= +{W3_FLAT_RSS_MIB:.0f} MiB over a small enqueue)"
    t4 = f"RSS <= {W4_MAX_RSS_MIB:.0f} MiB both; claim time independent of queue size"
    t5 = f"<= {W5_MAX_WALL_S} s"
    small_sync: ProcResult | None = None
    small_enq: ProcResult | None = None
    small_claim: float | None = None
    small_url = ""
    if "4" in only or "3" in only:
        try:
            small_url, small_enq = bench.fresh_db(backend, s.w4_small_queue, seed=4)
        except RuntimeError as exc:
            bench.failed("4", backend, t4, str(exc))
            return
        if "4" in only:
            small_sync, small_claim = _w4_sync(bench, small_url)
        bench.dbs.drop(small_url)
    try:
        big_url, big_enq = bench.fresh_db(backend, s.big_queue, seed=3)
    except RuntimeError as exc:
        bench.failed("3", backend, t3, str(exc))
        return
    assert big_enq is not None
    if "3" in only:
        small_rss = small_enq.maxrss_mib if small_enq else float("nan")
        growth = big_enq.maxrss_mib - small_rss
        bench.add(Row("3", backend,
                     f"enqueue {s.big_queue:,} ids: {big_enq.wall_s:.1f} s ({s.big_queue / big_enq.wall_s:,.0f}"
                     f" ids/s), CPU {big_enq.cpu_s:.1f} s; peak RSS {big_enq.maxrss_mib:.0f} MiB "
                     f"(enqueue of {s.w4_small_queue:,}: {small_rss:.0f} MiB)",
                     t3, big_enq.wall_s <= W3_MAX_WALL_S and growth <= W3_FLAT_RSS_MIB,
                     {"ids": s.big_queue, "wall_s": big_enq.wall_s, "cpu_s": big_enq.cpu_s,
                      "maxrss_mib": big_enq.maxrss_mib, "small_ids": s.w4_small_queue,
                      "small_maxrss_mib": small_rss, "stdout": big_enq.stdout.strip()}))
    if "4" in only:
        big_sync, big_claim = _w4_sync(bench, big_url)
        if small_sync is None or big_sync is None:
            err = (small_sync or big_sync).failure() if (small_sync or big_sync) else "sync failed"
            bench.failed("4", backend, t4, err or "sync failed")
        else:
            _w4_row(bench, backend, t4, small_sync, small_claim, big_sync, big_claim)
    if "5" in only:
        runs = [bench.etl(big_url, ["status"]) for _ in range(3)]
        bad = next((r.failure() for r in runs if r.failure()), None)
        if bad:
            bench.failed("5", backend, t5, bad)
        else:
            walls = [r.wall_s for r in runs]
            base = bench.etl(big_url, ["--version"])
            bench.add(Row("5", backend,
                         f"status on {s.big_queue:,} rows: median {statistics.median(walls):.2f} s "
                         f"(runs {', '.join(f'{w:.2f}' for w in walls)}); `etl --version` "
                         f"takes {base.wall_s:.2f} s (import/startup baseline)",
                         t5, statistics.median(walls) <= W5_MAX_WALL_S,
                         {"rows": s.big_queue, "walls_s": walls, "median_s": statistics.median(walls),
                          "baseline_version_s": base.wall_s, "maxrss_mib": max(r.maxrss_mib for r in runs)}))
    bench.dbs.drop(big_url)

def _w4_sync(bench: Bench, url: str) -> tuple[ProcResult | None, float | None]:
    # Probed before the sync, while the whole queue is pending, so both sizes claim a full batch.
    probe = probe_claim(url)
    with Simulator(bench.workdir, rate=0, burst=10, latency_ms=0, name="sim-w4") as sim:
        res = bench.etl(url, ["sync", "--rate", "0", "--limit", str(bench.sizes.w4_limit),
                             *bench.args.sync_args.split()], base_url=sim.url)
    if res.failure():
        return None, None
    bench._w4_done[res.log_path] = bench.queue_counts(url).get("done", 0)
    return res, probe

def _w4_row(bench: Bench, backend: str, target: str, small: ProcResult, small_claim: float | None,
            big: ProcResult, big_claim: float | None) -> None:
    s = bench.sizes
    parts, data = [], {}
    for label, queued, res, claim in (("small", s.w4_small_queue, small, small_claim),
                                      ("big", s.big_queue, big, big_claim)):
        lines = res.log_lines()
        fin = log_event(lines, "run finished") or {}
        started, first_call = log_time(log_event(lines, "run started")), log_time(log_event(lines, "call"))
        first = (first_call - started).total_seconds() if started and first_call else None
        done = bench._w4_done.get(res.log_path, 0)
        parts.append(f"{queued:,} queued: {done:,} done in {res.wall_s:.1f} s ({done / res.wall_s:,.0f}/s), "
                     f"RSS {res.maxrss_mib:.0f} MiB, first saved {ms(first)} after start, "
                     f"claim probe {ms(claim)}" + bench.accounting(done, fin))
        data[label] = {"queued": queued, "completed": done, "wall_s": res.wall_s,
                       "rate": done / res.wall_s, "maxrss_mib": res.maxrss_mib, "cpu_s": res.cpu_s,
                       "first_call_after_start_s": first, "claim_probe_s": claim, "finished": fin}
    rss_ok = max(small.maxrss_mib, big.maxrss_mib) <= W4_MAX_RSS_MIB
    claim_ok = (small_claim is not None and big_claim is not None
                and big_claim <= max(2 * small_claim, small_claim + 0.05))
    bench.add(Row("4", backend, "; ".join(parts), target, rss_ok and claim_ok, data))


def probe_claim(url: str, n: int = 1000, repeats: int = 3) -> float | None:
    """Median time of one claim of ``n`` items, rolled back: the queue is left as it was.

    Uses etl's own engine settings and ``store.claim``; returns None if that API
    has changed (the benchmark must not break when the lead reworks the store).
    """
    try:
        from etl import db, store
        from etl.clock import utcnow

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
