"""Workload 7: workload 2 with this engine and a previous one (``--old-etl PATH``: the ``etl``
executable of any other checkout), alternating previous, new, previous, new in one
invocation: best of two each, summaries/s and CPU per summary."""

from __future__ import annotations

import harness
from harness import Bench, Row, Simulator


def run(bench: Bench, backend: str, old_etl: str) -> None:
    """Workload 7: workload 2 (unthrottled) with this engine and the previous one, back to back."""
    target = "new engine: throughput and CPU/summary no worse than the previous one (same run)"
    figures: dict[str, tuple[float, float]] = {}
    new_etl = harness.ETL
    for label, exe in (("previous", old_etl), ("new", new_etl), ("previous again", old_etl), ("new again", new_etl)):
        with harness.measuring(exe):  # every step, migration and enqueue included, by that etl
            n = bench.sizes.w2_ids
            url, _ = bench.fresh_db(backend, n, seed=2, with_calls=True)
            with Simulator(bench.workdir, rate=0, burst=10, latency_ms=0, name=f"sim-w7-{backend}") as sim:
                res = bench.etl(url, ["sync", "--rate", "0"], base_url=sim.url)
            done = bench.queue_counts(url).get("done", 0)  # by the same etl: its schema
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
                  f"best of 2 each: new {new_rate:.0f}/s, {new_cpu:.3f} ms CPU/summary; previous ({old_etl}) "
                  f"{old_rate:.0f}/s, {old_cpu:.3f} ms CPU/summary",
                  target, new_rate >= 0.95 * old_rate and new_cpu <= 1.05 * old_cpu,
                  {"new": new, "previous": old}))
