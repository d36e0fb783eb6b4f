"""The call-context queries of docs/schema.md, checked for their exact answers on every database.

Same approach as tests/integration/test_bi.py: every ```sql block after a
``<!-- call-query: name -->`` line runs exactly as written (a DBAPI cursor,
like a BI tool) against data loaded through the real paths — `etl discover`
against a fake workspace, then a real sync against the simulated summaries —
with the landing times then pinned so that lags and weeks have exact answers.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from etl import Etl
from etl.clock import SYSTEM
from etl.config import Backoff, Settings
from etl.dimensions import Line, LineMember, Listing, User
from etl.discover import Discoverer, DiscoverOptions
from etl.logs import configure_logging
from etl.store import dimensions
from etl.testing import FakeOpenPhone
from tests.integration.calls_fake import FakeWorkspace, make_call
from tests.support.db import raw_rows

SCHEMA_DOC = Path(__file__).resolve().parents[2] / "docs" / "schema.md"
_QUERY_RE = re.compile(r"^<!-- call-query: ([a-z0-9-]+) -->\n```sql\n(.*?)\n```$", re.M | re.S)
KEY = "test-key-0123456789"
LEAD = "Lead qualification"


@pytest.fixture(autouse=True)
def _fresh_logging() -> None:
    # A test that captured the log (capsys) leaves structlog writing to its closed stream.
    configure_logging("json", "info")


def documented_queries() -> dict[str, str]:
    text = SCHEMA_DOC.read_text(encoding="utf-8")
    found = _QUERY_RE.findall(text)
    assert len(dict(found)) == len(found), "two documented queries share a name"
    assert text.count("<!-- call-query:") == len(found)  # a marker the pattern missed would go untested
    return dict(found)


def _summary(call_id: str, steps: list[str] | None, qualified: bool | None) -> dict[str, Any]:
    jobs = None if qualified is None else [
        {"icon": "📋", "name": LEAD, "result": {"data": [{"name": "Qualified", "value": qualified}]}}]
    return {"callId": call_id, "status": "completed", "summary": ["s"], "nextSteps": steps, "jobs": jobs}


def t(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


# (call id, line, user, direction, status, created (UTC), summary next steps, qualified, minutes:seconds to land)
CALLS: list[tuple[str, str, str, str, str, str, list[str] | None, bool | None, str | None]] = [
    ("ACq1", "PNsales", "USalice", "incoming", "completed", "2026-11-16 10:00:00", ["a", "b"], True, "5:00"),
    ("ACq2", "PNsales", "USalice", "outgoing", "completed", "2026-11-18 09:00:00", [], False, "10:00"),
    ("ACq3", "PNsales", "USbob", "incoming", "completed", "2026-11-23 14:00:00", ["c"], True, "3:00"),
    ("ACq4", "PNsupport", "USbob", "incoming", "completed", "2026-11-24 08:00:00", None, None, "20:00"),
    # A Sunday late evening: still the week of Monday 2026-11-16.
    ("ACq5", "PNsupport", "USbob", "incoming", "completed", "2026-11-22 23:30:00", ["d"], True, "7:30"),
    ("ACq6", "PNsupport", "USbob", "incoming", "missed", "2026-11-24 09:00:00", None, None, None),
    # Its summary 404s: the call is there, its queue item ends not_found, no summary row.
    ("ACq7", "PNsales", "USalice", "incoming", "completed", "2026-11-24 10:00:00", None, None, None),
]


# The people and lines the calls name (revision 0012), as a refresh stores them.
USERS = (User(id="USalice", email="alice@example.com", first_name="Alice", last_name="Ng", role="owner"),
         User(id="USbob", email="bob@example.com", first_name="Bob", last_name="Ray", role="member"))
LINES = (Line(id="PNsales", name="Sales", number="+15550000001", members=(LineMember(user_id="USalice"),)),
         Line(id="PNsupport", name="Support", number="+15550000002", members=(LineMember(user_id="USbob"),)))
NAMES_SEEN = datetime(2026, 11, 26, 12, 0, 0)


def load(engine: Engine, db_url: str) -> None:
    ws = FakeWorkspace(KEY)
    ws.add_line("PNsales", "+15550000001", "Sales")
    ws.add_line("PNsupport", "+15550000002", "Support")
    summaries = FakeOpenPhone(api_key=KEY, default_status=None)  # ids without a summary answer 404
    for n, (call_id, line, user, direction, status, created, steps, qualified, _) in enumerate(CALLS):
        who = f"+1555010{n:04d}"
        ws.add_conversation(f"CN{call_id}", line, [who], t(created))
        ws.add_call(make_call(call_id, line, who, t(created), status=status, direction=direction, user=user,
                              duration=60))
        if status == "completed" and call_id != "ACq7":
            summaries.set_summary(call_id, _summary(call_id, steps, qualified))
    # The engine is not wired to the 404 window yet; window 0 keeps this test's states exact either way.
    settings = Settings(database_url=db_url, api_key=KEY, base_url="http://fake.test", rate=0, concurrency=2,
                        retry_initial=0.001, retry_max=0.01, backoff=Backoff(not_found_window=0))
    found = Discoverer(engine, settings, clock=SYSTEM, transport=ws.transport()).run(
        DiscoverOptions(since=datetime(2026, 11, 1)))
    assert (found.exit_code, found.enqueued) == (0, 6)
    stats = Etl(settings, engine=engine).sync(transport=summaries.transport())
    assert (stats.completed, stats.failed, stats.not_found) == (5, 0, 1)
    with engine.begin() as conn:
        for call_id, _line, _user, _dir, _status, created, _steps, _q, lag in CALLS:
            if lag is None:
                continue
            minutes, seconds = lag.split(":")
            stored = datetime.fromisoformat(created) + timedelta(minutes=int(minutes), seconds=60 + int(seconds))
            conn.execute(sa.text("UPDATE call_summaries SET first_synced_at = :s, last_synced_at = :s "
                                 "WHERE call_id = :c"), {"s": stored, "c": call_id})
        dimensions.save_users(conn, Listing(items=USERS, complete=True, requests=1), NAMES_SEEN)
        dimensions.save_lines(conn, Listing(items=LINES, complete=True, requests=1), NAMES_SEEN)





EXPECTED: dict[str, list[tuple[Any, ...]]] = {
    "summaries-per-user-per-week": [
        ("2026-11-16", "Alice Ng", 2, 2), ("2026-11-16", "Bob Ray", 1, 1), ("2026-11-23", "Bob Ray", 2, 1),
    ],
    # ACq1, ACq3, ACq4, ACq5 are inbound with a summary; ACq4 has no next steps.
    "inbound-calls-with-next-steps": [(4, 3, 75)],
    # Lags 3:00, 5:00, 7:30, 10:00, 20:00: the middle one.
    "median-minutes-to-summary": [(7.5,)],
    "leads-per-phone-line": [("Sales", "+15550000001", 2), ("Support", "+15550000002", 1)],
}


@pytest.fixture
def loaded(engine: Engine, db_url: str) -> Engine:
    load(engine, db_url)
    return engine


def test_every_documented_call_query_has_an_expected_answer():
    assert sorted(documented_queries()) == sorted(EXPECTED)


def test_documented_call_queries_give_the_recorded_answers(loaded):
    answers = {name: raw_rows(loaded, sql) for name, sql in documented_queries().items()}
    assert answers == EXPECTED


def test_the_median_of_an_even_count_is_the_mean_of_the_middle_two(loaded):
    with loaded.begin() as conn:  # drop the 20-minute lag: 3:00, 5:00, 7:30, 10:00
        conn.execute(sa.text("DELETE FROM call_summaries WHERE call_id = 'ACq4'"))
    assert raw_rows(loaded, documented_queries()["median-minutes-to-summary"]) == [(6.25,)]


def test_call_overview_rows_are_exact(loaded):
    rows = raw_rows(loaded, """
        SELECT call_id, call_date, call_week, direction, call_status, duration_seconds, user_id, phone_number_id,
               participant_count, participants, summary_status, next_step_count, queue_state, summary_lag_seconds
        FROM call_overview ORDER BY call_id""")
    assert rows == [
        ("ACq1", "2026-11-16", "2026-11-16", "incoming", "completed", 60, "USalice", "PNsales", 1, "+15550100000",
         "completed", 2, "done", 300),
        ("ACq2", "2026-11-18", "2026-11-16", "outgoing", "completed", 60, "USalice", "PNsales", 1, "+15550100001",
         "completed", 0, "done", 600),
        ("ACq3", "2026-11-23", "2026-11-23", "incoming", "completed", 60, "USbob", "PNsales", 1, "+15550100002",
         "completed", 1, "done", 180),
        ("ACq4", "2026-11-24", "2026-11-23", "incoming", "completed", 60, "USbob", "PNsupport", 1, "+15550100003",
         "completed", 0, "done", 1200),
        ("ACq5", "2026-11-22", "2026-11-16", "incoming", "completed", 60, "USbob", "PNsupport", 1, "+15550100004",
         "completed", 1, "done", 450),
        ("ACq6", "2026-11-24", "2026-11-23", "incoming", "missed", 60, "USbob", "PNsupport", 1, "+15550100005",
         None, None, None, None),
        ("ACq7", "2026-11-24", "2026-11-23", "incoming", "completed", 60, "USalice", "PNsales", 1, "+15550100006",
         None, None, "not_found", None),
    ]


def test_summary_overview_carries_the_call_context(loaded):
    rows = raw_rows(loaded, """
        SELECT call_id, direction, duration_seconds, user_id, phone_number_id, participants
        FROM call_summary_overview WHERE call_id IN ('ACq1', 'ACq5') ORDER BY call_id""")
    assert rows == [("ACq1", "incoming", 60, "USalice", "PNsales", "+15550100000"),
                    ("ACq5", "incoming", 60, "USbob", "PNsupport", "+15550100004")]
    with loaded.connect() as conn:
        created = conn.execute(sa.text(
            "SELECT call_created_at, call_completed_at FROM call_summary_overview WHERE call_id = 'ACq1'")).one()
    assert [str(v)[:19] for v in created] == ["2026-11-16 10:00:00", "2026-11-16 10:01:00"]


def test_several_participants_join_in_position_order(engine):
    with engine.begin() as conn:
        conn.execute(sa.text(
            "INSERT INTO calls (call_id, participant_count, content_hash, raw_json, first_synced_at, last_synced_at) "
            "VALUES ('ACmulti', 3, 'h', '{}', '2026-11-25 00:00:00', '2026-11-25 00:00:00')"))
        for pos, number in ((2, "+15550000003"), (0, "+15550000001"), (1, "anonymous")):
            conn.execute(sa.text("INSERT INTO call_participants (call_id, position, number, is_e164) "
                                 "VALUES ('ACmulti', :p, :n, :e)"), {"p": pos, "n": number, "e": number[0] == "+"})
    assert raw_rows(engine, "SELECT participants FROM call_overview") == [("+15550000001, anonymous, +15550000003",)]
