"""initial schema

Revision ID: 0001
Revises:
Create Date: 2026-11-24
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import mysql

revision: str = '0001'
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_UTCNOW = {
    "sqlite": "(strftime('%Y-%m-%d %H:%M:%f', 'now'))",
    "postgresql": "timezone('utc', statement_timestamp())",
    "mysql": "(UTC_TIMESTAMP(6))",
    "mariadb": "(UTC_TIMESTAMP(6))",
}


def _utcnow() -> sa.TextClause:
    """The server-side UTC "now" of etl.models.sql_utcnow, frozen for this revision."""
    return sa.text(_UTCNOW[op.get_context().dialect.name])


def upgrade() -> None:
    op.create_table('call_summaries',
    sa.Column('call_id', sa.String(length=66).with_variant(mysql.VARCHAR(charset='ascii', collation='ascii_bin', length=66), 'mariadb').with_variant(mysql.VARCHAR(charset='ascii', collation='ascii_bin', length=66), 'mysql'), nullable=False),
    sa.Column('status', sa.String(length=16), nullable=False),
    sa.Column('summary_text', sa.Text().with_variant(mysql.LONGTEXT(), 'mariadb').with_variant(mysql.LONGTEXT(), 'mysql'), nullable=True),
    sa.Column('line_count', sa.Integer(), nullable=False),
    sa.Column('next_step_count', sa.Integer(), nullable=False),
    sa.Column('job_count', sa.Integer(), nullable=False),
    sa.Column('content_hash', sa.String(length=64), nullable=False),
    sa.Column('raw_json', sa.Text().with_variant(mysql.LONGTEXT(), 'mariadb').with_variant(mysql.LONGTEXT(), 'mysql'), nullable=False),
    sa.Column('first_synced_at', sa.DateTime().with_variant(mysql.DATETIME(fsp=6), 'mariadb').with_variant(mysql.DATETIME(fsp=6), 'mysql'), nullable=False),
    sa.Column('last_synced_at', sa.DateTime().with_variant(mysql.DATETIME(fsp=6), 'mariadb').with_variant(mysql.DATETIME(fsp=6), 'mysql'), nullable=False),
    sa.CheckConstraint("status IN ('absent', 'in-progress', 'completed', 'failed')", name=op.f('ck_call_summaries_status')),
    sa.PrimaryKeyConstraint('call_id', name=op.f('pk_call_summaries')),
    comment='One row per synced call summary (parent of the call_* tables).'
    )
    op.create_table('summary_queue',
    sa.Column('call_id', sa.String(length=66).with_variant(mysql.VARCHAR(charset='ascii', collation='ascii_bin', length=66), 'mariadb').with_variant(mysql.VARCHAR(charset='ascii', collation='ascii_bin', length=66), 'mysql'), nullable=False),
    sa.Column('state', sa.String(length=16), server_default='pending', nullable=False),
    sa.Column('attempts', sa.Integer(), server_default='0', nullable=False),
    sa.Column('consecutive_errors', sa.Integer(), server_default='0', nullable=False),
    sa.Column('next_attempt_at', sa.DateTime().with_variant(mysql.DATETIME(fsp=6), 'mariadb').with_variant(mysql.DATETIME(fsp=6), 'mysql'), server_default=_utcnow(), nullable=False),
    sa.Column('lease_expires_at', sa.DateTime().with_variant(mysql.DATETIME(fsp=6), 'mariadb').with_variant(mysql.DATETIME(fsp=6), 'mysql'), nullable=True),
    sa.Column('lease_owner', sa.String(length=64), nullable=True),
    sa.Column('last_api_status', sa.String(length=32), nullable=True),
    sa.Column('last_error', sa.Text(), nullable=True),
    sa.Column('incomplete_since', sa.DateTime().with_variant(mysql.DATETIME(fsp=6), 'mariadb').with_variant(mysql.DATETIME(fsp=6), 'mysql'), nullable=True),
    sa.Column('enqueued_at', sa.DateTime().with_variant(mysql.DATETIME(fsp=6), 'mariadb').with_variant(mysql.DATETIME(fsp=6), 'mysql'), server_default=_utcnow(), nullable=False),
    sa.Column('updated_at', sa.DateTime().with_variant(mysql.DATETIME(fsp=6), 'mariadb').with_variant(mysql.DATETIME(fsp=6), 'mysql'), server_default=_utcnow(), nullable=False),
    sa.Column('finished_at', sa.DateTime().with_variant(mysql.DATETIME(fsp=6), 'mariadb').with_variant(mysql.DATETIME(fsp=6), 'mysql'), nullable=True),
    sa.CheckConstraint("state IN ('pending', 'done', 'failed', 'absent', 'not_found', 'invalid', 'error')", name=op.f('ck_summary_queue_state')),
    sa.PrimaryKeyConstraint('call_id', name=op.f('pk_summary_queue')),
    comment='Work queue: one row per OpenPhone call id to sync.'
    )
    with op.batch_alter_table('summary_queue', schema=None) as batch_op:
        batch_op.create_index('ix_summary_queue_due', ['state', 'next_attempt_at'], unique=False)

    op.create_table('sync_runs',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), autoincrement=True, nullable=False),
    sa.Column('started_at', sa.DateTime().with_variant(mysql.DATETIME(fsp=6), 'mariadb').with_variant(mysql.DATETIME(fsp=6), 'mysql'), nullable=False),
    sa.Column('finished_at', sa.DateTime().with_variant(mysql.DATETIME(fsp=6), 'mariadb').with_variant(mysql.DATETIME(fsp=6), 'mysql'), nullable=True),
    sa.Column('command', sa.String(length=32), nullable=False),
    sa.Column('claimed', sa.Integer(), server_default='0', nullable=False),
    sa.Column('completed', sa.Integer(), server_default='0', nullable=False),
    sa.Column('rescheduled', sa.Integer(), server_default='0', nullable=False),
    sa.Column('failed', sa.Integer(), server_default='0', nullable=False),
    sa.Column('errors', sa.Integer(), server_default='0', nullable=False),
    sa.Column('exit_code', sa.Integer(), nullable=True),
    sa.Column('stop_reason', sa.Text(), nullable=True),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_sync_runs')),
    comment='Run history: one row per sync/backfill run.'
    )
    op.create_table('call_jobs',
    sa.Column('call_id', sa.String(length=66).with_variant(mysql.VARCHAR(charset='ascii', collation='ascii_bin', length=66), 'mariadb').with_variant(mysql.VARCHAR(charset='ascii', collation='ascii_bin', length=66), 'mysql'), nullable=False),
    sa.Column('job_position', sa.Integer(), autoincrement=False, nullable=False),
    sa.Column('name', sa.Text().with_variant(mysql.LONGTEXT(), 'mariadb').with_variant(mysql.LONGTEXT(), 'mysql'), nullable=False),
    sa.Column('icon', sa.Text().with_variant(mysql.LONGTEXT(), 'mariadb').with_variant(mysql.LONGTEXT(), 'mysql'), nullable=False),
    sa.ForeignKeyConstraint(['call_id'], ['call_summaries.call_id'], name=op.f('fk_call_jobs_call_id_call_summaries'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('call_id', 'job_position', name=op.f('pk_call_jobs')),
    comment="Jobs of a call's summary, job_position 0 first."
    )
    op.create_table('call_next_steps',
    sa.Column('call_id', sa.String(length=66).with_variant(mysql.VARCHAR(charset='ascii', collation='ascii_bin', length=66), 'mariadb').with_variant(mysql.VARCHAR(charset='ascii', collation='ascii_bin', length=66), 'mysql'), nullable=False),
    sa.Column('position', sa.Integer(), autoincrement=False, nullable=False),
    sa.Column('text', sa.Text().with_variant(mysql.LONGTEXT(), 'mariadb').with_variant(mysql.LONGTEXT(), 'mysql'), nullable=False),
    sa.ForeignKeyConstraint(['call_id'], ['call_summaries.call_id'], name=op.f('fk_call_next_steps_call_id_call_summaries'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('call_id', 'position', name=op.f('pk_call_next_steps')),
    comment='Next steps of a call, position 0 first.'
    )
    op.create_table('call_summary_lines',
    sa.Column('call_id', sa.String(length=66).with_variant(mysql.VARCHAR(charset='ascii', collation='ascii_bin', length=66), 'mariadb').with_variant(mysql.VARCHAR(charset='ascii', collation='ascii_bin', length=66), 'mysql'), nullable=False),
    sa.Column('position', sa.Integer(), autoincrement=False, nullable=False),
    sa.Column('text', sa.Text().with_variant(mysql.LONGTEXT(), 'mariadb').with_variant(mysql.LONGTEXT(), 'mysql'), nullable=False),
    sa.ForeignKeyConstraint(['call_id'], ['call_summaries.call_id'], name=op.f('fk_call_summary_lines_call_id_call_summaries'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('call_id', 'position', name=op.f('pk_call_summary_lines')),
    comment='Summary lines of a call, position 0 first.'
    )
    op.create_table('call_job_fields',
    sa.Column('call_id', sa.String(length=66).with_variant(mysql.VARCHAR(charset='ascii', collation='ascii_bin', length=66), 'mariadb').with_variant(mysql.VARCHAR(charset='ascii', collation='ascii_bin', length=66), 'mysql'), nullable=False),
    sa.Column('job_position', sa.Integer(), autoincrement=False, nullable=False),
    sa.Column('field_position', sa.Integer(), autoincrement=False, nullable=False),
    sa.Column('name', sa.Text().with_variant(mysql.LONGTEXT(), 'mariadb').with_variant(mysql.LONGTEXT(), 'mysql'), nullable=False),
    sa.Column('value_type', sa.String(length=8), nullable=False),
    sa.Column('value_text', sa.Text().with_variant(mysql.LONGTEXT(), 'mariadb').with_variant(mysql.LONGTEXT(), 'mysql'), nullable=True),
    sa.Column('value_number', sa.Double(), nullable=True),
    sa.Column('value_boolean', sa.Boolean(), nullable=True),
    sa.CheckConstraint("value_type IN ('string', 'number', 'boolean')", name=op.f('ck_call_job_fields_value_type')),
    sa.ForeignKeyConstraint(['call_id', 'job_position'], ['call_jobs.call_id', 'call_jobs.job_position'], name=op.f('fk_call_job_fields_call_id_job_position_call_jobs'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('call_id', 'job_position', 'field_position', name=op.f('pk_call_job_fields')),
    comment="Fields of a job's result; exactly one value_* column is set."
    )


def downgrade() -> None:
    op.drop_table('call_job_fields')
    op.drop_table('call_summary_lines')
    op.drop_table('call_next_steps')
    op.drop_table('call_jobs')
    op.drop_table('sync_runs')
    with op.batch_alter_table('summary_queue', schema=None) as batch_op:
        batch_op.drop_index('ix_summary_queue_due')

    op.drop_table('summary_queue')
    op.drop_table('call_summaries')
