"""sync_runs.transcripts_*: a run's transcript items counted apart from its summaries

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-07

Until this revision a run's counters (``claimed``, ``completed``, ``failed``,
…, ``fetched``) counted the items of both queues together, and a transcript
the plan does not have (``forbidden``) counted as a failed summary.  From here
the summary counters count ``summary_queue`` items only and ten new
``transcripts_*`` columns count ``transcript_queue`` items.

Rows written before cannot be split after the fact: their transcript columns
are 0 and their summary counters keep the mixed sums (docs/schema.md says so).
The downgrade folds the transcript counters back into the shared ones, as the
old code counted them (``forbidden`` with ``failed``).  That loses nothing a
0012 schema can hold (what goes is only the split, which 0012 never had), so
the dropped columns are declared lossless to migrations/env.py's data-loss
guard: going below 0013 needs no ``-x allow-data-loss=1``.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = '0013'
down_revision: str | None = '0012'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# Frozen copies: (column, comment) of the new counters.
_NEW = (
    ('transcripts_claimed', "Transcript items the run claimed (revision 0013)."),
    ('transcripts_completed', "Transcript items that ended done (revision 0013)."),
    ('transcripts_rescheduled', "Transcript items put back as pending (revision 0013)."),
    ('transcripts_failed', "Transcript items that ended failed (revision 0013)."),
    ('transcripts_forbidden', "Transcript items that ended forbidden: the plan has no transcripts (revision 0013)."),
    ('transcripts_absent', "Transcript items that ended absent (revision 0013)."),
    ('transcripts_not_found', "Transcript items that ended not_found (revision 0013)."),
    ('transcripts_invalid', "Transcript items that ended invalid (revision 0013)."),
    ('transcripts_errors', "Transcript items that ended error (revision 0013)."),
    ('transcripts_fetched', "Transcript items the API answered (revision 0013)."),
)
# Where each transcript counter went before this revision.
_FOLD = {'claimed': ('transcripts_claimed',), 'completed': ('transcripts_completed',),
         'rescheduled': ('transcripts_rescheduled',),
         'failed': ('transcripts_failed', 'transcripts_forbidden'), 'absent': ('transcripts_absent',),
         'not_found': ('transcripts_not_found',), 'invalid': ('transcripts_invalid',),
         'errors': ('transcripts_errors',), 'fetched': ('transcripts_fetched',)}
# (table, column, type, nullable, comment before, comment after)
_COMMENTS = (
    ('sync_runs', 'claimed', sa.Integer(), False, "Queue items the run claimed.",
     "Summary items the run claimed (before revision 0013: transcripts too)."),
    ('sync_runs', 'failed', sa.Integer(), False,
     "Items that ended failed (the API says the summary failed); before revision 0009 also "
     "absent, not_found and invalid.",
     "Summary items that ended failed (the API says the summary failed); before revision 0009 "
     "also absent, not_found and invalid, before 0013 also transcripts."),
    ('sync_runs', 'fetched', sa.Integer(), False,
     "Items the API answered (200, 400 or 404); 0 with items processed means nothing could be fetched.",
     "Summary items the API answered (200, 400 or 404); 0 with items processed means nothing could "
     "be fetched."),
    ('sync_runs', 'exit_code', sa.Integer(), True,
     "Process exit code (0 ok, 1 item errors, 3 API refused the key); NULL while running.",
     "Process exit code (0 ok, 1 item errors, 3 API refused the key, 4 API never reached); "
     "NULL while running."),
    ('sync_runs', 'command', sa.String(32), False, "The command that ran: sync or backfill.",
     "The command that ran: sync, backfill, serve (the webhook receiver) or demo."),
    ('discovery_runs', 'command', sa.String(32), False, "The command that ran: discover or backfill.",
     "The command that ran: discover, backfill or demo."),
)


def _comments(after: bool) -> None:
    # SQLite keeps no comments (and would rebuild the table to "change" one).
    if op.get_context().dialect.name == 'sqlite':
        return
    for table, column, type_, nullable, before, later in _COMMENTS:
        default = '0' if type_.__class__ is sa.Integer and not nullable else None
        op.alter_column(table, column, existing_type=type_, existing_nullable=nullable,
                        existing_server_default=default, comment=later if after else before,
                        existing_comment=before if after else later)


def upgrade() -> None:
    with op.batch_alter_table('sync_runs') as batch:
        for name, comment in _NEW:
            batch.add_column(sa.Column(name, sa.Integer(), server_default='0', nullable=False, comment=comment))
    _comments(after=True)


def downgrade() -> None:
    sets = ", ".join(f"{old} = {old} + " + " + ".join(new) for old, new in _FOLD.items())
    op.execute(f"UPDATE sync_runs SET {sets}")  # noqa: S608  (column names of this file, no input)
    # Folded, in this transaction, before the columns go: what they held is in the shared counters.
    config = op.get_context().config
    if config is not None:
        config.attributes.setdefault("etl_lossless_columns", set()).update(('sync_runs', name) for name, _ in _NEW)
    with op.batch_alter_table('sync_runs') as batch:
        for name, _comment in _NEW:
            batch.drop_column(name)
    _comments(after=False)
