"""Users, lines and contacts: the wire models (:mod:`etl.schema`) to the canonical types (:mod:`etl.dimensions`),
and one walk of a list's pages into a :class:`etl.dimensions.Listing`.

Both surfaces send the same objects but for a few names (v1 ``number`` and
``defaultFields``, dated ``phoneNumber`` and top-level names); each adapter
says which route and paginator, this module reads what comes back.

One bad record costs only itself (issue 25): a page's items are validated one
by one, an item its model refuses stays a :class:`~etl.storable.Malformed` in
its place and the listing carries it (``Listing.rejected``) beside the others;
timestamps stay as sent, for :mod:`etl.dimension_rows` to refuse one no
database holds, as a call's are.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import replace
from typing import Any, TypeVar

from etl.api._http import Parse
from etl.api._paging import CursorPages, PagingError, TokenPages
from etl.api._surface import items_of
from etl.dimensions import Contact, ContactField, ContactValue, Line, LineMember, Listing, User
from etl.ratelimit import NotSent
from etl.results import Page
from etl.schema import ContactData, ContactList, ContactValueData, LineData, LineList, UserData, UserList
from etl.storable import Malformed

T = TypeVar("T")


def user_of(data: UserData, raw: Any) -> User:
    return User(id=data.id, email=data.email, first_name=data.firstName, last_name=data.lastName, role=data.role,
                picture_url=data.pictureUrl, group_id=data.groupId, created_at=data.createdAt,
                updated_at=data.updatedAt, raw=raw)


def line_of(data: LineData, raw: Any) -> Line:
    members = None if data.users is None else tuple(
        LineMember(user_id=u.id, email=u.email, first_name=u.firstName, last_name=u.lastName, role=u.role)
        for u in data.users)
    return Line(id=data.id, name=data.name, number=data.number if data.number is not None else data.phoneNumber,
                formatted_number=data.formattedNumber, symbol=data.symbol, group_id=data.groupId,
                created_at=data.createdAt, updated_at=data.updatedAt, members=members, raw=raw)


def _values(values: list[ContactValueData] | None) -> tuple[ContactValue, ...]:
    return tuple(ContactValue(value=v.value, label=v.name, id=v.id) for v in values or ())


def contact_of(data: ContactData, raw: Any) -> Contact:
    names = data.defaultFields or data  # v1 nests the default fields, the dated surface does not
    return Contact(
        id=data.id, first_name=names.firstName, last_name=names.lastName, company=names.company, role=names.role,
        phone_numbers=_values(names.phoneNumbers), emails=_values(names.emails),
        custom_fields=tuple(ContactField(key=f.key, name=f.name, type=f.type, value=f.value, id=f.id)
                            for f in data.customFields or ()),
        external_id=data.externalId, source=data.source, source_url=data.sourceUrl,
        created_by_user_id=data.createdByUserId if data.createdByUserId is not None else data.actorId,
        created_at=data.createdAt, updated_at=data.updatedAt, raw=raw)


def page_of(model: type[UserList] | type[LineList] | type[ContactList], item: Callable[[Any, Any], T],
            next_of: Callable[[Any], str | None]) -> Parse[Page[T | Malformed]]:
    """A parser of one list page: each item mapped with its JSON (one its model refused stays a
    :class:`~etl.storable.Malformed` in its place), and the next token."""
    def parse(body: bytes) -> tuple[Page[T | Malformed], Any]:
        raw = json.loads(body)
        page = model.model_validate(raw)
        raws = items_of(raw)
        items = tuple(d if isinstance(d, Malformed) else item(d, r) for d, r in zip(page.data, raws, strict=False))
        return Page(items, tuple(raws), next_of(page)), raw

    return parse


def users_page(next_of: Callable[[Any], str | None]) -> Parse[Page[User | Malformed]]:
    return page_of(UserList, user_of, next_of)


def lines_page(next_of: Callable[[Any], str | None]) -> Parse[Page[Line | Malformed]]:
    return page_of(LineList, line_of, next_of)


def contacts_page(next_of: Callable[[Any], str | None]) -> Parse[Page[Contact | Malformed]]:
    return page_of(ContactList, contact_of, next_of)


def listing(pages: TokenPages[T | Malformed] | CursorPages[T | Malformed], endpoint: str, *,
            complete: bool = True) -> Listing[T]:
    """Every page of a list (from ``endpoint``, e.g. ``GET /v1/contacts``), as one :class:`Listing`: the
    records, and apart the items their model refused.  A listing that cannot go on comes back with what it
    has, not complete, and the problem in words (never an exception but :class:`etl.errors.AuthError`)."""
    items: list[T] = []
    rejected: list[Malformed] = []
    requests = 0

    def done(**fields: Any) -> Listing[T]:
        return Listing(items=tuple(items), requests=requests, rejected=tuple(rejected), endpoint=endpoint, **fields)

    try:
        for result, _last in pages:
            requests += result.tries
            assert result.data is not None
            for listed in result.data.items:
                if isinstance(listed, Malformed):
                    rejected.append(listed)
                else:
                    items.append(listed)
    except PagingError as exc:
        if exc.result is not None:
            requests += exc.result.tries
        return done(complete=False, problem=exc.message)
    except NotSent:
        return done(complete=False, problem=f"stopped before the last page of {pages.what}")
    return done(complete=complete)


def not_listable(found: Listing[T]) -> Listing[T]:
    """``found`` (a contacts listing that failed) as what it means: contacts cannot be listed here."""
    return replace(found, complete=False, problem=f"contacts cannot be listed on this workspace: {found.problem}")
