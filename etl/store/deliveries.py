"""Webhook deliveries (``webhook_deliveries``): what ``etl serve`` has seen, to refuse replays and
record redeliveries; pruned after the retention window.  Per workspace: each workspace's receiver
checks and prunes its own deliveries."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from etl.config import DEFAULT_WORKSPACE
from etl.tables import deliveries_t


def signed_at_of(conn: Connection, message_key: str, *,
                 workspace: str = DEFAULT_WORKSPACE) -> tuple[datetime | None] | None:
    """``(signed_at,)`` of ``workspace``'s delivery of this signed message, or None when it was never seen."""
    d = deliveries_t.c
    row = conn.execute(sa.select(d.signed_at).where(d.workspace == workspace, d.message_key == message_key)).first()
    return None if row is None else (row.signed_at,)


def event_seen(conn: Connection, event_key: str, *, workspace: str = DEFAULT_WORKSPACE) -> bool:
    """Whether a delivery ``workspace`` accepted carried this event (the same ``id`` in the body) before."""
    d = deliveries_t.c
    return conn.execute(sa.select(d.message_key).where(d.workspace == workspace,
                                                       d.event_key == event_key)).first() is not None


def record_delivery(conn: Connection, *, workspace: str = DEFAULT_WORKSPACE, **values: Any) -> None:
    """One ``webhook_deliveries`` row of ``workspace`` (its other columns as keywords)."""
    conn.execute(sa.insert(deliveries_t).values(workspace=workspace, **values))


def prune_deliveries(conn: Connection, before: datetime, *, workspace: str = DEFAULT_WORKSPACE) -> int:
    """Delete ``workspace``'s delivery rows received before ``before``; how many."""
    d = deliveries_t.c
    return int(conn.execute(sa.delete(deliveries_t).where(d.workspace == workspace, d.received_at < before)).rowcount)
