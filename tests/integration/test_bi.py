"""The BI contract of docs/schema.md, checked on every database.

* Every example query in docs/schema.md (a ```sql block after a
  ``<!-- query: name -->`` line) runs unchanged on SQLite, PostgreSQL and
  MariaDB against fixture data loaded through the real sync path, and must
  give exactly the answer recorded here: the documentation cannot rot.
* The views' rows are exact (``value_display``, joined next steps, queue
  state, completion lag), and the documented columns are the real ones.
* Indexes accept hostile 100 kB names, column comments exist on the servers,
  and migration 0002 goes down and up again with ``alembic check`` clean.
"""

from __future__ import annotations

import re
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from alembic import command
from sqlalchemy.engine import Engine

from etl import db, store
from etl.config import Backoff
from etl.models import VIEWS, Base
from tests.support.db import fresh_url, queue_rows, raw_rows, run

SCHEMA_DOC = Path(__file__).resolve().parents[2] / "docs" / "schema.md"
_QUERY_RE = re.compile(r"^<!-- query: ([a-z0-9-]+) -->\n```sql\n(.*?)\n```$", re.M | re.S)


def documented_queries() -> dict[str, str]:
    text = SCHEMA_DOC.read_text(encoding="utf-8")
    found = _QUERY_RE.findall(text)
    queries = dict(found)
    assert len(queries) == len(found), "two documented queries share a name"
    # A marker whose block the pattern missed would silently go untested.
    assert text.count("<!-- query:") == len(found)
    return queries


def documented_columns() -> dict[str, list[str]]:
    """``{table or view: [column, …]}`` from the "### `name` (table|view)" sections."""
    sections: dict[str, list[str]] = {}
    current: list[str] | None = None
    for line in SCHEMA_DOC.read_text(encoding="utf-8").splitlines():
        heading = re.match(r"^### `(\w+)` \((table|view)\)$", line)
        if heading:
            current = sections.setdefault(heading.group(1), [])
        elif line.startswith("#"):
            current = None
        elif current is not None:
            row = re.match(r"^\| `(\w+)` \|", line)
            if row:
                current.append(row.group(1))
    return sections


# --- fixture data, loaded through the real sync path ------------------------------

LEAD = "Lead qualification"
OUTCOME = "Call outcome"


def _job(name: str, icon: str, **fields: object) -> dict[str, object]:
    return {"icon": icon, "name": name, "result": {"data": [{"name": k, "value": v} for k, v in fields.items()]}}


def _summary(call_id: str, summary: list[str] | None, steps: list[str] | None,
             jobs: list[dict[str, object]] | None, status: str = "completed") -> dict[str, object]:
    data: dict[str, object] = {"callId": call_id, "status": status, "summary": summary, "nextSteps": steps}
    if jobs is not None:
        data["jobs"] = jobs
    return data


SUMMARIES = {
    "ACbi01": _summary(
        "ACbi01",
        ["The customer asked for a refund of the March invoice.", "They want to renew next month."],
        ["Refund the duplicate March invoice.", "Send the pricing sheet."],
        [_job(LEAD, "📋", **{"Qualified": True, "Lead score": 87, "Budget (USD)": 1250.5, "Sentiment": "positive"}),
         _job(OUTCOME, "📞", **{"Follow-up needed": True})],
    ),
    "ACbi02": _summary(
        "ACbi02",
        ["Renewal is due next month; no Refund needed."],
        ["Schedule a follow-up call next week."],
        [_job(LEAD, "📋", **{"Qualified": False, "Lead score": 2.0, "Sentiment": "neutral"}),
         _job(OUTCOME, "📞", **{"Follow-up needed": False})],
    ),
    # Synced last week: outside the "this week" range of the documented query.
    "ACbi03": _summary(
        "ACbi03",
        ["REFUND requested for the annual plan."],
        ["Ask finance to approve the refund."],
        [_job(LEAD, "📋", **{"Qualified": True, "Lead score": 1234567890123, "Sentiment": "positive"})],
    ),
    "ACbi04": _summary("ACbi04", [], None, None),
    "ACbi05": _summary("ACbi05", None, None, None, status="failed"),
    "ACbi09": _summary("ACbi09", None, None, None, status="in-progress"),
}
# ACbi06/07: unknown to the API (404); ACbi08: 400; ACbi10: set to "error" directly.
CALL_IDS = [f"ACbi{i:02d}" for i in range(1, 11)]
GAVE_UP = "gave up after 8 attempts: HTTP 503 Service Unavailable"

# (enqueued_at, finished_at) and (first_synced_at, last_synced_at), fixed so
# that dates and lags have exact answers.
QUEUE_TIMES = {
    "ACbi01": ("2026-11-23 09:00:00", "2026-11-23 09:00:42"),
    "ACbi02": ("2026-11-24 08:00:00", "2026-11-24 09:30:00"),
    "ACbi03": ("2026-11-16 10:00:00", "2026-11-16 10:00:05"),
    "ACbi04": ("2026-11-24 10:00:00.250000", "2026-11-24 10:02:00.125000"),  # 119.875 s
    "ACbi05": ("2026-11-25 10:00:00", "2026-11-25 10:00:30"),
}
SYNC_TIMES = {
    "ACbi01": ("2026-11-23 09:00:42", "2026-11-25 12:00:00"),
    "ACbi02": ("2026-11-24 09:30:00", "2026-11-24 09:30:00"),
    "ACbi03": ("2026-11-16 10:00:05", "2026-11-16 10:00:05"),
    "ACbi04": ("2026-11-24 10:02:00.125000", "2026-11-24 10:02:00.125000"),
    "ACbi05": ("2026-11-25 10:00:30", "2026-11-25 10:00:30"),
}


def _ts(text: str) -> datetime:
    return datetime.fromisoformat(text)


def load_fixture(engine: Engine, settings: Any, fake: Any) -> None:
    fake.default_status = None  # ids without a summary answer 404
    for call_id, data in SUMMARIES.items():
        fake.set_summary(call_id, data)
    fake.set_response("ACbi08", 400, {"message": "Invalid call id", "code": "0500400"})
    with engine.begin() as conn:
        store.enqueue_ids(conn, CALL_IDS)
        conn.execute(sa.text(
            "UPDATE summary_queue SET state = 'error', attempts = 8, consecutive_errors = 8, "
            "last_api_status = 'http 503', last_error = :error, finished_at = :at WHERE call_id = 'ACbi10'"
        ), {"error": GAVE_UP, "at": _ts("2026-11-25 11:00:00")})
    # ACbi06/07's 404s final at once (the not-found window: test_sync_calls.py).
    stats = run(engine, settings.replace(backoff=Backoff(not_found_window=0)), fake)
    assert (stats.claimed, stats.completed, stats.rescheduled, stats.errors) == (9, 4, 1, 0)
    assert (stats.failed, stats.absent, stats.not_found, stats.invalid) == (1, 0, 2, 1)
    with engine.begin() as conn:
        for call_id, (enqueued, finished) in QUEUE_TIMES.items():
            conn.execute(sa.text(
                "UPDATE summary_queue SET enqueued_at = :e, finished_at = :f WHERE call_id = :c"
            ), {"e": _ts(enqueued), "f": _ts(finished), "c": call_id})
        for call_id, (first, last) in SYNC_TIMES.items():
            conn.execute(sa.text(
                "UPDATE call_summaries SET first_synced_at = :f, last_synced_at = :l WHERE call_id = :c"
            ), {"f": _ts(first), "l": _ts(last), "c": call_id})
    states = {k: v["state"] for k, v in queue_rows(engine).items()}
    assert states == {
        "ACbi01": "done", "ACbi02": "done", "ACbi03": "done", "ACbi04": "done", "ACbi05": "failed",
        "ACbi06": "not_found", "ACbi07": "not_found", "ACbi08": "invalid", "ACbi09": "pending",
        "ACbi10": "error",
    }





# --- documented queries -----------------------------------------------------------

NOT_FOUND = "HTTP 404 Not Found: Call summary not found"
EXPECTED: dict[str, list[tuple[Any, ...]]] = {
    "lead-qualification-pivot": [
        ("ACbi01", "true", 87.0, 1250.5, "positive"),
        ("ACbi02", "false", 2.0, None, "neutral"),
        ("ACbi03", "true", 1234567890123.0, None, "positive"),
    ],
    "sentiment-answers": [("positive", 2), ("neutral", 1)],
    "follow-up-calls": [("ACbi01", "Refund the duplicate March invoice.\nSend the pricing sheet.")],
    "completion-lag": [
        ("under 1 minute", 2, 5, 42),
        ("1 to 60 minutes", 1, 119, 119),
        ("over 1 hour", 1, 5400, 5400),
    ],
    "failure-reasons": [
        ("not_found", NOT_FOUND, 2),
        ("error", GAVE_UP, 1),
        ("failed", "the API reports that the summary failed", 1),
        ("invalid", "HTTP 400 Bad Request: Invalid call id", 1),
    ],
    "queue-by-state": [
        ("done", 4), ("error", 1), ("failed", 1), ("invalid", 1), ("not_found", 2), ("pending", 1),
    ],
    # failed, absent, not_found, invalid: each end state its own counter (revision 0009).
    "run-history": [("sync", 1, 9, 4, 1, 1, 0, 2, 1, 0, 0)],
}


def test_every_documented_query_has_an_expected_answer():
    assert sorted(documented_queries()) == sorted(EXPECTED)
    assert len(EXPECTED) >= 6


@pytest.fixture
def loaded(engine, settings, fake) -> Engine:
    load_fixture(engine, settings, fake)
    return engine


def test_documented_queries_give_the_recorded_answers(loaded):
    queries = documented_queries()
    answers = {name: raw_rows(loaded, sql) for name, sql in queries.items()}
    assert answers == EXPECTED


# --- the views ----------------------------------------------------------------------


def _bool(value: Any) -> bool | None:
    return None if value is None else bool(value)


def test_overview_has_one_exact_row_per_stored_summary(loaded):
    rows = raw_rows(loaded, """
        SELECT call_id, status, summary_text, next_steps_text, line_count, next_step_count, job_count,
               queue_state, attempts, last_api_status, last_error, completion_seconds
        FROM call_summary_overview ORDER BY call_id""")
    assert rows == [
        ("ACbi01", "completed",
         "The customer asked for a refund of the March invoice.\nThey want to renew next month.",
         "Refund the duplicate March invoice.\nSend the pricing sheet.", 2, 2, 2, "done", 1, "completed", None, 42),
        ("ACbi02", "completed", "Renewal is due next month; no Refund needed.",
         "Schedule a follow-up call next week.", 1, 1, 2, "done", 1, "completed", None, 5400),
        ("ACbi03", "completed", "REFUND requested for the annual plan.",
         "Ask finance to approve the refund.", 1, 1, 1, "done", 1, "completed", None, 5),
        # summary [] is '' and nextSteps null gives no rows, so NULL.
        ("ACbi04", "completed", "", None, 0, 0, 0, "done", 1, "completed", None, 119),
        ("ACbi05", "failed", None, None, 0, 0, 0, "failed", 1, "failed",
         "the API reports that the summary failed", 30),
    ]


def test_overview_timestamps_come_from_queue_and_summary(loaded):
    with loaded.connect() as conn:
        row = conn.execute(sa.text(
            "SELECT enqueued_at, finished_at, first_synced_at, last_synced_at "
            "FROM call_summary_overview WHERE call_id = 'ACbi04'"
        )).one()
    # SQLite hands back the stored text; the servers a datetime.
    assert [str(v)[:26] for v in row] == [
        "2026-11-24 10:00:00.250000", "2026-11-24 10:02:00.125000",
        "2026-11-24 10:02:00.125000", "2026-11-24 10:02:00.125000",
    ]


def test_overview_joins_next_steps_by_position_and_survives_a_purged_queue_row(loaded):
    with loaded.begin() as conn:
        # Rows written in reverse position order: the join must still follow position.
        conn.execute(sa.text("DELETE FROM call_next_steps WHERE call_id = 'ACbi01'"))
        for pos, text in ((2, "third"), (0, "first"), (1, "second")):
            conn.execute(sa.text("INSERT INTO call_next_steps (call_id, position, text) VALUES ('ACbi01', :p, :t)"),
                         {"p": pos, "t": text})
        conn.execute(sa.text("DELETE FROM summary_queue WHERE call_id = 'ACbi02'"))
    rows = raw_rows(loaded, "SELECT call_id, next_steps_text, queue_state, attempts, completion_seconds "
                         "FROM call_summary_overview WHERE call_id IN ('ACbi01', 'ACbi02') ORDER BY call_id")
    assert rows == [
        ("ACbi01", "first\nsecond\nthird", "done", 1, 42),
        ("ACbi02", "Schedule a follow-up call next week.", None, None, None),
    ]


def test_completion_seconds_truncates_toward_zero(loaded):
    with loaded.begin() as conn:
        conn.execute(sa.text("UPDATE summary_queue SET enqueued_at = :e, finished_at = :f WHERE call_id = 'ACbi01'"),
                     {"e": _ts("2026-11-23 09:00:00.000001"), "f": _ts("2026-11-23 09:00:10")})
        # Clock skew between the database (enqueued_at) and the job (finished_at).
        conn.execute(sa.text("UPDATE summary_queue SET enqueued_at = :e, finished_at = :f WHERE call_id = 'ACbi02'"),
                     {"e": _ts("2026-11-24 08:00:01.900000"), "f": _ts("2026-11-24 08:00:00")})
    rows = raw_rows(loaded, "SELECT call_id, completion_seconds FROM call_summary_overview "
                         "WHERE call_id IN ('ACbi01', 'ACbi02') ORDER BY call_id")
    assert rows == [("ACbi01", 9), ("ACbi02", -1)]


# (JSON value, value_type, value_display); integers are doubles in value_number.
DISPLAY_CASES: list[tuple[object, str, str]] = [
    (True, "boolean", "true"),
    (False, "boolean", "false"),
    (2, "number", "2"),
    (2.0, "number", "2"),
    (2.5, "number", "2.5"),
    (-0.5, "number", "-0.5"),
    (0, "number", "0"),
    (-7, "number", "-7"),
    (0.1, "number", "0.1"),
    (1234567890123, "number", "1234567890123"),
    (12345678901234567, "number", "12345678901234568"),  # the nearest double
    (-9007199254740993, "number", "-9007199254740992"),
    ("x", "string", "x"),
    ("", "string", ""),
    ("1", "string", "1"),
    ("true", "string", "true"),
]
# Beyond whole numbers under 9.2e18 each database prints a double its own way.
NATIVE_CASES: dict[str, dict[float, str]] = {
    "sqlite": {1e20: "1.0e+20", 0.30000000000000004: "0.3"},
    "postgresql": {1e20: "1e+20", 0.30000000000000004: "0.30000000000000004"},
    "mysql": {1e20: "1e20", 0.30000000000000004: "0.30000000000000004"},
}


def test_field_values_view_types_and_displays_every_value(engine, settings, fake):
    native = NATIVE_CASES[engine.dialect.name]
    values = [v for v, _, _ in DISPLAY_CASES] + list(native)
    fake.set_summary("ACvals", _summary("ACvals", ["s"], [], [
        _job("Types", "🧪", **{f"f{i:02d}": v for i, v in enumerate(values)}),
    ]))
    with engine.begin() as conn:
        store.enqueue_ids(conn, ["ACvals"])
    assert run(engine, settings, fake).completed == 1
    rows = raw_rows(engine, """
        SELECT call_id, job_position, job_name, field_position, field_name, value_type,
               value_text, value_number, value_boolean, value_display
        FROM call_job_field_values ORDER BY field_position""")
    expected_display = [(t, d) for _, t, d in DISPLAY_CASES] + [("number", d) for d in native.values()]
    expected = []
    for i, (value, (value_type, display)) in enumerate(zip(values, expected_display, strict=True)):
        expected.append((
            "ACvals", 0, "Types", i, f"f{i:02d}", value_type,
            value if value_type == "string" else None,
            float(value) if value_type == "number" else None,  # type: ignore[arg-type]
            value if value_type == "boolean" else None,
            display,
        ))
    assert [(*r[:8], _bool(r[8]), r[9]) for r in rows] == expected


def test_documented_columns_are_the_real_ones(engine):
    documented = documented_columns()
    assert sorted(documented) == sorted([*Base.metadata.tables, *VIEWS])
    for name, table in Base.metadata.tables.items():
        assert documented[name] == [c.name for c in table.columns], name
    with engine.connect() as conn:
        for view in VIEWS:
            keys = list(conn.execute(sa.text(f"SELECT * FROM {view} WHERE 1 = 0")).keys())
            assert documented[view] == keys, view


# --- indexes ------------------------------------------------------------------------


def test_indexes_exist_and_the_claim_index_stays_lean(engine):
    inspector = sa.inspect(engine)

    def indexes(table: str) -> dict[str, list[str | None]]:
        return {ix["name"]: ix["column_names"] for ix in inspector.get_indexes(table)}

    assert indexes("call_summaries") == {
        "ix_call_summaries_status": ["status"], "ix_call_summaries_last_synced_at": ["last_synced_at"],
    }
    assert indexes("call_jobs") == {"ix_call_jobs_name": ["name"]}
    assert indexes("call_job_fields")["ix_call_job_fields_name"] == ["name"]
    assert indexes("summary_queue") == {"ix_summary_queue_due": ["workspace", "state", "next_attempt_at"]}
    assert indexes("transcript_queue") == {"ix_transcript_queue_due": ["workspace", "state", "next_attempt_at"]}


def test_a_100_kb_job_and_field_name_is_stored_and_found(engine, settings, fake):
    job_name, field_name = "J" * 100_000 + "ö", "F" * 100_000 + "€"
    fake.set_summary("AChuge", _summary("AChuge", ["s"], [], [_job(job_name, "🧪", **{field_name: 1})]))
    with engine.begin() as conn:
        store.enqueue_ids(conn, ["AChuge"])
    stats = run(engine, settings, fake)
    assert (stats.completed, stats.errors) == (1, 0)
    with engine.connect() as conn:
        jobs = conn.execute(sa.text("SELECT call_id FROM call_jobs WHERE name = :n"), {"n": job_name}).all()
        fields = conn.execute(sa.text(
            "SELECT job_name, value_display FROM call_job_field_values WHERE field_name = :n"
        ), {"n": field_name}).all()
        # The same prefix, another name: an index prefix must not merge them.
        other = conn.execute(sa.text("SELECT COUNT(*) FROM call_jobs WHERE name = :n"),
                             {"n": "J" * 100_000}).scalar_one()
    assert jobs == [("AChuge",)]
    assert fields == [(job_name, "1")]
    assert other == 0


# --- comments and migrations ---------------------------------------------------------


@pytest.fixture(params=("postgresql", "mysql"))
def server_engine(request: pytest.FixtureRequest, tmp_path: Path, sqlite_template: Path):
    eng = db.create_engine(fresh_url(request.param, tmp_path, sqlite_template))
    yield eng
    eng.dispose()


def test_every_column_has_its_comment_on_the_servers(server_engine):
    inspector = sa.inspect(server_engine)
    for name, table in Base.metadata.tables.items():
        actual = {c["name"]: c.get("comment") for c in inspector.get_columns(name)}
        wanted = {c.name: c.comment for c in table.columns}
        assert all(wanted.values()), f"{name}: a model column has no comment"
        assert actual == wanted, name


def _views_in(engine: Engine) -> set[str]:
    return set(sa.inspect(engine).get_view_names()) & set(VIEWS)


def test_migration_0002_goes_down_and_up_with_alembic_check_clean(db_url, engine):
    config = db.alembic_config(db_url)
    command.check(config)  # raises if autogenerate sees any difference
    assert _views_in(engine) == set(VIEWS)

    db.downgrade(db_url, "0001")
    engine.dispose()
    assert db.current_revision(engine) == "0001"
    assert _views_in(engine) == set()
    assert {ix["name"] for ix in sa.inspect(engine).get_indexes("call_jobs")} == set()
    if engine.dialect.name != "sqlite":
        comments = {c["name"]: c.get("comment") for c in sa.inspect(engine).get_columns("summary_queue")}
        assert set(comments.values()) == {None}

    db.upgrade(db_url)
    engine.dispose()
    assert db.current_revision(engine) == db.SCHEMA_HEAD
    command.check(config)
    assert _views_in(engine) == set(VIEWS)
    assert raw_rows(engine, "SELECT COUNT(*) FROM call_summary_overview") == [(0,)]
