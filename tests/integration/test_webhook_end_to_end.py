"""Issue 11 end to end, as an operator sets it up: real processes, the simulated API over real HTTP.

* `etl webhooks register --url` creates the webhooks on the simulator and prints their secrets;
  `etl serve` starts with exactly those; the simulator then ``push()``es a signed
  ``call.completed`` and ``call.summary.completed`` to every registered webhook, and the
  call row and the summary land.
* `etl serve` and a cron `etl sync` at the same time, on one key and one database, against
  an API limited to 10 requests/s (burst 10): they share the key's budget, so the API
  answers (almost) no 429, and both did part of the work.
"""

from __future__ import annotations

import signal
import time
from pathlib import Path

import httpx
import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from etl import store
from etl.testing import FakeOpenPhone, serve, webhooks
from tests.support.proc import etl_env, free_port, healthy, output_of, run_etl, start_etl, stop, wait_for

API_KEY = "test-key-0123456789"




def scalar(engine: Engine, sql: str, **params: object) -> object:
    with engine.connect() as conn:
        return conn.execute(sa.text(sql), params).scalar()


def test_register_then_pushed_deliveries_land(db_url: str, engine: Engine, tmp_path: Path) -> None:
    fake = FakeOpenPhone(api_key=API_KEY)
    port = free_port()
    receiver = f"http://127.0.0.1:{port}"
    with serve(fake) as api_url:
        env = etl_env(db_url, api_url, API_KEY)
        registered = run_etl(["webhooks", "register", "--url", receiver + "/webhooks/openphone"], env)
        assert registered.returncode == 0, registered.stderr
        (line,) = [x for x in registered.stdout.splitlines() if x.startswith("OPENPHONE_WEBHOOK_SECRETS=")]
        secrets = line.removeprefix("OPENPHONE_WEBHOOK_SECRETS=")
        assert len(secrets.split(",")) == 2
        proc = start_etl(["serve", "--port", str(port)], {**env, "OPENPHONE_WEBHOOK_SECRETS": secrets}, tmp_path,
                         "serve")
        try:
            wait_for(lambda: healthy(receiver), 30, "etl serve to answer /healthz", proc)
            call = fake.workspace.synth_call("ACend2end1").to_json()
            # As OpenPhone does: the call first, then its summary, each to the webhook subscribed to it.
            pushed = webhooks.push(fake.webhooks, webhooks.call_completed(call))
            pushed += webhooks.push(fake.webhooks, webhooks.summary_completed("ACend2end1"))
            assert [(r.status_code, r.json()) for r in pushed] == [(200, {"status": "queued"})] * 2
            wait_for(lambda: scalar(engine, "SELECT count(*) FROM call_summaries WHERE call_id = 'ACend2end1'") == 1,
                     20, "the summary to land", proc)
        finally:
            proc.send_signal(signal.SIGTERM)
            stop(proc, timeout=60)
    assert scalar(engine, "SELECT state FROM summary_queue WHERE call_id = 'ACend2end1'") == "done"
    assert scalar(engine, "SELECT duration_seconds FROM calls WHERE call_id = 'ACend2end1'") == call["duration"]
    assert scalar(engine, "SELECT direction FROM calls WHERE call_id = 'ACend2end1'") == call["direction"]
    assert scalar(engine, "SELECT count(*) FROM call_participants WHERE call_id = 'ACend2end1'") == len(
        call["participants"])
    assert fake.requests["ACend2end1"] == 1
    out, err = output_of(tmp_path, "serve")
    assert not any(s in out + err for s in secrets.split(","))  # the secrets are never logged


@pytest.mark.slow
@pytest.mark.realtime
def test_serve_and_cron_sync_share_one_budget(db_url: str, engine: Engine, tmp_path: Path) -> None:
    backlog = 60  # each costs its call and its summary: 120 requests, 12 s at the key's 10/s
    with engine.begin() as conn:
        store.enqueue_ids(conn, [f"ACshared{n:04d}" for n in range(backlog)])
    fake = FakeOpenPhone(api_key=API_KEY, rate=10.0, burst=10)
    secret = webhooks.new_standard_secret(b"shared-budget")
    port = free_port()
    receiver = f"http://127.0.0.1:{port}"
    with serve(fake) as api_url:
        env = etl_env(db_url, api_url, API_KEY, OPENPHONE_WEBHOOK_SECRETS=secret)
        server = start_etl(["serve", "--port", str(port), "--rate", "10", "--poll-interval", "1"], env, tmp_path,
                           "serve")
        sync = None
        try:
            wait_for(lambda: healthy(receiver), 30, "etl serve to answer /healthz", server)
            sync = start_etl(["sync", "--rate", "10"], env, tmp_path, "sync")
            # Deliveries while both run: each lands as well.
            with httpx.Client(timeout=10) as client:
                for n in range(10):
                    body = webhooks.summary_completed(f"AChot{n}")
                    r = webhooks.deliver(receiver + "/webhooks/openphone", body, standard_secret=secret,
                                         client=client)
                    assert r.json() == {"status": "queued"}, r.text
                    time.sleep(0.5)
            assert stop(sync, timeout=120) == 0, output_of(tmp_path, "sync")[1][-2000:]
            wait_for(lambda: scalar(engine, "SELECT count(*) FROM summary_queue WHERE state = 'done'")
                     == backlog + 10, 60, "every id to land", server)
        finally:
            server.send_signal(signal.SIGTERM)
            stop(server, timeout=60)
            if sync is not None and sync.poll() is None:
                sync.kill()
    stats = fake.stats()
    outcomes = stats["outcomes"]
    assert isinstance(outcomes, dict)
    total, refused = int(str(stats["total_requests"])), int(outcomes.get("429", 0))
    assert total >= backlog + 10
    assert refused <= 0.02 * total, (refused, total)  # one budget: at most a stray 429 or two
    with engine.connect() as conn:
        rows = conn.execute(sa.text("SELECT command, sum(completed) FROM sync_runs GROUP BY command"))
        by_command = {str(command): int(n) for command, n in rows}
    # Both took part: the server and the cron sync each landed some of the backlog.
    assert by_command.get("sync", 0) > 0 and by_command.get("serve", 0) > 0, by_command
    assert sum(by_command.values()) == backlog + 10
