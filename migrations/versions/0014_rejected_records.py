"""rejected records, and the time a stored summary is as of

Revision ID: 0014
Revises: 0013
Create Date: 2026-12-07

Issue 25: a record the API sent that cannot be stored (a date no database
holds, a malformed field, a database refusal) is kept here with its reason,
instead of stalling the queue or a discovery walk, or vanishing.  `etl status`
counts the rows.  `call_summaries.as_of` is when the stored summary was
answered (or its webhook event created): an older summary is not written over
a newer one, whichever way they arrive.  Its downgrade drops the table, so it refuses while the table
holds rows (migrations/env.py) unless `-x allow-data-loss=1`.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import mysql

revision: str = '0014'
down_revision: str | None = '0013'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_DATETIME = sa.DateTime().with_variant(mysql.DATETIME(fsp=6), 'mariadb').with_variant(mysql.DATETIME(fsp=6), 'mysql')
_LONGTEXT = sa.Text().with_variant(mysql.LONGTEXT(), 'mariadb').with_variant(mysql.LONGTEXT(), 'mysql')


def upgrade() -> None:
    op.create_table('rejected_records',
    sa.Column('source', sa.String(length=32), nullable=False, comment='What met the record: sync, discover, backfill or serve.'),
    sa.Column('endpoint', sa.String(length=64), nullable=False, comment="Which answer it came in, e.g. 'GET /v1/calls/{id}', 'GET /calls' or 'webhook call.completed'."),
    sa.Column('record_id', sa.String(length=255), nullable=False, comment="The record's id as sent (cleaned, cut to 255 characters); '' when it had none."),
    sa.Column('reason', sa.Text(), nullable=False, comment="Why it was not stored, e.g. 'createdAt: 0001-01-01T00:00:00+01:00 is outside 1970-2199'."),
    sa.Column('payload', _LONGTEXT, nullable=False, comment='The record as received, as storable JSON (non-ASCII escaped where needed).'),
    sa.Column('first_seen_at', _DATETIME, nullable=False, comment='UTC time it was first refused.'),
    sa.Column('last_seen_at', _DATETIME, nullable=False, comment='UTC time it was last refused.'),
    sa.Column('times', sa.Integer(), nullable=False, comment='How many times it was refused.'),
    sa.PrimaryKeyConstraint('source', 'endpoint', 'record_id', name=op.f('pk_rejected_records')),
    comment='API records that could not be stored, with the reason; `etl status` counts them.'
    )
    op.create_index('ix_rejected_records_last_seen_at', 'rejected_records', ['last_seen_at'], unique=False)
    with op.batch_alter_table('call_summaries', schema=None) as batch_op:
        batch_op.add_column(sa.Column('as_of', _DATETIME, nullable=True, comment="UTC time the stored summary is as of: when the API answered (sync, discovery) or the webhook event's createdAt; an older one is not written over it. NULL for rows stored before 0014."))


def downgrade() -> None:
    if op.get_bind().dialect.name == 'sqlite':
        # SQLite 3.35+ drops a column in place: no table rebuild, so the BI views over it stay valid.
        op.execute('ALTER TABLE call_summaries DROP COLUMN as_of')
    else:
        op.drop_column('call_summaries', 'as_of')
    op.drop_index('ix_rejected_records_last_seen_at', table_name='rejected_records')
    op.drop_table('rejected_records')
