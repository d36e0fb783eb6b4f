"""The client's users, lines and contacts against the simulator (etl.testing) on both surfaces, over real HTTP.

The mapping and paging are unit-tested with recorded bodies (tests/unit/test_dimensions_api.py);
here the adapters meet the simulator's endpoints as production would, on the default rate.
"""

from __future__ import annotations

import pytest

from etl.api import OpenPhoneClient
from etl.config import Settings
from etl.testing import FakeOpenPhone, Quirks, serve
from etl.testing.clock import FakeClock

KEY = "k"


def _fake(**kw: object) -> FakeOpenPhone:
    fake = FakeOpenPhone(api_key=KEY, **kw)  # type: ignore[arg-type]
    fake.workspace.generate(phone_numbers=3, conversations=3, calls=2, group_calls=2, agent_calls=2)
    return fake


@pytest.mark.parametrize("api_version", ["v1", "2026-03-30"])
def test_users_and_lines_on_both_surfaces(api_version: str) -> None:
    fake = _fake()
    with serve(fake) as url, OpenPhoneClient(Settings(api_key=KEY, base_url=url, api_version=api_version),
                                             clock=FakeClock()) as client:
        users = client.list_users()
        lines = client.list_lines()
    assert (users.complete, users.problem, lines.complete, lines.problem) == (True, None, True, None)
    assert sorted(u.id for u in users.items) == sorted(fake.workspace.people.users)
    assert ("Nora", "Newhire") in {(u.first_name, u.last_name) for u in users.items}
    assert sorted(x.id for x in lines.items) == sorted(fake.workspace.phone_numbers)
    for line in lines.items:
        assert line.name and line.number == fake.workspace.phone_numbers[line.id].number
        assert line.members is not None and line.members  # every line names who is on it
    assert users.requests >= 1 and lines.requests >= 1


def test_v1_contacts_are_listed_whole() -> None:
    fake = _fake()
    with serve(fake) as url, OpenPhoneClient(Settings(api_key=KEY, base_url=url), clock=FakeClock()) as client:
        contacts = client.list_contacts()
    assert (contacts.complete, contacts.problem) == (True, None)
    assert sorted(c.id for c in contacts.items) == sorted(fake.workspace.people.contacts)
    assert any(c.custom_fields for c in contacts.items) and any(c.phone_numbers for c in contacts.items)
    assert contacts.requests == -(-len(contacts.items) // 50)


def test_contacts_that_cannot_be_listed_are_a_problem_on_either_surface() -> None:
    refused = _fake(quirks=Quirks(contacts_need_external_ids=True))
    with serve(refused) as url, OpenPhoneClient(Settings(api_key=KEY, base_url=url), clock=FakeClock()) as client:
        v1 = client.list_contacts()
        assert client.list_users().complete  # everything else goes on
    assert (v1.complete, v1.items, v1.requests) == (False, (), 1)
    assert v1.problem is not None and v1.problem.startswith("contacts cannot be listed on this workspace")
    fake = _fake()
    settings = Settings(api_key=KEY, api_version="2026-03-30")
    with serve(fake) as url, OpenPhoneClient(settings.replace(base_url=url), clock=FakeClock()) as client:
        dated = client.list_contacts()
    assert (dated.complete, dated.items) == (False, ())
    assert dated.problem is not None and dated.problem.startswith("contacts cannot be listed on this workspace")
