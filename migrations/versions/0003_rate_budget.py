"""rate budget shared by every process using one API key

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-25

One row per API key (identified by the SHA-256 of the key) holding the
request schedule of etl.budget.DatabaseBudget.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = '0003'
down_revision: str | None = '0002'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        'rate_budgets',
        sa.Column('key_hash', sa.String(length=64), nullable=False,
                  comment='SHA-256 (hex) of the API key; the key itself is never stored.'),
        sa.Column('next_slot_at', sa.Double(), nullable=False,
                  comment='Unix time before which no further request may be scheduled.'),
        sa.Column('paused_until', sa.Double(), nullable=False,
                  comment="Unix time until which a 429's Retry-After pauses every process."),
        sa.Column('slowed_at', sa.Double(), nullable=False, comment='Unix time of the last 429 slow-down.'),
        sa.Column('slowdown', sa.Double(), nullable=False,
                  comment='Fraction of the configured rate set at slowed_at; recovers over time.'),
        sa.Column('version', sa.BigInteger(), nullable=False,
                  comment='Incremented by every update (compare-and-set between processes).'),
        sa.PrimaryKeyConstraint('key_hash', name=op.f('pk_rate_budgets')),
        comment='Request schedule shared by every etl process using one API key.',
    )


def downgrade() -> None:
    op.drop_table('rate_budgets')
