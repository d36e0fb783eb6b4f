"""`etl prune` (issue 19, part 5): forget transcript lines and raw payloads of old calls, on every database.

Retention runs from the call's start (``calls.created_at``; a transcript whose
call has no row, from its ``createdAt``), exactly at the bound; the
``call_transcripts`` rows stay, marked ``pruned_at``; a re-sync does not bring
pruned lines back; ``--dry-run`` counts the same and changes nothing; the work
goes in batches.  Times are fixed (the simulated API's clock and a FakeClock).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import sqlalchemy as sa
from click.testing import CliRunner
from sqlalchemy.engine import Engine

from etl import Etl, store
from etl.cli import cli
from etl.config import Backoff
from etl.tables import calls_t, summaries_t, transcripts_t
from etl.testing import ApiClock, FakeClock, FakeOpenPhone
from tests.support.db import API_KEY, run

NOW = datetime(2026, 1, 1)  # FakeClock's and the simulated API's now (naive UTC)
BOUND = NOW - timedelta(days=30)


pytestmark = pytest.mark.usefixtures("quiet_logs")


def count(engine: Engine, sql: str, **params: Any) -> int:
    with engine.connect() as conn:
        return int(conn.execute(sa.text(sql), params).scalar_one())


def lines_per_call(engine: Engine) -> dict[str, int]:
    with engine.connect() as conn:
        return dict(conn.execute(sa.text(
            "SELECT call_id, COUNT(*) FROM call_transcript_lines GROUP BY call_id")).all())


def load(engine: Engine, settings, ages: dict[str, timedelta], orphans: dict[str, timedelta]) -> FakeOpenPhone:
    """Calls that started ``ages`` before NOW, synced with transcripts; ``orphans`` get a transcript only."""
    fake = FakeOpenPhone(api_key=API_KEY, clock=ApiClock(NOW.replace(tzinfo=UTC)))
    ws = fake.workspace
    pn = ws.add_phone_number("+15550100000")
    conv = ws.add_conversation(pn.id, ["+15550100001"], at=NOW.replace(tzinfo=UTC) - timedelta(days=90))
    for call_id, age in {**ages, **orphans}.items():
        ws.add_call(conv.id, at=NOW.replace(tzinfo=UTC) - age, call_id=call_id)
    with engine.begin() as conn:
        store.enqueue_ids(conn, list(ages))
        store.enqueue_transcripts(conn, list(orphans), datetime(2000, 1, 1))
    stats = run(engine, settings.replace(transcripts=True, backoff=Backoff(not_found_window=0)), fake)
    assert stats.errors == 0
    return fake


AGES = {
    "ACold40days": timedelta(days=40),
    "ACjustover": timedelta(days=30, seconds=1),
    "ACjustunder": timedelta(days=30) - timedelta(seconds=1),
    "ACfresh5days": timedelta(days=5),
}
# No call row: the transcript's createdAt (the call's end plus a few minutes) is its age.
ORPHANS = {"ACorphan45days": timedelta(days=45), "ACorphan10days": timedelta(days=10)}
OLD = {"ACold40days", "ACjustover", "ACorphan45days"}


def test_prune_removes_exactly_the_lines_of_calls_older_than_the_bound_and_keeps_the_rows(engine, settings):
    fake = load(engine, settings, AGES, ORPHANS)
    before = lines_per_call(engine)
    assert set(before) == set(AGES) | set(ORPHANS)
    assert count(engine, "SELECT COUNT(*) FROM calls WHERE call_id LIKE 'ACorphan%'") == 0
    job = Etl(settings, engine=engine, clock=FakeClock(NOW))

    dry = job.prune(transcripts_older_than=30, dry_run=True)
    assert (dry.transcript_calls, dry.transcript_lines) == (len(OLD), sum(before[c] for c in OLD))
    assert lines_per_call(engine) == before  # a dry run changes nothing

    done = job.prune(transcripts_older_than=30, batch_size=2)
    assert (done.transcript_calls, done.transcript_lines) == (dry.transcript_calls, dry.transcript_lines)
    assert done.transcripts_before == BOUND and done.batches == 2
    assert lines_per_call(engine) == {c: n for c, n in before.items() if c not in OLD}
    t = transcripts_t.c
    with engine.connect() as conn:
        pruned = dict(conn.execute(sa.select(t.call_id, t.pruned_at).where(t.pruned_at.is_not(None))).all())
        kept_rows = conn.execute(sa.select(sa.func.count()).select_from(transcripts_t)).scalar_one()
    assert set(pruned) == OLD and set(pruned.values()) == {NOW}
    assert kept_rows == len(before)  # every row stays (v1: one merged segment per call)

    # Pruning again finds nothing; a re-sync of the same transcripts brings no line back.
    again = job.prune(transcripts_older_than=30)
    assert (again.transcript_calls, again.transcript_lines) == (0, 0)
    with engine.begin() as conn:
        conn.execute(sa.text("UPDATE transcript_queue SET state = 'pending', next_attempt_at = :t"),
                     {"t": datetime(2000, 1, 1)})
    for surface in ("v1", "2026-03-30"):  # unchanged content, then changed content (other segments)
        run(engine, settings.replace(transcripts=True, api_version=surface), fake)
        assert lines_per_call(engine) == {c: n for c, n in before.items() if c not in OLD}
        with engine.begin() as conn:
            conn.execute(sa.text("UPDATE transcript_queue SET state = 'pending', next_attempt_at = :t"),
                         {"t": datetime(2000, 1, 1)})


def test_prune_raw_json_clears_the_payloads_of_old_calls_only(engine, settings):
    load(engine, settings, AGES, {})
    job = Etl(settings, engine=engine, clock=FakeClock(NOW))
    dry = job.prune(raw_json_older_than=30, dry_run=True)
    assert (dry.summary_payloads, dry.call_payloads) == (2, 2)
    done = job.prune(raw_json_older_than=30, batch_size=1)
    assert (done.summary_payloads, done.call_payloads) == (2, 2)
    s, c = summaries_t.c, calls_t.c
    with engine.connect() as conn:
        summaries = dict(conn.execute(sa.select(s.call_id, s.raw_json)).all())
        calls = dict(conn.execute(sa.select(c.call_id, c.raw_json)).all())
    old = {"ACold40days", "ACjustover"}
    assert {k for k, v in summaries.items() if v == ""} == old
    assert {k for k, v in calls.items() if v == ""} == old
    assert all(v.startswith("{") for k, v in summaries.items() if k not in old)
    assert lines_per_call(engine)  # raw JSON pruning leaves transcripts alone
    # An unchanged re-sync does not bring the payload back (the content hash is unchanged).
    with engine.begin() as conn:
        conn.execute(sa.text("UPDATE summary_queue SET state = 'pending', next_attempt_at = :t"),
                     {"t": datetime(2000, 1, 1)})
    run(engine, settings, FakeOpenPhone(api_key=API_KEY, clock=ApiClock(NOW.replace(tzinfo=UTC))))
    with engine.connect() as conn:
        assert {k for k, v in conn.execute(sa.select(s.call_id, s.raw_json)).all() if v == ""} == old


def test_the_cli_prints_what_it_removed_and_refuses_nothing_to_do(db_url, engine, settings):
    ages = {"ACcliold": timedelta(days=400), "ACclinew": timedelta(days=1)}
    # The CLI runs on the system clock: the simulated API's calls are dated from today.
    today = datetime.now(UTC).replace(tzinfo=None, microsecond=0)  # the test's own reading of the wall clock
    fake = FakeOpenPhone(api_key=API_KEY, clock=ApiClock(today.replace(tzinfo=UTC)))
    ws = fake.workspace
    conv = ws.add_conversation(ws.add_phone_number("+15550100000").id, ["+15550100001"],
                               at=today.replace(tzinfo=UTC) - timedelta(days=500))
    for call_id, age in ages.items():
        ws.add_call(conv.id, at=today.replace(tzinfo=UTC) - age, call_id=call_id)
    with engine.begin() as conn:
        store.enqueue_ids(conn, list(ages))
    run(engine, settings.replace(transcripts=True), fake)
    old_lines = lines_per_call(engine)["ACcliold"]
    runner = CliRunner()
    result = runner.invoke(cli, ["prune", "--transcripts-older-than", "365", "--dry-run", "--database-url", db_url])
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith(f"Would remove {old_lines} transcript line(s) of 1 call(s) that started before ")
    result = runner.invoke(cli, ["prune", "--transcripts-older-than", "365", "--raw-json-older-than", "365",
                                 "--database-url", db_url])
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[0].startswith(f"Removed {old_lines} transcript line(s) of 1 call(s) that started before ")
    assert lines[1].startswith("Cleared 1 summary payload(s) and 1 call payload(s) of calls that started before ")
    assert set(lines_per_call(engine)) == {"ACclinew"}
    result = runner.invoke(cli, ["prune", "--database-url", db_url])
    assert result.exit_code == 2
    assert result.output.strip().splitlines()[-1] == (
        "Error: nothing to prune: give --transcripts-older-than DAYS and/or --raw-json-older-than DAYS")
    result = runner.invoke(cli, ["prune", "--transcripts-older-than", "-1", "--database-url", db_url])
    assert result.exit_code == 2 and "-1" in result.output


def test_prune_runs_beside_a_sync_holding_leases(engine, settings):
    """Prune takes no queue row: a run's leased items (summary and transcript) are untouched."""
    load(engine, settings, {"ACold40days": timedelta(days=40)}, {})
    with engine.begin() as conn:
        conn.execute(sa.text("UPDATE transcript_queue SET state = 'pending', next_attempt_at = :t"),
                     {"t": datetime(2000, 1, 1)})
        leased = store.claim(conn, "other-run", 10, NOW, 300, "transcript")
    assert [i.call_id for i in leased] == ["ACold40days"]
    result = Etl(settings, engine=engine, clock=FakeClock(NOW)).prune(transcripts_older_than=30)
    assert result.transcript_calls == 1
    with engine.connect() as conn:
        owner = conn.execute(sa.text("SELECT lease_owner FROM transcript_queue")).scalar_one()
    assert owner == "other-run"
