"""Several `etl sync` processes on one key share one budget (issue 9's "done means").

Real subprocesses against the fake API served over real HTTP with OpenPhone's
limit (a token bucket of 10 requests/s, burst 10).  Request rates are measured
at the fake API by sampling its request counters, not inside the job.  These
wait on the real clock on purpose (marked ``realtime``); the budget's arithmetic
between processes, a crashed process's share included, is tested on a FakeClock
in tests/integration/test_rate_budget.py.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from etl import store
from etl.testing import FakeOpenPhone, serve

KEY = "shared-budget-key-0123"
ETL = Path(sys.executable).with_name("etl")


class Sampler:
    """Samples the fake's counters every 50 ms: (time, total requests, 429s)."""

    def __init__(self, fake: FakeOpenPhone) -> None:
        self.fake = fake
        self.samples: list[tuple[float, int, int]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(0.05):
            stats = self.fake.stats()
            outcomes = stats["outcomes"]
            assert isinstance(outcomes, dict)
            self.samples.append((time.monotonic(), int(stats["total_requests"]), int(outcomes.get("429", 0))))

    def __enter__(self) -> Sampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def rate_between(self, start: float, end: float) -> float:
        inside = [s for s in self.samples if start <= s[0] <= end]
        (t0, n0, _), (t1, n1, _) = inside[0], inside[-1]
        return (n1 - n0) / (t1 - t0)

    def count_between(self, start: float, end: float) -> int:
        inside = [s for s in self.samples if start <= s[0] <= end]
        return inside[-1][1] - inside[0][1]

    def busy_window(self) -> tuple[float, float]:
        """From the first request to the last."""
        total = self.samples[-1][1]
        first = next(t for t, n, _ in self.samples if n > 0)
        last = next(t for t, n, _ in self.samples if n >= total)
        return first, last


@contextmanager
def processes(n: int, db_url: str, base_url: str, tmp_path: Path,
              *args: str) -> Iterator[list[subprocess.Popen[bytes]]]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ETL_", "OPENPHONE_"))}
    env.update(ETL_DATABASE_URL=db_url, OPENPHONE_API_KEY=KEY, OPENPHONE_BASE_URL=base_url,
               ETL_LOG_FORMAT="json")
    procs = []
    for i in range(n):
        with (tmp_path / f"etl{i}.log").open("wb") as log:
            procs.append(subprocess.Popen([str(ETL), "sync", *args], env=env, stdout=log, stderr=log))
    try:
        yield procs
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()


def enqueue(engine: Engine, n: int) -> None:
    with engine.begin() as conn:
        store.enqueue_ids(conn, [f"ACshare{i:05d}" for i in range(n)])


def done_count(engine: Engine) -> int:
    with engine.connect() as conn:
        return int(conn.execute(sa.text("SELECT COUNT(*) FROM summary_queue WHERE state = 'done'")).scalar_one())


@pytest.mark.realtime
@pytest.mark.parametrize("n", [4])
def test_processes_on_one_key_share_its_budget(engine, db_url, tmp_path, n):
    enqueue(engine, 75)  # no call rows: each id costs its call and its summary, 150 requests
    fake = FakeOpenPhone(api_key=KEY, rate=10.0, burst=10)
    with serve(fake) as url, Sampler(fake) as sampler, processes(n, db_url, url, tmp_path) as procs:
        codes = [p.wait(timeout=120) for p in procs]
    assert codes == [0] * n, [(tmp_path / f"etl{i}.log").read_text()[-2000:] for i in range(n)]
    assert done_count(engine) == 75
    stats = fake.stats()
    outcomes = stats["outcomes"]
    assert isinstance(outcomes, dict)
    total, refused = int(stats["total_requests"]), int(outcomes.get("429", 0))
    assert refused <= 0.01 * total, (refused, total)
    assert total - refused == 150
    first, last = sampler.busy_window()
    # One budget, not four: 150 requests at 10/s (a burst of 10 aside) take at least 14 s, whatever the
    # load.  How close to the full 10/s the processes get is bench/run.py's workload 6, not a bound
    # here (8.8/s once with CI's six workers beside them on 2 loaded cores).
    assert last - first >= (150 - 10) / 10, (150, last - first)


@pytest.mark.realtime
def test_a_429_seen_by_one_process_pauses_all(engine, db_url, tmp_path):
    enqueue(engine, 400)  # each process claims at most 100 at a time: both have work
    with engine.begin() as conn:  # oldest due first: in the first claim, whatever order the database keeps
        conn.execute(sa.text("UPDATE summary_queue SET next_attempt_at = :t WHERE call_id = 'ACshare00030'"),
                     {"t": "2000-01-01 00:00:00"})
    fake = FakeOpenPhone(api_key=KEY, rate=10.0, burst=10)
    fake.set_response("ACshare00030", 429, {"message": "slow down"}, {"Retry-After": "3"})
    refused = threading.Event()
    with serve(fake) as url, Sampler(fake) as sampler, processes(2, db_url, url, tmp_path) as procs:
        deadline = time.monotonic() + 60
        while not refused.is_set() and time.monotonic() < deadline:
            outcomes = fake.stats()["outcomes"]
            assert isinstance(outcomes, dict)
            if outcomes.get("429", 0):
                refused.set()
            time.sleep(0.01)
        first_429 = time.monotonic()
        time.sleep(4.5)
        for proc in procs:
            proc.send_signal(signal.SIGTERM)
        for proc in procs:
            proc.wait(timeout=60)
    assert refused.is_set(), "the 429 id was never fetched"
    with engine.connect() as conn:
        claimed = conn.execute(sa.text("SELECT claimed FROM sync_runs ORDER BY id")).scalars().all()
    assert len(claimed) == 2 and min(claimed) > 0, claimed  # both processes were sending
    # Both hold back for the Retry-After: in 2.5 s at most the few slots each
    # had reserved ahead go out (without a shared budget: ~25 requests).
    sent = sampler.count_between(first_429 + 0.3, first_429 + 2.8)
    assert sent <= 6, sent
    assert sampler.count_between(first_429 + 3.2, first_429 + 4.4) >= 5  # and then go on
