"""`etl discover` on real databases against a fake workspace (httpx transport or real HTTP).

Every fault issue 10 lists ends in a defined state with a clear log line:
429/5xx/garbage on each endpoint, a page that repeats an item, empty pages
with a next token, a token that loops, a call listed twice, a conversation
with hundreds of calls, participants that are not E.164.
"""

from __future__ import annotations

import json
from datetime import datetime, timedelta
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from etl import StopReason
from etl.clock import SYSTEM
from etl.config import Settings
from etl.discover import Discoverer, DiscoverOptions, DiscoveryStats
from etl.errors import UsageError
from etl.logs import configure_logging
from tests.integration.calls_fake import BASE, FakeWorkspace, make_call, reply

KEY = "test-key-0123456789"
SINCE = datetime(2026, 11, 1)
LINE1, LINE2 = "PNline1", "PNline2"
BIG = "+15550100099"  # the conversation with hundreds of calls


def build(fake: FakeWorkspace) -> dict[str, dict[str, Any]]:
    """Two lines, one-to-one conversations, a group and a non-E.164 conversation (both skipped)."""
    fake.add_line(LINE1, "+15550000001", "Sales")
    fake.add_line(LINE2, "+15550000002", "Support")
    n = 0
    for i in range(5):
        who = f"+1555010000{i}"
        fake.add_conversation(f"CN1{i}", LINE1, [who], BASE + timedelta(hours=i))
        for k, status in enumerate(("completed", "completed", "missed")):
            n += 1
            fake.add_call(make_call(f"AC1x{i}{k}", LINE1, who, BASE + timedelta(hours=i, minutes=k), status=status,
                                    direction="incoming" if k % 2 == 0 else "outgoing"))
    fake.add_conversation("CN1big", LINE1, [BIG], BASE + timedelta(hours=9))
    for k in range(250):
        fake.add_call(make_call(f"ACbig{k:03d}", LINE1, BIG, BASE + timedelta(minutes=k), duration=30 + k))
    fake.add_conversation("CN1grp", LINE1, ["+15550100201", "+15550100202"], BASE)
    fake.add_call(make_call("ACgroup1", LINE1, "+15550100201", BASE, participants=["+15550100201", "+15550100202"]))
    fake.add_conversation("CN1odd", LINE1, ["alice@example"], BASE)
    for i in range(3):
        who = f"+1555020000{i}"
        fake.add_conversation(f"CN2{i}", LINE2, [who], BASE + timedelta(hours=i))
        for k in range(2):
            fake.add_call(make_call(f"AC2x{i}{k}", LINE2, who, BASE + timedelta(hours=i, minutes=k), user="USbob"))
    # A participant list with a number that is not E.164 (kept, flagged).
    fake.add_call(make_call("AC2odd", LINE2, "+15550200000", BASE + timedelta(hours=5),
                            participants=["+15550200000", "anonymous"]))
    return fake.calls


def reachable(calls: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Calls discovery can find: those of one-to-one conversations with an E.164 participant."""
    return {i: c for i, c in calls.items() if i != "ACgroup1"}


@pytest.fixture(autouse=True)
def _fresh_logging() -> None:
    # A test that captured the log (capsys) leaves structlog writing to its closed stream.
    configure_logging("json", "info")


@pytest.fixture
def fake() -> FakeWorkspace:  # the workspace, not the summaries simulator
    ws = FakeWorkspace(KEY, page_cap=20)
    build(ws)
    return ws


def discover(engine: Engine, settings: Settings, fake: FakeWorkspace, **options: Any) -> DiscoveryStats:
    opts = DiscoverOptions(**{"since": SINCE, **options})
    return Discoverer(engine, settings, clock=SYSTEM, transport=fake.transport()).run(opts)


def rows(engine: Engine, sql: str) -> list[tuple[Any, ...]]:
    with engine.connect() as conn:
        return [tuple(r) for r in conn.execute(sa.text(sql))]


def stored_calls(engine: Engine) -> dict[str, dict[str, Any]]:
    with engine.connect() as conn:
        out = {r.call_id: dict(r._mapping) for r in conn.execute(sa.text("SELECT * FROM calls"))}
        for r in conn.execute(sa.text("SELECT * FROM call_participants ORDER BY call_id, position")):
            out[r.call_id].setdefault("participants", []).append((r.number, bool(r.is_e164)))
    return out


def queued(engine: Engine) -> set[str]:
    return {r[0] for r in rows(engine, "SELECT call_id FROM summary_queue")}


def completed_ids(calls: dict[str, dict[str, Any]]) -> set[str]:
    return {i for i, c in reachable(calls).items() if c["status"] == "completed"}


def _ts(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).replace(tzinfo=None)


def test_discover_stores_every_call_and_enqueues_the_completed_ones(engine, settings, fake):
    stats = discover(engine, settings, fake)
    assert (stats.exit_code, stats.errors, stats.stop_reason) == (0, 0, None)
    calls = reachable(fake.calls)
    stored = stored_calls(engine)
    assert set(stored) == set(calls)
    for call_id, call in calls.items():
        row = stored[call_id]
        assert json.loads(row["raw_json"]) == call
        assert (row["direction"], row["status"], row["duration_seconds"], row["user_id"], row["phone_number_id"]) == (
            call["direction"], call["status"], call["duration"], call["userId"], call["phoneNumberId"])
        assert str(row["created_at"])[:19] == str(_ts(call["createdAt"]))[:19]
        assert row["participant_count"] == len(call["participants"])
    assert stored["AC2odd"]["participants"] == [("+15550200000", True), ("anonymous", False)]
    assert stored["ACbig000"]["participants"] == [(BIG, True)]
    assert queued(engine) == completed_ids(fake.calls)
    [run] = rows(engine, "SELECT command, phone_numbers, conversations, calls_seen, enqueued, errors, exit_code, "
                         "finished_at IS NOT NULL FROM discovery_runs")
    assert run == ("discover", 2, 9, len(calls), len(completed_ids(fake.calls)), 0, 0, True)
    marks = dict(rows(engine, "SELECT phone_number_id, phone_number FROM discovery_watermarks"))
    assert marks == {LINE1: "+15550000001", LINE2: "+15550000002"}
    assert len(rows(engine, "SELECT 1 FROM discovery_conversations")) == 9
    # 250 calls at 20 per page: 13 pages, every one followed.
    big_pages = [u for u in fake.log if "participants%5B%5D=%2B15550100099" in u or f"participants[]={BIG}" in u]
    assert len(big_pages) == 13


def test_a_rerun_finds_nothing_new_and_changes_nothing(engine, settings, fake):
    discover(engine, settings, fake)
    before = stored_calls(engine)
    listings = fake.requests["/v1/calls"]
    stats = discover(engine, settings, fake, since=None)
    assert (stats.exit_code, stats.enqueued) == (0, 0)
    after = stored_calls(engine)
    strip = ("last_synced_at",)
    assert {i: {k: v for k, v in r.items() if k not in strip} for i, r in after.items()} == {
        i: {k: v for k, v in r.items() if k not in strip} for i, r in before.items()}
    # No conversation was updated since the watermark: no call listing at all.
    assert fake.requests["/v1/calls"] == listings
    # One conversation has new activity: only it is listed again, from its own watermark (one page).
    [conv] = [c for c in fake.conversations if c["id"] == "CN1big"]
    conv["updatedAt"] = datetime.now().astimezone().isoformat()
    stats = discover(engine, settings, fake, since=None)
    assert (stats.exit_code, stats.enqueued, stats.conversations, stats.calls_seen) == (0, 0, 1, 0)
    assert fake.requests["/v1/calls"] == listings + 1
    assert [r[0] for r in rows(engine, "SELECT enqueued FROM discovery_runs ORDER BY id")] == [
        len(completed_ids(fake.calls)), 0, 0]


def test_a_call_still_ringing_is_found_again_once_it_ends(engine, settings, fake):
    now = datetime.now().astimezone()
    fake.add_call(make_call("ACringing", LINE2, "+15550200000", now - timedelta(minutes=1), status="ringing"))
    discover(engine, settings, fake)
    assert "ACringing" in stored_calls(engine) and "ACringing" not in queued(engine)
    fake.add_call(make_call("ACringing", LINE2, "+15550200000", now - timedelta(minutes=1), status="completed"))
    [conv] = [c for c in fake.conversations if c["id"] == "CN20"]
    conv["updatedAt"] = (now + timedelta(seconds=1)).isoformat()
    stats = discover(engine, settings, fake, since=None)
    assert stats.enqueued == 1
    assert "ACringing" in queued(engine)
    assert stored_calls(engine)["ACringing"]["status"] == "completed"


def test_first_run_without_since_is_refused_with_the_fix(engine, settings, fake):
    with pytest.raises(UsageError) as exc:
        discover(engine, settings, fake, since=None)
    assert str(exc.value) == ("no discovery watermark yet for phone number PNline1 (+1 more): "
                              "pass --since DATE for the first run")
    # A refusal is no run: it leaves no discovery_runs row behind (issue 20, item 13).
    assert rows(engine, "SELECT COUNT(*) FROM discovery_runs") == [(0,)]


def test_phone_number_narrows_by_id_or_number(engine, settings, fake):
    stats = discover(engine, settings, fake, phone_numbers=("+15550000002",))
    assert stats.phone_numbers == 1
    assert {c["phone_number_id"] for c in stored_calls(engine).values()} == {LINE2}
    with pytest.raises(UsageError) as exc:
        discover(engine, settings, fake, phone_numbers=("PNnope",))
    assert str(exc.value) == "phone number 'PNnope' is not in the workspace (known: PNline1, PNline2)"


def test_dry_run_writes_nothing(engine, settings, fake):
    stats = discover(engine, settings, fake, dry_run=True)
    assert stats.would_enqueue == len(completed_ids(fake.calls))
    assert stats.run_id is None
    for table in ("calls", "call_participants", "summary_queue", "discovery_runs", "discovery_watermarks",
                  "discovery_conversations"):
        assert rows(engine, f"SELECT COUNT(*) FROM {table}") == [(0,)], table


def test_default_throttled_path(engine, settings, fake):
    """Production's default: 10 requests/s through the shared limiter (no timing asserted here; see bench/)."""
    stats = discover(engine, settings.replace(rate=10.0), fake, phone_numbers=(LINE2,))
    assert (stats.exit_code, stats.calls_seen) == (0, 7)


# --- faults -------------------------------------------------------------------------------


@pytest.mark.parametrize("path", ["/v1/phone-numbers", "/v1/conversations", "/v1/calls"])
@pytest.mark.parametrize("fault", [
    reply(429, {"message": "Too Many Requests"}, {"Retry-After": "0"}),
    reply(503, b"<html>busy</html>"),
    reply(200, b"<html>oops</html>"),
    reply(200, {"data": "not a list"}),
], ids=["429", "503-garbage", "200-not-json", "200-schema"])
def test_one_transient_fault_on_any_endpoint_is_retried(engine, settings, fake, path, fault):
    fake.faults[path].append(fault)
    stats = discover(engine, settings, fake)
    assert (stats.exit_code, stats.errors) == (0, 0)
    assert set(stored_calls(engine)) == set(reachable(fake.calls))


def _json_log(capsys: pytest.CaptureFixture[str]) -> list[dict[str, Any]]:
    return [json.loads(line) for line in capsys.readouterr().err.splitlines() if line.startswith("{")]


def test_calls_listing_that_keeps_failing_stops_that_conversation_only(engine, settings, fake, capsys):
    configure_logging("json", "info")
    fake.faults["/v1/calls"].extend([reply(503, {"message": "down"})] * 3)  # every try of the first listing
    stats = discover(engine, settings, fake)
    assert (stats.exit_code, stats.errors) == (1, 1)
    assert stats.stop is StopReason.WALK_ERRORS
    assert stats.stop_reason == "1 walk(s) stopped on an error; see the log"
    errors = [e for e in _json_log(capsys) if e["level"] == "error"]
    assert [e["event"] for e in errors] == ["walk stopped"]
    assert errors[0]["error"].startswith("listing calls of PNline1 with ") and "HTTP 503" in errors[0]["error"]
    # The failed conversation's line keeps its old watermark; the other line advanced.
    assert dict(rows(engine, "SELECT phone_number_id, 1 FROM discovery_watermarks")) == {LINE2: 1}
    assert len(set(stored_calls(engine))) < len(reachable(fake.calls))


def test_after_a_failed_walk_a_rerun_with_since_completes(engine, settings, fake):
    fake.faults["/v1/calls"].extend([reply(500, {"message": "boom"})] * 3)
    assert discover(engine, settings, fake).exit_code == 1
    stats = discover(engine, settings, fake)
    assert (stats.exit_code, stats.errors) == (0, 0)
    assert set(stored_calls(engine)) == set(reachable(fake.calls))
    assert queued(engine) == completed_ids(fake.calls)
    assert sum(r[0] for r in rows(engine, "SELECT enqueued FROM discovery_runs")) == len(completed_ids(fake.calls))


def test_phone_numbers_failing_ends_the_run(engine, settings, fake, capsys):
    configure_logging("json", "info")
    fake.faults["/v1/phone-numbers"].extend([reply(200, b"garbage")] * 3)
    stats = discover(engine, settings, fake)
    assert (stats.exit_code, stats.stop) == (1, StopReason.WALK_ERRORS)
    assert stats.stop_reason == "listing phone numbers failed: 200 with a body that is not JSON"
    assert rows(engine, "SELECT COUNT(*) FROM calls") == [(0,)]


def test_the_api_refusing_the_key_stops_at_once(engine, settings, fake):
    stats = discover(engine, settings.replace(api_key="wrong-key-000"), fake)
    assert (stats.exit_code, stats.stop) == (3, StopReason.AUTH_REFUSED)
    assert stats.stop_reason == "the API refused the key (HTTP 401): HTTP 401 Unauthorized: Unauthorized"
    assert sum(fake.requests.values()) == 1


def test_a_page_that_repeats_an_item_and_a_call_listed_twice(engine, settings, fake, capsys):
    configure_logging("json", "info")

    def repeat_last_item(page: dict[str, Any], offset: int) -> dict[str, Any]:
        if offset and page["data"]:
            page["data"] = [fake_prev[0], *page["data"], page["data"][0]]  # an earlier item and a duplicate
        if page["data"]:
            fake_prev[:] = [page["data"][-1]]
        return page

    fake_prev: list[dict[str, Any]] = []
    fake.page_hooks["/v1/calls"] = repeat_last_item
    stats = discover(engine, settings, fake)
    assert stats.exit_code == 0
    assert set(stored_calls(engine)) == set(reachable(fake.calls))
    assert queued(engine) == completed_ids(fake.calls)
    events = _json_log(capsys)
    assert any(e["event"] == "call listed twice; stored once" for e in events)


def test_empty_pages_with_a_next_token_are_followed(engine, settings, fake):
    seen: set[str] = set()

    def empty_then_real(page: dict[str, Any], offset: int) -> dict[str, Any]:
        # Each line's first conversations page comes back empty, with a token to the real one.
        line = page["data"][0]["phoneNumberId"] if page["data"] else ""
        if offset == 0 and line and line not in seen:
            seen.add(line)
            return {"data": [], "nextPageToken": "0"}
        return page

    fake.page_hooks["/v1/conversations"] = empty_then_real
    stats = discover(engine, settings, fake)
    assert (stats.exit_code, stats.errors) == (0, 0)
    assert seen == {LINE1, LINE2}
    assert set(stored_calls(engine)) == set(reachable(fake.calls))


def test_a_looping_page_token_stops_that_walk_with_an_error(engine, settings, fake, capsys):
    configure_logging("json", "info")

    def loop(page: dict[str, Any], offset: int) -> dict[str, Any]:
        return {"data": page["data"], "nextPageToken": "20"}  # always the same token

    fake.page_hooks["/v1/conversations"] = loop
    stats = discover(engine, settings, fake)
    assert stats.exit_code == 1
    errors = [e["error"] for e in _json_log(capsys) if e["level"] == "error"]
    assert errors == ["listing conversations of PNline1: the API sent page token '20' twice; stopped",
                      "listing conversations of PNline2: the API sent page token '20' twice; stopped"]
    assert rows(engine, "SELECT COUNT(*) FROM discovery_watermarks") == [(0,)]


def test_endless_empty_pages_stop_with_an_error(engine, settings, fake, capsys):
    configure_logging("json", "info")

    def empty(page: dict[str, Any], offset: int) -> dict[str, Any]:
        return {"data": [], "nextPageToken": str(offset + 1)}

    fake.page_hooks["/v1/phone-numbers"] = empty
    stats = discover(engine, settings.replace(), fake)
    assert stats.exit_code == 1
    assert stats.stop_reason == ("listing phone numbers: 21 pages in a row with a next page token brought nothing "
                                 "not listed before; stopped")


def test_participants_not_e164_are_kept_flagged_and_logged(engine, settings, fake, capsys):
    configure_logging("json", "info")
    discover(engine, settings, fake)
    events = _json_log(capsys)
    flagged = [e for e in events if e["event"] == "participants that are not E.164 kept with is_e164 = false"]
    assert [(e["call_id"], e["numbers"], e["level"]) for e in flagged] == [("AC2odd", ["anonymous"], "warning")]
    skipped = [e for e in events if e["event"].startswith("conversation skipped")]
    assert sorted((e["event"], e["level"]) for e in skipped) == [
        ("conversation skipped: not one-to-one", "info"),
        ("conversation skipped: participant is not an E.164 number", "warning"),
    ]
    assert rows(engine, "SELECT number, is_e164 FROM call_participants WHERE call_id = 'AC2odd' ORDER BY position") \
        in ([("+15550200000", True), ("anonymous", False)], [("+15550200000", 1), ("anonymous", 0)])
