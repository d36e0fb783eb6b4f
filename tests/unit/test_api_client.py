"""The OpenPhone API client (etl/api/) against the simulated API (etl.testing).

Every answer of docs/contract.md's queue table as the client reports it: headers sent,
200 validation, 401/403, 404/400, 429 with Retry-After, oversize bodies and
in-run retries.  Requests go through FakeOpenPhone.transport() (wrapped only to
record what was sent and received) or a real HTTP server from serve().
"""

from __future__ import annotations

import email.utils
import hashlib
import json
import threading
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from etl import __version__
from etl.api import USER_AGENT, OpenPhoneClient, SummaryResult, parse_retry_after
from etl.clock import SYSTEM
from etl.config import Settings
from etl.errors import AuthError
from etl.results import Summary
from etl.testing import FakeOpenPhone, Faults, serve
from tests.support.tcpproxy import TcpProxy

KEY = "key-0123456789abcdef"
SETTINGS = Settings(api_key=KEY, base_url="http://fake.test", rate=0, retry_initial=0.001, retry_max=0.01)
NOW = datetime(2015, 10, 21, 7, 27, 0, tzinfo=UTC)
GOOD = {"callId": "AC1", "status": "completed", "summary": ["Hello."], "nextSteps": ["Call back."]}
ERROR_404 = {"message": "Call not found", "code": "0500404", "status": 404, "docs": "https://openphone.com/docs",
             "title": "Not Found"}
ERROR_400 = {"message": "Invalid call id", "code": "0500400", "status": 400, "docs": "https://openphone.com/docs",
             "title": "Bad Request"}
ERROR_429 = {"message": "Too many requests", "code": "0500429", "status": 429, "docs": "https://openphone.com/docs",
             "title": "Too Many Requests"}


class Recorder(httpx.BaseTransport):
    """Wraps the fake's own transport and keeps every request and response body."""

    def __init__(self, fake: FakeOpenPhone) -> None:
        self.inner = fake.transport()
        self.requests: list[httpx.Request] = []
        self.bodies: list[bytes] = []

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        response = self.inner.handle_request(request)
        self.bodies.append(response.read())
        return response

    def transport(self) -> Recorder:
        return self


def fetch(fake: FakeOpenPhone | Recorder, call_id: str, settings: Settings = SETTINGS, **kw: Any) -> SummaryResult:
    with OpenPhoneClient(settings, clock=SYSTEM, transport=fake.transport()) as client:
        return client.fetch_summary(call_id, **kw)


@pytest.fixture
def fake() -> FakeOpenPhone:
    return FakeOpenPhone(api_key=KEY, default_status=None)


# -- request headers -----------------------------------------------------------


def test_headers_bare_key_and_user_agent(fake):
    fake.set_summary("AC1", GOOD)
    rec = Recorder(fake)
    assert fetch(rec, "AC1").kind == "ok"
    [request] = rec.requests
    assert request.headers["Authorization"] == KEY  # no "Bearer"
    assert request.headers["User-Agent"] == USER_AGENT
    assert USER_AGENT.startswith(f"openphone-summary-sync/{__version__} ")
    assert request.url == httpx.URL("http://fake.test/v1/call-summaries/AC1")
    assert request.method == "GET"


def test_client_requires_api_key():
    with pytest.raises(ValueError, match="an API key is required"):
        OpenPhoneClient(clock=SYSTEM, settings=Settings(api_key=None))


# -- 200 ---------------------------------------------------------------------------


def test_200_completed(fake):
    fake.set_summary("AC1", GOOD)
    rec = Recorder(fake)
    result = fetch(rec, "AC1")
    [body] = rec.bodies
    assert (result.kind, result.http_status, result.tries, result.error) == ("ok", 200, 1, None)
    assert result.data is not None
    assert result.data.summary == Summary(call_id="AC1", status="completed", lines=("Hello.",),
                                          next_steps=("Call back.",), jobs=())
    assert result.data.raw_json == body.decode("utf-8")
    assert result.data.content_hash == hashlib.sha256(body).hexdigest()
    assert result.api_status == "completed"


@pytest.mark.parametrize("status", ["absent", "in-progress", "completed", "failed"])
def test_200_every_status(fake, status):
    fake.set_summary("AC1", {"callId": "AC1", "status": status, "summary": None, "nextSteps": None})
    result = fetch(fake, "AC1")
    assert (result.kind, result.data.summary.status, result.api_status) == ("ok", status, status)


def test_200_extra_keys_ignored_but_kept_in_raw_json(fake):
    fake.set_summary("AC1", {**GOOD, "sentiment": "positive"})
    result = fetch(fake, "AC1")
    assert result.kind == "ok"
    assert json.loads(result.data.raw_json)["data"]["sentiment"] == "positive"


BAD_200 = [
    ("wrong status", {**GOOD, "status": "done"},
     "200 with a body that violates the schema: data.status: "
     "Input should be 'absent', 'in-progress', 'completed' or 'failed'"),
    ("summary as string", {**GOOD, "summary": "one line"},
     "200 with a body that violates the schema: data.summary: Input should be a valid array"),
    ("missing nextSteps", {k: v for k, v in GOOD.items() if k != "nextSteps"},
     "200 with a body that violates the schema: data.nextSteps: Field required"),
    ("job value an object",
     {**GOOD, "jobs": [{"icon": "i", "name": "n", "result": {"data": [{"name": "f", "value": {"a": 1}}]}}]},
     "200 with a body that violates the schema: data.jobs.0.result.data.0.value.bool: "
     "Input should be a valid boolean (+3 more)"),
    ("number line", {**GOOD, "nextSteps": [1]},
     "200 with a body that violates the schema: data.nextSteps.0: Input should be a valid string"),
    ("callId mismatch", {**GOOD, "callId": "ACother"}, "200 for another call id ('ACother')"),
]


@pytest.mark.parametrize(("case", "data", "error"), BAD_200, ids=[c[0] for c in BAD_200])
def test_200_invalid_body_is_transient_after_retries(fake, case, data, error):
    fake.set_summary("AC1", data)
    result = fetch(fake, "AC1")
    assert (result.kind, result.http_status, result.tries, result.error) == ("transient", 200, 3, error)
    assert result.data is None
    assert fake.requests["AC1"] == 3


@pytest.mark.parametrize(("body", "error"), [
    (b"<html>oops</html>", "200 with a body that violates the schema: body: Invalid JSON: expected value at line 1 "
                           "column 1"),
    (b'{"data":', "200 with a body that violates the schema: body: Invalid JSON: EOF while parsing a value at "
                  "line 1 column 8"),
    (b'{"data":null}', "200 with a body that violates the schema: data: Input should be an object"),
    (b'{"data":{"callId":"AC1","status":"completed","summary":["\xff"],"nextSteps":null}}',
     "200 with a body that is not UTF-8"),
])
def test_200_unparsable_body_is_transient(fake, body, error):
    fake.set_response("AC1", 200, body)
    result = fetch(fake, "AC1")
    assert (result.kind, result.tries, result.error) == ("transient", 3, error)


def test_boolean_job_value_stays_boolean(fake):
    fake.set_summary("AC1", {**GOOD, "jobs": [{"icon": "i", "name": "n", "result": {"data": [
        {"name": "b", "value": True}, {"name": "i", "value": 1}, {"name": "f", "value": 1.5},
        {"name": "s", "value": "1"}]}}]})
    result = fetch(fake, "AC1")
    values = [f.value for f in result.data.summary.jobs[0].fields]
    assert values == [True, 1, 1.5, "1"]
    assert [type(v) for v in values] == [bool, int, float, str]


# -- auth --------------------------------------------------------------------------


def test_401_raises_auth_error():
    fake = FakeOpenPhone(api_key="another-key")
    with pytest.raises(AuthError) as info:
        fetch(fake, "AC1")
    assert info.value.http_status == 401
    assert str(info.value) == "HTTP 401 Unauthorized: Missing or invalid API key"
    assert fake.total_requests == 1  # never retried


def test_403_raises_auth_error():
    fake = FakeOpenPhone(api_key=KEY, forbidden_keys=frozenset({KEY}))
    with pytest.raises(AuthError) as info:
        fetch(fake, "AC1")
    assert info.value.http_status == 403
    assert str(info.value) == "HTTP 403 Forbidden: This API key is not allowed to access call summaries"
    assert info.value.exit_code == 3


# -- 404 / 400 -----------------------------------------------------------------------


def test_404_is_not_found(fake):
    result = fetch(fake, "AC404")
    assert (result.kind, result.http_status, result.tries, result.error, result.api_status) == (
        "not_found", 404, 1, "HTTP 404 Not Found: Call summary not found", "http 404")
    assert fake.requests["AC404"] == 1


def test_404_with_custom_message(fake):
    fake.set_response("AC1", 404, ERROR_404)
    assert fetch(fake, "AC1").error == "HTTP 404 Not Found: Call not found"


def test_400_is_invalid(fake):
    fake.set_response("AC1", 400, ERROR_400)
    result = fetch(fake, "AC1")
    assert (result.kind, result.http_status, result.tries, result.error) == (
        "invalid", 400, 1, "HTTP 400 Bad Request: Invalid call id")


@pytest.mark.parametrize("call_id", ["AC1/../../v1/users", "AC1?x=1", "AC 1", "bad", "AC" + "1" * 65, "AC1\n"])
def test_malformed_id_is_never_sent(fake, call_id):
    rec = Recorder(fake)
    result = fetch(rec, call_id)
    assert (result.kind, result.http_status, result.tries, result.error) == (
        "invalid", None, 0, "malformed call id")
    assert rec.requests == []


def test_error_without_json_body_uses_reason_phrase(fake):
    fake.set_response("AC1", 502, b"<html>bad gateway</html>", {"content-type": "text/html"})
    result = fetch(fake, "AC1")
    assert (result.kind, result.http_status, result.error) == ("transient", 502, "HTTP 502 Bad Gateway")


# -- 429 and Retry-After ---------------------------------------------------------------

ONE_TRY = SETTINGS.replace(retry_attempts=1)


def test_429_retry_after_seconds(fake):
    fake.set_response("AC1", 429, ERROR_429, {"Retry-After": "120"})
    result = fetch(fake, "AC1", ONE_TRY)
    assert (result.kind, result.http_status, result.tries, result.retry_after, result.error) == (
        "transient", 429, 1, 120.0, "HTTP 429 Too Many Requests: Too many requests")
    assert result.api_status == "http 429"


def test_429_retry_after_http_date(fake):
    when = datetime.now(UTC) + timedelta(seconds=600)
    fake.set_response("AC1", 429, ERROR_429, {"Retry-After": email.utils.format_datetime(when, usegmt=True)})
    result = fetch(fake, "AC1", ONE_TRY)
    assert result.kind == "transient"
    assert 590 < result.retry_after <= 600


@pytest.mark.parametrize("header", [None, "0", "-5", "soon", ""])
def test_429_retry_after_missing_or_useless(fake, header):
    fake.set_response("AC1", 429, ERROR_429, {"Retry-After": header} if header is not None else None)
    result = fetch(fake, "AC1", ONE_TRY)
    assert (result.kind, result.http_status, result.retry_after) == ("transient", 429, None)


def test_429_then_success_within_the_run(fake):
    fake.faults = Faults(rate_429=1.0, retry_after="0.01", max_per_id=1)
    fake.set_summary("AC1", GOOD)
    result = fetch(fake, "AC1")
    assert (result.kind, result.tries) == ("ok", 2)
    assert fake.outcomes["429"] == 1


def test_retry_after_longer_than_budget_gives_up_for_this_run(fake):
    fake.set_response("AC1", 429, ERROR_429, {"Retry-After": "300"})
    result = fetch(fake, "AC1", max_wait=1.0)
    assert (result.kind, result.tries, result.retry_after, result.http_status) == ("transient", 1, 300.0, 429)
    assert fake.requests["AC1"] == 1


def test_parse_retry_after_seconds():
    assert parse_retry_after("120", NOW) == 120.0
    assert parse_retry_after(" 2.5 ", NOW) == 2.5
    assert parse_retry_after("99999", NOW) == 3600.0  # never park a worker for more than an hour


def test_parse_retry_after_http_date():
    now = datetime(2015, 10, 21, 7, 27, 0, tzinfo=UTC)
    assert parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT", now) == 60.0
    assert parse_retry_after("Wed, 21 Oct 2015 07:27:00 GMT", now) is None  # not in the future
    assert parse_retry_after("Wed, 21 Oct 2015 07:00:00 GMT", now) is None  # in the past
    assert parse_retry_after("Wed, 21 Oct 2015 09:27:00 GMT", now) == 3600.0


@pytest.mark.parametrize("value", [None, "", "0", "-5", "-0.1", "nan", "soon", "Wed, 99 Foo 2015"])
def test_parse_retry_after_useless_values(value):
    assert parse_retry_after(value, NOW) is None


# -- oversize bodies -------------------------------------------------------------------


def test_oversize_body_is_rejected(fake):
    fake.set_summary("AC1", {**GOOD, "summary": ["x" * 5000]})
    result = fetch(fake, "AC1", SETTINGS.replace(max_body_bytes=1000))
    assert (result.kind, result.http_status, result.tries, result.error) == (
        "rejected", 200, 1, "response body larger than 1000 bytes")
    assert fake.requests["AC1"] == 1  # not retried: it would be as large next time


def test_body_at_the_limit_is_accepted(fake):
    fake.set_summary("AC1", GOOD)
    size = len(json.dumps({"data": GOOD}, separators=(",", ":")).encode())
    assert fetch(fake, "AC1", SETTINGS.replace(max_body_bytes=size)).kind == "ok"
    assert fetch(fake, "AC1", SETTINGS.replace(max_body_bytes=size - 1)).kind == "rejected"


# -- in-run retries ----------------------------------------------------------------------


def test_two_500s_then_success_takes_three_tries(fake):
    fake.faults = Faults(error_500=1.0, max_per_id=2)
    fake.set_summary("AC1", GOOD)
    result = fetch(fake, "AC1")
    assert (result.kind, result.tries, result.http_status) == ("ok", 3, 200)
    assert fake.requests["AC1"] == 3


def test_500_every_time_is_transient_after_three_tries(fake):
    fake.faults = Faults(error_500=1.0, max_per_id=None)
    result = fetch(fake, "AC1")
    assert (result.kind, result.tries, result.http_status, result.error) == (
        "transient", 3, 500, "HTTP 500 Internal Server Error: Something went wrong")
    assert fake.requests["AC1"] == 3


def test_dropped_connections_then_success(fake):
    fake.faults = Faults(drop=1.0, max_per_id=2)
    fake.set_summary("AC1", GOOD)
    result = fetch(fake, "AC1")
    assert (result.kind, result.tries) == ("ok", 3)


def test_timeouts_every_time(fake):
    fake.faults = Faults(hang=1.0, max_per_id=None)
    result = fetch(fake, "AC1")
    assert (result.kind, result.tries, result.http_status, result.error) == (
        "transient", 3, None, "timeout (ReadTimeout)")
    assert result.api_status == "no response"


def test_retry_attempts_setting_is_honoured(fake):
    fake.faults = Faults(error_500=1.0, max_per_id=None)
    result = fetch(fake, "AC1", SETTINGS.replace(retry_attempts=5))
    assert (result.kind, result.tries) == ("transient", 5)
    assert fake.requests["AC1"] == 5


# -- over a real socket ------------------------------------------------------------------


def test_each_thread_keeps_one_connection_of_its_own_and_close_ends_them_all(fake):
    # httpcore checks every connection of a pool on every request; a transport per thread keeps that to one.
    for i in range(12):
        fake.set_summary(f"AC{i}", {**GOOD, "callId": f"AC{i}"})
    with serve(fake) as url:
        host, port = url.removeprefix("http://").split(":")
        proxy = TcpProxy(host, int(port))
        try:
            client = OpenPhoneClient(clock=SYSTEM, settings=SETTINGS.replace(base_url=f"http://127.0.0.1:{proxy.port}"))
            kinds: list[str] = []

            def fetch_four(first: int) -> None:
                kinds.extend(client.fetch_summary(f"AC{i}").kind for i in range(first, first + 4))

            for first in (0, 4, 8):  # one thread after another: a shared pool would reuse one connection
                thread = threading.Thread(target=fetch_four, args=(first,))
                thread.start()
                thread.join()
            assert kinds == ["ok"] * 12
            assert proxy.accepted == 3  # twelve requests, three threads: a kept-alive connection each
            client.close()
            # Closed: a new request opens a new connection (the three old ones are gone).
            with OpenPhoneClient(clock=SYSTEM, settings=SETTINGS.replace(
                    base_url=f"http://127.0.0.1:{proxy.port}")) as again:
                assert again.fetch_summary("AC0").kind == "ok"
            assert proxy.accepted == 4
        finally:
            proxy.close()


def test_real_http_server_round_trip(fake):
    fake.set_summary("AC1", GOOD)
    with serve(fake) as url, OpenPhoneClient(clock=SYSTEM, settings=SETTINGS.replace(base_url=url)) as client:
        result = client.fetch_summary("AC1")
    assert (result.kind, result.data.summary.lines) == ("ok", ("Hello.",))
    assert result.data.raw_json == json.dumps({"data": GOOD}, separators=(",", ":"), ensure_ascii=False)
