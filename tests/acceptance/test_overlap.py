"""Two `etl sync` processes on one queue at once: both succeed, each id is fetched once.

Cron starts a run every few minutes whether or not the last one finished, so
overlapping runs are normal.  The claim (``FOR UPDATE SKIP LOCKED`` on the
servers, ``BEGIN IMMEDIATE`` on SQLite) must hand every item to exactly one
of them; the simulated API records any id requested while a request for it
is still in flight (``fake.overlaps``) and how often each id was requested.

With ``--rate 0`` one claim takes up to 1000 items, so the queue holds more
than that: with a few hundred ids the first process would take them all and
the second would have nothing to contend for.
"""

from __future__ import annotations

import threading

import pytest

from etl import store
from etl.clock import utcnow
from etl.testing import FakeOpenPhone, sample_summary, serve
from tests.support.db import API_KEY
from tests.support.proc import (
    check_consistent,
    comparable,
    etl_env,
    expected_call,
    output_of,
    runs,
    start_etl,
    stop,
    stored_calls,
    wire_json,
)

N_IDS = 1200


@pytest.mark.slow
def test_two_overlapping_runs_split_the_work(engine, db_url, tmp_path):
    ids = [f"ACovl{i:04d}" for i in range(N_IDS)]
    with engine.begin() as conn:
        store.enqueue_ids(conn, ids)
    fake = FakeOpenPhone(api_key=API_KEY, latency_ms=20)
    with serve(fake) as url:
        env = etl_env(db_url, url, API_KEY)
        args = ["sync", "--rate", "0", "--concurrency", "8"]
        procs = [start_etl(args, env, tmp_path, f"run{n}") for n in (1, 2)]
        codes = [stop(p, timeout=120) for p in procs]
    assert codes == [0, 0], [output_of(tmp_path, f"run{n}")[1][-2000:] for n in (1, 2)]

    rows = check_consistent(engine)
    assert {r["state"] for r in rows.values()} == {"done"}
    assert all(r["attempts"] == 1 and r["lease_owner"] is None for r in rows.values())
    assert fake.overlaps == []
    assert {fake.requests[i] for i in ids} == {1}
    assert sum(fake.requests.values()) == N_IDS

    history = runs(engine)
    assert [(r["exit_code"], r["errors"]) for r in history] == [(0, 0), (0, 0)]
    assert all(r["finished_at"] is not None for r in history)
    # Both runs got a share of the work, and no item was claimed by both.
    split = [(r["claimed"], r["completed"]) for r in history]
    assert all(claimed > 0 and completed == claimed for claimed, completed in split), split
    assert sum(r["claimed"] for r in history) == N_IDS

    expected = {i: expected_call(sample_summary(i), wire_json(sample_summary(i))) for i in ids}
    assert {i: comparable(c) for i, c in stored_calls(engine).items()} == expected


def test_claim_while_another_claim_is_open_gets_the_rest(engine):
    """Run B claims while run A's claim transaction is still open: B gets the items A
    did not take (SKIP LOCKED), or on SQLite waits for A and then gets them; an empty
    answer would make B end early, believing nothing is due."""
    with engine.begin() as conn:
        store.enqueue_ids(conn, [f"ACclm{i:04d}" for i in range(N_IDS)])
    now = utcnow()
    got_b: list[str] = []

    def claim_b() -> None:
        with engine.begin() as conn:
            got_b.extend(i.call_id for i in store.claim(conn, "run-b", 1000, now, 300))

    with engine.connect() as conn_a:
        tx = conn_a.begin()
        got_a = [i.call_id for i in store.claim(conn_a, "run-a", 1000, now, 300)]
        b = threading.Thread(target=claim_b)
        b.start()
        b.join(timeout=0.5)  # servers answer at once; SQLite queues B behind A's write lock
        tx.commit()
    b.join(timeout=30)
    assert not b.is_alive()
    assert (len(got_a), len(got_b)) == (1000, N_IDS - 1000)
    assert not set(got_a) & set(got_b)
