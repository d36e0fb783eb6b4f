"""The rate budget's arithmetic and pacing (etl/ratelimit.py), time driven by a fake clock."""

from __future__ import annotations

import itertools
import threading

import pytest

from etl.ratelimit import (
    DEFAULT_PAUSE,
    MIN_FACTOR,
    BudgetState,
    LocalBudget,
    NotSent,
    penalized,
    rate_problem,
    reserve,
)
from etl.testing.clock import FakeClock


def send_times(budget: LocalBudget, clock: FakeClock, n: int) -> list[float]:
    times = []
    for _ in range(n):
        budget.acquire()
        times.append(clock.time())
    return times


@pytest.mark.parametrize("rate", [0.1, 0.5, 1.0, 3.0, 10.0, 37.5, 100.0, 1000.0])
def test_every_rate_is_paced_as_asked(rate):
    clock = FakeClock()
    budget = LocalBudget(rate, clock)
    times = send_times(budget, clock, 50)
    gaps = [b - a for a, b in itertools.pairwise(times)]
    # Wall-clock epoch seconds as floats resolve about 0.2 us (errors add up over 49 waits): 10 us is exact enough.
    assert min(gaps) == pytest.approx(1 / rate, abs=1e-5)
    assert max(gaps) == pytest.approx(1 / rate, abs=1e-5)
    assert times[-1] - times[0] == pytest.approx(49 / rate, abs=1e-5)


def test_the_first_request_goes_at_once_and_an_idle_budget_does_not_burst():
    clock = FakeClock()
    budget = LocalBudget(2.0, clock)
    start = clock.time()
    budget.acquire()
    assert clock.time() == start
    clock.advance(60)  # idle for a minute: no saved-up burst afterwards
    times = send_times(budget, clock, 3)
    assert [t - times[0] for t in times] == pytest.approx([0.0, 0.5, 1.0])


def test_a_429_pauses_for_retry_after_then_slows_down_and_recovers():
    clock = FakeClock()
    budget = LocalBudget(10.0, clock)
    budget.acquire()
    budget.penalize(3.0)
    before = clock.time()
    budget.acquire()
    assert clock.time() - before == pytest.approx(3.0)
    times = send_times(budget, clock, 2)
    assert times[1] - times[0] == pytest.approx(1 / (10 * 0.7), rel=0.05)
    clock.advance(60)  # long after: back to the full rate
    times = send_times(budget, clock, 3)
    assert times[2] - times[1] == pytest.approx(0.1)


def test_a_burst_of_429s_during_one_pause_slows_once():
    state = penalized(BudgetState(), 100.0, None)
    assert (state.paused_until, state.slowdown) == (100.0 + DEFAULT_PAUSE, pytest.approx(0.7))
    again = penalized(state, 100.5, 2.0)
    assert (again.paused_until, again.slowdown) == (102.5, pytest.approx(0.7))


def test_the_slow_down_has_a_floor_that_still_throttles():
    state = BudgetState()
    now = 0.0
    for _ in range(100):  # a hundred 429s, each after the previous pause
        now = state.paused_until + 0.001
        state = penalized(state, now, 0.001)
    assert state.slowdown == pytest.approx(MIN_FACTOR)
    _, slots = reserve(state, now, 3, 0.5)  # 0.5/s at the floor: one request every 20 s
    assert slots[1] - slots[0] == pytest.approx(1 / (0.5 * MIN_FACTOR), rel=0.01)


def test_no_slot_within_max_wait_raises_not_sent_and_keeps_the_slot():
    clock = FakeClock()
    budget = LocalBudget(1.0, clock)
    budget.acquire()
    with pytest.raises(NotSent):
        budget.acquire(max_wait=0.5)
    assert clock.sleeps == []  # gave up without waiting
    start = clock.time()
    budget.acquire(max_wait=1.0)  # the slot it did not use is still there
    assert clock.time() == pytest.approx(start + 1.0)


def test_stop_and_close_refuse_slots():
    clock = FakeClock()
    budget = LocalBudget(1.0, clock)
    stop = threading.Event()
    stop.set()
    with pytest.raises(NotSent):
        budget.acquire(stop=stop)
    budget.close()
    with pytest.raises(NotSent):
        budget.acquire()


def test_unthrottled_only_honours_429_pauses():
    clock = FakeClock()
    budget = LocalBudget(0, clock)
    send_times(budget, clock, 100)
    assert clock.sleeps == []
    budget.penalize(2.0)
    before = clock.time()
    budget.acquire()
    assert clock.time() - before == pytest.approx(2.0)


@pytest.mark.parametrize(("rate", "problem"), [
    (0.0, None), (0.1, None), (10.0, None), (1000.0, None),
    (-1.0, "must be 0 (unthrottled) or between 0.1 and 1000 requests per second, got -1"),
    (0.05, "must be 0 (unthrottled) or between 0.1 and 1000 requests per second, got 0.05"),
    (5000.0, "must be 0 (unthrottled) or between 0.1 and 1000 requests per second, got 5000"),
    (float("nan"), "must be a number, got nan"),
    (float("inf"), "must be a number, got inf"),
])
def test_rate_problem(rate, problem):
    assert rate_problem(rate) == problem
    if problem:
        with pytest.raises(ValueError, match="rate must"):
            LocalBudget(rate, FakeClock())
