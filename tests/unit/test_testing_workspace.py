"""The simulated API's workspace endpoints (etl.testing), in process through fake.transport().

Phone numbers, conversations and calls (list with paging, get by id), their
consistency with the summaries, the clock, the list quirks and the faults on
every new endpoint. Shapes are checked by hand against the digest of the
public docs (docs/api/more-endpoints.md).
"""

from __future__ import annotations

import datetime as dt
import itertools
import re
from collections.abc import Iterator

import httpx
import pytest

from etl.testing import E164_RE, ApiClock, FakeOpenPhone, Faults, Quirks, sample_summary

KEY = "k"
START = dt.datetime(2026, 11, 20, 12, 0, tzinfo=dt.UTC)
ISO_Z = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d{3})?Z")
CALL_KEYS = {
    "id", "object", "answeredAt", "answeredBy", "initiatedBy", "direction", "status", "completedAt", "createdAt",
    "duration", "forwardedFrom", "forwardedTo", "phoneNumberId", "participants", "updatedAt", "userId",
}  # fmt: skip


def make(seed: int = 0, **kw: object) -> FakeOpenPhone:
    fake = FakeOpenPhone(api_key=KEY, seed=seed, clock=ApiClock(START), **kw)  # type: ignore[arg-type]
    fake.workspace.generate(phone_numbers=2, conversations=3, calls=4)
    return fake


def client(fake: FakeOpenPhone) -> httpx.Client:
    return httpx.Client(
        transport=fake.transport(), base_url="https://api.openphone.com", headers={"Authorization": KEY}
    )


def walk(c: httpx.Client, path: str, params: dict[str, object]) -> Iterator[httpx.Response]:
    """Every page of a listing, following nextPageToken until it is null."""
    token: str | None = None
    for _ in range(1000):
        resp = c.get(path, params={**params, **({"pageToken": token} if token else {})})
        assert resp.status_code == 200, resp.text
        yield resp
        token = resp.json()["nextPageToken"]
        if token is None:
            return
    raise AssertionError("paging never ended")


def ids(pages: Iterator[httpx.Response]) -> list[str]:
    return [item["id"] for page in pages for item in page.json()["data"]]


def call_params(fake: FakeOpenPhone, conversation_id: str, **extra: object) -> dict[str, object]:
    conv = fake.workspace.conversations[conversation_id]
    return {"phoneNumberId": conv.phone_number_id, "participants[]": conv.participants, **extra}


def check_call(call: dict[str, object]) -> None:
    assert call.keys() >= CALL_KEYS
    assert call["object"] == "call" and str(call["id"]).startswith("AC")
    assert call["direction"] in ("incoming", "outgoing")
    for name in ("createdAt", "updatedAt"):
        assert ISO_Z.fullmatch(str(call[name]))
    if call["status"] == "completed":
        assert ISO_Z.fullmatch(str(call["answeredAt"])) and ISO_Z.fullmatch(str(call["completedAt"]))
        assert str(call["createdAt"]) < str(call["answeredAt"]) < str(call["completedAt"]) == call["updatedAt"]
        assert isinstance(call["duration"], int) and call["duration"] > 0
    else:
        assert call["answeredAt"] is None
    assert isinstance(call["participants"], list)


# -- generation and shapes ---------------------------------------------------------


def test_generated_workspace_is_deterministic_from_seed_and_clock() -> None:
    def snapshot(seed: int) -> list[object]:
        fake = make(seed)
        with client(fake) as c:
            out: list[object] = [c.get("/v1/phone-numbers").json()]
            out += [p.json() for p in walk(c, "/v1/conversations", {"maxResults": 100})]
            for conv_id in fake.workspace.conversations:
                out += [p.json() for p in walk(c, "/v1/calls", call_params(fake, conv_id, maxResults=100))]
        return out

    assert snapshot(1) == snapshot(1)
    assert snapshot(1) != snapshot(2)


def test_phone_numbers_conversations_and_calls_have_the_documented_shapes() -> None:
    fake = make()
    ws = fake.workspace
    assert (len(ws.phone_numbers), len(ws.conversations), len(ws.calls)) == (2, 6, 24)
    with client(fake) as c:
        numbers = c.get("/v1/phone-numbers").json()["data"]
        assert [n["id"] for n in numbers] == list(ws.phone_numbers)
        for n in numbers:
            assert n["id"].startswith("PN") and E164_RE.fullmatch(n["number"]) and n["users"]
        convs = c.get("/v1/conversations", params={"maxResults": 100}).json()
        assert convs.keys() == {"data", "nextPageToken"} and convs["nextPageToken"] is None
        for conv in convs["data"]:
            assert {"id", "phoneNumberId", "participants", "lastActivityAt", "createdAt", "updatedAt"} <= conv.keys()
            assert all(E164_RE.fullmatch(p) for p in conv["participants"])
        statuses = set()
        for conv_id in ws.conversations:
            listing = c.get("/v1/calls", params=call_params(fake, conv_id, maxResults=100)).json()
            assert listing.keys() == {"data", "totalItems", "nextPageToken"}
            assert listing["totalItems"] == len(listing["data"]) == 4
            created = [call["createdAt"] for call in listing["data"]]
            assert created == sorted(created, reverse=True)  # newest first
            for call in listing["data"]:
                check_call(call)
                statuses.add(call["status"])
                # The same call by id, in {data: call}.
                assert c.get(f"/v1/calls/{call['id']}").json() == {"data": call}
        assert "completed" in statuses and statuses - {"completed"}


def test_summaries_are_consistent_with_calls() -> None:
    fake = make()
    with client(fake) as c:
        for call in fake.workspace.calls.values():
            resp = c.get(f"/v1/call-summaries/{call.id}")
            if call.status == "completed":
                assert resp.json() == {"data": sample_summary(call.id)}
            else:
                assert resp.status_code == 404  # a missed call has no summary
        # A fake answering summaries for any id answers its call too (the benchmark's ids).
        other = c.get("/v1/calls/ACnotinworkspace").json()["data"]
        check_call(other)
        assert other["id"] == "ACnotinworkspace" and other["status"] == "completed"
        assert c.get("/v1/calls/ACnotinworkspace").json()["data"] == other
    bare = FakeOpenPhone(api_key=KEY, default_status=None)
    with client(bare) as c:
        assert c.get("/v1/calls/ACnotinworkspace").status_code == 404
        resp = c.get("/v1/calls/XY1")
        assert resp.status_code == 400 and resp.json()["code"] == "0500400"


# -- paging and filters ------------------------------------------------------------


@pytest.mark.parametrize("size", [1, 2, 5, 100])
def test_paging_visits_every_conversation_once(size: int) -> None:
    fake = make()
    with client(fake) as c:
        seen = ids(walk(c, "/v1/conversations", {"maxResults": size}))
    assert sorted(seen) == sorted(fake.workspace.conversations)


def test_conversation_filters() -> None:
    fake = make()
    ws = fake.workspace
    pn = next(iter(ws.phone_numbers.values()))
    mine = sorted(cid for cid, conv in ws.conversations.items() if conv.phone_number_id == pn.id)
    with client(fake) as c:
        assert sorted(ids(walk(c, "/v1/conversations", {"phoneNumbers[]": [pn.id], "maxResults": 2}))) == mine
        assert sorted(ids(walk(c, "/v1/conversations", {"phoneNumbers": pn.number}))) == mine  # E.164 works too
        # A call added now makes exactly its conversation "updated since" a moment ago.
        fake.clock.advance(3600)
        since = fake.clock.now()
        fake.clock.advance(60)
        target = mine[0]
        call = ws.add_call(target)
        assert ids(walk(c, "/v1/conversations", {"updatedAfter": since.isoformat()})) == [target]
        assert ws.conversations[target].updated_at == call.updated_at
        before = ids(walk(c, "/v1/conversations", {"updatedBefore": "2000-01-01T00:00:00Z"}))
        assert before == []
        created = ids(walk(c, "/v1/conversations", {"createdAfter": since.isoformat()}))
        assert created == []


def test_calls_created_window_and_added_calls() -> None:
    fake = make()
    ws = fake.workspace
    conv_id = next(iter(ws.conversations))
    with client(fake) as c:
        everything = ids(walk(c, "/v1/calls", call_params(fake, conv_id, maxResults=3)))
        assert len(everything) == 4
        watermark = fake.clock.now()
        assert ids(walk(c, "/v1/calls", call_params(fake, conv_id, createdAfter=watermark.isoformat()))) == []
        fake.clock.advance(120)
        new = ws.add_call(conv_id)  # at the fake's now
        later = ws.add_call(conv_id, at=watermark + dt.timedelta(hours=2), status="missed")
        window = ids(walk(c, "/v1/calls", call_params(fake, conv_id, createdAfter=watermark.isoformat())))
        assert window == [later.id, new.id]
        bounded = call_params(fake, conv_id, createdAfter=watermark.isoformat(),
                              createdBefore=(watermark + dt.timedelta(hours=1)).isoformat())  # fmt: skip
        assert ids(walk(c, "/v1/calls", bounded)) == [new.id]
        assert new.created_at == START + dt.timedelta(seconds=120)
        # Another participant set is another conversation: nothing listed.
        other = {**call_params(fake, conv_id), "participants[]": ["+15550009999"]}
        assert ids(walk(c, "/v1/calls", other)) == []


@pytest.mark.parametrize(
    ("path", "params", "where"),
    [
        ("/v1/calls", {"participants[]": "+15550001111"}, "/phoneNumberId"),
        ("/v1/calls", {"phoneNumberId": "PN1"}, "/participants"),
        ("/v1/calls", {"phoneNumberId": "PN1", "participants": "+1555", "maxResults": "0"}, "/maxResults"),
        ("/v1/conversations", {"maxResults": "101"}, "/maxResults"),
        ("/v1/conversations", {"maxResults": "ten"}, "/maxResults"),
        ("/v1/conversations", {"pageToken": "not-a-token"}, "/pageToken"),
        ("/v1/conversations", {"updatedAfter": "yesterday"}, "/updatedAfter"),
    ],
)
def test_bad_list_parameters_answer_400(path: str, params: dict[str, str], where: str) -> None:
    with client(make()) as c:
        resp = c.get(path, params=params)
    assert resp.status_code == 400
    body = resp.json()
    assert body["code"] == "0500400" and body["errors"][0]["path"] == where


def test_new_endpoints_check_the_key() -> None:
    fake = make()
    with httpx.Client(transport=fake.transport(), base_url="https://x") as c:
        for path in ("/v1/phone-numbers", "/v1/conversations", "/v1/calls/AC1", "/v1/webhooks"):
            assert c.get(path).status_code == 401
            assert c.get(path, headers={"Authorization": "Bearer " + KEY}).status_code == 401
    assert fake.stats()["endpoints"] == {
        "call": {"requests": 2, "429": 0},
        "conversations": {"requests": 2, "429": 0},
        "phone-numbers": {"requests": 2, "429": 0},
        "webhooks": {"requests": 2, "429": 0},
    }


# -- quirks ------------------------------------------------------------------------


def test_quirk_repeat_item_repeats_the_previous_pages_last_item() -> None:
    fake = make(quirks=Quirks(repeat_item=True))
    with client(fake) as c:
        pages = [[i["id"] for i in p.json()["data"]] for p in walk(c, "/v1/conversations", {"maxResults": 4})]
    assert all(len(p) <= 4 for p in pages)
    for prev, page in itertools.pairwise(pages):
        assert page[0] == prev[-1]
    flat = [i for p in pages for i in p]
    assert len(flat) == len(set(flat)) + len(pages) - 1
    assert set(flat) == set(fake.workspace.conversations)


def test_quirk_empty_page_with_a_next_token() -> None:
    fake = make(quirks=Quirks(empty_page=True))
    with client(fake) as c:
        pages = [p.json() for p in walk(c, "/v1/conversations", {"maxResults": 2})]
    assert [len(p["data"]) for p in pages] == [2, 0, 2, 2]
    assert pages[1]["nextPageToken"] is not None
    assert sorted(i["id"] for p in pages for i in p["data"]) == sorted(fake.workspace.conversations)


def test_quirk_call_listed_twice_and_a_busy_conversation() -> None:
    fake = FakeOpenPhone(api_key=KEY, clock=ApiClock(START))
    fake.workspace.generate(phone_numbers=1, conversations=1, calls=3, busy_calls=300)
    busy = next(cid for cid, conv in fake.workspace.conversations.items() if conv.participants == ["+15550001000"])
    twice = sorted(c.id for c in fake.workspace.calls.values() if c.conversation_id == busy)[5]
    fake.quirks = Quirks(listed_twice=frozenset({twice}))
    with client(fake) as c:
        pages = list(walk(c, "/v1/calls", call_params(fake, busy, maxResults=100)))
    listed = [i["id"] for p in pages for i in p.json()["data"]]
    assert len(pages) == 4 and len(listed) == 301
    assert pages[0].json()["totalItems"] == 301
    assert listed.count(twice) == 2 and len(set(listed)) == 300


def test_non_e164_participants_and_missing_summaries() -> None:
    fake = FakeOpenPhone(api_key=KEY, clock=ApiClock(START))
    fake.workspace.generate(phone_numbers=1, conversations=2, calls=3, non_e164=True, missing_summaries=2)
    odd = [c for c in fake.workspace.conversations.values() if not all(E164_RE.fullmatch(p) for p in c.participants)]
    assert len(odd) == 1 and odd[0].participants == ["5550001", "anonymous"]
    with client(fake) as c:
        listing = c.get("/v1/calls", params=call_params(fake, odd[0].id)).json()["data"]
        assert len(listing) == 1 and listing[0]["participants"] == ["5550001", "anonymous"]
        missing = sorted(fake.workspace.summary_missing)
        assert len(missing) == 2
        for call_id in missing:
            assert fake.workspace.calls[call_id].status == "completed"
            assert c.get(f"/v1/calls/{call_id}").status_code == 200
            assert c.get(f"/v1/call-summaries/{call_id}").status_code == 404


def test_summary_answers_404_until_generated_then_200() -> None:
    fake = FakeOpenPhone(api_key=KEY, clock=ApiClock(START), quirks=Quirks(summary_pending_seconds=600))
    pn = fake.workspace.add_phone_number()
    conv = fake.workspace.add_conversation(pn.id, ["+15550002000"])
    call = fake.workspace.add_call(conv.id, duration=60)
    assert call.completed_at is not None
    with client(fake) as c:
        path = f"/v1/call-summaries/{call.id}"
        assert c.get(path).status_code == 404
        fake.clock.advance((call.completed_at - START).total_seconds() + 599)
        assert c.get(path).status_code == 404
        fake.clock.advance(1)
        assert c.get(path).json() == {"data": sample_summary(call.id)}


def test_wall_clock_by_default() -> None:
    clock = ApiClock()
    before = dt.datetime.now(dt.UTC)
    assert before <= clock.now() <= dt.datetime.now(dt.UTC)
    clock.advance(3600)
    assert clock.now() - dt.datetime.now(dt.UTC) > dt.timedelta(minutes=59)


# -- faults and statistics on the new endpoints --------------------------------------


@pytest.mark.parametrize("path", ["/v1/phone-numbers", "/v1/conversations", "/v1/calls/ACx", "/v1/webhooks"])
def test_faults_on_every_new_endpoint(path: str) -> None:
    fake = make(faults=Faults(error_500=1.0, max_per_id=2))
    with client(fake) as c:
        assert [c.get(path).status_code for _ in range(3)] == [500, 500, 200]

    def only(**kw: object) -> FakeOpenPhone:
        return make(faults=Faults(max_per_id=None, **kw))  # type: ignore[arg-type]

    with client(only(rate_429=1.0, retry_after="3")) as c:
        resp = c.get(path)
        assert (resp.status_code, resp.headers["retry-after"], resp.json()["code"]) == (429, "3", "0500429")
    with client(only(rate_429=1.0, retry_after=None)) as c:
        resp = c.get(path)
        assert resp.status_code == 429 and "retry-after" not in resp.headers
    with client(only(garbage=1.0)) as c:
        resp = c.get(path)
        assert resp.status_code == 200 and resp.headers["content-type"] == "text/html"
    with client(only(truncated=1.0)) as c, pytest.raises(ValueError):
        c.get(path).json()
    with client(only(schema_violation=1.0)) as c:
        body = c.get(path).json()
        assert not (isinstance(body, dict) and isinstance(body.get("data"), list | dict))
    with client(only(drop=1.0)) as c, pytest.raises(httpx.RemoteProtocolError):
        c.get(path)
    with client(only(hang=1.0)) as c, pytest.raises(httpx.ReadTimeout):
        c.get(path)


def test_faults_limited_to_some_endpoints_and_reproducible() -> None:
    faults = Faults(seed=7, error_500=0.3, garbage=0.2, max_per_id=None, endpoints=frozenset({"conversations"}))

    def story() -> list[int]:
        fake = make(faults=faults)
        with client(fake) as c:
            assert c.get("/v1/phone-numbers").status_code == 200  # not a faulty endpoint
            return [c.get("/v1/conversations", params={"maxResults": 2}).status_code for _ in range(30)]

    first = story()
    assert first == story() and set(first) == {200, 500}


def test_rate_limit_and_request_log_per_endpoint() -> None:
    fake = make(rate=10, burst=5)
    with client(fake) as c:
        codes = [c.get("/v1/phone-numbers").status_code for _ in range(4)]
        codes += [c.get("/v1/conversations").status_code for _ in range(4)]
    assert codes == [200] * 5 + [429] * 3
    stats = fake.stats(times=True)
    assert stats["endpoints"] == {
        "conversations": {"requests": 4, "429": 3},
        "phone-numbers": {"requests": 4, "429": 0},
    }
    assert stats["outcomes"] == {"200": 5, "429": 3}
    times = stats["times"]
    assert isinstance(times, dict) and len(times["conversations"]) == 4
    everything = fake.request_times()
    assert len(everything) == 8 and everything == sorted(everything)
    assert fake.request_times("phone-numbers") == times["phone-numbers"]
    assert fake.request_times("calls") == []


def test_a_synthesised_call_is_the_same_call_on_every_read() -> None:
    """Two reads of one unknown id straddling a second agree (the v1 transcript read it twice and drifted by 1 s)."""
    clock = ApiClock(dt.datetime(2026, 3, 30, 12, 0, 0, 900_000, tzinfo=dt.UTC))
    fake = FakeOpenPhone(clock=clock, default_status="completed")
    first = fake.workspace.synth_call("ACsynthsame01")
    clock.advance(0.2)  # past a whole second
    assert fake.workspace.synth_call("ACsynthsame01") == first
    data = fake.transcript_v1("ACsynthsame01")
    assert data is not None and data["dialogue"]
    segments = fake.transcript_segments("ACsynthsame01")
    assert segments is not None
    first_line = segments[0]["dialogue"][0]  # type: ignore[index]
    offset = (dt.datetime.fromisoformat(str(segments[0]["startTime"])) - first.created_at).total_seconds()
    assert data["dialogue"][0]["start"] == offset + first_line["start"]  # type: ignore[index]
