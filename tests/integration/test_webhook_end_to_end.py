"""The webhook receiver end to end, as an operator sets it up: real processes, the simulated API over real HTTP.

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
from tests.support.proc import (
    error_lines,
    etl_env,
    free_port,
    healthy,
    output_of,
    run_etl,
    start_etl,
    stop,
    wait_for,
    webhook_secrets,
)

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
        secrets = ",".join(webhook_secrets(registered.stdout))
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
        # The cron sync first, limited to half the backlog: it has claimed its share before the server
        # starts, and the server must land the rest (whichever process a loaded machine starts
        # faster, both take part; a server started first could drain the backlog alone).
        sync = start_etl(["sync", "--rate", "10", "--limit", str(backlog // 2)], env, tmp_path, "sync")
        server = None
        try:
            wait_for(lambda: int(str(fake.stats()["total_requests"])) > 0, 60, "the cron sync's first request", sync)
            server = start_etl(["serve", "--port", str(port), "--rate", "10", "--poll-interval", "1"], env,
                               tmp_path, "serve")
            wait_for(lambda: healthy(receiver), 30, "etl serve to answer /healthz", server)
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
            if server is not None:
                server.send_signal(signal.SIGTERM)
                stop(server, timeout=60)
            if sync.poll() is None:
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
    # Both took part: the cron sync its half of the backlog, the server the rest and the deliveries.
    assert by_command == {"sync": backlog // 2, "serve": backlog // 2 + 10}, by_command


# --- issue 18 items 9-11: the current webhooks, end to end ---------------------------------


def test_current_webhook_register_then_pushed_deliveries_land(db_url: str, engine: Engine, tmp_path: Path) -> None:
    fake = FakeOpenPhone(api_key=API_KEY)
    port = free_port()
    receiver = f"http://127.0.0.1:{port}"
    with serve(fake) as api_url:
        env = etl_env(db_url, api_url, API_KEY)
        registered = run_etl(["webhooks", "register", "--api-version", "2026-03-30", "--url",
                              receiver + "/webhooks/openphone"], env)
        assert registered.returncode == 0, registered.stderr
        (secret,) = webhook_secrets(registered.stdout)
        assert secret.startswith("whsec_")
        proc = start_etl(["serve", "--port", str(port)], {**env, "OPENPHONE_WEBHOOK_SECRETS": secret}, tmp_path,
                         "serve")
        try:
            wait_for(lambda: healthy(receiver), 30, "etl serve to answer /healthz", proc)
            call = fake.workspace.synth_call("ACdated2e1").to_json()
            # The summary first: a call.completed first queues the id, and the engine could fetch it
            # before the summary's delivery lands (a race, not what this test is about).
            pushed = webhooks.push(fake.webhooks, webhooks.dated_summary_completed("ACdated2e1"))
            pushed += webhooks.push(fake.webhooks, webhooks.dated_call_completed(call))
            pushed += webhooks.push(fake.webhooks, webhooks.dated_transcript_completed("ACdated2e2"))
            # A legacy body reaches no current webhook (Quo sends each webhook its own version).
            assert webhooks.push(fake.webhooks, webhooks.summary_completed("ACdated2e3")) == []
            assert [(r.status_code, r.json()) for r in pushed] == [(200, {"status": "queued"})] * 3
            # The summary came whole: stored in the delivery's transaction, no request.
            assert scalar(engine, "SELECT state FROM summary_queue WHERE call_id = 'ACdated2e1'") == "done"
            wait_for(lambda: scalar(engine, "SELECT state FROM summary_queue WHERE call_id = 'ACdated2e2'") == "done",
                     20, "the transcript event's id to be fetched", proc)
        finally:
            proc.send_signal(signal.SIGTERM)
            stop(proc, timeout=60)
    assert fake.requests["ACdated2e1"] == 0 and fake.requests["ACdated2e2"] == 1
    assert scalar(engine, "SELECT count(*) FROM call_summary_lines WHERE call_id = 'ACdated2e1'") == len(
        webhooks.dated_summary("ACdated2e1")["summary"])  # type: ignore[arg-type]
    assert scalar(engine, "SELECT duration_seconds FROM calls WHERE call_id = 'ACdated2e1'") == call["duration"]
    out, err = output_of(tmp_path, "serve")
    assert secret not in out + err


def test_migrate_from_legacy_webhooks_without_a_gap(db_url: str, engine: Engine, tmp_path: Path) -> None:
    fake = FakeOpenPhone(api_key=API_KEY)
    port = free_port()
    receiver = f"http://127.0.0.1:{port}/webhooks/openphone"
    with serve(fake) as api_url:
        env = etl_env(db_url, api_url, API_KEY)
        legacy = run_etl(["webhooks", "register", "--url", receiver], env)
        current = run_etl(["webhooks", "register", "--api-version", "2026-03-30", "--url", receiver], env)
        assert legacy.returncode == current.returncode == 0, legacy.stderr + current.stderr
        legacy_ids = [h["id"] for h in fake.webhooks.values() if "apiVersion" not in h]
        (current_id,) = [h["id"] for h in fake.webhooks.values() if h.get("apiVersion") == "2026-03-30"]
        secrets = webhook_secrets(legacy.stdout) + webhook_secrets(current.stdout)
        proc = start_etl(["serve", "--port", str(port)], {**env, "OPENPHONE_WEBHOOK_SECRETS": ",".join(secrets)},
                         tmp_path, "serve")
        try:
            wait_for(lambda: healthy(receiver.removesuffix("/webhooks/openphone")), 30, "etl serve", proc)
            # The overlap: one event through both webhooks (same event id), stored once.
            first = webhooks.push(fake.webhooks, webhooks.summary_completed("ACmig1", event_id="EVoverlap1"))
            second = webhooks.push(fake.webhooks, webhooks.dated_summary_completed("ACmig1", event_id="EVoverlap1"))
            assert [r.json() for r in first + second] == [{"status": "queued"}, {"status": "duplicate"}]
            migrated = run_etl(["webhooks", "migrate", "--url", receiver, "--wait", "30"], env)
            after = webhooks.push(fake.webhooks, webhooks.dated_summary_completed("ACmig2"))
            wait_for(lambda: scalar(engine, "SELECT state FROM summary_queue WHERE call_id = 'ACmig2'") == "done",
                     30, "the summary pushed after the migration to land", proc)
        finally:
            proc.send_signal(signal.SIGTERM)
            stop(proc, timeout=60)
    assert migrated.returncode == 0, migrated.stderr
    lines = migrated.stdout.splitlines()
    assert lines[:2] == [
        f"Reusing webhook {current_id} for call.completed, call.summary.completed, call.transcript.completed, "
        "contact.updated, contact.deleted: "
        "it already points at this URL (its secret was shown when it was created)",
        f"Sent test event 1 (call.transcript.completed) to webhook {current_id}; waiting for `etl serve` to "
        "record it (up to 30 s)"]
    assert lines[2].startswith("`etl serve` received the test event after ")
    assert lines[3:] == [f"Deleted legacy webhook {legacy_ids[0]} (call.completed)",
                         f"Deleted legacy webhook {legacy_ids[1]} (call.summary.completed)",
                         f"Migrated {receiver} to webhook {current_id}; deleted 2 legacy webhook(s)."]
    assert list(fake.webhooks) == [current_id]
    assert [r.json() for r in after] == [{"status": "queued"}]
    (test_event,) = fake.test_deliveries
    assert test_event["status"] == 200
    assert scalar(engine, "SELECT count(*) FROM webhook_deliveries WHERE event_type = 'call.transcript.completed'"
                  " AND scheme = 'standard'") == 1
    assert scalar(engine, "SELECT count(*) FROM call_summaries WHERE call_id = 'ACmig1'") == 1
    # The test event is Quo's sample call: recorded (migrate waited for that), then ignored: never queued,
    # so never fetched and never a not_found in the counts, and never a row in the analyst tables.
    sample = webhooks.SAMPLE_CALL_ID
    assert scalar(engine, f"SELECT outcome FROM webhook_deliveries WHERE call_id = '{sample}'") == "ignored"
    for table in ("summary_queue", "transcript_queue", "call_summaries", "calls", "call_transcripts"):
        assert scalar(engine, f"SELECT count(*) FROM {table} WHERE call_id = '{sample}'") == 0, table
    assert fake.requests[sample] == 0


def test_migrate_deletes_nothing_when_the_test_event_never_arrives(db_url: str, engine: Engine,
                                                                   tmp_path: Path) -> None:
    fake = FakeOpenPhone(api_key=API_KEY)
    port = free_port()
    receiver = f"http://127.0.0.1:{port}/webhooks/openphone"
    with serve(fake) as api_url:
        env = etl_env(db_url, api_url, API_KEY)
        legacy = run_etl(["webhooks", "register", "--url", receiver], env)
        assert legacy.returncode == 0, legacy.stderr
        legacy_ids = sorted(fake.webhooks)
        # etl serve knows only the legacy secrets: the current webhook's test events are refused.
        proc = start_etl(["serve", "--port", str(port)],
                         {**env, "OPENPHONE_WEBHOOK_SECRETS": ",".join(webhook_secrets(legacy.stdout))}, tmp_path,
                         "serve")
        try:
            wait_for(lambda: healthy(receiver.removesuffix("/webhooks/openphone")), 30, "etl serve", proc)
            migrated = run_etl(["webhooks", "migrate", "--url", receiver, "--wait", "3"], env)
        finally:
            proc.send_signal(signal.SIGTERM)
            stop(proc, timeout=60)
    (current_id,) = [h["id"] for h in fake.webhooks.values() if h.get("apiVersion") == "2026-03-30"]
    assert migrated.returncode == 1
    assert error_lines(migrated.stderr) == [
        f"Error: no test event reached `etl serve` within 3 s (1 sent to webhook {current_id}, {receiver}): no "
        "legacy webhook was deleted. Check that `etl serve` runs on this database, that its "
        f"OPENPHONE_WEBHOOK_SECRETS holds the new webhook's secret and that {receiver} reaches it, then run "
        "migrate again (the new webhook is reused)"]
    assert migrated.stdout.splitlines()[0].startswith(f"Created webhook {current_id} for call.completed")
    assert sorted(h for h in fake.webhooks if h != current_id) == legacy_ids  # nothing deleted
    assert [r.get("status") for r in fake.wait_for_test_deliveries()] == [401]
    assert scalar(engine, "SELECT count(*) FROM webhook_deliveries") == 0


@pytest.mark.slow
def test_migrate_in_one_go_while_the_operator_restarts_etl_serve(db_url: str, engine: Engine,
                                                                  tmp_path: Path) -> None:
    """The documented one-step flow: migrate creates the current webhook and prints its secret; the
    operator restarts `etl serve` with it while migrate waits; a resent test event then arrives."""
    fake = FakeOpenPhone(api_key=API_KEY)
    port = free_port()
    receiver = f"http://127.0.0.1:{port}/webhooks/openphone"
    health = receiver.removesuffix("/webhooks/openphone")
    with serve(fake) as api_url:
        env = etl_env(db_url, api_url, API_KEY)
        legacy = run_etl(["webhooks", "register", "--url", receiver], env)
        old = webhook_secrets(legacy.stdout)
        server = start_etl(["serve", "--port", str(port)], {**env, "OPENPHONE_WEBHOOK_SECRETS": ",".join(old)},
                           tmp_path, "serve-old")
        migrating = None
        try:
            wait_for(lambda: healthy(health), 30, "etl serve", server)
            migrating = start_etl(["webhooks", "migrate", "--url", receiver, "--wait", "60"], env, tmp_path,
                                  "migrate")
            wait_for(lambda: "OPENPHONE_WEBHOOK_SECRETS=" in output_of(tmp_path, "migrate")[0], 30,
                     "migrate to print the new secret", migrating)
            new = output_of(tmp_path, "migrate")[0].split("OPENPHONE_WEBHOOK_SECRETS=…,")[1].split()[0]
            assert new.startswith("whsec_")
            server.send_signal(signal.SIGTERM)
            stop(server, timeout=60)
            server = start_etl(["serve", "--port", str(port)],
                               {**env, "OPENPHONE_WEBHOOK_SECRETS": ",".join([*old, new])}, tmp_path, "serve-new")
            assert stop(migrating, timeout=90) == 0, output_of(tmp_path, "migrate")
        finally:
            server.send_signal(signal.SIGTERM)
            stop(server, timeout=60)
            if migrating is not None and migrating.poll() is None:
                migrating.kill()
    out = output_of(tmp_path, "migrate")[0].splitlines()
    assert sum(line.startswith("Sent test event") for line in out) >= 2
    assert out[-1].endswith("deleted 2 legacy webhook(s).")
    assert [h.get("apiVersion") for h in fake.webhooks.values()] == ["2026-03-30"]
    # The first test event met the old server (401) or the restart; a later one was recorded.
    assert [r.get("status") for r in fake.wait_for_test_deliveries()][-1] == 200, fake.test_deliveries
