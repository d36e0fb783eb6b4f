"""Webhook deliveries (``webhook_deliveries``): what ``etl serve`` has seen, to refuse replays and
record redeliveries; pruned after the retention window."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from etl.tables import deliveries_t


def signed_at_of(conn: Connection, message_key: str) -> tuple[datetime | None] | None:
    """``(signed_at,)`` of the delivery of this signed message, or None when it was never seen."""
    d = deliveries_t.c
    row = conn.execute(sa.select(d.signed_at).where(d.message_key == message_key)).first()
    return None if row is None else (row.signed_at,)


def event_seen(conn: Connection, event_key: str) -> bool:
    """Whether an accepted delivery carried this event (the same ``id`` in the body) before."""
    d = deliveries_t.c
    return conn.execute(sa.select(d.message_key).where(d.event_key == event_key)).first() is not None


def record_delivery(conn: Connection, **values: Any) -> None:
    """One ``webhook_deliveries`` row (its columns as keywords)."""
    conn.execute(sa.insert(deliveries_t).values(**values))


def prune_deliveries(conn: Connection, before: datetime) -> int:
    """Delete delivery rows received before ``before``; how many."""
    return int(conn.execute(sa.delete(deliveries_t).where(deliveries_t.c.received_at < before)).rowcount)
