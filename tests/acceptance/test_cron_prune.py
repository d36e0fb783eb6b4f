"""The daily `etl prune` line of cron/crontab, run as cron runs it (sh, the env file, a real etl process).

Silent when it works (its report goes to prune.log), one line (so cron mails
it) when it fails; it prunes exactly the transcripts of calls older than its bound.
"""

from __future__ import annotations

import json
import subprocess
from datetime import UTC, datetime, timedelta
from pathlib import Path

import sqlalchemy as sa

from etl import db, store
from etl.api import webhook_call
from etl.normalize import call_json, normalize_call, normalize_transcript
from etl.results import V1_SEGMENT_ID, DialogueLine, Transcript, TranscriptSegment
from tests.support.proc import ETL

ROOT = Path(__file__).resolve().parents[2]
CRONTAB = ROOT / "cron" / "crontab"


def prune_line(prefix: Path, env_file: Path) -> str:
    [line] = [line for line in CRONTAB.read_text().splitlines()
              if line and not line.startswith("#") and " prune " in line]
    command = line.split(None, 5)[5]
    return f"ETL_ENV_FILE={env_file} " + (command.replace("/opt/openphone-summary-sync", str(ROOT))
                                          .replace("/var/log/openphone-summary-sync", str(prefix)))


def store_call_with_transcript(url: str, call_id: str, started: datetime, now: datetime) -> None:
    raw = {"id": call_id, "createdAt": started.isoformat() + "Z", "status": "completed", "participants": []}
    lines = (DialogueLine("hello", 0.5, 1.5, "+15550100000", "US1"), DialogueLine("hi", 2.0, 3.0, None, None))
    transcript = Transcript(call_id, (TranscriptSegment(V1_SEGMENT_ID, "completed", None, started, 3.0, lines),),
                            "0" * 64)
    engine = db.create_engine(url)
    try:
        with engine.begin() as conn:
            store.save_calls(conn, [normalize_call(webhook_call(raw), call_json(raw), now)], now)
            store.save_transcripts(conn, [normalize_transcript(transcript, started, now)], now)
    finally:
        engine.dispose()


def test_the_crontab_prune_line_prunes_old_transcripts_silently_and_mails_a_failure(tmp_path):
    url = f"sqlite:///{tmp_path / 'etl.db'}"
    db.upgrade(url)
    now = datetime.now(UTC).replace(tzinfo=None)  # the etl process prunes on the wall clock
    store_call_with_transcript(url, "ACprunedold", now - timedelta(days=120), now)
    store_call_with_transcript(url, "ACkeptrecent", now - timedelta(days=10), now)
    env_file = tmp_path / "env"
    env_file.write_text(f"ETL_DATABASE_URL='{url}'\nETL_BIN='{ETL}'\n")
    done = subprocess.run(["sh", "-c", prune_line(tmp_path, env_file)], capture_output=True, text=True,
                          timeout=120, check=False)
    assert (done.returncode, done.stdout, done.stderr) == (0, "", "")
    report = (tmp_path / "prune.log").read_text()
    # JSON lines only (issue 26): jq reads every line; the report is one of them, at level info.
    [removed] = [line for line in map(json.loads, report.splitlines())
                 if line["event"].startswith("Removed 2 transcript line(s) of 1 call(s) that started before ")]
    assert removed["level"] == "info"
    engine = db.create_engine(url)
    try:
        with engine.connect() as conn:
            kept = conn.execute(sa.text("SELECT DISTINCT call_id FROM call_transcript_lines")).scalars().all()
            pruned = conn.execute(sa.text("SELECT call_id FROM call_transcripts WHERE pruned_at IS NOT NULL")
                                  ).scalars().all()
    finally:
        engine.dispose()
    assert (kept, pruned) == (["ACkeptrecent"], ["ACprunedold"])

    env_file.write_text(f"ETL_DATABASE_URL='postgresql://nobody@127.0.0.1:1/none'\nETL_BIN='{ETL}'\n")
    failed = subprocess.run(["sh", "-c", prune_line(tmp_path, env_file)], capture_output=True, text=True,
                            timeout=120, check=False)
    assert (failed.returncode, failed.stdout) == (2, "")
    assert failed.stderr == f"etl-sync.sh: etl prune exited 2; see {tmp_path}/prune.log\n"
    lines = [json.loads(line) for line in (tmp_path / "prune.log").read_text().splitlines()]
    assert lines[-1]["level"] == "error" and lines[-1]["event"].startswith("Error: ")
