"""Users, lines and contacts through each surface's adapter (docs/api/dimensions.md).

The simulator gains these endpoints separately (issue 24); here the bodies are
``httpx.MockTransport`` answers shaped as the published references show them,
on the default throttled path (10 requests/s, on a fake clock).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import httpx

from etl.api import OpenPhoneClient
from etl.config import Settings
from etl.dimensions import Contact, ContactField, ContactValue, Line, LineMember, User
from etl.storable import Malformed
from etl.testing.clock import FakeClock

KEY = "test-key-0123456789"
DATED = "2026-03-30"

Handler = Callable[[httpx.Request], httpx.Response]


def client(handler: Handler, api_version: str = "v1") -> tuple[OpenPhoneClient, FakeClock]:
    clock = FakeClock()
    settings = Settings(api_key=KEY, base_url="http://api.test", api_version=api_version)
    return OpenPhoneClient(settings, clock=clock, transport=httpx.MockTransport(handler)), clock


def pages(path: str, bodies: dict[str | None, dict[str, Any]], token: str, seen: list[httpx.Request]) -> Handler:
    """Answers ``path`` with ``bodies[token parameter]``; any other path is a 404 of the API."""
    def handle(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        if request.url.path != path:
            return httpx.Response(404, json={"message": "Not Found"})
        return httpx.Response(200, json=bodies[request.url.params.get(token)])
    return handle


USER = {"id": "USa1", "email": "renee@example.com", "firstName": "Renee", "lastName": "Ortiz", "pictureUrl": None,
        "role": "owner", "createdAt": "2024-08-02T17:31:08Z", "updatedAt": "2026-05-19T09:12:45Z", "extra": 1}
USER2 = {"id": "USb2", "email": "sam@example.com", "firstName": "Sam", "lastName": None, "role": "ai-manager"}


def test_v1_users_page_with_page_tokens():
    seen: list[httpx.Request] = []
    c, _ = client(pages("/v1/users", {None: {"data": [USER], "totalItems": 9, "nextPageToken": "t2"},
                                      "t2": {"data": [USER2], "nextPageToken": None}}, "pageToken", seen))
    listing = c.list_users()
    assert (listing.complete, listing.requests, listing.problem) == (True, 2, None)
    assert listing.items[0] == User(
        id="USa1", email="renee@example.com", first_name="Renee", last_name="Ortiz", role="owner", picture_url=None,
        created_at=listing.items[0].created_at, updated_at=listing.items[0].updated_at, raw=USER)
    assert str(listing.items[0].created_at) == "2024-08-02 17:31:08+00:00"  # as sent: the rows make it naive UTC
    assert (listing.endpoint, listing.rejected) == ("GET /v1/users", ())
    assert listing.items[1].role == "ai-manager"  # a role not in the docs is kept as sent
    assert [dict(r.url.params) for r in seen] == [{"maxResults": "50"}, {"maxResults": "50", "pageToken": "t2"}]
    assert all("Quo-Api-Version" not in r.headers for r in seen)


def test_dated_users_page_with_cursors_and_the_version_header():
    seen: list[httpx.Request] = []
    c, _ = client(pages("/users", {None: {"data": [USER], "nextCursor": "c2"},
                                   "c2": {"data": [USER2], "nextCursor": None}}, "after", seen), DATED)
    listing = c.list_users()
    assert ([u.id for u in listing.items], listing.complete, listing.requests) == (["USa1", "USb2"], True, 2)
    assert [dict(r.url.params) for r in seen] == [{"limit": "50"}, {"limit": "50", "after": "c2"}]
    assert {r.headers["Quo-Api-Version"] for r in seen} == {DATED}


MEMBER = {"id": "USa1", "email": "renee@example.com", "firstName": "Renee", "lastName": "Ortiz", "role": "owner",
          "groupId": "GR1"}


def test_v1_lines_carry_their_members():
    seen: list[httpx.Request] = []
    line = {"id": "PN1", "name": "Sales", "number": "+15555550100", "formattedNumber": "(555) 555-0100",
            "symbol": "💼", "groupId": "GR1", "users": [MEMBER], "portingStatus": "completed"}
    c, _ = client(pages("/v1/phone-numbers", {None: {"data": [line, {"id": "PN2", "name": None}]}}, "pageToken",
                        seen))
    listing = c.list_lines()
    assert listing.complete and listing.requests == 1
    first, second = listing.items
    assert first == Line(id="PN1", name="Sales", number="+15555550100", formatted_number="(555) 555-0100",
                         symbol="💼", group_id="GR1", raw=line,
                         members=(LineMember(user_id="USa1", email="renee@example.com", first_name="Renee",
                                             last_name="Ortiz", role="owner"),))
    assert second.members is None  # the answer did not say who is on it


def test_dated_lines_ask_for_their_users_and_read_phone_number():
    seen: list[httpx.Request] = []
    line = {"id": "PN1", "name": "Support", "phoneNumber": "+15555550101", "users": [MEMBER, {"id": "USb2"}]}
    c, _ = client(pages("/phone-numbers", {None: {"data": [line], "nextCursor": "c2"},
                                           "c2": {"data": [], "nextCursor": None}}, "after", seen), DATED)
    listing = c.list_lines()
    assert [(x.id, x.name, x.number) for x in listing.items] == [("PN1", "Support", "+15555550101")]
    assert [m.user_id for m in listing.items[0].members or ()] == ["USa1", "USb2"]
    assert dict(seen[0].url.params) == {"limit": "50", "include": "users"}
    assert listing.requests == 2


V1_CONTACT = {
    "id": "CT1", "externalId": "crm-1", "source": "hubspot", "sourceUrl": "https://crm.test/1",
    "defaultFields": {"firstName": "Ada", "lastName": "Byron", "company": "Engines Ltd", "role": "CTO",
                      "emails": [{"name": "work", "value": "ada@engines.test", "id": "E1"}],
                      "phoneNumbers": [{"name": "mobile", "value": "+15555550123", "id": "P1"},
                                       {"name": "work", "value": "+15555550124"}]},
    "customFields": [{"name": "Tier", "key": "tier", "id": "F1", "type": "multi-select", "value": ["gold", "vip"]},
                     {"name": "Seats", "key": "seats", "type": "number", "value": 12}],
    "createdAt": "2026-01-01T00:00:00Z", "updatedAt": "2026-02-01T00:00:00Z", "createdByUserId": "USa1",
}


def test_v1_contacts_in_pages_of_fifty_with_their_fields():
    seen: list[httpx.Request] = []
    second = {**V1_CONTACT, "id": "CT2", "defaultFields": {"firstName": "Bob"}, "customFields": None}
    c, _ = client(pages("/v1/contacts", {None: {"data": [V1_CONTACT], "nextPageToken": "t2", "totalItems": 1},
                                         "t2": {"data": [second], "nextPageToken": None}}, "pageToken", seen))
    listing = c.list_contacts()
    assert (listing.complete, listing.requests, [x.id for x in listing.items]) == (True, 2, ["CT1", "CT2"])
    ada = listing.items[0]
    assert (ada.first_name, ada.last_name, ada.company, ada.role, ada.external_id, ada.source) == (
        "Ada", "Byron", "Engines Ltd", "CTO", "crm-1", "hubspot")
    assert ada.phone_numbers == (ContactValue(value="+15555550123", label="mobile", id="P1"),
                                 ContactValue(value="+15555550124", label="work"))
    assert ada.emails == (ContactValue(value="ada@engines.test", label="work", id="E1"),)
    assert ada.custom_fields == (ContactField(key="tier", name="Tier", type="multi-select", value=["gold", "vip"],
                                              id="F1"),
                                 ContactField(key="seats", name="Seats", type="number", value=12))
    assert ada.created_by_user_id == "USa1"
    assert listing.items[1] == Contact(id="CT2", first_name="Bob", external_id="crm-1", source="hubspot",
                                       source_url="https://crm.test/1", created_by_user_id="USa1",
                                       created_at=ada.created_at, updated_at=ada.updated_at, raw=second)
    assert [dict(r.url.params) for r in seen] == [{"maxResults": "50"}, {"maxResults": "50", "pageToken": "t2"}]


def test_dated_contacts_read_their_names_at_the_top_level():
    seen: list[httpx.Request] = []
    contact = {"id": "6a145ff2", "createdAt": "2021-01-01T00:00:00Z", "updatedAt": "2021-01-01T00:00:00Z",
               "actorId": "US123abc", "externalId": "1234567890", "source": "public-api",
               "sourceUrl": "https://example.com/contacts/001", "firstName": "John", "lastName": "Doe",
               "company": "Quo", "role": "admin", "phoneNumbers": [{"name": "mobile", "value": "+15555550125"}]}
    c, _ = client(pages("/contacts", {None: {"data": [contact], "nextCursor": None}}, "after", seen), DATED)
    listing = c.list_contacts()
    (john,) = listing.items
    assert (john.first_name, john.last_name, john.company, john.role, john.created_by_user_id) == (
        "John", "Doe", "Quo", "admin", "US123abc")
    assert [v.value for v in john.phone_numbers] == ["+15555550125"]
    assert (listing.complete, listing.requests) == (True, 1)
    assert dict(seen[0].url.params) == {"limit": "50"} and seen[0].headers["Quo-Api-Version"] == DATED


def test_contacts_refused_for_want_of_external_ids_is_a_problem_not_an_exception():
    refusal = {"message": "externalIds is required", "code": "0800400", "status": 400, "title": "Bad Request"}
    first_page = {"data": [V1_CONTACT], "nextPageToken": "t2"}

    def handle(request: httpx.Request) -> httpx.Response:
        if request.url.params.get("pageToken") == "t2":
            return httpx.Response(400, json=refusal)
        return httpx.Response(200, json=first_page)

    c, _ = client(handle)
    listing = c.list_contacts()
    assert (listing.complete, listing.requests, [x.id for x in listing.items]) == (False, 2, ["CT1"])
    assert listing.problem == ("contacts cannot be listed on this workspace: listing contacts failed: "
                               "HTTP 400 Bad Request: externalIds is required")


def test_a_listing_whose_cursor_comes_back_is_stopped_and_not_complete():
    seen: list[httpx.Request] = []
    c, _ = client(pages("/users", {None: {"data": [USER], "nextCursor": "loop"},
                                   "loop": {"data": [USER2], "nextCursor": "loop"}}, "after", seen), DATED)
    listing = c.list_users()
    assert (listing.complete, listing.requests, len(seen)) == (False, 2, 2)
    assert listing.problem == "listing users: the API sent cursor 'loop' twice; stopped"


def test_the_default_rate_spaces_the_pages_on_the_clock():
    seen: list[httpx.Request] = []
    bodies = {None: {"data": [USER], "nextPageToken": "t2"}, "t2": {"data": [USER], "nextPageToken": "t3"},
              "t3": {"data": [USER2], "nextPageToken": None}}
    c, clock = client(pages("/v1/users", bodies, "pageToken", seen))
    started = clock.monotonic()
    assert c.list_users().requests == 3
    # 10 requests/s: the third request waited for its slot on the client's clock, not the wall's.
    assert clock.monotonic() - started >= 0.1


def test_an_item_its_model_refuses_costs_only_itself_and_the_listing_carries_it():
    # Issue 25 on users, lines and contacts: the page and its other items stand; the listing is complete.
    bad_user = {"id": "USbad", "email": ["not", "text"]}
    no_id = {"firstName": "Nobody"}
    c, _ = client(pages("/v1/users", {None: {"data": [USER, bad_user], "nextPageToken": "t2"},
                                      "t2": {"data": [no_id, USER2], "nextPageToken": None}}, "pageToken", []))
    listing = c.list_users()
    assert ([u.id for u in listing.items], listing.complete, listing.problem) == (["USa1", "USb2"], True, None)
    assert listing.rejected == (Malformed(raw=bad_user, reason="email: Input should be a valid string"),
                                Malformed(raw=no_id, reason="id: Field required"))
    assert listing.endpoint == "GET /v1/users"
    line = {"id": "PN1", "name": "Sales", "number": "+15555550100", "users": "everyone"}
    c, _ = client(pages("/phone-numbers", {None: {"data": [line, {"id": "PN2"}], "nextCursor": None}}, "after", []),
                  DATED)
    lines = c.list_lines()
    assert ([x.id for x in lines.items], lines.endpoint) == (["PN2"], "GET /phone-numbers")
    assert lines.rejected == (Malformed(raw=line, reason="users: Input should be a valid list"),)


def test_dated_contacts_listed_on_v1_carry_their_rejects_and_v1_endpoint():
    bad = {**V1_CONTACT, "id": "CTbad", "customFields": 7}
    c, _ = client(pages("/v1/contacts", {None: {"data": [bad, V1_CONTACT], "nextPageToken": None}}, "pageToken",
                        []), DATED)
    listing = c.list_contacts()
    assert ([x.id for x in listing.items], listing.complete, listing.requests) == (["CT1"], True, 2)
    assert (listing.endpoint, [m.raw["id"] for m in listing.rejected]) == ("GET /v1/contacts", ["CTbad"])
