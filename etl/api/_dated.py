"""The dated surface, 2026-03-30 (header ``Quo-Api-Version``, paths without ``/v1``; docs/api/calls-2026-03-30.md).

Its summary comes inside its call (``GET /calls/{id}?include=summary``), and
there ``absent`` means never; its lists page with ``after``/``nextCursor``;
``GET /calls`` lists the whole workspace; one webhook carries every event, in
the dated envelope (``data.resource``, Standard Webhooks signatures).
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Sequence
from dataclasses import replace
from datetime import datetime
from typing import Any

from etl.api._dimensions import contacts_page, lines_page, listing, not_listable, users_page
from etl.api._http import Parse, Transient, api_time, whole
from etl.api._paging import CursorPages, PagingError
from etl.api._surface import (
    Sender,
    Surface,
    WebhookSpec,
    about_call,
    as_float,
    dialogue,
    jobs_of,
    json_hash,
    naive_utc,
)
from etl.config import DATED_API_VERSION
from etl.dimensions import Contact, Line, Listing, User
from etl.ratelimit import NotSent
from etl.results import (
    ApiResult,
    Call,
    Kind,
    Page,
    Party,
    Summary,
    SummaryAnswer,
    Transcript,
    TranscriptSegment,
    Voicemail,
)
from etl.schema import DatedCall, DatedCallEnvelope, DatedCallList, DatedSummary, TranscriptPage
from etl.storable import Malformed, json_text

_CALL_INCLUDE = "summary,voicemail"
_MAX_TRANSCRIPT_PAGES = 100
_LIMIT = 50  # every dated list takes limit 1..50


def _compact(raw: Any) -> str:
    """A JSON object as stored in ``raw_json``: compact, non-ASCII kept as is where storable
    (:func:`etl.storable.json_text`: a lone surrogate stays an escape)."""
    return json_text(raw)


def summary_of(data: DatedSummary, call_id: str) -> Summary:
    return Summary(
        call_id=call_id, status=data.status,
        lines=None if data.summary is None else tuple(data.summary),
        next_steps=None if data.nextSteps is None else tuple(data.nextSteps),
        jobs=jobs_of(data.jobs),
        type=data.type, title=data.title)


def call_of(data: DatedCall) -> Call:
    """A dated call as the canonical :class:`Call`: every party with its actor; the user is the actor when
    it is a user (US…), not a system actor such as the AI agent."""
    parties = data.participants
    # The API marks the workspace's side with its actor (a user, or a system actor such as the
    # AI agent); the other parties have none.  A number seen with an actor anywhere in the call is
    # the workspace's own.
    own = {p.phoneNumber for p in parties or () if p.actorId is not None}
    vm = data.voicemail
    actor = data.actorId
    return Call(
        id=data.id, created_at=data.createdAt, answered_at=data.answeredAt, completed_at=data.completedAt,
        updated_at=data.updatedAt, direction=data.direction, status=data.status, duration=data.duration,
        phone_number_id=data.phoneNumberId, user_id=actor if actor is not None and actor.startswith("US") else None,
        answered_by=data.answeredBy, initiated_by=data.initiatedBy, forwarded_from=data.forwardedFrom,
        forwarded_to=data.forwardedTo, actor_id=actor, call_route=data.callRoute, ai_handled=data.aiHandled,
        participants=None if parties is None else tuple(
            Party(number=p.phoneNumber, actor_id=p.actorId, is_own=p.phoneNumber in own) for p in parties),
        voicemail=None if vm is None else Voicemail(id=vm.id, status=vm.status, duration=vm.duration,
                                                    recording_url=vm.recordingUrl, transcript=vm.transcript))


def dated_answer(call: DatedCall, raw_call: Any) -> SummaryAnswer:
    """A dated call's summary as a :class:`SummaryAnswer` (``raw_call``: the call object's JSON).

    ``raw_json`` is the ``summary`` object as received; the call's own JSON
    leaves the summary out, so a summary that moves from in-progress to
    completed does not rewrite its call.  Used for the answer of
    ``GET /calls/{id}`` and for each call of a ``GET /calls`` page alike.
    """
    assert call.summary is not None
    summary_json = _compact(raw_call.get("summary"))
    return SummaryAnswer(
        call_id=call.id, summary=summary_of(call.summary, call.id), raw_json=summary_json,
        content_hash=hashlib.sha256(summary_json.encode("utf-8", "surrogatepass")).hexdigest(),
        call=call_of(call), call_json=_compact({k: v for k, v in raw_call.items() if k != "summary"}),
        absent_is_final=True,
    )


def _cursor(page: Any) -> str | None:
    return getattr(page, "nextCursor", None) or None


# An ``apiVersion`` that names a date: the dated envelope.
_DATE = re.compile(r"\d{4}-\d{2}-\d{2}")
_SUMMARY_FIELDS = ("status", "type", "summary", "nextSteps", "jobs", "title")


def is_dated_version(version: str) -> bool:
    return _DATE.fullmatch(version) is not None


def _whole_summary(resource: dict[str, Any], call_id: str) -> dict[str, Any] | None:
    """The dated summary object a delivery carries, with ``callId`` set; None if it carries none.

    Either the resource is the summary (``status`` …) or a call with the summary under
    ``summary`` (as ``GET /calls/{id}?include=summary`` nests it).  ``summary`` and
    ``nextSteps`` are ``string[] | null`` in the dated version; missing means null.
    """
    nested = resource.get("summary")
    source = nested if isinstance(nested, dict) else resource
    if not isinstance(source.get("status"), str):
        return None
    summary = {name: source[name] for name in _SUMMARY_FIELDS if name in source}
    summary.setdefault("summary", None)
    summary.setdefault("nextSteps", None)
    summary["callId"] = call_id
    return summary


def dated_call_as_v1(call: dict[str, Any]) -> dict[str, Any]:
    """A dated call object in the shape a webhook's call row is read in (``etl.schema.CallData``).

    The dated version names the user ``actorId`` (v1 ``userId``) and lists
    participants as ``{phoneNumber, actorId}`` objects (v1: numbers); the other
    fields keep their names.  Anything unexpected is left as it is, for the
    validation to refuse (the id is queued regardless).
    """
    adapted = dict(call)
    if "userId" not in adapted and "actorId" in adapted:
        adapted["userId"] = adapted["actorId"]
    participants = call.get("participants")
    if isinstance(participants, list) and all(isinstance(p, dict) for p in participants):
        # A party without a number (an internal leg) has nothing for call_participants.
        adapted["participants"] = [p.get("phoneNumber") for p in participants if p.get("phoneNumber") is not None]
    return adapted


class Dated(Surface):
    version = DATED_API_VERSION
    headers = (("Quo-Api-Version", DATED_API_VERSION),)
    discovery = "workspace"
    call_in_summary = True
    envelope = "dated"

    def summary_route(self, call_id: str) -> tuple[str, dict[str, Any]]:
        return "/calls/" + call_id, {"include": _CALL_INCLUDE}

    def read_summary(self, call_id: str) -> Parse[SummaryAnswer]:
        def read(raw: Any) -> tuple[str, DatedCall, Any]:
            call = DatedCallEnvelope.model_validate(raw).data
            return call.id, call, raw

        checked = about_call(call_id, read)

        def parse(body: bytes) -> tuple[SummaryAnswer, Any]:
            call, raw = checked(body)
            if call.summary is None:
                raise Transient("200 without the summary that include=summary asks for", 200)
            return dated_answer(call, raw["data"]), raw

        return parse

    def call_route(self, call_id: str) -> tuple[str, dict[str, Any]]:
        return "/calls/" + call_id, {"include": _CALL_INCLUDE}

    def call_in_answer(self, raw: Any) -> Call:
        return call_of(DatedCallEnvelope.model_validate(raw).data)

    def transcript(self, sender: Sender, call_id: str, *, max_wait: float | None,
                   page_size: int) -> ApiResult[Transcript]:
        """``GET /calls/{callId}/transcripts``, every page (``limit`` ≤ 50, cursor ``after``).

        One transcript per recording segment, oldest first.  A later page that
        answers 400/404 (its short-lived cursor expired) makes the whole answer
        transient: the call's pages are asked again on the next attempt.
        """
        what = f"GET /calls/{call_id[:80]}/transcripts"
        started = sender.monotonic()
        give_up_at = None if max_wait is None else started + max_wait
        segments: list[TranscriptSegment] = []
        raws: list[Any] = []
        tries = 0
        wait_ms = 0.0  # the pages' waits for the rate budget, apart from the API's latency

        def answer(kind: Kind, http_status: int | None, **extra: Any) -> ApiResult[Transcript]:
            latency = round(max(0.0, (sender.monotonic() - started) * 1000 - wait_ms), 1)
            return ApiResult(what=what, kind=kind, http_status=http_status, tries=tries, latency_ms=latency,
                             wait_ms=round(wait_ms, 1), **extra)

        def parse(body: bytes) -> tuple[Page[TranscriptSegment], Any]:
            raw = json.loads(body)
            page = TranscriptPage.model_validate(raw)
            items = tuple(TranscriptSegment(s.recordingId, s.status, naive_utc(s.startTime), naive_utc(s.createdAt),
                                            as_float(s.duration), dialogue(s.dialogue)) for s in page.data)
            return Page(items, tuple(raw.get("data", [])), page.nextCursor or None), raw

        def fetch(params: dict[str, Any]) -> ApiResult[Page[TranscriptSegment]]:
            nonlocal tries, wait_ms
            left = None if give_up_at is None else max(0.0, give_up_at - sender.monotonic())
            page = sender.get(f"/calls/{call_id}/transcripts", {"limit": max(1, min(page_size, _LIMIT)), **params},
                              parse, surface=self, max_wait=left)
            tries += page.tries
            wait_ms += page.wait_ms
            return page

        try:
            for result, _last in CursorPages(fetch, "transcripts", max_pages=_MAX_TRANSCRIPT_PAGES):
                assert result.data is not None
                segments.extend(result.data.items)
                raws.extend(result.data.raws)
        except NotSent:
            if not raws and not segments and tries == 0:
                raise
            return answer("transient", None, error="stopped before the last page of transcripts")
        except PagingError as exc:
            failed = exc.result
            if failed is None:
                return answer("rejected", 200, error=exc.message)
            kind: Kind = failed.kind if exc.pages == 0 else "transient"
            return answer(kind, failed.http_status, error=failed.error, retry_after=failed.retry_after)
        segments.sort(key=lambda s: (s.started_at is None, s.started_at or datetime.min))
        return answer("ok", 200, data=Transcript(call_id, tuple(segments), json_hash(raws)), raw=raws)

    # --- the workspace listing (discovery) -------------------------------------------------
    def workspace_call_page(self, sender: Sender, *, created_gte: datetime, created_lte: datetime | None,
                            phone_number_id: str | None, params: dict[str, Any],
                            limit: int) -> ApiResult[Page[SummaryAnswer | Call | Malformed]]:
        """One page of ``GET /calls``: every call of the workspace, newest first, each with its summary and
        voicemail (``include``); bounds are inclusive.  An item is a :class:`SummaryAnswer` (its call inside)
        when the call came with a summary object, else a :class:`Call`; a call its model refused stays a
        :class:`~etl.storable.Malformed` in its place (discovery keeps it aside, issue 25)."""
        query: dict[str, Any] = {"createdAt[gte]": api_time(created_gte), "include": _CALL_INCLUDE, "limit": limit}
        if created_lte is not None:
            query["createdAt[lte]"] = api_time(created_lte)
        if phone_number_id:
            query["phoneNumberId"] = phone_number_id
        query.update(params)

        def parse(body: bytes) -> tuple[Page[SummaryAnswer | Call | Malformed], Any]:
            page, raw = whole(DatedCallList)(body)
            raws = raw.get("data") if isinstance(raw, dict) else None
            items: list[SummaryAnswer | Call | Malformed] = [
                c if isinstance(c, Malformed) else dated_answer(c, r) if c.summary is not None else call_of(c)
                for c, r in zip(page.data, raws or [], strict=False)]
            return Page(tuple(items), tuple(raws or ()), page.nextCursor or None), raw

        return sender.get("/calls", query, parse, surface=self)

    # --- users, lines, contacts ---------------------------------------------------------------
    def list_users(self, sender: Sender) -> Listing[User]:
        return listing(CursorPages(lambda p: sender.get("/users", {"limit": _LIMIT, **p}, users_page(_cursor),
                                                        surface=self), "users"), "GET /users")

    def list_lines(self, sender: Sender) -> Listing[Line]:
        """``GET /phone-numbers?include=users``: each number with its members."""
        return listing(CursorPages(
            lambda p: sender.get("/phone-numbers", {"limit": _LIMIT, "include": "users", **p}, lines_page(_cursor),
                                 surface=self), "phone numbers"), "GET /phone-numbers")

    def list_contacts(self, sender: Sender, updated_since: datetime | None) -> Listing[Contact]:
        """``GET /contacts`` (docs/api/dimensions.md), cursor pages of 50.  No "updated since" filter is
        documented: always the whole set.

        The 2026-03-30 reference lists contacts as "in development": where ``GET /contacts`` answers
        404 on its first page, the contacts are listed from the route that lists them, ``GET
        /v1/contacts`` (the same key; one request more than the v1 listing, once a refresh).
        """
        first: list[str] = []

        def page(params: dict[str, Any]) -> Any:
            result = sender.get("/contacts", {"limit": _LIMIT, **params}, contacts_page(_cursor), surface=self)
            if not first:
                first.append(result.kind)
            return result

        found = listing(CursorPages(page, "contacts"), "GET /contacts")
        if first == ["not_found"] and not found.items and not found.rejected:
            from etl.api._v1 import V1  # the surface that lists contacts today

            on_v1 = V1().list_contacts(sender, updated_since)
            return replace(on_v1, requests=found.requests + on_v1.requests)
        if found.problem is not None:
            return not_listable(found)
        return found

    # --- webhooks ---------------------------------------------------------------------------
    def webhook_path(self, path: str) -> str:
        return path

    def webhook_specs(self, events: Sequence[str]) -> tuple[WebhookSpec, ...]:
        return (WebhookSpec("/webhooks", tuple(events)),)

    def webhook_body(self, spec: WebhookSpec, url: str, label: str | None) -> dict[str, Any]:
        body: dict[str, Any] = {"url": url, "events": list(spec.events), "resourceIds": ["*"]}
        if label:
            body["label"] = label
        return body

    def test_event_path(self, webhook_id: str) -> str:
        return f"/webhooks/{webhook_id}/events/test"

    def event_object(self, data: dict[str, Any]) -> dict[str, Any]:
        """The dated envelope: the object under ``data.resource``."""
        obj = data.get("resource")
        return obj if isinstance(obj, dict) else {}

    def event_call(self, obj: dict[str, Any]) -> dict[str, Any]:
        return dated_call_as_v1(obj)

    def event_summary(self, obj: dict[str, Any], call_id: str) -> dict[str, Any] | None:
        return _whole_summary(obj, call_id)
