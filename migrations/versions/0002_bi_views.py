"""bi views, indexes and column comments

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-24

The BI contract of docs/schema.md: indexes for the analysts' filters, a
comment on every column (PostgreSQL and MariaDB; SQLite has no comments) and
two views.  The views are written per dialect only where SQL has no common
spelling (casts, string aggregation, timestamp difference); their columns and
rows are the same on every database, except how a double that needs an
exponent is printed (docs/schema.md, ``value_display``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import mysql

revision: str = '0002'
down_revision: str | None = '0001'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_UTCNOW = {
    "sqlite": "(strftime('%Y-%m-%d %H:%M:%f', 'now'))",
    "postgresql": "timezone('utc', statement_timestamp())",
    "mysql": "(UTC_TIMESTAMP(6))",
    "mariadb": "(UTC_TIMESTAMP(6))",
}
_UTCNOW_DEFAULT = "<utcnow>"  # stands for the dialect's _UTCNOW in _COLUMNS

# The column types of revision 0001: MySQL's ALTER TABLE ... MODIFY restates a
# column's whole definition, so setting a comment needs its exact type.
_CALL_ID = sa.String(length=66).with_variant(mysql.VARCHAR(charset='ascii', collation='ascii_bin', length=66), 'mariadb').with_variant(mysql.VARCHAR(charset='ascii', collation='ascii_bin', length=66), 'mysql')
_LONG_TEXT = sa.Text().with_variant(mysql.LONGTEXT(), 'mariadb').with_variant(mysql.LONGTEXT(), 'mysql')
_UTC_DATETIME = sa.DateTime().with_variant(mysql.DATETIME(fsp=6), 'mariadb').with_variant(mysql.DATETIME(fsp=6), 'mysql')

# (table, column, existing type, existing nullable, existing server default, comment)
_COLUMNS: tuple[tuple[str, str, sa.types.TypeEngine[Any], bool, str | None, str], ...] = (
    ('summary_queue', 'call_id', _CALL_ID, False, None,
     'OpenPhone call id: AC followed by 1 to 64 ASCII letters or digits (case-sensitive).'),
    ('summary_queue', 'state', sa.String(length=16), False, 'pending',
     'pending (due at next_attempt_at), done, failed, absent, not_found, invalid or error.'),
    ('summary_queue', 'attempts', sa.Integer(), False, '0',
     'Fetches of this item (in-run HTTP retries count once; a run stopped by 401/403 counts none).'),
    ('summary_queue', 'consecutive_errors', sa.Integer(), False, '0',
     'Attempts in a row that ended with a transient error; reaching the limit gives state error.'),
    ('summary_queue', 'next_attempt_at', _UTC_DATETIME, False, _UTCNOW_DEFAULT,
     'UTC time the item is due; while a run holds the lease, the lease expiry.'),
    ('summary_queue', 'lease_expires_at', _UTC_DATETIME, True, None,
     "UTC end of the current run's lease; NULL when no run holds the item."),
    ('summary_queue', 'lease_owner', sa.String(length=64), True, None,
     'Run holding the lease (host:pid:random); NULL when no run holds the item.'),
    ('summary_queue', 'last_api_status', sa.String(length=32), True, None,
     "Last answer: the summary status, 'http <code>' or 'no response'; NULL before the first."),
    ('summary_queue', 'last_error', sa.Text(), True, None,
     'Why the last attempt did not complete (at most 2000 characters); NULL on success.'),
    ('summary_queue', 'incomplete_since', _UTC_DATETIME, True, None,
     'UTC time the API first said in-progress or absent; the 48 h / 24 h give-up windows start here.'),
    ('summary_queue', 'enqueued_at', _UTC_DATETIME, False, _UTCNOW_DEFAULT,
     'UTC time the call id was first enqueued.'),
    ('summary_queue', 'updated_at', _UTC_DATETIME, False, _UTCNOW_DEFAULT,
     "UTC time of the last attempt's outcome or re-queue."),
    ('summary_queue', 'finished_at', _UTC_DATETIME, True, None,
     'UTC time the item reached a terminal state; NULL while pending.'),
    ('call_summaries', 'call_id', _CALL_ID, False, None,
     'OpenPhone call id (same as summary_queue.call_id).'),
    ('call_summaries', 'status', sa.String(length=16), False, None,
     'Summary status from the API: completed or failed (absent, in-progress never stored).'),
    ('call_summaries', 'summary_text', _LONG_TEXT, True, None,
     "Summary lines joined by newline; NULL when the API sent null, '' when it sent []."),
    ('call_summaries', 'line_count', sa.Integer(), False, None,
     'Number of summary lines (rows in call_summary_lines).'),
    ('call_summaries', 'next_step_count', sa.Integer(), False, None,
     'Number of next steps (rows in call_next_steps).'),
    ('call_summaries', 'job_count', sa.Integer(), False, None,
     'Number of jobs (rows in call_jobs).'),
    ('call_summaries', 'content_hash', sa.String(length=64), False, None,
     'SHA-256 (hex) of the response body; an unchanged hash skips rewriting the rows.'),
    ('call_summaries', 'raw_json', _LONG_TEXT, False, None,
     'The response body exactly as received (JSON text), including keys not modelled.'),
    ('call_summaries', 'first_synced_at', _UTC_DATETIME, False, None,
     'UTC time the summary was first stored.'),
    ('call_summaries', 'last_synced_at', _UTC_DATETIME, False, None,
     'UTC time the summary was last fetched.'),
    ('call_summary_lines', 'call_id', _CALL_ID, False, None,
     'The call (call_summaries.call_id).'),
    ('call_summary_lines', 'position', sa.Integer(), False, None,
     "0-based position in the API's summary array."),
    ('call_summary_lines', 'text', _LONG_TEXT, False, None,
     'The line; NUL and unpaired surrogates become U+FFFD.'),
    ('call_next_steps', 'call_id', _CALL_ID, False, None,
     'The call (call_summaries.call_id).'),
    ('call_next_steps', 'position', sa.Integer(), False, None,
     "0-based position in the API's nextSteps array."),
    ('call_next_steps', 'text', _LONG_TEXT, False, None,
     'The next step; NUL and unpaired surrogates become U+FFFD.'),
    ('call_jobs', 'call_id', _CALL_ID, False, None,
     'The call (call_summaries.call_id).'),
    ('call_jobs', 'job_position', sa.Integer(), False, None,
     "0-based position in the API's jobs array."),
    ('call_jobs', 'name', _LONG_TEXT, False, None,
     "Job name, e.g. 'Lead qualification'; NUL and unpaired surrogates become U+FFFD."),
    ('call_jobs', 'icon', _LONG_TEXT, False, None,
     'Job icon (usually one emoji), as sent.'),
    ('call_job_fields', 'call_id', _CALL_ID, False, None,
     'The call (call_jobs.call_id).'),
    ('call_job_fields', 'job_position', sa.Integer(), False, None,
     'The job (call_jobs.job_position).'),
    ('call_job_fields', 'field_position', sa.Integer(), False, None,
     "0-based position in the job's result.data array."),
    ('call_job_fields', 'name', _LONG_TEXT, False, None,
     "Field name, e.g. 'Lead score'; NUL and unpaired surrogates become U+FFFD."),
    ('call_job_fields', 'value_type', sa.String(length=8), False, None,
     'JSON type of the value: string, number or boolean; names the value_* column set.'),
    ('call_job_fields', 'value_text', _LONG_TEXT, True, None,
     "The value when value_type = 'string' (NUL/unpaired surrogates become U+FFFD), else NULL."),
    ('call_job_fields', 'value_number', sa.Double(), True, None,
     "The value when value_type = 'number' (integers too, as a double), else NULL."),
    ('call_job_fields', 'value_boolean', sa.Boolean(), True, None,
     "The value when value_type = 'boolean', else NULL; never a number 0/1 from the API."),
    ('sync_runs', 'id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), False, None,
     'Run number, increasing.'),
    ('sync_runs', 'started_at', _UTC_DATETIME, False, None,
     'UTC time the run started.'),
    ('sync_runs', 'finished_at', _UTC_DATETIME, True, None,
     'UTC time the run ended; NULL while running or if it crashed.'),
    ('sync_runs', 'command', sa.String(length=32), False, None,
     'The command that ran: sync or backfill.'),
    ('sync_runs', 'claimed', sa.Integer(), False, '0',
     'Queue items the run claimed.'),
    ('sync_runs', 'completed', sa.Integer(), False, '0',
     'Items that ended done (summary stored).'),
    ('sync_runs', 'rescheduled', sa.Integer(), False, '0',
     'Items put back as pending with a later next_attempt_at.'),
    ('sync_runs', 'failed', sa.Integer(), False, '0',
     'Items that ended failed, absent, not_found or invalid.'),
    ('sync_runs', 'errors', sa.Integer(), False, '0',
     'Items that ended error (gave up, or an unexpected error).'),
    ('sync_runs', 'exit_code', sa.Integer(), True, None,
     'Process exit code (0 ok, 1 item errors, 3 API refused the key); NULL while running.'),
    ('sync_runs', 'stop_reason', sa.Text(), True, None,
     'Why the run stopped early (signal, max runtime, API refused the key); NULL otherwise.'),
)

# Dialect-specific pieces of the views; everything else is one SQL text.
#   int / text: cast target types for a whole number and for text.
#   next_steps: a call's next steps joined by a newline, in position order
#     (SQLite before 3.44 has no ORDER BY inside an aggregate: an ordered
#     subquery, which SQLite does not flatten into an aggregate, keeps it).
#   completion_seconds: whole seconds from enqueued_at to finished_at,
#     truncated toward zero, exact to the microsecond on every database.
_VIEW_SQL = {
    "sqlite": {
        "int": "INTEGER",
        "text": "TEXT",
        "coll": "",
        "next_steps": "(SELECT group_concat(o.text, char(10)) FROM "
                      "(SELECT n.text FROM call_next_steps n WHERE n.call_id = s.call_id ORDER BY n.position) o)",
        "completion_seconds": "CAST((CAST(strftime('%s', q.finished_at) AS INTEGER) - CAST(strftime('%s', q.enqueued_at) AS INTEGER))"
                              " + (CAST('0' || SUBSTR(q.finished_at, 20) AS REAL) - CAST('0' || SUBSTR(q.enqueued_at, 20) AS REAL))"
                              " AS INTEGER)",
    },
    "postgresql": {
        "int": "BIGINT",
        "text": "TEXT",
        "coll": "",
        "next_steps": "(SELECT string_agg(n.text, chr(10) ORDER BY n.position) FROM call_next_steps n WHERE n.call_id = s.call_id)",
        "completion_seconds": "CAST(TRUNC(EXTRACT(EPOCH FROM (q.finished_at - q.enqueued_at))) AS BIGINT)",
    },
    "mysql": {
        "int": "SIGNED",
        "text": "CHAR CHARACTER SET utf8mb4",
        # Every branch of value_display gets one explicit collation: otherwise a
        # database whose default collation differs from the connection's mixes
        # them and MariaDB refuses MAX()/comparisons on the column.
        "coll": " COLLATE utf8mb4_bin",
        # The separator is a real newline: '\n' would depend on NO_BACKSLASH_ESCAPES.
        "next_steps": "(SELECT GROUP_CONCAT(n.text ORDER BY n.position SEPARATOR '\n') FROM call_next_steps n WHERE n.call_id = s.call_id)",
        "completion_seconds": "TIMESTAMPDIFF(SECOND, q.enqueued_at, q.finished_at)",
    },
}
_VIEW_SQL["mariadb"] = _VIEW_SQL["mysql"]

# value_display: integers (|x| < 9.2e18, inside BIGINT) as whole digits, other
# numbers as the database prints a double.  Nested CASEs rather than AND: SQL
# does not promise AND short-circuits, and the BIGINT cast must not overflow.
_CALL_JOB_FIELD_VALUES = """\
CREATE VIEW call_job_field_values AS
SELECT f.call_id, f.job_position, j.name AS job_name, f.field_position, f.name AS field_name,
       f.value_type, f.value_text, f.value_number, f.value_boolean,
       CASE f.value_type
         WHEN 'boolean' THEN CASE WHEN f.value_boolean THEN CAST('true' AS {text}){coll}
                                  ELSE CAST('false' AS {text}){coll} END
         WHEN 'number' THEN
           CASE WHEN ABS(f.value_number) < 9.2e18 THEN
             CASE WHEN f.value_number = CAST(f.value_number AS {int})
               THEN CAST(CAST(f.value_number AS {int}) AS {text}){coll}
               ELSE CAST(f.value_number AS {text}){coll} END
           ELSE CAST(f.value_number AS {text}){coll} END
         ELSE CAST(f.value_text AS {text}){coll}
       END AS value_display
FROM call_job_fields f
JOIN call_jobs j ON j.call_id = f.call_id AND j.job_position = f.job_position"""

_CALL_SUMMARY_OVERVIEW = """\
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


def _set_comments(upgrade: bool) -> None:
    """Set (or, downgrading, remove) every column comment; SQLite has none to set."""
    dialect = _dialect()
    if dialect == "sqlite":
        return
    for table, column, type_, nullable, default, comment in _COLUMNS:
        extra: dict[str, Any] = {}
        if dialect != "postgresql" and (table, column) == ('sync_runs', 'id'):
            extra["autoincrement"] = True  # MODIFY without AUTO_INCREMENT would drop it
        op.alter_column(
            table, column,
            existing_type=type_,
            existing_nullable=nullable,
            existing_server_default=sa.text(_UTCNOW[dialect]) if default == _UTCNOW_DEFAULT else default,
            comment=comment if upgrade else None,
            existing_comment=None if upgrade else comment,
            **extra,
        )


def upgrade() -> None:
    with op.batch_alter_table('call_job_fields', schema=None) as batch_op:
        batch_op.create_index('ix_call_job_fields_name', ['name'], unique=False, postgresql_using='hash', mysql_length=191, mariadb_length=191)

    with op.batch_alter_table('call_jobs', schema=None) as batch_op:
        batch_op.create_index('ix_call_jobs_name', ['name'], unique=False, postgresql_using='hash', mysql_length=191, mariadb_length=191)

    with op.batch_alter_table('call_summaries', schema=None) as batch_op:
        batch_op.create_index('ix_call_summaries_last_synced_at', ['last_synced_at'], unique=False)
        batch_op.create_index('ix_call_summaries_status', ['status'], unique=False)

    _set_comments(upgrade=True)

    parts = _VIEW_SQL[_dialect()]
    op.execute(_CALL_JOB_FIELD_VALUES.format(**parts))
    op.execute(_CALL_SUMMARY_OVERVIEW.format(**parts))


def downgrade() -> None:
    op.execute('DROP VIEW call_summary_overview')
    op.execute('DROP VIEW call_job_field_values')

    _set_comments(upgrade=False)

    with op.batch_alter_table('call_summaries', schema=None) as batch_op:
        batch_op.drop_index('ix_call_summaries_status')
        batch_op.drop_index('ix_call_summaries_last_synced_at')

    with op.batch_alter_table('call_jobs', schema=None) as batch_op:
        batch_op.drop_index('ix_call_jobs_name', postgresql_using='hash', mysql_length=191, mariadb_length=191)

    with op.batch_alter_table('call_job_fields', schema=None) as batch_op:
        batch_op.drop_index('ix_call_job_fields_name', postgresql_using='hash', mysql_length=191, mariadb_length=191)
