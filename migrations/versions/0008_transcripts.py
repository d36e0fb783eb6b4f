"""transcripts: transcript_queue, call_transcripts, call_transcript_lines and a BI view

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-04

Issue 19.  ``transcript_queue`` has the columns and semantics of
``summary_queue`` (the same claim/lease/release machinery serves both), with
one more end state, ``forbidden`` (403: the plan has no transcripts).
``call_transcripts`` holds one row per recording segment (a v1 transcript is
one merged segment, ``merged``), ``call_transcript_lines`` its dialogue with
offsets in seconds from the call's start.  The view
``call_transcript_line_overview`` is one row per line with the call's context;
as in 0004, it is written per dialect only where SQL has no common spelling.
The coordinator re-chains this revision after 0007 at merge.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import mysql

revision: str = '0008'
down_revision: str | None = '0007'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_UTCNOW = {
    "sqlite": "(strftime('%Y-%m-%d %H:%M:%f', 'now'))",
    "postgresql": "timezone('utc', statement_timestamp())",
    "mysql": "(UTC_TIMESTAMP(6))",
    "mariadb": "(UTC_TIMESTAMP(6))",
}

# Frozen copies of the states of this revision (etl.states may grow later).
_QUEUE_STATES = "'pending', 'done', 'failed', 'absent', 'forbidden', 'not_found', 'invalid', 'error'"
_STATUSES = "'absent', 'in-progress', 'completed', 'failed'"

_CALL_ID = sa.String(length=66).with_variant(mysql.VARCHAR(charset='ascii', collation='ascii_bin', length=66), 'mariadb').with_variant(mysql.VARCHAR(charset='ascii', collation='ascii_bin', length=66), 'mysql')
_LONG_TEXT = sa.Text().with_variant(mysql.LONGTEXT(), 'mariadb').with_variant(mysql.LONGTEXT(), 'mysql')
_UTC_DATETIME = sa.DateTime().with_variant(mysql.DATETIME(fsp=6), 'mariadb').with_variant(mysql.DATETIME(fsp=6), 'mysql')


def _week(dialect: str) -> str:
    """Monday of the call's week as YYYY-MM-DD (the spelling of 0004's call_overview)."""
    if dialect == "sqlite":
        return "date(c.created_at, '-6 days', 'weekday 1')"
    if dialect == "postgresql":
        return "to_char(date_trunc('week', c.created_at), 'YYYY-MM-DD')"
    return "DATE_FORMAT(DATE_SUB(DATE(c.created_at), INTERVAL WEEKDAY(c.created_at) DAY), '%Y-%m-%d')"


def _day(dialect: str) -> str:
    if dialect == "sqlite":
        return "SUBSTR(c.created_at, 1, 10)"
    if dialect == "postgresql":
        return "to_char(c.created_at, 'YYYY-MM-DD')"
    return "DATE_FORMAT(c.created_at, '%Y-%m-%d')"


# One row per transcript line, with the call's context (NULL until the call row is stored).
_LINE_OVERVIEW = """\
CREATE VIEW call_transcript_line_overview AS
SELECT l.call_id, l.segment_id, l.position, l.identifier AS speaker_identifier, l.user_id AS speaker_user_id,
       CASE WHEN l.user_id IS NULL THEN 'external' ELSE 'user' END AS speaker_side,
       l.start_seconds, l.end_seconds, l.end_seconds - l.start_seconds AS talk_seconds, l.text,
       c.created_at AS call_created_at, {day} AS call_date, {week} AS call_week,
       c.direction, c.user_id AS call_user_id, c.phone_number_id, c.duration_seconds AS call_duration_seconds
FROM call_transcript_lines l
LEFT JOIN calls c ON c.call_id = l.call_id"""


def _utcnow() -> sa.TextClause:
    return sa.text(_UTCNOW[op.get_context().dialect.name])


def upgrade() -> None:
    op.create_table('transcript_queue',
    sa.Column('call_id', _CALL_ID, nullable=False, comment='OpenPhone call id: AC followed by 1 to 64 ASCII letters or digits (case-sensitive).'),
    sa.Column('state', sa.String(length=16), server_default='pending', nullable=False, comment='pending (due at next_attempt_at), done, failed, absent, forbidden, not_found, invalid or error.'),
    sa.Column('attempts', sa.Integer(), server_default='0', nullable=False, comment='Fetches of this item (in-run HTTP retries count once; a run stopped by 401/403 counts none).'),
    sa.Column('consecutive_errors', sa.Integer(), server_default='0', nullable=False, comment='Attempts in a row that ended with a transient error; reaching the limit gives state error.'),
    sa.Column('next_attempt_at', _UTC_DATETIME, server_default=_utcnow(), nullable=False, comment="UTC time the item is due; while a run holds the lease, the lease expiry."),
    sa.Column('lease_expires_at', _UTC_DATETIME, nullable=True, comment="UTC end of the current run's lease; NULL when no run holds the item."),
    sa.Column('lease_owner', sa.String(length=64), nullable=True, comment='Run holding the lease (host:pid:random); NULL when no run holds the item.'),
    sa.Column('last_api_status', sa.String(length=32), nullable=True, comment="Last answer: the transcript status, 'http <code>' or 'no response'; NULL before the first."),
    sa.Column('last_error', sa.Text(), nullable=True, comment='Why the last attempt did not complete (at most 2000 characters); NULL on success.'),
    sa.Column('incomplete_since', _UTC_DATETIME, nullable=True, comment='UTC time the API first said in-progress or absent; the 48 h / 24 h give-up windows start here.'),
    sa.Column('enqueued_at', _UTC_DATETIME, server_default=_utcnow(), nullable=False, comment='UTC time the call id was first enqueued.'),
    sa.Column('updated_at', _UTC_DATETIME, server_default=_utcnow(), nullable=False, comment="UTC time of the last attempt's outcome or re-queue."),
    sa.Column('finished_at', _UTC_DATETIME, nullable=True, comment='UTC time the item reached a terminal state; NULL while pending.'),
    sa.CheckConstraint(f"state IN ({_QUEUE_STATES})", name=op.f('ck_transcript_queue_state')),
    sa.PrimaryKeyConstraint('call_id', name=op.f('pk_transcript_queue')),
    comment='Work queue of transcripts: one row per OpenPhone call id whose transcript to sync.'
    )
    with op.batch_alter_table('transcript_queue', schema=None) as batch_op:
        batch_op.create_index('ix_transcript_queue_due', ['state', 'next_attempt_at'], unique=False)

    op.create_table('call_transcripts',
    sa.Column('call_id', _CALL_ID, nullable=False, comment='OpenPhone call id (same as transcript_queue.call_id).'),
    sa.Column('segment_id', sa.String(length=255), nullable=False, comment="The recording (CR...) of the segment on the 2026-03-30 API; 'merged' for a v1 transcript."),
    sa.Column('status', sa.String(length=16), nullable=False, comment='Transcript status from the API: completed, failed, absent or in-progress.'),
    sa.Column('started_at', _UTC_DATETIME, nullable=True, comment='UTC start of the segment (startTime); NULL for a v1 transcript, which has none.'),
    sa.Column('created_at', _UTC_DATETIME, nullable=True, comment='UTC time the API created the transcript (createdAt); NULL if it sent none.'),
    sa.Column('duration_seconds', sa.Double(), nullable=True, comment='Duration of the transcribed audio in seconds (duration); NULL if the API sent none.'),
    sa.Column('offset_seconds', sa.Double(), nullable=False, comment="Seconds from the call's start to this segment's start, added to its lines' offsets (v1: 0)."),
    sa.Column('line_count', sa.Integer(), nullable=False, comment='Dialogue lines the API sent (rows in call_transcript_lines until pruned).'),
    sa.Column('content_hash', sa.String(length=64), nullable=False, comment="SHA-256 (hex) of the call's whole transcript and its time base; unchanged: rows not rewritten."),
    sa.Column('pruned_at', _UTC_DATETIME, nullable=True, comment='UTC time `etl prune` deleted the lines; NULL while they are kept. Never refilled.'),
    sa.Column('first_synced_at', _UTC_DATETIME, nullable=False, comment='UTC time the segment was first stored.'),
    sa.Column('last_synced_at', _UTC_DATETIME, nullable=False, comment='UTC time the segment was last fetched.'),
    sa.CheckConstraint(f"status IN ({_STATUSES})", name=op.f('ck_call_transcripts_status')),
    sa.PrimaryKeyConstraint('call_id', 'segment_id', name=op.f('pk_call_transcripts')),
    comment='Transcripts of calls: one row per recording segment (v1: one merged row per call).'
    )
    with op.batch_alter_table('call_transcripts', schema=None) as batch_op:
        batch_op.create_index('ix_call_transcripts_created_at', ['created_at'], unique=False)

    op.create_table('call_transcript_lines',
    sa.Column('call_id', _CALL_ID, nullable=False, comment='The call (call_transcripts.call_id).'),
    sa.Column('segment_id', sa.String(length=255), nullable=False, comment='The segment (call_transcripts.segment_id).'),
    sa.Column('position', sa.Integer(), autoincrement=False, nullable=False, comment="0-based position in the segment's dialogue array."),
    sa.Column('identifier', sa.String(length=255), nullable=True, comment="The speaker's phone number as sent (identifier); NULL if none."),
    sa.Column('user_id', sa.String(length=255), nullable=True, comment='The workspace user (v1 userId) or actor (actorId) who spoke; NULL for an external party.'),
    sa.Column('start_seconds', sa.Double(), nullable=False, comment="When the line starts, in seconds from the call's start (both API surfaces)."),
    sa.Column('end_seconds', sa.Double(), nullable=False, comment="When the line ends, in seconds from the call's start (both API surfaces)."),
    sa.Column('text', _LONG_TEXT, nullable=False, comment='What was said; NUL and unpaired surrogates become U+FFFD.'),
    sa.ForeignKeyConstraint(['call_id', 'segment_id'], ['call_transcripts.call_id', 'call_transcripts.segment_id'], name=op.f('fk_call_transcript_lines_call_id_call_transcripts'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('call_id', 'segment_id', 'position', name=op.f('pk_call_transcript_lines')),
    comment='Transcript dialogue lines of a call, per segment, position 0 first.'
    )
    dialect = op.get_context().dialect.name
    op.execute(_LINE_OVERVIEW.format(day=_day(dialect), week=_week(dialect)))


def downgrade() -> None:
    op.execute("DROP VIEW call_transcript_line_overview")
    op.drop_table('call_transcript_lines')
    with op.batch_alter_table('call_transcripts', schema=None) as batch_op:
        batch_op.drop_index('ix_call_transcripts_created_at')
    op.drop_table('call_transcripts')
    with op.batch_alter_table('transcript_queue', schema=None) as batch_op:
        batch_op.drop_index('ix_transcript_queue_due')
    op.drop_table('transcript_queue')
