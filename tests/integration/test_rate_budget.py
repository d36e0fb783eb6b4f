"""The rate budget on real databases: runs paced as asked (measured at the fake API,
on a FakeClock: exact send times, no waiting), and the database-backed budget
shared between budgets of one key."""

from __future__ import annotations

import hashlib
from itertools import pairwise
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from etl import Etl, store
from etl.budget import DatabaseBudget, budget_for
from etl.clock import SYSTEM
from etl.config import Settings
from etl.ratelimit import DEFAULT_PAUSE, LocalBudget, NotSent, block_size
from etl.sync import RunStats
from etl.testing import FakeOpenPhone
from etl.testing.clock import FakeClock
from tests.support.db import clock_after_enqueue


class Arrivals(httpx.BaseTransport):
    """The fake API's transport, noting when (on ``clock``) each request arrived at it."""

    def __init__(self, fake: FakeOpenPhone, clock: FakeClock) -> None:
        self.inner = fake.transport()
        self.clock = clock
        self.times: list[float] = []

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        self.times.append(self.clock.time())
        return self.inner.handle_request(request)



def enqueue(engine: Engine, n: int) -> list[str]:
    ids = [f"ACrate{i:04d}" for i in range(n)]
    with engine.begin() as conn:
        store.enqueue_ids(conn, ids)
    return ids


def sync(engine: Engine, settings: Settings, arrivals: Arrivals, **options: Any) -> RunStats:
    return Etl(settings, engine=engine, clock=arrivals.clock).sync(**options, transport=arrivals)


def measured_rate(times: list[float]) -> float:
    return (len(times) - 1) / (times[-1] - times[0])


def test_default_rate_is_paced_at_the_api(engine, fake, settings):
    enqueue(engine, 21)  # no call rows yet: each id costs its call and its summary, on one budget
    arrivals = Arrivals(fake, clock_after_enqueue())
    stats = sync(engine, settings.replace(rate=10.0, concurrency=8), arrivals)
    assert (stats.completed, stats.exit_code, len(arrivals.times)) == (21, 0, 42)
    # Eight workers, one budget: no request before its slot, 0.1 s apart ...
    first = arrivals.times[0]
    late = [(n, t - first) for n, t in enumerate(sorted(arrivals.times)) if t - first < n * 0.1 - 1e-6]
    assert late == []
    # ... and the run keeps up with the rate.
    assert 9.0 <= measured_rate(arrivals.times) <= 10.2


def test_slow_rate_takes_the_time_it_should(engine, fake, settings):
    enqueue(engine, 3)  # each id: its call, then its summary
    clock = clock_after_enqueue()
    started = clock.monotonic()
    arrivals = Arrivals(fake, clock)
    # One fetch thread: FakeClock adds every thread's wait to the one clock, so gaps are exact only with one.
    stats = sync(engine, settings.replace(rate=0.5, concurrency=1), arrivals)
    assert (stats.completed, len(arrivals.times)) == (3, 6)
    gaps = [round(b - a, 6) for a, b in pairwise(arrivals.times)]
    assert all(gap >= 2.0 for gap in gaps), gaps  # five gaps of 2 s, none shorter
    assert arrivals.times[-1] - arrivals.times[0] <= 10.8
    assert clock.monotonic() - started >= 10.0


def test_the_shared_budget_row_names_the_key_by_its_hash_only(engine, settings):
    budget = budget_for(settings.replace(rate=5.0), engine, SYSTEM)
    assert isinstance(budget, DatabaseBudget)
    budget.acquire()
    budget.close()
    with engine.connect() as conn:
        rows = [dict(r._mapping) for r in conn.execute(sa.text("SELECT * FROM rate_budgets"))]
    assert [r["key_hash"] for r in rows] == [hashlib.sha256(settings.api_key.encode()).hexdigest()]
    assert settings.api_key not in repr(rows)
    assert isinstance(budget_for(settings.replace(rate=0.0), engine, SYSTEM), LocalBudget)


def test_two_processes_budgets_interleave_without_exceeding_the_rate(engine, settings):
    clock = FakeClock()
    a = DatabaseBudget(engine, settings.api_key or "", 10.0, clock)
    b = DatabaseBudget(engine, settings.api_key or "", 10.0, clock)
    sends = []
    for budget in (a, b) * 20:  # taking turns, as two processes would
        budget.acquire()
        sends.append(clock.time())
    sends.sort()
    # A slot used late may go together with the next one, but no second holds
    # more than the rate plus one block (what a process reserves ahead) ...
    busiest = max(sum(1 for t in sends if start <= t < start + 1.0) for start in sends)
    assert busiest <= 10 + block_size(10.0)
    # ... and together they use the whole budget.
    assert sends[-1] - sends[0] <= 39 * 0.1 + 0.3
    a.close()
    b.close()


def test_a_429_seen_by_one_process_pauses_the_other(engine, settings):
    clock = FakeClock()
    a = DatabaseBudget(engine, settings.api_key or "", 10.0, clock)
    b = DatabaseBudget(engine, settings.api_key or "", 10.0, clock)
    a.acquire()
    b.acquire()
    a.penalize(5.0)
    penalized_at = clock.time()
    with pytest.raises(NotSent):  # a third process, just started, waits too
        DatabaseBudget(engine, settings.api_key or "", 10.0, clock).acquire(max_wait=DEFAULT_PAUSE)
    b.acquire()  # may use at most the slots it had reserved before the 429
    b.acquire()
    b.acquire()
    assert clock.time() >= penalized_at + 5.0
    a.close()
    b.close()


def test_a_crashed_budgets_share_returns_at_once(engine, settings):
    """Two processes take turns; one dies holding its reserved slots: the survivor alone
    spends the whole rate from at most a block later."""
    clock = FakeClock()
    a = DatabaseBudget(engine, settings.api_key or "", 10.0, clock)
    b = DatabaseBudget(engine, settings.api_key or "", 10.0, clock)
    for budget in (a, b) * 10:
        budget.acquire()
    crashed = clock.time()  # `a` never sends again, nor closes (SIGKILL)
    sends = []
    for _ in range(20):
        b.acquire()
        sends.append(clock.time())
    # What `a` had reserved ahead is lost (one block); nothing more.
    assert sends[0] - crashed <= block_size(10.0) * 0.1 + 1e-6
    gaps = [round(y - x, 6) for x, y in pairwise(sends)]
    assert gaps == [0.1] * 19
    b.close()

