"""``rejected_records``: records the API sent that could not be stored, kept with their reason (issue 25).

One row per (source, endpoint, record id): the same record refused again
moves ``last_seen_at``, counts ``times`` and keeps the latest reason and
payload.  Everything written here is storable by construction (the payload
is :func:`etl.storable.json_text`, the texts :func:`etl.storable.clean_text`),
so keeping a poison record never fails the way the record did.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from etl.config import DEFAULT_WORKSPACE
from etl.models import API_ID_LENGTH
from etl.storable import clean_text, json_text
from etl.tables import rejected_t

_MAX_REASON = 2000


@dataclass(frozen=True, slots=True)
class Rejected:
    """One refused record: where it came from, its id, why, and the record as received (any JSON value)."""

    source: str
    endpoint: str
    record_id: str
    reason: str
    payload: Any


def record_rejected(conn: Connection, rejected: Rejected, now: datetime, *,
                    workspace: str = DEFAULT_WORKSPACE) -> None:
    """Keep ``rejected`` in ``workspace`` (or count it again), in the caller's transaction."""
    r = rejected_t.c
    key = {"workspace": workspace, "source": rejected.source[:32], "endpoint": rejected.endpoint[:64],
           "record_id": clean_text(rejected.record_id or "")[:API_ID_LENGTH]}
    values = {"reason": clean_text(rejected.reason)[:_MAX_REASON], "payload": json_text(rejected.payload),
              "last_seen_at": now}
    updated = conn.execute(sa.update(rejected_t).where(
        r.workspace == workspace, r.source == key["source"], r.endpoint == key["endpoint"],
        r.record_id == key["record_id"],
    ).values(times=r.times + 1, **values)).rowcount
    if not updated:
        conn.execute(sa.insert(rejected_t).values(**key, **values, first_seen_at=now, times=1))
