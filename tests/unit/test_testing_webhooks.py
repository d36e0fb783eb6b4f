"""Webhooks in the simulated API (etl.testing): CRUD endpoints, delivery bodies, both signing schemes.

The v1 signature is recomputed here from the documented recipe (not with the
helper under test); the Standard Webhooks headers are checked with the
``standardwebhooks`` library's own verifier.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import hmac
import json

import httpx
import pytest
from standardwebhooks import Webhook, WebhookVerificationError

from etl.testing import ApiClock, FakeOpenPhone, sample_summary, webhooks

KEY = "k"


def client(fake: FakeOpenPhone) -> httpx.Client:
    return httpx.Client(
        transport=fake.transport(), base_url="https://api.openphone.com", headers={"Authorization": KEY}
    )


# -- CRUD ----------------------------------------------------------------------------


def test_create_list_get_delete() -> None:
    fake = FakeOpenPhone(api_key=KEY, clock=ApiClock(dt.datetime(2026, 11, 20, tzinfo=dt.UTC)))
    with client(fake) as c:
        calls = c.post("/v1/webhooks/calls", json={"url": "https://example.com/h", "events": ["call.completed"],
                                                   "label": "etl", "resourceIds": ["PN1"]})  # fmt: skip
        summaries = c.post(
            "/v1/webhooks/call-summaries", json={"url": "http://127.0.0.1:8080/h", "events": ["call.summary.completed"]}
        )
        assert calls.status_code == summaries.status_code == 201
        hook = calls.json()["data"]
        assert {"id", "url", "events", "key", "status", "label", "resourceIds", "createdAt", "updatedAt"} <= hook.keys()
        assert hook["id"].startswith("WH") and hook["url"] == "https://example.com/h"
        assert (hook["events"], hook["label"], hook["resourceIds"], hook["status"]) == (
            ["call.completed"], "etl", ["PN1"], "enabled",
        )  # fmt: skip
        assert hook["createdAt"] == "2026-11-20T00:00:00Z"
        assert len(base64.b64decode(hook["key"], validate=True)) == 32
        other = summaries.json()["data"]
        assert other["resourceIds"] == ["*"] and other["label"] is None and other["key"] != hook["key"]

        listed = c.get("/v1/webhooks").json()["data"]
        assert [h["id"] for h in listed] == [hook["id"], other["id"]]
        assert c.get(f"/v1/webhooks/{hook['id']}").json() == {"data": hook}
        deleted = c.delete(f"/v1/webhooks/{hook['id']}")
        assert (deleted.status_code, deleted.content) == (204, b"")
        assert c.get(f"/v1/webhooks/{hook['id']}").status_code == 404
        assert c.delete(f"/v1/webhooks/{hook['id']}").status_code == 404
        assert [h["id"] for h in c.get("/v1/webhooks").json()["data"]] == [other["id"]]
    assert fake.stats()["endpoints"] == {"webhooks": {"requests": 8, "429": 0}}


@pytest.mark.parametrize(
    ("path", "body", "where"),
    [
        ("/v1/webhooks/calls", {"events": ["call.completed"]}, "/url"),
        ("/v1/webhooks/calls", {"url": "ftp://x", "events": ["call.completed"]}, "/url"),
        ("/v1/webhooks/calls", {"url": "https://x", "events": []}, "/events"),
        ("/v1/webhooks/calls", {"url": "https://x", "events": ["call.summary.completed"]}, "/events"),
        ("/v1/webhooks/call-summaries", {"url": "https://x", "events": ["call.completed"]}, "/events"),
        ("/v1/webhooks/calls", {"url": "https://x", "events": ["call.completed"], "status": "on"}, "/status"),
        ("/v1/webhooks/calls", {"url": "https://x", "events": ["call.completed"], "resourceIds": "P"}, "/resourceIds"),
        ("/v1/webhooks/calls", {"url": "https://x", "events": ["call.completed"], "label": 5}, "/label"),
    ],
)
def test_bad_webhook_bodies_answer_400(path: str, body: dict[str, object], where: str) -> None:
    fake = FakeOpenPhone(api_key=KEY)
    with client(fake) as c:
        resp = c.post(path, json=body)
    assert resp.status_code == 400 and resp.json()["errors"][0]["path"] == where
    assert fake.webhooks == {}


def test_non_json_body_unknown_kind_and_no_key() -> None:
    fake = FakeOpenPhone(api_key=KEY)
    with client(fake) as c:
        assert c.post("/v1/webhooks/calls", content=b"{not json").status_code == 400
        assert c.post("/v1/webhooks/messages", json={}).status_code == 404
        assert c.post("/v1/webhooks/calls", json={}, headers={"Authorization": "wrong"}).status_code == 401
    assert fake.webhooks == {}


# -- delivery bodies -------------------------------------------------------------------


def test_call_completed_body() -> None:
    fake = FakeOpenPhone(api_key=KEY)
    call = fake.workspace.synth_call("ACabc").to_json()
    body = webhooks.call_completed(call)
    assert body["object"] == "event" and body["type"] == "call.completed"
    assert str(body["id"]).startswith("EV") and body["apiVersion"]
    assert body["data"] == {"object": call}
    assert dt.datetime.fromisoformat(str(body["createdAt"]).replace("Z", "+00:00"))
    assert webhooks.call_completed(call)["id"] != body["id"]  # each delivery its own event id


@pytest.mark.parametrize(("docs_sample_type", "event_type"), [(False, "call.summary.completed"), (True, "callSummary")])
def test_summary_completed_body(docs_sample_type: bool, event_type: str) -> None:
    body = webhooks.summary_completed("ACabc", docs_sample_type=docs_sample_type, event_id="EV1", created_at="X")
    summary = sample_summary("ACabc")
    assert body == {
        "id": "EV1", "object": "event", "apiVersion": webhooks.API_VERSION, "createdAt": "X", "type": event_type,
        "data": {"object": {"callId": "ACabc", "object": "callSummary", "status": "completed",
                            "summary": summary["summary"], "nextSteps": summary["nextSteps"]}},
    }  # fmt: skip


# -- signatures --------------------------------------------------------------------------


def test_v1_signature_follows_the_documented_recipe() -> None:
    key = base64.b64encode(b"0123456789abcdef0123456789abcdef").decode()
    raw = webhooks.body_bytes(webhooks.summary_completed("ACabc", event_id="EV1", created_at="X"))
    header = webhooks.sign_v1(raw, key, timestamp_ms=1_700_000_000_123)["openphone-signature"]
    scheme, version, stamp, signature = header.split(";")
    assert (scheme, version, stamp) == ("hmac", "1", "1700000000123")
    expected = hmac.new(b"0123456789abcdef0123456789abcdef", b"1700000000123." + raw, hashlib.sha256).digest()
    assert base64.b64decode(signature) == expected
    # Another body or key gives another signature.
    assert webhooks.sign_v1(raw + b" ", key, timestamp_ms=1_700_000_000_123)["openphone-signature"] != header
    now_stamp = int(webhooks.sign_v1(raw, key)["openphone-signature"].split(";")[2])
    assert abs(now_stamp - dt.datetime.now(dt.UTC).timestamp() * 1000) < 60_000  # milliseconds, now


def test_standard_webhooks_headers_verify_with_the_library() -> None:
    secret = webhooks.new_standard_secret(b"test")
    assert secret.startswith("whsec_")
    raw = webhooks.body_bytes(webhooks.call_completed({"id": "ACabc", "object": "call"}))
    headers = webhooks.sign_standard(raw, secret, msg_id="msg_1")
    assert headers["webhook-id"] == "msg_1"
    assert abs(int(headers["webhook-timestamp"]) - dt.datetime.now(dt.UTC).timestamp()) < 60
    assert headers["webhook-signature"].startswith("v1,")
    assert Webhook(secret).verify(raw, headers) == json.loads(raw)
    with pytest.raises(WebhookVerificationError):
        Webhook(secret).verify(raw.replace(b"ACabc", b"ACabd"), headers)
    with pytest.raises(WebhookVerificationError):
        Webhook(webhooks.new_standard_secret(b"other")).verify(raw, headers)
    stale = webhooks.sign_standard(raw, secret, timestamp=dt.datetime.now(dt.UTC) - dt.timedelta(minutes=10))
    with pytest.raises(WebhookVerificationError):
        Webhook(secret).verify(raw, stale)
