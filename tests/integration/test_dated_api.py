"""The dated API (2026-03-30) on every database: discovery lists the workspace, sync asks once per id.

The simulated API serves the same workspace on both surfaces; these tests run
the engines in process (its transport) and compare what landed with what the
API served, field by field, and count the requests the simulator logged.
"""

from __future__ import annotations

import datetime as dt
import json
import math
import re
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from etl import Etl
from etl.config import Settings
from etl.testing import ApiClock, FakeOpenPhone
from etl.testing.clock import FakeClock
from tests.support.db import API_KEY
from tests.support.proc import check_consistent, comparable, expected_call, stored_calls

SCHEMA_DOC = Path(__file__).resolve().parents[2] / "docs" / "schema.md"
DATED = "2026-03-30"
NOW = dt.datetime(2026, 12, 1, 12, 0, tzinfo=dt.UTC)
SINCE = dt.datetime(2026, 11, 1)


def workspace(*, in_progress: int = 3, **extra: Any) -> FakeOpenPhone:
    """2 lines x 3 conversations x 20 calls, 4 group calls, 3 AI-agent calls; ``in_progress`` summaries not ready."""
    fake = FakeOpenPhone(api_key=API_KEY, clock=ApiClock(NOW), default_status=None, **extra)
    fake.workspace.generate(phone_numbers=2, conversations=3, calls=20, group_calls=4, agent_calls=3)
    completed = sorted(c.id for c in fake.workspace.calls.values() if c.status == "completed")
    for call_id in completed[:in_progress]:
        fake.pending_summaries[call_id] = 0  # in progress in the listing, completed on GET /calls/{id}
    return fake


def job(settings: Settings, engine: Any, fake: FakeOpenPhone, **kw: Any) -> Etl:
    return Etl(settings.replace(api_version=DATED), engine=engine, transport=fake.transport(), **kw)


def served_summaries(fake: FakeOpenPhone) -> dict[str, dict[str, Any]]:
    """What the API serves now for every workspace call whose summary is final and not absent."""
    out = {}
    for call in fake.workspace.calls.values():
        summary = fake.dated_summary(call)
        if summary["status"] in ("completed", "failed"):
            out[call.id] = summary
    return out


# What the users / lines / contacts refresh after each discovery asks (etl.refresh, docs/contract.md).
REFRESH_ENDPOINTS = {"dated-users", "dated-phone-numbers", "contacts"}


def test_discover_then_sync_lands_every_call_and_summary_in_pages_of_50(settings, engine):
    fake = workspace()
    calls = fake.workspace.calls
    with job(settings, engine, fake) as etl:
        found = etl.discover(since=SINCE)
        listed = fake.endpoint_requests["dated-calls"]
        ran = etl.sync()
    assert (found.exit_code, ran.exit_code, ran.errors) == (0, 0, 0)
    # One request per 50 calls, plus one per summary still in progress when listed.
    assert listed == math.ceil(len(calls) / 50)
    assert fake.endpoint_requests["dated-call"] == 3 == ran.completed
    assert found.enqueued == 3
    # Then the users, lines and contacts refresh: contacts from GET /v1/contacts (no dated list route).
    assert set(fake.endpoint_requests) - REFRESH_ENDPOINTS == {"dated-calls", "dated-call"}
    assert {version for _, path, version in fake.request_log if path != "/v1/contacts"} == {DATED}
    assert not [path for _, path, _ in fake.request_log if path.startswith("/v1") and path != "/v1/contacts"]
    # Every summary equal to the API's payload (the summary object, unknown fields kept in raw_json).
    stored = stored_calls(engine)
    expected = served_summaries(fake)
    assert set(stored) == set(expected)
    for call_id, summary in expected.items():
        raw = stored[call_id]["raw_json"]
        assert json.loads(raw) == summary
        assert comparable(stored[call_id]) == expected_call(summary, raw, call_id)
    check_consistent(engine)
    # Every call, group calls with every party and AI-agent calls with their actor.
    with engine.connect() as conn:
        rows = {r.call_id: r for r in conn.execute(sa.text(
            "SELECT call_id, participant_count, actor_id, call_route, ai_handled, user_id FROM calls"))}
        parties: dict[str, list[tuple[Any, ...]]] = {}
        for r in conn.execute(sa.text("SELECT call_id, position, number, actor_id, is_own_number "
                                      "FROM call_participants ORDER BY call_id, position")):
            parties.setdefault(r.call_id, []).append((r.number, r.actor_id, bool(r.is_own_number)))
    assert set(rows) == set(calls)
    for call_id, call in calls.items():
        line = fake.workspace.phone_numbers[call.phone_number_id].number
        actor = "SYUaiagent000001" if call.ai_handled else call.user_id
        assert parties[call_id] == [(line, actor, True), *[(p, None, False) for p in call.participants]]
        assert rows[call_id].ai_handled == ("ai-agent" if call.ai_handled else None)
        assert rows[call_id].user_id == (None if call.ai_handled else call.user_id)
    group = [c for c in calls.values() if len(c.participants) == 3]
    assert len(group) == 4 and all(rows[c.id].participant_count == 4 for c in group)


def test_an_id_enqueued_by_hand_costs_one_request(settings, engine):
    fake = workspace(in_progress=0)
    call = next(c for c in fake.workspace.calls.values() if c.status == "completed" and c.ai_handled)
    with job(settings, engine, fake) as etl:
        etl.enqueue([call.id])
        ran = etl.sync()
    assert (ran.completed, fake.total_requests) == (1, 1)
    assert fake.request_log == [("GET", f"/calls/{call.id}", DATED)]
    with engine.connect() as conn:
        stored = conn.execute(sa.text("SELECT s.type, s.title, c.ai_handled, c.call_route, c.actor_id "
                                      "FROM call_summaries s JOIN calls c ON c.call_id = s.call_id")).one()
    summary = fake.dated_summary(call)
    assert tuple(stored) == ("agent", summary["title"], "ai-agent", "phone-menu", "SYUaiagent000001")


def test_absent_means_never_the_item_ends_absent_at_once(settings, engine):
    fake = workspace(in_progress=0)
    missed = next(c for c in fake.workspace.calls.values() if c.status in ("missed", "no-answer"))
    with job(settings, engine, fake) as etl:
        etl.enqueue([missed.id])
        etl.sync()
    with engine.connect() as conn:
        row = conn.execute(sa.text("SELECT state, attempts, last_api_status, last_error FROM summary_queue")).one()
    assert tuple(row) == ("absent", 1, "absent", "the API reports that no summary will be generated for this call")


def test_discovery_stores_final_summaries_from_the_page_and_marks_queued_ids_done(settings, engine):
    fake = workspace(in_progress=0)
    done = sorted(c.id for c in fake.workspace.calls.values() if c.status == "completed")[:2]
    with job(settings, engine, fake) as etl:
        etl.enqueue(done)  # waiting before discovery runs
        found = etl.discover(since=SINCE)
        ran = etl.sync()
    assert (found.enqueued, ran.claimed, fake.endpoint_requests["dated-call"]) == (0, 0, 0)
    with engine.connect() as conn:
        states = dict(conn.execute(sa.text("SELECT state, COUNT(*) FROM summary_queue GROUP BY state")).all())
    completed = sum(1 for c in fake.workspace.calls.values() if c.status == "completed")
    assert states == {"done": completed}
    assert found.stored == completed


def test_an_expired_cursor_restarts_from_the_watermark_and_loses_nothing(settings, engine):
    fake = workspace(in_progress=0)
    calls = fake.workspace.calls
    fake.expire_cursors = 2
    with job(settings, engine, fake) as etl:
        found = etl.discover(since=SINCE)
    assert (found.exit_code, found.restarts) == (0, 2)
    with engine.connect() as conn:
        stored = set(conn.execute(sa.text("SELECT call_id FROM calls")).scalars())
        mark = conn.execute(sa.text("SELECT scope FROM discovery_call_watermarks")).scalars().all()
    assert stored == set(calls)
    assert mark == ["*"]
    # The restarted listings ask below what was committed: 2 refused + one per 50 calls + the overlap's.
    assert fake.endpoint_requests["dated-calls"] <= math.ceil(len(calls) / 50) + 2 + 2


def test_a_second_run_continues_from_the_watermark(settings, engine):
    fake = workspace(in_progress=0)
    clock = FakeClock(start=NOW.replace(tzinfo=None))
    with job(settings, engine, fake, clock=clock) as etl:
        etl.discover(since=SINCE)
        conv = next(iter(fake.workspace.conversations))
        fake.clock.advance(3600)
        clock.advance(3600)
        new = fake.workspace.add_call(conv, at=fake.clock.now() - dt.timedelta(minutes=30), status="ringing")
        before = len(fake.request_log)
        again = etl.discover()
    assert again.enqueued == 1  # a call still live: queued for its sync request
    assert again.calls_seen == 1
    # The walk's one listing, then the users and lines refresh (contacts are not due).
    assert [path for _, path, _ in fake.request_log[before:]] == ["/calls", "/users", "/phone-numbers"]
    with engine.connect() as conn:
        queued = conn.execute(sa.text("SELECT call_id, state FROM summary_queue WHERE call_id = :c"),
                              {"c": new.id}).one()
    assert tuple(queued) == (new.id, "pending")


def test_phone_number_filter_maps_to_phone_number_id_with_its_own_watermark(settings, engine):
    fake = workspace(in_progress=0)
    line = next(iter(fake.workspace.phone_numbers))
    with job(settings, engine, fake) as etl:
        found = etl.discover(since=SINCE, phone_numbers=[line])
    on_line = {c.id for c in fake.workspace.calls.values() if c.phone_number_id == line}
    with engine.connect() as conn:
        stored = set(conn.execute(sa.text("SELECT call_id FROM calls")).scalars())
        marks = conn.execute(sa.text("SELECT scope FROM discovery_call_watermarks")).scalars().all()
    assert (found.phone_numbers, stored, marks) == (1, on_line, [line])


def test_faults_and_list_quirks_on_the_dated_routes_lose_nothing(settings, engine):
    from etl.testing import Faults, Quirks

    probe = workspace(in_progress=0)
    twice = frozenset(sorted(probe.workspace.calls)[:5])
    fake = workspace(in_progress=2, faults=Faults(seed=3, error_500=0.2, drop=0.1, garbage=0.1,
                                                  schema_violation=0.1, max_per_id=1),
                     quirks=Quirks(repeat_item=True, empty_page=True, listed_twice=twice))
    with job(settings.replace(retry_attempts=4), engine, fake) as etl:
        found = etl.discover(since=SINCE)
        ran = etl.sync()
    assert (found.exit_code, ran.errors) == (0, 0)
    with engine.connect() as conn:
        stored = set(conn.execute(sa.text("SELECT call_id FROM calls")).scalars())
    assert stored == set(fake.workspace.calls)
    assert set(stored_calls(engine)) == set(served_summaries(fake))


def dated_queries() -> dict[str, str]:
    """docs/schema.md's queries on the dated API's columns (``<!-- dated-query: name -->``), as analysts copy them."""
    text = SCHEMA_DOC.read_text(encoding="utf-8")
    found = dict(re.findall(r"^<!-- dated-query: ([a-z0-9-]+) -->\n```sql\n(.*?)\n```$", text, re.M | re.S))
    assert len(found) == text.count("<!-- dated-query:") == 2
    return found


def test_bi_ai_agent_calls_per_line_per_week_with_their_job_fields(settings, engine):
    fake = workspace(in_progress=0)
    with job(settings, engine, fake) as etl:
        etl.discover(since=SINCE)
    queries = dated_queries()
    with engine.connect() as conn:
        per_week = [tuple(r) for r in conn.execute(sa.text(queries["ai-agent-calls-per-line-per-week"]))]
        fields = [tuple(r) for r in conn.execute(sa.text(queries["ai-agent-job-fields"]))]
    agent = [c for c in fake.workspace.calls.values() if c.ai_handled]
    assert agent
    expected: dict[tuple[str, str], list[int]] = {}
    expected_fields = []
    for call in agent:
        monday = (call.created_at - dt.timedelta(days=call.created_at.weekday())).strftime("%Y-%m-%d")
        summary = fake.dated_summary(call)
        # The line by name: discovery stored the workspace's lines (issue 24).
        line = fake.workspace.phone_numbers[call.phone_number_id].name
        rows = [(line, monday, call.id, summary["title"], job["name"], fld["name"])
                for job in summary["jobs"] or [] for fld in job["result"]["data"]]
        counts = expected.setdefault((line, monday), [0, 0])
        counts[0] += 1
        counts[1] += len(rows)
        expected_fields += rows
    assert per_week == [(line, week, n, n_fields) for (line, week), (n, n_fields) in sorted(expected.items())]
    assert sorted(f[:6] for f in fields) == sorted(expected_fields)
    assert sum(n_fields for _, _, _, n_fields in per_week) == len(fields) > 0


@pytest.mark.parametrize("value", ["+15550001000"])
def test_dated_discovery_refuses_a_number_filter_with_the_fix(settings, engine, value):
    from etl.errors import UsageError

    fake = workspace(in_progress=0)
    with job(settings, engine, fake) as etl, pytest.raises(UsageError) as raised:
        etl.discover(since=SINCE, phone_numbers=[value])
    assert str(raised.value) == (f"--phone-number '{value}': on API version {DATED} discovery filters by line id "
                                 "(PN…), not by number")


def test_v1_without_calls_spends_one_request_per_hand_enqueued_id(settings, engine):
    fake = workspace(in_progress=0)
    call = next(c for c in fake.workspace.calls.values() if c.status == "completed")
    with Etl(settings.replace(fetch_calls=False), engine=engine, transport=fake.transport()) as etl:
        etl.enqueue([call.id])
        ran = etl.sync()
    assert (ran.completed, fake.request_log) == (1, [("GET", f"/v1/call-summaries/{call.id}", None)])
    with engine.connect() as conn:
        assert conn.execute(sa.text("SELECT COUNT(*) FROM calls")).scalar_one() == 0


def test_both_surfaces_serve_one_workspace():
    """The simulator's dated calls are its v1 calls: same ids, times, status, parties; same summary content."""
    import httpx

    fake = workspace(in_progress=0)
    v1 = httpx.Client(transport=fake.transport(), base_url="http://fake.test", headers={"Authorization": API_KEY})
    dated = httpx.Client(transport=fake.transport(), base_url="http://fake.test",
                         headers={"Authorization": API_KEY, "Quo-Api-Version": DATED})
    for call_id in sorted(fake.workspace.calls)[:40]:
        old = v1.get(f"/v1/calls/{call_id}").json()["data"]
        new = dated.get(f"/calls/{call_id}", params={"include": "summary"}).json()["data"]
        same = ("id", "direction", "status", "createdAt", "answeredAt", "completedAt", "duration", "phoneNumberId")
        assert {k: new[k] for k in same} == {k: old[k] for k in same}
        assert [p["phoneNumber"] for p in new["participants"] if p["actorId"] is None] == old["participants"]
        if new["summary"]["status"] == "completed":
            summary = v1.get(f"/v1/call-summaries/{call_id}").json()["data"]
            assert {k: new["summary"][k] for k in ("summary", "jobs")} == {k: summary[k] for k in ("summary", "jobs")}


def test_a_dry_run_lists_and_counts_but_stores_nothing(settings, engine):
    fake = workspace(in_progress=3)
    with job(settings, engine, fake) as etl:
        found = etl.discover(since=SINCE, dry_run=True)
    assert (found.exit_code, found.would_enqueue, found.calls_seen) == (0, 3, len(fake.workspace.calls))
    with engine.connect() as conn:
        stored = [conn.execute(sa.text(f"SELECT COUNT(*) FROM {t}")).scalar_one()
                  for t in ("calls", "call_summaries", "summary_queue", "discovery_call_watermarks")]
    assert stored == [0, 0, 0, 0]
