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

A bad record costs only itself (issue 25): an item the listing's model refused
(``Listing.rejected``), a record with a date no database holds
(:class:`etl.storable.Refused`) and, written record by record after the
listing failed as a whole (``one_by_one``), a record the database refuses are
kept in ``rejected_records`` (``source``, the listing's endpoint, the record's
id, the reason) in the same transaction, and the others are stored.  A
complete listing still marks gone only what it did not list: a rejected record
with an id counts as seen (its stored row stays), and one without an id, which
could be any row, makes that listing mark nothing gone.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, cast

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from etl import models
from etl.config import DEFAULT_WORKSPACE
from etl.dimension_rows import Tree, contact_tree, line_tree, raw_json, user_tree
from etl.dimensions import Contact, Line, Listing, User
from etl.models import API_ID_LENGTH
from etl.storable import Refused, clean_text
from etl.store._sql import Replaced, replace_changed
from etl.store._sql import Tree as SqlTree
from etl.store.fallback import each_storable
from etl.store.rejected import Rejected, record_rejected

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
    rejected: tuple[Rejected, ...] = ()  # records kept in rejected_records instead (issue 25)

    @property
    def unnamed(self) -> int:
        """Rejected records without an id: any stored row could be one, so none was marked gone."""
        return sum(1 for r in self.rejected if not r.record_id)


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


def _sum(parts: Iterable[Replaced]) -> Replaced:
    new = changed = unchanged = foreign = 0
    for p in parts:
        new, changed, unchanged, foreign = (new + p.new, changed + p.changed, unchanged + p.unchanged,
                                            foreign + p.foreign)
    return Replaced(new=new, changed=changed, unchanged=unchanged, foreign=foreign)


def _record_id(raw: Any) -> str:
    """The id a refused item was sent with; ``''`` when it has none that could name a row."""
    value = raw.get("id") if isinstance(raw, dict) else None
    return value if isinstance(value, str) else ""


def _payload(record: Any) -> Any:
    """A record as received (its JSON), or its modelled fields when the adapter kept none."""
    if record.raw is not None:
        return record.raw
    return json.loads(raw_json(dataclasses.asdict(record)))


def _trees(listing: Listing[Any], tree_of: Callable[[Any], Tree], source: str) -> tuple[list[Tree], list[Rejected]]:
    """The listing's rows, and apart what cannot be stored: the items its model refused and the records
    with a date no database holds."""
    rejected = [Rejected(source, listing.endpoint, _record_id(m.raw), m.reason, m.raw) for m in listing.rejected]
    trees: list[Tree] = []
    for record in listing.items:
        try:
            trees.append(tree_of(record))
        except Refused as exc:
            rejected.append(Rejected(source, listing.endpoint, record.id, str(exc), _payload(record)))
    return trees, rejected


def _children(tree: Tree, tables: Sequence[sa.Table]) -> tuple[sa.Table, ...]:
    """The child tables ``tree`` replaces (a line whose listing did not say who is on it keeps its members)."""
    return tuple(t for t in tables if t.name in tree.children)


def _mark_gone(conn: Connection, table: sa.Table, now: datetime, workspace: str) -> int:
    """Mark every present row of ``workspace`` not seen at ``now`` (the listing's time) gone; returns how many."""
    values: dict[str, Any] = {"gone_at": now}
    if "gone_reason" in table.c:
        values["gone_reason"] = "unlisted"
    result = conn.execute(sa.update(table).where(table.c.workspace == workspace, table.c.gone_at.is_(None),
                                                 table.c.last_seen_at < now)
                          .values(values))
    return result.rowcount or 0


def _seen(conn: Connection, table: sa.Table, keys: Iterable[str], now: datetime, workspace: str) -> None:
    """The present rows of ``keys`` (records listed but rejected) count as seen at ``now``: not gone."""
    key = table.c[_key_of(table)]
    ordered = sorted(keys)
    for start in range(0, len(ordered), SAVE_CHUNK):
        conn.execute(sa.update(table).where(table.c.workspace == workspace, table.c.gone_at.is_(None),
                                            key.in_(ordered[start:start + SAVE_CHUNK])).values(last_seen_at=now))


def _save(conn: Connection, parent: sa.Table, children: Sequence[sa.Table], listing: Listing[Any],
          tree_of: Callable[[Any], Tree], now: datetime, *, workspace: str, source: str, one_by_one: bool) -> Saved:
    """Store ``listing``'s records (in bulk; ``one_by_one``: each in a savepoint, those the database refuses
    rejected), keep the rejected ones, and after a complete listing mark what it did not list gone."""
    trees, rejected = _trees(listing, tree_of, source)
    if one_by_one:
        parts: list[Replaced] = []

        def write(c: Connection, tree: Tree) -> None:
            parts.append(_store(c, parent, _children(tree, children), [tree], now, workspace))

        _, refused = each_storable(conn, trees, write)
        rejected += [Rejected(source, listing.endpoint, t.key, f"the database refused it: {why}",
                              json.loads(t.parent["raw_json"])) for t, why in refused]
        done = _sum(parts)
    else:
        groups: dict[tuple[sa.Table, ...], list[Tree]] = {}
        for tree in trees:
            groups.setdefault(_children(tree, children), []).append(tree)
        done = _sum(_store(conn, parent, tables, group, now, workspace) for tables, group in groups.items())
    for r in rejected:
        record_rejected(conn, r, now, workspace=workspace)
    gone = 0
    if listing.complete and all(r.record_id for r in rejected):
        _seen(conn, parent, {clean_text(r.record_id)[:API_ID_LENGTH] for r in rejected}, now, workspace)
        gone = _mark_gone(conn, parent, now, workspace)
    return Saved(seen=done.new + done.changed + done.unchanged + done.foreign, new=done.new, changed=done.changed,
                 gone=gone, rejected=tuple(rejected))


def save_users(conn: Connection, listing: Listing[User], now: datetime, *, workspace: str = DEFAULT_WORKSPACE,
               source: str = "discover", one_by_one: bool = False) -> Saved:
    """Store a listing of ``workspace``'s users; after a complete one, mark its users the listing no longer
    returns gone.  ``source``: what met the records (``rejected_records.source``)."""
    return _save(conn, _USERS, (), listing, user_tree, now, workspace=workspace, source=source,
                 one_by_one=one_by_one)


def save_lines(conn: Connection, listing: Listing[Line], now: datetime, *, workspace: str = DEFAULT_WORKSPACE,
               source: str = "discover", one_by_one: bool = False) -> Saved:
    """Store a listing of lines with their members (a line whose listing did not say keeps its members)."""
    return _save(conn, _LINES, (_MEMBERS,), listing, line_tree, now, workspace=workspace, source=source,
                 one_by_one=one_by_one)


def save_contacts(conn: Connection, listing: Listing[Contact], now: datetime, *,
                  workspace: str = DEFAULT_WORKSPACE, source: str = "discover", one_by_one: bool = False) -> Saved:
    """Store a listing of contacts (numbers, emails, custom fields replaced as a whole when changed)."""
    return _save(conn, _CONTACTS, _CONTACT_CHILDREN, listing, contact_tree, now, workspace=workspace,
                 source=source, one_by_one=one_by_one)


def save_contact(conn: Connection, contact: Contact, now: datetime, *, workspace: str = DEFAULT_WORKSPACE,
                 source: str = "serve", endpoint: str = "webhook contact.updated") -> Saved:
    """Store one contact, as a ``contact.updated`` webhook sends it (never marks others gone); one with a date
    no database holds is kept in ``rejected_records`` instead (``Saved.rejected``)."""
    return save_contacts(conn, Listing(items=(contact,), complete=False, requests=0, endpoint=endpoint), now,
                         workspace=workspace, source=source)


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
