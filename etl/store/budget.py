"""The rate budget's row (``rate_budgets``, one per key hash): read it, create it, and write it
back only if nobody changed it meanwhile (a ``version`` compare-and-set).  The loop around these
lives in :class:`etl.budget.DatabaseBudget`."""

from __future__ import annotations

from typing import cast

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from etl.models import RateBudgetRow
from etl.ratelimit import BudgetState

_table = cast(sa.Table, RateBudgetRow.__table__)


def read_budget(conn: Connection, key_hash: str) -> tuple[int, BudgetState] | None:
    """``(version, state)`` of the key's row, or None when there is none yet."""
    row = conn.execute(sa.select(_table).where(_table.c.key_hash == key_hash)).first()
    if row is None:
        return None
    return row.version, BudgetState(row.next_slot_at, row.paused_until, row.slowed_at, row.slowdown)


def create_budget(conn: Connection, key_hash: str, state: BudgetState) -> None:
    """The key's first row (version 1); an :class:`IntegrityError` when another process made it first."""
    conn.execute(sa.insert(_table).values(key_hash=key_hash, version=1, **_columns(state)))


def write_budget(conn: Connection, key_hash: str, version: int, state: BudgetState) -> bool:
    """Write ``state`` if the row is still at ``version`` (then at ``version + 1``); False if it moved."""
    c = _table.c
    written = conn.execute(
        sa.update(_table).where(c.key_hash == key_hash, c.version == version)
        .values(version=version + 1, **_columns(state))
    ).rowcount
    return bool(written == 1)


def _columns(state: BudgetState) -> dict[str, float]:
    return {"next_slot_at": state.next_slot, "paused_until": state.paused_until,
            "slowed_at": state.slowed_at, "slowdown": state.slowdown}
