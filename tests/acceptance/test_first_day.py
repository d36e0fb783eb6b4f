"""What a new operator tripped over on the first day, each driven the way they typed it.

Every command runs through click's CliRunner (or a subprocess) with the exact
``Error: …`` line and exit code asserted; commands that fetch talk to the
simulated API over real HTTP (``serve(fake)``) with ``--rate 0``.  Items 3, 7
and 11 (``etl serve``, ``etl webhooks register``) are tested with their code.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
import structlog
from click.testing import CliRunner, Result
from sqlalchemy.engine import Engine, make_url
from sqlalchemy.exc import ArgumentError

from etl import Etl, EtlError, UsageError, db
from etl.cli import cli
from etl.config import command_hint
from etl.health import NOTHING_FETCHED
from etl.tables import queue_t, runs_t
from etl.testing import FakeOpenPhone, serve
from tests.support.db import API_KEY, server_url

CLEAN_ENV: dict[str, str | None] = {
    "ETL_DATABASE_URL": None, "OPENPHONE_API_KEY": None, "OPENPHONE_BASE_URL": None, "ETL_LOG_FORMAT": None,
}
SQLITE_FORMS = "three slashes before a relative path, four before an absolute one: sqlite:////srv/etl/op.db"


@pytest.fixture(autouse=True)
def _reset_logging() -> Iterator[None]:
    # The CLI points structlog at CliRunner's stderr, which is closed after the test.
    yield
    structlog.reset_defaults()


def etl(*args: object, **env: str | None) -> Result:
    return CliRunner().invoke(cli, [str(a) for a in args], env={**CLEAN_ENV, **env}, catch_exceptions=False)


def api(url: str, key: str = API_KEY) -> list[str]:
    return ["--base-url", url, "--api-key", key, "--rate", "0"]


def plain(stderr: str) -> list[str]:
    """stderr without the JSON log lines: what a person reads."""
    return [line for line in stderr.splitlines() if line and not line.startswith("{")]


def events(stderr: str, name: str) -> list[dict[str, Any]]:
    records = [json.loads(line) for line in stderr.splitlines() if line.startswith("{")]
    return [r for r in records if r["event"] == name]


def count(engine: Engine, table: sa.Table) -> int:
    with engine.connect() as conn:
        return int(conn.execute(sa.select(sa.func.count()).select_from(table)).scalar_one())


def workspace_fake() -> FakeOpenPhone:
    fake = FakeOpenPhone(api_key=API_KEY, seed=5)
    fake.workspace.generate(phone_numbers=2, conversations=2, calls=2, days=3)
    return fake


# --- 1. etl.testing.webhooks imports as the docs write it ---------------------------------


def test_the_webhook_signer_imports_as_readme_and_docs_name_it():
    code = "from etl.testing.webhooks import deliver, push, sign_standard, sign_v1; print(sign_v1.__module__)"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert (done.returncode, done.stdout, done.stderr) == (0, "etl.testing.webhooks\n", "")
    docs = (Path(__file__).resolve().parents[2] / "docs" / "webhooks.md").read_text("utf-8")
    assert "`etl.testing.webhooks` (`sign_v1`" in docs


# --- 2. a malformed database URL: one Error line, exit 2, the right form ---------------------


BAD_SQLITE = [
    ("sqlite://op.db", f"Error: invalid SQLite URL 'sqlite://op.db': write it as sqlite:///op.db ({SQLITE_FORMS})"),
    ("sqlite://data/op.db",
     f"Error: invalid SQLite URL 'sqlite://data/op.db': write it as sqlite:///data/op.db ({SQLITE_FORMS})"),
    ("sqlite:/op.db", f"Error: invalid SQLite URL 'sqlite:/op.db': write it as sqlite:///op.db ({SQLITE_FORMS})"),
    ("op.db", f"Error: invalid database URL 'op.db': a SQLite file is written sqlite:///op.db ({SQLITE_FORMS})"),
]
COMMANDS = [["status"], ["db", "current"], ["db", "upgrade"], ["enqueue", "AC1"], ["sync", "--api-key", API_KEY],
            ["sync", "--dry-run"], ["backfill", "--dry-run"], ["demo"],
            ["discover", "--since", "2026-11-01", "--api-key", API_KEY]]


@pytest.mark.parametrize(("url", "message"), BAD_SQLITE, ids=["two-slashes", "two-slashes-dir", "one-slash", "bare"])
@pytest.mark.parametrize("command", COMMANDS, ids=lambda c: "-".join(c[:2]))
def test_a_mistyped_sqlite_url_is_one_error_line_naming_the_right_form(url, message, command, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    result = etl(*command, "--database-url", url)
    assert (result.exit_code, plain(result.stderr), result.stdout) == (2, [message], "")
    assert list(tmp_path.iterdir()) == []  # nothing created anywhere


def test_the_python_api_raises_usage_error_for_a_mistyped_url():
    with pytest.raises(UsageError) as exc:
        Etl(database_url="sqlite://op.db")
    assert str(exc.value) == f"invalid SQLite URL 'sqlite://op.db': write it as sqlite:///op.db ({SQLITE_FORMS})"
    assert isinstance(exc.value, EtlError) and not isinstance(exc.value, ArgumentError)
    assert exc.value.exit_code == 2


# --- 4. a base URL ending in /v1; a route-level 404 reaches nothing --------------------------


@pytest.mark.parametrize("given", ["https://api.openphone.com/v1", "https://api.openphone.com/v1/"])
def test_a_base_url_ending_in_v1_is_refused_with_the_right_one(given):
    expected = (f"Error: --base-url {given!r} ends in /v1, which etl adds to every request: "
                "use https://api.openphone.com")
    for result in (etl("sync", "--database-url", "sqlite://", "--api-key", API_KEY, "--base-url", given),
                   etl("discover", "--database-url", "sqlite://", "--api-key", API_KEY, OPENPHONE_BASE_URL=given)):
        assert (result.exit_code, plain(result.stderr)) == (2, [expected])
    with pytest.raises(UsageError, match="ends in /v1"):
        Etl(base_url=given)


def test_a_run_where_every_answer_is_a_route_level_404_reached_nothing(db_url, engine, fake):
    ids = ["ACroute1", "ACroute2", "ACroute3"]
    for call_id in ids:  # a web server's page, not the API's JSON error: no such route
        fake.set_response(call_id, 404, b"<html><body><h1>404 Not Found</h1></body></html>",
                          {"content-type": "text/html"})
    assert etl("enqueue", *ids, "--database-url", db_url).exit_code == 0
    with serve(fake) as url:
        result = etl("sync", "--database-url", db_url, "--log-format", "json", *api(url))
    assert result.exit_code == 4, result.output  # the API was never reached (issue 26)
    [outage] = events(result.stderr, NOTHING_FETCHED)
    assert outage["level"] == "warning"
    [finished] = events(result.stderr, "run finished")
    assert (finished["fetched"], finished["not_found"], finished["rescheduled"]) == (0, 0, 3)
    with engine.connect() as conn:
        rows = conn.execute(sa.select(queue_t.c.state, queue_t.c.last_error)).all()
    assert {state for state, _ in rows} == {"pending"}  # retried later, never not_found
    assert all("from a route the API does not have" in (error or "") for _, error in rows)
    status = json.loads(etl("status", "--json", "--database-url", db_url).stdout)
    assert status["runs_without_fetch"] == 1 and status["last_fetch_ok_at"] is None


# --- 6. read-only commands never create a database ---------------------------------------------


def test_status_on_a_mistyped_sqlite_path_says_it_does_not_exist(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    result = etl("status", "--database-url", "sqlite:///opnephone.db")
    assert (result.exit_code, plain(result.stderr)) == (2, [
        "Error: the SQLite database opnephone.db does not exist (check --database-url or ETL_DATABASE_URL; "
        "`etl sync` and `etl db upgrade` create it)"])
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(UsageError, match="does not exist"), Etl(database_url="sqlite:///x.db", read_only=True) as job:
        job.status()
    assert list(tmp_path.iterdir()) == []
    # `etl enqueue` (like `etl sync`) still creates the SQLite default on first use.
    assert etl("enqueue", "AC1", "--database-url", "sqlite:///opnephone.db").exit_code == 0
    assert (tmp_path / "opnephone.db").is_file()


# --- 12. hints that can be pasted ---------------------------------------------------------------


def test_hints_carry_the_database_url_that_was_given(tmp_path, monkeypatch):
    monkeypatch.delenv("ETL_DATABASE_URL", raising=False)
    url = f"sqlite:///{tmp_path / 'behind.db'}"
    db.upgrade(url, "0006")
    result = etl("db", "current", "--database-url", url)
    assert result.stdout == (f"database: 0006  code: {db.SCHEMA_HEAD}  "
                             f"(behind: run `etl db upgrade --database-url {url}`)\n")
    pasted = subprocess.run(shlex.split(result.stdout.split("run `")[1].split("`")[0]), capture_output=True,
                            text=True, timeout=120, env={**os.environ, "PATH": f"{Path(sys.executable).parent}:"
                                                                             f"{os.environ['PATH']}"})
    assert pasted.returncode == 0, pasted.stderr
    assert etl("db", "current", "--database-url", url).stdout.endswith("(up to date)\n")
    # A password is never shown: the hint says where it goes.
    assert command_hint("etl status", "postgresql+psycopg://etl:pw@db/x") == (
        "`etl status --database-url 'postgresql+psycopg://etl:***@db/x'` (with the password in place of ***)")
    # The URL the environment already passes needs no option.
    monkeypatch.setenv("ETL_DATABASE_URL", "postgresql+psycopg://etl:pw@db/x")
    assert command_hint("etl db upgrade", "postgresql+psycopg://etl:pw@db/x") == "`etl db upgrade`"
    assert command_hint("etl status", "sqlite:///openphone_summaries.db") == (
        "`etl status --database-url sqlite:///openphone_summaries.db`")


def test_the_demo_next_line_never_shows_a_redacted_url_as_if_it_could_be_pasted():
    server = make_url(server_url("postgresql"))  # trusts local users: any password connects
    url = server.set(password="s3cret-pw").render_as_string(hide_password=False)
    result = etl("demo", "--database-url", url)
    assert result.exit_code == 0, result.output
    shown = server.set(password="s3cret-pw").render_as_string(hide_password=True)
    assert result.stdout.splitlines()[-1] == (
        f"Next: `etl status --database-url {shlex.quote(shown)}` (with the password in place of ***), "
        "or query the tables (docs/schema.md).")
    assert "s3cret-pw" not in result.output


# --- 13. said once, logged at the right level, nothing recorded for a refusal --------------------


def test_a_refused_key_is_said_once_in_health_and_its_run_ends_at_error(db_url, fake):
    assert etl("enqueue", "AC1", "--database-url", db_url).exit_code == 0
    with serve(fake) as url:
        result = etl("sync", "--database-url", db_url, "--log-format", "json", *api(url, key="wrong-key-123"))
    assert result.exit_code == 3
    [finished] = events(result.stderr, "run finished")
    assert (finished["level"], finished["exit_code"]) == ("error", 3)
    health = etl("status", "--database-url", db_url).stdout.splitlines()[-1]
    assert health.startswith("Health: no successful run recorded; last run stopped: the API refused the key "
                             "(HTTP 401): HTTP 401 Unauthorized")
    assert health.count("refused the key") == 1


def test_a_discovery_refused_for_want_of_since_records_no_run_and_logs_an_error(db_url, engine):
    fake = workspace_fake()
    with serve(fake) as url:
        result = etl("discover", "--database-url", db_url, "--log-format", "json", *api(url))
    first_line = next(iter(fake.workspace.phone_numbers))  # as the API lists them
    assert (result.exit_code, plain(result.stderr)) == (2, [
        f"Error: no discovery watermark yet for phone number {first_line} (+1 more): "
        "pass --since DATE for the first run"])
    [finished] = events(result.stderr, "discovery finished")
    assert (finished["level"], finished["exit_code"], finished["run_id"]) == ("error", 2, None)
    with engine.connect() as conn:
        assert conn.execute(sa.text("SELECT COUNT(*) FROM discovery_runs")).scalar_one() == 0
    assert "\nLast discovery: none yet\n" in etl("status", "--database-url", db_url).stdout


def test_a_backfill_with_nothing_to_requeue_records_no_empty_run(db_url, engine, fake):
    with serve(fake) as url:
        result = etl("backfill", "--status", "failed,error", "--database-url", db_url, *api(url))
    assert (result.exit_code, plain(result.stderr), result.stdout) == (
        0, ["Re-queued 0 items (failed, error)."], "Nothing to sync: no item is due, so no run was recorded.\n")
    assert count(engine, runs_t) == 0


def test_until_before_since_is_refused():
    result = etl("backfill", "--status", "failed", "--since", "2026-11-20", "--until", "2026-11-01",
                 "--database-url", "sqlite://")
    assert (result.exit_code, plain(result.stderr)) == (2, [
        "Error: --until 2026-11-01 00:00:00 is not after --since 2026-11-20 00:00:00: nothing finished in between"])


# --- 14. BOM, one demo folder, one wording ---------------------------------------------------------


def test_an_id_file_saved_with_a_utf8_bom_loses_no_id(db_url, tmp_path):
    ids = tmp_path / "ids.txt"
    ids.write_bytes("\ufeffAC1\r\nAC2\r\n".encode())  # as Windows Notepad saves "UTF-8 with BOM"
    result = etl("enqueue", "--file", ids, "--database-url", db_url)
    assert (result.exit_code, result.stdout, plain(result.stderr)) == (
        0, "Enqueued 2 new ids (0 already queued, 0 invalid skipped).\n", [])


def test_demos_reuse_one_sandbox_folder(tmp_path, monkeypatch):
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    first = etl("demo")
    second = etl("demo")
    assert first.exit_code == second.exit_code == 0, first.output + second.output
    assert [p.name for p in tmp_path.iterdir()] == [f"etl-demo-{os.getuid()}"]
    # The second demo replaced the first one's database: the same counts, not twice as many.
    assert first.stdout.splitlines()[-1] == second.stdout.splitlines()[-1]
    runs = [line for line in second.stdout.splitlines() if line.startswith("Run ")]
    assert runs and runs[0].startswith("Run 1: ")


def test_discovery_is_summed_up_in_the_same_words_by_the_cli_and_the_demo(db_url, tmp_path, monkeypatch):
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))  # this test's own demo sandbox
    with serve(workspace_fake()) as url:
        cli_out = etl("discover", "--since", "2026-01-01", "--database-url", db_url, *api(url)).stdout
    demo_out = etl("demo").stdout
    pattern = (r"^Discovery run \d+: \d+ phone numbers?, \d+ conversations?, \d+ calls? seen, enqueued \d+, "
               r"\d+ errors?\.$")
    assert re.match(pattern, cli_out.splitlines()[0]), cli_out
    assert re.match(pattern, demo_out.splitlines()[0]), demo_out
