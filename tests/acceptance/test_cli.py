"""The `etl` command line (etl/cli.py) through click's CliRunner, on every database.

What operators and cron files rely on (docs/contract.md "Commands" and exit codes):
help texts, `enqueue` reports and exit codes, `sync` refusing to start
without a key or with a bad database URL (never printing a password),
`sync --dry-run`, `etl demo`, and a real sync against the simulated API served
over HTTP.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from datetime import datetime
from typing import Any

import click
import pytest
import sqlalchemy as sa
import structlog
from click.testing import CliRunner, Result
from sqlalchemy.engine import Engine

from etl import __version__, store
from etl.cli import cli
from etl.tables import queue_t
from etl.testing import FakeOpenPhone, serve
from tests.support.db import API_KEY, queue_rows

SECRET = "s3cr3t-Pa55w0rd"


@pytest.fixture(autouse=True)
def _reset_logging() -> Iterator[None]:
    # The CLI points structlog at CliRunner's stderr, which is closed after the
    # test; later tests in this process must not log into it.
    yield
    structlog.reset_defaults()


def invoke(args: list[str], input: bytes | str | None = None, **env: str | None) -> Result:
    base: dict[str, str | None] = {"OPENPHONE_API_KEY": None, "ETL_DATABASE_URL": None,
                                   "OPENPHONE_BASE_URL": None, "ETL_LOG_FORMAT": None}
    base.update(env)
    return CliRunner(env=base).invoke(cli, args, input=input, catch_exceptions=False, prog_name="etl")


def messages(stderr: str) -> list[str]:
    """stderr without the JSON log lines: what a person reads."""
    return [line for line in stderr.splitlines() if not line.startswith("{")]


def typed_queue(engine: Engine) -> dict[str, dict[str, Any]]:
    """summary_queue rows with typed values (SQLite keeps datetimes as text in two precisions)."""
    with engine.connect() as conn:
        return {r.call_id: dict(r._mapping) for r in conn.execute(sa.select(queue_t))}


def command_paths(command: click.Command, path: tuple[str, ...] = ()) -> Iterator[tuple[str, ...]]:
    yield path
    if isinstance(command, click.Group):
        for name, sub in command.commands.items():
            yield from command_paths(sub, (*path, name))


ALL_COMMANDS = list(command_paths(cli))


def test_every_command_is_covered_here():
    assert ALL_COMMANDS == [(), ("db",), ("db", "upgrade"), ("db", "current"), ("dbt",), ("dbt", "sources"),
                            ("enqueue",), ("sync",),
                            ("backfill",), ("discover",), ("prune",), ("status",), ("demo",), ("serve",), ("webhooks",),
                            ("webhooks", "register"), ("webhooks", "list"), ("webhooks", "delete"),
                            ("webhooks", "migrate")]


def test_webhooks_migrate_refuses_a_url_before_any_request(db_url):
    result = invoke(["webhooks", "migrate", "--url", "http://etl.example.com/webhooks/openphone",
                     "--database-url", db_url, "--api-key", "k-0123456789", "--base-url", "http://127.0.0.1:9"])
    assert result.exit_code == 2
    assert [x for x in result.stderr.splitlines() if x.startswith("Error: ")] == [
        "Error: --url must start with https:// (http:// only for localhost or 127.0.0.1), "
        "e.g. https://etl.example.com/webhooks/openphone (got 'http://etl.example.com/webhooks/openphone')"]
    too_short = invoke(["webhooks", "migrate", "--url", "https://etl.example.com/webhooks/openphone", "--wait", "0"])
    assert too_short.exit_code == 2 and "Invalid value for '--wait'" in too_short.stderr


@pytest.mark.parametrize("path", ALL_COMMANDS, ids=lambda p: " ".join(p) or "etl")
def test_help_works_everywhere(path):
    for flag in ("--help", "-h"):
        result = invoke([*path, flag])
        assert result.exit_code == 0, result.output
        assert result.stdout.startswith(f"Usage: etl {' '.join(path)}".rstrip() + " ")


def test_version():
    result = invoke(["--version"])
    assert (result.exit_code, result.stdout) == (0, f"etl, version {__version__}\n")


# -- enqueue -----------------------------------------------------------------------------


def test_enqueue_arguments(db_url, engine):
    result = invoke(["enqueue", "--database-url", db_url, "AC1", "AC2", "bad/1"])
    assert result.exit_code == 0
    assert result.stdout == "Enqueued 2 new ids (0 already queued, 1 invalid skipped).\n"
    assert messages(result.stderr) == ["argument:3: does not start with AC: 'bad/1' (skipped)"]
    assert {k: v["state"] for k, v in queue_rows(engine).items()} == {"AC1": "pending", "AC2": "pending"}

    again = invoke(["enqueue", "--database-url", db_url, "AC1", "AC2", "AC3"])
    assert (again.exit_code, again.stdout) == (0, "Enqueued 1 new id (2 already queued, 0 invalid skipped).\n")
    assert messages(again.stderr) == []


def test_enqueue_file_reports_line_numbers(db_url, engine, tmp_path):
    ids = tmp_path / "ids.txt"
    ids.write_bytes(b"# exported from the dialer\r\nAC1\r\n\r\nAC1 2\r\nAC2\r\nAC1/../x\r\nAC\xff\r\n"
                    + b"AC" + b"7" * 65 + b"\r\nAC1\r\n" + b"x" * 10_000 + b"\r\nAC\x01\r\n")
    result = invoke(["enqueue", "--database-url", db_url, "--file", str(ids)])
    assert result.exit_code == 0
    assert result.stdout == "Enqueued 2 new ids (1 already queued, 6 invalid skipped).\n"
    assert messages(result.stderr) == [
        f"{ids}:4: contains white space: 'AC1 2' (skipped)",
        f"{ids}:6: contains a path separator: 'AC1/../x' (skipped)",
        f"{ids}:7: not UTF-8 text: 'AC\\ufffd' (skipped)",
        f"{ids}:8: too long (67 characters, at most 66): '{'AC' + '7' * 38}'… (skipped)",
        f"{ids}:10: line longer than 256 bytes (skipped)",
        f"{ids}:11: contains a control character: 'AC\\x01' (skipped)",
    ]
    assert sorted(queue_rows(engine)) == ["AC1", "AC2"]


def test_enqueue_from_stdin(db_url, engine):
    result = invoke(["enqueue", "--database-url", db_url, "--file", "-"], input=b"AC10\nACnope!\n\nAC11\n")
    assert result.exit_code == 0
    assert result.stdout == "Enqueued 2 new ids (0 already queued, 1 invalid skipped).\n"
    assert messages(result.stderr) == [
        "-:2: contains characters other than ASCII letters and digits: 'ACnope!' (skipped)"]
    assert sorted(queue_rows(engine)) == ["AC10", "AC11"]


def test_enqueue_only_invalid_ids_exits_2(db_url, engine):
    result = invoke(["enqueue", "--database-url", db_url, "XY1", "AC"])
    assert result.exit_code == 2
    assert result.stdout == "Enqueued 0 new ids (0 already queued, 2 invalid skipped).\n"
    assert messages(result.stderr) == [
        "argument:1: does not start with AC: 'XY1' (skipped)",
        "argument:2: nothing after AC: 'AC' (skipped)",
        "Error: no valid call ids in the arguments: 2 invalid entries skipped "
        "(a call id is AC followed by 1-64 letters or digits)",
    ]
    assert queue_rows(engine) == {}


def test_enqueue_without_ids_exits_2(db_url):
    result = invoke(["enqueue", "--database-url", db_url])
    assert result.exit_code == 2
    assert result.stdout == ""
    assert messages(result.stderr) == [
        "Error: no ids given: pass ids as arguments or use --file FILE (or --file - for stdin)"]


def test_enqueue_empty_stdin_exits_2(db_url):
    result = invoke(["enqueue", "--database-url", db_url, "--file", "-"], input=b"")
    assert result.exit_code == 2
    assert result.stdout == "Enqueued 0 new ids (0 already queued, 0 invalid skipped).\n"
    assert messages(result.stderr) == ["Error: no ids in stdin (blank lines and # comments are skipped)"]


def test_enqueue_does_not_reset_a_done_id(db_url, engine):
    with engine.begin() as conn:
        store.enqueue_ids(conn, ["ACdone"])
        conn.execute(sa.text("UPDATE summary_queue SET state = 'done', attempts = 4 WHERE call_id = 'ACdone'"))
    before = queue_rows(engine)["ACdone"]
    result = invoke(["enqueue", "--database-url", db_url, "ACdone"])
    assert (result.exit_code, result.stdout) == (0, "Enqueued 0 new ids (1 already queued, 0 invalid skipped).\n")
    assert queue_rows(engine)["ACdone"] == before


# -- configuration errors ------------------------------------------------------------------


def test_sync_without_api_key_exits_2(db_url):
    result = invoke(["sync", "--database-url", db_url])
    assert result.exit_code == 2
    assert result.stdout == ""
    assert messages(result.stderr) == ["Error: no API key: set OPENPHONE_API_KEY or pass --api-key"]


def test_sync_with_blank_api_key_exits_2(db_url):
    result = invoke(["sync", "--database-url", db_url], OPENPHONE_API_KEY="   ")
    assert result.exit_code == 2
    assert messages(result.stderr) == ["Error: no API key: set OPENPHONE_API_KEY or pass --api-key"]


def test_backfill_without_api_key_exits_2(db_url):
    result = invoke(["backfill", "--database-url", db_url, "--status", "failed"])
    assert result.exit_code == 2
    assert messages(result.stderr) == ["Error: no API key: set OPENPHONE_API_KEY or pass --api-key"]


BAD_URLS = [
    ("not a url", "Error: invalid database URL 'not a url': Could not parse SQLAlchemy URL from given URL "
                  "string; expected e.g. postgresql+psycopg://user:password@host:5432/dbname"),
    (f"://user:{SECRET}@host/db", "Error: invalid database URL '://user:***@host/db': Could not parse "
                                  "SQLAlchemy URL from given URL string; expected e.g. "
                                  "postgresql+psycopg://user:password@host:5432/dbname"),
    (f"foo://user:{SECRET}@host/db", "Error: no driver for 'foo://user:***@host/db' "
                                     "(Can't load plugin: sqlalchemy.dialects:foo)"),
    (f"postgresql+nodriver://user:{SECRET}@host/db",
     "Error: no driver for 'postgresql+nodriver://user:***@host/db': "
     "write the URL as postgresql+psycopg://user:***@host/db"),
]


@pytest.mark.parametrize(("url", "message"), BAD_URLS, ids=["garbage", "no-scheme", "unknown-dialect", "no-driver"])
@pytest.mark.parametrize("command", [["sync", "--api-key", API_KEY], ["status"], ["enqueue", "AC1"]])
def test_bad_database_url_exits_2_without_password(url, message, command):
    result = invoke([*command, "--database-url", url])
    assert result.exit_code == 2
    assert messages(result.stderr) == [message]
    assert SECRET not in result.output


@pytest.mark.parametrize("url", [
    f"postgresql+psycopg://user:{SECRET}@127.0.0.1:1/db",
    f"mysql+pymysql://user:{SECRET}@127.0.0.1:1/db",
])
def test_unreachable_database_exits_2_without_password(url):
    result = invoke(["status", "--database-url", url])
    assert result.exit_code == 2
    [line] = messages(result.stderr)
    assert line.startswith(f"Error: database {url.replace(SECRET, '***')} is unavailable: ")
    assert SECRET not in result.output


def test_non_numeric_port_is_a_usage_error():
    result = CliRunner(env={"ETL_DATABASE_URL": None}).invoke(
        cli, ["status", "--database-url", f"postgresql+psycopg://user:{SECRET}@host:notaport/db"])
    assert result.exit_code == 2
    assert messages(result.stderr)[0].startswith("Error: invalid database URL ")
    assert SECRET not in result.output


# -- sync --------------------------------------------------------------------------------


def test_sync_dry_run_lists_due_items(db_url, engine):
    with engine.begin() as conn:
        store.enqueue_ids(conn, ["ACdue1", "ACdue2", "ACnotyet", "ACdone"])
        conn.execute(sa.text("UPDATE summary_queue SET next_attempt_at = :t, attempts = 2, "
                             "last_error = 'HTTP 500 Internal Server Error: Something went wrong' "
                             "WHERE call_id = 'ACdue1'"), {"t": datetime(2001, 2, 3, 4, 5, 6)})
        conn.execute(sa.text("UPDATE summary_queue SET next_attempt_at = :t WHERE call_id = 'ACdue2'"),
                     {"t": datetime(2002, 1, 1)})
        conn.execute(sa.text("UPDATE summary_queue SET next_attempt_at = :t WHERE call_id = 'ACnotyet'"),
                     {"t": datetime(2999, 1, 1)})
        conn.execute(sa.text("UPDATE summary_queue SET state = 'done' WHERE call_id = 'ACdone'"))
    before = queue_rows(engine)
    result = invoke(["sync", "--dry-run", "--database-url", db_url])
    assert result.exit_code == 0
    assert result.stdout == (
        "2 items due now, oldest due since 2001-02-03 04:05:06 UTC\n"
        "  ACdue1  attempts=2  last error: HTTP 500 Internal Server Error: Something went wrong\n"
        "  ACdue2  attempts=0\n"
    )
    limited = invoke(["sync", "--dry-run", "--limit", "1", "--database-url", db_url])
    assert limited.stdout == (
        "2 items due now, oldest due since 2001-02-03 04:05:06 UTC; a run with --limit 1 would claim 1\n"
        "  ACdue1  attempts=2  last error: HTTP 500 Internal Server Error: Something went wrong\n"
        "  … and 1 more\n"
    )
    assert queue_rows(engine) == before  # changed nothing
    with engine.connect() as conn:
        assert conn.execute(sa.text("SELECT count(*) FROM sync_runs")).scalar_one() == 0


def test_sync_dry_run_nothing_due(db_url):
    result = invoke(["sync", "--dry-run", "--database-url", db_url])
    assert (result.exit_code, result.stdout) == (0, "0 items due now\n")


def test_sync_over_http_against_the_simulated_api(db_url, engine):
    fake = FakeOpenPhone(api_key=API_KEY)
    fake.set_summary("ACone", {"callId": "ACone", "status": "completed", "summary": ["Hi 👋"], "nextSteps": None})
    with engine.begin() as conn:
        store.enqueue_ids(conn, ["ACone", "ACtwo"])
    with serve(fake) as url:
        result = invoke(["sync", "--database-url", db_url, "--base-url", url, "--rate", "0"],
                        OPENPHONE_API_KEY=API_KEY)
    assert result.exit_code == 0, result.output
    # The run's one-line summary on stdout, as discover and backfill print theirs (issue 26).
    assert re.fullmatch(r"Sync run \d+: 2 completed, 0 rescheduled, 0 errors\.\n", result.stdout), result.stdout
    assert {k: v["state"] for k, v in queue_rows(engine).items()} == {"ACone": "done", "ACtwo": "done"}
    with engine.connect() as conn:
        text = conn.execute(sa.text("SELECT summary_text FROM call_summaries WHERE call_id = 'ACone'")).scalar_one()
    assert text == "Hi 👋"
    assert API_KEY not in result.output


def test_sync_with_refused_key_exits_3_and_changes_nothing(db_url, engine):
    fake = FakeOpenPhone(api_key="the-real-key")
    with engine.begin() as conn:
        store.enqueue_ids(conn, ["ACone", "ACtwo"])
    before = typed_queue(engine)
    with serve(fake) as url:
        result = invoke(["sync", "--database-url", db_url, "--base-url", url, "--api-key", "wrong-key-123",
                         "--rate", "0"])
    assert result.exit_code == 3
    assert messages(result.stderr) == [
        "Error: the API refused the key (HTTP 401): HTTP 401 Unauthorized: Missing or invalid API key; "
        "the run stopped and every claimed item was left as it was. Check OPENPHONE_API_KEY."]
    assert typed_queue(engine) == before
    assert "wrong-key-123" not in result.output


# -- demo and status -------------------------------------------------------------------------


def test_demo_lands_rows(db_url, engine):
    result = invoke(["demo", "--database-url", db_url])
    assert result.exit_code == 0, result.output
    states = {k: v["state"] for k, v in queue_rows(engine).items() if k.startswith("ACdemo")}
    assert states == {
        "ACdemo01completed": "done", "ACdemo02unicode": "done", "ACdemo03jobs": "done",
        "ACdemo06failed": "failed", "ACdemo07missing": "not_found", "ACdemo08bad": "invalid",
    }  # the two rescheduled ids are removed: no real sync may send them
    # 3 sample summaries and the 23 completed calls discovery found in the simulated workspace.
    # Each end state counted under its own name (issue 20, item 10).
    assert re.search(r"^Run \d+: 26 completed, 2 rescheduled, 1 failed, 1 not_found, 1 invalid, 0 errors — into ",
                     result.stdout, re.M)
    with engine.connect() as conn:
        text = conn.execute(sa.text(
            "SELECT summary_text FROM call_summaries WHERE call_id = 'ACdemo02unicode'")).scalar_one()
    assert text == "Ünïcödé café ☕ — 電話のまとめ\n\nEmoji 4-byte: 😀"
    # Running it again starts the sample ids afresh, with no duplicates.
    again = invoke(["demo", "--database-url", db_url])
    assert again.exit_code == 0
    assert {k: v["state"] for k, v in queue_rows(engine).items() if k.startswith("ACdemo")} == states


def test_status_json_counts(db_url, engine):
    with engine.begin() as conn:
        store.enqueue_ids(conn, ["AC1", "AC2", "AC3"])
        conn.execute(sa.text("UPDATE summary_queue SET state = 'done' WHERE call_id = 'AC3'"))
    result = invoke(["status", "--json", "--database-url", db_url])
    assert result.exit_code == 0
    data = json.loads(result.stdout)
    assert data["queue"] == {"pending": 2, "done": 1, "failed": 0, "absent": 0, "not_found": 0, "invalid": 0,
                             "error": 0}
    assert (data["total"], data["due_now"]) == (3, 2)
