"""Database connections and schema management (engine, dialect quirks, alembic).

One place decides how each database is driven:

* SQLite: WAL (analysts read while the job writes), a busy timeout, foreign
  keys on, and every transaction opened with ``BEGIN IMMEDIATE`` so two runs
  queue for the write lock instead of failing with "database is locked" when a
  read lock cannot be upgraded.
* MySQL/MariaDB: ``READ COMMITTED`` (no gap locks between runs that write
  disjoint call ids), strict SQL mode (an error, never a silent truncation),
  utf8mb4.
* PostgreSQL: defaults.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.engine import Connection, Engine, make_url
from sqlalchemy.exc import ArgumentError, NoSuchModuleError, OperationalError

from etl.config import redact_url
from etl.errors import DatabaseError, SchemaBehindError

if TYPE_CHECKING:
    from alembic.config import Config

# The newest alembic revision this code expects.  Kept here so that commands
# check the schema without importing alembic and reading every migration
# script; tests/test_schema_head.py keeps it equal to the scripts' head.
SCHEMA_HEAD = "0005"

SQLITE_BUSY_TIMEOUT_S = 60.0


def _dialect_name(url: str) -> str:
    return make_url(url).get_backend_name()


def create_engine(url: str) -> Engine:
    """An engine for ``url`` with this project's per-dialect settings."""
    try:
        parsed = make_url(url)
    except (ArgumentError, ValueError) as exc:
        raise DatabaseError(f"invalid database URL {redact_url(url)!r}: {exc}") from None
    backend = parsed.get_backend_name()
    kwargs: dict[str, Any] = {"pool_pre_ping": True}
    if backend == "sqlite":
        kwargs["connect_args"] = {"timeout": SQLITE_BUSY_TIMEOUT_S}
    elif backend in ("mysql", "mariadb"):
        kwargs["connect_args"] = {"charset": "utf8mb4"}
        kwargs["isolation_level"] = "READ COMMITTED"
    elif backend == "postgresql":
        kwargs["connect_args"] = {"connect_timeout": 10}
    try:
        engine = sa.create_engine(parsed, **kwargs)
    except (NoSuchModuleError, ImportError) as exc:
        hint = {"postgresql": "postgres", "mysql": "mysql", "mariadb": "mysql"}.get(backend)
        extra = f"; install it with: pip install 'openphone-summary-sync[{hint}]'" if hint else ""
        raise DatabaseError(f"no driver for {redact_url(url)!r} ({exc}){extra}") from None
    if backend == "sqlite":
        _configure_sqlite(engine)
    elif backend in ("mysql", "mariadb"):
        _configure_mysql(engine)
    return engine


def _configure_sqlite(engine: Engine) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn: Any, _record: Any) -> None:
        # Take transaction control away from pysqlite so "begin" below decides.
        dbapi_conn.isolation_level = None
        cur = dbapi_conn.cursor()
        cur.execute(f"PRAGMA busy_timeout = {int(SQLITE_BUSY_TIMEOUT_S * 1000)}")
        cur.execute("PRAGMA foreign_keys = ON")
        if engine.url.database not in (None, "", ":memory:"):
            cur.execute("PRAGMA journal_mode = WAL")
            # WAL + NORMAL survives a killed process; a power cut may roll back
            # the last commits, which only re-queues their items.
            cur.execute("PRAGMA synchronous = NORMAL")
        cur.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Connection) -> None:
        conn.exec_driver_sql("BEGIN IMMEDIATE")


def _configure_mysql(engine: Engine) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn: Any, _record: Any) -> None:
        cur = dbapi_conn.cursor()
        cur.execute(
            "SET SESSION sql_mode = CONCAT_WS(',', @@sql_mode, 'STRICT_ALL_TABLES'), "
            "time_zone = '+00:00'"
        )
        cur.close()


@contextmanager
def open_engine(url: str) -> Iterator[Engine]:
    engine = create_engine(url)
    try:
        yield engine
    finally:
        engine.dispose()


def describe_db_error(url: str, exc: BaseException) -> str:
    """A one-line explanation of a driver error, with the password redacted."""
    orig = getattr(exc, "orig", None) or exc
    text = " ".join(str(orig).split())
    if len(text) > 300:
        text = text[:300] + "…"
    text = text.replace(make_url(url).password or "\0", "***") if _has_password(url) else text
    return f"database {redact_url(url)} is unavailable: {text}"


def _has_password(url: str) -> bool:
    try:
        return bool(make_url(url).password)
    except (ArgumentError, ValueError):
        return False


# --- migrations -----------------------------------------------------------------


def migrations_dir() -> Path:
    """The alembic scripts: inside the wheel, or the repository's top-level folder."""
    here = Path(__file__).resolve().parent
    for candidate in (here / "_migrations", here.parent / "migrations"):
        if (candidate / "env.py").is_file():
            return candidate
    raise DatabaseError("alembic migrations not found; the installation is incomplete")


def alembic_config(url: str) -> Config:
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(migrations_dir()))
    # ConfigParser interpolation would choke on % in URL-encoded passwords.
    cfg.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    cfg.attributes["etl_database_url"] = url
    return cfg


def head_revision(url: str) -> str | None:
    from alembic.script import ScriptDirectory

    return ScriptDirectory.from_config(alembic_config(url)).get_current_head()


def current_revision(engine: Engine) -> str | None:
    """The revision in ``alembic_version``, or None for an empty database."""
    with engine.connect() as conn:
        if not sa.inspect(conn).has_table("alembic_version"):
            return None
        rows = conn.execute(sa.text("SELECT version_num FROM alembic_version")).scalars().all()
    return rows[0] if len(rows) == 1 else None


def upgrade(url: str, revision: str = "head") -> None:
    from alembic import command

    try:
        command.upgrade(alembic_config(url), revision)
    except OperationalError as exc:
        raise DatabaseError(describe_db_error(url, exc)) from None


def downgrade(url: str, revision: str) -> None:
    from alembic import command

    command.downgrade(alembic_config(url), revision)


def ensure_schema(engine: Engine, url: str) -> None:
    """Make sure the schema is current before a command touches the tables.

    SQLite is embedded: a new or older file is migrated on the spot.  A server
    database is shared and its migrations are an operator's decision, so a
    behind schema stops the command with the fix in the message.
    """
    try:
        current = current_revision(engine)
    except OperationalError as exc:
        raise DatabaseError(describe_db_error(url, exc)) from None
    head = SCHEMA_HEAD
    if current == head:
        return
    if engine.dialect.name == "sqlite":
        upgrade(url)
        return
    raise SchemaBehindError(
        f"database {redact_url(url)} is at schema revision {current or 'none'}, "
        f"this version of etl needs {head}; run `etl db upgrade`"
    )


def env_database_url() -> str | None:
    return os.environ.get("ETL_DATABASE_URL")
