"""Every bad input says what to do — exact message and exit code, sqlite-utils style.

Through click's CliRunner, except where file permissions matter: those run the
installed `etl` as an unprivileged user in a subprocess (root ignores modes).
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import sqlite3
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
import structlog
from click.testing import CliRunner, Result

from etl.cli import cli

SECRET = "s3cr3t-Pa55"
ETL_BIN = Path(sys.executable).with_name("etl")


@pytest.fixture(autouse=True)
def _reset_logging() -> Iterator[None]:
    yield
    structlog.reset_defaults()


def etl(*args: str, input: bytes | None = None, **env: str) -> Result:
    base: dict[str, str | None] = {"OPENPHONE_API_KEY": None, "ETL_DATABASE_URL": None,
                                   "OPENPHONE_BASE_URL": None, "ETL_LOG_FORMAT": None}
    base.update(env)
    return CliRunner(env=base).invoke(cli, list(args), input=input, catch_exceptions=False, prog_name="etl")


def errors(result: Result) -> list[str]:
    return [line for line in result.stderr.splitlines() if not line.startswith("{")]


# --- the API base URL ---------------------------------------------------------------


@pytest.mark.parametrize(("url", "message"), [
    ("api.openphone.com", "Error: --base-url 'api.openphone.com' needs a scheme and a host, "
                          "e.g. https://api.openphone.com"),
    ("https://", "Error: --base-url 'https://' needs a scheme and a host, e.g. https://api.openphone.com"),
    ("ftp://api.openphone.com", "Error: --base-url 'ftp://api.openphone.com' needs a scheme and a host, "
                                "e.g. https://api.openphone.com"),
    ("http://localhost:99999", "Error: --base-url 'http://localhost:99999' is not a valid URL "
                               "(Port out of range 0-65535); expected e.g. https://api.openphone.com"),
])
def test_a_base_url_without_scheme_or_host_is_refused(db_url, url, message):
    for args, env in ((["--base-url", url], {}), ([], {"OPENPHONE_BASE_URL": url})):
        result = etl("sync", "--database-url", db_url, "--api-key", "key-1234", *args, **env)
        assert (result.exit_code, errors(result)) == (2, [message])
    dry = etl("backfill", "--dry-run", "--status", "failed", "--database-url", db_url, "--base-url", url)
    assert (dry.exit_code, errors(dry)) == (2, [message])


# --- database URLs ------------------------------------------------------------------


@pytest.mark.skipif(importlib.util.find_spec("MySQLdb") is not None, reason="mysqlclient is installed")
def test_mysql_url_suggests_the_pymysql_url(tmp_path):
    result = etl("status", "--database-url", f"mysql://etl:{SECRET}@db.internal/openphone")
    assert (result.exit_code, errors(result)) == (2, [
        "Error: no driver for 'mysql://etl:***@db.internal/openphone': "
        "write the URL as mysql+pymysql://etl:***@db.internal/openphone"])


def test_postgres_url_suggests_the_psycopg_url():
    result = etl("status", "--database-url", f"postgres://etl:{SECRET}@db.internal:5432/openphone")
    assert (result.exit_code, errors(result)) == (2, [
        "Error: no driver for 'postgres://etl:***@db.internal:5432/openphone': "
        "write the URL as postgresql+psycopg://etl:***@db.internal:5432/openphone"])


def test_postgresql_url_reaches_the_server_with_psycopg():
    # SQLAlchemy 2.1 drives postgresql:// with psycopg 3, the [postgres] extra: no driver hint needed.
    result = etl("status", "--database-url", f"postgresql://etl:{SECRET}@127.0.0.1:1/openphone")
    assert result.exit_code == 2
    [line] = errors(result)
    assert line.startswith("Error: database postgresql://etl:***@127.0.0.1:1/openphone is unavailable: ")
    assert SECRET not in result.output


@pytest.mark.parametrize(("url", "shown", "reason"), [
    (f"postgresql+psycopg://etl:{SECRET}@db:5432x/openphone", "postgresql+psycopg://etl:***@db:5432x/openphone",
     "invalid literal for int() with base 10: '5432x'"),
    (f"postgresql+psycopg://etl:p@ss{SECRET}@db:x/o", "postgresql+psycopg://etl:***@db:x/o",
     "invalid literal for int() with base 10: 'x'"),
])
def test_an_unparsable_url_is_shown_as_typed_with_only_the_password_hidden(url, shown, reason):
    result = etl("status", "--database-url", url)
    assert (result.exit_code, errors(result)) == (2, [
        f"Error: invalid database URL {shown!r}: {reason}; "
        "expected e.g. postgresql+psycopg://user:password@host:5432/dbname"])
    assert SECRET not in result.output


def test_a_sqlite_url_missing_its_colon_gets_the_right_form():
    result = etl("status", "--database-url", "sqlite//openphone.db")
    assert (result.exit_code, errors(result)) == (2, [
        "Error: invalid SQLite URL 'sqlite//openphone.db': write it as sqlite:///openphone.db (three slashes "
        "before a relative path, four before an absolute one: sqlite:////srv/etl/op.db)"])


def test_sqlite_in_a_missing_directory_names_the_path_and_the_reason(tmp_path):
    path = tmp_path / "no-such-dir" / "etl.db"
    for command in (["enqueue", "AC1"], ["sync", "--api-key", "key-1234"]):
        result = etl(*command, "--database-url", f"sqlite:///{path}")
        assert (result.exit_code, errors(result)) == (2, [
            f"Error: cannot create the SQLite database {path}: the directory {path.parent} does not exist"])
    # `etl status` only reads: it never creates a database, so it says there is none (issue 20, item 6).
    result = etl("status", "--database-url", f"sqlite:///{path}")
    assert (result.exit_code, errors(result)) == (2, [
        f"Error: the SQLite database {path} does not exist (check --database-url or ETL_DATABASE_URL; "
        "`etl sync` and `etl db upgrade` create it)"])


# --- file permissions: run as an unprivileged user -------------------------------------


@pytest.fixture
def shared_dir() -> Iterator[Path]:
    """A directory under /tmp that an unprivileged user can traverse."""
    path = Path(tempfile.mkdtemp(prefix="etl-perm-", dir="/tmp"))
    path.chmod(0o755)
    yield path
    for p in (path, *path.rglob("*")):
        if p.is_dir():
            p.chmod(0o755)
    shutil.rmtree(path)


def as_user(*args: str) -> subprocess.CompletedProcess[str]:
    prefix: list[str] = []
    if os.geteuid() == 0:
        if shutil.which("setpriv") is None:
            pytest.skip("running as root without setpriv(1): cannot drop privileges to test file modes")
        prefix = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"]
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": "/tmp", "LC_ALL": "C.UTF-8"}
    return subprocess.run([*prefix, str(ETL_BIN), *args], capture_output=True, text=True, env=env, timeout=60,
                          check=False)


def test_sqlite_in_an_unwritable_directory_names_the_path_and_the_reason(shared_dir):
    locked = shared_dir / "locked"
    locked.mkdir(mode=0o555)
    locked.chmod(0o555)
    path = locked / "etl.db"
    result = as_user("enqueue", "AC1", "--database-url", f"sqlite:///{path}")
    assert (result.returncode, result.stdout, result.stderr) == (
        2, "", f"Error: cannot create the SQLite database {path}: the directory {locked} is not writable "
               "by this user\n")


def test_status_works_on_a_read_only_sqlite_file(shared_dir):
    path = shared_dir / "ro" / "etl.db"
    path.parent.mkdir()
    assert etl("enqueue", "ACro1", "ACro2", "--database-url", f"sqlite:///{path}").exit_code == 0
    with sqlite3.connect(path) as conn:  # as a writer leaves it: WAL, no -shm once closed
        assert conn.execute("PRAGMA journal_mode").fetchone() == ("wal",)
    path.chmod(0o444)
    for mode in (0o755, 0o555):  # journal files creatable or not
        path.parent.chmod(mode)
        result = as_user("status", "--database-url", f"sqlite:///{path}")
        assert (result.returncode, result.stderr) == (0, "")
        assert "  pending             2\n" in result.stdout
    # Writing stays refused, with the path and the reason.
    result = as_user("enqueue", "ACro3", "--database-url", f"sqlite:///{path}")
    assert result.returncode == 2
    assert result.stderr == (f"Error: cannot use the SQLite database {path}: attempt to write a readonly database "
                             f"(the file {path} is read-only for this user)\n")


# --- id input -------------------------------------------------------------------------


def test_enqueue_an_empty_file_is_a_usage_error(db_url, tmp_path):
    empty = tmp_path / "ids.txt"
    empty.write_text("\n# nothing yet\n")
    result = etl("enqueue", "--file", str(empty), "--database-url", db_url)
    assert (result.exit_code, errors(result)) == (2, [
        f"Error: no ids in {empty} (blank lines and # comments are skipped)"])


def test_enqueue_a_file_of_invalid_ids_is_a_usage_error(db_url, tmp_path):
    bad = tmp_path / "ids.txt"
    bad.write_text("12345\nAC-1\n")
    result = etl("enqueue", "--file", str(bad), "--database-url", db_url)
    assert (result.exit_code, errors(result)) == (2, [
        f"{bad}:1: does not start with AC: '12345' (skipped)",
        f"{bad}:2: contains characters other than ASCII letters and digits: 'AC-1' (skipped)",
        f"Error: no valid call ids in {bad}: 2 invalid entries skipped "
        "(a call id is AC followed by 1-64 letters or digits)"])


def test_backfill_dry_run_reports_bad_lines_as_enqueue_does(db_url, tmp_path):
    ids = tmp_path / "ids.txt"
    ids.write_text("ACgood1\n12345\nACgood2\nAC-1\n")
    dry = etl("backfill", "--dry-run", "--file", str(ids), "--database-url", db_url)
    enq = etl("enqueue", "--file", str(ids), "--database-url", db_url)
    bad_lines = [f"{ids}:2: does not start with AC: '12345' (skipped)",
                 f"{ids}:4: contains characters other than ASCII letters and digits: 'AC-1' (skipped)"]
    assert (dry.exit_code, errors(dry)) == (0, bad_lines)
    assert (enq.exit_code, errors(enq)) == (0, bad_lines)
    assert dry.stdout.splitlines()[0] == f"Would enqueue up to 2 ids from {ids} (2 invalid skipped)."
