"""what the dated API (2026-03-30) carries: summary type and title, actors, routes, voicemails

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-04

``call_summaries`` gains ``type`` (human | agent) and ``title``; ``calls``
gains ``actor_id``, ``call_route`` and ``ai_handled``; ``call_participants``
gains ``actor_id`` and ``is_own_number`` (the dated API lists every party, the
workspace's own number included); ``call_voicemails`` holds the voicemail of a
call (``include=voicemail``); ``discovery_call_watermarks`` is the dated
discovery's progress (``GET /calls`` since a ``createdAt`` bound, per scope).
Rows from v1 leave the new columns NULL.  The views ``call_overview`` and
``call_summary_overview`` are recreated with the new columns appended (the
existing ones keep their place), per dialect as in 0004.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import mysql

revision: str = '0007'
down_revision: str | None = '0006'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

def _views_0004() -> tuple[Callable[..., str], Callable[[str], dict[str, str]], str, str]:
    """0004's dialect pieces and view texts, reused as they are (one spelling of each).

    Loaded from its file: a revision module's name starts with a digit and is not importable.
    """
    spec = importlib.util.spec_from_file_location("_rev0004", Path(__file__).with_name("0004_calls.py"))
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module._seconds, module._parts, module._CALL_SUMMARY_OVERVIEW, module._CALL_OVERVIEW


_CALL_SUMMARY_OVERVIEW = """\
CREATE VIEW call_summary_overview AS
SELECT s.call_id, s.status, s.summary_text, {next_steps} AS next_steps_text,
       s.line_count, s.next_step_count, s.job_count,
       q.state AS queue_state, q.attempts, q.last_api_status, q.last_error,
       q.enqueued_at, q.finished_at, {completion_seconds} AS completion_seconds,
       s.first_synced_at, s.last_synced_at,
       c.created_at AS call_created_at, c.completed_at AS call_completed_at, c.direction,
       c.duration_seconds, c.user_id, c.phone_number_id, {participants} AS participants,
       s.type AS summary_type, s.title AS summary_title, c.actor_id, c.call_route, c.ai_handled
FROM call_summaries s
LEFT JOIN summary_queue q ON q.call_id = s.call_id
LEFT JOIN calls c ON c.call_id = s.call_id"""

_CALL_OVERVIEW = """\
CREATE VIEW call_overview AS
SELECT c.call_id, c.created_at, c.answered_at, c.completed_at, {day} AS call_date, {week} AS call_week,
       c.direction, c.status AS call_status, c.duration_seconds, c.user_id, c.phone_number_id,
       c.participant_count, {participants} AS participants,
       s.status AS summary_status, s.line_count, s.next_step_count, s.job_count,
       q.state AS queue_state, s.first_synced_at AS summary_stored_at,
       {lag} AS summary_lag_seconds,
       c.actor_id, c.call_route, c.ai_handled, s.type AS summary_type, s.title AS summary_title,
       v.voicemail_id, v.duration_seconds AS voicemail_seconds
FROM calls c
LEFT JOIN call_summaries s ON s.call_id = c.call_id
LEFT JOIN summary_queue q ON q.call_id = c.call_id
LEFT JOIN call_voicemails v ON v.call_id = c.call_id"""


def _dialect() -> str:
    return op.get_context().dialect.name


def _create_views(summary_sql: str, overview_sql: str) -> None:
    seconds, parts_of, _, _ = _views_0004()
    dialect = _dialect()
    parts: dict[str, Any] = parts_of(dialect)
    op.execute(summary_sql.format(completion_seconds=seconds(dialect, "q.enqueued_at", "q.finished_at"), **parts))
    op.execute(overview_sql.format(lag=seconds(dialect, "c.completed_at", "s.first_synced_at"), **parts))


def _drop_views() -> None:
    op.execute("DROP VIEW call_overview")
    op.execute("DROP VIEW call_summary_overview")


def upgrade() -> None:
    _drop_views()
    with op.batch_alter_table('call_summaries') as batch:
        batch.add_column(sa.Column('type', sa.String(length=255), nullable=True,
                                   comment="Who the summary is of (dated API): human (a person's call) or agent "
                                           "(the AI agent's); NULL on v1."))
        batch.add_column(sa.Column('title', sa.Text().with_variant(mysql.LONGTEXT(), 'mysql', 'mariadb'),
                                   nullable=True,
                                   comment="The summary's title (dated API, agent summaries); NULL on v1 or when "
                                           "the API sent none."))
    with op.batch_alter_table('calls') as batch:
        batch.add_column(sa.Column('actor_id', sa.String(length=255), nullable=True,
                                   comment="Who handled the call (dated API actorId): a user (US...) or a system "
                                           "actor such as the AI agent (SYU...); NULL on v1."))
        batch.add_column(sa.Column('call_route', sa.String(length=255), nullable=True,
                                   comment="How the call was routed (dated API callRoute): phone-number or "
                                           "phone-menu."))
        batch.add_column(sa.Column('ai_handled', sa.String(length=255), nullable=True,
                                   comment="ai-agent when the AI agent handled the call (dated API aiHandled); NULL "
                                           "otherwise and on v1."))
    with op.batch_alter_table('call_participants') as batch:
        batch.add_column(sa.Column('actor_id', sa.String(length=255), nullable=True,
                                   comment="The party's actor (dated API): a user (US...) or system actor (SYU...); "
                                           "NULL for an outside party and on v1."))
        batch.add_column(sa.Column('is_own_number', sa.Boolean(), nullable=True,
                                   comment="Whether number is the workspace's own (it appears with an actor in the "
                                           "call; dated API); NULL on v1, whose participants are the other parties "
                                           "only."))
    op.create_table('call_voicemails',
    sa.Column('call_id', sa.String(length=66).with_variant(mysql.VARCHAR(charset='ascii', collation='ascii_bin', length=66), 'mariadb').with_variant(mysql.VARCHAR(charset='ascii', collation='ascii_bin', length=66), 'mysql'), nullable=False, comment='The call (calls.call_id).'),
    sa.Column('voicemail_id', sa.String(length=255), nullable=True, comment="The voicemail's id (VM...)."),
    sa.Column('status', sa.String(length=255), nullable=True, comment='completed or in-progress, as sent.'),
    sa.Column('duration_seconds', sa.Integer(), nullable=True, comment='Length of the voicemail in seconds.'),
    sa.Column('recording_url', sa.Text(), nullable=True, comment='URL of the recording as sent (it may be signed and expire).'),
    sa.Column('transcript', sa.Text().with_variant(mysql.LONGTEXT(), 'mysql', 'mariadb'), nullable=True, comment="The voicemail's transcript; NULL while none is available."),
    sa.ForeignKeyConstraint(['call_id'], ['calls.call_id'], name=op.f('fk_call_voicemails_call_id_calls'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('call_id', name=op.f('pk_call_voicemails')),
    comment='Voicemails left on calls (dated API include=voicemail); one per call.'
    )
    op.create_table('discovery_call_watermarks',
    sa.Column('scope', sa.String(length=255), nullable=False, comment='What was listed: * for the whole workspace, or one line\'s id (PN...) for --phone-number.'),
    sa.Column('calls_created_since', sa.DateTime().with_variant(mysql.DATETIME(fsp=6), 'mysql', 'mariadb'), nullable=False, comment='UTC watermark: every call created before it was listed and committed; the next run lists createdAt[gte] it (less the overlap).'),
    sa.Column('updated_at', sa.DateTime().with_variant(mysql.DATETIME(fsp=6), 'mysql', 'mariadb'), nullable=False, comment='UTC time the watermark last advanced.'),
    sa.PrimaryKeyConstraint('scope', name=op.f('pk_discovery_call_watermarks')),
    comment='etl discover progress on the dated API (GET /calls), per scope.'
    )
    _create_views(_CALL_SUMMARY_OVERVIEW, _CALL_OVERVIEW)


def downgrade() -> None:
    _drop_views()
    op.drop_table('discovery_call_watermarks')
    op.drop_table('call_voicemails')
    with op.batch_alter_table('call_participants') as batch:
        batch.drop_column('is_own_number')
        batch.drop_column('actor_id')
    with op.batch_alter_table('calls') as batch:
        batch.drop_column('ai_handled')
        batch.drop_column('call_route')
        batch.drop_column('actor_id')
    with op.batch_alter_table('call_summaries') as batch:
        batch.drop_column('title')
        batch.drop_column('type')
    _, _, summary_0004, overview_0004 = _views_0004()
    _create_views(summary_0004, overview_0004)
