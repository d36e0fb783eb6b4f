"""The client's calls / phone numbers / conversations requests over an httpx.MockTransport.

Same request path as the summary fetch: retries with backoff (Retry-After
honoured), 401/403 raise, 404/400 are results, bodies over the limit are
rejected, and every request carries the key and the documented parameters.
"""

from __future__ import annotations

import json
from datetime import datetime

import httpx
import pytest

from etl.api import OpenPhoneClient, api_time
from etl.clock import SYSTEM
from etl.config import Settings
from etl.errors import AuthError

KEY = "test-key-0123456789"
CALL = {"id": "AC1", "createdAt": "2026-11-25T10:00:00Z", "completedAt": "2026-11-25T10:01:00Z",
        "direction": "incoming", "status": "completed", "duration": 60, "participants": ["+15555550123"],
        "phoneNumberId": "PN1", "userId": "US1", "newField": [1, 2]}


def client(handler, **changes) -> OpenPhoneClient:
    settings = Settings(api_key=KEY, base_url="http://api.test", rate=0, retry_attempts=3, retry_initial=0.001,
                        retry_max=0.01, **changes)
    return OpenPhoneClient(settings, clock=SYSTEM, transport=httpx.MockTransport(handler))


def answers(*replies: httpx.Response):
    seen: list[httpx.Request] = []
    queue = list(replies)

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return queue.pop(0) if len(queue) > 1 else queue[0]

    return handler, seen


def test_get_call_parses_and_keeps_the_raw_object():
    handler, seen = answers(httpx.Response(200, json={"data": CALL}))
    result = client(handler).get_call("AC1")
    assert (result.kind, result.http_status, result.tries) == ("ok", 200, 1)
    assert result.data is not None and result.data.id == "AC1" and result.data.duration == 60
    assert result.raw == CALL  # unknown fields kept
    assert seen[0].url == "http://api.test/v1/calls/AC1"
    assert seen[0].headers["authorization"] == KEY


def test_get_call_retries_429_5xx_and_garbage_then_succeeds():
    handler, seen = answers(
        httpx.Response(429, json={"message": "slow down"}, headers={"Retry-After": "0"}),
        httpx.Response(502, content=b"<html>bad gateway</html>"),
        httpx.Response(200, json={"data": CALL}),
    )
    result = client(handler).get_call("AC1")
    assert (result.kind, result.tries, len(seen)) == ("ok", 3, 3)


@pytest.mark.parametrize(("reply", "kind", "error"), [
    (httpx.Response(404, json={"message": "Call not found"}), "not_found", "HTTP 404 Not Found: Call not found"),
    (httpx.Response(400, json={"message": "bad id"}), "invalid", "HTTP 400 Bad Request: bad id"),
    (httpx.Response(200, content=b"not json"), "transient", "200 with a body that is not JSON"),
    (httpx.Response(200, json={"data": {"id": 5}}), "transient",
     "200 with a body that violates the schema: data.id: Input should be a valid string"),
    (httpx.Response(200, json={"data": dict(CALL, id="AC2")}), "transient", "200 for another call id ('AC2')"),
    (httpx.Response(503, json={"message": "down"}), "transient", "HTTP 503 Service Unavailable: down"),
])
def test_get_call_outcomes(reply, kind, error):
    handler, seen = answers(reply)
    result = client(handler).get_call("AC1")
    assert (result.kind, result.error) == (kind, error)
    assert len(seen) == (3 if kind == "transient" else 1)


def test_body_over_the_limit_is_rejected():
    handler, _ = answers(httpx.Response(200, content=b"x" * 2000))
    assert client(handler, max_body_bytes=1000).get_call("AC1").kind == "rejected"


def test_refused_key_raises_and_a_malformed_id_is_never_sent():
    handler, seen = answers(httpx.Response(403, json={"message": "no"}))
    with pytest.raises(AuthError):
        client(handler).list_phone_numbers()
    assert client(handler).get_call("AC1/../x").kind == "invalid"
    assert len(seen) == 1


def test_list_calls_sends_the_documented_parameters():
    page = {"data": [CALL], "totalItems": 99, "nextPageToken": "tok2"}
    handler, seen = answers(httpx.Response(200, json=page))
    result = client(handler).list_calls("PN1", "+15555550123", datetime(2026, 11, 1, 0, 0, 0, 500000), "tok1")
    assert result.kind == "ok" and result.data is not None
    assert (result.data.next, [c.id for c in result.data.items]) == ("tok2", ["AC1"])
    assert result.raw["data"][0] == CALL and result.data.raws[0] == CALL
    params = dict(seen[0].url.params.multi_items())
    assert params == {"phoneNumberId": "PN1", "participants[]": "+15555550123", "maxResults": "100",
                      "createdAfter": "2026-11-01T00:00:00.500Z", "pageToken": "tok1"}


def test_list_conversations_and_phone_numbers():
    conv = {"data": [{"id": "CN1", "participants": ["+15555550123"], "phoneNumberId": "PN1",
                      "updatedAt": "2026-11-25T10:00:00Z", "extra": 1}], "nextPageToken": None, "totalItems": 1}
    handler, seen = answers(httpx.Response(200, json=conv),
                            httpx.Response(200, json={"data": [{"id": "PN1", "number": "+15550000001"}]}))
    c = client(handler)
    result = c.list_conversations("PN1", datetime(2026, 11, 2))
    assert result.data is not None and result.data.items[0].participants == ("+15555550123",)
    assert dict(seen[0].url.params.multi_items()) == {
        "phoneNumbers[]": "PN1", "maxResults": "100", "updatedAfter": "2026-11-02T00:00:00.000Z"}
    lines = c.list_phone_numbers()
    assert lines.data is not None and [(x.id, x.number) for x in lines.data.items] == [("PN1", "+15550000001")]
    assert lines.data.next is None


def test_api_time():
    assert api_time(datetime(2026, 1, 2, 3, 4, 5, 678901)) == "2026-01-02T03:04:05.678Z"
    assert json.dumps(api_time(datetime(2026, 1, 2))) == '"2026-01-02T00:00:00.000Z"'
