"""`etl serve`'s receiver over real HTTP: a real uvicorn server on a thread, real databases,
the simulated API behind the in-process engine (httpx transport), deliveries of both
schemes signed by the simulator's signer (``etl.testing.webhooks``).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from etl.testing import webhooks
from tests.support.receiver import SECRET_A, SECRET_B, WHSEC, Receiver, running_receiver

JSON = {"content-type": "application/json"}


def v1_headers(secret: str, body: bytes, ts_ms: int | None = None) -> dict[str, str]:
    return {**webhooks.sign_v1(body, secret, ts_ms), **JSON}


def std_headers(secret: str, body: bytes, ts: int | None = None) -> dict[str, str]:
    when = datetime.fromtimestamp(ts, UTC) if ts is not None else None
    return {**webhooks.sign_standard(body, secret, timestamp=when), **JSON}


def summary_event(call_id: str, event_id: str | None = None) -> bytes:
    return webhooks.body_bytes(webhooks.summary_completed(call_id, event_id=event_id))


def call_event(call_id: str, shape: webhooks.Shape = "object") -> bytes:
    call = {"id": call_id, "object": "call", "direction": "incoming", "status": "completed",
            "createdAt": "2026-11-25T10:00:00Z", "answeredAt": "2026-11-25T10:00:05Z",
            "completedAt": "2026-11-25T10:04:00Z", "duration": 235, "phoneNumberId": "PNabc123",
            "userId": "USabc123", "participants": ["+15555550100", "+15555550123"], "contactIds": []}
    return webhooks.body_bytes(webhooks.call_completed(call, shape=shape))



@pytest.fixture
def receiver(request: pytest.FixtureRequest, engine: Engine, db_url: str) -> Iterator[Receiver]:
    """A running receiver; the engine's rate budget is 10/s (the default) unless parametrized."""
    with running_receiver(engine, db_url, rate=float(getattr(request, "param", 10.0))) as running:
        yield running


def sign(scheme: str, body: bytes, **kw: Any) -> dict[str, str]:
    return v1_headers(SECRET_B, body, **kw) if scheme == "v1" else std_headers(WHSEC, body, **kw)


@pytest.mark.parametrize("scheme", ["v1", "standard"])
def test_signed_summary_delivery_lands_its_summary(receiver: Receiver, scheme: str) -> None:
    body = summary_event("ACland1")
    response = receiver.post(body, sign(scheme, body))
    assert response.status_code == 200, response.text
    assert response.json() == {"status": "queued"}
    receiver.wait_done(["ACland1"], timeout=20)
    assert receiver.count("call_summaries", "WHERE call_id = 'ACland1'") == 1
    assert receiver.fake.requests["ACland1"] == 1


def test_forgery_matrix_refused_with_nothing_stored(receiver: Receiver) -> None:
    body = summary_event("ACforged1")
    now_ms = int(time.time() * 1000)
    good = v1_headers(SECRET_A, body, now_ms)
    wrong_key = v1_headers("d3Jvbmcgc2VjcmV0IGtleSAzMiBieXRlcyBsb25nISE=", body, now_ms)
    one_byte = body.replace(b"ACforged1", b"ACforged2")
    cases: list[tuple[str, bytes, dict[str, str], int]] = [
        ("no signature", body, {"content-type": "application/json"}, 401),
        ("malformed v1", body, {"openphone-signature": "hmac;1;abc;def"}, 401),
        ("stripe-style header", body, {"openphone-signature": f"t={now_ms},v1=abc"}, 401),
        ("wrong secret", body, wrong_key, 401),
        ("body changed by one byte", one_byte, good, 401),
        ("stale v1", body, v1_headers(SECRET_A, body, now_ms - 301_000), 401),
        ("future v1", body, v1_headers(SECRET_A, body, now_ms + 301_000), 401),
        ("stale standard", body, std_headers(WHSEC, body, ts=now_ms // 1000 - 301), 401),
        ("standard one byte", one_byte, std_headers(WHSEC, body), 401),
        ("standard headers incomplete", body, {"webhook-id": "msg_x", "webhook-signature": "v1,AAAA"}, 401),
        ("oversize", b"{" + b" " * 70_000 + b"}", v1_headers(SECRET_A, b"{}", now_ms), 413),
    ]
    for name, payload, headers, status in cases:
        response = receiver.post(payload, headers)
        assert response.status_code == status, (name, response.status_code, response.text)
    bad_json = b'{"type": "call.summary.completed", '
    assert receiver.post(bad_json, v1_headers(SECRET_A, bad_json)).status_code == 400
    assert receiver.count("webhook_deliveries") == 0
    assert receiver.count("summary_queue") == 0
    scraped = receiver.client.get(receiver.url + "/metrics").text
    for reason in ("missing_header", "malformed_header", "bad_signature", "stale_timestamp", "too_large",
                   "bad_json"):
        assert f'etl_webhook_refusals_total{{reason="{reason}",workspace="default"}}' in scraped, reason


@pytest.mark.parametrize("scheme", ["v1", "standard"])
def test_replay_refused_redelivery_idempotent(receiver: Receiver, scheme: str) -> None:
    body = summary_event("ACdup1", "EVsame")
    first = sign(scheme, body)
    assert receiver.post(body, first).json() == {"status": "queued"}
    replay = receiver.post(body, first)
    assert replay.status_code == 401 and replay.json()["error"] == "replay"
    # The same event, signed again with a fresh timestamp (how OpenPhone retries): accepted, no work.
    for n in (1, 2):
        headers = v1_headers(SECRET_B, body, int(time.time() * 1000) + n) if scheme == "v1" else \
            std_headers(WHSEC, body, ts=int(time.time()) + n)
        response = receiver.post(body, headers)
        assert response.json() == {"status": "duplicate"}, response.text
    receiver.wait_done(["ACdup1"])
    time.sleep(0.5)
    assert receiver.count("summary_queue") == 1
    assert receiver.count("webhook_deliveries") == 3
    assert receiver.fake.requests["ACdup1"] == 1


def test_an_exact_replay_is_refused_after_a_re_signed_copy_arrived_first(receiver: Receiver) -> None:
    """Issue 25, finding 8: the same webhook-id re-signed at another time, then the original and its replay."""
    body = summary_event("ACorder1", "EVorder")
    now = int(time.time())
    original = {**webhooks.sign_standard(body, WHSEC, msg_id="msg_order1", timestamp=datetime.fromtimestamp(now, UTC)),
                **JSON}
    resigned = {**webhooks.sign_standard(body, WHSEC, msg_id="msg_order1",
                                         timestamp=datetime.fromtimestamp(now + 5, UTC)), **JSON}
    assert receiver.post(body, resigned).json() == {"status": "queued"}
    assert receiver.post(body, original).json() == {"status": "duplicate"}  # the sender's retry: no work
    replay = receiver.post(body, original)
    assert replay.status_code == 401 and replay.json()["error"] == "replay"
    again = receiver.post(body, resigned)
    assert again.status_code == 401 and again.json()["error"] == "replay"
    receiver.wait_done(["ACorder1"])
    assert receiver.count("summary_queue") == 1


def test_out_of_order_and_terminal_states(receiver: Receiver) -> None:
    # Summary first, then the call: one fetch, the call event changes nothing.
    body = summary_event("ACorder1")
    assert receiver.post(body, sign("v1", body)).json() == {"status": "queued"}
    receiver.wait_done(["ACorder1"])
    body = call_event("ACorder1")
    assert receiver.post(body, sign("standard", body)).json() == {"status": "queued"}
    # call.completed for a new call enqueues it; the engine fetches it.
    body = call_event("ACcall2", shape="resource")
    assert receiver.post(body, sign("v1", body)).json() == {"status": "queued"}
    # ... and stores its call row from the event, with its participants.
    with receiver.engine.connect() as conn:
        call = conn.execute(sa.text("SELECT direction, duration_seconds, user_id, phone_number_id FROM calls "
                                    "WHERE call_id = 'ACcall2'")).one()
        numbers = conn.execute(sa.text("SELECT number FROM call_participants WHERE call_id = 'ACcall2' "
                                       "ORDER BY position")).scalars().all()
    assert tuple(call) == ("incoming", 235, "USabc123", "PNabc123")
    assert numbers == ["+15555550100", "+15555550123"]
    receiver.wait_done(["ACorder1", "ACcall2"])
    assert receiver.fake.requests["ACorder1"] == 1
    # A summary event for an item that ended `absent` re-queues it; `done` stays done.
    with receiver.engine.begin() as conn:
        conn.execute(sa.text("INSERT INTO summary_queue (call_id, state, attempts, finished_at) "
                             "VALUES ('ACgaveup', 'absent', 9, '2026-01-01 00:00:00')"))
    for call_id in ("ACgaveup", "ACorder1"):
        body = summary_event(call_id)
        assert receiver.post(body, sign("v1", body)).json() == {"status": "queued"}
    receiver.wait_done(["ACorder1", "ACcall2", "ACgaveup"])
    assert receiver.fake.requests["ACgaveup"] == 1
    assert receiver.fake.requests["ACorder1"] == 1


def test_other_events_ignored_and_operations_endpoints(receiver: Receiver) -> None:
    body = b'{"id":"EVm1","object":"event","type":"message.received","data":{"object":{"id":"MSx"}}}'
    assert receiver.post(body, sign("v1", body)).json() == {"status": "ignored"}
    assert receiver.count("summary_queue") == 0
    body = summary_event("AChealth1")
    assert receiver.post(body, sign("v1", body)).status_code == 200
    receiver.wait_done(["AChealth1"])
    health = receiver.client.get(receiver.url + "/healthz")
    assert health.status_code == 200 and health.json()["healthy"] is True
    assert health.json()["last_successful_fetch_unix"] is not None
    assert health.json()["last_successful_fetch_run_at"].endswith("Z")  # from sync_runs: any process
    # The last engine run's figures as they were when it ended (its duration does not keep growing).
    deadline = time.monotonic() + 5
    while health.json()["last_run"] is None and time.monotonic() < deadline:
        time.sleep(0.05)
        health = receiver.client.get(receiver.url + "/healthz")
    assert health.json()["last_run"]["completed"] == 1
    time.sleep(0.3)
    assert receiver.client.get(receiver.url + "/healthz").json()["last_run"] == health.json()["last_run"]
    deadline = time.monotonic() + 5
    while True:  # the landing watcher ticks every 0.25 s
        scraped = receiver.client.get(receiver.url + "/metrics").text
        if 'etl_summary_landing_seconds_count{workspace="default"} 1.0' in scraped or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    assert 'etl_summary_landing_seconds_count{workspace="default"} 1.0' in scraped
    deliveries = "etl_webhook_deliveries_total{outcome=\"%s\",type=\"%s\",workspace=\"default\"} 1.0"
    assert deliveries % ("ignored", "message.received") in scraped
    assert deliveries % ("queued", "call.summary.completed") in scraped
    assert 'etl_queue_items{state="done",workspace="default"}' in scraped
    # AChealth1 had no call row: the engine fetched its call, then its summary.
    assert 'etl_api_requests_total{outcome="2xx",workspace="default"} 2.0' in scraped
    assert 'etl_rate_budget_requests_per_second{workspace="default"} 10.0' in scraped
    # Two slots granted from the key's shared budget: 2 in 10 s of a 10/s budget.
    assert 'etl_rate_budget_granted_total{workspace="default"} 2.0' in scraped
    assert 'etl_rate_budget_use_ratio{workspace="default"} 0.02' in scraped


@pytest.mark.slow
@pytest.mark.realtime
@pytest.mark.parametrize("receiver", [100.0], indirect=True)
def test_burst_of_1000_deliveries_while_the_engine_syncs(receiver: Receiver) -> None:
    """1,000 deliveries in 10 s (every tenth a redelivery of an earlier event): every id once, fetched once."""
    total, senders = 1000, 8
    bodies = [summary_event(f"ACburst{n}", f"EVburst{n}") for n in range(total)]
    statuses: dict[int, tuple[int, str]] = {}
    busy: list[int] = []  # deliveries answered 503 once (then retried)
    started = time.monotonic()

    def stamp(redelivery: bool) -> int:
        ms = int(time.time() * 1000)
        return ms | 1 if redelivery else ms & ~1

    def send(k: int) -> None:
        with httpx.Client(timeout=10) as client:
            for n in range(k, total, senders):
                delay = started + n * 0.01 - time.monotonic()
                if delay > 0:
                    time.sleep(delay)
                # Every tenth delivery re-sends an earlier event, signed anew: a redelivery.  The same body
                # signed in the same millisecond would be the same signed message, a replay (401): an
                # original, delayed by a sender's pause after a 503, once met its redelivery's timestamp
                # exactly.  So originals are signed on even milliseconds, redeliveries on odd ones, and a
                # retry after a 503 is signed anew (as OpenPhone does), a second later.
                redelivery = n % 10 == 9
                body = bodies[n - 5] if redelivery else bodies[n]
                r = client.post(receiver.url + "/webhooks/openphone", content=body,
                                headers=v1_headers(SECRET_B, body, stamp(redelivery)))
                if r.status_code == 503:  # the database stayed busy 3 s: the sender retries, as OpenPhone does
                    busy.append(n)
                    time.sleep(1.0)
                    r = client.post(receiver.url + "/webhooks/openphone", content=body,
                                    headers=v1_headers(SECRET_B, body, stamp(redelivery)))
                statuses[n] = (r.status_code, r.json().get("status", ""))

    threads = [threading.Thread(target=send, args=(k,)) for k in range(senders)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    # How fast the receiver keeps up is bench/webhooks.py's figure, not a bound here: on 2 shared
    # cores beside the rest of the suite the same burst took 10 to 48 s.  What must hold at any
    # speed: every delivery answered 200, at most 1 % busy, every id once, fetched once.
    assert all(code == 200 for code, _ in statuses.values()), [v for v in statuses.values() if v[0] != 200][:5]
    # A 503 is the receiver's documented answer to a database busy for 3 s (a loaded 2-core CI machine):
    # rare, and never a lost delivery.
    assert len(busy) <= total // 100, busy
    expected = {f"ACburst{n}" for n in range(total) if n % 10 != 9}
    duplicates = sum(1 for _, outcome in statuses.values() if outcome == "duplicate")
    # A redelivery that arrives before its original is the original (queued), so at most 100.
    assert 0 < duplicates <= 100
    receiver.wait_done(sorted(expected), timeout=90)
    with receiver.engine.connect() as conn:
        queued = [r[0] for r in conn.execute(sa.text("SELECT call_id FROM summary_queue"))]
    assert sorted(queued) == sorted(expected)
    assert receiver.count("call_summaries") == len(expected)
    assert receiver.count("summary_queue", "WHERE state = 'done'") == len(expected)
    assert {c: n for c, n in receiver.fake.requests.items() if n != 1} == {}
    assert set(receiver.fake.requests) == expected
