"""The simulated API's new endpoints and webhook deliveries over real HTTP (etl.testing).

``serve(fake)`` (the standard library's threading server) and ``python -m
etl.testing`` as its own process; deliveries go to a real HTTP receiver that
records what arrived (a stand-in for ``etl serve``, which another module tests).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import select
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import pytest
from standardwebhooks import Webhook

from etl.testing import FakeOpenPhone, Faults, Quirks, sample_summary, serve, webhooks

KEY = "k"
REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def receiver() -> Iterator[tuple[str, list[tuple[dict[str, str], bytes]]]]:
    """A real HTTP endpoint that records (headers, raw body) of each POST and answers 200."""
    got: list[tuple[dict[str, str], bytes]] = []

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers["content-length"]))
            got.append(({k.lower(): v for k, v in self.headers.items()}, body))
            self.send_response(200)
            self.send_header("content-length", "0")
            self.end_headers()

        def log_message(self, format: str, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/webhooks/openphone", got
    finally:
        server.shutdown()
        server.server_close()


def test_workspace_over_real_http_with_quirks_and_faults() -> None:
    fake = FakeOpenPhone(api_key=KEY, quirks=Quirks(empty_page=True),
                         faults=Faults(drop=1.0, max_per_id=1, endpoints=frozenset({"calls"})))  # fmt: skip
    fake.workspace.generate(phone_numbers=2, conversations=3, calls=4)
    with serve(fake) as base, httpx.Client(base_url=base, headers={"Authorization": KEY}) as c:
        numbers = c.get("/v1/phone-numbers").json()["data"]
        assert len(numbers) == 2
        seen, token, pages = [], None, 0
        while True:
            paging = {"pageToken": token} if token else {}
            body = c.get("/v1/conversations", params={"maxResults": 4, **paging}).json()
            pages += 1
            seen += [conv["id"] for conv in body["data"]]
            token = body["nextPageToken"]
            if token is None:
                break
        assert sorted(seen) == sorted(fake.workspace.conversations) and pages == 3  # 4, empty, 2
        conv = fake.workspace.conversations[seen[0]]
        params = {"phoneNumberId": conv.phone_number_id, "participants[]": conv.participants}
        with pytest.raises(httpx.RemoteProtocolError):
            c.get("/v1/calls", params=params)  # a dropped connection, really closed
        listing = c.get("/v1/calls", params=params).json()
        assert listing["totalItems"] == 4
        call = listing["data"][0]
        assert c.get(f"/v1/calls/{call['id']}").json() == {"data": call}
        if call["status"] == "completed":
            assert c.get(f"/v1/call-summaries/{call['id']}").json() == {"data": sample_summary(call["id"])}
        created = c.post("/v1/webhooks/call-summaries",
                         json={"url": "https://example.com/h", "events": ["call.summary.completed"]})  # fmt: skip
        assert created.status_code == 201
        assert c.delete(f"/v1/webhooks/{created.json()['data']['id']}").status_code == 204
    assert fake.outcomes["drop"] == 1
    assert fake.stats()["endpoints"]["calls"] == {"requests": 2, "429": 0}  # type: ignore[index]


def test_deliver_signed_in_both_schemes(receiver: tuple[str, list[tuple[dict[str, str], bytes]]]) -> None:
    url, got = receiver
    fake = FakeOpenPhone(api_key=KEY)
    with httpx.Client(transport=fake.transport(), base_url="https://x", headers={"Authorization": KEY}) as c:
        key = c.post("/v1/webhooks/calls", json={"url": url, "events": ["call.completed"]}).json()["data"]["key"]
    secret = webhooks.new_standard_secret(b"s")
    call = fake.workspace.synth_call("ACdelivered").to_json()
    body = webhooks.call_completed(call)
    assert webhooks.deliver(url, body, v1_key=key).status_code == 200
    assert webhooks.deliver(url, body, standard_secret=secret).status_code == 200
    with httpx.Client() as shared:
        for _ in range(3):  # a burst on one connection, as a redelivery would be
            webhooks.deliver(url, webhooks.summary_completed("ACdelivered", docs_sample_type=True), client=shared)
    tampered = webhooks.deliver(url, body, v1_key=key, headers={"openphone-signature": "hmac;1;1;AAAA"})
    assert tampered.status_code == 200  # the receiver here records; refusing is etl serve's job
    assert len(got) == 6

    headers, raw = got[0]
    assert raw == webhooks.body_bytes(body) and json.loads(raw)["data"]["object"] == call
    assert headers["content-type"] == "application/json"
    _, _, stamp, signature = headers["openphone-signature"].split(";")
    expected = hmac.new(base64.b64decode(key), stamp.encode() + b"." + raw, hashlib.sha256).digest()
    assert base64.b64decode(signature) == expected
    assert "webhook-signature" not in headers

    headers, raw = got[1]
    assert Webhook(secret).verify(raw, headers) == body
    assert "openphone-signature" not in headers
    assert {json.loads(r)["type"] for _, r in got[2:5]} == {"callSummary"}
    assert got[5][0]["openphone-signature"] == "hmac;1;1;AAAA"


@pytest.mark.slow
def test_module_cli_serves_a_workspace_and_writes_request_times_and_fetches_per_id(tmp_path: Path) -> None:
    stats_file = tmp_path / "stats.json"
    cmd = [sys.executable, "-m", "etl.testing", "--api-key", "K", "--phone-numbers", "2", "--conversations", "2",
           "--calls", "3", "--rate", "100", "--quirk-repeat-item",
           "--stats-file", str(stats_file), "--stats-times", "--stats-ids"]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True, env=env, cwd=tmp_path)
    try:
        assert proc.stdout is not None
        ready, _, _ = select.select([proc.stdout], [], [], 20)
        assert ready, "no listening line within 20 s"
        base = proc.stdout.readline().split()[-1]
        with httpx.Client(base_url=base, headers={"Authorization": "K"}) as c:
            assert len(c.get("/v1/phone-numbers").json()["data"]) == 2
            first = c.get("/v1/conversations", params={"maxResults": 3}).json()
            second = c.get("/v1/conversations", params={"maxResults": 3, "pageToken": first["nextPageToken"]}).json()
            assert second["data"][0] == first["data"][-1]  # --quirk-repeat-item
            assert c.get("/v1/webhooks", headers={"Authorization": "no"}).status_code == 401
            for call_id in ("ACtwice", "AConce", "ACtwice"):
                assert c.get(f"/v1/call-summaries/{call_id}").status_code == 200
            assert c.get("/v1/call-summaries/ACrefused", headers={"Authorization": "no"}).status_code == 401
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=20) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    stats = json.loads(stats_file.read_text())
    assert stats["endpoints"] == {
        "call-summaries": {"requests": 4, "429": 0},
        "conversations": {"requests": 2, "429": 0},
        "phone-numbers": {"requests": 1, "429": 0},
        "webhooks": {"requests": 1, "429": 0},
    }
    assert stats["per_id"] == {"AConce": 1, "ACtwice": 2}  # --stats-ids: refused requests fetch nothing
    times = stats["times"]
    assert len(times["conversations"]) == 2 and times["conversations"][0] <= times["conversations"][1]


def test_module_cli_refuses_an_unknown_fault_endpoint() -> None:
    proc = subprocess.run([sys.executable, "-m", "etl.testing", "--fault-endpoints", "calls,messages"],
                          capture_output=True, text=True, timeout=30,
                          env={**os.environ, "PYTHONPATH": str(REPO)})  # fmt: skip
    assert proc.returncode == 2
    assert "unknown endpoints ['messages']" in proc.stderr


def test_push_delivers_to_each_subscribed_webhook_with_its_key(
    receiver: tuple[str, list[tuple[dict[str, str], bytes]]],
) -> None:
    url, got = receiver
    fake = FakeOpenPhone(api_key=KEY)
    with httpx.Client(transport=fake.transport(), base_url="https://x", headers={"Authorization": KEY}) as c:
        calls = c.post("/v1/webhooks/calls", json={"url": url + "?calls", "events": ["call.completed"]})
        sums = c.post("/v1/webhooks/call-summaries", json={"url": url + "?sums", "events": ["call.summary.completed"]})
        c.post("/v1/webhooks/call-summaries", json={"url": url + "?off", "events": ["call.summary.completed"],
                                                    "status": "disabled"})  # fmt: skip
    keys = {"calls": calls.json()["data"]["key"], "sums": sums.json()["data"]["key"]}
    summary = webhooks.summary_completed("ACpushed", docs_sample_type=True)
    assert [r.status_code for r in webhooks.push(fake.webhooks, summary)] == [200]
    call = webhooks.call_completed(fake.workspace.synth_call("ACpushed").to_json())
    assert [r.status_code for r in webhooks.push(fake.webhooks, call)] == [200]
    assert len(got) == 2
    for (headers, raw), which in zip(got, ("sums", "calls"), strict=True):
        _, _, stamp, signature = headers["openphone-signature"].split(";")
        expected = hmac.new(base64.b64decode(keys[which]), stamp.encode() + b"." + raw, hashlib.sha256).digest()
        assert base64.b64decode(signature) == expected
    assert json.loads(got[0][1])["type"] == "callSummary" and json.loads(got[1][1])["type"] == "call.completed"


def test_dated_webhook_test_event_is_delivered_signed_over_http(
    receiver: tuple[str, list[tuple[dict[str, str], bytes]]],
) -> None:
    url, got = receiver
    fake = FakeOpenPhone(api_key=KEY)
    dated = {"Authorization": KEY, "Quo-Api-Version": "2026-03-30"}
    with serve(fake) as api_url, httpx.Client(base_url=api_url, headers=dated) as c:
        hook = c.post("/webhooks", json={"url": url, "events": ["call.summary.completed"], "label": "etl"})
        assert hook.status_code == 201
        data = hook.json()["data"]
        assert data["key"].startswith("whsec_") and data["apiVersion"] == "2026-03-30"
        # The legacy surface neither lists nor deletes it; the version header is required on this one.
        assert c.get("/v1/webhooks").json()["data"] == []
        assert c.delete(f"/v1/webhooks/{data['id']}").status_code == 404
        assert c.get("/webhooks", headers={"Quo-Api-Version": ""}).status_code == 400
        sent = c.post(f"/webhooks/{data['id']}/events/test", json={"eventType": "call.summary.completed"})
        assert sent.status_code == 200
        payload = sent.json()["data"]["payload"]
        (record,) = fake.wait_for_test_deliveries()
        assert c.post(f"/webhooks/{data['id']}/events/test", json={"eventType": "nope"}).status_code == 400
        assert c.post("/webhooks/WH404/events/test", json={}).status_code == 404
        assert c.delete(f"/webhooks/{data['id']}").status_code == 204
        assert c.get("/webhooks").json() == {"data": [], "nextCursor": None}
    assert record == {"webhook_id": data["id"], "event_id": payload["id"], "type": "call.summary.completed",
                      "status": 200}
    ((headers, raw),) = got
    # Checked with the standardwebhooks library itself, with the key the API returned.
    assert Webhook(data["key"]).verify(raw.decode(), headers) == payload
    assert payload["apiVersion"] == "2026-03-30" and payload["data"]["resource"]["status"] == "completed"
