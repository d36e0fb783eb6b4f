"""The store's one hash-compare-and-replace of a parent row and its children, past MariaDB's IN-list
threshold, on each database."""

from __future__ import annotations

import hashlib
import json
from datetime import datetime, timedelta

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from etl import store
from etl.api import webhook_summary
from etl.clock import utcnow
from etl.normalize import CallRows, normalize
from etl.testing import sample_summary

IDS = [f"ACbig{n:05d}" for n in range(1200)]  # more than two chunks of an IN list


def _rows(call_id: str, content_of: str, now: datetime) -> CallRows:
    data = dict(sample_summary(content_of), callId=call_id)
    raw = json.dumps({"data": data}, sort_keys=True)
    return normalize(webhook_summary(data), raw, hashlib.sha256(raw.encode()).hexdigest(), now)


def _children(engine: Engine) -> dict[str, int]:
    with engine.connect() as conn:
        return {table: conn.execute(sa.text(f"SELECT count(*) FROM {table}")).scalar_one()
                for table in ("call_summary_lines", "call_next_steps", "call_jobs",
                              "call_job_fields")}


def test_summaries_rewritten_in_a_batch_past_the_in_list_threshold_replace_their_children(engine: Engine) -> None:
    first = utcnow()
    with engine.begin() as conn:
        store.save_summaries(conn, [_rows(i, i, first) for i in IDS], first)
    before = _children(engine)
    # Every other call changed content (another summary's), the rest came back the same.
    later = first + timedelta(minutes=5)
    again = [_rows(i, f"ACnew{i}" if n % 2 else i, later) for n, i in enumerate(IDS)]
    with engine.begin() as conn:
        store.save_summaries(conn, again, later)
    expected = {"call_summary_lines": sum(len(r.lines) for r in again),
                "call_next_steps": sum(len(r.next_steps) for r in again),
                "call_jobs": sum(len(r.jobs) for r in again),
                "call_job_fields": sum(len(r.job_fields) for r in again)}
    assert _children(engine) == expected
    assert expected != before  # the changed half did change the children
    with engine.connect() as conn:
        synced = conn.execute(sa.text("SELECT count(*) FROM call_summaries WHERE last_synced_at = :t"),
                              {"t": later}).scalar_one()
        hashes = dict(conn.execute(sa.text("SELECT call_id, content_hash FROM call_summaries")).all())
    assert synced == len(IDS)  # unchanged ones too: only last_synced_at moved
    assert hashes == {r.parent["call_id"]: r.parent["content_hash"] for r in again}
