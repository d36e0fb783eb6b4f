"""Every revision, down and up, with a row in every table: nothing that both revisions hold is lost (issue 25).

Built from the metadata (``etl.models.Base``): each table gets one row, its
values chosen by column type, overridden by :data:`SAMPLE` where a constraint
or a key needs a given value.  A table without a :data:`SAMPLE` entry fails the
test by name, so a table another change adds is covered or loudly not.

Then the database goes down one revision at a time to the first and back up
to head; after every step each table that exists both before and after keeps
its row count, and its content on the columns it kept.  (Issue 25, finding 1:
the SQLite rebuilds of 0007→0006 ran with foreign keys on and emptied the
children of ``calls`` and ``call_summaries``.)
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import date, datetime
from typing import Any

import pytest
import sqlalchemy as sa
from alembic.script import ScriptDirectory
from sqlalchemy.engine import Engine

from etl import db
from etl.errors import DatabaseError
from etl.models import Base

CALL = "ACround0001"
# Every sample row is in a workspace of its own (revision 0015): its downgrade must see that it merges.
WORKSPACE = "north"
WHEN = datetime(2026, 11, 30, 9, 15, 0)

# Values a table needs beyond the defaults of sample_value (constraints, keys shared with a parent).
SAMPLE: dict[str, dict[str, Any]] = {
    "summary_queue": {"state": "done"},
    "call_summaries": {"status": "completed"},
    "call_summary_lines": {},
    "call_next_steps": {},
    "call_jobs": {},
    "call_job_fields": {"value_type": "string"},
    "sync_runs": {},
    "rate_budgets": {},
    "calls": {},
    "call_participants": {},
    "call_voicemails": {},
    "call_lookups": {"state": "retrying"},
    "discovery_watermarks": {},
    "discovery_conversations": {},
    "discovery_call_watermarks": {},
    "discovery_runs": {},
    "webhook_deliveries": {},
    "transcript_queue": {"state": "done"},
    "call_transcripts": {"status": "completed"},
    "call_transcript_lines": {},
    "rejected_records": {},
    # Migration 0012 (users, lines, contacts): children share their parent's key by column name.
    "users": {},
    "phone_numbers": {},
    "phone_number_users": {},
    "contacts": {"gone_reason": "unlisted"},
    "contact_phone_numbers": {},
    "contact_emails": {},
    "contact_custom_fields": {"value_type": "string"},
    "dimension_refreshes": {"resource": "users"},
}


# Columns a step rewrites on purpose, by (step, table): not compared across that step.
REWRITTEN: dict[tuple[str, str], set[str]] = {
    ("downgrade to 0008", "sync_runs"): {"failed"},  # 0009 folds absent/not_found/invalid back into failed
    # 0013 folds each transcripts_* counter back into the shared one (forbidden into failed).
    ("downgrade to 0012", "sync_runs"): {"claimed", "completed", "rescheduled", "failed", "absent", "not_found",
                                         "invalid", "errors", "fetched"},
}


def sample_value(column: sa.Column[Any]) -> Any:
    """A value of the column's type; the same for every key column of that name, so children find parents."""
    if column.name == "call_id":
        return CALL
    if column.name == "workspace":
        return WORKSPACE
    try:
        python_type = column.type.python_type
    except NotImplementedError:
        python_type = str
    if python_type is bool:
        return True
    if python_type is int:
        return 1
    if python_type is float:
        return 1.5
    if python_type is datetime:
        return WHEN
    if python_type is date:
        return WHEN.date()
    if python_type in (dict, list):
        return {}
    length = getattr(column.type, "length", None) or 40
    return f"{column.name}-1"[:length]


def sample_rows() -> dict[str, dict[str, Any]]:
    missing = sorted(set(Base.metadata.tables) - set(SAMPLE))
    if missing:
        pytest.fail(f"no sample row for table(s) {', '.join(missing)}: add them to SAMPLE in {__name__}")
    rows = {}
    for name, table in Base.metadata.tables.items():
        row = {c.name: sample_value(c) for c in table.columns if not (c.autoincrement is True and c.primary_key)}
        row.update(SAMPLE[name])
        rows[name] = row
    return rows


@contextmanager
def open_engine(url: str) -> Iterator[Engine]:
    engine = db.create_engine(url)
    try:
        yield engine
    finally:
        engine.dispose()


def contents(url: str) -> dict[str, tuple[set[str], list[dict[str, Any]]]]:
    """Every table: its columns and its rows (values as text, so drivers compare alike)."""
    found = {}
    with open_engine(url) as engine, engine.connect() as conn:
        inspector = sa.inspect(conn)
        for table in inspector.get_table_names():
            if table == "alembic_version":
                continue
            columns = {c["name"] for c in inspector.get_columns(table)}
            rows = [{k: _text(v) for k, v in r._mapping.items()}
                    for r in conn.execute(sa.text(f"SELECT * FROM {table}"))]
            found[table] = (columns, sorted(rows, key=repr))
    return found


def _text(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, datetime):
        return value.replace(tzinfo=None).isoformat(sep=" ")
    if isinstance(value, bool):
        return str(int(value))
    text = str(value)
    try:
        number = float(text)
        return repr(number) if not number.is_integer() else str(int(number))
    except ValueError:
        return text


def assert_kept(before: dict[str, Any], after: dict[str, Any], step: str) -> None:
    for table, (columns, rows) in before.items():
        if table not in after:
            continue
        columns_after, rows_after = after[table]
        assert len(rows_after) == len(rows), f"{step}: {table} had {len(rows)} row(s), now {len(rows_after)}"
        shared = (columns & columns_after) - REWRITTEN.get((step, table), set())
        kept = sorted(({k: v for k, v in r.items() if k in shared} for r in rows), key=repr)
        now = sorted(({k: v for k, v in r.items() if k in shared} for r in rows_after), key=repr)
        assert now == kept, f"{step}: {table} changed"


def revisions(url: str) -> list[str]:
    """Revision ids, first to head."""
    script = ScriptDirectory.from_config(db.alembic_config(url))
    return [r.revision for r in reversed(list(script.walk_revisions()))]


@pytest.fixture
def filled(db_url: str) -> Iterator[str]:
    """The fixture database at head with one row in every table; left at head and empty afterwards."""
    rows = sample_rows()
    with open_engine(db_url) as engine, engine.begin() as conn:
        for table in Base.metadata.sorted_tables:  # parents first
            conn.execute(table.insert().values(**rows[table.name]))
    try:
        yield db_url
    finally:
        db.upgrade(db_url)
        with open_engine(db_url) as engine, engine.begin() as conn:
            for table in reversed(Base.metadata.sorted_tables):
                conn.execute(table.delete())


def test_every_table_has_a_sample_row() -> None:
    assert set(sample_rows()) == set(Base.metadata.tables)


def test_down_and_up_through_every_revision_keeps_every_row(filled: str) -> None:
    url = filled
    chain = revisions(url)
    start = contents(url)
    assert all(rows for _, rows in start.values()), "every table starts with a row"
    before = start
    for target in reversed(chain[:-1]):
        db.downgrade(url, target, allow_data_loss=True)
        after = contents(url)
        assert_kept(before, after, f"downgrade to {target}")
        before = after
    for target in chain[1:]:
        db.upgrade(url, target)
        after = contents(url)
        assert_kept(before, after, f"upgrade to {target}")
        before = after


def test_a_downgrade_that_would_drop_data_is_refused_unless_told(filled: str) -> None:
    url = filled
    chain = revisions(url)
    head = chain[-1]
    start = contents(url)
    with pytest.raises(DatabaseError, match=r"would drop data: .*allow-data-loss=1"):
        db.downgrade(url, chain[-2])
    with open_engine(url) as engine:
        assert db.current_revision(engine) == head
    assert contents(url) == start  # the refused revision was rolled back whole


def test_going_below_0013_needs_no_flag_its_counters_fold_into_0012s(filled: str) -> None:
    """0013's downgrade drops the transcripts_* counters after adding each to the shared one (as the code
    before it counted): nothing a 0012 schema can hold is lost, so the data-loss guard lets it pass, with a
    row in every table, and the way back up keeps every row."""
    url = filled
    db.downgrade(url, "0013", allow_data_loss=True)  # 0015 merges workspace north, 0014 drops rejected_records
    before = contents(url)
    db.downgrade(url, "0012")
    after = contents(url)
    assert_kept(before, after, "downgrade to 0012")
    (row,) = after["sync_runs"][1]
    # Each shared counter 1 plus its transcript counter 1; failed also takes transcripts_forbidden.
    assert [row[c] for c in ("claimed", "completed", "failed", "fetched", "errors")] == ["2", "2", "3", "2", "2"]
    assert not [c for c in after["sync_runs"][0] if c.startswith("transcripts_")]
    db.upgrade(url, "0013")
    assert_kept(after, contents(url), "upgrade to 0013")
