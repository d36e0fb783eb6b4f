"""calls, participants, discovery progress, and the analyst views with call context

Revision ID: 0004
Revises: 0002
Create Date: 2026-11-25

Call context (``GET /v1/calls/{id}`` and the calls list) in ``calls`` and
``call_participants``; ``call_lookups`` remembers calls the API did not find
(retried for a window, then given up); ``discovery_watermarks``,
``discovery_conversations`` and ``discovery_runs`` hold ``etl discover``'s
progress and history.  The view ``call_summary_overview`` is recreated with
the call's context, and ``call_overview`` (one row per call) is added.  As in
0002, the views are written per dialect only where SQL has no common spelling.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import mysql

revision: str = '0004'
down_revision: str | None = '0003'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _seconds(dialect: str, start: str, end: str) -> str:
    """Whole seconds from ``start`` to ``end``, truncated toward zero, exact to the microsecond."""
    if dialect == "sqlite":
        return (f"CAST((CAST(strftime('%s', {end}) AS INTEGER) - CAST(strftime('%s', {start}) AS INTEGER))"
                f" + (CAST('0' || SUBSTR({end}, 20) AS REAL) - CAST('0' || SUBSTR({start}, 20) AS REAL))"
                f" AS INTEGER)")
    if dialect == "postgresql":
        return f"CAST(TRUNC(EXTRACT(EPOCH FROM ({end} - {start}))) AS BIGINT)"
    return f"TIMESTAMPDIFF(SECOND, {start}, {end})"


def _parts(dialect: str) -> dict[str, str]:
    """The dialect-specific pieces of the views (see 0002 for the next-steps aggregate)."""
    if dialect == "sqlite":
        return {
            "next_steps": "(SELECT group_concat(o.text, char(10)) FROM "
                          "(SELECT n.text FROM call_next_steps n WHERE n.call_id = s.call_id ORDER BY n.position) o)",
            "participants": "(SELECT group_concat(o.number, ', ') FROM "
                            "(SELECT p.number FROM call_participants p WHERE p.call_id = c.call_id "
                            "ORDER BY p.position) o)",
            "day": "SUBSTR(c.created_at, 1, 10)",
            # Monday of the call's week: back 6 days, then forward to the next (or same) Monday.
            "week": "date(c.created_at, '-6 days', 'weekday 1')",
        }
    if dialect == "postgresql":
        return {
            "next_steps": "(SELECT string_agg(n.text, chr(10) ORDER BY n.position) "
                          "FROM call_next_steps n WHERE n.call_id = s.call_id)",
            "participants": "(SELECT string_agg(p.number, ', ' ORDER BY p.position) "
                            "FROM call_participants p WHERE p.call_id = c.call_id)",
            "day": "to_char(c.created_at, 'YYYY-MM-DD')",
            "week": "to_char(date_trunc('week', c.created_at), 'YYYY-MM-DD')",
        }
    return {
        "next_steps": "(SELECT GROUP_CONCAT(n.text ORDER BY n.position SEPARATOR '\n') "
                      "FROM call_next_steps n WHERE n.call_id = s.call_id)",
        "participants": "(SELECT GROUP_CONCAT(p.number ORDER BY p.position SEPARATOR ', ') "
                        "FROM call_participants p WHERE p.call_id = c.call_id)",
        "day": "DATE_FORMAT(c.created_at, '%Y-%m-%d')",
        "week": "DATE_FORMAT(DATE_SUB(DATE(c.created_at), INTERVAL WEEKDAY(c.created_at) DAY), '%Y-%m-%d')",
    }


# call_summary_overview of 0002, with the call's context appended (existing columns keep their place).
_CALL_SUMMARY_OVERVIEW = """\
CREATE VIEW call_summary_overview AS
SELECT s.call_id, s.status, s.summary_text, {next_steps} AS next_steps_text,
       s.line_count, s.next_step_count, s.job_count,
       q.state AS queue_state, q.attempts, q.last_api_status, q.last_error,
       q.enqueued_at, q.finished_at, {completion_seconds} AS completion_seconds,
       s.first_synced_at, s.last_synced_at,
       c.created_at AS call_created_at, c.completed_at AS call_completed_at, c.direction,
       c.duration_seconds, c.user_id, c.phone_number_id, {participants} AS participants
FROM call_summaries s
LEFT JOIN summary_queue q ON q.call_id = s.call_id
LEFT JOIN calls c ON c.call_id = s.call_id"""

# One row per call with context, whether or not its summary is stored yet.
_CALL_OVERVIEW = """\
CREATE VIEW call_overview AS
SELECT c.call_id, c.created_at, c.answered_at, c.completed_at, {day} AS call_date, {week} AS call_week,
       c.direction, c.status AS call_status, c.duration_seconds, c.user_id, c.phone_number_id,
       c.participant_count, {participants} AS participants,
       s.status AS summary_status, s.line_count, s.next_step_count, s.job_count,
       q.state AS queue_state, s.first_synced_at AS summary_stored_at,
       {lag} AS summary_lag_seconds
FROM calls c
LEFT JOIN call_summaries s ON s.call_id = c.call_id
LEFT JOIN summary_queue q ON q.call_id = c.call_id"""

# 0002's view, restored on downgrade.
_CALL_SUMMARY_OVERVIEW_0002 = """\
CREATE VIEW call_summary_overview AS
SELECT s.call_id, s.status, s.summary_text, {next_steps} AS next_steps_text,
       s.line_count, s.next_step_count, s.job_count,
       q.state AS queue_state, q.attempts, q.last_api_status, q.last_error,
       q.enqueued_at, q.finished_at, {completion_seconds} AS completion_seconds,
       s.first_synced_at, s.last_synced_at
FROM call_summaries s
LEFT JOIN summary_queue q ON q.call_id = s.call_id"""


def _dialect() -> str:
    return op.get_context().dialect.name


def _create_views() -> None:
    dialect = _dialect()
    parts = _parts(dialect)
    op.execute("DROP VIEW call_summary_overview")
    op.execute(_CALL_SUMMARY_OVERVIEW.format(
        completion_seconds=_seconds(dialect, "q.enqueued_at", "q.finished_at"), **parts))
    op.execute(_CALL_OVERVIEW.format(lag=_seconds(dialect, "c.completed_at", "s.first_synced_at"), **parts))


def _drop_views() -> None:
    op.execute("DROP VIEW call_overview")
    op.execute("DROP VIEW call_summary_overview")


def _restore_0002_views() -> None:
    dialect = _dialect()
    parts = _parts(dialect)
    op.execute(_CALL_SUMMARY_OVERVIEW_0002.format(
        completion_seconds=_seconds(dialect, "q.enqueued_at", "q.finished_at"), next_steps=parts["next_steps"]))


def upgrade() -> None:
    op.create_table('call_lookups',
    sa.Column('call_id', sa.String(length=66).with_variant(mysql.VARCHAR(charset='ascii', collation='ascii_bin', length=66), 'mariadb').with_variant(mysql.VARCHAR(charset='ascii', collation='ascii_bin', length=66), 'mysql'), nullable=False, comment='OpenPhone call id (same as summary_queue.call_id).'),
    sa.Column('state', sa.String(length=16), nullable=False, comment='retrying (inside the not-found window) or not_found (given up: not fetched again).'),
    sa.Column('attempts', sa.Integer(), server_default='0', nullable=False, comment='404 answers received so far.'),
    sa.Column('first_not_found_at', sa.DateTime().with_variant(mysql.DATETIME(fsp=6), 'mariadb').with_variant(mysql.DATETIME(fsp=6), 'mysql'), nullable=False, comment='UTC time of the first 404.'),
    sa.Column('last_error', sa.Text(), nullable=True, comment="The last 404's error text (at most 2000 characters)."),
    sa.Column('updated_at', sa.DateTime().with_variant(mysql.DATETIME(fsp=6), 'mariadb').with_variant(mysql.DATETIME(fsp=6), 'mysql'), nullable=False, comment='UTC time of the last 404.'),
    sa.CheckConstraint("state IN ('retrying', 'not_found')", name=op.f('ck_call_lookups_state')),
    sa.PrimaryKeyConstraint('call_id', name=op.f('pk_call_lookups')),
    comment='Call ids whose call context the API did not find (404): retrying or given up.'
    )
    op.create_table('calls',
    sa.Column('call_id', sa.String(length=66).with_variant(mysql.VARCHAR(charset='ascii', collation='ascii_bin', length=66), 'mariadb').with_variant(mysql.VARCHAR(charset='ascii', collation='ascii_bin', length=66), 'mysql'), nullable=False, comment='OpenPhone call id (same as summary_queue.call_id).'),
    sa.Column('created_at', sa.DateTime().with_variant(mysql.DATETIME(fsp=6), 'mariadb').with_variant(mysql.DATETIME(fsp=6), 'mysql'), nullable=True, comment='UTC time the call was created (createdAt); NULL if the API sent none.'),
    sa.Column('answered_at', sa.DateTime().with_variant(mysql.DATETIME(fsp=6), 'mariadb').with_variant(mysql.DATETIME(fsp=6), 'mysql'), nullable=True, comment='UTC time the call was answered (answeredAt); NULL if never answered.'),
    sa.Column('completed_at', sa.DateTime().with_variant(mysql.DATETIME(fsp=6), 'mariadb').with_variant(mysql.DATETIME(fsp=6), 'mysql'), nullable=True, comment='UTC time the call ended (completedAt); NULL while it has not ended.'),
    sa.Column('updated_at', sa.DateTime().with_variant(mysql.DATETIME(fsp=6), 'mariadb').with_variant(mysql.DATETIME(fsp=6), 'mysql'), nullable=True, comment='UTC time the API last changed the call (updatedAt); NULL if the API sent none.'),
    sa.Column('direction', sa.String(length=16), nullable=True, comment='incoming or outgoing, as sent by the API.'),
    sa.Column('status', sa.String(length=16), nullable=True, comment='Call status as sent (completed, missed, no-answer, in-progress, ...).'),
    sa.Column('duration_seconds', sa.Integer(), nullable=True, comment='Call duration in seconds (duration); NULL if the API sent none.'),
    sa.Column('phone_number_id', sa.String(length=255), nullable=True, comment='The OpenPhone line (PN...) the call was on.'),
    sa.Column('user_id', sa.String(length=255), nullable=True, comment='The OpenPhone user (US...) who placed or received the call.'),
    sa.Column('answered_by', sa.String(length=255), nullable=True, comment='User (US...) who answered; NULL if nobody did.'),
    sa.Column('initiated_by', sa.String(length=255), nullable=True, comment='User (US...) who placed an outgoing call; NULL otherwise.'),
    sa.Column('forwarded_from', sa.String(length=255), nullable=True, comment='Number or user the call was forwarded from, as sent; NULL if not forwarded.'),
    sa.Column('forwarded_to', sa.String(length=255), nullable=True, comment='Number or user the call was forwarded to, as sent; NULL if not forwarded.'),
    sa.Column('participant_count', sa.Integer(), nullable=False, comment='Number of participants (rows in call_participants).'),
    sa.Column('content_hash', sa.String(length=64), nullable=False, comment='SHA-256 (hex) of raw_json; an unchanged hash skips rewriting the rows.'),
    sa.Column('raw_json', sa.Text().with_variant(mysql.LONGTEXT(), 'mariadb').with_variant(mysql.LONGTEXT(), 'mysql'), nullable=False, comment='The call object exactly as received (JSON text), including keys not modelled.'),
    sa.Column('first_synced_at', sa.DateTime().with_variant(mysql.DATETIME(fsp=6), 'mariadb').with_variant(mysql.DATETIME(fsp=6), 'mysql'), nullable=False, comment='UTC time the call was first stored.'),
    sa.Column('last_synced_at', sa.DateTime().with_variant(mysql.DATETIME(fsp=6), 'mariadb').with_variant(mysql.DATETIME(fsp=6), 'mysql'), nullable=False, comment='UTC time the call was last stored.'),
    sa.PrimaryKeyConstraint('call_id', name=op.f('pk_calls')),
    comment='Call context: one row per OpenPhone call (time, direction, duration, user, line).'
    )
    with op.batch_alter_table('calls', schema=None) as batch_op:
        batch_op.create_index('ix_calls_completed_at', ['completed_at'], unique=False)
        batch_op.create_index('ix_calls_direction', ['direction'], unique=False)
        batch_op.create_index('ix_calls_phone_number_id', ['phone_number_id'], unique=False)
        batch_op.create_index('ix_calls_user_id', ['user_id'], unique=False)

    op.create_table('discovery_conversations',
    sa.Column('phone_number_id', sa.String(length=255), nullable=False, comment='The OpenPhone line (PN...).'),
    sa.Column('participant', sa.String(length=255), nullable=False, comment='The other party (E.164).'),
    sa.Column('conversation_id', sa.String(length=255), nullable=True, comment='The conversation (CN...) last walked for this pair.'),
    sa.Column('calls_created_after', sa.DateTime().with_variant(mysql.DATETIME(fsp=6), 'mariadb').with_variant(mysql.DATETIME(fsp=6), 'mysql'), nullable=False, comment='UTC watermark: every call created before it was listed; the next run lists createdAfter it.'),
    sa.Column('updated_at', sa.DateTime().with_variant(mysql.DATETIME(fsp=6), 'mariadb').with_variant(mysql.DATETIME(fsp=6), 'mysql'), nullable=False, comment='UTC time the watermark last advanced.'),
    sa.PrimaryKeyConstraint('phone_number_id', 'participant', name=op.f('pk_discovery_conversations')),
    comment='etl discover progress per one-to-one conversation.'
    )
    op.create_table('discovery_runs',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), autoincrement=True, nullable=False, comment='Run number, increasing.'),
    sa.Column('started_at', sa.DateTime().with_variant(mysql.DATETIME(fsp=6), 'mariadb').with_variant(mysql.DATETIME(fsp=6), 'mysql'), nullable=False, comment='UTC time the run started.'),
    sa.Column('finished_at', sa.DateTime().with_variant(mysql.DATETIME(fsp=6), 'mariadb').with_variant(mysql.DATETIME(fsp=6), 'mysql'), nullable=True, comment='UTC time the run ended; NULL while running or if it crashed.'),
    sa.Column('command', sa.String(length=32), nullable=False, comment='The command that ran: discover or backfill.'),
    sa.Column('phone_numbers', sa.Integer(), server_default='0', nullable=False, comment='Phone numbers walked.'),
    sa.Column('conversations', sa.Integer(), server_default='0', nullable=False, comment='Conversations walked.'),
    sa.Column('pages', sa.Integer(), server_default='0', nullable=False, comment='Calls list pages committed (with their calls and queue ids).'),
    sa.Column('calls_seen', sa.Integer(), server_default='0', nullable=False, comment='Distinct calls listed.'),
    sa.Column('enqueued', sa.Integer(), server_default='0', nullable=False, comment='Completed calls newly added to summary_queue.'),
    sa.Column('errors', sa.Integer(), server_default='0', nullable=False, comment='Walks (a line or a conversation) that stopped on an error.'),
    sa.Column('exit_code', sa.Integer(), nullable=True, comment='Process exit code (0 ok, 1 errors or interrupted, 3 API refused the key); NULL while running.'),
    sa.Column('stop_reason', sa.Text(), nullable=True, comment='Why the run stopped early or with errors; NULL when it ran to the end cleanly.'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_discovery_runs')),
    comment='Discovery history: one row per etl discover run.'
    )
    op.create_table('discovery_watermarks',
    sa.Column('phone_number_id', sa.String(length=255), nullable=False, comment='The OpenPhone line (PN...).'),
    sa.Column('phone_number', sa.String(length=255), nullable=True, comment="The line's number (E.164) when discovery last saw it."),
    sa.Column('conversations_updated_after', sa.DateTime().with_variant(mysql.DATETIME(fsp=6), 'mariadb').with_variant(mysql.DATETIME(fsp=6), 'mysql'), nullable=False, comment='UTC watermark: every conversation updated before it was walked; the next run lists updatedAfter it.'),
    sa.Column('updated_at', sa.DateTime().with_variant(mysql.DATETIME(fsp=6), 'mariadb').with_variant(mysql.DATETIME(fsp=6), 'mysql'), nullable=False, comment='UTC time the watermark last advanced.'),
    sa.PrimaryKeyConstraint('phone_number_id', name=op.f('pk_discovery_watermarks')),
    comment='etl discover progress per OpenPhone line.'
    )
    op.create_table('call_participants',
    sa.Column('call_id', sa.String(length=66).with_variant(mysql.VARCHAR(charset='ascii', collation='ascii_bin', length=66), 'mariadb').with_variant(mysql.VARCHAR(charset='ascii', collation='ascii_bin', length=66), 'mysql'), nullable=False, comment='The call (calls.call_id).'),
    sa.Column('position', sa.Integer(), autoincrement=False, nullable=False, comment="0-based position in the API's participants array."),
    sa.Column('number', sa.String(length=255), nullable=False, comment='The participant as sent (E.164 when is_e164); NUL/unpaired surrogates become U+FFFD, cut at 255.'),
    sa.Column('is_e164', sa.Boolean(), nullable=False, comment='Whether number is a valid E.164 number (+ and 8 to 15 digits); kept either way.'),
    sa.ForeignKeyConstraint(['call_id'], ['calls.call_id'], name=op.f('fk_call_participants_call_id_calls'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('call_id', 'position', name=op.f('pk_call_participants')),
    comment='Participants of a call, position 0 first.'
    )
    with op.batch_alter_table('call_participants', schema=None) as batch_op:
        batch_op.create_index('ix_call_participants_number', ['number'], unique=False)


    _create_views()


def downgrade() -> None:
    _drop_views()
    with op.batch_alter_table('call_participants', schema=None) as batch_op:
        batch_op.drop_index('ix_call_participants_number')

    op.drop_table('call_participants')
    op.drop_table('discovery_watermarks')
    op.drop_table('discovery_runs')
    op.drop_table('discovery_conversations')
    with op.batch_alter_table('calls', schema=None) as batch_op:
        batch_op.drop_index('ix_calls_user_id')
        batch_op.drop_index('ix_calls_phone_number_id')
        batch_op.drop_index('ix_calls_direction')
        batch_op.drop_index('ix_calls_completed_at')

    op.drop_table('calls')
    op.drop_table('call_lookups')
    _restore_0002_views()
