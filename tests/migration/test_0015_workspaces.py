"""Revision 0015 (a workspace on every data table) down and up with a row in every table, on every database.

Rows stored before it are in ``default`` with nothing else changed; going back while every row is in
``default`` loses nothing and needs no flag (then the same rows come back); a row in another
workspace makes the downgrade refuse, unchanged, unless told, and told it keeps one row per old key
(``default``'s) where two workspaces shared one, and every row of a global id.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime
from typing import Any

import pytest
import sqlalchemy as sa

from etl import db
from etl.errors import DatabaseError
from etl.models import Base
from tests.migration.test_round_trip_with_rows import contents, open_engine, sample_rows

# The keys that are not a global id (0015 puts the workspace in them), as they were before.
OLD_KEYS = {"discovery_watermarks": ("phone_number_id",), "discovery_conversations": ("phone_number_id", "participant"),
            "discovery_call_watermarks": ("scope",), "webhook_deliveries": ("message_key",),
            "rejected_records": ("source", "endpoint", "record_id")}


@pytest.fixture
def in_default(db_url: str) -> Iterator[str]:
    """The fixture database at head with one row in every table, all in ``default``; left at head and empty."""
    rows = sample_rows()
    with open_engine(db_url) as engine, engine.begin() as conn:
        for table in Base.metadata.sorted_tables:  # parents first
            values = rows[table.name]
            if "workspace" in table.c:
                values = dict(values, workspace="default")
            conn.execute(table.insert().values(**values))
    try:
        yield db_url
    finally:
        db.upgrade(db_url)
        with open_engine(db_url) as engine, engine.begin() as conn:
            for table in reversed(Base.metadata.sorted_tables):
                conn.execute(table.delete())


def _without_workspace(found: dict[str, tuple[set[str], list[dict[str, Any]]]]) -> dict[str, Any]:
    return {table: (columns - {"workspace"}, sorted(({k: v for k, v in r.items() if k != "workspace"} for r in rows),
                                                    key=repr))
            for table, (columns, rows) in found.items()}


def _revision(url: str) -> str | None:
    with open_engine(url) as engine:
        return db.current_revision(engine)


def _views(url: str) -> dict[str, list[str]]:
    with open_engine(url) as engine, engine.connect() as conn:
        return {view: list(conn.execute(sa.text(f"SELECT * FROM {view} WHERE 1 = 0")).keys())
                for view in sa.inspect(conn).get_view_names()}


def test_rows_in_default_go_down_without_a_flag_and_come_back_the_same(in_default: str) -> None:
    url = in_default
    at_head = contents(url)
    views = _views(url)
    assert all(view[-1] == "workspace" for view in views.values()), views
    assert {r["workspace"] for table, (_, rows) in at_head.items() if table != "rate_budgets" for r in rows} == \
        {"default"}

    db.downgrade(url, "0014")  # nothing outside default: dropping the column loses nothing
    assert _revision(url) == "0014"
    down = contents(url)
    assert not any("workspace" in columns for columns, _ in down.values())
    assert down == _without_workspace(at_head)
    assert {v: cols for v, cols in _views(url).items()} == {v: cols[:-1] for v, cols in views.items()}

    db.upgrade(url)  # what 0014 held: every row in default, nothing else changed
    assert contents(url) == at_head
    assert _views(url) == views


def test_rows_of_another_workspace_refuse_the_downgrade_unless_told_then_merge(in_default: str) -> None:
    url = in_default
    rows = sample_rows()
    # North holds the same old keys as default (other content), a second delivery of default's event, and a
    # call of its own.
    north = {"discovery_watermarks": {"phone_number": "+15550000099"},
             "discovery_conversations": {"conversation_id": "CNnorth"},
             "discovery_call_watermarks": {"calls_created_since": datetime(2026, 12, 1)},
             "webhook_deliveries": {"event_type": "north.event", "event_key": None},
             "rejected_records": {"reason": "north's reason"}}
    with open_engine(url) as engine, engine.begin() as conn:
        for name, values in north.items():
            conn.execute(Base.metadata.tables[name].insert().values(**dict(rows[name], workspace="north", **values)))
        conn.execute(Base.metadata.tables["webhook_deliveries"].insert().values(
            **dict(rows["webhook_deliveries"], workspace="north", message_key="north-2")))
        conn.execute(sa.text("INSERT INTO summary_queue (call_id, workspace) VALUES ('ACnorth1', 'north')"))
    before = contents(url)

    message = ("downgrade 0015 would drop data: the workspace of 7 row(s) outside 'default' (summary_queue 1, "
               "discovery_watermarks 1, discovery_conversations 1, discovery_call_watermarks 1, webhook_deliveries 2, "
               "rejected_records 1), merging the workspaces' rows; nothing was changed "
               "(pass -x allow-data-loss=1 to alembic to drop it)")
    with pytest.raises(DatabaseError) as refused:
        db.downgrade(url, "0014")
    assert str(refused.value) == message
    assert _revision(url) == db.head_revision(url)
    assert contents(url) == before

    db.downgrade(url, "0014", allow_data_loss=True)
    after = contents(url)
    for name in OLD_KEYS:
        defaults = [{k: v for k, v in r.items() if k != "workspace"} for r in before[name][1]
                    if r["workspace"] == "default"]
        if name == "webhook_deliveries":
            # One row per message key (default's), and the event key stays unique: north's copy gives it up.
            second = next(r for r in before[name][1] if r["message_key"] == "north-2")
            defaults.append({k: v for k, v in second.items() if k != "workspace"} | {"event_key": None})
        assert after[name][1] == sorted(defaults, key=repr), name
    # A global id is never merged: both calls stay queued.
    assert sorted(r["call_id"] for r in after["summary_queue"][1]) == ["ACnorth1", "ACround0001"]

    db.upgrade(url)
    back = contents(url)
    assert {r["workspace"] for _, rows_ in back.values() for r in rows_ if "workspace" in r} == {"default"}
