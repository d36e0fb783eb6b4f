"""Throwaway databases per backend, one in-process sync run, and the queue read back.

``ETL_TEST_POSTGRES_URL`` / ``ETL_TEST_MYSQL_URL`` name throwaway databases;
the tests migrate them once and empty the tables before every test.  Without a
URL those tests skip with the reason; with ``ETL_TEST_REQUIRE_ALL_DBS=1`` (set
by CI) a missing URL is a failure instead, so CI cannot go green on SQLite alone.

Under pytest-xdist each worker gets databases of its own, named after the given
ones plus the worker id (``etl_ci`` -> ``etl_ci_gw0``) on the same server and
created on first use, so parallel tests never empty each other's tables.  The
URL's user must be allowed to create databases (CI connects as the PostgreSQL
superuser and MariaDB root).
"""

from __future__ import annotations

import os
import shutil
from datetime import timedelta
from decimal import Decimal
from functools import cache
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Engine, make_url

from etl import Etl, db
from etl.clock import utcnow
from etl.config import Settings
from etl.sync import RunStats
from etl.testing import FakeOpenPhone
from etl.testing.clock import FakeClock

BACKENDS = ("sqlite", "postgresql", "mysql")
ENV_FOR = {"postgresql": "ETL_TEST_POSTGRES_URL", "mysql": "ETL_TEST_MYSQL_URL"}
API_KEY = "test-key-0123456789"
# Children before parents, so deletes never trip a foreign key.
TABLES = ("rejected_records", "phone_number_users", "phone_numbers", "users", "contact_phone_numbers", "contact_emails",
          "contact_custom_fields", "contacts", "dimension_refreshes",
          "call_transcript_lines", "call_transcripts", "transcript_queue",
          "webhook_deliveries", "rate_budgets", "call_participants", "call_voicemails", "discovery_call_watermarks",
          "calls", "call_lookups", "discovery_conversations", "discovery_watermarks", "discovery_runs",
          "call_job_fields", "call_jobs", "call_next_steps", "call_summary_lines", "call_summaries", "summary_queue",
          "sync_runs")

_migrated: set[str] = set()


def server_url(backend: str) -> str:
    """The test database URL of a server backend (this xdist worker's own), migrated to head once per
    process; skips (or fails under CI) without it."""
    env = ENV_FOR[backend]
    url = os.environ.get(env)
    if not url:
        message = f"{env} is not set: {backend} tests need a throwaway database URL"
        if os.environ.get("ETL_TEST_REQUIRE_ALL_DBS") == "1":
            pytest.fail(message + " (required: ETL_TEST_REQUIRE_ALL_DBS=1)")
        pytest.skip(message)
    worker = os.environ.get("PYTEST_XDIST_WORKER")
    if worker:
        url = _worker_database(url, worker)
    if url not in _migrated:  # at head whichever test asks first, whatever ran before on this server
        db.upgrade(url)
        _migrated.add(url)
    return url


@cache
def _worker_database(url: str, worker: str) -> str:
    """``url`` with ``_<worker>`` appended to its database name, the database created if missing.

    The new database takes the given one's character set (MariaDB) so that
    both behave alike; PostgreSQL databases here all use the server's UTF-8.
    """
    given = make_url(url)
    name = f"{given.database}_{worker}"
    admin = sa.create_engine(given.set(database="postgres" if backend_of(url) == "postgresql" else None),
                             isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            if backend_of(url) == "postgresql":
                exists = conn.execute(sa.text("SELECT 1 FROM pg_database WHERE datname = :n"), {"n": name}).first()
                if not exists:
                    conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
            else:
                charset = conn.execute(sa.text(
                    "SELECT default_character_set_name, default_collation_name FROM information_schema.schemata "
                    "WHERE schema_name = :n"), {"n": given.database}).first()
                character_set, collation = charset if charset else ("utf8mb4", "utf8mb4_unicode_ci")
                conn.execute(sa.text(f"CREATE DATABASE IF NOT EXISTS `{name}` "
                                     f"CHARACTER SET {character_set} COLLATE {collation}"))
    finally:
        admin.dispose()
    return given.set(database=name).render_as_string(hide_password=False)


def backend_of(url: str) -> str:
    """``postgresql`` or ``mysql`` (MariaDB) for a server URL."""
    return "postgresql" if make_url(url).get_backend_name() == "postgresql" else "mysql"


def empty_tables(url: str) -> None:
    engine = db.create_engine(url)
    try:
        with engine.begin() as conn:
            for table in TABLES:
                conn.execute(sa.text(f"DELETE FROM {table}"))
    finally:
        engine.dispose()


def fresh_url(backend: str, tmp_path: Path, sqlite_template: Path) -> str:
    """A migrated, empty database of ``backend`` for one test."""
    if backend == "sqlite":
        target = tmp_path / "etl.db"
        shutil.copy(sqlite_template, target)
        return f"sqlite:///{target}"
    url = server_url(backend)
    empty_tables(url)
    return url


def clock_after_enqueue() -> FakeClock:
    """A FakeClock on the whole second after now: ids just enqueued (due at the database's now) are due on it."""
    return FakeClock(utcnow().replace(microsecond=0) + timedelta(seconds=1))


def run(engine: Engine, settings: Settings, fake: FakeOpenPhone, **options: Any) -> RunStats:
    """One real sync run against ``fake`` through an httpx transport."""
    return Etl(settings, engine=engine).sync(**options, transport=fake.transport())


def queue_rows(engine: Engine) -> dict[str, dict[str, Any]]:
    with engine.connect() as conn:
        rows = conn.execute(sa.text("SELECT * FROM summary_queue ORDER BY call_id"))
        return {r.call_id: dict(r._mapping) for r in rows}


def make_due(engine: Engine) -> None:
    """Pretend time passed: every pending item is due now (backoffs are minutes long)."""
    with engine.begin() as conn:
        conn.execute(sa.text(
            "UPDATE summary_queue SET next_attempt_at = :past WHERE state = 'pending'"
        ), {"past": "2000-01-01 00:00:00"})


def _plain(value: Any) -> Any:
    """One Python type per SQL answer, whatever the driver returned (Decimal -> int or float)."""
    if isinstance(value, Decimal):
        return int(value) if value == value.to_integral_value() else float(value)
    return value


def raw_rows(engine: Engine, sql: str) -> list[tuple[Any, ...]]:
    """Rows of ``sql`` sent exactly as written (no bind-parameter processing), as analysts' tools send it.

    A raw DB-API cursor: SQLAlchemy's ``text()`` would treat ``:name`` as a
    parameter and the drivers ``%`` as a placeholder once parameters are passed.
    """
    raw = engine.raw_connection()
    try:
        cursor = raw.cursor()
        cursor.execute(sql)
        rows = cursor.fetchall()
        cursor.close()
        raw.rollback()
    finally:
        raw.close()
    return [tuple(_plain(v) for v in row) for row in rows]
