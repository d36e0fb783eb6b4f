"""Revision 0012 (users, lines, contacts and the views with names) goes down and up again with rows in place.

Down: the new tables and views go, ``call_overview`` is 0007's again and the
calls stay.  Up: the tables are back (empty: a refresh fills them) and
``call_overview`` names the calls once they are stored again.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime

import pytest
import sqlalchemy as sa

from etl import db
from etl.dimensions import Listing, User
from etl.store import dimensions

NEW_TABLES = {"users", "phone_numbers", "phone_number_users", "contacts", "contact_phone_numbers", "contact_emails",
              "contact_custom_fields", "dimension_refreshes"}
NEW_VIEWS = {"contact_number_matches", "call_party_overview", "daily_user_stats", "daily_line_stats"}
NAME_COLUMNS = ["user_name", "user_email", "user_kind", "phone_number_name", "phone_number", "other_party_number",
                "contact_id", "contact_name", "contact_company"]


@pytest.fixture
def restore_head(db_url: str) -> Iterator[str]:
    """The fixture database, left at head after the test whatever it did."""
    try:
        yield db_url
    finally:
        db.upgrade(db_url)


def _overview_columns(engine: sa.Engine) -> list[str]:
    with engine.connect() as conn:
        return list(conn.execute(sa.text("SELECT * FROM call_overview WHERE 1 = 0")).keys())


def test_0012_down_and_up_with_rows(restore_head):
    url = restore_head
    engine = db.create_engine(url)
    try:
        with engine.begin() as conn:
            conn.execute(sa.text(
                "INSERT INTO calls (call_id, created_at, user_id, participant_count, content_hash, raw_json, "
                "first_synced_at, last_synced_at) VALUES ('ACmig', :t, 'USa', 0, 'h', '{}', :t, :t)"),
                {"t": datetime(2026, 12, 1, 9)})
            dimensions.save_users(conn, Listing(items=(User(id="USa", email="a@x.com", first_name="Ann",
                                                            last_name=None, role="member"),),
                                                complete=True, requests=1), datetime(2026, 12, 1, 10))
        before = _overview_columns(engine)
        # Head's call_overview: 0012's names, then 0015's workspace last.
        assert before[-len(NAME_COLUMNS) - 1:] == [*NAME_COLUMNS, "workspace"]
        with engine.connect() as conn:
            assert conn.execute(sa.text("SELECT call_id, user_name FROM call_overview")).all() == [("ACmig", "Ann")]

        db.downgrade(url, "0009", allow_data_loss=True)  # 0012 drops the users it holds (issue 25: refused unless told)
        engine.dispose()
        inspector = sa.inspect(engine)
        assert not NEW_TABLES & set(inspector.get_table_names())
        assert not NEW_VIEWS & set(inspector.get_view_names())
        assert _overview_columns(engine) == before[:-len(NAME_COLUMNS) - 1]
        with engine.connect() as conn:
            assert conn.execute(sa.text("SELECT call_id FROM call_overview")).all() == [("ACmig",)]

        db.upgrade(url)
        engine.dispose()
        assert set(sa.inspect(engine).get_table_names()) >= NEW_TABLES
        assert _overview_columns(engine) == before
        with engine.connect() as conn:
            assert conn.execute(sa.text("SELECT call_id, user_name, user_kind FROM call_overview")).all() == [
                ("ACmig", None, "unknown user")]
            assert conn.execute(sa.text("SELECT COUNT(*) FROM users")).scalar_one() == 0
    finally:
        with engine.begin() as conn:
            conn.execute(sa.text("DELETE FROM calls"))
        engine.dispose()
