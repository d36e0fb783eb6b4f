"""Sync engine paths that only trouble reaches: a second Ctrl-C, a lost lease,
one entry the database rejects, a deadlock.  Real databases, the fake API
through an httpx transport, the real engine (etl.sync.Syncer)."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from etl import store
from etl.clock import SYSTEM
from etl.sync import RunOptions, StopReason, Syncer
from etl.testing import FakeOpenPhone


def enqueue(engine: Engine, ids: list[str]) -> None:
    with engine.begin() as conn:
        store.enqueue_ids(conn, ids)


def queue(engine: Engine) -> dict[str, dict[str, Any]]:
    with engine.connect() as conn:
        rows = conn.execute(sa.text("SELECT * FROM summary_queue"))
        return {r.call_id: dict(r._mapping) for r in rows}


def summaries(engine: Engine) -> set[str]:
    with engine.connect() as conn:
        return set(conn.execute(sa.text("SELECT call_id FROM call_summaries")).scalars())


class Hook(httpx.BaseTransport):
    """The fake API, with ``before(call_id)`` run as each request arrives."""

    def __init__(self, fake: FakeOpenPhone, before: Callable[[str], None]) -> None:
        self.inner = fake.transport()
        self.before = before

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        self.before(request.url.path.rsplit("/", 1)[-1])
        return self.inner.handle_request(request)


def test_second_interrupt_abandons_in_flight_requests(engine, fake, settings):
    ids = [f"ACabandon{i}" for i in range(12)]
    enqueue(engine, ids)
    release = threading.Event()
    arrived = threading.Semaphore(0)

    def hang(_call_id: str) -> None:
        arrived.release()
        release.wait(60)  # a request that would take a minute

    syncer = Syncer(engine, settings.replace(concurrency=4), transport=Hook(fake, hang), clock=SYSTEM)
    result: list[Any] = []
    runner = threading.Thread(target=lambda: result.append(syncer.run(RunOptions())))
    runner.start()
    try:
        for _ in range(4):
            assert arrived.acquire(timeout=10)
        syncer.request_stop(StopReason.SIGNAL, "interrupted by SIGINT")
        time.sleep(0.3)
        assert runner.is_alive()  # the first interrupt waits for in-flight requests
        started = time.monotonic()
        syncer.abort()
        runner.join(10)
        assert not runner.is_alive() and time.monotonic() - started < 5
    finally:
        release.set()
    stats = result[0]
    assert (stats.exit_code, stats.stop_reason, stats.completed, stats.released) == (
        1, "interrupted by SIGINT", 0, 12)
    rows = queue(engine)
    assert {(r["state"], r["attempts"], r["lease_owner"]) for r in rows.values()} == {("pending", 0, None)}
    assert summaries(engine) == set()


def test_a_lost_lease_discards_the_result(engine, fake, settings):
    enqueue(engine, ["ACkeep1", "ACstolen"])

    def steal(call_id: str) -> None:
        if call_id == "ACstolen":  # its lease expired and another run claimed it meanwhile
            with engine.begin() as conn:
                conn.execute(sa.text("UPDATE summary_queue SET lease_owner = 'other-run' "
                                     "WHERE call_id = 'ACstolen'"))

    stats = Syncer(engine, settings, transport=Hook(fake, steal), clock=SYSTEM).run(RunOptions())
    assert (stats.completed, stats.lost_leases, stats.exit_code) == (1, 1, 0)
    rows = queue(engine)
    assert (rows["ACkeep1"]["state"], rows["ACstolen"]["state"], rows["ACstolen"]["lease_owner"]) == (
        "done", "pending", "other-run")
    assert summaries(engine) == {"ACkeep1"}


@contextmanager
def trigger(engine: Engine, sql: dict[str, list[str]], drop: dict[str, list[str]]) -> Iterator[None]:
    dialect = engine.dialect.name
    with engine.begin() as conn:
        for statement in sql[dialect]:
            conn.exec_driver_sql(statement)
    try:
        yield
    finally:
        with engine.begin() as conn:
            for statement in drop[dialect]:
                conn.exec_driver_sql(statement)


REJECT = {
    "sqlite": ["CREATE TRIGGER t_reject BEFORE INSERT ON call_summaries WHEN NEW.call_id = 'ACbad' "
               "BEGIN SELECT RAISE(ABORT, 'rejected by test'); END"],
    "postgresql": ["CREATE FUNCTION f_reject() RETURNS trigger AS $$ BEGIN "
                   "IF NEW.call_id = 'ACbad' THEN RAISE EXCEPTION 'rejected by test'; END IF; "
                   "RETURN NEW; END $$ LANGUAGE plpgsql",
                   "CREATE TRIGGER t_reject BEFORE INSERT ON call_summaries "
                   "FOR EACH ROW EXECUTE FUNCTION f_reject()"],
    "mysql": ["CREATE TRIGGER t_reject BEFORE INSERT ON call_summaries FOR EACH ROW BEGIN "
              "IF NEW.call_id = 'ACbad' THEN SIGNAL SQLSTATE '45000' SET MESSAGE_TEXT = 'rejected by test'; "
              "END IF; END"],
}
DROP_REJECT = {
    "sqlite": ["DROP TRIGGER IF EXISTS t_reject"],
    "postgresql": ["DROP TRIGGER IF EXISTS t_reject ON call_summaries", "DROP FUNCTION IF EXISTS f_reject()"],
    "mysql": ["DROP TRIGGER IF EXISTS t_reject"],
}


def test_one_entry_the_database_rejects_is_isolated_from_its_batch(engine, fake, settings):
    good = [f"ACgood{i:02d}" for i in range(20)]
    enqueue(engine, [*good, "ACbad"])
    with trigger(engine, REJECT, DROP_REJECT):
        stats = Syncer(engine, settings.replace(concurrency=2), transport=fake.transport(),
                       clock=SYSTEM).run(RunOptions())
    assert (stats.completed, stats.errors, stats.exit_code) == (20, 1, 1)
    rows = queue(engine)
    assert {i for i, r in rows.items() if r["state"] == "done"} == set(good)
    assert rows["ACbad"]["state"] in ("pending", "error")
    assert "database rejected this summary" in rows["ACbad"]["last_error"]
    assert "rejected by test" in rows["ACbad"]["last_error"]
    assert summaries(engine) == set(good)


DEADLOCK_ONCE = {
    # A sequence is not rolled back with the transaction: the first insert fails
    # with the server's deadlock code, the retry of the same transaction passes.
    "postgresql": ["CREATE SEQUENCE s_deadlock",
                   "CREATE FUNCTION f_deadlock() RETURNS trigger AS $$ BEGIN "
                   "IF nextval('s_deadlock') = 1 THEN "
                   "RAISE EXCEPTION 'deadlock detected (test)' USING ERRCODE = '40P01'; END IF; "
                   "RETURN NEW; END $$ LANGUAGE plpgsql",
                   "CREATE TRIGGER t_deadlock BEFORE INSERT ON call_summaries "
                   "FOR EACH ROW EXECUTE FUNCTION f_deadlock()"],
    "mysql": ["CREATE SEQUENCE s_deadlock",
              "CREATE TRIGGER t_deadlock BEFORE INSERT ON call_summaries FOR EACH ROW BEGIN "
              "IF NEXTVAL(s_deadlock) = 1 THEN SIGNAL SQLSTATE '40001' SET MYSQL_ERRNO = 1213, "
              "MESSAGE_TEXT = 'Deadlock found when trying to get lock (test)'; END IF; END"],
}
DROP_DEADLOCK = {
    "postgresql": ["DROP TRIGGER IF EXISTS t_deadlock ON call_summaries", "DROP FUNCTION IF EXISTS f_deadlock()",
                   "DROP SEQUENCE IF EXISTS s_deadlock"],
    "mysql": ["DROP TRIGGER IF EXISTS t_deadlock", "DROP SEQUENCE IF EXISTS s_deadlock"],
}


def test_a_deadlock_is_retried(engine, fake, settings):
    if engine.dialect.name == "sqlite":
        pytest.skip("SQLite has no deadlocks: writers queue on BEGIN IMMEDIATE under a busy timeout")
    ids = [f"ACdead{i:02d}" for i in range(10)]
    enqueue(engine, ids)
    with trigger(engine, DEADLOCK_ONCE, DROP_DEADLOCK):
        stats = Syncer(engine, settings, transport=fake.transport(), clock=SYSTEM).run(RunOptions())
        with engine.connect() as conn:
            calls = conn.execute(sa.text(
                "SELECT nextval('s_deadlock')" if engine.dialect.name == "postgresql"
                else "SELECT NEXTVAL(s_deadlock)")).scalar_one()
    assert calls == 12  # one failed try, then every row once, then this SELECT
    assert (stats.completed, stats.errors, stats.exit_code) == (10, 0, 0)
    assert {r["state"] for r in queue(engine).values()} == {"done"}
    assert summaries(engine) == set(ids)


def test_limit_fetches_every_item_it_claimed(engine, fake, settings):
    ids = [f"AClimit{i:02d}" for i in range(20)]
    enqueue(engine, ids)
    slow = Hook(fake, lambda _call_id: time.sleep(0.05))  # items wait in the backlog meanwhile
    stats = Syncer(engine, settings.replace(concurrency=2), transport=slow, clock=SYSTEM).run(RunOptions(limit=7))
    assert (stats.claimed, stats.completed, stats.released, stats.exit_code, stats.stop_reason) == (
        7, 7, 0, 0, "limit reached")
    states = [r["state"] for r in queue(engine).values()]
    assert (states.count("done"), states.count("pending")) == (7, 13)
