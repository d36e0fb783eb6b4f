"""Names beside every call: the views of revision 0012 and the "names" queries of docs/schema.md, exact on
every database.

The calls of tests/integration/test_bi_calls.py (loaded through `etl discover`
and a real sync), two dated-API calls (an AI-agent call and a group call,
inserted as the dated store writes them), and users, lines and contacts saved
through :mod:`etl.store.dimensions`.  Every ```sql block after a
``<!-- names-query: name -->`` line runs exactly as written (a DBAPI cursor).
"""

from __future__ import annotations

import re
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from etl.dimensions import Contact, ContactValue, Listing, User
from etl.logs import configure_logging
from etl.store import dimensions as store
from tests.integration.test_bi_calls import USERS
from tests.integration.test_bi_calls import load as load_calls
from tests.support.db import raw_rows

SCHEMA_DOC = Path(__file__).resolve().parents[2] / "docs" / "schema.md"
_QUERY_RE = re.compile(r"^<!-- names-query: ([a-z0-9-]+) -->\n```sql\n(.*?)\n```$", re.M | re.S)
SEEN = datetime(2026, 11, 26, 12, 0, 0)


@pytest.fixture(autouse=True)
def _fresh_logging() -> None:
    configure_logging("json", "info")


def documented_queries() -> dict[str, str]:
    text = SCHEMA_DOC.read_text(encoding="utf-8")
    found = _QUERY_RE.findall(text)
    assert len(dict(found)) == len(found), "two documented queries share a name"
    assert text.count("<!-- names-query:") == len(found)
    return dict(found)


def _user(uid: str, first: str, last: str, email: str) -> User:
    return User(id=uid, email=email, first_name=first, last_name=last, role="member")


def _contact(cid: str, first: str, company: str | None, number: str, updated: str) -> Contact:
    return Contact(id=cid, first_name=first, company=company, updated_at=datetime.fromisoformat(updated),
                   phone_numbers=(ContactValue(value=number, label="mobile"),))


def _listing(*items: Any) -> Listing[Any]:
    return Listing(items=tuple(items), complete=True, requests=1)


def save_dimensions(engine: Engine) -> None:
    """Zoe (who has no calls) beside Alice and Bob; contacts with the matching rule's hard cases."""
    with engine.begin() as conn:
        store.save_users(conn, _listing(*USERS, _user("USzoe", "Zoe", "Fox", "zoe@example.com")), SEEN)
        store.save_contacts(conn, _listing(
            _contact("CTdana", "Dana", "Acme", "+15550100000", "2026-11-01 00:00:00"),
            # +15550100002 sits on three contacts: Frank (present, newest) wins over Eve (older) and
            # Gus (newer still, but gone).
            _contact("CTeve", "Eve", "Globex", "+1 555 010 0002", "2026-11-01 00:00:00"),
            _contact("CTfrank", "Frank", "Initech", "(555) 010-0002", "2026-11-20 00:00:00"),
            _contact("CTgus", "Gus", "Hooli", "+15550100002", "2026-11-25 00:00:00"),
            _contact("CTgina", "Gina", None, "555-010-0003", "2026-11-02 00:00:00")), SEEN)
        assert store.mark_contact_deleted(conn, "CTgus", SEEN)


# Two dated-API calls, as the dated store writes them: the AI agent answering on Support, and a group
# call Alice placed on Sales to Dana, Frank's number and a number no contact has.
DATED_CALLS = [
    ("ACagent", "2026-11-24 12:00:00", "incoming", None, "SYUagent", "ai-agent", "PNsupport", 120,
     [("+15550100000", None, False), ("+15550000002", "SYUagent", True)]),
    ("ACgroup", "2026-11-25 15:00:00", "outgoing", "USalice", "USalice", None, "PNsales", 300,
     [("+15550000001", "USalice", True), ("+15550100000", None, False), ("+15550100002", None, False),
      ("+15559999999", None, False)]),
]


def insert_dated_calls(engine: Engine) -> None:
    with engine.begin() as conn:
        for call_id, created, direction, user_id, actor, ai, line, duration, parties in DATED_CALLS:
            at = datetime.fromisoformat(created)
            conn.execute(sa.text(
                "INSERT INTO calls (call_id, created_at, answered_at, completed_at, direction, status, "
                "duration_seconds, phone_number_id, user_id, actor_id, ai_handled, participant_count, content_hash, "
                "raw_json, first_synced_at, last_synced_at) VALUES (:c, :at, :at, :at, :d, 'completed', :dur, :pn, "
                ":u, :a, :ai, :n, 'h', '{}', :at, :at)"),
                {"c": call_id, "at": at, "d": direction, "dur": duration, "pn": line, "u": user_id, "a": actor,
                 "ai": ai, "n": len(parties)})
            for position, (number, party_actor, own) in enumerate(parties):
                conn.execute(sa.text(
                    "INSERT INTO call_participants (call_id, position, number, is_e164, actor_id, is_own_number) "
                    "VALUES (:c, :p, :n, :e, :a, :o)"),
                    {"c": call_id, "p": position, "n": number, "e": True, "a": party_actor, "o": own})
            text = "The caller asked for a Refund." if ai else "Agenda for the rollout."
            conn.execute(sa.text(
                "INSERT INTO call_summaries (call_id, status, summary_text, line_count, next_step_count, job_count, "
                "type, content_hash, raw_json, first_synced_at, last_synced_at) "
                "VALUES (:c, 'completed', :s, 1, 1, 0, :t, 'h', '{}', :at, :at)"),
                {"c": call_id, "s": text, "t": "agent" if ai else "human", "at": at})
            conn.execute(sa.text("INSERT INTO call_summary_lines (call_id, position, text) VALUES (:c, 0, :s)"),
                         {"c": call_id, "s": text})
            conn.execute(sa.text("INSERT INTO call_next_steps (call_id, position, text) VALUES (:c, 0, 'Call back')"),
                         {"c": call_id})


@pytest.fixture
def loaded(engine: Engine, db_url: str) -> Engine:
    load_calls(engine, db_url)
    insert_dated_calls(engine)
    save_dimensions(engine)
    return engine


EXPECTED: dict[str, list[tuple[Any, ...]]] = {
    # Week of 2026-11-23: ACq3 and ACq4 (Bob; one next step), ACagent (the agent), ACgroup (Alice);
    # ACq7 has no summary (404).
    "summaries-and-next-steps-per-person-this-week": [("AI agent", 1, 1), ("Alice Ng", 1, 1), ("Bob Ray", 2, 1)],
    "calls-mentioning-a-word-this-week": [("ACagent", "2026-11-24", "AI agent", "Dana", "Acme")],
    "next-steps-per-day": [("2026-11-16", "Alice Ng", 2), ("2026-11-22", "Bob Ray", 1), ("2026-11-23", "Bob Ray", 1),
                           ("2026-11-24", "AI agent", 1), ("2026-11-25", "Alice Ng", 1)],
    "calls-per-line-per-week": [("2026-11-16", "Sales", "+15550000001", 2, 2),
                                ("2026-11-16", "Support", "+15550000002", 1, 1),
                                ("2026-11-23", "Sales", "+15550000001", 3, 2),
                                ("2026-11-23", "Support", "+15550000002", 3, 2)],
    # Bob: ACq3, ACq4 answered, ACq6 missed; Alice: ACq7 in (ACgroup is outgoing, 300 s); the agent: ACagent.
    "answer-rate-per-person-this-week": [("AI agent", 1, 0, 100, 120), ("Alice Ng", 1, 0, 100, 360),
                                         ("Bob Ray", 3, 1, 66.7, 120)],
    "one-day-per-line": [("Sales", 1, 1, 0, 100, 60, 0, 0, 0), ("Support", 3, 2, 1, 66.7, 90, 2, 1, 1)],
    # Dana (Acme): ACq1, ACagent, ACgroup; Frank (Initech, the rule's pick for +15550100002): ACq3;
    # Gina (no company; "555-010-0003"): ACq4; no contact: ACq2, ACq5, ACq6, ACq7.
    "calls-per-company": [("(no contact)", 4, "2026-11-24"), ("Acme", 3, "2026-11-25"), ("Gina", 1, "2026-11-24"),
                          ("Initech", 1, "2026-11-23")],
    "group-call-parties": [("ACgroup", 0, "user", "Alice Ng", None), ("ACgroup", 1, "contact", "Dana", "Acme"),
                           ("ACgroup", 2, "contact", "Frank", "Initech"),
                           ("ACgroup", 3, "unknown", "+15559999999", None)],
}


def test_every_documented_names_query_has_an_expected_answer():
    assert sorted(documented_queries()) == sorted(EXPECTED)


def test_documented_names_queries_give_the_recorded_answers(loaded):
    answers = {name: raw_rows(loaded, sql) for name, sql in documented_queries().items()}
    assert answers == EXPECTED


def test_call_overview_names_every_call(loaded):
    rows = raw_rows(loaded, """
        SELECT call_id, user_name, user_email, user_kind, phone_number_name, phone_number, other_party_number,
               contact_id, contact_name, contact_company
        FROM call_overview ORDER BY call_id""")
    sales, support = ("Sales", "+15550000001"), ("Support", "+15550000002")
    alice, bob = ("Alice Ng", "alice@example.com", "user"), ("Bob Ray", "bob@example.com", "user")
    dana, frank, gina = ("CTdana", "Dana", "Acme"), ("CTfrank", "Frank", "Initech"), ("CTgina", "Gina", None)
    nobody = (None, None, None)
    assert rows == [
        ("ACagent", "AI agent", None, "agent", *support, "+15550100000", *dana),
        ("ACgroup", *alice, *sales, "+15550100000", *dana),
        ("ACq1", *alice, *sales, "+15550100000", *dana),
        ("ACq2", *alice, *sales, "+15550100001", *nobody),
        ("ACq3", *bob, *sales, "+15550100002", *frank),
        ("ACq4", *bob, *support, "+15550100003", *gina),
        ("ACq5", *bob, *support, "+15550100004", *nobody),
        ("ACq6", *bob, *support, "+15550100005", *nobody),
        ("ACq7", *alice, *sales, "+15550100006", *nobody),
    ]


def test_call_party_overview_has_one_named_row_per_party(loaded):
    rows = raw_rows(loaded, """
        SELECT call_id, position, number, party_kind, user_id, user_name, contact_name, contact_company,
               contacts_with_number, call_date, phone_number_name
        FROM call_party_overview WHERE call_id IN ('ACagent', 'ACgroup') ORDER BY call_id, position""")
    assert rows == [
        ("ACagent", 0, "+15550100000", "contact", None, None, "Dana", "Acme", 1, "2026-11-24", "Support"),
        ("ACagent", 1, "+15550000002", "agent", None, "AI agent", None, None, None, "2026-11-24", "Support"),
        ("ACgroup", 0, "+15550000001", "user", "USalice", "Alice Ng", None, None, None, "2026-11-25", "Sales"),
        ("ACgroup", 1, "+15550100000", "contact", None, None, "Dana", "Acme", 1, "2026-11-25", "Sales"),
        ("ACgroup", 2, "+15550100002", "contact", None, None, "Frank", "Initech", 3, "2026-11-25", "Sales"),
        ("ACgroup", 3, "+15559999999", "unknown", None, None, None, None, None, "2026-11-25", "Sales"),
    ]


def test_daily_user_stats_count_every_call(loaded):
    rows = raw_rows(loaded, "SELECT * FROM daily_user_stats ORDER BY call_date, user_id")
    alice, bob = ("USalice", "Alice Ng", "alice@example.com", "user"), ("USbob", "Bob Ray", "bob@example.com", "user")
    # calls, in, out, answered, missed, answer rate, talk s, average s, summaries, with next steps, AI-handled,
    # workspace (no workspaces file: all in default)
    assert rows == [
        ("2026-11-16", *alice, 1, 1, 0, 1, 0, 100, 60, 60, 1, 1, 0, "default"),
        ("2026-11-18", *alice, 1, 0, 1, 1, 0, None, 60, 60, 1, 0, 0, "default"),
        ("2026-11-22", *bob, 1, 1, 0, 1, 0, 100, 60, 60, 1, 1, 0, "default"),
        ("2026-11-23", *bob, 1, 1, 0, 1, 0, 100, 60, 60, 1, 1, 0, "default"),
        ("2026-11-24", "SYUagent", "AI agent", None, "agent", 1, 1, 0, 1, 0, 100, 120, 120, 1, 1, 1, "default"),
        ("2026-11-24", *alice, 1, 1, 0, 1, 0, 100, 60, 60, 0, 0, 0, "default"),
        ("2026-11-24", *bob, 2, 2, 0, 1, 1, 50, 60, 60, 1, 0, 0, "default"),
        ("2026-11-25", *alice, 1, 0, 1, 1, 0, None, 300, 300, 1, 1, 0, "default"),
    ]
    total = raw_rows(loaded, "SELECT SUM(calls) FROM daily_user_stats")
    assert total == raw_rows(loaded, "SELECT COUNT(*) FROM calls")


def test_daily_line_stats_count_every_call(loaded):
    rows = raw_rows(loaded, "SELECT * FROM daily_line_stats ORDER BY call_date, phone_number_id")
    sales, support = ("PNsales", "Sales", "+15550000001"), ("PNsupport", "Support", "+15550000002")
    assert rows == [
        ("2026-11-16", *sales, 1, 1, 0, 1, 0, 100, 60, 60, 1, 1, 0, "default"),
        ("2026-11-18", *sales, 1, 0, 1, 1, 0, None, 60, 60, 1, 0, 0, "default"),
        ("2026-11-22", *support, 1, 1, 0, 1, 0, 100, 60, 60, 1, 1, 0, "default"),
        ("2026-11-23", *sales, 1, 1, 0, 1, 0, 100, 60, 60, 1, 1, 0, "default"),
        ("2026-11-24", *sales, 1, 1, 0, 1, 0, 100, 60, 60, 0, 0, 0, "default"),
        ("2026-11-24", *support, 3, 3, 0, 2, 1, 66.7, 180, 90, 2, 1, 1, "default"),
        ("2026-11-25", *sales, 1, 0, 1, 1, 0, None, 300, 300, 1, 1, 0, "default"),
    ]
    assert raw_rows(loaded, "SELECT SUM(calls) FROM daily_line_stats") == raw_rows(
        loaded, "SELECT COUNT(*) FROM calls")
