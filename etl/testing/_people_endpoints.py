"""The simulated API's users, lines (phone numbers with members) and contacts, on both surfaces.

v1: ``GET /v1/users`` (``maxResults`` 1-50, ``pageToken``/``nextPageToken``,
``totalItems``), ``GET /v1/users/{id}``, ``GET /v1/contacts`` (``maxResults``
1-50, ``pageToken``, ``externalIds[]``, ``sources[]``; ``totalItems``) and
``GET /v1/contacts/{id}``.  (``GET /v1/phone-numbers`` stays in ``_endpoints``;
its ``users[]`` come from ``Workspace.line_json``.)

Dated (2026-03-30, header ``Quo-Api-Version`` required as on every dated path):
``GET /users`` (``limit`` 1-50, ``after``/``nextCursor``), ``GET /users/{id}``,
``GET /phone-numbers`` (cursor pages; ``include=users`` adds each line's members,
``include=restrictions`` its restrictions) and ``GET /contacts/{id}``.  The
2026-03-30 reference documents no contacts list ("Contacts: in development"),
so ``GET /contacts`` is not a route here (404): contacts are listed on v1.

``Quirks.contacts_need_external_ids`` makes ``GET /v1/contacts`` without
``externalIds`` answer 400 naming ``externalIds`` (what an older page of the
reference says): the "contacts cannot be listed" path.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any
from urllib.parse import unquote

from etl.testing._endpoints import BadRequest, _many, _max_results, _one
from etl.testing._faults import Quirks
from etl.testing._people import Contact
from etl.testing._workspace import PhoneNumber, Workspace

V1_PEOPLE = ("users", "user", "contacts", "contact")
DATED_PEOPLE = ("dated-users", "dated-user", "dated-phone-numbers", "dated-contact")
PEOPLE_ENDPOINTS = V1_PEOPLE + DATED_PEOPLE
_LINE_INCLUDES = frozenset({"users", "restrictions", "businessHours"})


def match_people(method: str, path: str) -> tuple[str | None, str]:
    """(endpoint, id) of a users/lines/contacts request on either surface; (None, "") otherwise."""
    if method != "GET":
        return None, ""
    parts = path.split("/")
    dated = parts[1:2] != ["v1"]
    rest = parts[1:] if dated else parts[2:]
    if parts[:1] != [""] or not rest:
        return None, ""
    prefix = "dated-" if dated else ""
    if rest == ["users"]:
        return prefix + "users", ""
    if len(rest) == 2 and rest[0] == "users" and rest[1]:
        return prefix + "user", rest[1]
    if dated and rest == ["phone-numbers"]:
        return "dated-phone-numbers", ""
    if len(rest) == 2 and rest[0] == "contacts" and rest[1]:
        return prefix + "contact", rest[1]
    if not dated and rest == ["contacts"]:
        return "contacts", ""
    return None, ""


class PeopleEndpoints:
    """Answers of the people routes, over the state ``FakeOpenPhone`` holds (a base of it)."""

    workspace: Workspace
    quirks: Quirks

    # The paging of the other bases of FakeOpenPhone: DatedEndpoints' short-lived cursors
    # and WorkspaceEndpoints' v1 page tokens (one definition each, shared with calls).
    _cursor: Callable[[int, str], str]
    _window: Callable[[dict[str, list[str]]], tuple[int, str, int]]
    _page: Callable[[list[Any], int, str | None], tuple[list[Any], str | None]]

    def _people_answer(self, endpoint: str, arg: str,
                       params: dict[str, list[str]]) -> tuple[int, dict[str, object] | None]:
        ws = self.workspace
        people = ws.people
        key = unquote(arg)
        if endpoint in ("users", "dated-users"):
            users = [u.to_json() for u in people.user_list(ws.named_users())]
            if endpoint == "users":
                page, token = self._page(users, _max_results(params, top=50), _one(params, "pageToken"))
                return 200, {"data": page, "totalItems": len(users), "nextPageToken": token}
            return 200, self._cursor_page(users, params)
        if endpoint in ("user", "dated-user"):
            people.sync_users(ws.named_users())
            user = people.users.get(key)
            return (404, None) if user is None else (200, {"data": user.to_json()})
        if endpoint in ("contact", "dated-contact"):
            with ws.lock:
                contact = people.contacts.get(key)
            return (404, None) if contact is None else (200, {"data": contact.to_json()})
        if endpoint == "contacts":
            return 200, self._contacts(params)
        return 200, self._dated_lines(params)

    def _contacts(self, params: dict[str, list[str]]) -> dict[str, object]:
        external = set(_many(params, "externalIds"))
        sources = set(_many(params, "sources"))
        if not external and self.quirks.contacts_need_external_ids:
            raise BadRequest("externalIds is required: pass one or more external ids", "/externalIds")
        limit = _max_results(params, top=50)
        ws = self.workspace
        with ws.lock:
            chosen: list[Contact] = [
                c for c in ws.people.contacts.values()
                if (not external or c.external_id in external) and (not sources or c.source in sources)
            ]
            page, token = self._page(chosen, limit, _one(params, "pageToken"))
            data = [c.to_json() for c in page]  # only the page: workspaces hold thousands
        return {"data": data, "totalItems": len(chosen), "nextPageToken": token}

    def _dated_lines(self, params: dict[str, list[str]]) -> dict[str, object]:
        text = _one(params, "include") or ""
        includes = frozenset(p.strip() for p in text.split(",") if p.strip())
        if not includes <= _LINE_INCLUDES:
            raise BadRequest("include must be users, restrictions or businessHours, comma-separated", "/include")
        ws = self.workspace
        with ws.lock:
            lines = [self.dated_line(pn, includes) for pn in ws.phone_numbers.values()]
        return self._cursor_page(lines, params)

    def dated_line(self, pn: PhoneNumber, includes: frozenset[str]) -> dict[str, object]:
        """A line as the dated ``GET /phone-numbers`` shows it: ``phoneNumber`` for ``number``;
        ``users`` and ``restrictions`` only when included."""
        body = self.workspace.line_json(pn)
        body["phoneNumber"] = body.pop("number")
        body.pop("object", None)
        body.pop("portRequestId", None)
        for name in ("users", "restrictions"):
            if name not in includes:
                body.pop(name, None)
        if "restrictions" in includes and body.get("restrictions") is None:
            body["restrictions"] = {"calling": {"CA": "unrestricted", "US": "unrestricted", "Intl": "restricted"},
                                    "messaging": {"CA": "unrestricted", "US": "unrestricted", "Intl": "restricted"}}
        body["symbol"] = "📞"
        return body

    def _cursor_page(self, items: list[dict[str, object]], params: dict[str, list[str]]) -> dict[str, object]:
        limit, query, offset = self._window(params)
        following = offset + limit
        cursor = self._cursor(following, query) if following < len(items) else None
        return {"data": items[offset:following], "nextCursor": cursor}


__all__ = ["DATED_PEOPLE", "PEOPLE_ENDPOINTS", "V1_PEOPLE", "PeopleEndpoints", "match_people"]
