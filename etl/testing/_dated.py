"""The simulated API's dated surface (2026-03-30): ``GET /calls`` and ``GET /calls/{id}``.

Served from the same workspace and summaries as the v1 routes
(docs/api/calls-2026-03-30.md): a call lists every party (the line's own
number with its actor, then the other parties; group calls have several),
AI-agent calls carry a system actor, ``aiHandled``, a ``phone-menu`` route
and an ``agent`` summary with a title; missed incoming calls may have a
voicemail.  Fields the client does not know are sent on purpose (the dated
API adds fields without a version bump).

Behaviour a client must cope with: the ``Quo-Api-Version`` header is required
(400 without it, checked by the routing in ``_fake``); cursors are
short-lived (older than ``cursor_ttl_seconds``, or forced with
``expire_cursors``: 400); list ``Quirks`` and ``Faults`` apply as on v1.

Summary status per call: ``pending_summaries`` first (in progress in
listings; the n-th ``GET /calls/{id}`` completes it), then a summary set with
``set_summary``, then the workspace: completed calls are completed (absent
when their summary is missing for good, in progress while
``summary_pending_seconds`` runs), calls still live are in progress, other
ended calls are absent ("never": this version's meaning).
"""

from __future__ import annotations

import base64
import datetime as dt
from urllib.parse import unquote

from etl.testing._data import CALL_ID_RE, iso, rng_for, sample_summary
from etl.testing._endpoints import BadRequest, _many, _one, _time
from etl.testing._faults import Quirks
from etl.testing._workspace import ApiClock, Call, Workspace
from etl.testing.webhooks import SAMPLE_CALL_ID

DATED_VERSION = "2026-03-30"
DATED_ENDPOINTS = ("dated-calls", "dated-call")
AGENT_ACTOR = "SYUaiagent000001"
_LIVE = frozenset({"queued", "initiated", "ringing", "in-progress", "answered"})
_INCLUDES = frozenset({"summary", "voicemail"})
_TITLES = ("Pricing enquiry", "Booking request", "After-hours message", "Order status", "Callback request")


def match_dated(method: str, path: str) -> tuple[str | None, str]:
    """(endpoint, call id) of a dated-surface request; (None, "") when it is not one."""
    if method != "GET":
        return None, ""
    parts = path.split("/")
    if parts[:2] != ["", "calls"]:
        return None, ""
    if len(parts) == 2:
        return "dated-calls", ""
    if len(parts) == 3 and parts[2]:
        return "dated-call", parts[2]
    return None, ""


class DatedEndpoints:
    """Answers of the dated routes, over the state ``FakeOpenPhone`` holds (a base of it)."""

    workspace: Workspace
    quirks: Quirks
    clock: ApiClock
    summaries: dict[str, dict[str, object]]
    default_status: str | None

    def _init_dated(self) -> None:
        # call id -> how many GET /calls/{id} still answer in-progress (listings: in progress while present).
        self.pending_summaries: dict[str, int] = {}
        # Cursors live this long (real seconds); the next ``expire_cursors`` cursors sent are refused.
        self.cursor_ttl_seconds = 120.0
        self.expire_cursors = 0
        self._cursors: dict[str, tuple[int, str, float]] = {}

    # -- answers ------------------------------------------------------------------

    def _dated_answer(self, endpoint: str, arg: str,
                      params: dict[str, list[str]]) -> tuple[int, dict[str, object] | None]:
        includes = self._includes(params)
        if endpoint == "dated-call":
            call_id = unquote(arg)
            if not CALL_ID_RE.fullmatch(call_id):
                raise BadRequest("Expected string to match '^AC(.*)$'", "/callId")
            with self.workspace.lock:
                call = self.workspace.calls.get(call_id)
            if call is None and call_id != SAMPLE_CALL_ID and (self.default_status is not None
                                                               or call_id in self.summaries):
                call = self.workspace.synth_call(call_id)
            if call is None:
                return 404, None
            remaining = self.pending_summaries.get(call_id)
            if remaining is not None:
                if remaining > 0:
                    self.pending_summaries[call_id] = remaining - 1
                else:
                    del self.pending_summaries[call_id]
            return 200, {"data": self.dated_call(call, includes)}
        return 200, self._dated_list(params, includes)

    def _includes(self, params: dict[str, list[str]]) -> frozenset[str]:
        text = _one(params, "include")
        if not text:
            return frozenset()
        wanted = frozenset(part.strip() for part in text.split(","))
        if not wanted <= _INCLUDES:
            raise BadRequest("include must be summary, voicemail or both, comma-separated", "/include")
        return wanted

    def _dated_list(self, params: dict[str, list[str]], includes: frozenset[str]) -> dict[str, object]:
        gte, lte = _time(params, "createdAt[gte]"), _time(params, "createdAt[lte]")
        line = _one(params, "phoneNumberId")
        statuses = set(_many(params, "status[in]")) | set(_many(params, "status"))
        limit, query, offset = self._window(params)
        with self.workspace.lock:
            calls = [
                c for c in self.workspace.calls.values()
                if (gte is None or c.created_at >= gte) and (lte is None or c.created_at <= lte)
                and (line is None or c.phone_number_id == line) and (not statuses or c.status in statuses)
            ]
        calls.sort(key=lambda c: (c.created_at, c.id), reverse=True)
        items: list[Call] = []
        for call in calls:
            items.append(call)
            if call.id in self.quirks.listed_twice:
                items.append(call)
        if offset < 0:  # the empty page of the empty_page quirk
            return {"data": [], "nextCursor": self._cursor(-offset, query)}
        if self.quirks.repeat_item and offset > 0:
            page, following = items[offset - 1:offset + limit - 1], offset + limit - 1
        else:
            page, following = items[offset:offset + limit], offset + limit
        data = [self.dated_call(c, includes) for c in page]
        if following >= len(items):
            return {"data": data, "nextCursor": None}
        if self.quirks.empty_page and offset == 0:
            return {"data": data, "nextCursor": self._cursor(-following, query)}
        return {"data": data, "nextCursor": self._cursor(following, query)}

    def _window(self, params: dict[str, list[str]]) -> tuple[int, str, int]:
        """A cursor page's ``limit`` (1-50), its query (what a cursor is bound to) and its offset."""
        limit_text = _one(params, "limit") or "10"
        if not limit_text.isdigit() or not 1 <= int(limit_text) <= 50:
            raise BadRequest("limit must be an integer from 1 to 50", "/limit")
        query = "&".join(f"{k}={v}" for k, v in sorted(params.items()) if k != "after")
        return int(limit_text), query, self._take_cursor(_one(params, "after"), query)

    def _cursor(self, offset: int, query: str) -> str:
        serial = len(self._cursors) + 1
        token = base64.urlsafe_b64encode(f"dc:{serial}".encode()).decode().rstrip("=")
        self._cursors[token] = (offset, query, self.clock.clock.monotonic())
        return token

    def _take_cursor(self, token: str | None, query: str) -> int:
        if token is None:
            return 0
        found = self._cursors.get(token)
        if found is None or found[1] != query:
            raise BadRequest("Invalid cursor: pass the nextCursor of the same query", "/after")
        if self.expire_cursors > 0 or self.clock.clock.monotonic() - found[2] > self.cursor_ttl_seconds:
            self.expire_cursors = max(0, self.expire_cursors - 1)
            raise BadRequest("Cursor expired: list again without after", "/after")
        return found[0]

    # -- the shapes -------------------------------------------------------------------

    def dated_call(self, call: Call, includes: frozenset[str] = _INCLUDES) -> dict[str, object]:
        """``call`` as the dated surface shows it (``includes``: summary, voicemail)."""
        line = self.workspace.phone_numbers.get(call.phone_number_id)
        actor = AGENT_ACTOR if call.ai_handled else call.user_id
        parties: list[dict[str, object]] = []
        if line is not None:
            parties.append({"phoneNumber": line.number, "actorId": actor})
        parties += [{"phoneNumber": p, "actorId": None} for p in call.participants]
        route = ("phone-menu" if call.ai_handled else "phone-number") if call.direction == "incoming" else None
        body: dict[str, object] = {
            "id": call.id,
            "phoneNumberId": call.phone_number_id,
            "actorId": actor,
            "direction": call.direction,
            "status": call.status,
            "participants": parties,
            "answeredAt": iso(call.answered_at),
            "answeredBy": AGENT_ACTOR if call.ai_handled and call.answered_at else call.answered_by,
            "initiatedBy": call.initiated_by,
            "completedAt": iso(call.completed_at),
            "createdAt": iso(call.created_at),
            "updatedAt": iso(call.updated_at),
            "callRoute": route,
            "duration": call.duration,
            "forwardedFrom": call.forwarded_from,
            "forwardedTo": call.forwarded_to,
            "aiHandled": "ai-agent" if call.ai_handled else None,
            # Not (yet) in the documented schema: the client must ignore what it does not know.
            "recordingIds": [f"CR{call.id[2:14]}"] if call.answered_at else [],
            "labels": {"source": "simulator"},
        }
        if "summary" in includes:
            body["summary"] = self.dated_summary(call)
        if "voicemail" in includes:
            voicemail = self.dated_voicemail(call)
            if voicemail is not None:
                body["voicemail"] = voicemail
        return body

    def dated_status(self, call: Call) -> str:
        if call.id in self.pending_summaries:
            return "in-progress"
        given = self.summaries.get(call.id)
        if given is not None and isinstance(given.get("status"), str):
            return str(given["status"])
        if call.id not in self.workspace.calls:  # a synthesised call: the fake's default
            return self.default_status or "absent"
        if call.status == "completed":
            if call.id in self.workspace.summary_missing:
                return "absent"
            pending = self.quirks.summary_pending_seconds
            if pending and call.completed_at and self.clock.now() < call.completed_at + dt.timedelta(seconds=pending):
                return "in-progress"
            return "completed"
        return "in-progress" if call.status in _LIVE else "absent"

    def dated_summary(self, call: Call) -> dict[str, object]:
        """The ``summary`` object of ``call`` (v1's content for the same id, plus type and title)."""
        status = self.dated_status(call)
        given = self.summaries.get(call.id)
        base = dict(given) if given is not None and given.get("status") == status else sample_summary(call.id, status)
        base.pop("callId", None)
        agent = call.ai_handled
        rng = rng_for("dated-summary", call.id)
        summary: dict[str, object] = {"status": status, "type": ("agent" if agent else "human")
                                      if status == "completed" else None}
        summary.update({k: v for k, v in base.items() if k != "status"})
        summary.setdefault("summary", None)
        summary.setdefault("nextSteps", None)
        if agent and status == "completed":
            summary["nextSteps"] = None  # agent summaries carry jobs and a title instead
            summary["title"] = rng.choice(_TITLES)
        else:
            summary["title"] = None
        summary["language"] = "en"  # a field the client does not know
        return summary

    def dated_voicemail(self, call: Call) -> dict[str, object] | None:
        if call.direction != "incoming" or call.status not in ("missed", "no-answer"):
            return None
        rng = rng_for("voicemail", call.id)
        if rng.random() < 0.5:
            return None
        return {
            "id": f"VM{call.id[2:34]}",
            "status": "completed",
            "duration": rng.randint(5, 90),
            "recordingUrl": f"https://storage.example.com/voicemails/{call.id}.mp3",
            "transcript": rng.choice(("Hi, please call me back.", "C'est Zoë — rappelle-moi 👍", "")),
        }


__all__ = ["AGENT_ACTOR", "DATED_ENDPOINTS", "DATED_VERSION", "DatedEndpoints", "match_dated"]
