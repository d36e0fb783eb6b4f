"""A tiny webhook *signer* for the receiver tests, written independently of etl.webhooks.signatures.

The openphone-v1 formula straight from the docs (hmac + base64), and the
Standard Webhooks scheme through ``standardwebhooks.Webhook.sign``.  The sim
helper's etl.testing signer replaces this at merge.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
import uuid
from datetime import UTC, datetime
from typing import Any

from standardwebhooks import Webhook

# 32 random bytes, base64: the shape OpenPhone shows for a signing key.
SECRET_A = base64.b64encode(hashlib.sha256(b"secret-a").digest()).decode()
SECRET_B = base64.b64encode(hashlib.sha256(b"secret-b").digest()).decode()
WHSEC = "whsec_" + base64.b64encode(hashlib.sha256(b"secret-std").digest()).decode()


def v1_headers(secret: str, body: bytes, ts_ms: int | None = None) -> dict[str, str]:
    ts = str(ts_ms if ts_ms is not None else int(time.time() * 1000))
    mac = hmac.new(base64.b64decode(secret), ts.encode() + b"." + body, hashlib.sha256).digest()
    return {"openphone-signature": f"hmac;1;{ts};{base64.b64encode(mac).decode()}",
            "content-type": "application/json"}


def std_headers(secret: str, body: bytes, msg_id: str | None = None, ts: int | None = None) -> dict[str, str]:
    msg_id = msg_id or f"msg_{uuid.uuid4().hex}"
    when = datetime.fromtimestamp(ts if ts is not None else int(time.time()), UTC)
    return {"webhook-id": msg_id, "webhook-timestamp": str(int(when.timestamp())),
            "webhook-signature": Webhook(secret).sign(msg_id, when, body.decode()),
            "content-type": "application/json"}


def summary_event(call_id: str, event_id: str | None = None, *, type_: str = "call.summary.completed",
                  shape: str = "object") -> bytes:
    """A call.summary.completed delivery: v1 shape (``data.object``) or the dated one (``data.resource``)."""
    obj = {"callId": call_id, "object": "callSummary", "status": "completed",
           "summary": ["They talked."], "nextSteps": ["Call back."]}
    return _event(type_, obj, event_id, shape)


def call_event(call_id: str, event_id: str | None = None, shape: str = "object") -> bytes:
    obj = {"id": call_id, "object": "call", "direction": "incoming", "status": "completed",
           "createdAt": "2026-11-25T10:00:00Z", "answeredAt": "2026-11-25T10:00:05Z",
           "completedAt": "2026-11-25T10:04:00Z", "duration": 235, "phoneNumberId": "PNabc123",
           "userId": "USabc123", "participants": ["+15555550100", "+15555550123"], "contactIds": []}
    return _event("call.completed", obj, event_id, shape)


def _event(type_: str, obj: dict[str, Any], event_id: str | None, shape: str) -> bytes:
    doc = {"id": event_id or f"EV{uuid.uuid4().hex}", "object": "event", "apiVersion": "v1",
           "createdAt": "2026-11-25T10:05:00.000Z", "type": type_, "data": {shape: obj}}
    return json.dumps(doc, separators=(",", ":")).encode()
