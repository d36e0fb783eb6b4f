"""The v1 surface (``/v1/…`` paths, no version header; docs/api/call-summaries.md, docs/api/more-endpoints.md).

Its summary is a resource of its own (``GET /v1/call-summaries/{id}``) whose
``absent`` means "not yet"; its call is another request; its lists page with
``pageToken``/``nextPageToken``; discovery walks lines -> conversations ->
calls; it has one legacy webhook per resource, delivered in the legacy
envelope (``data.object``).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from pydantic import ValidationError

from etl.api._dimensions import contacts_page, lines_page, listing, not_listable, users_page
from etl.api._http import Parse, Transient, api_time
from etl.api._paging import TokenPages
from etl.api._surface import (
    Sender,
    Surface,
    WebhookSpec,
    about_call,
    as_float,
    dialogue,
    items_of,
    jobs_of,
    json_hash,
    naive_utc,
)
from etl.dimensions import Contact, Line, Listing, User
from etl.results import (
    V1_SEGMENT_ID,
    ApiResult,
    Call,
    Conversation,
    Page,
    Party,
    Summary,
    SummaryAnswer,
    Transcript,
    TranscriptSegment,
)
from etl.schema import (
    CallData,
    CallEnvelope,
    CallList,
    ConversationList,
    SummaryData,
    SummaryEnvelope,
    TranscriptV1Envelope,
)
from etl.storable import Malformed

# The legacy webhooks: one per resource, each with its events.
_RESOURCES = (("calls", ("call.completed",)), ("call-summaries", ("call.summary.completed",)))
_CONTACT_PAGE = 50  # GET /v1/contacts takes maxResults 1..50


def summary_of(data: SummaryData) -> Summary:
    """A v1 summary (or one a webhook carries in that shape) as the canonical :class:`Summary`."""
    return Summary(
        call_id=data.callId, status=data.status,
        lines=None if data.summary is None else tuple(data.summary),
        next_steps=None if data.nextSteps is None else tuple(data.nextSteps),
        jobs=jobs_of(data.jobs))


def call_of(data: CallData) -> Call:
    """A v1 call object as the canonical :class:`Call` (v1 lists the other parties, numbers only)."""
    return Call(
        id=data.id, created_at=data.createdAt, answered_at=data.answeredAt, completed_at=data.completedAt,
        updated_at=data.updatedAt, direction=data.direction, status=data.status, duration=data.duration,
        phone_number_id=data.phoneNumberId, user_id=data.userId, answered_by=data.answeredBy,
        initiated_by=data.initiatedBy, forwarded_from=data.forwardedFrom, forwarded_to=data.forwardedTo,
        participants=None if data.participants is None else tuple(Party(number=n) for n in data.participants))


def _validate(body: bytes) -> SummaryData:
    """Validate a 200 body against the published schema.

    pydantic's fast JSON parser refuses lone surrogate escapes (``"\\ud800"``)
    that the JSON grammar allows; such a body is parsed by the standard library
    instead and validated by the same strict models (normalisation then stores
    U+FFFD for the surrogate, raw_json keeps the escape).
    """
    try:
        return SummaryEnvelope.model_validate_json(body).data
    except ValidationError as exc:
        if not any(e["type"] == "json_invalid" for e in exc.errors()):
            raise
        try:
            parsed = json.loads(body)
        except ValueError:
            raise exc from None
        return SummaryEnvelope.model_validate(parsed).data


def _token(page: Any) -> str | None:
    return getattr(page, "nextPageToken", None) or None


class V1(Surface):
    version = "v1"
    headers = ()
    discovery = "lines"
    call_in_summary = False
    envelope = "legacy"

    def summary_route(self, call_id: str) -> tuple[str, dict[str, Any]]:
        return "/v1/call-summaries/" + call_id, {}

    def read_summary(self, call_id: str) -> Parse[SummaryAnswer]:
        def parse(body: bytes) -> tuple[SummaryAnswer, Any]:
            raw = body.decode("utf-8")
            data = _validate(body)
            if data.callId != call_id:
                raise Transient(f"200 for another call id ({data.callId[:80]!r})", 200)
            return SummaryAnswer(call_id=call_id, summary=summary_of(data), raw_json=raw,
                                 content_hash=hashlib.sha256(body).hexdigest()), None

        return parse

    def call_route(self, call_id: str) -> tuple[str, dict[str, Any]]:
        return "/v1/calls/" + call_id, {}

    def call_in_answer(self, raw: Any) -> Call:
        return call_of(CallEnvelope.model_validate(raw).data)

    def transcript(self, sender: Sender, call_id: str, *, max_wait: float | None,
                   page_size: int) -> ApiResult[Transcript]:
        """``GET /v1/call-transcripts/{id}``: one merged transcript (segment ``merged``)."""
        def read(parsed: Any) -> tuple[str, Transcript, Any]:
            data = TranscriptV1Envelope.model_validate(parsed).data
            raw = parsed["data"]
            segment = TranscriptSegment(V1_SEGMENT_ID, data.status, None, naive_utc(data.createdAt),
                                        as_float(data.duration), dialogue(data.dialogue))
            return data.callId, Transcript(call_id, (segment,), json_hash(raw)), raw

        return sender.get("/v1/call-transcripts/" + call_id, {}, about_call(call_id, read), surface=self,
                          max_wait=max_wait)

    # --- the lines walk (discovery) ---------------------------------------------------------
    def line_page(self, sender: Sender, params: dict[str, Any]) -> ApiResult[Page[Line | Malformed]]:
        """``GET /v1/phone-numbers``: the workspace's lines (the docs show no paging; a token is followed)."""
        return sender.get("/v1/phone-numbers", params, lines_page(_token), surface=self)

    def conversation_page(self, sender: Sender, line_id: str, updated_after: datetime | None,
                          params: dict[str, Any], max_results: int) -> ApiResult[Page[Conversation]]:
        """One page of ``GET /v1/conversations`` for one line, updated after ``updated_after``."""
        query: dict[str, Any] = {"phoneNumbers[]": line_id, "maxResults": max_results}
        if updated_after is not None:
            query["updatedAfter"] = api_time(updated_after)
        query.update(params)

        def parse(body: bytes) -> tuple[Page[Conversation], Any]:
            raw = json.loads(body)
            page = ConversationList.model_validate(raw)
            items = tuple(Conversation(id=c.id, participants=tuple(c.participants)) for c in page.data)
            return Page(items, tuple(items_of(raw)), page.nextPageToken or None), raw

        return sender.get("/v1/conversations", query, parse, surface=self)

    def line_call_page(self, sender: Sender, line_id: str, participant: str, created_after: datetime | None,
                       params: dict[str, Any], max_results: int) -> ApiResult[Page[Call | Malformed]]:
        """One page of ``GET /v1/calls`` for one line and one participant (one-to-one conversations);
        ``totalItems`` is documented as inaccurate and ignored."""
        query: dict[str, Any] = {"phoneNumberId": line_id, "participants[]": participant, "maxResults": max_results}
        if created_after is not None:
            query["createdAfter"] = api_time(created_after)
        query.update(params)

        def parse(body: bytes) -> tuple[Page[Call | Malformed], Any]:
            raw = json.loads(body)
            page = CallList.model_validate(raw)
            # A call its model refused stays a Malformed in its place: discovery keeps it aside (issue 25).
            items = tuple(c if isinstance(c, Malformed) else call_of(c) for c in page.data)
            return Page(items, tuple(items_of(raw)), page.nextPageToken or None), raw

        return sender.get("/v1/calls", query, parse, surface=self)

    # --- users, lines, contacts ---------------------------------------------------------------
    def list_users(self, sender: Sender) -> Listing[User]:
        return listing(TokenPages(lambda p: sender.get("/v1/users", {"maxResults": 50, **p}, users_page(_token),
                                                       surface=self), "users"), "GET /v1/users")

    def list_lines(self, sender: Sender) -> Listing[Line]:
        """``GET /v1/phone-numbers``: each number carries its ``users[]``."""
        return listing(TokenPages(lambda p: self.line_page(sender, p), "phone numbers"), "GET /v1/phone-numbers")

    def list_contacts(self, sender: Sender, updated_since: datetime | None) -> Listing[Contact]:
        """``GET /v1/contacts`` in pages of 50.  v1 has no "updated since" filter: always the whole set.

        A workspace where the list is refused (400 naming ``externalIds``: an older API that requires
        them) cannot list contacts: the listing says so and is not complete.
        """
        found = listing(TokenPages(
            lambda p: sender.get("/v1/contacts", {"maxResults": _CONTACT_PAGE, **p}, contacts_page(_token),
                                 surface=self), "contacts"), "GET /v1/contacts")
        if found.problem is not None and "externalIds" in found.problem:
            return not_listable(found)
        return found

    # --- webhooks ---------------------------------------------------------------------------
    def webhook_path(self, path: str) -> str:
        return "/v1" + path

    def webhook_specs(self, events: Sequence[str]) -> tuple[WebhookSpec, ...]:
        return tuple(WebhookSpec(f"/webhooks/{resource}", wanted) for resource, wanted in _RESOURCES
                     if set(wanted) <= set(events))

    def webhook_body(self, spec: WebhookSpec, url: str, label: str | None) -> dict[str, Any]:
        body: dict[str, Any] = {"url": url, "events": list(spec.events), "resourceIds": ["*"], "status": "enabled"}
        if label:
            body["label"] = label
        return body

    def event_object(self, data: dict[str, Any]) -> dict[str, Any]:
        """The legacy envelope: the object under ``data.object`` (or ``data.resource``)."""
        obj = data.get("object", data.get("resource"))
        return obj if isinstance(obj, dict) else {}

    def event_call(self, obj: dict[str, Any]) -> dict[str, Any]:
        return obj

    def event_summary(self, obj: dict[str, Any], call_id: str) -> dict[str, Any] | None:
        """A legacy summary event is only a signal: the summary is fetched."""
        return None
