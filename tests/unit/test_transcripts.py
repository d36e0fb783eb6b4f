"""Transcripts, the pure parts and the client (issue 19).

* ``decide_transcript``: every row of docs/contract.md's transcript states at a fixed "now";
* ``normalize_transcript``: offsets from the call's start on both surfaces, text cleaning, the hash;
* the client's v1 and dated requests against the simulated API (paths, headers, pages, a 403 that is
  the plan's answer, a 401 that still ends the run, a cursor that expired between pages).
"""

from __future__ import annotations

import random
from datetime import datetime, timedelta
from typing import Any

import httpx
import pytest

from etl.api import ApiResult, OpenPhoneClient
from etl.clock import SYSTEM
from etl.config import Backoff, Settings
from etl.errors import AuthError
from etl.normalize import REPLACEMENT, normalize_transcript
from etl.policy import ClaimedItem, decide_transcript
from etl.results import V1_SEGMENT_ID, DialogueLine, Transcript, TranscriptSegment
from etl.testing import FakeOpenPhone

NOW = datetime(2026, 3, 1, 12, 0, 0)
CALL = "ACtranscript1"
KEY = "test-key-0123456789"
BACKOFF = Backoff()


def item(**changes: Any) -> ClaimedItem:
    base = ClaimedItem(call_id=CALL, attempts=0, consecutive_errors=0, incomplete_since=None,
                       next_attempt_at=NOW - timedelta(minutes=5), enqueued_at=NOW - timedelta(hours=1),
                       queue="transcript")
    return ClaimedItem(**{**{f: getattr(base, f) for f in base.__dataclass_fields__}, **changes})


def segment(status: str = "completed", segment_id: str = V1_SEGMENT_ID, started: datetime | None = None,
            lines: tuple[DialogueLine, ...] | None = ()) -> TranscriptSegment:
    return TranscriptSegment(segment_id, status, started, NOW, 12.5, lines)


def ok(*segments: TranscriptSegment) -> ApiResult[Transcript]:
    return ApiResult(what="GET", kind="ok", http_status=200, tries=1, latency_ms=3.0,
                     data=Transcript(CALL, segments, "h" * 64))


def failed(kind: Any, status: int | None, error: str = "boom", retry_after: float | None = None) -> ApiResult[Any]:
    return ApiResult(what="GET", kind=kind, http_status=status, tries=1, latency_ms=3.0, error=error,
                     retry_after=retry_after)


# --- decide_transcript ---------------------------------------------------------------


@pytest.mark.parametrize(("statuses", "state", "outcome"), [
    (("completed",), "done", "completed"),
    (("completed", "failed"), "done", "completed"),  # a failed segment next to a completed one
    (("failed",), "failed", "failed"),
    (("absent",), "absent", "failed"),  # final at once: no transcript will exist
    ((), "absent", "failed"),  # the dated surface's empty list
])
def test_answers_that_end_the_item(statuses, state, outcome):
    update = decide_transcript(item(), ok(*(segment(s) for s in statuses)), NOW, BACKOFF)
    assert (update.state, update.outcome, update.attempts, update.finished_at) == (state, outcome, 1, NOW)
    assert update.last_api_status == (statuses[0] if statuses else "absent")


def test_in_progress_is_retried_as_a_summary_is_then_given_up_after_48_hours():
    first = decide_transcript(item(), ok(segment("in-progress"), segment("completed", "CR2")), NOW, BACKOFF)
    assert (first.state, first.next_attempt_at, first.incomplete_since) == ("pending", NOW + timedelta(minutes=1), NOW)
    later = decide_transcript(item(incomplete_since=NOW - timedelta(hours=3)), ok(segment("in-progress")), NOW,
                              BACKOFF)
    assert later.next_attempt_at == NOW + timedelta(hours=1)
    last = decide_transcript(item(incomplete_since=NOW - timedelta(hours=48)), ok(segment("in-progress")), NOW,
                             BACKOFF)
    assert (last.state, last.outcome, last.last_error) == ("error", "error", "transcript still in progress after 48 h")


def test_a_403_ends_the_item_forbidden():
    update = decide_transcript(item(), failed("invalid", 403, "HTTP 403 Forbidden: no transcripts"), NOW, BACKOFF)
    assert (update.state, update.last_api_status, update.last_error) == (
        "forbidden", "http 403", "HTTP 403 Forbidden: no transcripts")


def test_a_fresh_404_is_retried_within_the_window_then_final():
    fresh = decide_transcript(item(), failed("not_found", 404, "HTTP 404 Not Found"), NOW, BACKOFF)
    assert fresh.state == "pending" and fresh.next_attempt_at == NOW + timedelta(hours=1)
    assert fresh.last_error is not None and fresh.last_error.startswith("HTTP 404 Not Found; retrying until ")
    old = item(call_completed_at=NOW - timedelta(hours=25))
    assert decide_transcript(old, failed("not_found", 404), NOW, BACKOFF).state == "not_found"


@pytest.mark.parametrize(("kind", "status", "state"), [("invalid", 400, "invalid"), ("rejected", 200, "error")])
def test_refusals_end_the_item(kind, status, state):
    assert decide_transcript(item(), failed(kind, status), NOW, BACKOFF).state == state


def test_transient_failures_back_off_like_summaries_and_give_up():
    class Fixed(random.Random):
        def random(self) -> float:
            return 1.0

    update = decide_transcript(item(), failed("transient", 503, retry_after=90), NOW, BACKOFF, Fixed())
    assert (update.state, update.consecutive_errors, update.next_attempt_at) == (
        "pending", 1, NOW + timedelta(seconds=90))
    last = decide_transcript(item(consecutive_errors=7), failed("transient", 500), NOW, BACKOFF, Fixed())
    assert (last.state, last.last_error) == ("error", "gave up after 8 attempts: boom")


# --- normalize_transcript ----------------------------------------------------------------


def line(start: float, end: float, text: str = "hi", user: str | None = "US1") -> DialogueLine:
    return DialogueLine(text, start, end, "+15550100000", user)


def test_v1_offsets_are_kept_and_nul_and_lone_surrogates_are_replaced():
    transcript = Transcript(CALL, (segment(lines=(line(1.5, 3.25, "a\x00b"), line(4.0, 9.0, "x\ud800y", None))),),
                            "h" * 64)
    rows = normalize_transcript(transcript, NOW - timedelta(minutes=3), NOW)
    assert [(r["start_seconds"], r["end_seconds"], r["text"], r["user_id"]) for r in rows.lines] == [
        (1.5, 3.25, f"a{REPLACEMENT}b", "US1"), (4.0, 9.0, f"x{REPLACEMENT}y", None)]
    assert rows.segments[0]["offset_seconds"] == 0.0 and rows.segments[0]["line_count"] == 2
    # v1 has no time base: the call row arriving later does not change the hash.
    assert normalize_transcript(transcript, None, NOW).content_hash == rows.content_hash


def test_dated_offsets_are_moved_to_the_call_start_or_to_the_first_segment():
    start = NOW - timedelta(minutes=30)
    transcript = Transcript(CALL, (
        segment(segment_id="CR1", started=start + timedelta(seconds=12), lines=(line(0.5, 2.0),)),
        segment(segment_id="CR2", started=start + timedelta(seconds=100), lines=(line(1.0, 4.5),)),
    ), "h" * 64)
    with_call = normalize_transcript(transcript, start, NOW)
    assert [(r["segment_id"], r["start_seconds"], r["end_seconds"]) for r in with_call.lines] == [
        ("CR1", 12.5, 14.0), ("CR2", 101.0, 104.5)]
    assert [s["offset_seconds"] for s in with_call.segments] == [12.0, 100.0]
    without = normalize_transcript(transcript, None, NOW)
    assert [(r["start_seconds"], r["end_seconds"]) for r in without.lines] == [(0.5, 2.0), (89.0, 92.5)]
    assert without.content_hash != with_call.content_hash  # another time base rewrites the lines


def test_a_segment_listed_twice_is_stored_once():
    twice = segment(segment_id="CR1", started=NOW, lines=(line(0.5, 2.0),))
    rows = normalize_transcript(Transcript(CALL, (twice, twice), "h" * 64), NOW, NOW)
    assert [s["segment_id"] for s in rows.segments] == ["CR1"] and len(rows.lines) == 1


def test_transcript_status_of_a_call_is_the_most_telling_segment():
    def status(*statuses: str) -> str:
        return Transcript(CALL, tuple(segment(s) for s in statuses), "").status

    assert status("completed", "in-progress") == "in-progress"
    assert status("failed", "completed") == "completed"
    assert status("failed", "absent") == "failed"
    assert status() == "absent"


# --- the client against the simulated API ---------------------------------------------


def client(fake: FakeOpenPhone, api_version: str = "v1", **changes: Any) -> OpenPhoneClient:
    settings = Settings(api_key=KEY, base_url="http://api.test", rate=0, retry_attempts=3, retry_initial=0.001,
                        retry_max=0.01, api_version=api_version, **changes)
    return OpenPhoneClient(settings, clock=SYSTEM, transport=fake.transport())


def recording(fake: FakeOpenPhone) -> tuple[httpx.MockTransport, list[httpx.Request]]:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return fake.handle_sync(request)

    return httpx.MockTransport(handler), seen


def test_v1_asks_one_merged_transcript_with_offsets_from_the_call_start():
    fake = FakeOpenPhone(api_key=KEY)
    transport, seen = recording(fake)
    c = OpenPhoneClient(Settings(api_key=KEY, base_url="http://api.test", rate=0), clock=SYSTEM, transport=transport)
    result = c.fetch_transcript(CALL)
    assert result.kind == "ok" and result.data is not None
    assert [s.segment_id for s in result.data.segments] == [V1_SEGMENT_ID]
    served = fake.transcript_v1(CALL)
    assert served is not None
    assert [(d.content, d.start, d.end, d.user_id) for d in result.data.segments[0].dialogue or ()] == [
        (d["content"], d["start"], d["end"], d["userId"]) for d in served["dialogue"]]
    assert [r.url.path for r in seen] == [f"/v1/call-transcripts/{CALL}"]
    assert "quo-api-version" not in seen[0].headers and seen[0].headers["authorization"] == KEY


def test_dated_pages_are_followed_with_the_version_header_and_no_v1_path():
    fake = FakeOpenPhone(api_key=KEY)
    call_id = next(f"AC{n:08d}" for n in range(100) if len(fake.transcript_segments(f"AC{n:08d}") or []) == 3)
    transport, seen = recording(fake)
    c = OpenPhoneClient(Settings(api_key=KEY, base_url="http://api.test", rate=0, api_version="2026-03-30"),
                        clock=SYSTEM, transport=transport)
    result = c.fetch_transcript(call_id, page_size=2)
    assert result.kind == "ok" and result.data is not None and result.tries == 2
    served = fake.transcript_segments(call_id) or []
    assert [s.segment_id for s in result.data.segments] == [s["recordingId"] for s in served]
    assert [r.url.path for r in seen] == [f"/calls/{call_id}/transcripts"] * 2
    assert all(r.headers["quo-api-version"] == "2026-03-30" for r in seen)
    assert seen[0].url.params.get("limit") == "2" and "after" in seen[1].url.params
    # The same transcript hashes alike whatever the page size.
    assert c.fetch_transcript(call_id).data.content_hash == result.data.content_hash  # type: ignore[union-attr]


def test_a_403_is_the_plans_answer_and_a_401_still_refuses_the_key():
    fake = FakeOpenPhone(api_key=KEY)
    fake.transcripts_enabled = False
    for version in ("v1", "2026-03-30"):
        result = client(fake, version).fetch_transcript(CALL)
        assert (result.kind, result.http_status) == ("invalid", 403)
        assert result.error == "HTTP 403 Forbidden: Call transcripts are only available on Business and Scale plans"
        with pytest.raises(AuthError):
            client(FakeOpenPhone(api_key="another"), version).fetch_transcript(CALL)


def test_a_malformed_id_is_never_sent():
    fake = FakeOpenPhone(api_key=KEY)
    for version in ("v1", "2026-03-30"):
        assert client(fake, version).fetch_transcript("AC../calls").kind == "invalid"
    assert fake.total_requests == 0


def test_a_cursor_that_expired_between_pages_makes_the_answer_transient():
    fake = FakeOpenPhone(api_key=KEY)
    call_id = next(f"AC{n:08d}" for n in range(100) if len(fake.transcript_segments(f"AC{n:08d}") or []) > 1)

    def handler(request: httpx.Request) -> httpx.Response:
        if "after" in request.url.params:
            return httpx.Response(400, json={"message": "The cursor expired", "title": "Bad Request"})
        return fake.handle_sync(request)

    settings = Settings(api_key=KEY, base_url="http://api.test", rate=0, api_version="2026-03-30")
    result = OpenPhoneClient(settings, clock=SYSTEM, transport=httpx.MockTransport(handler)).fetch_transcript(call_id,
                                                                                                     page_size=1)
    assert (result.kind, result.http_status) == ("transient", 400)


def test_an_answer_for_another_call_is_transient_and_unknown_fields_are_ignored():
    body = {"data": {"callId": "ACother", "status": "completed", "dialogue": [], "createdAt": None, "duration": 1,
                     "newField": True}}
    settings = Settings(api_key=KEY, base_url="http://api.test", rate=0, retry_attempts=1)
    c = OpenPhoneClient(settings, clock=SYSTEM, transport=httpx.MockTransport(lambda r: httpx.Response(200, json=body)))
    assert c.fetch_transcript(CALL).kind == "transient"
    body["data"]["callId"] = CALL
    result = c.fetch_transcript(CALL)
    assert result.kind == "ok" and result.data is not None and result.data.status == "completed"
