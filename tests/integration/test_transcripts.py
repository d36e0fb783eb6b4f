"""Transcripts (issue 19) on real databases against the simulated API, on both API surfaces.

With ``transcripts`` on, every call the API answered a summary for gets its
transcript on the same budget, leases and retries: every completed
transcript's lines equal the API's dialogue with offsets from the call's
start; ``in-progress`` and a fresh 404 are retried, ``absent``, ``failed`` and
a 403 end in states of their own and never block the summaries; a re-sync of
unchanged content rewrites nothing.
"""

from __future__ import annotations

import datetime as dt
import json
from datetime import datetime
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from etl import Etl, store
from etl.config import Backoff, Settings
from etl.logs import configure_logging
from etl.normalize import clean_text
from etl.tables import calls_t, transcripts_t
from etl.testing import FakeOpenPhone
from tests.support.db import queue_rows, run

DATED = "2026-03-30"


@pytest.fixture(autouse=True)
def _fresh_logging() -> None:
    # A test that captured the log (capsys) leaves structlog writing to its closed stream.
    configure_logging("json", "info")


def rows(engine: Engine, sql: str, **params: Any) -> list[tuple[Any, ...]]:
    with engine.connect() as conn:
        return [tuple(r) for r in conn.execute(sa.text(sql), params)]


def transcript_queue(engine: Engine) -> dict[str, dict[str, Any]]:
    with engine.connect() as conn:
        return {r.call_id: dict(r._mapping) for r in conn.execute(sa.text("SELECT * FROM transcript_queue"))}


def api_time(text: object) -> datetime:
    return datetime.fromisoformat(str(text).replace("Z", "+00:00")).replace(tzinfo=None)


def stored_lines(engine: Engine, call_id: str) -> list[tuple[Any, ...]]:
    """(segment, position, identifier, user, start, end, text) in the call's order (segments by start)."""
    return rows(engine, """
        SELECT l.segment_id, l.position, l.identifier, l.user_id, l.start_seconds, l.end_seconds, l.text
        FROM call_transcript_lines l JOIN call_transcripts t ON t.call_id = l.call_id AND t.segment_id = l.segment_id
        WHERE l.call_id = :c ORDER BY t.started_at, l.position""", c=call_id)


def expected_v1(fake: FakeOpenPhone, call_id: str) -> list[tuple[Any, ...]]:
    data = fake.transcript_v1(call_id)
    assert data is not None
    return [("merged", i, d["identifier"], d["userId"], d["start"], d["end"], clean_text(d["content"]))
            for i, d in enumerate(data["dialogue"] or [])]


def expected_dated(fake: FakeOpenPhone, call_id: str, base: datetime | None) -> list[tuple[Any, ...]]:
    segments = fake.transcript_segments(call_id)
    assert segments is not None
    base = base or api_time(segments[0]["startTime"])
    out = []
    for s in segments:
        offset = (api_time(s["startTime"]) - base).total_seconds()
        out.extend((s["recordingId"], i, d["identifier"], d["actorId"], offset + d["start"], offset + d["end"],
                    clean_text(d["content"])) for i, d in enumerate(s["dialogue"] or []))
    return out


def call_created(engine: Engine, call_id: str) -> datetime | None:
    c = calls_t.c
    with engine.connect() as conn:
        return conn.execute(sa.select(c.created_at).where(c.call_id == call_id)).scalar_one_or_none()


def workspace(fake: FakeOpenPhone, calls: int = 4) -> tuple[list[str], list[str]]:
    """A small workspace: (completed call ids, other call ids)."""
    ws = fake.workspace
    ws.generate(phone_numbers=1, conversations=2, calls=calls, days=3)
    conv = next(iter(ws.conversations))
    ws.add_call(conv, at=ws.clock.now() - dt.timedelta(hours=5), status="missed")
    done = sorted(c.id for c in fake.workspace.calls.values() if c.status == "completed")
    other = sorted(c.id for c in fake.workspace.calls.values() if c.status != "completed")
    return done, other


def enqueue(engine: Engine, ids: list[str]) -> None:
    with engine.begin() as conn:
        store.enqueue_ids(conn, ids)


def on(settings: Settings, **changes: Any) -> Settings:
    return settings.replace(transcripts=True, backoff=Backoff(not_found_window=0), **changes)


@pytest.mark.parametrize("surface", ["v1", DATED])
def test_every_completed_transcript_lands_equal_to_the_api_dialogue(engine, settings, fake, surface):
    done, other = workspace(fake)
    assert done and other
    enqueue(engine, done + other)
    stats = run(engine, on(settings, api_version=surface), fake)
    assert stats.errors == 0
    states = {k: v["state"] for k, v in transcript_queue(engine).items()}
    # Every call the API answered gets its transcript: completed ones done, the others absent.
    assert states == {**dict.fromkeys(done, "done"), **dict.fromkeys(other, "absent")}
    for call_id in done:
        base = call_created(engine, call_id)
        assert base is not None  # the summary path stored the call first
        got = stored_lines(engine, call_id)
        want = expected_dated(fake, call_id, base) if surface == DATED else expected_v1(fake, call_id)
        assert got == want
        # Both surfaces put the same words at the same seconds from the call's start.
        assert [g[2:] for g in got] == [w[2:] for w in expected_v1(fake, call_id)]
    assert rows(engine, "SELECT COUNT(*) FROM call_transcript_lines WHERE call_id IN ('"
                + "','".join(other) + "')") == [(0,)]
    endpoint = "transcripts" if surface == DATED else "call-transcripts"
    endpoints = fake.stats()["endpoints"]
    assert isinstance(endpoints, dict)
    assert endpoints[endpoint]["requests"] == len(done) + len(other)  # one request per call (one page each)


def test_a_dated_transcript_without_a_call_row_counts_from_its_first_segment(engine, settings, fake):
    done, _ = workspace(fake)
    call_id = next(c for c in done if len(fake.transcript_segments(c) or []) > 1)
    with engine.begin() as conn:
        store.enqueue_transcripts(conn, [call_id], datetime(2026, 1, 1))
    run(engine, on(settings, api_version=DATED), fake)
    assert transcript_queue(engine)[call_id]["state"] == "done"
    assert call_created(engine, call_id) is None
    got = stored_lines(engine, call_id)
    assert got == expected_dated(fake, call_id, None)
    assert got[0][4] < 20  # the first segment starts at 0, not at the call's ring time
    offsets = rows(engine, "SELECT offset_seconds FROM call_transcripts WHERE call_id = :c ORDER BY started_at",
                   c=call_id)
    assert offsets[0] == (0.0,) and offsets[1][0] > 0


def test_states_in_progress_failed_absent_404_and_retry_until_done(engine, settings, fake):
    done, _ = workspace(fake, calls=5)
    progress, failed, absent, missing, late = done[:5]
    fake.transcript_status.update({progress: "in-progress", failed: "failed", absent: "absent",
                                   missing: "missing", late: "missing"})
    with engine.begin() as conn:
        store.enqueue_transcripts(conn, [progress, failed, absent, missing], datetime(2000, 1, 1))
        store.enqueue_transcripts(conn, [late], datetime(2999, 1, 1))  # enqueued "now": its 404 is fresh
        conn.execute(sa.text("UPDATE transcript_queue SET next_attempt_at = :t"), {"t": datetime(2000, 1, 1)})
    stats = run(engine, settings.replace(transcripts=True), fake)
    q = transcript_queue(engine)
    assert {k: v["state"] for k, v in q.items()} == {
        progress: "pending", failed: "failed", absent: "absent", missing: "not_found", late: "pending"}
    assert q[progress]["last_api_status"] == "in-progress" and q[progress]["incomplete_since"] is not None
    assert "retrying until" in q[late]["last_error"]
    assert stats.transcripts_completed == 0 and stats.transcripts_rescheduled == 2
    assert stats.completed == stats.rescheduled == stats.claimed == 0  # no summary was touched
    # Ended items are never fetched again; the rescheduled ones are, and land when ready.
    fake.transcript_status.pop(progress)
    fake.transcript_status.pop(late)
    with engine.begin() as conn:
        conn.execute(sa.text("UPDATE transcript_queue SET next_attempt_at = :t WHERE state = 'pending'"),
                     {"t": datetime(2000, 1, 1)})
    before = fake.stats()["endpoints"]["call-transcripts"]["requests"]  # type: ignore[index]
    run(engine, settings.replace(transcripts=True), fake)
    assert fake.stats()["endpoints"]["call-transcripts"]["requests"] - before == 2  # type: ignore[index]
    q = transcript_queue(engine)
    assert (q[progress]["state"], q[late]["state"]) == ("done", "done")
    assert stored_lines(engine, progress) == expected_v1(fake, progress)
    assert rows(engine, "SELECT status, line_count FROM call_transcripts WHERE call_id = :c", c=failed) == [
        ("failed", 0)]


def test_a_403_ends_one_transcript_forbidden_says_so_once_and_never_stops_the_summaries(
        engine, settings, fake, capsys):
    configure_logging("json", "info")
    done, _ = workspace(fake, calls=4)
    fake.transcripts_enabled = False
    enqueue(engine, done)
    stats = run(engine, on(settings, concurrency=1), fake)
    assert stats.exit_code == 0
    assert {v["state"] for v in queue_rows(engine).values()} == {"done"}  # every summary landed
    q = transcript_queue(engine)
    assert set(q) == set(done)
    forbidden = [k for k, v in q.items() if v["state"] == "forbidden"]
    assert len(forbidden) == 1
    assert q[forbidden[0]]["last_api_status"] == "http 403"
    # The others were released unchanged: due again, never attempted.
    rest = [v for k, v in q.items() if k != forbidden[0]]
    assert {(v["state"], v["attempts"], v["lease_owner"]) for v in rest} == {("pending", 0, None)}
    endpoints = fake.stats()["endpoints"]
    assert isinstance(endpoints, dict)
    assert endpoints["call-transcripts"]["requests"] == 1
    log = [json.loads(line) for line in capsys.readouterr().err.splitlines() if line.startswith("{")]
    warnings = [e for e in log if "plan has no call transcripts" in e["event"]]
    assert len(warnings) == 1 and warnings[0]["level"] == "warning"


def test_a_401_on_a_transcript_still_stops_the_run(engine, settings, fake):
    done, _ = workspace(fake, calls=2)
    with engine.begin() as conn:
        store.enqueue_transcripts(conn, done, datetime(2000, 1, 1))
    stats = Etl(on(settings, api_key="another-key"), engine=engine).sync(transport=fake.transport())
    assert stats.exit_code == 3
    assert {(v["state"], v["attempts"]) for v in transcript_queue(engine).values()} == {("pending", 0)}


def test_an_unchanged_transcript_is_not_rewritten_and_a_changed_one_is_replaced_whole(engine, settings, fake):
    done, _ = workspace(fake, calls=3)
    call_id = done[0]
    with engine.begin() as conn:
        store.enqueue_transcripts(conn, [call_id], datetime(2000, 1, 1))
    run(engine, on(settings), fake)
    with engine.begin() as conn:
        # A marker only a rewrite would remove.
        conn.execute(sa.text("UPDATE call_transcript_lines SET text = 'marker' WHERE call_id = :c AND position = 0"),
                     {"c": call_id})
        conn.execute(sa.text("UPDATE transcript_queue SET state = 'pending', next_attempt_at = :t"),
                     {"t": datetime(2000, 1, 1)})
    with engine.connect() as conn:
        first_synced = conn.execute(sa.select(transcripts_t.c.first_synced_at)
                                    .where(transcripts_t.c.call_id == call_id)).scalar_one()
    run(engine, on(settings), fake)
    assert rows(engine, "SELECT text FROM call_transcript_lines WHERE call_id = :c AND position = 0",
                c=call_id) == [("marker",)]
    # Changed content (another surface's segments): replaced as a whole, first_synced_at kept.
    with engine.begin() as conn:
        conn.execute(sa.text("UPDATE transcript_queue SET state = 'pending', next_attempt_at = :t"),
                     {"t": datetime(2000, 1, 1)})
    run(engine, on(settings, api_version=DATED), fake)
    got = stored_lines(engine, call_id)
    assert got == expected_dated(fake, call_id, call_created(engine, call_id))
    assert "marker" not in [g[6] for g in got]
    t = transcripts_t.c
    with engine.connect() as conn:
        segments = conn.execute(sa.select(t.segment_id, t.first_synced_at).where(t.call_id == call_id)).all()
    assert "merged" not in [s[0] for s in segments]
    assert {s[1] for s in segments} == {first_synced}


def test_transcripts_off_queues_and_fetches_nothing(engine, settings, fake):
    done, _ = workspace(fake, calls=2)
    enqueue(engine, done)
    run(engine, settings, fake)
    assert transcript_queue(engine) == {}
    endpoints = fake.stats()["endpoints"]
    assert isinstance(endpoints, dict) and "call-transcripts" not in endpoints


def test_v1_discovery_enqueues_the_transcripts_of_the_completed_calls_it_enqueues(engine, settings, fake):
    done, _ = workspace(fake, calls=3)
    job = Etl(on(settings), engine=engine, transport=fake.transport())
    found = job.discover(since=datetime(2000, 1, 1))
    assert found.exit_code == 0
    assert set(transcript_queue(engine)) == set(done)
    assert set(queue_rows(engine)) == set(done)


def test_transcript_faults_are_retried_inside_the_run(engine, settings):
    from etl.testing import Faults

    fake = FakeOpenPhone(api_key=settings.api_key or "", faults=Faults(
        seed=3, error_500=0.3, drop=0.1, truncated=0.1, garbage=0.1, schema_violation=0.1, max_per_id=1,
        endpoints=frozenset({"call-transcripts", "transcripts"})))
    done, _ = workspace(fake, calls=4)
    with engine.begin() as conn:
        store.enqueue_transcripts(conn, done, datetime(2000, 1, 1))
    for surface in ("v1", DATED):
        with engine.begin() as conn:
            conn.execute(sa.text("UPDATE transcript_queue SET state = 'pending', next_attempt_at = :t"),
                         {"t": datetime(2000, 1, 1)})
        stats = run(engine, on(settings, api_version=surface, retry_attempts=4), fake)
        assert stats.errors == 0
        assert {v["state"] for v in transcript_queue(engine).values()} == {"done"}
    assert fake.stats()["outcomes"] != {"200": fake.stats()["total_requests"]}  # faults did happen


def test_the_summary_queue_and_transcript_queue_lease_the_same_id_independently(engine, settings, fake):
    done, _ = workspace(fake, calls=1)
    call_id = done[0]
    now = datetime(2999, 1, 1)  # after the server-side default of the summary item
    with engine.begin() as conn:
        store.enqueue_ids(conn, [call_id])
        store.enqueue_transcripts(conn, [call_id], now - dt.timedelta(hours=1))
        both = (store.claim(conn, "run-a", 10, now, 300)
                + store.claim(conn, "run-a", 10, now, 300, "transcript"))
    assert [(i.queue, i.call_id) for i in both] == [("summary", call_id), ("transcript", call_id)]
    with engine.begin() as conn:
        assert store.release(conn, "run-a", both) == 2
    assert transcript_queue(engine)[call_id]["lease_owner"] is None
    assert queue_rows(engine)[call_id]["lease_owner"] is None


@pytest.mark.slow
def test_sigkill_mid_sync_then_rerun_lands_every_transcript_once(engine, db_url, tmp_path):
    """A real `etl sync --transcripts` process killed twice mid-run, then run to the end, then again."""
    import signal

    from etl.testing import serve
    from tests.support.db import API_KEY, make_due
    from tests.support.proc import etl_env, start_etl, stop, wait_for

    def scalar(sql: str) -> int:
        return int(rows(engine, sql)[0][0])

    # Slow enough answers that a run is still going when the test has seen 20 more transcripts land
    # (with 15 ms and 100 ids a loaded machine saw a run finish before it could be killed).
    fake = FakeOpenPhone(api_key=API_KEY, latency_ms=40)
    ids = [f"ACkilltr{i:03d}" for i in range(150)]
    enqueue(engine, ids)
    sync = ["sync", "--rate", "0", "--concurrency", "4"]
    with serve(fake) as url:
        env = etl_env(db_url, url, API_KEY, ETL_TRANSCRIPTS="1")
        for k in range(2):
            target = scalar("SELECT count(DISTINCT call_id) FROM call_transcripts") + 20
            proc = start_etl(sync, env, tmp_path, f"kill{k}")
            try:
                wait_for(lambda t=target: scalar("SELECT count(DISTINCT call_id) FROM call_transcripts") >= t, 60,
                         f"{target} transcripts", proc)
            finally:
                proc.send_signal(signal.SIGKILL)
                assert stop(proc) == -signal.SIGKILL
            # All or nothing per transaction: a done item has its rows, rows have a done item.
            assert scalar("SELECT count(*) FROM transcript_queue WHERE state = 'done'") == scalar(
                "SELECT count(DISTINCT call_id) FROM call_transcripts")
            assert scalar("SELECT count(*) FROM call_summaries s LEFT JOIN transcript_queue q "
                          "ON q.call_id = s.call_id WHERE q.call_id IS NULL") == 0  # queued with its summary
            make_due(engine)
            with engine.begin() as conn:
                conn.execute(sa.text("UPDATE transcript_queue SET next_attempt_at = :t WHERE state = 'pending'"),
                             {"t": datetime(2000, 1, 1)})
        proc = start_etl(sync, env, tmp_path, "final")
        assert stop(proc) == 0
        assert {v["state"] for v in transcript_queue(engine).values()} == {"done"}
        assert set(transcript_queue(engine)) == set(ids)
        for call_id in ids:
            assert stored_lines(engine, call_id) == expected_v1(fake, call_id)
        before = rows(engine, "SELECT * FROM call_transcript_lines ORDER BY call_id, segment_id, position")
        requests = fake.stats()["total_requests"]
        proc = start_etl(sync, env, tmp_path, "again")
        assert stop(proc) == 0
    assert rows(engine, "SELECT * FROM call_transcript_lines ORDER BY call_id, segment_id, position") == before
    assert fake.stats()["total_requests"] == requests  # nothing due: nothing asked


def test_status_counts_the_transcript_queue(engine, db_url, settings, fake):
    from click.testing import CliRunner

    from etl.cli import cli

    done, other = workspace(fake, calls=2)
    enqueue(engine, done + other)
    assert Etl(settings, engine=engine).status().as_dict()["transcript_queue"] is None  # off: nothing to show
    run(engine, on(settings), fake)
    counts = Etl(settings, engine=engine).status().as_dict()["transcript_queue"]
    assert counts == {"pending": 0, "done": len(done), "failed": 0, "absent": len(other), "forbidden": 0,
                      "not_found": 0, "invalid": 0, "error": 0}
    result = CliRunner().invoke(cli, ["status", "--database-url", db_url])
    assert result.exit_code == 0, result.output
    assert f"Transcripts ({len(done) + len(other)} items): done {len(done)}, absent {len(other)}" in result.stdout


@pytest.mark.parametrize("surface", ["v1", DATED])
def test_nul_and_lone_surrogates_in_a_transcript_are_stored_as_replacement_characters(engine, settings, fake,
                                                                                       surface):
    import httpx

    done, _ = workspace(fake, calls=2)
    call_id = done[0]

    def handler(request: httpx.Request) -> httpx.Response:
        response = fake.handle_sync(request)
        if "transcripts" not in request.url.path:
            return response
        # Every line of this call's transcript gets a NUL and a lone surrogate, as JSON escapes.
        body = response.content.replace(b'"content":"', b'"content":"\\u0000\\ud800 ')
        return httpx.Response(response.status_code, headers={"content-type": "application/json"}, content=body)

    with engine.begin() as conn:
        store.enqueue_transcripts(conn, [call_id], datetime(2000, 1, 1))
    stats = Etl(on(settings, api_version=surface), engine=engine).sync(transport=httpx.MockTransport(handler))
    assert stats.errors == 0
    texts = [line[6] for line in stored_lines(engine, call_id)]
    want = [w[6] for w in (expected_v1(fake, call_id) if surface == "v1" else expected_dated(fake, call_id, None))]
    assert texts == ["\ufffd\ufffd " + t for t in want]
