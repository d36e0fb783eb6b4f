"""cron/etl-sync.sh with ETL_DISCOVER=1: `etl discover` then `etl sync`, JSON lines, exit codes."""

from __future__ import annotations

import datetime as dt
import json
import subprocess
import sys
from pathlib import Path

import pytest
import sqlalchemy as sa

from etl.testing import FakeOpenPhone, serve

KEY = "test-key-0123456789"

pytestmark = pytest.mark.slow

WRAPPER = Path(__file__).resolve().parents[2] / "cron" / "etl-sync.sh"
ETL_BIN = Path(sys.executable).with_name("etl")


def run_wrapper(tmp_path: Path, db_url: str, base_url: str, **settings: str) -> subprocess.CompletedProcess[str]:
    env_file = tmp_path / "env"
    values = {"OPENPHONE_API_KEY": KEY, "OPENPHONE_BASE_URL": base_url, "ETL_BIN": str(ETL_BIN),
              "ETL_DATABASE_URL": db_url, "ETL_LOG_FILE": str(tmp_path / "sync.jsonl"),
              "ETL_LOCK_FILE": str(tmp_path / "sync.lock"), **settings}
    env_file.write_text("".join(f"{k}='{v}'\n" for k, v in values.items()))
    env_file.chmod(0o600)
    env = {"PATH": "/usr/local/bin:/usr/bin:/bin", "HOME": str(tmp_path), "LANG": "C.UTF-8",
           "ETL_ENV_FILE": str(env_file)}
    return subprocess.run([str(WRAPPER)], env=env, capture_output=True, text=True, timeout=120)


def workspace() -> FakeOpenPhone:
    """The simulated API with a small workspace (2 lines, 6 conversations, 18 calls over 5 days)."""
    fake = FakeOpenPhone(api_key=KEY, default_status=None, seed=3)
    fake.workspace.generate(phone_numbers=2, conversations=3, calls=3, days=5)
    return fake


def test_wrapper_discovers_then_syncs(engine, db_url, tmp_path):
    fake = workspace()
    start = (fake.clock.now() - dt.timedelta(days=6)).replace(tzinfo=None, microsecond=0)
    with engine.begin() as conn:  # the first discovery's start, as `etl discover --since` by hand would set it
        for line in fake.workspace.phone_numbers:
            conn.execute(sa.text("INSERT INTO discovery_watermarks (phone_number_id, conversations_updated_after, "
                                 "updated_at) VALUES (:p, :t, :t)"), {"p": line, "t": start})
    with serve(fake) as url:
        result = run_wrapper(tmp_path, db_url, url, ETL_DISCOVER="1")
    lines = [json.loads(x) for x in (tmp_path / "sync.jsonl").read_text().splitlines()]
    events = [e["event"] for e in lines]
    assert events.index("discovery finished") < events.index("run started")
    with engine.connect() as conn:
        done = set(conn.execute(sa.text("SELECT call_id FROM summary_queue WHERE state = 'done'")).scalars())
        queued = conn.execute(sa.text("SELECT COUNT(*) FROM summary_queue")).scalar_one()
        summaries = conn.execute(sa.text("SELECT COUNT(*) FROM call_summaries")).scalar_one()
        runs = conn.execute(sa.text("SELECT COUNT(*) FROM sync_runs WHERE finished_at IS NOT NULL")).scalar_one()
    completed = {i for i, c in fake.workspace.calls.items() if c.status == "completed"}
    assert done == completed and queued == summaries == len(completed) > 0
    assert runs == 1
    assert (result.returncode, result.stderr) == (0, "")
    # Discovery's normal summary is news, not an error (issue 20, item 5) ...
    [summary] = [e for e in lines if e["event"].startswith("Discovery run ")]
    assert (summary["level"], summary["logger"]) == ("info", "etl")
    # ... so cron/README.md's "warnings and errors" filter finds nothing in a healthy run.
    flagged = [e for e in lines if e["level"] in ("warning", "error") or e.get("logger") == "etl-sync.sh"]
    assert flagged == []


def test_wrapper_reports_a_discovery_that_needs_a_human(engine, db_url, tmp_path):
    with serve(workspace()) as url:
        result = run_wrapper(tmp_path, db_url, url, ETL_DISCOVER="1")
    # No watermark and no --since: discovery exits 2 (cron mails it); sync still ran.
    assert result.returncode == 2
    lines = [json.loads(x) for x in (tmp_path / "sync.jsonl").read_text().splitlines()]
    assert any(e["event"].startswith("Error: no discovery watermark yet") for e in lines)
    assert any(e["event"] == "run finished" for e in lines)
