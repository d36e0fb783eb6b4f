"""`etl serve` with two workspaces (issue 27, part 3): a real uvicorn server on a thread, real databases,
each workspace with its own simulated API (its own key), its own secrets and its own path; deliveries
signed by the simulator's signer (``etl.testing.webhooks``) in both schemes.
"""

from __future__ import annotations

import socket
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest
import sqlalchemy as sa
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy.engine import Engine

from etl.testing import FakeOpenPhone, webhooks
from tests.support.proc import free_port
from tests.support.receiver import FakeWorkspace, Receiver, running_receiver

NORTH_KEY = "north-key-0123456789"
SOUTH_KEY = "south-key-0123456789"
NORTH_V1 = webhooks.new_standard_secret(b"north-v1").removeprefix("whsec_")
NORTH_STD = webhooks.new_standard_secret(b"north-std")
SOUTH_V1 = webhooks.new_standard_secret(b"south-v1").removeprefix("whsec_")
SOUTH_STD = webhooks.new_standard_secret(b"south-std")


@pytest.fixture
def receiver(engine: Engine, db_url: str) -> Iterator[Receiver]:
    north = FakeWorkspace("north", FakeOpenPhone(api_key=NORTH_KEY), [NORTH_V1, NORTH_STD])
    south = FakeWorkspace("south", FakeOpenPhone(api_key=SOUTH_KEY), [SOUTH_V1, SOUTH_STD])
    with running_receiver(engine, db_url, workspaces=[north, south]) as running:
        yield running


def post(r: Receiver, path: str, body: bytes, *, v1: str | None = None, std: str | None = None) -> tuple[int, str]:
    headers = {"content-type": "application/json"}
    headers.update(webhooks.sign_v1(body, v1) if v1 else webhooks.sign_standard(body, std or ""))
    answer = r.post(body, headers, path=path)
    return answer.status_code, answer.json().get("status") or answer.json().get("error")


def rows(engine: Engine, query: str) -> set[tuple[object, ...]]:
    with engine.connect() as conn:
        return {tuple(row) for row in conn.execute(sa.text(query))}


def samples(text: str, name: str) -> dict[tuple[tuple[str, str], ...], float]:
    return {tuple(sorted(s.labels.items())): s.value for family in text_string_to_metric_families(text)
            for s in family.samples if s.name == name}


def test_each_workspace_lands_on_its_own_path_with_its_own_key(receiver: Receiver, engine: Engine) -> None:
    north_fake, south_fake = receiver.fakes["north"], receiver.fakes["south"]
    summary = webhooks.body_bytes(webhooks.summary_completed("ACnorth1"))
    assert post(receiver, "/webhooks/north", summary, v1=NORTH_V1) == (200, "queued")
    dated = webhooks.body_bytes(webhooks.dated_transcript_completed("ACsouth1"))
    assert post(receiver, "/webhooks/south", dated, std=SOUTH_STD) == (200, "queued")
    receiver.wait_done(["ACnorth1", "ACsouth1"])
    # Each id was fetched once, from its own workspace's API with its own key, never the other's.
    assert (north_fake.requests["ACnorth1"], north_fake.requests.get("ACsouth1", 0)) == (1, 0)
    assert (south_fake.requests["ACsouth1"], south_fake.requests.get("ACnorth1", 0)) == (1, 0)
    assert rows(engine, "SELECT call_id, workspace FROM summary_queue") == {("ACnorth1", "north"),
                                                                           ("ACsouth1", "south")}
    assert rows(engine, "SELECT call_id, workspace FROM call_summaries") == {("ACnorth1", "north"),
                                                                            ("ACsouth1", "south")}
    assert rows(engine, "SELECT call_id, workspace FROM webhook_deliveries") == {("ACnorth1", "north"),
                                                                                ("ACsouth1", "south")}


def test_a_delivery_signed_with_another_workspaces_secret_is_a_forgery(receiver: Receiver) -> None:
    body = webhooks.body_bytes(webhooks.summary_completed("ACcross1"))
    assert post(receiver, "/webhooks/north", body, v1=SOUTH_V1) == (401, "bad_signature")
    assert post(receiver, "/webhooks/south", body, std=NORTH_STD) == (401, "bad_signature")
    # Today's path is the default workspace's, which this server does not serve.
    assert post(receiver, "/webhooks/openphone", body, v1=NORTH_V1) == (404, "unknown_workspace")
    assert receiver.count("webhook_deliveries") == 0
    assert receiver.count("summary_queue") == 0
    refusals = samples(receiver.scrape(), "etl_webhook_refusals_total")
    assert refusals == {(("reason", "bad_signature"), ("workspace", "north")): 1.0,
                        (("reason", "bad_signature"), ("workspace", "south")): 1.0,
                        (("reason", "unknown_workspace"), ("workspace", "")): 1.0}


def test_an_unknown_workspace_is_404_before_its_body_is_read(receiver: Receiver) -> None:
    port = int(receiver.url.rsplit(":", 1)[1])
    with socket.create_connection(("127.0.0.1", port), timeout=10) as conn:
        # 10 MB announced, 10 bytes sent: the answer comes without waiting for the rest (which would
        # be a 408 after the read timeout) and without reading past the limit (a 413).
        conn.sendall(b"POST /webhooks/east HTTP/1.1\r\nHost: x\r\nContent-Length: 10000000\r\n"
                     b"content-type: application/json\r\n\r\n" + b"{" * 10)
        answer = b""
        while chunk := conn.recv(65536):
            answer += chunk
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.split(b"\r\n")[0] == b"HTTP/1.1 404 Not Found"
    assert b"connection: close" in head.lower()
    assert b'"error":"unknown_workspace"' in body
    assert receiver.count("webhook_deliveries") == 0


def test_metrics_and_healthz_per_workspace(receiver: Receiver) -> None:
    body = webhooks.body_bytes(webhooks.summary_completed("ACnorthm"))
    assert post(receiver, "/webhooks/north", body, v1=NORTH_V1) == (200, "queued")
    receiver.wait_done(["ACnorthm"])
    text = receiver.scrape()
    assert samples(text, "etl_webhook_deliveries_total") == {
        (("outcome", "queued"), ("type", "call.summary.completed"), ("workspace", "north")): 1.0}
    assert samples(text, "etl_engine_alive") == {(("workspace", "north"),): 1.0, (("workspace", "south"),): 1.0}
    assert samples(text, "etl_rate_budget_requests_per_second") == {(("workspace", "north"),): 10.0,
                                                                     (("workspace", "south"),): 10.0}
    assert samples(text, "etl_engine_runs_total")[(("workspace", "south"),)] == 0.0
    assert samples(text, "etl_engine_runs_total")[(("workspace", "north"),)] >= 1.0
    requests = samples(text, "etl_api_requests_total")
    assert requests[(("outcome", "2xx"), ("workspace", "north"))] == 2.0  # the call, then its summary
    assert not any(dict(labels)["workspace"] == "south" for labels in requests)
    queue = samples(text, "etl_queue_items")
    assert queue[(("state", "done"), ("workspace", "north"))] == 1.0
    assert queue[(("state", "done"), ("workspace", "south"))] == 0.0
    assert {dict(labels)["workspace"] for labels in samples(text, "etl_transcript_queue_items")} == {"north", "south"}
    health = receiver.client.get(receiver.url + "/healthz").json()
    assert health["healthy"] is True
    assert sorted(health["workspaces"]) == ["north", "south"]
    assert health["workspaces"]["north"]["last_run"]["completed"] == 1
    assert health["workspaces"]["south"]["engine_alive"] is True


def test_migrate_one_workspace_waits_for_its_own_test_event(engine: Engine, db_url: str,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    """`Etl.workspace("north").webhooks.migrate`: north's current webhook is registered on north's API,
    its test event reaches north's path on the running receiver, is recorded for north (and only
    north), and only then north's legacy webhooks go; south's API is never asked anything."""
    from etl import Etl
    from etl.webhooks import manage
    from etl.workspaces import WorkspaceConfig

    north_api = FakeOpenPhone(api_key=NORTH_KEY, seed=1)
    south_api = FakeOpenPhone(api_key=SOUTH_KEY, seed=2)
    monkeypatch.setenv("QUO_KEY_NORTH", NORTH_KEY)
    spaces = [WorkspaceConfig("north", "QUO_KEY_NORTH", webhook_secrets_env="QUO_WHSEC_NORTH")]
    port = free_port()
    url = f"http://127.0.0.1:{port}/webhooks/north"
    legacy = Etl(workspaces=spaces, transport=north_api.transport()).workspace("north").webhooks.register(url)
    dated = Etl(workspaces=spaces, transport=north_api.transport(), api_version="2026-03-30")
    (current,) = dated.workspace("north").webhooks.register(url)
    north = FakeWorkspace("north", north_api, [h.secret for h in legacy] + [current.secret])
    south = FakeWorkspace("south", south_api, [SOUTH_V1, SOUTH_STD])
    since = datetime.now(UTC).replace(tzinfo=None) - timedelta(seconds=5)
    with running_receiver(engine, db_url, workspaces=[north, south], port=port):
        steps: list[str] = []
        job = Etl(database_url=db_url, workspaces=spaces, transport=north_api.transport()).workspace("north")
        migrated = job.webhooks.migrate(url, wait=30, on_step=steps.append)
        job.close()
    assert migrated.current.id == current.id and sorted(migrated.deleted) == sorted(h.id for h in legacy)
    assert list(north_api.webhooks) == [current.id]
    assert rows(engine, "SELECT workspace, event_type FROM webhook_deliveries") == {
        ("north", "call.transcript.completed")}
    assert manage.test_event_received(engine, [], since, workspace="north")
    assert not manage.test_event_received(engine, [], since, workspace="south")
    assert south_api.total_requests == 0


def test_a_backlog_in_one_workspace_does_not_delay_another(receiver: Receiver, engine: Engine) -> None:
    """Each workspace has its own engine thread and key budget: south's fresh summary lands while
    north's 300-item backlog (a minute of work at north's 10 requests/s) is still being worked."""
    from etl import store

    backlog = [f"ACback{n}" for n in range(300)]
    with engine.begin() as conn:
        store.enqueue_ids(conn, backlog, datetime.now(UTC).replace(tzinfo=None), workspace="north")
    receiver.workers["north"].wake()
    body = webhooks.body_bytes(webhooks.summary_completed("ACfresh1"))
    assert post(receiver, "/webhooks/south", body, v1=SOUTH_V1) == (200, "queued")
    receiver.wait_done(["ACfresh1"])
    pending = receiver.count("summary_queue", "WHERE workspace = 'north' AND state = 'pending'")
    assert pending > 0, "north's backlog was done before south's summary landed"
    assert receiver.fakes["north"].requests.get("ACfresh1", 0) == 0
    assert receiver.fakes["south"].requests["ACfresh1"] == 1
    assert not any(receiver.fakes["south"].requests.get(i, 0) for i in backlog[:50])
