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

import importlib.util
import os
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.engine import URL, Connection, Engine, make_url
from sqlalchemy.exc import ArgumentError, NoSuchModuleError, OperationalError

from etl.config import command_hint, redact_url
from etl.errors import DatabaseError, SchemaAheadError, SchemaBehindError, UsageError

if TYPE_CHECKING:
    from alembic.config import Config

# The newest alembic revision this code expects.  Kept here so that commands
# check the schema without importing alembic and reading every migration
# script; tests/unit/test_schema_head.py keeps it equal to the scripts' head.
SCHEMA_HEAD = "0015"

SQLITE_BUSY_TIMEOUT_S = 60.0
# Execution option: this engine only reads (see :func:`reader`).
_READS_ONLY = "etl_reads_only"


def _dialect_name(url: str) -> str:
    return make_url(url).get_backend_name()


# What to write instead of a URL whose driver is missing: (driver module, extra, the URL's new drivername).
_DRIVER_FIX = {
    "mysql": ("pymysql", "mysql", "mysql+pymysql"),
    "mariadb": ("pymysql", "mysql", "mariadb+pymysql"),
    "postgresql": ("psycopg", "postgres", "postgresql+psycopg"),
    "postgres": ("psycopg", "postgres", "postgresql+psycopg"),
}


def _sqlite_path(url: str) -> Path | None:
    database = make_url(url).database
    if database in (None, "", ":memory:") or database.startswith("file:"):
        return None
    return Path(database)


def sqlite_problem(path: Path) -> str | None:
    """Why a SQLite file cannot be created or written, in words (None: no problem found)."""
    parent = path.parent if str(path.parent) else Path(".")
    if path.exists():
        if path.is_dir():
            return f"{path} is a directory"
        if not os.access(path, os.R_OK):
            return f"the file {path} is not readable by this user"
        if not os.access(path, os.W_OK):
            return f"the file {path} is read-only for this user"
        if not os.access(parent, os.W_OK | os.X_OK):
            return f"the directory {parent} is not writable (SQLite creates its journal files there)"
        return None
    if not parent.exists():
        return f"the directory {parent} does not exist"
    if not parent.is_dir():
        return f"{parent} is not a directory"
    if not os.access(parent, os.W_OK | os.X_OK):
        return f"the directory {parent} is not writable by this user"
    return None


def _read_only_sqlite(path: Path) -> bool:
    return path.exists() and sqlite_problem(path) is not None


_SQLITE_FORMS = "three slashes before a relative path, four before an absolute one: sqlite:////srv/etl/op.db"


def check_url(url: str) -> URL:
    """``url`` parsed, or a :class:`UsageError` that says how to write it (SQLAlchemy's own errors never leak).

    Pure: no driver is loaded and nothing is opened.  The common slips get the
    right form: ``sqlite://op.db`` (two slashes: SQLAlchemy reads ``op.db`` as
    a host) and a bare path are ``sqlite:///op.db``.
    """
    try:
        parsed = make_url(url)
    except (ArgumentError, ValueError) as exc:
        text = url.strip()
        if text.lower().startswith("sqlite"):
            path = re.sub(r"^sqlite[^:/]*:?/*", "", text, flags=re.I)
            raise UsageError(f"invalid SQLite URL {redact_url(url)!r}: write it as sqlite:///{path} "
                             f"({_SQLITE_FORMS})") from None
        if re.fullmatch(r"[\w.~/-]+\.(db|sqlite3?)", text):  # a bare file name or path
            raise UsageError(f"invalid database URL {redact_url(url)!r}: a SQLite file is written "
                             f"sqlite:///{text} ({_SQLITE_FORMS})") from None
        raise UsageError(f"invalid database URL {redact_url(url)!r}: {exc}; expected e.g. "
                         "postgresql+psycopg://user:password@host:5432/dbname") from None
    if parsed.get_backend_name() == "sqlite" and (parsed.host or parsed.username or parsed.port):
        # sqlite://op.db: SQLAlchemy takes op.db for a host and fails on first connect with a traceback.
        rest = url.strip().split("://", 1)[1]
        raise UsageError(f"invalid SQLite URL {redact_url(url)!r}: write it as {parsed.drivername}:///{rest} "
                         f"({_SQLITE_FORMS})")
    return parsed


def create_engine(url: str, *, read_only: bool = False, busy_timeout_s: float = SQLITE_BUSY_TIMEOUT_S,
                  follow_file: bool = False) -> Engine:
    """An engine for ``url`` with this project's per-dialect settings.

    ``read_only``: the caller only reads (``etl status``, ``etl db current``,
    dry runs).  A SQLite file that does not exist is then refused (a read
    never creates a database), and one this user cannot write is opened
    read-only instead of failing.  A malformed URL is a :class:`UsageError`.
    ``busy_timeout_s``: how long a SQLite statement waits for another writer
    (``etl serve`` answers deliveries on an engine that waits briefly).
    ``follow_file`` (long-running processes, ``etl serve``): a SQLite file must
    exist (no empty file is created in its place while it is away, whose WAL
    could later meet the real one), and a pooled connection is used only while
    the file at the path is the one it opened: one moved away or swapped is
    reopened, or fails as an unavailable database until it is back.
    """
    parsed = check_url(url)
    backend = parsed.get_backend_name()
    kwargs: dict[str, Any] = {"pool_pre_ping": True}
    sqlite_ro = False
    if backend == "sqlite":
        kwargs["connect_args"] = {"timeout": busy_timeout_s}
        path = _sqlite_path(url)
        if path is not None and read_only and _read_only_sqlite(path):
            sqlite_ro = True
            # A WAL file can only be read with its -shm index; where this user
            # cannot create one and none exists (no connection is open, so no
            # writer either), SQLite reads it as immutable.
            shm = path.with_name(path.name + "-shm")
            query = {"mode": "ro", "uri": "true"}
            if not shm.exists() and not os.access(path.parent, os.W_OK):
                query["immutable"] = "1"
            parsed = parsed.set(database=f"file:{path.resolve()}", query=query)
        elif path is not None and not path.exists() and read_only:
            raise UsageError(f"the SQLite database {path} does not exist (check --database-url or "
                             f"ETL_DATABASE_URL; `etl sync` and `etl db upgrade` create it)")
        elif path is not None and not path.exists() and (problem := sqlite_problem(path)):
            raise DatabaseError(f"cannot create the SQLite database {path}: {problem}")
        elif path is not None and follow_file:
            parsed = parsed.set(database=f"file:{path.resolve()}", query={"mode": "rw", "uri": "true"})
    elif backend in ("mysql", "mariadb"):
        kwargs["connect_args"] = {"charset": "utf8mb4"}
        kwargs["isolation_level"] = "READ COMMITTED"
    elif backend == "postgresql":
        kwargs["connect_args"] = {"connect_timeout": 10}
    try:
        engine = sa.create_engine(parsed, **kwargs)
    except (NoSuchModuleError, ImportError) as exc:
        raise DatabaseError(_no_driver(url, parsed.drivername, backend, exc)) from None
    if backend == "sqlite":
        _configure_sqlite(engine, read_only=sqlite_ro, busy_timeout_s=busy_timeout_s)
        path = _sqlite_path(url)
        if follow_file and path is not None:
            _follow_file(engine, path.resolve())
    elif backend in ("mysql", "mariadb"):
        _configure_mysql(engine)
    return engine


def _no_driver(url: str, drivername: str, backend: str, exc: BaseException) -> str:
    """A missing-driver message that says what to type: the URL with the driver we ship, and the extra."""
    shown = redact_url(url)
    fix = _DRIVER_FIX.get(backend)
    if fix is None:
        return f"no driver for {shown!r} ({exc})"
    module, extra, new_driver = fix
    if drivername == new_driver:  # the right URL, the extra not installed
        return f"no driver for {shown!r}: install it with: pip install 'openphone-summary-sync[{extra}]'"
    better = make_url(url).set(drivername=new_driver).render_as_string(hide_password=True)
    install = "" if importlib.util.find_spec(module) else (
        f"install the driver with: pip install 'openphone-summary-sync[{extra}]', then ")
    return f"no driver for {shown!r}: {install}write the URL as {better}"


def reader(engine: Engine) -> Engine:
    """``engine`` for work that only reads: on SQLite its transactions begin
    deferred, so they take no write lock (and, in WAL mode, never wait for a writer)."""
    return engine.execution_options(**{_READS_ONLY: True})


def _configure_sqlite(engine: Engine, *, read_only: bool = False, busy_timeout_s: float = SQLITE_BUSY_TIMEOUT_S
                      ) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn: Any, _record: Any) -> None:
        # Take transaction control away from pysqlite so "begin" below decides.
        dbapi_conn.isolation_level = None
        cur = dbapi_conn.cursor()
        cur.execute(f"PRAGMA busy_timeout = {int(busy_timeout_s * 1000)}")
        cur.execute("PRAGMA foreign_keys = ON")
        if engine.url.database not in (None, "", ":memory:") and not read_only:
            cur.execute("PRAGMA journal_mode = WAL")
            # WAL + NORMAL survives a killed process; a power cut may roll back
            # the last commits, which only re-queues their items.
            cur.execute("PRAGMA synchronous = NORMAL")
        cur.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Connection) -> None:
        # A reader (a read-only file, or a reader() engine) must not ask for the write lock.
        reads_only = read_only or conn.get_execution_options().get(_READS_ONLY, False)
        conn.exec_driver_sql("BEGIN" if reads_only else "BEGIN IMMEDIATE")


def _file_identity(path: Path) -> tuple[int, int] | None:
    try:
        st = path.stat()
    except OSError:
        return None
    return st.st_dev, st.st_ino


def _follow_file(engine: Engine, path: Path) -> None:
    """Hand out a pooled SQLite connection only while ``path`` is still the file it opened.

    An open connection keeps its file by inode: after a move or a swap it would
    go on reading and writing a file nobody else sees.  One ``stat`` per checkout.
    """
    @event.listens_for(engine, "connect")
    def _remember(_dbapi_conn: Any, record: Any) -> None:
        record.info["etl_file"] = _file_identity(path)

    @event.listens_for(engine, "checkout")
    def _check(_dbapi_conn: Any, record: Any, _proxy: Any) -> None:
        if record.info.get("etl_file") != _file_identity(path):
            # The pool drops this connection and opens a new one (which fails while the file is away).
            raise sa.exc.DisconnectionError(f"the SQLite file {path} was moved or replaced")


def _configure_mysql(engine: Engine) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn: Any, _record: Any) -> None:
        cur = dbapi_conn.cursor()
        cur.execute(
            "SET SESSION sql_mode = CONCAT_WS(',', @@sql_mode, 'STRICT_ALL_TABLES'), "
            "time_zone = '+00:00'"
        )
        cur.close()


def describe_db_error(url: str, exc: BaseException) -> str:
    """A one-line explanation of a driver error, with the password redacted."""
    orig = getattr(exc, "orig", None) or exc
    text = " ".join(str(orig).split())
    if len(text) > 300:
        text = text[:300] + "…"
    text = text.replace(make_url(url).password or "\0", "***") if _has_password(url) else text
    path = _sqlite_path(url) if _dialect_name(url) == "sqlite" else None
    if path is not None and (problem := sqlite_problem(path)):
        return f"cannot use the SQLite database {path}: {text} ({problem})"
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


def is_known_revision(url: str, revision: str) -> bool:
    """Whether ``revision`` is one of this code's migration scripts (False: the database is ahead of the code)."""
    from alembic.script import ScriptDirectory
    from alembic.util import CommandError

    try:
        return ScriptDirectory.from_config(alembic_config(url)).get_revision(revision) is not None
    except (CommandError, KeyError):
        return False


def ahead_message(url: str, current: str) -> str:
    """The one line for a database at a revision this code does not know (a newer release migrated it)."""
    return (f"database {redact_url(url)} is at schema revision {current}, which this version of etl does not "
            f"know (its newest is {SCHEMA_HEAD}): a newer release migrated it; run that release, or downgrade "
            f"the database with it")


def check_not_ahead(engine: Engine, url: str) -> None:
    """Refuse (:class:`SchemaAheadError`) a database whose revision this code has no script for."""
    current = current_revision(engine)
    if current is not None and current != SCHEMA_HEAD and not is_known_revision(url, current):
        raise SchemaAheadError(ahead_message(url, current))


def upgrade(url: str, revision: str = "head") -> None:
    from alembic import command

    try:
        engine = create_engine(url)
        try:
            check_not_ahead(engine, url)
        finally:
            engine.dispose()
        command.upgrade(alembic_config(url), revision)
    except OperationalError as exc:
        raise DatabaseError(describe_db_error(url, exc)) from None


def downgrade(url: str, revision: str, *, allow_data_loss: bool = False) -> None:
    """Migrate down to ``revision``; a step that would drop data is refused (:class:`DatabaseError`,
    nothing of that step changed) unless ``allow_data_loss``."""
    from alembic import command

    cfg = alembic_config(url)
    cfg.attributes["etl_allow_data_loss"] = allow_data_loss
    command.downgrade(cfg, revision)


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
    if current is not None and not is_known_revision(url, current):
        raise SchemaAheadError(ahead_message(url, current))
    if engine.dialect.name == "sqlite" and engine.url.query.get("mode") != "ro":
        upgrade(url)
        return
    raise SchemaBehindError(
        f"database {redact_url(url)} is at schema revision {current or 'none'}, "
        f"this version of etl needs {head}; run {command_hint('etl db upgrade', url)}"
    )


def env_database_url() -> str | None:
    return os.environ.get("ETL_DATABASE_URL")
