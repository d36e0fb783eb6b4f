"""What a summary event does to the queue, on each database (no server: the intake functions)."""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from etl import store
from etl.clock import utcnow
from etl.testing.clock import FakeClock


def test_summary_event_jumps_a_backlog_enqueued_in_one_statement(engine: Engine) -> None:
    from etl.webhooks.intake import summary_ready

    with engine.begin() as conn:
        store.enqueue_ids(conn, [f"ACback{n}" for n in range(200)])  # one statement: one timestamp
        store.enqueue_ids(conn, ["ACdone1"])
        conn.execute(sa.text("UPDATE summary_queue SET state = 'done', finished_at = next_attempt_at "
                             "WHERE call_id = 'ACdone1'"))
    with engine.begin() as conn:
        summary_ready(conn, "AChot1", utcnow())
        summary_ready(conn, "ACback150", utcnow())
        summary_ready(conn, "ACdone1", utcnow())
    with engine.begin() as conn:
        claimed = [i.call_id for i in store.claim(conn, "run-1", 2, utcnow(), 300)]
        state = conn.execute(sa.text("SELECT state FROM summary_queue WHERE call_id = 'ACdone1'")).scalar()
    assert sorted(claimed) == ["ACback150", "AChot1"]
    assert state == "done"  # done stays done


# --- issue 18 item 9: the dated envelope, on each database ------------------------------


def _apply(engine: Engine, doc: dict[str, object]) -> None:
    from etl.testing import webhooks
    from etl.webhooks.events import parse_event
    from etl.webhooks.intake import apply_event

    with engine.begin() as conn:
        apply_event(conn, parse_event(webhooks.body_bytes(doc)), utcnow())


def _row(engine: Engine, sql: str, **params: object) -> tuple[object, ...] | None:
    with engine.connect() as conn:
        row = conn.execute(sa.text(sql), params).first()
    return tuple(row) if row is not None else None


def test_dated_summary_is_stored_without_a_request(engine: Engine) -> None:
    from etl.testing import sample_summary, webhooks

    summary = sample_summary("ACdated1")
    _apply(engine, webhooks.dated_summary_completed("ACdated1", summary))
    assert _row(engine, "SELECT state, last_api_status, finished_at IS NOT NULL, attempts FROM summary_queue "
                        "WHERE call_id = 'ACdated1'") == ("done", "completed", True, 0)
    assert _row(engine, "SELECT status, summary_text, line_count, next_step_count, job_count FROM call_summaries "
                        "WHERE call_id = 'ACdated1'") == (
        "completed", "\n".join(summary["summary"]), len(summary["summary"]),  # type: ignore[arg-type]
        len(summary["nextSteps"]), len(summary["jobs"]))  # type: ignore[arg-type]
    lines = _row(engine, "SELECT count(*) FROM call_summary_lines WHERE call_id = 'ACdated1'")
    assert lines == (len(summary["summary"]),)  # type: ignore[arg-type]


def test_dated_summary_that_is_not_completed_or_not_valid_makes_the_id_due(engine: Engine) -> None:
    from etl.testing import webhooks

    _apply(engine, webhooks.dated_summary_completed("ACdated2", {"status": "in-progress", "summary": None,
                                                                 "nextSteps": None}))
    broken = webhooks.dated_summary_completed("ACdated3")
    broken["data"]["resource"]["nextSteps"] = [1, 2]  # type: ignore[index]
    _apply(engine, broken)
    for call_id in ("ACdated2", "ACdated3"):
        assert _row(engine, "SELECT state FROM summary_queue WHERE call_id = :c", c=call_id) == ("pending",)
        assert _row(engine, "SELECT count(*) FROM call_summaries WHERE call_id = :c", c=call_id) == (0,)


def test_dated_summary_of_an_item_a_run_holds_is_left_to_that_run(engine: Engine) -> None:
    from etl.testing import webhooks

    with engine.begin() as conn:
        store.enqueue_ids(conn, ["ACdated4"])
        assert [i.call_id for i in store.claim(conn, "run-1", 1, utcnow(), 300)] == ["ACdated4"]
    _apply(engine, webhooks.dated_summary_completed("ACdated4"))
    assert _row(engine, "SELECT state, lease_owner FROM summary_queue WHERE call_id = 'ACdated4'") == (
        "pending", "run-1")
    assert _row(engine, "SELECT count(*) FROM call_summaries WHERE call_id = 'ACdated4'") == (0,)


def test_dated_call_completed_stores_the_call_row(engine: Engine) -> None:
    from etl.testing import FakeOpenPhone, webhooks

    call = FakeOpenPhone().workspace.synth_call("ACdated5").to_json()
    doc = webhooks.dated_call_completed(call)
    _apply(engine, doc)
    assert _row(engine, "SELECT state FROM summary_queue WHERE call_id = 'ACdated5'") == ("pending",)
    assert _row(engine, "SELECT user_id, duration_seconds, participant_count FROM calls "
                        "WHERE call_id = 'ACdated5'") == (
        call["userId"], call["duration"], len(call["participants"]))  # type: ignore[arg-type]
    raw = _row(engine, "SELECT raw_json FROM calls WHERE call_id = 'ACdated5'")
    assert raw is not None and '"actorId"' in str(raw[0])  # the object as sent


def test_a_malformed_call_object_never_stops_the_enqueue(engine: Engine) -> None:
    from etl.testing import webhooks

    _apply(engine, webhooks.dated_event("call.completed", {"id": "ACdated6", "duration": "long",
                                                          "participants": [{"phoneNumber": 5}]}))
    assert _row(engine, "SELECT state FROM summary_queue WHERE call_id = 'ACdated6'") == ("pending",)
    assert _row(engine, "SELECT count(*) FROM calls WHERE call_id = 'ACdated6'") == (0,)


def test_transcript_event_makes_the_id_due_and_done_stays_done(engine: Engine) -> None:
    from etl.testing import webhooks
    from etl.webhooks.intake import transcript_ready

    with engine.begin() as conn:
        store.enqueue_ids(conn, ["ACdated8"])
        conn.execute(sa.text("UPDATE summary_queue SET state = 'done' WHERE call_id = 'ACdated8'"))
        transcript_ready(conn, "ACdated8", utcnow())
    _apply(engine, webhooks.dated_transcript_completed("ACdated7"))
    with engine.begin() as conn:
        claimed = [i.call_id for i in store.claim(conn, "run-2", 5, utcnow(), 300)]
    assert claimed == ["ACdated7"]
    assert _row(engine, "SELECT state FROM summary_queue WHERE call_id = 'ACdated8'") == ("done",)


def test_dated_summary_with_a_lone_surrogate_and_nul_is_stored_cleaned(engine: Engine) -> None:
    import json

    from etl.testing import webhooks
    from etl.webhooks.events import parse_event
    from etl.webhooks.intake import apply_event

    doc = webhooks.dated_summary_completed("ACdated9", {"status": "completed", "summary": ["A\x00B", "@SURROGATE@"],
                                                        "nextSteps": [], "jobs": []})
    raw = json.dumps(doc).replace("@SURROGATE@", "\\ud800").encode()  # ASCII JSON: the escape stays an escape
    event = parse_event(raw)
    assert event.summary is not None
    with engine.begin() as conn:
        apply_event(conn, event, utcnow())
    assert _row(engine, "SELECT summary_text FROM call_summaries WHERE call_id = 'ACdated9'") == (
        "A\ufffdB\n\ufffd",)
    stored = _row(engine, "SELECT raw_json FROM call_summaries WHERE call_id = 'ACdated9'")
    assert stored is not None and json.loads(str(stored[0]))["data"]["summary"] == ["A\x00B", "\ud800"]


def test_a_test_event_is_recorded_for_migrate_and_queues_nothing(engine: Engine, clock: FakeClock) -> None:
    """Quo's test event (`etl webhooks migrate` asks for one) carries its canonical sample call or contact:
    the delivery is recorded, as migrate waits for, and nothing is queued or stored for the sample."""
    from datetime import timedelta

    from etl.testing import webhooks
    from etl.webhooks.events import parse_event
    from etl.webhooks.intake import accept
    from etl.webhooks.manage import TEST_EVENT_TYPE, test_event_received
    from etl.webhooks.signatures import Verified

    now = clock.utcnow()
    kinds = ["call.transcript.completed", "call.completed", "call.summary.completed", "contact.updated",
             "contact.deleted"]
    docs = [webhooks.sample_dated_event(kind) for kind in kinds]
    outcomes = [accept(engine, Verified("standard", f"{n:064x}", f"msg_{n}", now),
                       parse_event(webhooks.body_bytes(doc)), now, clock=clock, transcripts=True).outcome
                for n, doc in enumerate(docs)]
    assert outcomes == ["ignored"] * 5
    assert kinds[0] == TEST_EVENT_TYPE
    assert test_event_received(engine, [str(docs[0]["id"])], now - timedelta(seconds=1))
    assert _row(engine, "SELECT count(*), count(event_key) FROM webhook_deliveries WHERE outcome = 'ignored' "
                        "AND call_id = :c", c=webhooks.SAMPLE_CALL_ID) == (3, 3)
    for table in ("summary_queue", "transcript_queue", "calls", "call_summaries", "contacts"):
        assert _row(engine, f"SELECT count(*) FROM {table}") == (0,), table
