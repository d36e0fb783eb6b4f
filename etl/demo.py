"""`etl demo`: discover -> sync -> a BI query, on the real code path against the built-in simulated API.

Only the httpx transport differs from production: `etl discover` walks the
simulated workspace (lines, conversations, calls) and fills the queue, and the
ids go through the queue, the client, validation, normalisation, the upsert
and the state machine exactly as under cron; then one of docs/schema.md's
documented queries answers from what landed.  Beside the workspace's calls,
one sample id per row of the queue table shows each outcome.  It runs on
either API surface (``--api-version``): on the dated one, discovery lists the
workspace in pages and stores the summaries that are ready from the page.

The demo is a sandbox: it writes to a fresh SQLite file in the temporary
directory, the same one every run (never to ``ETL_DATABASE_URL``, which names
the analysts' database) unless a database is passed explicitly, and it
removes the demo ids that end ``pending`` (rescheduled in-progress/absent
summaries), so no real sync sends them.
"""

from __future__ import annotations

import datetime as dt
import os
import stat
import tempfile
from pathlib import Path
from typing import Any

import click
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from etl import store
from etl.api import surface_for
from etl.clock import Clock
from etl.config import Backoff, Settings, command_hint, redact_url
from etl.discover import DiscoverOptions
from etl.tables import fields_t, queue_t, summaries_t
from etl.testing import FakeOpenPhone, sample_summary

DEMO_KEY = "demo-key-not-secret"

# One id per row of docs/contract.md's queue table.
SAMPLES: dict[str, tuple[str, str]] = {
    "ACdemo01completed": ("completed", "summary, next steps and typed job fields"),
    "ACdemo02unicode": ("completed", "unicode, emoji, an empty line and no next steps"),
    "ACdemo03jobs": ("completed", "job fields: string, number and boolean"),
    "ACdemo04progress": ("in-progress", "rescheduled with backoff"),
    "ACdemo05absent": ("absent", "rescheduled with a longer backoff"),
    "ACdemo06failed": ("failed", "the API says the summary failed"),
    "ACdemo07missing": ("404", "404 two days after the call ended: past the window"),
    "ACdemo08bad": ("400", "the API rejects the id"),
}


# What the sample ids show where a summary comes inside its call (the dated API), where they differ
# (docs/api/calls-2026-03-30.md).
CALL_SUMMARY_SAMPLES: dict[str, str] = {
    "ACdemo05absent": "absent means never on 2026-03-30: ended at once",
    "ACdemo07missing": "404: not in the workspace; retried within the window",
    "ACdemo08bad": "404 (a well-formed id): retried within the window",
}


# docs/schema.md, "Summaries per user per week" (tests check the two agree).
BI_QUERY_TITLE = "Summaries per user per week"
BI_QUERY = """\
SELECT call_week, COALESCE(user_name, user_id) AS person, COUNT(*) AS summaries,
       SUM(next_step_count) AS next_steps
FROM call_overview
WHERE summary_status = 'completed'
GROUP BY call_week, COALESCE(user_name, user_id)
ORDER BY call_week, person;"""
DISCOVER_DAYS = 14

# docs/schema.md, "Talk time per speaker per call" (shown with `etl demo --transcripts`; tests check they agree).
TALK_TIME_QUERY_TITLE = "Talk time per speaker per call"
TALK_TIME_QUERY = """\
SELECT call_id, speaker_side, ROUND(CAST(SUM(talk_seconds) AS DECIMAL(12, 3)), 3) AS talk_seconds,
       COUNT(*) AS line_count
FROM call_transcript_line_overview
GROUP BY call_id, speaker_side
ORDER BY call_id, speaker_side;"""


def build_fake(api_version: str = "v1") -> FakeOpenPhone:
    fake = FakeOpenPhone(api_key=DEMO_KEY, default_status=None, seed=13)
    ws = fake.workspace
    # A small workspace spread over the last 10 days: 2 lines, 3 conversations each, 4 calls each.
    ws.generate(phone_numbers=2, conversations=3, calls=4, days=10)
    # The sample ids are calls of the workspace too (ended two days ago), so
    # GET /v1/calls/{id} knows them and a summary 404 is past its window.
    line = next(iter(ws.phone_numbers.values()))
    conv = ws.add_conversation(line.id, ["+15550000199"], at=fake.clock.now() - dt.timedelta(days=3))
    for call_id in SAMPLES:
        ws.add_call(conv.id, at=fake.clock.now() - dt.timedelta(days=2), call_id=call_id)
    for call_id, (kind, _) in SAMPLES.items():
        if kind in ("404", "400"):
            continue
        fake.set_summary(call_id, sample_summary(call_id, kind))
    fake.set_summary("ACdemo02unicode", {
        "callId": "ACdemo02unicode", "status": "completed",
        "summary": ["Ünïcödé café ☕ — 電話のまとめ", "", "Emoji 4-byte: 😀"],
        "nextSteps": [],
    })
    fake.set_summary("ACdemo03jobs", {
        "callId": "ACdemo03jobs", "status": "completed",
        "summary": ["Customer booked a visit."], "nextSteps": ["Send confirmation."],
        "jobs": [{"icon": "📋", "name": "Booking", "result": {"data": [
            {"name": "address", "value": "1 Main St"},
            {"name": "visitors", "value": 2},
            {"name": "budget", "value": 149.5},
            {"name": "confirmed", "value": True},
            {"name": "paid", "value": False},
        ]}}],
    })
    error = {"message": "Call not found", "code": "0500404", "status": 404,
             "docs": "https://openphone.com/docs", "title": "Not Found"}
    fake.set_response("ACdemo07missing", 404, error)
    fake.set_response("ACdemo08bad", 400, dict(error, message="Invalid call id", code="0500400",
                                                 status=400, title="Bad Request"))
    if surface_for(api_version).call_in_summary:
        # The summary comes with its call from the workspace: these ids are not in it.
        for call_id in ("ACdemo07missing", "ACdemo08bad"):
            del ws.calls[call_id]
    return fake


def sandbox_url() -> str:
    """The demo's SQLite file: one folder per user in the temporary directory, emptied by every demo.

    Each run replaces the previous demo's database, so demos never pile up
    folders, and leaves its own for `etl status` to look at afterwards.  A
    folder of that name this user does not own is never used (a private new
    one is made instead).
    """
    uid = os.getuid()
    folder = Path(tempfile.gettempdir()) / f"etl-demo-{uid}"
    try:
        folder.mkdir(mode=0o700, exist_ok=True)
        info = folder.lstat()
        usable = stat.S_ISDIR(info.st_mode) and info.st_uid == uid
    except OSError:
        usable = False
    if not usable:
        folder = Path(tempfile.mkdtemp(prefix="etl-demo-"))
    path = folder / "demo.db"
    for stale in (path, folder / "demo.db-wal", folder / "demo.db-shm", folder / "demo.db-journal"):
        stale.unlink(missing_ok=True)
    return f"sqlite:///{path}"


def run_demo(engine: Engine, database_url: str, *, clock: Clock, sandbox: bool = True, transcripts: bool = False,
             api_version: str = "v1") -> None:
    from etl.running import run_discover, run_sync
    from etl.sync import RunOptions

    fake = build_fake(api_version)
    ids = list(SAMPLES)
    with engine.begin() as conn:
        # A re-run of the demo starts the sample ids afresh.
        store.forget_calls(conn, ids)
        store.enqueue_ids(conn, ids, clock.utcnow())
    settings = Settings(database_url=database_url, api_key=DEMO_KEY, base_url="https://demo.invalid",
                        rate=0, concurrency=4, backoff=Backoff(), transcripts=transcripts, api_version=api_version)
    since = clock.utcnow() - dt.timedelta(days=DISCOVER_DAYS)
    found = run_discover(engine, settings, DiscoverOptions(since=since, command="demo"), transport=fake.transport(),
                         page_log_level="debug", clock=clock)
    click.echo(found.summary() + "\n")
    stats = run_sync(engine, settings, RunOptions(command="demo"), transport=fake.transport(), clock=clock)
    _print_results(engine, ids, CALL_SUMMARY_SAMPLES if surface_for(api_version).call_in_summary else {})
    _print_bi(engine)
    if transcripts:
        _print_bi(engine, TALK_TIME_QUERY_TITLE, TALK_TIME_QUERY, "call_transcript_line_overview")
    removed = _remove_pending(engine, ids)
    click.echo(f"\nRun {stats.run_id}: {stats.summary()} — into {redact_url(database_url)}"
               + (" (a throwaway demo database, replaced by the next demo)." if sandbox else "."))
    if removed:
        click.echo(f"Removed the {len(removed)} rescheduled demo id{'s' if len(removed) != 1 else ''} "
                   f"({', '.join(removed)}) from the queue, so no real sync sends them.")
    click.echo(f"Next: {command_hint('etl status', database_url)}, or query the tables (docs/schema.md).")


def _remove_pending(engine: Engine, ids: list[str]) -> list[str]:
    """Delete the demo ids still pending: a real sync must never send a made-up id to the real API."""
    with engine.begin() as conn:
        return store.drop_pending(conn, ids)


def _print_results(engine: Engine, ids: list[str], shows: dict[str, str]) -> None:
    q, s, f = queue_t.c, summaries_t.c, fields_t.c
    with engine.connect() as conn:
        queue = {r.call_id: r for r in conn.execute(sa.select(q.call_id, q.state, q.last_api_status,
                                                             q.next_attempt_at).where(q.call_id.in_(ids)))}
        sums = {r.call_id: r for r in conn.execute(
            sa.select(s.call_id, s.line_count, s.next_step_count, s.job_count, s.summary_text)
            .where(s.call_id.in_(ids)))}
        fields = conn.execute(
            sa.select(f.name, f.value_type, f.value_text, f.value_number, f.value_boolean)
            .where(f.call_id == "ACdemo03jobs").order_by(f.field_position)).all()
    # One space between columns, each as wide as its widest cell; no line ends in spaces.
    click.echo(f"{'call id':<20} {'queue state':<11} {'API said':<12} {'rows (lines/steps/jobs)':<23} what it shows")
    for call_id in ids:
        row: Any = queue.get(call_id)
        summ: Any = sums.get(call_id)
        counts = f"{summ.line_count}/{summ.next_step_count}/{summ.job_count}" if summ else "-"
        click.echo(f"{call_id:<20} {row.state:<11} {row.last_api_status or '':<12} {counts:<23} "
                   f"{shows.get(call_id, SAMPLES[call_id][1])}".rstrip())
    click.echo("\nJob fields of ACdemo03jobs (typed columns):")
    for fld in fields:
        value = {"string": fld.value_text, "number": fld.value_number, "boolean": fld.value_boolean}[fld.value_type]
        click.echo(f"  {fld.name:<10} {fld.value_type:<8} {value!r}")


def _print_bi(engine: Engine, title: str = BI_QUERY_TITLE, query: str = BI_QUERY, source: str = "call_overview",
              limit: int = 12) -> None:
    with engine.connect() as conn:
        result = conn.execute(sa.text(query))
        columns = list(result.keys())
        rows = [tuple(r) for r in result]
    more = f" (first {limit} of {len(rows)} rows)" if len(rows) > limit else ""
    rows = rows[:limit]
    click.echo(f"\n{title} (docs/schema.md), from {source}{more}:")
    widths = [max(12, len(c), *(len(str(r[i])) for r in rows)) for i, c in enumerate(columns)]
    click.echo(("  " + "  ".join(c.ljust(w) for c, w in zip(columns, widths, strict=True))).rstrip())
    for row in rows:
        click.echo(("  " + "  ".join(str(v).ljust(w) for v, w in zip(row, widths, strict=True))).rstrip())
