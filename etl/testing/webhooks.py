"""The sending side of OpenPhone webhooks, for tests and the benchmark.

Builds delivery bodies in the documented shapes (openphone.com/docs/guides/webhooks:
``{id, object: "event", apiVersion, createdAt, type, data: {object}}``) and
signs them in both schemes a receiver must accept:

* v1 webhooks: ``openphone-signature: hmac;1;<timestamp ms>;<base64 HMAC-SHA256>``
  over ``<timestamp>.<raw body>``, keyed with the base64-decoded signing key
  (quo.com/docs/webhooks/legacy-signature-validation);
* webhooks of the dated API version: the Standard Webhooks headers
  (``webhook-id``, ``webhook-timestamp``, ``webhook-signature``), signed by the
  ``standardwebhooks`` library itself.

``deliver`` POSTs a body over real HTTP. Verifying signatures is the
receiver's job (``etl serve``), not this module's.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import hmac
import itertools
import json
import time
from collections.abc import Mapping
from typing import Literal

import httpx
from standardwebhooks import Webhook

from etl.testing._data import sample_summary

API_VERSION = "v4"  # as in the docs' sample payloads
_event_n = itertools.count(1)


def _event_id() -> str:
    return "EV" + hashlib.blake2b(f"{time.time_ns()}:{next(_event_n)}".encode(), digest_size=16).hexdigest()


def _now_iso() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


Shape = Literal["object", "resource"]


def event(
    event_type: str,
    obj: Mapping[str, object],
    *,
    event_id: str | None = None,
    created_at: str | None = None,
    shape: Shape = "object",
) -> dict[str, object]:
    """A delivery body: ``{id, object: "event", apiVersion, createdAt, type, data: {object}}``;
    ``shape="resource"`` puts the object under ``data.resource``, as the dated API version does."""
    return {
        "id": event_id or _event_id(),
        "object": "event",
        "apiVersion": API_VERSION,
        "createdAt": created_at or _now_iso(),
        "type": event_type,
        "data": {shape: dict(obj)},
    }


def call_completed(
    call: Mapping[str, object], *, event_id: str | None = None, created_at: str | None = None, shape: Shape = "object"
) -> dict[str, object]:
    """``call.completed``: ``data.object`` is the call as ``GET /v1/calls/{id}`` returns it."""
    return event("call.completed", call, event_id=event_id, created_at=created_at, shape=shape)


def summary_completed(
    call_id: str,
    summary: Mapping[str, object] | None = None,
    *,
    docs_sample_type: bool = False,
    event_id: str | None = None,
    created_at: str | None = None,
    shape: Shape = "object",
) -> dict[str, object]:
    """``call.summary.completed`` for ``call_id``.

    ``data.object`` is ``{callId, object: "callSummary", status, summary, nextSteps}``
    (no jobs: a receiver fetches the summary endpoint for the full record),
    taken from ``summary`` or the sample summary of ``call_id``.
    ``docs_sample_type`` gives ``type: "callSummary"``, as the docs' sample does.
    """
    data = dict(summary) if summary is not None else sample_summary(call_id)
    obj = {
        "callId": call_id,
        "object": "callSummary",
        "status": data.get("status", "completed"),
        "summary": data.get("summary"),
        "nextSteps": data.get("nextSteps"),
    }
    kind = "callSummary" if docs_sample_type else "call.summary.completed"
    return event(kind, obj, event_id=event_id, created_at=created_at, shape=shape)


def body_bytes(body: Mapping[str, object] | bytes) -> bytes:
    """The exact bytes to send and sign (compact JSON, UTF-8)."""
    if isinstance(body, bytes):
        return body
    return json.dumps(body, separators=(",", ":"), ensure_ascii=False).encode()


def sign_v1(body: bytes, key: str, timestamp_ms: int | None = None) -> dict[str, str]:
    """The ``openphone-signature`` header of a v1 webhook for ``body``, signed with ``key``
    (the webhook's base64 signing key); ``timestamp_ms`` defaults to now, in milliseconds."""
    stamp = str(timestamp_ms if timestamp_ms is not None else time.time_ns() // 1_000_000)
    digest = hmac.new(base64.b64decode(key), stamp.encode() + b"." + body, hashlib.sha256).digest()
    return {"openphone-signature": f"hmac;1;{stamp};{base64.b64encode(digest).decode()}"}


def sign_standard(
    body: bytes, secret: str, *, msg_id: str | None = None, timestamp: dt.datetime | None = None
) -> dict[str, str]:
    """The Standard Webhooks headers for ``body``, signed by ``standardwebhooks`` with
    ``secret`` (``whsec_<base64>`` or bare base64)."""
    msg_id = msg_id or "msg_" + _event_id()[2:]
    when = timestamp or dt.datetime.now(dt.UTC)
    signature = Webhook(secret).sign(msg_id, when, body.decode())
    return {
        "webhook-id": msg_id,
        "webhook-timestamp": str(int(when.timestamp())),
        "webhook-signature": signature,
    }


def new_standard_secret(seed: bytes | None = None) -> str:
    """A ``whsec_`` secret (32 bytes; from ``seed`` when given, for reproducible tests)."""
    raw = hashlib.sha256(seed).digest() if seed is not None else hashlib.sha256(str(time.time_ns()).encode()).digest()
    return "whsec_" + base64.b64encode(raw).decode()


def deliver(
    url: str,
    body: Mapping[str, object] | bytes,
    *,
    v1_key: str | None = None,
    standard_secret: str | None = None,
    headers: Mapping[str, str] | None = None,
    client: httpx.Client | None = None,
    timeout: float = 10.0,
) -> httpx.Response:
    """POST one delivery to ``url`` over real HTTP, signed with each secret given.

    ``headers`` are added last, so a test can replace or break a signature.
    Pass ``client`` to reuse connections across a burst.
    """
    raw = body_bytes(body)
    sent = {"content-type": "application/json", "user-agent": "OpenPhone-Webhooks (simulated)"}
    if v1_key is not None:
        sent.update(sign_v1(raw, v1_key))
    if standard_secret is not None:
        sent.update(sign_standard(raw, standard_secret))
    sent.update(headers or {})
    if client is not None:
        return client.post(url, content=raw, headers=sent, timeout=timeout)
    with httpx.Client() as own:
        return own.post(url, content=raw, headers=sent, timeout=timeout)


# The docs' sample names the summary event "callSummary": it goes where call.summary.completed goes.
_SUBSCRIBED_AS = {"callSummary": "call.summary.completed"}


def push(
    hooks: Mapping[str, Mapping[str, object]],
    body: Mapping[str, object],
    *,
    client: httpx.Client | None = None,
    timeout: float = 10.0,
) -> list[httpx.Response]:
    """Deliver ``body`` as OpenPhone would: to every enabled webhook in ``hooks``
    (``fake.webhooks``, created through ``POST /v1/webhooks/...``) subscribed to its
    type, each signed with that webhook's own key (v1 scheme). One response per delivery."""
    event_type = str(body.get("type"))
    wanted = _SUBSCRIBED_AS.get(event_type, event_type)
    sent = []
    for hook in list(hooks.values()):
        events = hook.get("events")
        if hook.get("status") != "enabled" or not isinstance(events, list) or wanted not in events:
            continue
        sent.append(deliver(str(hook["url"]), body, v1_key=str(hook["key"]), client=client, timeout=timeout))
    return sent
