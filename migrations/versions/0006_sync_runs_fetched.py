"""sync_runs.fetched: how many of a run's items the API answered

Revision ID: 0006
Revises: 0002
Create Date: 2026-11-25

A run whose every attempt failed to connect, timed out or got a 5xx/429 looks
like any run that rescheduled its items.  ``fetched`` counts the items the API
gave a definitive answer for (any 200, 400 or 404), so ``etl status`` can tell
an outage (runs with items but nothing fetched) from a quiet queue.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = '0006'
down_revision: str | None = '0005'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_COMMENT = "Items the API answered (200, 400 or 404); 0 with items processed means nothing could be fetched."


def upgrade() -> None:
    with op.batch_alter_table('sync_runs') as batch:
        batch.add_column(sa.Column('fetched', sa.Integer(), server_default='0', nullable=False,
                                   comment=_COMMENT))


def downgrade() -> None:
    with op.batch_alter_table('sync_runs') as batch:
        batch.drop_column('fetched')
