"""cron/etl-sync.sh with ETL_DISCOVER=1: `etl discover` then `etl sync`, JSON lines, exit codes."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import sqlalchemy as sa

from tests.integration.calls_fake import FakeWorkspace, serve
from tests.integration.test_discover import KEY, build, completed_ids

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


def test_wrapper_discovers_then_syncs(engine, db_url, tmp_path):
    fake = FakeWorkspace(KEY)
    calls = build(fake)
    with engine.begin() as conn:  # the first discovery's start, as `etl discover --since` by hand would set it
        for line in ("PNline1", "PNline2"):
            conn.execute(sa.text("INSERT INTO discovery_watermarks (phone_number_id, conversations_updated_after, "
                                 "updated_at) VALUES (:p, '2026-11-01 00:00:00', '2026-11-01 00:00:00')"), {"p": line})
    with serve(fake) as url:
        result = run_wrapper(tmp_path, db_url, url, ETL_DISCOVER="1")
    lines = [json.loads(x) for x in (tmp_path / "sync.jsonl").read_text().splitlines()]
    events = [e["event"] for e in lines]
    assert events.index("discovery finished") < events.index("run started")
    with engine.connect() as conn:
        queued = set(conn.execute(sa.text("SELECT call_id FROM summary_queue")).scalars())
        runs = conn.execute(sa.text("SELECT COUNT(*) FROM sync_runs WHERE finished_at IS NOT NULL")).scalar_one()
    assert queued == completed_ids(calls)
    assert runs == 1
    # This fake has no summaries (404 for every id): sync ran and finished them, exit 0.
    assert (result.returncode, result.stderr) == (0, "")


def test_wrapper_reports_a_discovery_that_needs_a_human(engine, db_url, tmp_path):
    fake = FakeWorkspace(KEY)
    build(fake)
    with serve(fake) as url:
        result = run_wrapper(tmp_path, db_url, url, ETL_DISCOVER="1")
    # No watermark and no --since: discovery exits 2 (cron mails it); sync still ran.
    assert result.returncode == 2
    lines = [json.loads(x) for x in (tmp_path / "sync.jsonl").read_text().splitlines()]
    assert any(e["event"].startswith("Error: no discovery watermark yet") for e in lines)
    assert any(e["event"] == "run finished" for e in lines)
