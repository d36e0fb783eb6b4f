"""Users, lines and contacts as the job understands them, whichever API surface served them.

The canonical (surface-free) types of the workspace's "dimensions": the people
in it (:class:`User`), its own phone numbers with who is on each (:class:`Line`)
and the people outside it (:class:`Contact`).  Each surface's adapter maps its
wire models to these; the store and the views see only these.  A listing of
many pages comes back as one :class:`Listing`, which says whether it is the
whole set (so rows it no longer returns may be marked gone) and what it cost.

Timestamps are as sent (aware, or naive UTC): :mod:`etl.dimension_rows` makes
them naive UTC, or refuses a record whose date no database holds, as calls'
are (issue 25).  ``raw`` is the JSON object as received (kept so that no
information the API sent is lost).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any, Generic, Protocol, TypeVar

from etl.storable import Malformed

T = TypeVar("T")


@dataclass(frozen=True, slots=True, kw_only=True)
class User:
    """A person in the workspace (``US…``)."""

    id: str
    email: str | None
    first_name: str | None
    last_name: str | None
    role: str | None  # owner | admin | member; others kept as sent
    picture_url: str | None = None
    group_id: str | None = None
    created_at: datetime | None = None
    updated_at: datetime | None = None
    raw: Any = None


@dataclass(frozen=True, slots=True, kw_only=True)
class LineMember:
    """A user on a line, as the line's listing names them (assignment carries no timestamp)."""

    user_id: str
    email: str | None = None
    first_name: str | None = None
    last_name: str | None = None
    role: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class Line:
    """One of the workspace's own phone numbers (``PN…``), e.g. "Sales"."""

    id: str
    name: str | None
    number: str | None  # E.164 (v1 ``number``, dated ``phoneNumber``)
    formatted_number: str | None = None
    symbol: str | None = None
    group_id: str | None = None
    created_at: datetime | None = None
    updated_at: datetime | None = None
    members: tuple[LineMember, ...] | None = None  # None: the answer did not say who is on it
    raw: Any = None


@dataclass(frozen=True, slots=True, kw_only=True)
class ContactValue:
    """One phone number or email of a contact: ``label`` is the API's ``name`` ("mobile", "work")."""

    value: str
    label: str | None = None
    id: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class ContactField:
    """A custom field: ``type`` as the API names it (address, boolean, date, multi-select, number,
    string, url, or another kept as sent); ``value`` as received (a list for multi-select)."""

    key: str | None
    name: str | None
    type: str | None
    value: Any
    id: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class Contact:
    """A person outside the workspace."""

    id: str
    first_name: str | None = None
    last_name: str | None = None
    company: str | None = None
    role: str | None = None
    phone_numbers: tuple[ContactValue, ...] = ()
    emails: tuple[ContactValue, ...] = ()
    custom_fields: tuple[ContactField, ...] = ()
    external_id: str | None = None
    source: str | None = None
    source_url: str | None = None
    created_by_user_id: str | None = None
    created_at: datetime | None = None
    updated_at: datetime | None = None
    raw: Any = None


@dataclass(frozen=True, slots=True, kw_only=True)
class Listing(Generic[T]):
    """What one walk of a list endpoint brought, over all its pages.

    ``complete``: the whole set as of now (rows not in it may be marked gone);
    False when the walk stopped early or asked only for what changed.
    ``requests``: what it cost against the key's budget.  ``problem``: why it
    is not complete or not available (None when it is), in words for a log line.
    ``rejected``: the items its model refused, each in place of one record (issue
    25: a bad record costs only itself; the store keeps them in ``rejected_records``).
    ``endpoint``: the request it came from, e.g. ``GET /v1/contacts`` (where a
    rejected record came from).
    """

    items: tuple[T, ...]
    complete: bool
    requests: int
    problem: str | None = None
    rejected: tuple[Malformed, ...] = ()
    endpoint: str = ""


class DimensionSource(Protocol):
    """Where users, lines and contacts come from: the API client, through its surface's adapter."""

    def list_users(self) -> Listing[User]:
        """Every user of the workspace."""
        ...

    def list_lines(self) -> Listing[Line]:
        """Every line of the workspace, with its members."""
        ...

    def list_contacts(self, *, updated_since: datetime | None = None) -> Listing[Contact]:
        """Every contact, or (where the surface can) those updated since a time (then not ``complete``)."""
        ...
