"""With the API unreachable an outage is loud.

`etl sync` against a closed port over real TCP, then `etl status` / `--check`
as an operator runs them, on every database.  Time passing is simulated by
moving the run rows back, never by sleeping.
"""

from __future__ import annotations

import json
import re
import socket
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest
import sqlalchemy as sa
import structlog
from click.testing import CliRunner, Result

from etl import store
from etl.cli import cli
from etl.clock import utcnow
from etl.health import NOTHING_FETCHED, UNREACHABLE
from etl.tables import runs_t
from etl.testing import FakeOpenPhone, serve

KEY = "outage-test-key-123"


@pytest.fixture(autouse=True)
def _reset_logging() -> Iterator[None]:
    yield
    structlog.reset_defaults()


def etl(*args: str) -> Result:
    env: dict[str, str | None] = {"OPENPHONE_API_KEY": KEY, "ETL_DATABASE_URL": None,
                                  "OPENPHONE_BASE_URL": None, "ETL_LOG_FORMAT": None, "NO_COLOR": None}
    return CliRunner(env=env).invoke(cli, list(args), catch_exceptions=False, prog_name="etl")


def closed_port_url() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}"  # nothing listens there any more: connection refused


def plain(text: str) -> list[str]:
    return [line for line in text.splitlines() if line and not line.startswith("{")]


def json_lines(stderr: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in stderr.splitlines() if line.startswith("{")]


def test_an_unreachable_api_is_an_outage_not_a_quiet_day(db_url, engine):
    with engine.begin() as conn:
        store.enqueue_ids(conn, ["ACdown1", "ACdown2"])

    sync = etl("sync", "--database-url", db_url, "--base-url", closed_port_url(), "--log-format", "json")
    # Issue 26: a run that never reached the API is not a success: exit 4 (docs/contract.md), and its
    # one-line summary says why (the items are rescheduled all the same).
    assert sync.exit_code == 4
    [run_id] = [line["run_id"] for line in json_lines(sync.stderr) if line["event"] == "run finished"]
    assert sync.stdout == (f"Sync run {run_id}: 0 completed, 2 rescheduled, 0 errors; "
                           "stopped: the API was never reached.\n")
    assert plain(sync.stderr)[-1] == f"Error: run {run_id} did not finish cleanly: {UNREACHABLE}"
    lines = json_lines(sync.stderr)
    calls = [line for line in lines if line["event"] == "call"]
    assert sorted((c["call_id"], c["level"], c["outcome"]) for c in calls) == [
        ("ACdown1", "warning", "pending"), ("ACdown2", "warning", "pending")]
    assert all(c["error"].startswith("connection error") for c in calls)
    [outage] = [line for line in lines if line["event"] == NOTHING_FETCHED]
    assert outage["level"] == "warning" and outage["processed"] == 2
    [finished] = [line for line in lines if line["event"] == "run finished"]
    assert (finished["fetched"], finished["rescheduled"], finished["exit_code"]) == (0, 2, 4)

    # Every run so far reached nothing: that is no successful run, and --check says so.
    never = etl("status", "--database-url", db_url, "--check")
    assert never.exit_code == 1, never.output
    assert plain(never.stderr) == ["Error: unhealthy: no successful run recorded"]
    assert never.stdout.splitlines()[-1] == "Health: no successful run recorded"

    # After a run that reached the API, one failed run is a blip: status says so, --check pages nobody.
    fake = FakeOpenPhone(api_key=KEY)
    with engine.begin() as conn:
        conn.execute(sa.text("DELETE FROM summary_queue"))
        conn.execute(sa.text("DELETE FROM sync_runs"))
        store.enqueue_ids(conn, ["ACup1"])
    with serve(fake) as url:
        assert etl("sync", "--database-url", db_url, "--base-url", url, "--rate", "0").exit_code == 0
    with engine.begin() as conn:
        store.enqueue_ids(conn, ["ACdown1", "ACdown2"])
    assert etl("sync", "--database-url", db_url, "--base-url", closed_port_url()).exit_code == 4
    status = etl("status", "--database-url", db_url, "--check")
    assert status.exit_code == 0, status.output
    out = status.stdout.splitlines()
    [api_line] = [line for line in out if line.startswith("API: ")]
    assert re.fullmatch(r"API: no successful fetch since \S+Z: the last 1 run with work fetched nothing", api_line)
    assert any(line.endswith(f"0 errors — {UNREACHABLE} — {NOTHING_FETCHED}") for line in out)
    top = out[out.index("Top errors:") + 1]
    assert re.fullmatch(r"\s+2  pending    connection error \(ConnectError: .*\)", top)

    # 40 minutes later, still nothing fetched: --check fails with what to look at.
    with engine.begin() as conn:
        rows = conn.execute(sa.select(runs_t.c.id, runs_t.c.started_at, runs_t.c.finished_at)).all()
        for run_id, started, finished_at in rows:
            conn.execute(sa.update(runs_t).where(runs_t.c.id == run_id).values(
                started_at=started - timedelta(minutes=40), finished_at=finished_at - timedelta(minutes=40)))
        since = conn.execute(sa.select(runs_t.c.finished_at).order_by(runs_t.c.id).limit(1)).scalar_one()
    since_text = since.replace(microsecond=0).isoformat() + "Z"
    failing = etl("status", "--database-url", db_url, "--check", "--max-age", "86400")
    assert failing.exit_code == 1
    message = failing.stderr.strip()
    match = re.fullmatch(
        rf"Error: unhealthy: no successful fetch since {re.escape(since_text)} \((\d+) s ago, more than 1800 s; "
        r"1 run fetched nothing\) while 2 items wait: is the API reachable\?", message)
    assert match, message
    assert 2400 <= int(match[1]) <= 2400 + 60

    # The threshold is an option.
    assert etl("status", "--database-url", db_url, "--check", "--max-age", "86400",
               "--max-fetch-gap", "7200").exit_code == 0

    # The API comes back: one answered fetch ends the alarm.
    with engine.begin() as conn:
        conn.execute(sa.text("UPDATE summary_queue SET next_attempt_at = :t"), {"t": utcnow() - timedelta(hours=1)})
    with serve(fake) as url:
        assert etl("sync", "--database-url", db_url, "--base-url", url, "--rate", "0").exit_code == 0
    healthy = etl("status", "--database-url", db_url, "--check", "--max-age", "86400")
    assert healthy.exit_code == 0, healthy.output
    assert re.search(r"^API: last successful fetch \S+Z$", healthy.stdout, re.M)


def test_refusals_log_at_error_and_done_at_info(db_url, engine):
    fake = FakeOpenPhone(api_key=KEY)
    fake.set_summary("ACok", {"callId": "ACok", "status": "completed", "summary": ["Hi"], "nextSteps": []})
    error = {"message": "Call not found", "code": "0500404", "status": 404, "docs": "", "title": "Not Found"}
    fake.set_response("ACgone", 404, error)
    fake.set_response("ACbad", 400, dict(error, message="Invalid", status=400, title="Bad Request"))
    with engine.begin() as conn:
        store.enqueue_ids(conn, ["ACok", "ACgone", "ACbad"])
    with serve(fake) as url:
        result = etl("sync", "--database-url", db_url, "--base-url", url, "--rate", "0", "--log-format", "json",
                     "--not-found-window", "0")
    levels = {line["call_id"]: (line["level"], line["outcome"]) for line in json_lines(result.stderr)
              if line["event"] == "call"}
    assert levels == {"ACok": ("info", "done"), "ACgone": ("error", "not_found"), "ACbad": ("error", "invalid")}
    finished = [line for line in json_lines(result.stderr) if line["event"] == "run finished"]
    assert finished[0]["fetched"] == 3
    with engine.connect() as conn:
        assert conn.execute(sa.select(runs_t.c.fetched)).scalar_one() == 3
