"""Users, lines and contacts: the only code that writes their tables and ``dimension_refreshes``.

A listing is saved in bulk, in chunks (:data:`SAVE_CHUNK` parents at a time,
every ``IN`` list chunked): a parent whose content hash is unchanged only gets
``last_seen_at`` (and loses a ``gone_at``: it is back); a changed one is
upserted and its child rows replaced as a whole (:func:`etl.store._sql.replace_changed`).
After a *complete* listing, every row it did not return is marked gone
(``gone_at``, kept so that history keeps its name).  Like the rest of the store,
every function takes a connection inside the caller's transaction.

Per workspace (issue 27): a listing is one workspace's, so only that workspace's
rows are marked gone after it, and each workspace has its own refresh history.
Ids are global: a row another workspace stored first is left as it is.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, cast

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from etl import models
from etl.config import DEFAULT_WORKSPACE
from etl.dimension_rows import Tree, contact_tree, line_tree, user_tree
from etl.dimensions import Contact, Line, Listing, User
from etl.store._sql import Replaced, replace_changed
from etl.store._sql import Tree as SqlTree

# Parents per replace_changed call: bounds the statement sizes and the rows held at once.
SAVE_CHUNK = 1000
PROBLEM_LENGTH = 2000

_USERS = cast(sa.Table, models.User.__table__)
_LINES = cast(sa.Table, models.PhoneNumber.__table__)
_MEMBERS = cast(sa.Table, models.PhoneNumberUser.__table__)
_CONTACTS = cast(sa.Table, models.Contact.__table__)
_CONTACT_CHILDREN = tuple(cast(sa.Table, m.__table__)
                          for m in (models.ContactPhoneNumber, models.ContactEmail, models.ContactCustomField))
_REFRESHES = cast(sa.Table, models.DimensionRefresh.__table__)


@dataclass(frozen=True, slots=True, kw_only=True)
class Saved:
    """What saving one listing did."""

    seen: int  # distinct rows the listing returned (with a usable id)
    new: int
    changed: int
    gone: int  # rows marked gone because a complete listing no longer returned them


def _key_of(table: sa.Table) -> str:
    return next(iter(table.primary_key.columns)).name


def _store(conn: Connection, parent: sa.Table, children: Sequence[sa.Table], trees: Sequence[Tree],
           now: datetime, workspace: str) -> Replaced:
    """Upsert ``trees`` (last one wins per key) in chunks, each parent marked seen now, new rows in ``workspace``."""
    key = _key_of(parent)
    touch: dict[str, Any] = {"last_seen_at": now, "gone_at": None}
    if "gone_reason" in parent.c:
        touch["gone_reason"] = None
    update = [c.name for c in parent.columns if c.name not in (key, "first_seen_at", "workspace")]
    by_key = {t.key: t for t in trees if t.key}
    ordered = list(by_key.values())
    new = changed = unchanged = foreign = 0
    for start in range(0, len(ordered), SAVE_CHUNK):
        chunk = [SqlTree(parent={**t.parent, "first_seen_at": now, **touch},
                         children={table: t.children.get(table.name, ()) for table in children})
                 for t in ordered[start:start + SAVE_CHUNK]]
        done = replace_changed(conn, parent, children, chunk, update, now, key=key, touch=touch, workspace=workspace)
        new, changed, unchanged = new + done.new, changed + done.changed, unchanged + done.unchanged
        foreign += done.foreign
    return Replaced(new=new, changed=changed, unchanged=unchanged, foreign=foreign)


def _mark_gone(conn: Connection, table: sa.Table, now: datetime, workspace: str) -> int:
    """Mark every present row of ``workspace`` not seen at ``now`` (the listing's time) gone; returns how many."""
    values: dict[str, Any] = {"gone_at": now}
    if "gone_reason" in table.c:
        values["gone_reason"] = "unlisted"
    result = conn.execute(sa.update(table).where(table.c.workspace == workspace, table.c.gone_at.is_(None),
                                                 table.c.last_seen_at < now)
                          .values(values))
    return result.rowcount or 0


def _saved(conn: Connection, table: sa.Table, replaced: Replaced, complete: bool, now: datetime,
           workspace: str) -> Saved:
    gone = _mark_gone(conn, table, now, workspace) if complete else 0
    return Saved(seen=replaced.new + replaced.changed + replaced.unchanged + replaced.foreign, new=replaced.new,
                 changed=replaced.changed, gone=gone)


def save_users(conn: Connection, listing: Listing[User], now: datetime, *,
               workspace: str = DEFAULT_WORKSPACE) -> Saved:
    """Store a listing of ``workspace``'s users; after a complete one, mark its users the listing no longer
    returns gone."""
    return _saved(conn, _USERS, _store(conn, _USERS, (), [user_tree(u) for u in listing.items], now, workspace),
                  listing.complete, now, workspace)


def save_lines(conn: Connection, listing: Listing[Line], now: datetime, *,
               workspace: str = DEFAULT_WORKSPACE) -> Saved:
    """Store a listing of lines with their members (a line whose listing did not say keeps its members)."""
    trees = [line_tree(line) for line in listing.items]
    with_members = _store(conn, _LINES, (_MEMBERS,), [t for t in trees if "phone_number_users" in t.children], now,
                          workspace)
    without = _store(conn, _LINES, (), [t for t in trees if "phone_number_users" not in t.children], now, workspace)
    both = Replaced(new=with_members.new + without.new, changed=with_members.changed + without.changed,
                    unchanged=with_members.unchanged + without.unchanged,
                    foreign=with_members.foreign + without.foreign)
    return _saved(conn, _LINES, both, listing.complete, now, workspace)


def save_contacts(conn: Connection, listing: Listing[Contact], now: datetime, *,
                  workspace: str = DEFAULT_WORKSPACE) -> Saved:
    """Store a listing of contacts (numbers, emails, custom fields replaced as a whole when changed)."""
    trees = [contact_tree(c) for c in listing.items]
    return _saved(conn, _CONTACTS, _store(conn, _CONTACTS, _CONTACT_CHILDREN, trees, now, workspace),
                  listing.complete, now, workspace)


def save_contact(conn: Connection, contact: Contact, now: datetime, *, workspace: str = DEFAULT_WORKSPACE) -> Saved:
    """Store one contact, as a ``contact.updated`` webhook sends it (never marks others gone)."""
    return save_contacts(conn, Listing(items=(contact,), complete=False, requests=0), now, workspace=workspace)


def mark_contact_deleted(conn: Connection, contact_id: str, at: datetime, *,
                         workspace: str = DEFAULT_WORKSPACE) -> bool:
    """Mark ``workspace``'s contact gone (``contact.deleted``): kept, with ``gone_reason = 'deleted'``.

    Returns False when no present contact of the workspace has that id (unknown, or already gone).
    """
    c = _CONTACTS.c
    result = conn.execute(sa.update(_CONTACTS)
                          .where(c.contact_id == contact_id, c.workspace == workspace, c.gone_at.is_(None))
                          .values(gone_at=at, gone_reason="deleted"))
    return bool(result.rowcount)


# --- dimension_refreshes -------------------------------------------------------------

def start_refresh(conn: Connection, resource: str, started_at: datetime, updated_since: datetime | None, *,
                  workspace: str = DEFAULT_WORKSPACE) -> int:
    """A new ``dimension_refreshes`` row of ``workspace`` (unfinished until :func:`finish_refresh`); its id."""
    result = conn.execute(sa.insert(_REFRESHES).values(resource=resource, started_at=started_at,
                                                       updated_since=updated_since, complete=False,
                                                       workspace=workspace))
    return int(result.inserted_primary_key[0])  # type: ignore[index]


def finish_refresh(conn: Connection, refresh_id: int, finished_at: datetime, *, requests: int,
                   saved: Saved | None, complete: bool, problem: str | None) -> None:
    conn.execute(sa.update(_REFRESHES).where(_REFRESHES.c.id == refresh_id).values(
        finished_at=finished_at, requests=requests, complete=complete,
        problem=None if problem is None else problem[:PROBLEM_LENGTH],
        rows_seen=saved.seen if saved else 0, rows_new=saved.new if saved else 0,
        rows_changed=saved.changed if saved else 0, rows_gone=saved.gone if saved else 0))


def last_refreshes(conn: Connection, resources: Iterable[str] = models.DIMENSION_RESOURCES, *,
                   workspace: str = DEFAULT_WORKSPACE) -> dict[str, dict[str, Any]]:
    """The newest finished refresh of each resource in ``workspace`` (as a dict of its columns), for status
    and scheduling."""
    found: dict[str, dict[str, Any]] = {}
    for resource in resources:
        row = conn.execute(sa.select(_REFRESHES).where(_REFRESHES.c.workspace == workspace,
                                                       _REFRESHES.c.resource == resource,
                                                       _REFRESHES.c.finished_at.is_not(None))
                           .order_by(_REFRESHES.c.id.desc()).limit(1)).first()
        if row is not None:
            found[resource] = dict(row._mapping)
    return found


def last_good_refresh(conn: Connection, resource: str, *, complete: bool | None = None,
                      workspace: str = DEFAULT_WORKSPACE) -> datetime | None:
    """``started_at`` of ``workspace``'s newest finished refresh of ``resource`` without a problem (complete
    ones only when ``complete``): what an incremental refresh asks changes since."""
    query = sa.select(sa.func.max(_REFRESHES.c.started_at)).where(
        _REFRESHES.c.workspace == workspace, _REFRESHES.c.resource == resource,
        _REFRESHES.c.finished_at.is_not(None), _REFRESHES.c.problem.is_(None))
    if complete:
        query = query.where(_REFRESHES.c.complete.is_(True))
    value = conn.execute(query).scalar()
    return value if isinstance(value, datetime) or value is None else datetime.fromisoformat(str(value))
