"""End-to-end smoke: enqueue → sync → rows, on every database."""

from __future__ import annotations

import sqlalchemy as sa

from etl import store
from tests.support.db import queue_rows, run


def test_sync_stores_completed_summary(engine, settings, fake):
    with engine.begin() as conn:
        store.enqueue_ids(conn, ["AC1", "AC2"])
    stats = run(engine, settings, fake)
    assert (stats.completed, stats.exit_code) == (2, 0)
    assert {r["state"] for r in queue_rows(engine).values()} == {"done"}
    with engine.connect() as conn:
        n = conn.execute(sa.text("SELECT count(*) FROM call_summaries")).scalar_one()
    assert n == 2
