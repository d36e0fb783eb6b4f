"""Users, lines and contacts stored, refreshed and marked gone, on every database.

The store (:mod:`etl.store.dimensions`) against real SQLite, PostgreSQL and
MariaDB, and the refresh schedule (:mod:`etl.refresh`) over a small in-test
:class:`~etl.dimensions.DimensionSource` with a :class:`FakeClock`.  End-to-end
tests through the simulator come with the API client's listings.
"""

from __future__ import annotations

import json
import re
from datetime import datetime, timedelta
from typing import Any

import pytest
from sqlalchemy.engine import Engine

from etl import status
from etl.dimensions import Contact, ContactField, ContactValue, Line, LineMember, Listing, User
from etl.errors import AuthError
from etl.health import Limits
from etl.logs import configure_logging
from etl.refresh import FULL_EVERY, OVERLAP, RefreshOptions, refresh
from etl.store import dimensions as store
from etl.testing.clock import FakeClock
from tests.support.db import raw_rows

T0 = datetime(2026, 12, 1, 9, 0, 0)


@pytest.fixture(autouse=True)
def _fresh_logging() -> None:
    # A test that captured the log (capsys) leaves structlog writing to its closed stream.
    configure_logging("json", "info")


def user(uid: str, first: str | None, last: str | None = None, email: str | None = None, **kw: Any) -> User:
    return User(id=uid, email=email, first_name=first, last_name=last, role=kw.pop("role", "member"),
                raw={"id": uid, "firstName": first, "lastName": last, "email": email, **kw}, **kw)


def line(pid: str, name: str, number: str, members: tuple[str, ...] | None) -> Line:
    return Line(id=pid, name=name, number=number,
                members=None if members is None else tuple(LineMember(user_id=m, role="member") for m in members))


def contact(cid: str, first: str | None, *numbers: str, company: str | None = None,
            updated: datetime | None = None, fields: tuple[ContactField, ...] = (),
            emails: tuple[str, ...] = ()) -> Contact:
    return Contact(id=cid, first_name=first, company=company, updated_at=updated,
                   phone_numbers=tuple(ContactValue(value=n, label="mobile") for n in numbers),
                   emails=tuple(ContactValue(value=e, label="work") for e in emails), custom_fields=fields)


def listing(*items: Any, complete: bool = True, requests: int = 1, problem: str | None = None) -> Listing[Any]:
    return Listing(items=tuple(items), complete=complete, requests=requests, problem=problem)


def save(engine: Engine, fn: Any, items: Listing[Any], now: datetime) -> store.Saved:
    with engine.begin() as conn:
        saved: store.Saved = fn(conn, items, now)
        return saved


_STAMP = re.compile(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d(\.\d+)?")


def _second(value: Any) -> Any:
    """A timestamp as ``YYYY-MM-DD HH:MM:SS`` whichever way the driver returned it (SQLite: text)."""
    if isinstance(value, datetime) or (isinstance(value, str) and _STAMP.fullmatch(value)):
        return str(value)[:19]
    return value


def rows(engine: Engine, sql: str) -> list[tuple[Any, ...]]:
    return [tuple(_second(v) for v in r) for r in raw_rows(engine, sql)]


# --- the store -----------------------------------------------------------------------

def test_users_are_upserted_kept_when_gone_and_back_when_listed_again(engine):
    first = save(engine, store.save_users, listing(user("USa", "Alice", "Ng", "a@x.com"), user("USb", "Bob")), T0)
    assert (first.seen, first.new, first.changed, first.gone) == (2, 2, 0, 0)
    t1 = T0 + timedelta(hours=1)
    again = save(engine, store.save_users, listing(user("USa", "Alice", "Ng", "a@x.com")), t1)
    assert (again.seen, again.new, again.changed, again.gone) == (1, 0, 0, 1)
    assert rows(engine, "SELECT user_id, name, email, first_seen_at, last_seen_at, gone_at FROM users "
                        "ORDER BY user_id") == [
        ("USa", "Alice Ng", "a@x.com", "2026-12-01 09:00:00", "2026-12-01 10:00:00", None),
        ("USb", "Bob", None, "2026-12-01 09:00:00", "2026-12-01 09:00:00", "2026-12-01 10:00:00"),
    ]
    # An incomplete listing marks nothing gone; a user listed again is present again, renamed.
    t2 = T0 + timedelta(hours=2)
    back = save(engine, store.save_users, listing(user("USb", "Robert"), complete=False), t2)
    assert (back.new, back.changed, back.gone) == (0, 1, 0)
    assert rows(engine, "SELECT user_id, name, gone_at FROM users ORDER BY user_id") == [
        ("USa", "Alice Ng", None), ("USb", "Robert", None)]
    raw = json.loads(raw_rows(engine, "SELECT raw_json FROM users WHERE user_id = 'USb'")[0][0])
    assert raw["firstName"] == "Robert"


def test_line_members_are_replaced_as_a_whole_and_kept_when_a_listing_does_not_say(engine):
    save(engine, store.save_lines, listing(line("PNs", "Sales", "+15550000001", ("USa", "USb")),
                                           line("PNh", "Support", "+15550000002", ("USb",))), T0)
    t1 = T0 + timedelta(minutes=1)
    saved = save(engine, store.save_lines, listing(line("PNs", "Sales", "+15550000001", ("USc", "USa", "USc")),
                                                   line("PNh", "Help desk", "+15550000002", None)), t1)
    assert (saved.seen, saved.new, saved.changed, saved.gone) == (2, 0, 2, 0)
    assert rows(engine, "SELECT phone_number_id, name, number FROM phone_numbers ORDER BY phone_number_id") == [
        ("PNh", "Help desk", "+15550000002"), ("PNs", "Sales", "+15550000001")]
    assert rows(engine, "SELECT phone_number_id, user_id, position FROM phone_number_users "
                        "ORDER BY phone_number_id, position") == [
        ("PNh", "USb", 0), ("PNs", "USc", 0), ("PNs", "USa", 1)]


def test_contacts_store_numbers_emails_and_typed_custom_fields(engine):
    fields = (
        ContactField(key="plan", name="Plan", type="string", value="Pro"),
        ContactField(key="seats", name="Seats", type="number", value=12),
        ContactField(key="vip", name="VIP", type="boolean", value=True),
        ContactField(key="tags", name="Interests", type="multi-select", value=["Solar", "Batteries"]),
        ContactField(key="none", name="Nothing picked", type="multi-select", value=[]),
        ContactField(key="addr", name="Address", type="address", value={"city": "Lyon"}),
        ContactField(key="since", name="Customer since", type="date", value="2025-01-02"),
        ContactField(key="blank", name="Blank", type="string", value=None),
    )
    c = contact("CT1", "Dana", "+1 (555) 010-0000", "555.010.0001 x12", "0044 20 7946 0000", "call me",
                company="Acme", fields=fields, emails=("d@acme.com",))
    saved = save(engine, store.save_contacts, listing(c), T0)
    assert (saved.seen, saved.new) == (1, 1)
    assert rows(engine, "SELECT position, value, number_e164 FROM contact_phone_numbers ORDER BY position") == [
        (0, "+1 (555) 010-0000", "+15550100000"), (1, "555.010.0001 x12", "+15550100001"),
        (2, "0044 20 7946 0000", "+442079460000"), (3, "call me", None)]
    assert rows(engine, "SELECT value FROM contact_emails") == [("d@acme.com",)]
    got = raw_rows(engine, "SELECT field_position, value_position, name, field_type, value_type, value_text, "
                           "value_number, value_boolean FROM contact_custom_fields "
                           "ORDER BY field_position, value_position")
    assert [(*r[:7], None if r[7] is None else bool(r[7])) for r in got] == [
        (0, 0, "Plan", "string", "string", "Pro", None, None),
        (1, 0, "Seats", "number", "number", None, 12.0, None),
        (2, 0, "VIP", "boolean", "boolean", None, None, True),
        (3, 0, "Interests", "multi-select", "string", "Solar", None, None),
        (3, 1, "Interests", "multi-select", "string", "Batteries", None, None),
        (4, 0, "Nothing picked", "multi-select", "null", None, None, None),
        (5, 0, "Address", "address", "json", '{"city":"Lyon"}', None, None),
        (6, 0, "Customer since", "date", "string", "2025-01-02", None, None),
        (7, 0, "Blank", "string", "null", None, None, None),
    ]
    # Changed children are replaced as a whole: one number left, no fields.
    t1 = T0 + timedelta(minutes=1)
    again = save(engine, store.save_contacts, listing(contact("CT1", "Dana", "+15550100009")), t1)
    assert (again.changed, again.new) == (1, 0)
    assert rows(engine, "SELECT position, number_e164 FROM contact_phone_numbers") == [(0, "+15550100009")]
    assert rows(engine, "SELECT COUNT(*) FROM contact_custom_fields") == [(0,)]
    assert rows(engine, "SELECT first_seen_at, last_seen_at FROM contacts") == [
        ("2026-12-01 09:00:00", "2026-12-01 09:01:00")]


def test_hostile_text_is_stored_cleaned_and_raw_json_keeps_it(engine):
    huge = "Z" * 100_000
    c = Contact(id="CTbad", first_name="A\x00B", last_name="\ud800x", company=huge,
                phone_numbers=(ContactValue(value="+1555\x000100000"),),
                raw={"id": "CTbad", "firstName": "A\x00B", "lastName": "\ud800x"})
    save(engine, store.save_contacts, listing(c), T0)
    name, company, raw = raw_rows(engine, "SELECT name, company, raw_json FROM contacts")[0]
    assert (name, len(company)) == ("A\ufffdB \ufffdx", 100_000)
    assert json.loads(raw)["lastName"] == "\ud800x"  # the lone surrogate kept as its JSON escape
    assert rows(engine, "SELECT value, number_e164 FROM contact_phone_numbers") == [("+1555\ufffd0100000", None)]


def test_contact_webhooks_update_one_contact_and_mark_a_deleted_one(engine):
    save(engine, store.save_contacts, listing(contact("CT1", "Dana"), contact("CT2", "Eve")), T0)
    t1 = T0 + timedelta(minutes=5)
    with engine.begin() as conn:
        store.save_contact(conn, contact("CT1", "Dana", company="Acme"), t1)
        assert store.mark_contact_deleted(conn, "CT2", t1) is True
        assert store.mark_contact_deleted(conn, "CT2", t1) is False  # already gone
        assert store.mark_contact_deleted(conn, "CTnone", t1) is False
    assert rows(engine, "SELECT contact_id, company, gone_at, gone_reason FROM contacts ORDER BY contact_id") == [
        ("CT1", "Acme", None, None), ("CT2", None, "2026-12-01 09:05:00", "deleted")]
    # A later complete listing without CT1 marks it gone as unlisted; CT2 keeps its reason.
    save(engine, store.save_contacts, listing(), T0 + timedelta(hours=1))
    assert rows(engine, "SELECT contact_id, gone_reason FROM contacts ORDER BY contact_id") == [
        ("CT1", "unlisted"), ("CT2", "deleted")]


def test_five_thousand_contacts_are_saved_in_chunks_and_resaved_untouched(engine):
    many = [contact(f"CT{i:05d}", f"P{i}", f"+1555{i:07d}", emails=(f"p{i}@x.com",),
                    fields=(ContactField(key="k", name="Tier", type="string", value="gold"),)) for i in range(5000)]
    first = save(engine, store.save_contacts, listing(*many, requests=100), T0)
    assert (first.seen, first.new) == (5000, 5000)
    again = save(engine, store.save_contacts, listing(*many, requests=100), T0 + timedelta(hours=1))
    assert (again.new, again.changed, again.gone) == (0, 0, 0)
    assert rows(engine, "SELECT COUNT(*), MIN(last_seen_at) FROM contacts") == [(5000, "2026-12-01 10:00:00")]
    assert rows(engine, "SELECT COUNT(*) FROM contact_phone_numbers WHERE number_e164 IS NOT NULL") == [(5000,)]


# --- the refresh schedule ------------------------------------------------------------

class Source:
    """A DimensionSource whose listings a test sets, recording how it was asked."""

    def __init__(self) -> None:
        self.users: Listing[User] = listing(user("USa", "Alice"), requests=1)
        self.lines: Listing[Line] = listing(line("PNs", "Sales", "+15550000001", ("USa",)), requests=1)
        self.contacts: Listing[Contact] | Exception = listing(contact("CT1", "Dana", "+15550100000"), requests=3)
        self.contact_calls: list[datetime | None] = []

    def list_users(self) -> Listing[User]:
        return self.users

    def list_lines(self) -> Listing[Line]:
        return self.lines

    def list_contacts(self, *, updated_since: datetime | None = None) -> Listing[Contact]:
        self.contact_calls.append(updated_since)
        if isinstance(self.contacts, Exception):
            raise self.contacts
        return self.contacts


def refreshes(engine: Engine) -> list[tuple[Any, ...]]:
    return rows(engine, "SELECT resource, started_at, updated_since, requests, rows_seen, rows_new, rows_changed, "
                        "rows_gone, problem FROM dimension_refreshes ORDER BY id")


def test_users_and_lines_every_run_contacts_when_due_then_incrementally(engine):
    clock, source = FakeClock(T0), Source()
    first = refresh(engine, source, RefreshOptions(), clock=clock)
    assert first.requests == 5
    assert first.text() == ("users 1 (1 request, 1 new); lines 1 (1 request, 1 new); "
                            "contacts 1 (3 requests, 1 new)")
    clock.advance(3600)
    second = refresh(engine, source, RefreshOptions(), clock=clock)
    assert second.text() == "users 1 (1 request); lines 1 (1 request); contacts not due until 2026-12-02 09:00 UTC"
    clock.advance(24 * 3600)
    source.contacts = listing(contact("CT2", "Eve"), complete=False, requests=1)
    third = refresh(engine, source, RefreshOptions(), clock=clock)
    assert third.text().endswith("contacts 1 (1 request, 1 new, changes only)")
    assert source.contact_calls == [None, T0 - OVERLAP]
    clock.advance(60)
    source.contacts = listing(contact("CT2", "Eve"), requests=1)
    refresh(engine, source, RefreshOptions(force_contacts=True), clock=clock)  # forced: full, marks CT1 gone
    assert source.contact_calls[-1] is None
    assert rows(engine, "SELECT contact_id, gone_reason FROM contacts ORDER BY contact_id") == [
        ("CT1", "unlisted"), ("CT2", None)]
    t3 = "2026-12-02 10:00:00"
    assert refreshes(engine) == [
        ("users", "2026-12-01 09:00:00", None, 1, 1, 1, 0, 0, None),
        ("lines", "2026-12-01 09:00:00", None, 1, 1, 1, 0, 0, None),
        ("contacts", "2026-12-01 09:00:00", None, 3, 1, 1, 0, 0, None),
        ("users", "2026-12-01 10:00:00", None, 1, 1, 0, 0, 0, None),
        ("lines", "2026-12-01 10:00:00", None, 1, 1, 0, 0, 0, None),
        ("users", t3, None, 1, 1, 0, 0, 0, None),
        ("lines", t3, None, 1, 1, 0, 0, 0, None),
        ("contacts", t3, "2026-12-01 08:55:00", 1, 1, 1, 0, 0, None),
        ("users", "2026-12-02 10:01:00", None, 1, 1, 0, 0, 0, None),
        ("lines", "2026-12-02 10:01:00", None, 1, 1, 0, 0, 0, None),
        ("contacts", "2026-12-02 10:01:00", None, 1, 1, 0, 0, 1, None),
    ]


def test_a_full_contacts_listing_comes_at_least_weekly(engine):
    clock, source = FakeClock(T0), Source()
    refresh(engine, source, clock=clock)
    source.contacts = listing(complete=False, requests=1)
    for _ in range(6):
        clock.advance(24 * 3600)
        refresh(engine, source, clock=clock)
    clock.advance(24 * 3600)
    refresh(engine, source, clock=clock)
    assert source.contact_calls[0] is None and all(s is not None for s in source.contact_calls[1:7])
    assert source.contact_calls[7] is None and clock.utcnow() - T0 == FULL_EVERY


def test_contacts_that_cannot_be_listed_cost_one_warning_and_the_rest_goes_on(engine, capsys):
    configure_logging("json", "info")  # onto capsys's stderr
    clock, source = FakeClock(T0), Source()
    source.contacts = listing(complete=False, requests=1,
                              problem="contacts cannot be listed in this workspace (400: externalIds required)")
    report_ = refresh(engine, source, clock=clock)
    assert report_.problems == ("contacts: contacts cannot be listed in this workspace (400: externalIds required)",)
    warnings = [json.loads(x) for x in capsys.readouterr().err.splitlines() if x.startswith("{")]
    assert [(w["event"], w["resource"]) for w in warnings if w["level"] == "warning"] == [
        ("dimension listing incomplete", "contacts")]
    assert rows(engine, "SELECT COUNT(*) FROM users") == [(1,)]
    assert rows(engine, "SELECT COUNT(*) FROM phone_numbers") == [(1,)]
    # A refresh that failed is tried again after an hour, not a day.
    clock.advance(3599)
    assert refresh(engine, source, clock=clock).contacts_next_at == T0 + timedelta(hours=1)
    clock.advance(1)
    refresh(engine, source, clock=clock)
    assert len(source.contact_calls) == 2


def test_a_source_that_raises_is_recorded_and_a_refused_key_stops_the_refresh(engine):
    clock, source = FakeClock(T0), Source()
    source.contacts = RuntimeError("connection reset")
    done = refresh(engine, source, clock=clock)
    assert done.text().endswith("contacts failed (0 requests)")
    assert refreshes(engine)[-1] == ("contacts", "2026-12-01 09:00:00", None, 0, 0, 0, 0, 0,
                                     "RuntimeError: connection reset")
    clock.advance(3600)
    source.contacts = AuthError(401, "the API refused the key (HTTP 401)")
    with pytest.raises(AuthError):
        refresh(engine, source, clock=clock)
    assert refreshes(engine)[-1][-1] == "AuthError: the API refused the key (HTTP 401)"
    assert rows(engine, "SELECT COUNT(*) FROM dimension_refreshes WHERE finished_at IS NULL") == [(0,)]


def test_status_says_when_each_resource_was_last_refreshed_and_what_it_cost(engine, db_url):
    clock, source = FakeClock(T0), Source()
    refresh(engine, source, clock=clock)
    with engine.connect() as conn:
        found = status.gather(conn, db_url, T0 + timedelta(minutes=1), Limits())
    text = found.text().splitlines()
    start = text.index("Last refreshes:")
    assert text[start + 1:start + 4] == [
        "  users    2026-12-01T09:00:00Z: 1 request, 1 seen, 1 new, 0 changed, 0 gone",
        "  lines    2026-12-01T09:00:00Z: 1 request, 1 seen, 1 new, 0 changed, 0 gone",
        "  contacts 2026-12-01T09:00:00Z: 3 requests, 1 seen, 1 new, 0 changed, 0 gone",
    ]
    assert found.as_dict()["dimension_refreshes"]["contacts"]["requests"] == 3


# --- through the real client and the simulator ----------------------------------------

@pytest.mark.parametrize("api_version", ["v1", "2026-03-30"])
def test_refresh_through_the_client_stores_every_user_line_and_contact(engine, api_version):
    from etl.api import OpenPhoneClient
    from etl.config import Settings
    from etl.testing import FakeOpenPhone, serve

    fake = FakeOpenPhone(api_key="k")
    fake.workspace.generate(phone_numbers=3, conversations=3, calls=2, group_calls=2, agent_calls=2)
    clock = FakeClock(T0)
    with serve(fake) as url, OpenPhoneClient(Settings(api_key="k", base_url=url, api_version=api_version),
                                             clock=clock) as client:
        done = refresh(engine, client, RefreshOptions(), clock=clock)
    users = sorted(fake.workspace.people.users)
    assert [r[0] for r in raw_rows(engine, "SELECT user_id FROM users ORDER BY user_id")] == users
    assert sorted(r[0] for r in raw_rows(engine, "SELECT phone_number_id FROM phone_numbers")) == sorted(
        fake.workspace.phone_numbers)
    assert raw_rows(engine, "SELECT COUNT(*) FROM phone_number_users")[0][0] > 0
    contacts = next(r for r in done.done if r.resource == "contacts")
    if contacts.problem is None:  # a surface that lists contacts stores every one
        assert sorted(r[0] for r in raw_rows(engine, "SELECT contact_id FROM contacts")) == sorted(
            fake.workspace.people.contacts)
    assert done.requests == sum(r[0] for r in raw_rows(engine, "SELECT requests FROM dimension_refreshes"))
    assert done.requests <= 10  # a handful of requests for a small workspace
