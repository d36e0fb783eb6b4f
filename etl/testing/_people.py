"""The simulated workspace's people: its users and its contacts (the people outside it).

``People`` (``workspace.people``) holds the users (``US…``) and contacts of a
simulated workspace.  Every user the workspace's lines and calls name exists
(``sync_users`` makes a record, deterministic from the id, for any not known
yet); the AI agent's system actor (``SYU…``) never has one, as in the API.
``generate`` (called by ``Workspace.generate``, which passes what its lines and
calls name) adds what a real workspace shows:
a user on a line who has no calls, contacts for most of the other parties'
numbers (some have none), one number on two contacts, a contact with two
numbers, emails, companies and custom fields of every type (address, boolean,
date, multi-select, number, string, url), and as many more users and contacts
as asked (benchmarks).  ``update_contact`` and ``delete_contact`` change them
as the app would (for ``contact.updated`` / ``contact.deleted`` deliveries).

Shapes: docs/api/dimensions.md (the v1 ``user`` and ``contact`` objects; the
dated surface shows the same objects).
"""

from __future__ import annotations

import datetime as dt
import threading
import unicodedata
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from typing import Any

from etl.testing._data import iso, make_id, rng_for

# The names of a workspace's lines, in the order lines are added (then "Line N").
LINE_NAMES = ("Sales", "Support", "Billing", "Front desk", "After hours")
CUSTOM_FIELD_TYPES = ("address", "boolean", "date", "multi-select", "number", "string", "url")
SYSTEM_ACTOR_PREFIX = "SYU"

_FIRST = ("Renee", "Marco", "Aisha", "Tomás", "Yuki", "Zoë", "Priya", "Liam", "Sofia", "Kwame", "José", "Ingrid",
          "Chen", "Fatima", "Oliver", "Amara")  # fmt: skip
_LAST = ("Ortiz", "Rossi", "Khan", "Núñez", "Tanaka", "Martin", "Sharma", "O'Neil", "Berg", "Mensah", "Dubois",
         "Li", "Haddad", "Smith")  # fmt: skip
_COMPANIES = ("Acme Corp", "Globex", "Initech", "Umbrella Health", "Müller & Söhne GmbH", "Pink's Windows", None)
_ROLES = ("Buyer", "CTO", "Office manager", "Owner", None)
_TIERS = ("Gold", "Silver", "Bronze")
_INTERESTS = ("SSO", "Reporting", "API", "Onboarding", "Billing")


def _slug(text: str) -> str:
    ascii_text = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode()
    return "".join(c for c in ascii_text.lower() if c.isalnum())


@dataclass
class User:
    """A person in the workspace."""

    id: str
    email: str
    first_name: str | None
    last_name: str | None
    role: str
    created_at: dt.datetime
    updated_at: dt.datetime
    group_id: str | None = None
    picture_url: str | None = None

    def to_json(self) -> dict[str, object]:
        """The user as ``GET /v1/users/{id}`` and ``GET /users/{id}`` show it."""
        return {
            "id": self.id,
            "email": self.email,
            "firstName": self.first_name,
            "lastName": self.last_name,
            "pictureUrl": self.picture_url,
            "role": self.role,
            "groupId": self.group_id,
            "createdAt": iso(self.created_at),
            "updatedAt": iso(self.updated_at),
        }

    def member_json(self) -> dict[str, object]:
        """The user as a line's ``users[]`` names them."""
        return {"id": self.id, "email": self.email, "firstName": self.first_name, "lastName": self.last_name,
                "role": self.role, "groupId": self.group_id}


@dataclass
class Contact:
    """A person outside the workspace; ``phone_numbers``/``emails`` are ``{name, value, id}`` items,
    ``custom_fields`` ``{name, key, id, type, value}`` items (multi-select values are lists)."""

    id: str
    first_name: str | None
    last_name: str | None
    company: str | None
    role: str | None
    phone_numbers: list[dict[str, object]]
    emails: list[dict[str, object]]
    custom_fields: list[dict[str, object]]
    created_at: dt.datetime
    updated_at: dt.datetime
    external_id: str | None = None
    source: str | None = None
    source_url: str | None = None
    created_by_user_id: str | None = None
    numbers: tuple[str, ...] = field(default=())  # the E.164 values, for lookups

    def to_json(self) -> dict[str, object]:
        """The contact as ``GET /v1/contacts/{id}`` shows it (and, here, the dated ``GET /contacts/{id}``)."""
        return {
            "id": self.id,
            "externalId": self.external_id,
            "source": self.source,
            "sourceUrl": self.source_url,
            "defaultFields": {
                "company": self.company,
                "emails": [dict(e) for e in self.emails],
                "firstName": self.first_name,
                "lastName": self.last_name,
                "phoneNumbers": [dict(p) for p in self.phone_numbers],
                "role": self.role,
            },
            "customFields": [dict(f) for f in self.custom_fields],
            "createdAt": iso(self.created_at),
            "updatedAt": iso(self.updated_at),
            "createdByUserId": self.created_by_user_id,
        }


def custom_fields(rng_seed: object, *, every_type: bool = False) -> list[dict[str, object]]:
    """Custom fields of a contact: all seven types when ``every_type``, else a random few."""
    rng = rng_for("custom-fields", rng_seed)
    values: dict[str, Any] = {
        "address": rng.choice(("1 Main St, Springfield", "Bahnhofstrasse 7, 8001 Zürich", "")),
        "boolean": rng.random() < 0.5,
        "date": iso(dt.datetime(2026, rng.randint(1, 12), rng.randint(1, 28), tzinfo=dt.UTC)),
        "multi-select": rng.sample(_INTERESTS, rng.randint(0, 3)),
        "number": rng.choice((42, 3.5, 0, 1200)),
        "string": rng.choice(_TIERS),
        "url": "https://crm.example.com/accounts/" + str(rng.randint(1000, 9999)),
    }
    names = {"address": "Address", "boolean": "VIP", "date": "Renewal date", "multi-select": "Interests",
             "number": "Seats", "string": "Tier", "url": "CRM link"}
    chosen = CUSTOM_FIELD_TYPES if every_type else rng.sample(CUSTOM_FIELD_TYPES, rng.randint(0, 3))
    return [{"name": names[t], "key": "cf_" + _slug(names[t]), "id": make_id("CF", t)[:14], "type": t,
             "value": values[t]} for t in CUSTOM_FIELD_TYPES if t in chosen]


class People:
    """Users and contacts of one simulated workspace (thread-safe: mutators take ``lock``)."""

    def __init__(self, seed: int, lock: threading.RLock) -> None:
        self.seed = seed
        self.lock = lock
        self.users: dict[str, User] = {}
        self.contacts: dict[str, Contact] = {}
        self.deleted_contacts: dict[str, Contact] = {}
        self._n = 0

    # -- users -------------------------------------------------------------------------

    def add_user(self, user_id: str | None = None, *, first_name: str | None = None, last_name: str | None = None,
                 role: str | None = None, email: str | None = None, at: dt.datetime | None = None) -> User:
        """A user (deterministic from its id and the seed where not given); an existing id is returned as is."""
        with self.lock:
            if user_id is not None and user_id in self.users:
                return self.users[user_id]  # counts nothing: ids stay independent of what was read
            self._n += 1
            uid = user_id or make_id("US", self.seed, "extra-user", self._n)[:12]
            rng = rng_for("user", uid)
            first = first_name if first_name is not None else rng.choice(_FIRST)
            last = last_name if last_name is not None else rng.choice(_LAST)
            created = (at or dt.datetime(2025, 1, 1, tzinfo=dt.UTC)) + dt.timedelta(days=rng.randint(0, 300))
            roles = ("owner", "admin")
            user = User(
                id=uid,
                email=email or f"{_slug(first)}.{_slug(last)}.{uid[2:6].lower()}@example.com",
                first_name=first,
                last_name=last,
                role=role or (roles[len(self.users)] if len(self.users) < len(roles) else "member"),
                created_at=created,
                updated_at=created + dt.timedelta(days=rng.randint(0, 30)),
                group_id=make_id("GR", self.seed, "group")[:12],
            )
            self.users[uid] = user
            return user

    def sync_users(self, named: Iterable[str]) -> None:
        """Give every user id in ``named`` (the workspace's lines and calls) a record, never a system actor."""
        with self.lock:
            for uid in dict.fromkeys(named):
                if uid not in self.users and not uid.startswith(SYSTEM_ACTOR_PREFIX):
                    self.add_user(uid)

    def user_list(self, named: Iterable[str]) -> list[User]:
        """Every user, in the order they were added (``named``, the lines' and calls' users, first)."""
        self.sync_users(named)
        with self.lock:
            return list(self.users.values())

    # -- contacts ----------------------------------------------------------------------

    def add_contact(self, numbers: Iterable[str], *, first_name: str | None = None, last_name: str | None = None,
                    company: str | None = None, emails: Iterable[str] | None = None,
                    fields: list[dict[str, object]] | None = None, source: str | None = None,
                    external_id: str | None = None, at: dt.datetime | None = None) -> Contact:
        """A contact holding ``numbers`` (E.164); names, company and emails drawn from the seed when not given."""
        with self.lock:
            self._n += 1
            n = self._n
            cid = make_id("CT", self.seed, "contact", n)[:26]
            rng = rng_for("contact", self.seed, n)
            first = first_name if first_name is not None else rng.choice(_FIRST)
            last = last_name if last_name is not None else rng.choice(_LAST)
            nums = tuple(numbers)
            if emails is None:
                count = rng.choice((0, 1, 1, 2))
                domains = ("example.org", "mail.example.net")
                emails = [f"{_slug(first)}.{_slug(last)}@{domains[i]}" for i in range(count)]
            created = (at or dt.datetime(2025, 6, 1, tzinfo=dt.UTC)) + dt.timedelta(hours=rng.randint(0, 4000))
            contact = Contact(
                id=cid,
                first_name=first,
                last_name=last,
                company=company if company is not None else rng.choice(_COMPANIES),
                role=rng.choice(_ROLES),
                phone_numbers=[{"name": ("mobile", "work")[i % 2], "value": v, "id": make_id("CP", cid, i)[:14]}
                               for i, v in enumerate(nums)],
                emails=[{"name": ("work", "home")[i % 2], "value": v, "id": make_id("CE", cid, i)[:14]}
                        for i, v in enumerate(emails)],
                custom_fields=fields if fields is not None else custom_fields(cid),
                created_at=created,
                updated_at=created + dt.timedelta(hours=rng.randint(0, 500)),
                external_id=external_id,
                source=source,
                source_url=f"https://crm.example.com/contacts/{external_id}" if external_id else None,
                created_by_user_id=next(iter(self.users), None),
                numbers=nums,
            )
            self.contacts[cid] = contact
            return contact

    def update_contact(self, contact_id: str, *, at: dt.datetime, **changes: Any) -> Contact:
        """Change a contact's fields (``company="…"``, ``first_name=…``, ``custom_fields=[…]``…) as the app
        would: ``updatedAt`` moves to ``at``.  KeyError for an unknown contact."""
        with self.lock:
            contact = replace(self.contacts[contact_id], **changes, updated_at=at)
            if "phone_numbers" in changes:
                contact.numbers = tuple(str(p["value"]) for p in contact.phone_numbers)
            self.contacts[contact_id] = contact
            return contact

    def delete_contact(self, contact_id: str) -> Contact:
        """Remove a contact (``GET`` answers 404 from now on); the contact as it was.  KeyError if unknown."""
        with self.lock:
            contact = self.contacts.pop(contact_id)
            self.deleted_contacts[contact_id] = contact
            return contact

    def contacts_of(self, number: str) -> list[Contact]:
        """The contacts holding ``number``, oldest first."""
        with self.lock:
            return [c for c in self.contacts.values() if number in c.numbers]

    # -- a realistic workspace ---------------------------------------------------------

    def generate(self, *, named: Iterable[str], first_line: list[str] | None, parties: Iterable[str],
                 users: int = 0, contacts: int = 0) -> None:
        """Users and contacts for a workspace (after its lines and calls): see the module docstring.

        ``named``: the user ids its lines and calls name; ``first_line``: the first line's member
        list (the user without calls joins it); ``parties``: the other parties' numbers, in order;
        ``users``/``contacts``: pad to this many in total (0: only what the workspace itself needs).
        """
        with self.lock:
            self.sync_users(named)
            quiet = self.add_user(make_id("US", self.seed, "no-calls")[:12], first_name="Nora",
                                  last_name="Newhire", role="member")
            if first_line is not None and quiet.id not in first_line:
                first_line.append(quiet.id)  # on a line, never its first user: no call is hers
            while len(self.users) < users:
                self.add_user()
            for i, number in enumerate(dict.fromkeys(p for p in parties if p.startswith("+"))):
                if i % 4 == 3:
                    continue  # a caller nobody saved
                if i == 0:
                    self.add_contact([number], fields=custom_fields(number, every_type=True))
                    # The same number saved again from a CRM: a number on two contacts.
                    self.add_contact([number], source="hubspot", external_id=f"hs-{i:04d}")
                elif i == 1:
                    self.add_contact([number, "+15550109999"], company="Acme Corp",
                                     emails=["buyer@acme.example.com", "ap@acme.example.com"])
                else:
                    self.add_contact([number])
            rng = rng_for("padding-contacts", self.seed)
            while len(self.contacts) < contacts:
                self.add_contact([f"+1555{rng.randint(2000000, 9999999)}"],
                                 source=rng.choice((None, "public-api", "salesforce")))
