"""Discovery watermarks: how far ``etl discover`` got per line (``discovery_watermarks``), per
conversation (``discovery_conversations``) and per scope of the dated calls listing (``discovery_call_watermarks``).

Each workspace has its own (the workspace is part of every key): ``'*'`` is the whole workspace."""

from __future__ import annotations

from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from etl.config import DEFAULT_WORKSPACE
from etl.store._sql import upsert
from etl.tables import call_marks_t, conversation_marks_t, watermarks_t


def watermarks(conn: Connection, *, workspace: str = DEFAULT_WORKSPACE) -> dict[str, datetime]:
    """``{phone_number_id: conversations_updated_after}`` of ``workspace``."""
    w = watermarks_t.c
    return dict(conn.execute(sa.select(w.phone_number_id, w.conversations_updated_after)
                             .where(w.workspace == workspace)).all())


def set_watermark(conn: Connection, phone_number_id: str, number: str | None, value: datetime,
                  now: datetime, *, workspace: str = DEFAULT_WORKSPACE) -> None:
    upsert(conn, watermarks_t, [{
        "workspace": workspace, "phone_number_id": phone_number_id, "phone_number": number,
        "conversations_updated_after": value, "updated_at": now,
    }], ("phone_number", "conversations_updated_after", "updated_at"))


def conversation_marks(conn: Connection, phone_number_id: str, *,
                       workspace: str = DEFAULT_WORKSPACE) -> dict[str, datetime]:
    """``{participant: calls_created_after}`` for one line of ``workspace``."""
    m = conversation_marks_t.c
    return dict(conn.execute(
        sa.select(m.participant, m.calls_created_after)
        .where(m.workspace == workspace, m.phone_number_id == phone_number_id)
    ).all())


def set_conversation_mark(conn: Connection, phone_number_id: str, participant: str, conversation_id: str | None,
                          value: datetime, now: datetime, *, workspace: str = DEFAULT_WORKSPACE) -> None:
    upsert(conn, conversation_marks_t, [{
        "workspace": workspace, "phone_number_id": phone_number_id, "participant": participant,
        "conversation_id": conversation_id, "calls_created_after": value, "updated_at": now,
    }], ("conversation_id", "calls_created_after", "updated_at"))


def call_watermarks(conn: Connection, *, workspace: str = DEFAULT_WORKSPACE) -> dict[str, datetime]:
    """``{scope: calls_created_since}`` of ``workspace``'s dated discovery (``*`` or a line id)."""
    m = call_marks_t.c
    return {scope: since for scope, since in conn.execute(
        sa.select(m.scope, m.calls_created_since).where(m.workspace == workspace))}


def set_call_watermark(conn: Connection, scope: str, value: datetime, now: datetime, *,
                       workspace: str = DEFAULT_WORKSPACE) -> None:
    upsert(conn, call_marks_t, [{"workspace": workspace, "scope": scope, "calls_created_since": value,
                                 "updated_at": now}],
           ("calls_created_since", "updated_at"))
