"""`etl demo` is a sandbox.

With ETL_DATABASE_URL exported (as the README's "Use" section does), the demo
must not write a single row there; with an explicit --database-url it may,
but it never leaves an id a real sync would send.
"""

from __future__ import annotations

import re
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa
import structlog
from click.testing import CliRunner, Result

from etl import db, store
from etl.cli import cli
from etl.demo import SAMPLES
from etl.tables import queue_t, runs_t, summaries_t


@pytest.fixture(autouse=True)
def _reset_logging() -> Iterator[None]:
    yield
    structlog.reset_defaults()


def etl(*args: str, **env: str | None) -> Result:
    base: dict[str, str | None] = {"OPENPHONE_API_KEY": None, "ETL_DATABASE_URL": None,
                                   "OPENPHONE_BASE_URL": None, "ETL_LOG_FORMAT": None}
    base.update(env)
    return CliRunner(env=base).invoke(cli, list(args), catch_exceptions=False, prog_name="etl")


def table_counts(url: str) -> tuple[int, int, int]:
    engine = db.create_engine(url)
    try:
        with engine.connect() as conn:
            return tuple(conn.execute(sa.select(sa.func.count()).select_from(t)).scalar_one()  # type: ignore[return-value]
                         for t in (queue_t, summaries_t, runs_t))
    finally:
        engine.dispose()


def test_demo_ignores_etl_database_url(db_url, engine, tmp_path, monkeypatch):
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    monkeypatch.chdir(cwd)  # and writes nothing into the current directory either
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))  # the sandbox folder is one per user: this test's own
    with engine.begin() as conn:
        store.enqueue_ids(conn, ["ACreal1"])
    before = table_counts(db_url)

    result = etl("demo", ETL_DATABASE_URL=db_url)
    assert result.exit_code == 0, result.output
    assert table_counts(db_url) == before == (1, 0, 0)
    assert list(cwd.iterdir()) == []
    match = re.search(r"— into sqlite:///(\S+demo\.db) \(a throwaway demo database, replaced by the next demo\)\.$",
                      result.stdout, re.M)
    assert match, result.stdout
    sandbox = Path(match[1])
    assert sandbox.is_file() and sandbox.parent.name.startswith("etl-demo-")
    # The sandbox holds the demo (6 sample ids left, 23 discovered calls), minus the ids that ended pending.
    assert table_counts(f"sqlite:///{sandbox}") == (29, 27, 1)
    assert f"Next: `etl status --database-url sqlite:///{sandbox}`" in result.stdout


def test_demo_into_an_explicit_database_leaves_nothing_a_real_sync_would_send(db_url, engine):
    result = etl("demo", "--database-url", db_url)
    assert result.exit_code == 0, result.output
    assert "Removed the 2 rescheduled demo ids (ACdemo04progress, ACdemo05absent) from the queue, " \
           "so no real sync sends them." in result.stdout.splitlines()
    with engine.connect() as conn:
        demo_rows = dict(conn.execute(sa.select(queue_t.c.call_id, queue_t.c.state)
                                      .where(queue_t.c.call_id.in_(list(SAMPLES)))).all())
    assert "pending" not in demo_rows.values()
    assert sorted(demo_rows) == ["ACdemo01completed", "ACdemo02unicode", "ACdemo03jobs", "ACdemo06failed",
                                 "ACdemo07missing", "ACdemo08bad"]


def test_demo_discovers_syncs_and_answers_a_documented_bi_query(db_url, engine):
    from etl.demo import BI_QUERY, BI_QUERY_TITLE

    docs = (Path(__file__).parents[2] / "docs" / "schema.md").read_text("utf-8")
    block = re.search(r"<!-- call-query: summaries-per-user-per-week -->\n```sql\n(.*?)\n```", docs, re.S)
    assert block and block[1] == BI_QUERY and f"### {BI_QUERY_TITLE}" in docs  # the very query documented
    result = etl("demo", "--database-url", db_url)
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    # Worded as `etl discover` words it (issue 20, item 14).
    assert re.search(r"^Discovery run \d+: 2 phone numbers, 7 conversations, 32 calls seen, enqueued 23, 0 errors\.$",
                     result.stdout, re.M)
    start = lines.index(f"{BI_QUERY_TITLE} (docs/schema.md), from call_overview:")
    # Columns are two spaces or more apart (a person's name has one).
    shown = [re.split(r"\s{2,}", line.strip()) for line in lines[start + 2:] if line.startswith("  ")]
    with engine.connect() as conn:
        expected = [[str(v) for v in row] for row in conn.execute(sa.text(BI_QUERY))]
        # Every completed summary is counted, each with its call's user and week.
        total = conn.execute(sa.text(
            "SELECT count(*) FROM call_summaries s JOIN calls c ON c.call_id = s.call_id "
            "WHERE s.status = 'completed'")).scalar_one()
    assert shown == expected and len(expected) >= 2
    assert sum(int(row[2]) for row in expected) == total == 26
    # By name: every person is a stored user's name, never an id (issue 24).
    with engine.connect() as conn:
        names = {r[0] for r in conn.execute(sa.text("SELECT name FROM users"))}
    assert {row[1] for row in shown} <= names and all(" " in row[1] for row in shown)
    assert re.search(r"^Refreshed users 3 \(1 request, 3 new\); lines 2 \(1 request, 2 new\); "
                     r"contacts \d+ \(1 request, \d+ new\)\.$", result.stdout, re.M)


def test_demo_with_transcripts_shows_the_documented_talk_time_query(db_url, engine):
    from etl.demo import TALK_TIME_QUERY, TALK_TIME_QUERY_TITLE

    result = etl("demo", "--transcripts", "--database-url", db_url)
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    with engine.connect() as conn:
        expected = [[str(v) for v in row] for row in conn.execute(sa.text(TALK_TIME_QUERY))]
        states = dict(conn.execute(sa.text("SELECT state, COUNT(*) FROM transcript_queue GROUP BY state")).all())
    heading = (f"{TALK_TIME_QUERY_TITLE} (docs/schema.md), from call_transcript_line_overview "
               f"(first 12 of {len(expected)} rows):")
    start = lines.index(heading)
    shown = [line.split() for line in lines[start + 2:start + 14]]
    assert shown == expected[:12] and len(expected) > 12
    assert states["done"] >= 20 and "pending" not in states  # every answered call's transcript landed


def test_demo_on_the_dated_api_stores_summaries_from_the_listing(db_url, engine):
    result = etl("demo", "--database-url", db_url, "--api-version", "2026-03-30")
    assert result.exit_code == 0, result.output
    assert re.search(r"^Discovery run \d+: 30 calls seen, 28 summaries stored from the listing, enqueued 0, "
                     r"0 errors\.$", result.stdout, re.M)
    assert re.search(r"^ACdemo05absent +absent +absent ", result.stdout, re.M)
    with engine.connect() as conn:
        landed = conn.execute(sa.text("SELECT count(*) FROM call_summaries WHERE status = 'completed'")).scalar_one()
        pending = conn.execute(sa.text("SELECT count(*) FROM summary_queue WHERE state = 'pending'")).scalar_one()
    assert (landed, pending) == (26, 0)


def test_demo_refuses_an_unknown_api_version():
    result = etl("demo", "--api-version", "v2")
    assert (result.exit_code, result.output.strip().splitlines()[-1]) == (
        2, "Error: unknown API version 'v2': use v1 or 2026-03-30 (--api-version, OPENPHONE_API_VERSION)")
