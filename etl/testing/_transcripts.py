"""Call transcripts of the simulated API, on both surfaces (issue 19).

``TranscriptEndpoints`` (a base of ``FakeOpenPhone``) answers

* v1 ``GET /v1/call-transcripts/{id}``: one merged transcript, offsets in
  seconds from the call's start (``createdAt``);
* 2026-03-30 ``GET /calls/{callId}/transcripts``: pages (``limit`` 1-50,
  cursor ``after``/``nextCursor``) of one transcript per recording segment,
  oldest first, offsets from the segment's own ``startTime``.

Both are drawn from the same segments, deterministic from the call id: a
completed call of the workspace (or, with ``default_status``, any call id) has
1-3 segments of dialogue between its user and the other party, with the
variety a loader must cope with (Unicode, emoji, a NUL); the
v1 transcript is the same lines with ``startTime - createdAt`` added.  A call
that is not completed has an ``absent`` transcript (v1) or no segment (dated).
``transcripts_enabled = False`` answers 403 on both routes (a plan without
transcripts); ``transcript_status[call_id]`` overrides a call's status
(``absent``, ``in-progress``, ``failed``, ``completed``, or ``missing``: 404).
Auth, the rate limit, faults and counting stay with the routing in ``_fake``.
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
from urllib.parse import unquote

from etl.testing._data import CALL_ID_RE, iso, rng_for
from etl.testing._endpoints import BadRequest
from etl.testing._workspace import Call, Workspace
from etl.testing.webhooks import SAMPLE_CALL_ID

# Endpoint names (statistics, Faults.endpoints).
V1_TRANSCRIPTS = "call-transcripts"
DATED_TRANSCRIPTS = "transcripts"
TRANSCRIPT_ENDPOINTS = (V1_TRANSCRIPTS, DATED_TRANSCRIPTS)
MISSING = "missing"  # a transcript_status that answers 404

_PHRASES = (
    "Hi, thanks for calling, how can I help?",
    "I'm calling about the invoice from March.",
    "Sure, let me pull that up for you.",
    "We compared you with Acme and one other vendor.",
    "Zoë from finance asked me to call 👍",
    "Can you send the pricing sheet by email?",
    "José will sign the contract on Friday.",
    "The export fails on large workspaces.",
    "Great, I'll schedule a follow-up next week.",
    "Thanks, bye!",
    "Null in the middle: a\x00b",
)


class TranscriptEndpoints:
    """Answers of the transcript routes, over the workspace ``FakeOpenPhone`` holds."""

    workspace: Workspace
    default_status: str | None
    transcripts_enabled: bool
    transcript_status: dict[str, str]

    def _init_transcripts(self) -> None:
        self.transcripts_enabled = True
        self.transcript_status = {}

    # -- what the API holds --------------------------------------------------

    def transcript_call(self, call_id: str) -> Call | None:
        """The call a transcript belongs to (a synthesised one with ``default_status``), or None: 404."""
        with self.workspace.lock:
            call = self.workspace.calls.get(call_id)
        if call is None and self.default_status is not None and call_id != SAMPLE_CALL_ID:
            call = self.workspace.synth_call(call_id)
        return call

    def transcript_segments(self, call_id: str) -> list[dict[str, object]] | None:
        """The dated surface's segments of the call (oldest first), or None: the call is unknown (404)."""
        status = self.transcript_status.get(call_id)
        if status == MISSING:
            return None
        call = self.transcript_call(call_id)
        if call is None:
            return None
        if status is None:
            status = "completed" if call.status == "completed" else "absent"
        if status == "absent":
            return []
        return _segments(call, status)

    def transcript_v1(self, call_id: str) -> dict[str, object] | None:
        """The v1 ``data`` of the call's transcript (one merged dialogue), or None: 404."""
        segments = self.transcript_segments(call_id)
        if segments is None:
            return None
        call = self.transcript_call(call_id)
        assert call is not None
        if not segments:
            return {"callId": call_id, "createdAt": iso(call.completed_at), "dialogue": None, "duration": 0,
                    "status": "absent"}
        dialogue: list[dict[str, object]] = []
        for segment in segments:
            start = dt.datetime.fromisoformat(str(segment["startTime"]).replace("Z", "+00:00"))
            offset = (start - call.created_at).total_seconds()
            for line in segment["dialogue"] or []:  # type: ignore[attr-defined]
                merged = {k: v for k, v in line.items() if k != "actorId"}
                merged["userId"] = line["actorId"]
                merged["start"] = offset + line["start"]
                merged["end"] = offset + line["end"]
                dialogue.append(merged)
        status = str(segments[0]["status"])
        return {"callId": call_id, "createdAt": segments[-1]["createdAt"],
                "dialogue": dialogue if status == "completed" else None,
                "duration": sum(float(str(s["duration"])) for s in segments),
                "status": status}

    # -- answers ---------------------------------------------------------------

    def _transcript_answer(self, endpoint: str, arg: str,
                           params: dict[str, list[str]]) -> tuple[int, dict[str, object] | None]:
        call_id = unquote(arg)
        if not CALL_ID_RE.fullmatch(call_id):
            raise BadRequest("Invalid call id", "/callId")
        if not self.transcripts_enabled:
            return 403, None
        if endpoint == V1_TRANSCRIPTS:
            data = self.transcript_v1(call_id)
            return (404, None) if data is None else (200, {"data": data})
        segments = self.transcript_segments(call_id)
        if segments is None:
            return 404, None
        limit = _limit(params)
        after = params.get("after", [None])[0]
        offset = _decode_cursor(after) if after else 0
        page = segments[offset:offset + limit]
        following = offset + limit
        cursor = _encode_cursor(call_id, following) if following < len(segments) else None
        return 200, {"data": page, "nextCursor": cursor}


def match_transcripts(method: str, path: str) -> tuple[str, str] | None:
    """(endpoint, call id) of a transcript route, or None."""
    if method != "GET":
        return None
    parts = path.split("/")
    if len(parts) == 4 and parts[:3] == ["", "v1", "call-transcripts"] and parts[3]:
        return V1_TRANSCRIPTS, parts[3]
    if len(parts) == 4 and parts[1] == "calls" and parts[2] and parts[3] == "transcripts":
        return DATED_TRANSCRIPTS, parts[2]
    return None


def _segments(call: Call, status: str) -> list[dict[str, object]]:
    rng = rng_for("transcript", call.id)
    answered = call.answered_at or call.created_at + dt.timedelta(seconds=10)
    user = call.user_id
    other = call.participants[0] if call.participants else "+15550009999"
    own = "+15550000001"
    segments: list[dict[str, object]] = []
    start = answered
    for n in range(rng.randint(1, 3)):
        lines: list[dict[str, object]] = []
        t = round(rng.uniform(0.0, 2.0), 3)
        for _ in range(rng.randint(2, 6)):
            speaker_is_user = rng.random() < 0.5
            length = round(rng.uniform(1.0, 20.0), 3)
            lines.append({
                "content": rng.choice(_PHRASES),
                "start": t,
                "end": round(t + length, 3),
                "identifier": own if speaker_is_user else other,
                "actorId": user if speaker_is_user else None,
            })
            t = round(t + length + rng.uniform(0.0, 3.0), 3)
        segments.append({
            "recordingId": f"CR{call.id[2:12]}{n}",
            "status": status,
            "startTime": iso(start),
            "createdAt": iso(start + dt.timedelta(seconds=int(t) + 60)),
            "duration": round(t, 3),
            "dialogue": lines if status == "completed" else None,
            # Not in the schema: clients must ignore fields they do not know.
            "language": "en",
        })
        start = start + dt.timedelta(seconds=int(t) + rng.randint(5, 60))  # paused, then resumed
    return segments


def _limit(params: dict[str, list[str]]) -> int:
    text = params.get("limit", ["10"])[0]
    if not text.isdigit() or not 1 <= int(text) <= 50:
        raise BadRequest("limit must be an integer from 1 to 50", "/limit")
    return int(text)


def _encode_cursor(call_id: str, offset: int) -> str:
    return base64.urlsafe_b64encode(f"tr:{call_id}:{offset}".encode()).decode()


def _decode_cursor(cursor: str) -> int:
    try:
        prefix, _call, offset = base64.urlsafe_b64decode(cursor.encode()).decode().split(":")
        if prefix != "tr" or not offset.isdigit():
            raise ValueError(cursor)
    except (ValueError, binascii.Error, UnicodeDecodeError) as exc:
        raise BadRequest("Invalid cursor", "/after") from exc
    return int(offset)
