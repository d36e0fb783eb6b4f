"""The dated API end to end: `etl discover --since … && etl sync` as real processes over real HTTP.

With ``OPENPHONE_API_VERSION=2026-03-30``, at the default budget of 10
requests per second, against the simulator served over HTTP: every workspace
call lands (group calls with every party) with every summary equal to what the
API served, in one request per 50 calls plus one per summary still in
progress; no ``/v1`` path but the contacts listing is called and every other request carries the version
header (the simulator's request log).  A discovery killed with SIGKILL and run
again loses nothing and enqueues nothing twice.  Real processes and real time
(a few seconds): marked slow.
"""

from __future__ import annotations

import datetime as dt
import json
import math
import signal
from typing import Any

import pytest
import sqlalchemy as sa

from etl.testing import ApiClock, FakeOpenPhone, serve
from tests.support.db import API_KEY
from tests.support.proc import (
    check_consistent,
    count,
    etl_env,
    output_of,
    run_etl,
    start_etl,
    stop,
    stored_calls,
    wait_for,
)

pytestmark = pytest.mark.slow

DATED = "2026-03-30"
DISCOVER = ["discover", "--since", "2026-11-01"]


def workspace(calls_per_conversation: int, latency_ms: float = 0.0) -> FakeOpenPhone:
    """The API limited to 10 requests/s like the real one; 3 summaries in progress when listed."""
    fake = FakeOpenPhone(api_key=API_KEY, clock=ApiClock(dt.datetime(2026, 12, 1, 12, tzinfo=dt.UTC)),
                         default_status=None, rate=10, burst=10, latency_ms=latency_ms)
    fake.workspace.generate(phone_numbers=2, conversations=3, calls=calls_per_conversation, group_calls=5,
                            agent_calls=4)
    for call_id in sorted(c.id for c in fake.workspace.calls.values() if c.status == "completed")[:3]:
        fake.pending_summaries[call_id] = 0
    return fake


def landed_as_served(engine: Any, fake: FakeOpenPhone) -> None:
    """Every call with every party, every final summary equal to the API's payload."""
    calls = fake.workspace.calls
    with engine.connect() as conn:
        stored = dict(conn.execute(sa.text("SELECT call_id, participant_count FROM calls")).all())
    assert stored == {c.id: len(c.participants) + 1 for c in calls.values()}
    assert sum(1 for c in calls.values() if len(c.participants) == 3) == 5  # the group calls, all parties
    summaries = stored_calls(engine)
    served = {c.id: fake.dated_summary(c) for c in calls.values()}
    final = {i: s for i, s in served.items() if s["status"] in ("completed", "failed")}
    assert set(summaries) == set(final)
    for call_id, summary in final.items():
        assert json.loads(summaries[call_id]["raw_json"]) == summary
    check_consistent(engine)


def request_log_is_dated_only(fake: FakeOpenPhone) -> None:
    """Every request on the dated surface but the contacts listing: the 2026-03-30 API lists no contacts
    (GET /contacts answers 404), so discovery's refresh lists them from GET /v1/contacts (docs/contract.md)."""
    assert fake.request_log
    assert [p for _, p, _ in fake.request_log if p.startswith("/v1") and p != "/v1/contacts"] == []
    assert {version for _, p, version in fake.request_log if p != "/v1/contacts"} == {DATED}


def test_discover_then_sync_lands_the_workspace_in_one_request_per_50_calls(engine, db_url):
    fake = workspace(20)
    with serve(fake) as url:
        env = etl_env(db_url, url, API_KEY, OPENPHONE_API_VERSION=DATED)
        found = run_etl(DISCOVER, env)
        synced = run_etl(["sync"], env)
        hand = next(c.id for c in fake.workspace.calls.values() if c.status == "completed")
        before = fake.total_requests
        with engine.begin() as conn:
            conn.execute(sa.text("DELETE FROM summary_queue WHERE call_id = :c"), {"c": hand})
        assert run_etl(["enqueue", hand], env).returncode == 0
        again = run_etl(["sync"], env)
    assert (found.returncode, synced.returncode, again.returncode) == (0, 0, 0), found.stderr + synced.stderr
    n = len(fake.workspace.calls)
    assert fake.endpoint_requests["dated-calls"] == math.ceil(n / 50)
    assert fake.endpoint_requests["dated-call"] == 3 + 1  # the summaries in progress, then the hand-enqueued id
    assert fake.total_requests - before == 1  # an id enqueued by hand costs one request
    assert sum(fake.endpoint_429.values()) == 0
    request_log_is_dated_only(fake)
    landed_as_served(engine, fake)
    assert count(engine, "summary_queue", "WHERE state = 'done'") == count(engine, "call_summaries")


def test_sigkill_mid_discover_then_rerun_loses_nothing_and_enqueues_nothing_twice(engine, db_url, tmp_path):
    fake = workspace(60, latency_ms=250)
    n = len(fake.workspace.calls)
    with serve(fake) as url:
        env = etl_env(db_url, url, API_KEY, OPENPHONE_API_VERSION=DATED)
        proc = start_etl(DISCOVER, env, tmp_path, "killed")
        try:
            wait_for(lambda: count(engine, "calls") >= 100, 60, "100 calls", proc)
        finally:
            proc.send_signal(signal.SIGKILL)
            assert stop(proc) == -signal.SIGKILL
        partial = count(engine, "calls")
        assert partial < n, "killed too late"
        check_consistent(engine)
        final = run_etl(DISCOVER, env)
        synced = run_etl(["sync"], env)
    assert (final.returncode, synced.returncode) == (0, 0), final.stderr + output_of(tmp_path, "killed")[1]
    landed_as_served(engine, fake)
    request_log_is_dated_only(fake)
    with engine.connect() as conn:
        runs = conn.execute(sa.text("SELECT finished_at IS NULL, enqueued FROM discovery_runs ORDER BY id")).all()
        queued = conn.execute(sa.text("SELECT COUNT(*) FROM summary_queue WHERE state = 'done' "
                                      "AND call_id NOT IN (SELECT call_id FROM call_summaries)")).scalar_one()
    assert [bool(r[0]) for r in runs] == [True, False]
    # The 3 in-progress summaries were enqueued once in all (their pages committed once or listed again).
    assert sum(r[1] for r in runs) == 3
    assert queued == 0
    assert fake.endpoint_requests["dated-call"] == 3


def test_the_receiver_on_the_dated_api_lands_a_pushed_summary_with_one_request(engine, db_url, tmp_path):
    from etl.testing import webhooks
    from tests.support.proc import free_port, healthy, webhook_secrets

    fake = FakeOpenPhone(api_key=API_KEY)
    port = free_port()
    receiver = f"http://127.0.0.1:{port}"
    with serve(fake) as api_url:
        env = etl_env(db_url, api_url, API_KEY)
        registered = run_etl(["webhooks", "register", "--url", receiver + "/webhooks/openphone"], env)
        assert registered.returncode == 0, registered.stderr
        secrets = ",".join(webhook_secrets(registered.stdout))
        before = len(fake.request_log)
        proc = start_etl(["serve", "--port", str(port), "--api-version", DATED],
                         {**env, "OPENPHONE_WEBHOOK_SECRETS": secrets}, tmp_path, "serve")
        try:
            wait_for(lambda: healthy(receiver), 30, "etl serve to answer /healthz", proc)
            pushed = webhooks.push(fake.webhooks, webhooks.summary_completed("ACdatedhook1"))
            assert [r.status_code for r in pushed] == [200]
            wait_for(lambda: count(engine, "call_summaries", "WHERE call_id = 'ACdatedhook1'") == 1, 20,
                     "the summary to land", proc)
        finally:
            proc.send_signal(signal.SIGTERM)
            stop(proc, timeout=60)
    assert fake.request_log[before:] == [("GET", "/calls/ACdatedhook1", DATED)]
    call = fake.workspace.synth_call("ACdatedhook1")
    assert count(engine, "call_participants", "WHERE call_id = 'ACdatedhook1'") == len(call.participants)
    assert count(engine, "summary_queue", "WHERE call_id = 'ACdatedhook1' AND state = 'done'") == 1


@pytest.mark.parametrize(("fetch_calls", "requests"), [("1", ["/v1/calls/AChand7", "/v1/call-summaries/AChand7"]),
                                                        ("0", ["/v1/call-summaries/AChand7"])])
def test_etl_fetch_calls_decides_what_a_v1_id_costs(engine, db_url, fetch_calls, requests):
    fake = FakeOpenPhone(api_key=API_KEY)
    with serve(fake) as url:
        env = etl_env(db_url, url, API_KEY, ETL_FETCH_CALLS=fetch_calls)
        assert run_etl(["enqueue", "AChand7"], env).returncode == 0
        synced = run_etl(["sync"], env)
    assert synced.returncode == 0, synced.stderr
    assert [path for _, path, _ in fake.request_log] == requests
    assert count(engine, "calls") == (1 if fetch_calls == "1" else 0)
    assert count(engine, "summary_queue", "WHERE state = 'done'") == 1
