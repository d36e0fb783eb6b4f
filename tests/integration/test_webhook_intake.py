"""What a summary event does to the queue, on each database (no server: the intake functions)."""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from etl import store
from etl.clock import utcnow


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
