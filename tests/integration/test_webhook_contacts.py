"""``contact.updated`` / ``contact.deleted`` through a real running ``etl serve`` receiver, signed as Quo signs.

The deliveries are built by ``etl.testing.webhooks`` from the simulated workspace's own contacts (the dated
envelope, the contact as ``data.resource``) and signed with Standard Webhooks; the receiver stores the
contact through ``etl.store.dimensions`` and marks a deleted one gone, on every database.
"""

from __future__ import annotations

import datetime as dt

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from etl.logs import configure_logging
from etl.testing import FakeOpenPhone, webhooks
from etl.webhooks.events import parse_event
from etl.webhooks.intake import apply_contact
from tests.support.receiver import API_KEY, WHSEC, Receiver, running_receiver


@pytest.fixture
def receiver(db_url: str, engine: Engine) -> Receiver:  # type: ignore[misc]
    configure_logging("json", "info")
    fake = FakeOpenPhone(api_key=API_KEY, seed=5)
    fake.workspace.generate(phone_numbers=1, conversations=2, calls=1)
    with running_receiver(engine, db_url, fake=fake) as running:
        yield running


def _send(receiver: Receiver, body: dict[str, object]) -> str:
    answer = webhooks.deliver(receiver.url + "/webhooks/openphone", body, standard_secret=WHSEC,
                              client=receiver.client)
    assert answer.status_code == 200, answer.text
    return str(answer.json()["status"])


def _contact_row(receiver: Receiver, contact_id: str) -> tuple[object, ...] | None:
    with receiver.engine.connect() as conn:
        row = conn.execute(sa.text("SELECT name, company, gone_at, gone_reason FROM contacts WHERE contact_id = :c"),
                           {"c": contact_id}).first()
    return None if row is None else tuple(row)


def _numbers(receiver: Receiver, contact_id: str) -> list[str]:
    with receiver.engine.connect() as conn:
        return [r[0] for r in conn.execute(sa.text(
            "SELECT number_e164 FROM contact_phone_numbers WHERE contact_id = :c ORDER BY position"),
            {"c": contact_id})]


def test_contact_updated_stores_and_deleted_marks_gone(receiver: Receiver) -> None:
    people = receiver.fake.workspace.people
    contact = next(c for c in people.contacts.values() if c.numbers)
    name = f"{contact.first_name} {contact.last_name}"

    assert _send(receiver, webhooks.dated_contact_updated(contact.to_json(), event_id="EVcontact1")) == "queued"
    assert _contact_row(receiver, contact.id) == (name, contact.company, None, None)
    assert _numbers(receiver, contact.id) == list(contact.numbers)
    # The same event again is a redelivery: recorded, nothing changes.
    assert _send(receiver, webhooks.dated_contact_updated(contact.to_json(), event_id="EVcontact1")) == "duplicate"

    changed = people.update_contact(contact.id, at=dt.datetime(2026, 12, 1, tzinfo=dt.UTC), company="Renamed Ltd",
                                    phone_numbers=[{"name": "work", "value": "+15550009999", "id": "CPnew"}])
    assert _send(receiver, webhooks.dated_contact_updated(changed.to_json())) == "queued"
    assert _contact_row(receiver, contact.id) == (name, "Renamed Ltd", None, None)
    assert _numbers(receiver, contact.id) == ["+15550009999"]  # the numbers replaced as a whole

    gone = people.delete_contact(contact.id)
    assert _send(receiver, webhooks.dated_contact_deleted(gone.to_json())) == "queued"
    row = _contact_row(receiver, contact.id)
    assert row is not None and row[:2] == (name, "Renamed Ltd")  # kept: history keeps its name
    assert row[2] is not None and row[3] == "deleted"
    assert _numbers(receiver, contact.id) == ["+15550009999"]

    # A contact updated again after its deletion is back (gone_at cleared).
    assert _send(receiver, webhooks.dated_contact_updated(changed.to_json())) == "queued"
    assert _contact_row(receiver, contact.id) == (name, "Renamed Ltd", None, None)


def _rejected(receiver: Receiver) -> dict[str, tuple[object, ...]]:
    with receiver.engine.connect() as conn:
        return {r[0]: tuple(r[1:]) for r in conn.execute(sa.text(
            "SELECT record_id, workspace, source, endpoint, reason, times FROM rejected_records"))}


def test_a_contact_that_does_not_validate_costs_only_itself(receiver: Receiver) -> None:
    bad = {"id": "CTbroken", "defaultFields": "not an object", "customFields": 7}
    assert _send(receiver, webhooks.dated_contact_updated(bad)) == "queued"
    assert _contact_row(receiver, "CTbroken") is None
    # Kept with its reason (issue 25), as a listing's bad contact is.
    assert _rejected(receiver) == {"CTbroken": ("default", "serve", "webhook contact.updated",
                                                "defaultFields: Input should be a valid dictionary or instance of "
                                                "ContactDefaults (+1 more)", 1)}
    # Unknown contact deleted: accepted, nothing to mark.
    assert _send(receiver, webhooks.dated_contact_deleted({"id": "CTnever"})) == "queued"
    assert _contact_row(receiver, "CTnever") is None
    # Without an id: ignored, answered 2xx.
    assert _send(receiver, webhooks.dated_contact_updated({"firstName": "No id"})) == "ignored"
    # The receiver goes on: a good contact right after lands.
    contact = next(iter(receiver.fake.workspace.people.contacts.values()))
    assert _send(receiver, webhooks.dated_contact_updated(contact.to_json())) == "queued"
    assert _contact_row(receiver, contact.id) is not None


def test_the_warning_a_bad_contact_costs(engine: Engine, capsys: pytest.CaptureFixture[str]) -> None:
    configure_logging("json", "info")  # on the stream capsys reads
    bad = parse_event(webhooks.body_bytes(webhooks.dated_contact_updated({"id": "CTbroken", "customFields": 7})))
    with engine.begin() as conn:
        assert apply_contact(conn, bad, dt.datetime(2026, 12, 1)) is False
    logged = capsys.readouterr()
    lines = [line for line in (logged.out + logged.err).splitlines() if "CTbroken" in line]
    assert len(lines) == 1
    assert "contact of a contact.updated event cannot be stored; kept in rejected_records" in lines[0]
    assert '"reason": "customFields: Input should be a valid list"' in lines[0]
    assert '"level": "warning"' in lines[0]


def test_a_contact_that_cannot_be_stored_is_kept_aside_and_the_delivery_acknowledged(receiver: Receiver) -> None:
    people = receiver.fake.workspace.people
    first, second = list(people.contacts.values())[:2]
    assert _send(receiver, webhooks.dated_contact_updated(first.to_json())) == "queued"
    stored = _contact_row(receiver, first.id)
    # A date no database holds: the stored row stays as it was, the delivery is recorded and acknowledged.
    year_1 = dict(first.to_json(), createdAt="0001-01-01T00:00:00Z", defaultFields={"company": "Changed"})
    assert _send(receiver, webhooks.dated_contact_updated(year_1)) == "queued"
    assert _contact_row(receiver, first.id) == stored
    overflowing = dict(second.to_json(), updatedAt="9999-12-31T23:59:59-12:00")
    assert _send(receiver, webhooks.dated_contact_updated(overflowing)) == "queued"
    assert _contact_row(receiver, second.id) is None
    kept = _rejected(receiver)
    assert kept == {first.id: ("default", "serve", "webhook contact.updated",
                               "createdAt: 0001-01-01T00:00:00+00:00 is outside 1970-2199", 1),
                    second.id: ("default", "serve", "webhook contact.updated",
                                "updatedAt: 9999-12-31T23:59:59-12:00 cannot be shifted to UTC", 1)}
    with receiver.engine.connect() as conn:
        # Every delivery recorded as accepted, the ones whose contact was kept aside too.
        assert conn.execute(sa.text("SELECT outcome, COUNT(*) FROM webhook_deliveries "
                                    "WHERE event_type = 'contact.updated' GROUP BY outcome")).all() == [("queued", 3)]
    # Nothing else lost: the receiver goes on, and the fixed contact lands.
    assert _send(receiver, webhooks.dated_contact_updated(second.to_json())) == "queued"
    assert _contact_row(receiver, second.id) is not None


def test_a_contact_the_database_refuses_is_kept_aside_in_the_deliverys_transaction(engine: Engine) -> None:
    # A sourceUrl longer than MariaDB's TEXT (65,535 bytes; SQLite and PostgreSQL hold it).  Longer than a
    # delivery the receiver takes (64 KiB), so the intake is called as the receiver calls it.
    contact = {"id": "CTlong", "defaultFields": {"firstName": "Long"},
               "sourceUrl": "https://crm.example.com/" + "x" * 70_000}
    event = parse_event(webhooks.body_bytes(webhooks.dated_contact_updated(contact)))
    now = dt.datetime(2026, 12, 1)
    with engine.begin() as conn:
        stored = apply_contact(conn, event, now, workspace="north")
        conn.execute(sa.text("UPDATE rejected_records SET times = times"))  # the transaction goes on
    with engine.connect() as conn:
        kept = conn.execute(sa.text("SELECT workspace, source, endpoint, record_id, reason "
                                    "FROM rejected_records")).all()
        names = conn.execute(sa.text("SELECT name FROM contacts")).all()
    if engine.dialect.name == "mysql":
        assert stored is False and names == []
        ((workspace, source, endpoint, record_id, reason),) = kept
        assert (workspace, source, endpoint, record_id) == ("north", "serve", "webhook contact.updated", "CTlong")
        assert reason.startswith("the database refused it: DataError: (1406, \"Data too long for column 'source_url'")
    else:
        assert (stored, names, kept) == (True, [("Long",)], [])
