"""Tests of the simulated OpenPhone API's call summaries (etl.testing), in process and over real HTTP.

The checks of response shapes are written by hand from the published OpenAPI
document (docs/api/call-summaries.md), so the simulator cannot drift
from it without a test failing.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import os
import select
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from etl.testing import API_PATH_PREFIX, FakeOpenPhone, Faults, sample_summary, serve
from etl.testing.clock import FakeClock

KEY = "test-key"
AUTH = {"Authorization": KEY}
STATUSES = {"absent", "in-progress", "completed", "failed"}
ERROR_META = {
    400: ("0500400", "Bad Request"),
    401: ("0500401", "Unauthorized"),
    403: ("0500403", "Forbidden"),
    404: ("0500404", "Not Found"),
    500: ("0501500", "Unknown"),
}
REPO = Path(__file__).resolve().parents[2]


# -- hand-written schema checks ---------------------------------------------


def _is_str_list_or_none(value: object) -> bool:
    return value is None or (isinstance(value, list) and all(isinstance(s, str) for s in value))


def check_data(data: object, call_id: str) -> dict[str, object]:
    """Assert that data matches the 200 schema's `data` object."""
    assert isinstance(data, dict)
    assert {"callId", "nextSteps", "status", "summary"} <= data.keys()
    assert data.keys() <= {"callId", "nextSteps", "status", "summary", "jobs"}
    assert data["callId"] == call_id
    assert data["status"] in STATUSES
    assert _is_str_list_or_none(data["summary"])
    assert _is_str_list_or_none(data["nextSteps"])
    jobs = data.get("jobs")
    assert jobs is None or isinstance(jobs, list)
    for job in jobs or []:
        assert isinstance(job, dict)
        assert isinstance(job["icon"], str)
        assert isinstance(job["name"], str)
        assert isinstance(job["result"], dict)
        fields = job["result"]["data"]
        assert isinstance(fields, list)
        for f in fields:
            assert isinstance(f, dict)
            assert isinstance(f["name"], str)
            assert isinstance(f["value"], str | int | float | bool)
    return data


def check_ok(resp: httpx.Response, call_id: str) -> dict[str, object]:
    assert resp.status_code == 200
    assert resp.headers["content-type"] == "application/json"
    payload = json.loads(resp.content)
    assert isinstance(payload, dict)
    assert payload.keys() == {"data"}
    return check_data(payload["data"], call_id)


def check_error(resp: httpx.Response, status: int) -> dict[str, object]:
    assert resp.status_code == status
    assert resp.headers["content-type"] == "application/json"
    body = resp.json()
    code, title = ERROR_META[status]
    assert isinstance(body["message"], str) and body["message"]
    assert body["code"] == code
    assert body["status"] == status
    assert body["docs"] == "https://openphone.com/docs"
    assert body["title"] == title
    assert isinstance(body["trace"], str)
    assert isinstance(body, dict)
    return body


def compact(obj: object) -> bytes:
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False).encode()


# -- helpers -------------------------------------------------------------------


async def _get_all(
    fake: FakeOpenPhone, paths: list[str], headers: dict[str, str] | None = None
) -> list[httpx.Response]:
    async with httpx.AsyncClient(
        transport=fake.transport(), base_url="https://api.openphone.com", headers=headers
    ) as client:
        return [await client.get(p) for p in paths]


def get(fake: FakeOpenPhone, path: str, headers: dict[str, str] | None = AUTH) -> httpx.Response:
    return asyncio.run(_get_all(fake, [path], headers))[0]


def url(call_id: str) -> str:
    return API_PATH_PREFIX + call_id


def attempts_until_ok(fake: FakeOpenPhone, call_id: str, limit: int = 20) -> list[str]:
    """Fetch call_id until a valid 200; the list of what each attempt gave."""

    async def run() -> list[str]:
        seen: list[str] = []
        async with httpx.AsyncClient(
            transport=fake.transport(), base_url="https://x", headers=AUTH
        ) as client:
            for _ in range(limit):
                try:
                    resp = await client.get(url(call_id))
                except httpx.RemoteProtocolError:
                    seen.append("drop")
                    continue
                except httpx.ReadTimeout:
                    seen.append("hang")
                    continue
                if resp.status_code != 200:
                    seen.append(str(resp.status_code))
                    continue
                try:
                    check_ok(resp, call_id)
                except (AssertionError, ValueError, KeyError, TypeError):
                    seen.append("bad-200")
                    continue
                seen.append("ok")
                return seen
        return seen

    return asyncio.run(run())


# -- sample data ---------------------------------------------------------------


def test_sample_summary_is_deterministic_valid_and_varied() -> None:
    ids = [f"AC{i:04x}" for i in range(300)]
    values: list[object] = []
    for call_id in ids:
        data = sample_summary(call_id)
        assert data == sample_summary(call_id)
        check_data(data, call_id)
        summary, next_steps, jobs = data["summary"], data["nextSteps"], data["jobs"]
        assert isinstance(summary, list) and 1 <= len(summary) <= 4
        assert isinstance(next_steps, list) and 0 <= len(next_steps) <= 3
        assert isinstance(jobs, list) and 0 <= len(jobs) <= 2
        for job in jobs:
            fields = job["result"]["data"]
            assert 1 <= len(fields) <= 4
            values += [f["value"] for f in fields]
    kinds = {type(v) for v in values}
    assert kinds == {str, int, float, bool}
    assert True in [v for v in values if type(v) is bool]
    assert False in [v for v in values if type(v) is bool]
    ints = {v for v in values if type(v) is int}
    assert {0, 1} <= ints
    # Not every id alike: the shapes a loader sees must vary.
    assert len({json.dumps(sample_summary(i)) for i in ids}) == len(ids)
    assert {len(sample_summary(i)["jobs"]) for i in ids} == {0, 1, 2}  # type: ignore[arg-type]


@pytest.mark.parametrize("status", ["absent", "in-progress", "failed"])
def test_sample_summary_other_statuses(status: str) -> None:
    seen_jobs_key = set()
    for i in range(40):
        data = sample_summary(f"AC{i}", status)
        check_data(data, f"AC{i}")
        assert data["status"] == status
        assert data["summary"] is None and data["nextSteps"] is None
        assert data.get("jobs") is None
        seen_jobs_key.add("jobs" in data)
    assert seen_jobs_key == {True, False}
    with pytest.raises(ValueError):
        sample_summary("AC1", "done")


# -- routing via the httpx transport -------------------------------------------


def test_ok_response_is_compact_json_matching_the_schema() -> None:
    fake = FakeOpenPhone()
    resp = get(fake, url("AC3700e624eca547eb9f749a06f"))
    data = check_ok(resp, "AC3700e624eca547eb9f749a06f")
    assert resp.content == compact({"data": data})
    assert data == sample_summary("AC3700e624eca547eb9f749a06f")
    assert fake.outcomes == {"200": 1}
    assert fake.requests == {"AC3700e624eca547eb9f749a06f": 1}


def test_default_status_and_set_summary() -> None:
    fake = FakeOpenPhone(default_status="in-progress")
    assert check_ok(get(fake, url("AC1")), "AC1")["status"] == "in-progress"
    mine: dict[str, object] = {
        "callId": "AC2",
        "status": "completed",
        "summary": ["Ünïcode 👍"],
        "nextSteps": [],
    }
    fake.set_summary("AC2", mine)
    resp = get(fake, url("AC2"))
    assert check_ok(resp, "AC2") == mine
    assert "Ünïcode 👍".encode() in resp.content  # UTF-8, not \u escapes


def test_auth_missing_bearer_wrong_and_forbidden() -> None:
    fake = FakeOpenPhone(api_key="k", forbidden_keys=frozenset({"old-key"}))
    assert check_error(get(fake, url("AC1"), headers=None), 401)
    assert check_error(get(fake, url("AC1"), headers={"Authorization": "Bearer k"}), 401)
    assert check_error(get(fake, url("AC1"), headers={"Authorization": "K"}), 401)
    assert check_error(get(fake, url("AC1"), headers={"Authorization": "old-key"}), 403)
    check_ok(get(fake, url("AC1"), headers={"Authorization": "k"}), "AC1")
    assert fake.outcomes == {"401": 3, "403": 1, "200": 1}
    # Refused requests never reach the id: they are not fetches of it.
    assert fake.requests == {"AC1": 1}


@pytest.mark.parametrize("raw_id", ["XY123", "ac123", "A", "CA1", "AC1%0A", "AC%0D1", "%20AC1"])
def test_400_for_ids_not_matching_the_pattern(raw_id: str) -> None:
    fake = FakeOpenPhone()
    body = check_error(get(fake, API_PATH_PREFIX + raw_id), 400)
    assert body["errors"][0]["path"] == "/callId"  # type: ignore[index]
    assert body["errors"][0]["schema"] == {"type": "string"}  # type: ignore[index]


def test_ids_are_url_decoded() -> None:
    fake = FakeOpenPhone()
    check_ok(get(fake, API_PATH_PREFIX + "%41C9"), "AC9")
    check_ok(get(fake, API_PATH_PREFIX + "AC"), "AC")  # ^AC(.*)$ accepts a bare "AC"
    check_ok(get(fake, API_PATH_PREFIX + "AC1?x=1"), "AC1")


def test_404_for_unknown_ids_other_paths_and_methods() -> None:
    fake = FakeOpenPhone(default_status=None)
    check_error(get(fake, url("AC404")), 404)
    check_error(get(fake, "/v1/calls/AC1"), 404)  # no such call: no summary-less calls are made up
    check_error(get(fake, API_PATH_PREFIX), 404)
    check_error(get(fake, url("AC1") + "/extra"), 404)

    async def post() -> httpx.Response:
        async with httpx.AsyncClient(transport=fake.transport(), base_url="https://x") as c:
            return await c.post(url("AC1"), headers=AUTH)

    check_error(asyncio.run(post()), 404)
    # Unknown paths come before auth: no key still gives 404 there.
    check_error(get(fake, "/v1/nothing", headers=None), 404)
    check_error(get(fake, "/v2/calls", headers=None), 404)


def test_set_response_overrides_everything_after_auth() -> None:
    fake = FakeOpenPhone(faults=Faults(error_500=1.0))
    fake.set_response("AC1", 503, b"upstream down", {"Retry-After": "7", "Content-Length": "99"})
    fake.set_response("AC2", 200, {"data": {"whatever": True}})
    resp = get(fake, url("AC1"))
    assert (resp.status_code, resp.content, resp.headers["retry-after"]) == (
        503,
        b"upstream down",
        "7",
    )
    assert resp.headers["content-length"] == str(len(b"upstream down"))
    assert get(fake, url("AC2")).content == b'{"data":{"whatever":true}}'
    check_error(get(fake, url("AC1"), headers=None), 401)
    assert fake.outcomes == {"503": 1, "200": 1, "401": 1}


def test_token_bucket_allows_burst_then_429() -> None:
    clock = FakeClock()  # the bucket refills on the simulator's clock: exact, whatever the machine's load
    fake = FakeOpenPhone(rate=10, burst=10, clock=clock)
    resps = asyncio.run(_get_all(fake, [url(f"AC{i}") for i in range(30)], AUTH))
    codes = [r.status_code for r in resps]
    assert codes == [200] * 10 + [429] * 20
    limited = resps[-1]
    assert limited.headers["retry-after"] == "1"
    body = limited.json()
    assert body["message"] == "Too many requests" and body["status"] == 429
    assert fake.outcomes == {"200": 10, "429": 20}
    assert fake.total_requests == 30
    clock.advance(0.25)  # refills 2.5 tokens: two whole ones
    codes = [r.status_code for r in asyncio.run(_get_all(fake, [url("AC1")] * 6, AUTH))]
    assert codes == [200, 200, 429, 429, 429, 429]


# -- faults ----------------------------------------------------------------


MIXED = Faults(
    error_500=0.15,
    rate_429=0.1,
    drop=0.1,
    hang=0.1,
    truncated=0.1,
    garbage=0.1,
    schema_violation=0.1,
    max_per_id=3,
)


def test_faults_are_reproducible_and_bounded_by_max_per_id() -> None:
    ids = [f"AC{i}" for i in range(60)]

    def run(seed: int, order: list[str]) -> dict[str, list[str]]:
        fake = FakeOpenPhone(faults=dataclasses.replace(MIXED, seed=seed))
        return {i: attempts_until_ok(fake, i) for i in order}

    first = run(1, ids)
    # Same seed, other order of ids: the same story for every id.
    assert run(1, list(reversed(ids))) == first
    assert run(2, ids) != first
    for story in first.values():
        assert story[-1] == "ok"
        assert len(story) <= 4  # at most max_per_id faults, then success
    kinds = {k for story in first.values() for k in story}
    assert {"500", "429", "drop", "hang", "bad-200", "ok"} <= kinds


def test_max_per_id_exact_and_unlimited() -> None:
    fake = FakeOpenPhone(faults=Faults(error_500=1.0, max_per_id=3))
    assert attempts_until_ok(fake, "AC1") == ["500", "500", "500", "ok"]
    body = check_error(get(fake, url("AC2")), 500)
    assert body["title"] == "Unknown"
    unlimited = FakeOpenPhone(faults=Faults(error_500=1.0, max_per_id=None))
    assert attempts_until_ok(unlimited, "AC1", limit=10) == ["500"] * 10
    assert unlimited.requests["AC1"] == 10
    assert unlimited.outcomes == {"500": 10}


def test_each_fault_kind_via_transport() -> None:
    def only(**kw: object) -> FakeOpenPhone:
        return FakeOpenPhone(faults=Faults(max_per_id=None, **kw))  # type: ignore[arg-type]

    with pytest.raises(httpx.RemoteProtocolError):
        get(only(drop=1.0), url("AC1"))
    with pytest.raises(httpx.ReadTimeout):
        get(only(hang=1.0), url("AC1"))

    resp = get(only(truncated=1.0), url("AC1"))
    assert resp.status_code == 200
    full = compact({"data": sample_summary("AC1")})
    assert resp.content == full[: len(full) // 2]
    with pytest.raises(json.JSONDecodeError):
        json.loads(resp.content)

    resp = get(only(garbage=1.0), url("AC1"))
    assert resp.status_code == 200
    with pytest.raises(json.JSONDecodeError):
        json.loads(resp.content)

    fake = only(schema_violation=1.0)
    for i in range(30):
        resp = get(fake, url(f"AC{i}"))
        assert resp.status_code == 200
        with pytest.raises((AssertionError, KeyError, TypeError)):
            check_ok(resp, f"AC{i}")

    date = "Wed, 21 Oct 2015 07:28:00 GMT"
    resp = get(only(rate_429=1.0, retry_after=date), url("AC1"))
    assert (resp.status_code, resp.headers["retry-after"]) == (429, date)
    resp = get(only(rate_429=1.0, retry_after=None), url("AC1"))
    assert resp.status_code == 429 and "retry-after" not in resp.headers


def test_overlaps_and_max_in_flight() -> None:
    # Long enough that the five threads' requests overlap even when the machine is busy
    # (40 ms saw only 3 in flight under load); the sequential ones after need none.
    fake = FakeOpenPhone(latency_ms=600)

    # transport() is synchronous (the project's client sends from threads), so
    # concurrent requests come from threads here too.
    with httpx.Client(transport=fake.transport(), base_url="https://x", headers=AUTH) as c:
        with ThreadPoolExecutor(max_workers=5) as pool:
            list(pool.map(lambda i: c.get(url(i)), ["AC1", "AC1", "AC1", "AC2", "AC3"]))
        fake.latency_ms = 0
        for i in ["AC4", "AC4", "AC4"]:
            c.get(url(i))

    assert fake.overlaps == ["AC1", "AC1"]
    assert fake.max_in_flight == 5
    stats = fake.stats()
    assert json.loads(json.dumps(stats)) == stats
    assert stats["requests"] == {"ids": 4, "total": 8, "max_per_id": 3}
    assert stats["overlap_count"] == 2 and stats["overlap_ids"] == ["AC1"]
    assert stats["total_requests"] == 8 and stats["outcomes"] == {"200": 8}


# -- the real server -------------------------------------------------------


@pytest.fixture
def real() -> Iterator[tuple[FakeOpenPhone, str]]:
    fake = FakeOpenPhone()
    with serve(fake) as base:
        yield fake, base


def _client_addr(resp: httpx.Response) -> object:
    return resp.extensions["network_stream"].get_extra_info("client_addr")


def test_real_server_keep_alive(real: tuple[FakeOpenPhone, str]) -> None:
    fake, base = real
    assert base.startswith("http://127.0.0.1:")
    with httpx.Client(base_url=base, headers=AUTH) as client:
        resps = [client.get(url(f"AC{i}")) for i in range(5)]
        assert [check_ok(r, f"AC{i}")["callId"] for i, r in enumerate(resps)] == [
            f"AC{i}" for i in range(5)
        ]
        assert len({_client_addr(r) for r in resps}) == 1  # one TCP connection
        check_error(client.get(url("XY")), 400)
        check_error(client.get(url("AC1"), headers={"Authorization": "nope"}), 401)
        check_ok(client.get(url("AC7")), "AC7")
        assert _client_addr(client.get(url("AC8"))) == _client_addr(resps[0])
    assert fake.total_requests == 9


def test_real_server_drop_hang_truncated() -> None:
    fake = FakeOpenPhone()
    with serve(fake) as base, httpx.Client(base_url=base, headers=AUTH) as client:
        fake.faults = Faults(drop=1.0, max_per_id=1)
        with pytest.raises(httpx.RemoteProtocolError):
            client.get(url("AC1"))
        check_ok(client.get(url("AC1")), "AC1")  # max_per_id=1: next attempt succeeds

        fake.faults = Faults(hang=1.0, hang_seconds=1.0, max_per_id=1)
        start = time.monotonic()
        with pytest.raises(httpx.ReadTimeout):
            client.get(url("AC2"), timeout=httpx.Timeout(5.0, read=0.2))
        assert time.monotonic() - start < 0.9

        fake.faults = Faults(truncated=1.0, max_per_id=1)
        resp = client.get(url("AC3"))
        assert resp.status_code == 200
        assert int(resp.headers["content-length"]) == len(resp.content)
        with pytest.raises(json.JSONDecodeError):
            json.loads(resp.content)
    assert fake.outcomes == {"drop": 1, "200": 1, "hang": 1, "truncated": 1}


def test_real_server_hang_answers_after_hang_seconds() -> None:
    fake = FakeOpenPhone(faults=Faults(hang=1.0, hang_seconds=0.3))
    with serve(fake) as base, httpx.Client(base_url=base, headers=AUTH) as client:
        start = time.monotonic()
        check_ok(client.get(url("AC1")), "AC1")
        assert 0.3 <= time.monotonic() - start < 2


def test_real_server_serves_connections_concurrently() -> None:
    fake = FakeOpenPhone(latency_ms=200)

    async def run(base: str) -> list[httpx.Response]:
        async with httpx.AsyncClient(base_url=base, headers=AUTH) as c:
            return await asyncio.gather(*(c.get(url(f"AC{i}")) for i in range(8)))

    with serve(fake) as base:
        start = time.monotonic()
        resps = asyncio.run(run(base))
        elapsed = time.monotonic() - start
    assert [r.status_code for r in resps] == [200] * 8
    assert elapsed < 1.0  # 8 x ~200 ms sequentially would be ~1.6 s
    assert fake.max_in_flight == 8 and fake.overlaps == []


def _raw(base: str, payload: bytes, timeout: float = 3.0) -> bytes:
    """Send payload on a fresh socket and read until the server closes it."""
    host, port = base.removeprefix("http://").rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=timeout) as sock:
        sock.sendall(payload)
        chunks = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    return b"".join(chunks)


def test_real_server_raw_http(real: tuple[FakeOpenPhone, str]) -> None:
    fake, base = real
    req = f"GET {url('AC1')} HTTP/1.1\r\nHost: x\r\nAuthorization: {KEY}\r\n\r\n".encode()
    close = f"GET {url('AC2')} HTTP/1.1\r\nAuthorization: {KEY}\r\nConnection: close\r\n\r\n"
    # Two pipelined requests, the second asking to close: two answers in order, then EOF.
    out = _raw(base, req + close.encode())
    assert out.count(b"HTTP/1.1 200 OK\r\n") == 2
    assert out.index(b'"callId":"AC1"') < out.index(b'"callId":"AC2"')
    assert b"connection: close\r\n" in out.split(b'"callId":"AC1"')[1]

    # HTTP/1.0 closes by default.
    assert _raw(base, f"GET {url('AC3')} HTTP/1.0\r\nAuthorization: {KEY}\r\n\r\n".encode())

    # Malformed requests are the HTTP library's to refuse; the answer keeps the API's error shape
    # and the connection is closed.
    for bad, status in [
        (b"NONSENSE\r\n\r\n", 400),
        (b"GET /x HTTP/1.1 extra\r\n\r\n", 400),
        (b"GET /x HTTP/2.0\r\n\r\n", 505),
        (f"GET {url('AC4')} HTTP/1.1\r\nContent-Length: abc\r\n\r\n".encode(), 400),
    ]:
        out = _raw(base, bad)  # returns only once the server closed the socket
        assert out.startswith(f"HTTP/1.1 {status} ".encode())
        assert json.loads(out.split(b"\r\n\r\n", 1)[1])["code"] == f"0500{status}"
    assert fake.outcomes["400"] == 3 and fake.outcomes["505"] == 1


def test_serve_stops_cleanly_even_with_a_hanging_request() -> None:
    fake = FakeOpenPhone(faults=Faults(hang=1.0, hang_seconds=30))
    with serve(fake) as base:
        host, port = base.removeprefix("http://").rsplit(":", 1)
        sock = socket.create_connection((host, int(port)))
        sock.sendall(f"GET {url('AC1')} HTTP/1.1\r\nAuthorization: {KEY}\r\n\r\n".encode())
        time.sleep(0.1)
        start = time.monotonic()
    assert time.monotonic() - start < 2
    sock.settimeout(2)
    try:
        assert sock.recv(100) == b""  # aborted, not answered
    except ConnectionResetError:
        pass
    finally:
        sock.close()
    with pytest.raises(httpx.ConnectError):
        httpx.get(base + url("AC1"), headers=AUTH)
    assert fake.outcomes == {"hang": 1}


# -- the command line ----------------------------------------------------------


@pytest.mark.slow
def test_cli_serves_until_sigterm_and_writes_stats(tmp_path: Path) -> None:
    stats_file = tmp_path / "stats.json"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    cmd = [sys.executable, "-m", "etl.testing", "--port", "0", "--api-key", "K", "--quiet"]
    cmd += [
        "--rate",
        "100",
        "--fault-seed",
        "3",
        "--fault-500",
        "0",
        "--stats-file",
        str(stats_file),
    ]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True, env=env, cwd=tmp_path)
    try:
        assert proc.stdout is not None
        ready, _, _ = select.select([proc.stdout], [], [], 20)
        assert ready, "no listening line within 20 s"
        line = proc.stdout.readline()
        assert line.startswith("listening on http://127.0.0.1:")
        base = line.split()[-1]
        with httpx.Client(base_url=base) as client:
            check_ok(client.get(url("AC1"), headers={"Authorization": "K"}), "AC1")
            check_error(client.get(url("AC1")), 401)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=20) == 0
        assert proc.stdout.read() == ""  # --quiet: exactly one line on stdout
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    stats = json.loads(stats_file.read_text())
    assert stats["total_requests"] == 2
    assert stats["outcomes"] == {"200": 1, "401": 1}
    assert stats["requests"] == {"ids": 1, "total": 1, "max_per_id": 1}
    assert stats["overlap_count"] == 0


def test_cli_rejects_bad_probability() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "etl.testing", "--fault-500", "1.5"],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        timeout=30,
    )
    assert proc.returncode == 2
    assert "probability" in proc.stderr
