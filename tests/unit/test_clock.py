"""The clock seam (etl/clock.py) and its controllable double (etl/testing/clock.py)."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta

import pytest

from etl import clock
from etl.clock import SYSTEM, Clock, SystemClock
from etl.testing.clock import FakeClock


def test_utcnow_is_naive_utc_from_the_system_clock():
    before = datetime.now(UTC).replace(tzinfo=None)
    now = clock.utcnow()
    after = datetime.now(UTC).replace(tzinfo=None)
    assert now.tzinfo is None
    assert before <= now <= after


def test_system_clock_is_the_default_and_satisfies_the_protocol():
    assert isinstance(SYSTEM, SystemClock)
    seam: Clock = SYSTEM
    first = seam.monotonic()
    seam.sleep(0)  # no wait for zero or negative seconds
    seam.sleep(-1)
    assert seam.monotonic() >= first


def test_fake_clock_moves_only_when_told():
    fake = FakeClock(datetime(2026, 3, 1, 12, 0))
    assert (fake.utcnow(), fake.monotonic()) == (datetime(2026, 3, 1, 12, 0), 0.0)
    assert (fake.utcnow(), fake.monotonic()) == (datetime(2026, 3, 1, 12, 0), 0.0)
    fake.advance(90)
    assert fake.utcnow() == datetime(2026, 3, 1, 12, 1, 30)
    assert fake.monotonic() == 90.0
    assert fake.sleeps == []


def test_fake_clock_sleep_advances_and_records_each_wait():
    fake = FakeClock()
    start = fake.utcnow()
    fake.sleep(2.5)
    fake.sleep(0)
    fake.sleep(-3)  # a negative wait is recorded but does not move time back
    assert fake.sleeps == [2.5, 0, -3]
    assert fake.monotonic() == 2.5
    assert fake.utcnow() - start == timedelta(seconds=2.5)


def test_fake_clock_refuses_aware_times_and_going_back():
    with pytest.raises(ValueError, match="naive UTC"):
        FakeClock(datetime(2026, 1, 1, tzinfo=UTC))
    with pytest.raises(ValueError, match="does not go back"):
        FakeClock().advance(-1)


def test_fake_clock_is_safe_between_threads():
    fake = FakeClock()

    def sleeper() -> None:
        for _ in range(1000):
            fake.sleep(0.001)

    threads = [threading.Thread(target=sleeper) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(fake.sleeps) == 4000
    assert fake.monotonic() == pytest.approx(4.0)


def test_code_given_the_fake_clock_waits_no_wall_time():
    """What the seam is for: a caller that backs off waits on the clock it was given."""

    def wait_for(ready: list[bool], clk: Clock, step: float = 5.0, limit: float = 60.0) -> float:
        started = clk.monotonic()
        while not ready and clk.monotonic() - started < limit:
            clk.sleep(step)
        return clk.monotonic() - started

    fake = FakeClock()
    real_before = SYSTEM.monotonic()
    assert wait_for([], fake) == 60.0
    assert fake.sleeps == [5.0] * 12
    assert SYSTEM.monotonic() - real_before < 5.0  # a minute of fake waiting, no minute of real time


def test_the_clock_fixture_is_a_fresh_fake_clock(clock: FakeClock):
    assert (clock.monotonic(), clock.sleeps) == (0.0, [])
    clock.sleep(1.5)
    assert clock.monotonic() == 1.5
