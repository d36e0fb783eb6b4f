"""The rate budget on real databases: runs paced as asked (measured at the fake API),
and the database-backed budget shared between budgets of one key."""

from __future__ import annotations

import hashlib
import time
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from etl import Etl, store
from etl.budget import DatabaseBudget, budget_for
from etl.config import Settings
from etl.ratelimit import DEFAULT_PAUSE, LocalBudget, NotSent, block_size
from etl.sync import RunStats
from etl.testing import FakeOpenPhone
from etl.testing.clock import FakeClock


class Arrivals(httpx.BaseTransport):
    """The fake API's transport, noting when each request arrived at it."""

    def __init__(self, fake: FakeOpenPhone) -> None:
        self.inner = fake.transport()
        self.times: list[float] = []

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        self.times.append(time.monotonic())
        return self.inner.handle_request(request)


def enqueue(engine: Engine, n: int) -> list[str]:
    ids = [f"ACrate{i:04d}" for i in range(n)]
    with engine.begin() as conn:
        store.enqueue_ids(conn, ids)
    return ids


def sync(engine: Engine, settings: Settings, transport: httpx.BaseTransport, **options: Any) -> RunStats:
    return Etl(settings, engine=engine).sync(**options, transport=transport)


def measured_rate(times: list[float]) -> float:
    return (len(times) - 1) / (times[-1] - times[0])


def test_default_rate_is_paced_at_the_api(engine, fake, settings):
    enqueue(engine, 21)  # no call rows yet: each id costs its call and its summary, on one budget
    arrivals = Arrivals(fake)
    stats = sync(engine, settings.replace(rate=10.0, concurrency=8), arrivals)
    assert (stats.completed, stats.exit_code, len(arrivals.times)) == (21, 0, 42)
    assert 9.0 <= measured_rate(arrivals.times) <= 10.2


def test_slow_rate_takes_the_time_it_should(engine, fake, settings):
    enqueue(engine, 3)  # each id: its call, then its summary
    arrivals = Arrivals(fake)
    started = time.monotonic()
    stats = sync(engine, settings.replace(rate=0.5), arrivals)
    assert (stats.completed, len(arrivals.times)) == (3, 6)
    span = arrivals.times[-1] - arrivals.times[0]
    assert 9.8 <= span <= 10.8  # five gaps of 2 s
    assert time.monotonic() - started >= 9.8


def test_the_shared_budget_row_names_the_key_by_its_hash_only(engine, settings):
    budget = budget_for(settings.replace(rate=5.0), engine)
    assert isinstance(budget, DatabaseBudget)
    budget.acquire()
    budget.close()
    with engine.connect() as conn:
        rows = [dict(r._mapping) for r in conn.execute(sa.text("SELECT * FROM rate_budgets"))]
    assert [r["key_hash"] for r in rows] == [hashlib.sha256(settings.api_key.encode()).hexdigest()]
    assert settings.api_key not in repr(rows)
    assert isinstance(budget_for(settings.replace(rate=0.0), engine), LocalBudget)


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
