"""webhook deliveries

Revision ID: 0005
Revises: 0002
Create Date: 2026-11-25

The table `etl serve` keeps accepted webhook deliveries in, to refuse a
replayed signed message and to act once per event however often OpenPhone
redelivers it (etl/webhooks/intake.py).  Rows older than the retention window
are pruned by the server.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import mysql

revision: str = '0005'
down_revision: str | None = '0004'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_CALL_ID = sa.String(length=66).with_variant(mysql.VARCHAR(charset='ascii', collation='ascii_bin', length=66), 'mariadb').with_variant(mysql.VARCHAR(charset='ascii', collation='ascii_bin', length=66), 'mysql')
_DATETIME = sa.DateTime().with_variant(mysql.DATETIME(fsp=6), 'mariadb').with_variant(mysql.DATETIME(fsp=6), 'mysql')


def upgrade() -> None:
    op.create_table('webhook_deliveries',
    sa.Column('message_key', sa.String(length=64), nullable=False, comment='sha256 of the signed message (scheme, id, timestamp, signature): the same key again is a replay.'),
    sa.Column('event_key', sa.String(length=64), nullable=True, comment='sha256 of the event id, on the first delivery of an event only; NULL on redeliveries.'),
    sa.Column('event_type', sa.String(length=64), nullable=True, comment="The event's type, e.g. call.completed."),
    sa.Column('call_id', _CALL_ID, nullable=True, comment='The call the event is about, if valid.'),
    sa.Column('scheme', sa.String(length=16), nullable=False, comment='Signature scheme: openphone-v1 (legacy header) or standard (Standard Webhooks).'),
    sa.Column('outcome', sa.String(length=16), nullable=False, comment='queued (queue updated), duplicate (event seen before) or ignored (no action).'),
    sa.Column('signed_at', _DATETIME, nullable=False, comment='UTC time in the signature header.'),
    sa.Column('received_at', _DATETIME, nullable=False, comment='UTC time the delivery was accepted.'),
    sa.PrimaryKeyConstraint('message_key', name=op.f('pk_webhook_deliveries')),
    sa.UniqueConstraint('event_key', name=op.f('uq_webhook_deliveries_event_key')),
    comment='Signed webhook deliveries accepted by `etl serve`, kept for replay and redelivery checks.'
    )
    op.create_index('ix_webhook_deliveries_received_at', 'webhook_deliveries', ['received_at'], unique=False)


def downgrade() -> None:
    op.drop_index('ix_webhook_deliveries_received_at', table_name='webhook_deliveries')
    op.drop_table('webhook_deliveries')
