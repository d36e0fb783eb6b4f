"""Benchmark: the two API surfaces, v1 and the dated 2026-03-30, on `etl discover` + `etl sync`.

One command, one printed table::

    .venv/bin/python bench/surfaces.py                # ~3 minutes on SQLite
    .venv/bin/python bench/surfaces.py --quick        # 2,000 calls, ~1 minute

For each surface the same seeded workspace of ``--calls`` calls (4 lines x
50 one-to-one conversations; about 5 in 6 calls completed, the rest missed or
not answered; the newest 0.1 % of completed summaries still in progress when
listed, completed when asked again) is served by the simulator
(``etl.testing.serve``, real HTTP, in this process) and the real `etl`
processes run against it on a fresh SQLite database (``--database-url`` for
another, emptied first by the caller):

* **requests**: ``etl discover --since … --rate 0`` then ``etl sync --rate 0``
  on the whole workspace; requests counted at the simulator, summaries landed
  counted in ``call_summaries``: requests per landed summary, exactly;
* **at 10 req/s**: the same at the default budget (``--rate 10``) against a
  simulator limited to 10 requests/s (burst 10), timed from the start of
  discover to the end of sync: summaries per second.  A v1 run over the whole
  workspace would take a request per summary (about 14 minutes for 10,000
  calls), so v1 is timed on ``--v1-timed-calls`` calls (default 1,000) and the
  table says so; its requests-per-summary figure comes from the full run.

It reports; it asserts nothing.
"""

from __future__ import annotations

import argparse
import datetime as dt
import math
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import sqlalchemy as sa

from etl.testing import ApiClock, FakeOpenPhone, serve

ETL = Path(sys.executable).with_name("etl")
KEY = "bench-key-0123456789"
NOW = dt.datetime(2026, 12, 1, 12, 0, tzinfo=dt.UTC)
SINCE = "2026-11-01"


def workspace(calls: int, *, rate: float) -> FakeOpenPhone:
    fake = FakeOpenPhone(api_key=KEY, clock=ApiClock(NOW), default_status=None, rate=rate, burst=10, seed=17)
    lines, per_line = 4, 50
    fake.workspace.generate(phone_numbers=lines, conversations=per_line, calls=max(1, calls // (lines * per_line)),
                            days=21)
    completed = sorted((c for c in fake.workspace.calls.values() if c.status == "completed"),
                       key=lambda c: c.created_at)
    for call in completed[-max(1, len(completed) // 1000):]:
        fake.pending_summaries[call.id] = 0  # the newest: in progress when listed, completed when asked
    return fake


@dataclass
class Result:
    surface: str
    calls: int
    rate: float
    requests: int
    landed: int
    seconds: float
    http_429: int

    @property
    def per_summary(self) -> float:
        return self.requests / self.landed if self.landed else math.inf

    @property
    def per_second(self) -> float:
        return self.landed / self.seconds if self.seconds else 0.0


def run(surface: str, calls: int, rate: float, database_url: str | None, workdir: Path) -> Result:
    fake = workspace(calls, rate=rate)
    url = database_url or f"sqlite:///{workdir / f'{surface}-{calls}-{rate:g}.db'}"
    env = {**os.environ, "ETL_DATABASE_URL": url, "OPENPHONE_API_KEY": KEY, "OPENPHONE_API_VERSION": surface,
           "ETL_LOG_FORMAT": "json"}
    subprocess.run([str(ETL), "db", "upgrade"], env=env, check=True, capture_output=True)
    with serve(fake) as base:
        env["OPENPHONE_BASE_URL"] = base
        started = time.monotonic()
        for args in (["discover", "--since", SINCE], ["sync"]):
            done = subprocess.run([str(ETL), *args, "--rate", f"{rate:g}"], env=env, capture_output=True, text=True,
                                  check=False)
            if done.returncode != 0:
                raise SystemExit(f"etl {' '.join(args)} exited {done.returncode}:\n{done.stderr[-2000:]}")
        seconds = time.monotonic() - started
    engine = sa.create_engine(url)
    with engine.connect() as conn:
        landed = int(conn.execute(sa.text("SELECT COUNT(*) FROM call_summaries WHERE status = 'completed'"))
                     .scalar_one())
    engine.dispose()
    return Result(surface, len(fake.workspace.calls), rate, fake.total_requests, landed, seconds,
                  sum(fake.endpoint_429.values()))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", type=int, default=10_000, help="workspace size (default 10,000)")
    parser.add_argument("--v1-timed-calls", type=int, default=1_000,
                        help="workspace size of v1's 10 req/s run (its time grows with a request per summary)")
    parser.add_argument("--quick", action="store_true", help="2,000 calls, v1 timed on 500")
    parser.add_argument("--database-url", default=None, help="an empty database to use instead of SQLite files")
    args = parser.parse_args()
    if args.quick:
        args.calls, args.v1_timed_calls = 2_000, 500
    results: list[tuple[str, Result, Result]] = []
    with tempfile.TemporaryDirectory(prefix="etl-bench-surfaces-") as tmp:
        workdir = Path(tmp)
        for surface, timed_calls in (("2026-03-30", args.calls), ("v1", args.v1_timed_calls)):
            counted = run(surface, args.calls, 0.0, args.database_url, workdir)
            timed = run(surface, timed_calls, 10.0, args.database_url, workdir)
            results.append((surface, counted, timed))
    print(f"discover + sync, {args.calls:,}-call workspace (simulator, SQLite unless --database-url)\n")
    head = (f"{'surface':<11} {'calls':>7} {'requests':>9} {'landed':>7} {'req/summary':>12} {'summaries/req':>14}"
            f" | {'timed on':>8} {'seconds @10/s':>14} {'summaries/s':>12} {'429s':>5}")
    print(head)
    print("-" * len(head))
    for surface, counted, timed in results:
        extrapolated = "" if timed.calls == counted.calls else " (smaller workspace)"
        print(f"{surface:<11} {counted.calls:>7,} {counted.requests:>9,} {counted.landed:>7,} "
              f"{counted.per_summary:>12.3f} {1 / counted.per_summary:>14.1f} | {timed.calls:>8,} "
              f"{timed.seconds:>14.1f} {timed.per_second:>12.1f} {timed.http_429:>5}{extrapolated}")
    v1 = next(r for s, r, _ in results if s == "v1")
    v1_timed = next(t for s, _, t in results if s == "v1")
    print(f"\nv1 over the whole {v1.calls:,}-call workspace at 10 req/s, extrapolated from its request count: "
          f"{v1.requests / 10:.0f} s ({v1.landed / (v1.requests / 10):.1f} summaries/s; the timed "
          f"{v1_timed.calls:,}-call run measured {v1_timed.per_second:.1f}).")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
