"""The simulator's users, lines and contacts on both surfaces (etl.testing, issue 24 part 8).

Each test talks HTTP to the simulator with httpx: over a real socket (``serve``)
and in process (``fake.transport()``), walking every page; the client side of
these endpoints is another module's (etl/api).
"""

from __future__ import annotations

import json
from collections.abc import Iterator

import httpx
import pytest
from standardwebhooks import Webhook

from etl.testing import FakeOpenPhone, Faults, Quirks, serve, webhooks
from etl.testing._dated import AGENT_ACTOR
from etl.testing._people import CUSTOM_FIELD_TYPES

KEY = "k"
DATED = {"Quo-Api-Version": "2026-03-30"}


def _fake(**kw: object) -> FakeOpenPhone:
    fake = FakeOpenPhone(api_key=KEY, **kw)  # type: ignore[arg-type]
    fake.workspace.generate(phone_numbers=3, conversations=3, calls=2, group_calls=2, agent_calls=2)
    return fake


@pytest.fixture(params=["http", "transport"])
def api(request: pytest.FixtureRequest) -> Iterator[tuple[FakeOpenPhone, httpx.Client]]:
    """(fake, client) over a real socket or in process: the same answers either way."""
    fake = _fake()
    if request.param == "http":
        with serve(fake) as url, httpx.Client(base_url=url, headers={"authorization": KEY}) as client:
            yield fake, client
    else:
        with httpx.Client(transport=fake.transport(), base_url="https://api.openphone.com",
                          headers={"authorization": KEY}) as client:
            yield fake, client


def _walk_v1(client: httpx.Client, path: str, size: int, **params: object) -> tuple[list[dict[str, object]], int]:
    """Every item of a v1 list, page by page; (items, pages)."""
    items: list[dict[str, object]] = []
    token: str | None = None
    pages = 0
    while True:
        query: dict[str, object] = {"maxResults": size, **params}
        if token:
            query["pageToken"] = token
        r = client.get(path, params=query)  # type: ignore[arg-type]
        assert r.status_code == 200, r.text
        body = r.json()
        pages += 1
        assert len(body["data"]) <= size
        items += body["data"]
        token = body["nextPageToken"]
        if token is None:
            return items, pages


def _walk_dated(client: httpx.Client, path: str, size: int, **params: str) -> tuple[list[dict[str, object]], int]:
    items: list[dict[str, object]] = []
    cursor: str | None = None
    pages = 0
    while True:
        query: dict[str, str | int] = {"limit": size, **params}
        if cursor:
            query["after"] = cursor
        r = client.get(path, params=query, headers=DATED)
        assert r.status_code == 200, r.text
        body = r.json()
        pages += 1
        items += body["data"]
        cursor = body["nextCursor"]
        if cursor is None:
            return items, pages


def _call_users(fake: FakeOpenPhone) -> set[str]:
    return {u for c in fake.workspace.calls.values() for u in (c.user_id, c.answered_by, c.initiated_by) if u}


def test_users_on_both_surfaces_cover_every_call_user_and_one_without_calls(
        api: tuple[FakeOpenPhone, httpx.Client]) -> None:
    fake, client = api
    v1, v1_pages = _walk_v1(client, "/v1/users", 2)
    dated, dated_pages = _walk_dated(client, "/users", 2)
    assert v1 == dated  # one user object on both surfaces
    ids = [u["id"] for u in v1]
    assert len(ids) == len(set(ids)) >= 4
    assert v1_pages == dated_pages == -(-len(ids) // 2)
    assert _call_users(fake) <= set(ids)
    assert AGENT_ACTOR not in ids and all(not str(i).startswith("SYU") for i in ids)
    # The AI agent's calls name the system actor on the dated surface; it has no user record.
    agent_calls = [c for c in fake.workspace.calls.values() if c.ai_handled]
    r = client.get(f"/calls/{agent_calls[0].id}", headers=DATED)
    assert r.json()["data"]["actorId"] == AGENT_ACTOR
    assert client.get(f"/users/{AGENT_ACTOR}", headers=DATED).status_code == 404
    assert client.get(f"/v1/users/{AGENT_ACTOR}").status_code == 404
    without_calls = [u for u in v1 if u["id"] not in _call_users(fake)]
    assert [(u["firstName"], u["lastName"]) for u in without_calls] == [("Nora", "Newhire")]
    one = client.get(f"/v1/users/{without_calls[0]['id']}").json()["data"]
    assert one == without_calls[0] == client.get(f"/users/{one['id']}", headers=DATED).json()["data"]
    assert set(one) >= {"id", "email", "firstName", "lastName", "pictureUrl", "role", "createdAt", "updatedAt"}
    assert {u["role"] for u in v1} <= {"owner", "admin", "member"} and v1[0]["role"] == "owner"
    first = client.get("/v1/users", params={"maxResults": 2}).json()
    assert first["totalItems"] == len(ids)


def test_lines_have_names_and_members_on_both_surfaces(api: tuple[FakeOpenPhone, httpx.Client]) -> None:
    _, client = api
    v1 = client.get("/v1/phone-numbers").json()["data"]
    dated, pages = _walk_dated(client, "/phone-numbers", 2, include="users")
    assert pages == 2
    assert [p["name"] for p in v1] == [p["name"] for p in dated] == ["Sales", "Support", "Billing"]
    assert [p["number"] for p in v1] == [p["phoneNumber"] for p in dated]
    assert "number" not in dated[0]
    users = {u["id"]: u for u in _walk_v1(client, "/v1/users", 50)[0]}
    for v1_line, dated_line in zip(v1, dated, strict=True):
        assert v1_line["users"] == dated_line["users"]
        for member in v1_line["users"]:
            user = users[member["id"]]
            assert (member["firstName"], member["email"]) == (user["firstName"], user["email"])
    assert len(v1[0]["users"]) == 2  # the first line's user and the one without calls
    # Without include=users the dated answer does not say who is on a line.
    bare = client.get("/phone-numbers", headers=DATED).json()["data"]
    assert all("users" not in p for p in bare)
    assert client.get("/phone-numbers", params={"include": "teams"}, headers=DATED).status_code == 400
    # v1's filter by user still works.
    member = v1[1]["users"][0]["id"]
    only = client.get("/v1/phone-numbers", params={"userId": member}).json()["data"]
    assert [p["id"] for p in only] == [v1[1]["id"]]


def test_contacts_pages_numbers_without_contacts_and_a_number_on_two(
        api: tuple[FakeOpenPhone, httpx.Client]) -> None:
    fake, client = api
    contacts, pages = _walk_v1(client, "/v1/contacts", 3)
    assert pages == -(-len(contacts) // 3) >= 3
    assert client.get("/v1/contacts", params={"maxResults": 3}).json()["totalItems"] == len(contacts)
    by_number: dict[str, list[str]] = {}
    for c in contacts:
        for p in c["defaultFields"]["phoneNumbers"]:  # type: ignore[index]
            by_number.setdefault(p["value"], []).append(str(c["id"]))
    lines = {p.number for p in fake.workspace.phone_numbers.values()}
    parties = {p for conv in fake.workspace.conversations.values() for p in conv.participants
               if p.startswith("+") and p not in lines}
    assert parties - set(by_number), "some callers have no contact"
    shared = [n for n, ids in by_number.items() if len(ids) > 1 and n in parties]
    assert shared, "a number on two contacts"
    assert [c.id for c in fake.workspace.people.contacts_of(shared[0])] == by_number[shared[0]]
    assert any(len(c["defaultFields"]["phoneNumbers"]) == 2 for c in contacts)  # type: ignore[arg-type,index]
    assert any(c["defaultFields"]["emails"] for c in contacts)  # type: ignore[index]
    assert any(c["defaultFields"]["company"] for c in contacts)  # type: ignore[index]
    types = {f["type"]: f["value"] for c in contacts for f in c["customFields"]}  # type: ignore[attr-defined]
    assert set(types) == set(CUSTOM_FIELD_TYPES)
    assert isinstance(types["multi-select"], list) and isinstance(types["boolean"], bool)
    # One contact by id on both surfaces; a contacts list is not a dated route (the reference has none).
    one = contacts[0]
    assert client.get(f"/v1/contacts/{one['id']}").json()["data"] == one
    assert client.get(f"/contacts/{one['id']}", headers=DATED).json()["data"] == one
    assert client.get("/contacts", headers=DATED).status_code == 404
    assert client.get("/v1/contacts/CTnope").status_code == 404
    # Filters of the v1 list.
    crm = client.get("/v1/contacts", params={"sources[]": "hubspot", "maxResults": 50}).json()["data"]
    assert crm and {c["source"] for c in crm} == {"hubspot"}
    ext = client.get("/v1/contacts", params={"externalIds[]": crm[0]["externalId"]}).json()["data"]
    assert [c["id"] for c in ext] == [crm[0]["id"]]


def test_the_dated_paths_require_the_version_header(api: tuple[FakeOpenPhone, httpx.Client]) -> None:
    fake, client = api
    contact = next(iter(fake.workspace.people.contacts))
    for path in ("/users", f"/users/{next(iter(fake.workspace.people.users))}", "/phone-numbers",
                 f"/contacts/{contact}"):
        r = client.get(path)
        assert r.status_code == 400, path
        assert r.json()["errors"] == [{"path": "/headers/quo-api-version", "message": "required"}]
        assert client.get(path, headers=DATED).status_code == 200
    assert client.get("/v1/users").status_code == 200  # v1 needs no header
    logged = [(path, version) for _, path, version in fake.request_log if path == "/users"]
    assert logged == [("/users", None), ("/users", "2026-03-30")]


def test_page_sizes_and_cursors_are_checked(api: tuple[FakeOpenPhone, httpx.Client]) -> None:
    _, client = api
    for path in ("/v1/users", "/v1/contacts"):
        assert client.get(path, params={"maxResults": 51}).status_code == 400
        assert client.get(path, params={"maxResults": 0}).status_code == 400
        assert client.get(path, params={"pageToken": "junk"}).status_code == 400
    assert client.get("/users", params={"limit": 51}, headers=DATED).status_code == 400
    r = client.get("/users", params={"after": "junk"}, headers=DATED)
    assert r.status_code == 400 and r.json()["errors"][0]["path"] == "/after"


def test_contacts_that_cannot_be_listed_answer_400_naming_external_ids() -> None:
    fake = _fake(quirks=Quirks(contacts_need_external_ids=True))
    with serve(fake) as url, httpx.Client(base_url=url, headers={"authorization": KEY}) as client:
        r = client.get("/v1/contacts", params={"maxResults": 50})
        assert r.status_code == 400
        assert r.json()["errors"] == [{"path": "/externalIds",
                                       "message": "externalIds is required: pass one or more external ids"}]
        assert client.get("/v1/users").status_code == 200  # everything else goes on
        crm = next(c for c in fake.workspace.people.contacts.values() if c.external_id)
        ok = client.get("/v1/contacts", params={"externalIds[]": crm.external_id})
        assert [c["id"] for c in ok.json()["data"]] == [crm.id]


def test_faults_statistics_and_the_rate_limit_cover_the_new_endpoints() -> None:
    fake = _fake(faults=Faults(error_500=1.0, max_per_id=1, endpoints=frozenset({"contacts"})), rate=5, burst=2)
    with httpx.Client(transport=fake.transport(), base_url="https://api.openphone.com",
                      headers={"authorization": KEY}) as client:
        assert client.get("/v1/contacts").status_code == 500
        answers = [client.get("/v1/users").status_code for _ in range(3)]
        assert answers[-1] == 429  # the shared token bucket
    stats = fake.stats()["endpoints"]
    assert stats["contacts"] == {"requests": 1, "429": 0}  # type: ignore[index]
    assert stats["users"]["requests"] == 3 and stats["users"]["429"] >= 1  # type: ignore[index]


def test_sizes_for_a_benchmark_are_options() -> None:
    fake = FakeOpenPhone(api_key=KEY)
    fake.workspace.generate(phone_numbers=10, conversations=2, calls=1, users=50, contacts=5000)
    people = fake.workspace.people
    assert (len(people.users), len(people.contacts)) == (50, 5000)
    with httpx.Client(transport=fake.transport(), base_url="https://x", headers={"authorization": KEY}) as client:
        contacts, pages = _walk_v1(client, "/v1/contacts", 50)
        users, user_pages = _walk_dated(client, "/users", 50)
    assert (len(contacts), pages, len(users), user_pages) == (5000, 100, 50, 1)
    again = FakeOpenPhone(api_key=KEY)
    again.workspace.generate(phone_numbers=10, conversations=2, calls=1, users=50, contacts=5000)
    again.workspace.people.add_contact(["+15550000001"])
    people.add_contact(["+15550000001"])  # after listings on one and none on the other: the same ids
    assert [c.to_json() for c in again.workspace.people.contacts.values()] == \
        [c.to_json() for c in people.contacts.values()]  # seeded: the same workspace every time


def test_contact_changes_and_signed_contact_webhooks() -> None:
    fake = _fake()
    people = fake.workspace.people
    got: list[tuple[dict[str, str], bytes]] = []

    def receive(request: httpx.Request) -> httpx.Response:
        got.append((dict(request.headers), request.read()))
        return httpx.Response(200)

    with serve(fake) as url, httpx.Client(base_url=url, headers={"authorization": KEY, **DATED}) as client:
        hook = client.post("/webhooks", json={"url": "http://receiver.test/hooks",
                                              "events": ["contact.updated", "contact.deleted"]}).json()["data"]
        target = next(iter(people.contacts.values()))
        changed = people.update_contact(target.id, company="Renamed Ltd", at=fake.clock.now())
        assert client.get(f"/contacts/{target.id}").json()["data"]["defaultFields"]["company"] == "Renamed Ltd"
        updated = webhooks.dated_contact_updated(changed.to_json())
        gone = people.delete_contact(target.id)
        deleted = webhooks.dated_contact_deleted(gone.to_json())
        assert client.get(f"/contacts/{target.id}").status_code == 404
        assert client.get(f"/v1/contacts/{target.id}", headers={"Quo-Api-Version": ""}).status_code == 404
        with httpx.Client(transport=httpx.MockTransport(receive)) as sender:
            sent = webhooks.push(fake.webhooks, updated, client=sender) + \
                webhooks.push(fake.webhooks, deleted, client=sender)
    assert [r.status_code for r in sent] == [200, 200]
    bodies = []
    for headers, raw in got:
        Webhook(str(hook["key"])).verify(raw, headers)  # signed with the webhook's own secret
        bodies.append(json.loads(raw))
    assert [b["type"] for b in bodies] == ["contact.updated", "contact.deleted"]
    assert all(b["apiVersion"] == "2026-03-30" for b in bodies)
    assert bodies[0]["data"]["resource"]["defaultFields"]["company"] == "Renamed Ltd"
    assert bodies[1]["data"]["resource"]["id"] == target.id
    assert set(bodies[1]["data"]) == {"resource", "context", "links"}


def test_the_command_line_sizes_and_quirk() -> None:
    from etl.testing._cli import _parse_args, build

    fake = build(_parse_args(["--api-key", KEY, "--users", "12", "--contacts", "300",
                              "--quirk-contacts-need-external-ids"], "sim"))
    assert (len(fake.workspace.people.users), len(fake.workspace.people.contacts)) == (12, 300)
    with httpx.Client(transport=fake.transport(), base_url="https://x", headers={"authorization": KEY}) as client:
        assert client.get("/v1/contacts").status_code == 400
        assert len(_walk_v1(client, "/v1/users", 5)[0]) == 12
