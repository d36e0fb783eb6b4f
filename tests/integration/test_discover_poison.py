"""Issue 25, findings 3-5 in `etl discover`: a malformed or out-of-range call costs only itself; fresh tokens
over calls already listed end the walk with a reason (v1 and the dated listing alike)."""

from __future__ import annotations

import json
from datetime import UTC
from typing import Any

import httpx
import pytest
import sqlalchemy as sa

from etl import Etl
from etl.testing import FakeOpenPhone
from tests.integration.calls_fake import FakeWorkspace
from tests.integration.test_discover import KEY, SINCE, build, completed_ids, discover, queued, reachable, rows
from tests.support.db import API_KEY
from tests.support.hostile import edit_calls, rewriting


@pytest.fixture
def fake() -> FakeWorkspace:  # the workspace of test_discover, not the summaries simulator
    ws = FakeWorkspace(KEY, page_cap=20)
    build(ws)
    return ws


def rejected(engine) -> dict[str, Any]:
    with engine.connect() as conn:
        return {r.record_id: r for r in conn.execute(sa.text("SELECT * FROM rejected_records"))}


def test_a_malformed_call_costs_only_itself_and_later_runs_pass_it(engine, settings, fake):
    calls = fake.calls
    bad, year_1 = "ACbig005", "ACbig010"
    hostile = {bad: {"participants": "nobody", "duration": "sixty"},
               year_1: {"createdAt": "0001-01-01T00:00:00+01:00"}}

    def poison(page: dict[str, Any], _offset: int) -> dict[str, Any]:
        return dict(page, data=[dict(c, **hostile.get(c["id"], {})) for c in page["data"]])

    fake.page_hooks["/v1/calls"] = poison
    stats = discover(engine, settings, fake)
    assert stats.errors == 0
    assert (stats.rejected, stats.exit_code) == (2, 1)
    assert stats.summary().splitlines()[0].endswith(", 0 errors, 2 rejected (see rejected_records).")
    good = set(reachable(calls)) - {bad, year_1}
    assert {r[0] for r in rows(engine, "SELECT call_id FROM calls")} == good  # the pages' other calls
    assert queued(engine) == completed_ids(calls) - {bad, year_1}
    kept = rejected(engine)
    assert set(kept) == {bad, year_1}
    assert kept[bad].reason.startswith("duration: Input should be a valid integer")
    assert (kept[bad].source, kept[bad].endpoint) == ("discover", "GET /v1/calls")
    assert json.loads(kept[bad].payload)["participants"] == "nobody"
    assert kept[year_1].reason == "createdAt: 0001-01-01T00:00:00+01:00 cannot be shifted to UTC"
    # The walk went on to the end: every conversation has its watermark, and the next run is not stuck.
    assert rows(engine, "SELECT COUNT(*) FROM discovery_watermarks") == [(2,)]
    again = discover(engine, settings, fake, since=None)
    assert (again.errors, again.exit_code) == (0, 0)  # past the watermark: not stuck at that page


def test_fresh_tokens_over_the_same_calls_end_the_walk_with_a_reason(engine, settings, fake):
    first: dict[str, Any] = {}

    def same_calls(page: dict[str, Any], offset: int) -> dict[str, Any]:
        # A new token every time (never sent before), over the first page's calls again.
        first.setdefault("data", page["data"])
        return dict(page, data=first["data"], nextPageToken=str(offset + 1))

    fake.page_hooks["/v1/calls"] = same_calls
    stats = discover(engine, settings.replace(), fake, phone_numbers=("PNline2",))
    assert stats.exit_code == 1
    assert stats.stop_reason == "1 walk(s) stopped on an error; see the log" or stats.errors >= 1
    calls_requests = fake.requests["/v1/calls"]
    # Each conversation stops after max_empty_pages (20) pages that brought nothing new, not 3,000.
    assert calls_requests <= 4 * 22, calls_requests


def dated_workspace(n: int) -> tuple[FakeOpenPhone, list[str]]:
    fake = FakeOpenPhone(api_key=API_KEY)
    ws = fake.workspace
    conv = ws.add_conversation(ws.add_phone_number("+15550100000").id, ["+15550100001"],
                               at=SINCE.replace(tzinfo=UTC))
    return fake, [ws.add_call(conv.id, at=SINCE.replace(day=2, tzinfo=UTC)).id for _ in range(n)]


def test_dated_a_malformed_call_on_a_page_costs_only_itself(engine, settings):
    fake, ids = dated_workspace(30)
    bad, year_1 = ids[3], ids[17]

    def edit(call: dict[str, Any]) -> None:
        if call["id"] == bad:
            call.update(participants="nobody", duration="sixty")
        else:
            call["createdAt"] = "0001-01-01T00:00:00+01:00"

    dated = settings.replace(api_version="2026-03-30")
    stats = Etl(dated, engine=engine).discover(SINCE, transport=rewriting(fake, edit_calls({bad, year_1}, edit)))
    assert (stats.errors, stats.rejected, stats.exit_code) == (0, 2, 1)
    assert {r[0] for r in rows(engine, "SELECT call_id FROM calls")} == set(ids) - {bad, year_1}
    assert set(rejected(engine)) == {bad, year_1}
    assert rejected(engine)[bad].endpoint == "GET /calls"


def test_dated_fresh_cursors_over_the_same_calls_end_the_walk(engine, settings):
    fake, _ids = dated_workspace(5)
    pages = 0

    def same_page_fresh_cursor(request, body: bytes) -> bytes:
        nonlocal pages
        if request.url.path != "/calls":
            return body
        pages += 1
        doc = json.loads(body)
        doc["nextCursor"] = f"fresh-{pages}"
        return json.dumps(doc).encode()

    dated = settings.replace(api_version="2026-03-30")
    def forget_cursor(request):  # the simulated API checks cursors; this server ignores them
        return request if request.url.path != "/calls" else httpx.Request(
            request.method, request.url.copy_remove_param("after"), headers=request.headers)

    stats = Etl(dated, engine=engine).discover(SINCE, transport=rewriting(fake, same_page_fresh_cursor,
                                                                          forget_cursor))
    assert stats.exit_code == 1
    assert pages == 22  # the first page, then 21 that brought nothing new



def test_dated_every_call_answered_on_the_page_gets_its_transcript_whatever_its_summary(engine, settings):
    """Issue 25, finding 12: calls whose summary came on the page as absent or failed get their transcript too."""
    from etl.testing import sample_summary

    fake, ids = dated_workspace(6)
    fake.set_summary(ids[0], sample_summary(ids[0], "failed"))
    fake.set_summary(ids[1], sample_summary(ids[1], "absent"))
    dated = settings.replace(api_version="2026-03-30", transcripts=True)
    Etl(dated, engine=engine).discover(SINCE, transport=fake.transport())
    with engine.connect() as conn:
        summaries = dict(conn.execute(sa.text("SELECT call_id, state FROM summary_queue")).all())
        transcripts = {r[0] for r in conn.execute(sa.text("SELECT call_id FROM transcript_queue"))}
    assert summaries.get(ids[0]) == "failed" and summaries.get(ids[1]) in (None, "absent")
    assert transcripts == set(ids)
