"""Benchmark of `etl discover` (issue 10, part 8), in the style of bench/run.py.

Workloads (each on the selected databases, real `etl` processes):

* D1 — requests spent per discovered call: `etl discover --since … --rate 10`
  over a workspace of 2 lines x 50 one-to-one conversations x 8 calls plus one
  conversation with 400 calls (1,200 calls, 1,000 completed); requests are
  counted at the fake API.  Then a re-run with nothing new: what an idle
  discovery costs.
* D2 — summaries landed with their calls per second at a 10 req/s budget:
  D1's discovery, then `etl sync --rate 10` against the simulator limited to
  10 req/s (burst 10); landed = rows of ``call_summary_overview`` with call
  context, per second of discover + sync wall time.

Until the simulator serves the workspace endpoints (the `sim` helper's work),
the workspace is the discovery tests' fake (``tests/integration/calls_fake.py``)
served over real HTTP from this process, without a rate limit of its own (the
client throttles itself to --rate).  After integration, the sync engine also
fetches ``GET /v1/calls/{id}`` for ids without a call row; discovered ids have
one, so D2's figure is then unchanged for them.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE), str(HERE.parent)]

from run import (  # noqa: E402  (bench/run.py, a script next to this one)
    API_KEY,
    DEFAULT_SERVERS,
    Databases,
    Row,
    Simulator,
    Spawner,
    log_event,
    print_table,
    read_json_lines,
    run_etl,
)

from tests.integration.calls_fake import FakeWorkspace, make_call, serve  # noqa: E402

BASE = datetime(2026, 11, 20, 9, 0, tzinfo=UTC)


def workspace(lines: int = 2, conversations: int = 50, calls: int = 8, big: int = 400) -> FakeWorkspace:
    ws = FakeWorkspace(API_KEY)
    for ln in range(lines):
        line = f"PNbench{ln}"
        ws.add_line(line, f"+1555000{ln:04d}")
        for c in range(conversations):
            who = f"+1555{ln:02d}{c:05d}"
            ws.add_conversation(f"CN{ln}x{c}", line, [who], BASE + timedelta(minutes=c))
            for k in range(calls):
                status = "completed" if k % 8 < 6 or k == 7 else "missed"
                ws.add_call(make_call(f"AC{ln}x{c}x{k}", line, who, BASE + timedelta(minutes=c, seconds=k),
                                      status=status))
    ws.add_conversation("CNbig", "PNbench0", ["+15559999999"], BASE)
    for k in range(big):
        ws.add_call(make_call(f"ACbig{k}", "PNbench0", "+15559999999", BASE + timedelta(seconds=k)))
    return ws


def count(url: str, sql: str) -> int:
    import sqlalchemy as sa

    engine = sa.create_engine(url)
    try:
        with engine.connect() as conn:
            return int(conn.execute(sa.text(sql)).scalar_one())
    finally:
        engine.dispose()


def bench(backend: str, dbs: Databases, workdir: Path, timeout: float) -> list[Row]:
    url = dbs.create(backend)
    env = {"ETL_DATABASE_URL": url, "OPENPHONE_API_KEY": API_KEY, "PATH": "/usr/bin:/bin"}
    run_etl(["db", "upgrade"], env, workdir, f"{backend}-upgrade", timeout)
    ws = workspace()
    calls = len(ws.calls)
    completed = sum(1 for c in ws.calls.values() if c["status"] == "completed")
    rows: list[Row] = []
    with serve(ws) as ws_url:
        env_ws = dict(env, OPENPHONE_BASE_URL=ws_url)
        first = run_etl(["discover", "--since", "2026-11-01", "--rate", "10", "--log-format", "json"],
                        env_ws, workdir, f"{backend}-discover", timeout)
        requests_first = sum(ws.requests.values())
        done = log_event(read_json_lines(Path(first.log_path)), "discovery finished") or {}
        again = run_etl(["discover", "--rate", "10", "--log-format", "json"], env_ws, workdir,
                        f"{backend}-discover-again", timeout)
        requests_again = sum(ws.requests.values()) - requests_first
    seen = int(done.get("calls_seen", 0))
    per_call = requests_first / seen if seen else float("nan")
    rows.append(Row(
        "D1 discover 1,200 calls", backend,
        f"{requests_first} requests for {seen}/{calls} calls = {per_call:.3f}/call; {first.wall_s:.1f} s at 10 req/s "
        f"({seen / first.wall_s:.0f} calls/s); idle re-run {requests_again} requests in {again.wall_s:.1f} s",
        "every call found", first.rc == 0 and again.rc == 0 and seen == calls,
        {"requests": requests_first, "calls": seen, "wall_s": first.wall_s, "idle_requests": requests_again},
    ))
    with Simulator(workdir, rate=10, burst=10, latency_ms=0, name=f"{backend}-sim") as sim:
        env_sim = dict(env, OPENPHONE_BASE_URL=sim.url)
        sync = run_etl(["sync", "--rate", "10", "--log-format", "json"], env_sim, workdir, f"{backend}-sync",
                       timeout)
    landed = count(url, "SELECT COUNT(*) FROM call_summary_overview WHERE call_created_at IS NOT NULL "
                        "AND status = 'completed'")
    wall = first.wall_s + sync.wall_s
    outcomes: dict[str, Any] = sim.stats.get("outcomes", {})
    rows.append(Row(
        "D2 discover + sync at 10 req/s", backend,
        f"{landed}/{completed} summaries with calls in {wall:.1f} s = {landed / wall:.2f}/s "
        f"(discover {first.wall_s:.1f} s + sync {sync.wall_s:.1f} s); 429s: {outcomes.get('429', 0)}",
        ">= 9 /s, all landed", sync.rc == 0 and landed == completed and landed / wall >= 9,
        {"landed": landed, "wall_s": wall, "sync_wall_s": sync.wall_s},
    ))
    return rows


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    p.add_argument("--db", default="sqlite,postgresql,mysql")
    p.add_argument("--timeout", type=float, default=600.0)
    args = p.parse_args(argv)
    rows: list[Row] = []
    with tempfile.TemporaryDirectory(prefix="etl-bench-discover-") as tmp:
        dbs = Databases(Path(tmp), dict(DEFAULT_SERVERS), keep=False)
        try:
            for backend in args.db.split(","):
                started = time.monotonic()
                rows.extend(bench(backend, dbs, Path(tmp), args.timeout))
                print(f"{backend}: {time.monotonic() - started:.0f} s", file=sys.stderr)
        finally:
            dbs.drop_all()
            Spawner.stop()
    print_table(rows)
    return 0


if __name__ == "__main__":
    sys.exit(main())
