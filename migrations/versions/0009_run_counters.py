"""sync_runs.absent, not_found, invalid: a run's counters named after the queue states they count

Revision ID: 0009
Revises: 0006
Create Date: 2026-12-04

``sync_runs.failed`` used to count every item that ended ``failed``,
``absent``, ``not_found`` or ``invalid``, so a run showed "failed 1" beside
"Queue: failed 0".  From this revision each of those states has its own
counter and ``failed`` counts the ``failed`` state only.  Rows written before
keep their sum in ``failed`` (the new columns are 0 there); the downgrade folds
the new counters back into ``failed``, so the old meaning is restored.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = '0009'
down_revision: str | None = '0006'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_FAILED_BEFORE = "Items that ended failed, absent, not_found or invalid."
_FAILED_AFTER = ("Items that ended failed (the API says the summary failed); before revision 0009 also "
                 "absent, not_found and invalid.")
_NEW = ('absent', 'not_found', 'invalid')


def _comment_failed(comment: str, existing: str) -> None:
    # SQLite keeps no comments (and would rebuild the table to "change" one).
    if op.get_context().dialect.name != 'sqlite':
        op.alter_column('sync_runs', 'failed', existing_type=sa.Integer(), existing_nullable=False,
                        existing_server_default='0', comment=comment, existing_comment=existing)


def upgrade() -> None:
    with op.batch_alter_table('sync_runs') as batch:
        for name in _NEW:
            batch.add_column(sa.Column(name, sa.Integer(), server_default='0', nullable=False,
                                       comment=f"Items that ended {name} (revision 0009)."))
    _comment_failed(_FAILED_AFTER, _FAILED_BEFORE)


def downgrade() -> None:
    op.execute("UPDATE sync_runs SET failed = failed + absent + not_found + invalid")
    with op.batch_alter_table('sync_runs') as batch:
        for name in _NEW:
            batch.drop_column(name)
    _comment_failed(_FAILED_BEFORE, _FAILED_AFTER)
