"""The pure parts of users, lines and contacts: E.164 reading, typed custom fields, content hashes and the
contacts refresh schedule."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from etl.dimension_rows import contact_tree, custom_field_rows, e164, line_tree, user_tree
from etl.dimensions import Contact, ContactField, Line, LineMember, User
from etl.refresh import FULL_EVERY, OVERLAP, RETRY_AFTER, RefreshOptions, contacts_plan
from etl.storable import Refused


@pytest.mark.parametrize(("value", "expected"), [
    ("+15550100000", "+15550100000"),
    ("+1 (555) 010-0000", "+15550100000"),
    ("555.010.0000", "+15550100000"),
    ("1-555-010-0000", "+15550100000"),
    ("(555) 010-0000 x12", "+15550100000"),
    ("+1 555 010 0000;ext=9", "+15550100000"),
    ("0044 20 7946 0000", "+442079460000"),
    ("+44 20 7946 0000", "+442079460000"),
    ("+33\u00a01 23 45 67 89", "+33123456789"),
    ("2079460000", "+12079460000"),  # ten digits are read as North American
    ("020 7946 0000", None),  # a national number of another country is not guessed
    ("0555010000", None),
    ("+0123456789", None),
    ("+1234567", None),  # too short
    ("+1234567890123456", None),  # too long
    ("call me", None),
    ("", None),
    (None, None),
])
def test_e164_reads_what_people_type_and_guesses_nothing_else(value, expected):
    assert e164(value) == expected


def test_multi_select_is_one_row_per_value_and_a_bool_is_never_a_number():
    rows = custom_field_rows("CT1", 2, ContactField(key="k", name="Tags", type="multi-select", value=["a", 1, True]))
    assert [(r["value_position"], r["value_type"], r["value_text"], r["value_number"], r["value_boolean"])
            for r in rows] == [(0, "string", "a", None, None), (1, "number", None, 1.0, None),
                               (2, "boolean", None, None, True)]
    (empty,) = custom_field_rows("CT1", 0, ContactField(key="k", name="Tags", type="multi-select", value=[]))
    assert (empty["value_position"], empty["value_type"]) == (0, "null")
    huge = [custom_field_rows("CT1", 0, ContactField(key="k", name="N", type="number", value=v))[0]
            for v in (10**400, float("inf"), float("nan"))]
    assert [(r["value_type"], r["value_text"], r["value_number"]) for r in huge] == [
        ("string", str(10**400), None), ("string", "inf", None), ("string", "nan", None)]
    (listed,) = custom_field_rows("CT1", 0, ContactField(key="k", name="Odd", type="string", value=["x"]))
    assert (listed["value_type"], listed["value_text"]) == ("json", '["x"]')


def test_content_hash_follows_content_and_children_only():
    a = contact_tree(Contact(id="CT1", first_name="Dana", raw={"id": "CT1"}))
    b = contact_tree(Contact(id="CT1", first_name="Dana", raw={"id": "CT1"}))
    c = contact_tree(Contact(id="CT1", first_name="Dana", raw={"id": "CT1", "x": 1}))
    assert a.parent["content_hash"] == b.parent["content_hash"] != c.parent["content_hash"]
    with_members = line_tree(Line(id="PN1", name="Sales", number="+15550000001", members=(LineMember(user_id="US1"),)))
    unknown = line_tree(Line(id="PN1", name="Sales", number="+15550000001", members=None))
    assert "phone_number_users" not in unknown.children
    assert with_members.parent["content_hash"] != unknown.parent["content_hash"]
    user = user_tree(User(id="US1", email=None, first_name=None, last_name=None, role=None))
    assert (user.parent["name"], user.parent["raw_json"].startswith('{"modelled":')) == (None, True)


def test_a_date_no_database_holds_refuses_the_record_naming_the_field():
    # As a call's (etl.normalize): shifted to naive UTC, or refused (the caller keeps the record aside).
    west = timezone(timedelta(hours=-12))
    shifted = user_tree(User(id="US1", email=None, first_name=None, last_name=None, role=None,
                             created_at=datetime(2026, 1, 1, 20, tzinfo=west)))
    assert shifted.parent["created_at"] == datetime(2026, 1, 2, 8)
    with pytest.raises(Refused, match=r"^createdAt: 9999-12-31T23:59:59-12:00 cannot be shifted to UTC$"):
        contact_tree(Contact(id="CT1", created_at=datetime(9999, 12, 31, 23, 59, 59, tzinfo=west)))
    with pytest.raises(Refused, match=r"^updatedAt: 0001-01-01T00:00:00 is outside 1970-2199$"):
        line_tree(Line(id="PN1", name=None, number=None, updated_at=datetime(1, 1, 1)))


T0 = datetime(2026, 12, 1, 9)
EVERY = RefreshOptions()


def test_contacts_plan():
    assert contacts_plan(None, None, None, T0, EVERY) == (True, None, None)  # never refreshed: in full
    last = {"started_at": T0, "problem": None}
    assert contacts_plan(last, T0, T0, T0 + timedelta(hours=23), EVERY) == (False, None, T0 + timedelta(hours=24))
    assert contacts_plan(last, T0, T0, T0 + timedelta(hours=24), EVERY) == (True, T0 - OVERLAP, None)
    assert contacts_plan(last, T0, T0 - FULL_EVERY, T0 + timedelta(hours=24), EVERY) == (True, None, None)
    failed = {"started_at": T0, "problem": "HTTP 503"}
    assert contacts_plan(failed, None, None, T0 + RETRY_AFTER, EVERY) == (True, None, None)
    assert contacts_plan(last, T0, T0, T0, RefreshOptions(force_contacts=True)) == (True, None, None)
