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

Webhooks of the dated API version (created with ``POST /webhooks``, header
``Quo-Api-Version: 2026-03-30``) send another envelope,
``{id, apiVersion: "2026-03-30", createdAt, type, data: {resource, context, links}}``
(quo.com/docs/mdx/beta/webhooks-overview): the ``dated_*`` builders make those
bodies (calls, summaries, transcripts, and ``contact.updated`` / ``contact.deleted``
with the contact as ``data.resource``), and ``push`` signs each webhook's delivery in
its own scheme.

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
from collections.abc import Mapping
from typing import Literal

import httpx
from standardwebhooks import Webhook

from etl.clock import SYSTEM
from etl.testing._data import sample_summary

API_VERSION = "v4"  # as in the docs' sample payloads
DATED_API_VERSION = "2026-03-30"  # the dated webhooks' apiVersion (fixed when a webhook is created)
TRANSCRIPT_COMPLETED = "call.transcript.completed"
_event_n = itertools.count(1)


def _event_id() -> str:
    return "EV" + hashlib.blake2b(f"{SYSTEM.time():.9f}:{next(_event_n)}".encode(), digest_size=16).hexdigest()


def _now_iso() -> str:
    return SYSTEM.utcnow().replace(tzinfo=dt.UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


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


# --- the dated envelope (webhooks created with POST /webhooks) --------------------------


def dated_event(
    event_type: str,
    resource: Mapping[str, object],
    *,
    context: Mapping[str, object] | None = None,
    event_id: str | None = None,
    created_at: str | None = None,
) -> dict[str, object]:
    """A dated delivery body: ``{id, apiVersion: "2026-03-30", createdAt, type,
    data: {resource, context, links: {quo}}}``.  ``event_id`` is the event's id,
    the same across retries and payload versions (pass a legacy event's id to
    model one event sent through a legacy and a dated webhook)."""
    return {
        "id": event_id or _event_id(),
        "apiVersion": DATED_API_VERSION,
        "createdAt": created_at or _now_iso(),
        "type": event_type,
        "data": {"resource": dict(resource), "context": dict(context or {}), "links": {"quo": None}},
    }


def dated_call(call: Mapping[str, object], own_number: str | None = None) -> dict[str, object]:
    """A v1 call object (``Call.to_json()``) in the dated version's shape: ``actorId`` for
    ``userId`` and ``participants`` as ``{phoneNumber, actorId}``; ``own_number`` (the
    workspace's line) is listed first when given, as the dated version lists every party."""
    dated = {k: v for k, v in call.items() if k not in ("userId", "object", "contactIds")}
    dated["actorId"] = call.get("userId")
    numbers = call.get("participants")
    parties = [{"phoneNumber": n, "actorId": None} for n in numbers] if isinstance(numbers, list) else []
    own = [{"phoneNumber": own_number, "actorId": call.get("userId")}] if own_number else []
    dated["participants"] = [*own, *parties]
    dated.update({"callRoute": "phone-number", "aiHandled": None})
    return dated


def dated_call_completed(
    call: Mapping[str, object], *, event_id: str | None = None, created_at: str | None = None
) -> dict[str, object]:
    """Dated ``call.completed``: ``data.resource`` is the call (pass a v1 call; it is converted
    with :func:`dated_call` unless it already has ``actorId``)."""
    resource = dict(call) if "actorId" in call else dated_call(call)
    return dated_event("call.completed", resource, event_id=event_id, created_at=created_at)


def dated_summary(call_id: str, summary: Mapping[str, object] | None = None) -> dict[str, object]:
    """The dated summary object of ``call_id``: ``callId``, ``status``, ``type``, ``summary``,
    ``nextSteps``, ``jobs``, ``title``; from ``summary`` or the sample summary of ``call_id``."""
    data = dict(summary) if summary is not None else sample_summary(call_id)
    jobs = data.get("jobs")
    agent = bool(jobs)
    return {
        "callId": call_id,
        "status": data.get("status", "completed"),
        "type": ("agent" if agent else "human") if data.get("status", "completed") == "completed" else None,
        "summary": data.get("summary"),
        "nextSteps": data.get("nextSteps"),
        "jobs": jobs,
        "title": data.get("title", "Call with a customer" if agent else None),
    }


def dated_summary_completed(
    call_id: str,
    summary: Mapping[str, object] | None = None,
    *,
    event_id: str | None = None,
    created_at: str | None = None,
) -> dict[str, object]:
    """Dated ``call.summary.completed`` carrying the whole summary (:func:`dated_summary`)."""
    return dated_event("call.summary.completed", dated_summary(call_id, summary), event_id=event_id,
                       created_at=created_at)


def dated_transcript_completed(
    call_id: str, *, event_id: str | None = None, created_at: str | None = None
) -> dict[str, object]:
    """Dated ``call.transcript.completed`` for ``call_id`` (one recording segment's transcript)."""
    resource = {
        "callId": call_id,
        "recordingId": "CR" + hashlib.blake2b(call_id.encode(), digest_size=8).hexdigest(),
        "status": "completed",
        "dialogue": [{"content": "Hello!", "start": 0.0, "end": 1.2, "identifier": "+15555550100",
                      "actorId": None}],
    }
    return dated_event(TRANSCRIPT_COMPLETED, resource, event_id=event_id, created_at=created_at)


# The call of every test event's sample payload, Quo's own canonical sample id (the reference of
# POST /webhooks/{id}/events/test; docs/api/webhooks-2026-03-30.md): not a call of the workspace, so
# the simulated API answers 404 for it on every route (no summary, call or transcript is ever served
# for it), as the API does for an id that is no call.  `etl serve` records a test event and queues nothing.
SAMPLE_CALL_ID = "ACsampleactivity0000000000000000"


def dated_contact_updated(
    contact: Mapping[str, object], *, event_id: str | None = None, created_at: str | None = None
) -> dict[str, object]:
    """Dated ``contact.updated`` (a contact was created or changed): ``data.resource`` is the contact
    as ``GET /v1/contacts/{id}`` shows it (``Contact.to_json()``); contact events are workspace-wide."""
    return dated_event("contact.updated", contact, event_id=event_id, created_at=created_at)


def dated_contact_deleted(
    contact: Mapping[str, object], *, event_id: str | None = None, created_at: str | None = None
) -> dict[str, object]:
    """Dated ``contact.deleted``: the resource has the shape of ``contact.updated``'s (the contact as it was)."""
    return dated_event("contact.deleted", contact, event_id=event_id, created_at=created_at)


_SAMPLE_CONTACT: dict[str, object] = {
    "id": "CTsampleContact01234", "externalId": None, "source": "public-api", "sourceUrl": None,
    "defaultFields": {"company": "Acme Corp", "emails": [{"name": "work", "value": "sample@example.com", "id": "CE1"}],
                      "firstName": "Sample", "lastName": "Contact", "role": None,
                      "phoneNumbers": [{"name": "mobile", "value": "+15555550100", "id": "CP1"}]},
    "customFields": [], "createdAt": "2026-01-01T00:00:00Z", "updatedAt": "2026-01-01T00:00:00Z",
    "createdByUserId": None,
}


def sample_dated_event(event_type: str) -> dict[str, object]:
    """The sample body a dated webhook's test event carries (``POST /webhooks/{id}/events/test``):
    a fresh event id, Quo's fixed sample call (:data:`SAMPLE_CALL_ID`) or contact (``CTsampleContact01234``)."""
    call_id = SAMPLE_CALL_ID
    if event_type == "call.summary.completed":
        return dated_summary_completed(call_id)
    if event_type == TRANSCRIPT_COMPLETED:
        return dated_transcript_completed(call_id)
    if event_type.startswith("call."):
        return dated_event(event_type, {"id": call_id, "status": event_type.removeprefix("call.")})
    if event_type.startswith("contact."):
        return dated_event(event_type, _SAMPLE_CONTACT)
    return dated_event(event_type, {"id": "sample"})


def body_bytes(body: Mapping[str, object] | bytes) -> bytes:
    """The exact bytes to send and sign (compact JSON, UTF-8)."""
    if isinstance(body, bytes):
        return body
    return json.dumps(body, separators=(",", ":"), ensure_ascii=False).encode()


def sign_v1(body: bytes, key: str, timestamp_ms: int | None = None) -> dict[str, str]:
    """The ``openphone-signature`` header of a v1 webhook for ``body``, signed with ``key``
    (the webhook's base64 signing key); ``timestamp_ms`` defaults to now, in milliseconds."""
    stamp = str(timestamp_ms if timestamp_ms is not None else int(SYSTEM.time() * 1000))
    digest = hmac.new(base64.b64decode(key), stamp.encode() + b"." + body, hashlib.sha256).digest()
    return {"openphone-signature": f"hmac;1;{stamp};{base64.b64encode(digest).decode()}"}


def sign_standard(
    body: bytes, secret: str, *, msg_id: str | None = None, timestamp: dt.datetime | None = None
) -> dict[str, str]:
    """The Standard Webhooks headers for ``body``, signed by ``standardwebhooks`` with
    ``secret`` (``whsec_<base64>`` or bare base64)."""
    msg_id = msg_id or "msg_" + _event_id()[2:]
    when = timestamp or SYSTEM.utcnow().replace(tzinfo=dt.UTC)
    signature = Webhook(secret).sign(msg_id, when, body.decode())
    return {
        "webhook-id": msg_id,
        "webhook-timestamp": str(int(when.timestamp())),
        "webhook-signature": signature,
    }


def new_standard_secret(seed: bytes | None = None) -> str:
    """A ``whsec_`` secret (32 bytes; from ``seed`` when given, for reproducible tests)."""
    raw = hashlib.sha256(seed).digest() if seed is not None else hashlib.sha256(repr(SYSTEM.time()).encode()).digest()
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
    (``fake.webhooks``) subscribed to its type whose payload version is the body's, each
    signed with that webhook's own key: legacy webhooks (``POST /v1/webhooks/...``) get a
    legacy body signed in the v1 scheme, dated ones (``POST /webhooks``) a dated body
    (``dated_*`` builders) signed with Standard Webhooks. One response per delivery."""
    event_type = str(body.get("type"))
    wanted = _SUBSCRIBED_AS.get(event_type, event_type)
    dated_body = body.get("apiVersion") == DATED_API_VERSION
    sent = []
    for hook in list(hooks.values()):
        events = hook.get("events")
        if hook.get("status") != "enabled" or not isinstance(events, list) or wanted not in events:
            continue
        dated_hook = hook.get("apiVersion") == DATED_API_VERSION
        if dated_hook != dated_body:
            continue
        key = str(hook["key"])
        sent.append(deliver(str(hook["url"]), body, v1_key=None if dated_hook else key,
                            standard_secret=key if dated_hook else None, client=client, timeout=timeout))
    return sent
