"""Issue 25's rule on users, lines and contacts (issue 24's dimensions), on every database: a bad record
costs only itself.

`etl discover` in a named workspace against the simulated API (both surfaces, the default throttled rate
on a :class:`FakeClock`), its listings rewritten on their way to the client (``tests/support/hostile.py``):
a contact its model refuses, a contact and a user with a date no database holds, a line its model refuses.
The others are stored, each bad one is kept in ``rejected_records`` (source ``discover``, the listing's
endpoint, its id, the reason) in the workspace, the refresh says how many and the run exits 1; the listing
stays complete, and a complete listing marks gone only what it did not list.  Then what the database
itself refuses (a 70,000-character ``sourceUrl``: too long for MariaDB's ``TEXT``) through the refresh's
record-by-record fallback.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from etl import Etl, status
from etl.dimensions import Contact, Listing, User
from etl.health import Limits
from etl.refresh import refresh
from etl.testing import FakeOpenPhone
from etl.testing.clock import FakeClock
from etl.workspaces import WorkspaceConfig
from tests.support.hostile import rewriting

KEYS = {"QUO_KEY_NORTH": "north-key-0123456789"}
DATED = "2026-03-30"
# The listings of users, lines and contacts on both surfaces (dated contacts come from GET /v1/contacts).
LISTINGS = {"/v1/users": "GET /v1/users", "/users": "GET /users", "/v1/phone-numbers": "GET /v1/phone-numbers",
            "/phone-numbers": "GET /phone-numbers", "/v1/contacts": "GET /v1/contacts"}
OVERFLOWS = "9999-12-31T23:59:59-12:00"  # a valid date that overflows when shifted to UTC


pytestmark = [pytest.mark.usefixtures("quiet_logs"), pytest.mark.clock_at_now]


def _north(db_url: str, engine: Engine, clock: FakeClock, api_version: str) -> Etl:
    # No rate given: the default (throttled) rate of the key, waiting on the fake clock.
    deployment = Etl(database_url=db_url, engine=engine, clock=clock,
                     workspaces=(WorkspaceConfig("north", api_key_env="QUO_KEY_NORTH", api_version=api_version),))
    return deployment.workspace("north", environ=KEYS)


def _fake(clock: FakeClock) -> FakeOpenPhone:
    fake = FakeOpenPhone(api_key=KEYS["QUO_KEY_NORTH"], seed=31, clock=clock)
    fake.workspace.generate(days=5, phone_numbers=2, conversations=3, calls=2)
    return fake


def poisoned(fake: FakeOpenPhone, edits: dict[str, dict[str, Any]],
             extra: dict[str, list[Any]] | None = None) -> httpx.MockTransport:
    """``fake``'s transport with each listed user, line or contact whose id is in ``edits`` sent with those
    keys replaced, and ``extra[path]`` items added to the first page of ``path``."""
    def rewrite(request: httpx.Request, body: bytes) -> bytes:
        path = request.url.path
        if path not in LISTINGS:
            return body
        doc = json.loads(body)
        doc["data"] = [dict(item, **edits.get(item.get("id"), {})) for item in doc["data"]]
        if not (request.url.params.get("pageToken") or request.url.params.get("after")):
            doc["data"] += (extra or {}).get(path, [])
        return json.dumps(doc).encode()
    return rewriting(fake, rewrite)


def rows(engine: Engine, sql: str) -> list[tuple[Any, ...]]:
    with engine.connect() as conn:
        return [tuple(r) for r in conn.execute(sa.text(sql))]


def rejected(engine: Engine) -> dict[str, tuple[Any, ...]]:
    """``record_id -> (workspace, source, endpoint, reason, payload id)`` of every rejected record."""
    found = rows(engine, "SELECT record_id, workspace, source, endpoint, reason, payload FROM rejected_records")
    return {r[0]: (*r[1:5], json.loads(r[5]).get("id")) for r in found}


def present(engine: Engine, table: str, key: str) -> set[str]:
    return {r[0] for r in rows(engine, f"SELECT {key} FROM {table} WHERE gone_at IS NULL")}


@pytest.mark.parametrize("api_version", ["v1", DATED])
def test_a_bad_user_line_or_contact_costs_only_itself(db_url: str, engine: Engine, clock: FakeClock,
                                                      api_version: str) -> None:
    fake = _fake(clock)
    people = fake.workspace.people
    north = _north(db_url, engine, clock, api_version)
    since = clock.utcnow() - timedelta(days=7)
    assert north.discover(since, transport=fake.transport()).exit_code == 0
    contacts, users = sorted(people.contacts), sorted(people.users)
    lines = sorted(fake.workspace.phone_numbers)
    assert (present(engine, "contacts", "contact_id"), present(engine, "users", "user_id")) == (set(contacts),
                                                                                                set(users))
    before = dict(rows(engine, "SELECT contact_id, created_at FROM contacts"))

    # An hour later: one contact malformed, one with a date no database holds, a user from year 1, a line
    # malformed; meanwhile one contact is renamed and one deleted in the app.
    clock.advance(3600)
    malformed, overflowing, renamed, deleted = contacts[:4]
    people.update_contact(renamed, at=clock.utcnow().replace(tzinfo=UTC), company="Renamed Ltd")
    people.delete_contact(deleted)
    edits = {malformed: {"customFields": 7}, overflowing: {"createdAt": OVERFLOWS},
             users[0]: {"updatedAt": "0001-01-01T00:00:00Z"}, lines[0]: {"users": "everyone"}}
    stats = north.discover(transport=poisoned(fake, edits), refresh_contacts=True)

    assert (stats.errors, stats.rejected, stats.exit_code) == (0, 0, 1)  # no call rejected; 4 records: exit 1
    assert stats.refresh is not None and stats.refresh.rejected == 4
    contact_requests = "1 request" if api_version == "v1" else "2 requests"  # dated: GET /contacts 404 first
    assert [r.text() for r in stats.refresh.done] == [
        f"users {len(users) - 1} (1 request, 1 rejected)", f"lines {len(lines) - 1} (1 request, 1 rejected)",
        f"contacts {len(contacts) - 3} ({contact_requests}, 1 changed, 1 gone, 2 rejected)"]
    users_at, lines_at, contacts_at = (LISTINGS["/v1/users" if api_version == "v1" else "/users"],
                                       LISTINGS["/v1/phone-numbers" if api_version == "v1" else "/phone-numbers"],
                                       "GET /v1/contacts")
    assert rejected(engine) == {
        malformed: ("north", "discover", contacts_at, "customFields: Input should be a valid list", malformed),
        overflowing: ("north", "discover", contacts_at, f"createdAt: {OVERFLOWS} cannot be shifted to UTC",
                      overflowing),
        users[0]: ("north", "discover", users_at, "updatedAt: 0001-01-01T00:00:00+00:00 is outside 1970-2199",
                   users[0]),
        lines[0]: ("north", "discover", lines_at, "users: Input should be a valid list", lines[0]),
    }
    # The others stored (the renamed one changed), only the deleted one gone: a rejected record was listed.
    assert rows(engine, f"SELECT company FROM contacts WHERE contact_id = '{renamed}'") == [("Renamed Ltd",)]
    assert present(engine, "contacts", "contact_id") == set(contacts) - {deleted}
    assert present(engine, "users", "user_id") == set(users)
    assert present(engine, "phone_numbers", "phone_number_id") == set(lines)
    # A rejected record's stored row is as it was: never overwritten with what could not be stored.
    assert dict(rows(engine, "SELECT contact_id, created_at FROM contacts"))[overflowing] == before[overflowing]
    # Each listing stayed complete and without a problem; the workspace's status counts the rejects.
    assert rows(engine, "SELECT resource, complete, problem FROM dimension_refreshes WHERE workspace = 'north' "
                        "ORDER BY id")[-3:] == [("users", True, None), ("lines", True, None),
                                                ("contacts", True, None)]
    with engine.connect() as conn:
        found = status.gather(conn, db_url, clock.utcnow(), Limits(), workspace="north")
    assert found.rejected == 4
    assert "Rejected records: 4 (API records that could not be stored" in found.text()

    # Fixed in the API: the next run stores them all and rejects nothing more (the kept rows stay, as calls').
    clock.advance(3600)
    again = north.discover(transport=fake.transport(), refresh_contacts=True)
    assert (again.exit_code, again.refresh and again.refresh.rejected) == (0, 0)
    assert dict(rows(engine, "SELECT contact_id, created_at FROM contacts"))[overflowing] == before[overflowing]


def test_a_rejected_record_without_an_id_makes_nothing_gone(db_url: str, engine: Engine, clock: FakeClock) -> None:
    fake = _fake(clock)
    north = _north(db_url, engine, clock, "v1")
    assert north.discover(clock.utcnow() - timedelta(days=7), transport=fake.transport()).exit_code == 0
    deleted = sorted(fake.workspace.people.contacts)[0]
    fake.workspace.people.delete_contact(deleted)
    clock.advance(3600)
    no_id = {"defaultFields": {"firstName": "No id"}, "createdAt": "2026-01-01T00:00:00Z"}
    stats = north.discover(transport=poisoned(fake, {}, {"/v1/contacts": [no_id]}), refresh_contacts=True)
    assert stats.exit_code == 1
    # The record without an id could be the deleted contact: nothing is marked gone on its word.
    assert deleted in present(engine, "contacts", "contact_id")
    assert rejected(engine) == {"": ("north", "discover", "GET /v1/contacts", "id: Field required", None)}
    assert rows(engine, "SELECT complete, rows_gone FROM dimension_refreshes WHERE resource = 'contacts' "
                        "ORDER BY id")[-1] == (True, 0)
    clock.advance(3600)
    north.discover(transport=fake.transport(), refresh_contacts=True)  # listed whole again: now it is gone
    assert rows(engine, f"SELECT gone_reason FROM contacts WHERE contact_id = '{deleted}'") == [("unlisted",)]


class Source:
    """A DimensionSource with a listing per resource (no contacts here)."""

    def __init__(self, users: Listing[User], contacts: Listing[Contact]) -> None:
        self.users, self.contacts = users, contacts

    def list_users(self) -> Listing[User]:
        return self.users

    def list_lines(self) -> Listing[Any]:
        return Listing(items=(), complete=False, requests=1, endpoint="GET /v1/phone-numbers")

    def list_contacts(self, *, updated_since: datetime | None = None) -> Listing[Contact]:
        return self.contacts


def test_what_the_database_refuses_is_found_record_by_record(engine: Engine, clock: FakeClock) -> None:
    long_url = "https://crm.example.com/" + "x" * 70_000  # MariaDB's TEXT holds 65,535 bytes
    contacts = tuple(Contact(id=f"CT{i}", first_name=f"P{i}", source_url=long_url if i == 1 else None,
                             raw={"id": f"CT{i}"}) for i in range(3))
    users = (User(id="USa", email=None, first_name="A", last_name=None, role="member",
                  picture_url=long_url, raw={"id": "USa"}),
             User(id="USb", email=None, first_name="B", last_name=None, role="member"))
    source = Source(Listing(items=users, complete=True, requests=1, endpoint="GET /v1/users"),
                    Listing(items=contacts, complete=True, requests=1, endpoint="GET /v1/contacts"))
    done = refresh(engine, source, clock=clock, workspace="north", caller="discover")
    stored = (present(engine, "contacts", "contact_id"), present(engine, "users", "user_id"))
    if engine.dialect.name == "mysql":
        assert done.rejected == 2
        assert stored == ({"CT0", "CT2"}, {"USb"})
        kept = rejected(engine)
        assert set(kept) == {"CT1", "USa"}
        assert kept["CT1"][:3] == ("north", "discover", "GET /v1/contacts")
        assert kept["CT1"][3].startswith("the database refused it: DataError: (1406, \"Data too long for column "
                                         "'source_url'")
        assert kept["CT1"][4] == "CT1"  # the payload: the record as received
    else:  # SQLite and PostgreSQL hold it whole
        assert done.rejected == 0
        assert stored == ({"CT0", "CT1", "CT2"}, {"USa", "USb"})
        assert rows(engine, "SELECT LENGTH(source_url) FROM contacts WHERE contact_id = 'CT1'") == [(len(long_url),)]
    # Either way the refresh finished every resource (no unfinished record, no crash).
    assert rows(engine, "SELECT COUNT(*) FROM dimension_refreshes WHERE finished_at IS NULL") == [(0,)]
