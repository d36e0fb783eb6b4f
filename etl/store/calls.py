"""Calls (``calls``, ``call_participants``, ``call_voicemails``), call 404s (``call_lookups``), and
forgetting every row of a call.

The sync engine lands a call's context and its summary in one transaction:
:func:`etl.store.save_entries` calls :func:`save_calls` / :func:`record_call_not_found` on its connection.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import TYPE_CHECKING

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from etl.config import DEFAULT_WORKSPACE
from etl.store._sql import Replaced, Tree, chunks, replace_changed
from etl.tables import (
    call_lookups_t,
    calls_t,
    participants_t,
    queue_t,
    summaries_t,
    transcript_queue_t,
    transcripts_t,
    voicemails_t,
)

if TYPE_CHECKING:
    from etl.normalize import CallContextRows

_CALL_UPDATE_COLUMNS = tuple(
    c.name for c in calls_t.columns if c.name not in ("call_id", "first_synced_at", "workspace")
)

# What save_calls reports: calls new, changed (rows rewritten), unchanged (only last_synced_at moved).
CallsSaved = Replaced


def save_calls(conn: Connection, calls: Sequence[CallContextRows], now: datetime, *,
               workspace: str = DEFAULT_WORKSPACE) -> CallsSaved:
    """Upsert calls and replace their participants and voicemail, in the caller's transaction.

    A call whose ``content_hash`` is unchanged only gets ``last_synced_at``;
    a changed one has its participants replaced as a whole.  A call listed
    twice in ``calls`` is stored once (the last one wins).  A stored call is
    no longer a pending 404 (its ``call_lookups`` row goes).  New rows are in
    ``workspace``; a call stored under another workspace is left as it is.
    """
    if not calls:
        return CallsSaved(new=0, changed=0, unchanged=0)
    saved = replace_changed(conn, calls_t, (participants_t, voicemails_t), [
        Tree(parent=dict(r.parent, last_synced_at=now),
             children={participants_t: r.participants, voicemails_t: r.voicemails}) for r in calls
    ], _CALL_UPDATE_COLUMNS, now, workspace=workspace)
    for chunk in chunks(list(dict.fromkeys(c.call_id for c in calls))):
        conn.execute(_FOUND, {"ids": chunk, "ws": workspace})
    return saved


_FOUND = sa.delete(call_lookups_t).where(call_lookups_t.c.call_id.in_(sa.bindparam("ids", expanding=True)),
                                         call_lookups_t.c.workspace == sa.bindparam("ws"))


def record_call_not_found(conn: Connection, call_id: str, state: str, now: datetime, error: str | None, *,
                          workspace: str = DEFAULT_WORKSPACE) -> None:
    """A ``GET /v1/calls/{id}`` 404: count it; ``state`` is ``retrying`` or ``not_found`` (given up).
    A lookup another workspace recorded is left as it is."""
    lk = call_lookups_t.c
    updated = conn.execute(
        sa.update(call_lookups_t).where(lk.call_id == call_id, lk.workspace == workspace)
        .values(state=state, attempts=lk.attempts + 1, last_error=error and error[:2000], updated_at=now)
    ).rowcount
    if not updated and conn.execute(sa.select(lk.call_id).where(lk.call_id == call_id)).first() is None:
        conn.execute(sa.insert(call_lookups_t).values(
            call_id=call_id, state=state, attempts=1, first_not_found_at=now,
            last_error=error and error[:2000], updated_at=now, workspace=workspace,
        ))


def forget_calls(conn: Connection, ids: Sequence[str], *, workspace: str = DEFAULT_WORKSPACE) -> None:
    """Delete ``workspace``'s summaries, queue items, 404 records and transcripts of ``ids`` (``etl demo``
    starts afresh)."""
    for table in (summaries_t, queue_t, call_lookups_t, transcripts_t, transcript_queue_t):
        conn.execute(sa.delete(table).where(table.c.call_id.in_(ids), table.c.workspace == workspace))
