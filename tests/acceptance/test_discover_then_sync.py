"""`etl discover --since … && etl sync` on a fresh database.

Real ``etl`` processes against the simulated API (``etl.testing``) served
over real HTTP: every call of the workspace lands with its participants, every
completed call with its summary, on SQLite, PostgreSQL and MariaDB; a SIGKILL
during discovery and during sync, then re-runs, change none of that.
"""

from __future__ import annotations

import datetime as dt
import signal
from typing import Any

import pytest
import sqlalchemy as sa

from etl.testing import FakeOpenPhone, serve
from tests.support.db import API_KEY, make_due
from tests.support.proc import etl_env, output_of, run_etl, start_etl, stop, wait_for

pytestmark = pytest.mark.slow


def workspace(latency_ms: float = 0.0, busy_calls: int = 0) -> FakeOpenPhone:
    fake = FakeOpenPhone(api_key=API_KEY, default_status=None, latency_ms=latency_ms, seed=10)
    fake.workspace.generate(phone_numbers=2, conversations=4, calls=4, days=5, busy_calls=busy_calls)
    return fake


def since(fake: FakeOpenPhone) -> str:
    return (fake.clock.now() - dt.timedelta(days=6)).strftime("%Y-%m-%d")


def _naive(when: dt.datetime | None) -> dt.datetime | None:
    return None if when is None else when.astimezone(dt.UTC).replace(tzinfo=None)


def expected(fake: FakeOpenPhone) -> dict[str, Any]:
    calls = fake.workspace.calls.values()
    return {
        "calls": {c.id: (c.direction, c.status, c.duration, c.phone_number_id, c.user_id, _naive(c.completed_at))
                  for c in calls},
        "participants": sorted((c.id, i, p) for c in calls for i, p in enumerate(c.participants)),
        "done": sorted(c.id for c in calls if c.status == "completed"),
    }


def landed(engine) -> dict[str, Any]:
    with engine.connect() as conn:
        calls = {r[0]: tuple(r[1:]) for r in conn.execute(sa.text(
            "SELECT call_id, direction, status, duration_seconds, phone_number_id, user_id, completed_at FROM calls"))}
        # SQLite hands back text for a raw-SQL timestamp: compare datetimes.
        calls = {k: (*v[:5], v[5] if not isinstance(v[5], str) else dt.datetime.fromisoformat(v[5]))
                 for k, v in calls.items()}
        participants = sorted(tuple(r) for r in conn.execute(sa.text(
            "SELECT call_id, position, number FROM call_participants")))
        done = sorted(r[0] for r in conn.execute(sa.text(
            "SELECT q.call_id FROM summary_queue q JOIN call_summaries s ON s.call_id = q.call_id "
            "WHERE q.state = 'done' AND s.status = 'completed'")))
        queued = conn.execute(sa.text("SELECT count(*) FROM summary_queue")).scalar_one()
        summaries = conn.execute(sa.text("SELECT count(*) FROM call_summaries")).scalar_one()
        lines = conn.execute(sa.text("SELECT count(*) FROM call_summary_lines")).scalar_one()
    assert queued == summaries == len(done), (queued, summaries, len(done))  # nothing else queued or stored
    return {"calls": calls, "participants": participants, "done": done, "lines": lines}


def count(engine, table: str) -> int:
    with engine.connect() as conn:
        return int(conn.execute(sa.text(f"SELECT count(*) FROM {table}")).scalar_one())


def test_discover_then_sync_lands_every_call_with_participants_and_summary(engine, db_url, tmp_path):
    fake = workspace()
    want = expected(fake)
    assert len(want["done"]) >= 20 and len(want["calls"]) > len(want["done"])  # some calls were missed
    with serve(fake) as url:
        env = etl_env(db_url, url, API_KEY)
        discovered = run_etl(["discover", "--since", since(fake)], env)
        assert discovered.returncode == 0, discovered.stderr
        synced = run_etl(["sync"], env)  # the default rate: 10 requests per second
        assert synced.returncode == 0, synced.stderr
    got = landed(engine)
    assert {k: got[k] for k in ("calls", "participants", "done")} == want
    assert got["lines"] > 0
    endpoints = fake.stats()["endpoints"]
    assert isinstance(endpoints, dict)
    # Every completed call's summary once; no call asked for again: discovery stored them all.
    assert endpoints["call-summaries"]["requests"] == len(want["done"])
    assert "call" not in endpoints


@pytest.mark.realtime
def test_sigkill_in_discover_and_in_sync_then_rerun_changes_nothing(engine, db_url, tmp_path):
    # A conversation of 150 calls: its listing takes two pages (maxResults 100, pageToken).
    fake = workspace(latency_ms=40, busy_calls=150)
    want = expected(fake)
    with serve(fake) as url:
        env = etl_env(db_url, url, API_KEY)
        discover = ["discover", "--since", since(fake), "--rate", "0"]
        # Killed mid-walk: after some calls were committed, before all were.
        proc = start_etl(discover, env, tmp_path, "discover-killed")
        try:
            wait_for(lambda: count(engine, "calls") >= 5, 60, "5 calls stored", proc)
        finally:
            proc.send_signal(signal.SIGKILL)
            assert stop(proc) == -signal.SIGKILL
        assert count(engine, "calls") < len(want["calls"]), "discovery finished before the kill"
        result = run_etl(discover, env)
        assert result.returncode == 0, result.stderr
        # A call a kill left unqueued in a page never committed is found again, not twice.
        sync = ["sync", "--rate", "0", "--concurrency", "2"]
        proc = start_etl(sync, env, tmp_path, "sync-killed")
        try:
            wait_for(lambda: count(engine, "call_summaries") >= 5, 60, "5 summaries stored", proc)
        finally:
            proc.send_signal(signal.SIGKILL)
            assert stop(proc) == -signal.SIGKILL
        assert count(engine, "call_summaries") < len(want["done"]), "sync finished before the kill"
        fake.latency_ms = 0  # the kills are done: slow answers only had to let them land mid-run
        make_due(engine)  # the dead run's leases expire
        proc = start_etl(sync, env, tmp_path, "sync-final")
        assert stop(proc) == 0, output_of(tmp_path, "sync-final")[1][-2000:]
        # A second discovery and sync find nothing new and change nothing.
        before = landed(engine)
        assert run_etl(discover, env).returncode == 0
        assert run_etl(sync, env).returncode == 0
    got = landed(engine)
    assert got == before
    assert {k: got[k] for k in ("calls", "participants", "done")} == want
    assert len(want["calls"]) > 150
