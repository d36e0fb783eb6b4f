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


def test_a_contact_that_does_not_validate_costs_only_itself(receiver: Receiver) -> None:
    bad = {"id": "CTbroken", "defaultFields": "not an object", "customFields": 7}
    assert _send(receiver, webhooks.dated_contact_updated(bad)) == "queued"
    assert _contact_row(receiver, "CTbroken") is None
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
    assert len(lines) == 1 and "contact of a contact.updated event does not validate; not stored" in lines[0]
    assert '"level": "warning"' in lines[0]
