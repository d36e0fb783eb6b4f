"""Hostile input: odd or broken API answers, bad ids, secrets, a database that goes away.

Each hostile answer sits in a batch with normal ids: it must end in a defined
queue state with a clear error, be logged once with that error, and leave its
neighbours untouched.  Secrets (the API key, a database password) must never
reach a log line or an error message, at any log level.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import sqlalchemy as sa
import structlog
from sqlalchemy.engine import make_url

from etl import db, logs, store
from etl.config import Backoff
from etl.testing import FakeOpenPhone, sample_summary, serve
from tests.support.db import API_KEY, fresh_url, make_due, server_url
from tests.support.proc import (
    REPLACEMENT,
    check_consistent,
    comparable,
    count,
    error_lines,
    etl_env,
    expected_call,
    output_of,
    queue,
    run_etl,
    run_served,
    runs,
    start_etl,
    stop,
    stored_calls,
    wait_for,
    wire_json,
)

NORMAL = [f"ACok{i}" for i in range(6)]
SHORT_BACKOFF = Backoff(max_attempts=2, transient_first=0.0, transient_cap=0.0)
SCHEMA = "200 with a body that violates the schema: "


@pytest.fixture
def json_logs(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch,
              ) -> Iterator[Callable[[], Callable[[], list[dict[str, Any]]]]]:
    """Call it in the test to log JSON as the CLI does, onto captured stderr; it returns a reader.

    (Configured in the test body, not here: pytest swaps sys.stderr between setup and call.)
    The logging set-up is global, so all of it is put back afterwards.
    """
    saved = structlog.get_config()
    monkeypatch.setattr(logs, "_stream", logs._stream)
    monkeypatch.setattr(logs, "_secrets", list(logs._secrets))

    def start() -> Callable[[], list[dict[str, Any]]]:
        logs.configure_logging("json", "debug")
        return lambda: [json.loads(line) for line in capsys.readouterr().err.splitlines() if line.startswith("{")]

    try:
        yield start
    finally:
        structlog.configure(**saved)


def enqueue(engine, ids) -> None:
    with engine.begin() as conn:
        store.enqueue_ids(conn, list(ids))


def sync_until_settled(engine, settings, fake, max_runs: int = 5) -> None:
    for _ in range(max_runs):
        stats = run_served(engine, settings, fake)
        assert stats.lost_leases == 0
        make_due(engine)
        if all(r["state"] != "pending" for r in queue(engine).values()):
            return
    pytest.fail(f"items still pending after {max_runs} runs")


def summary(call_id: str, lines, steps=None, jobs=None) -> dict[str, object]:
    data: dict[str, object] = {"callId": call_id, "status": "completed", "summary": lines, "nextSteps": steps}
    if jobs is not None:
        data["jobs"] = jobs
    return data


# --- odd but valid 200 answers: stored, exactly ------------------------------------------


def test_odd_but_valid_summaries_are_stored_exactly(engine, settings):
    fake = FakeOpenPhone(api_key=API_KEY)
    nul_job = [{"icon": "\x00", "name": "Job\x00", "result": {"data": [
        {"name": "f\x00", "value": "v\x00"}, {"name": "n", "value": 0}, {"name": "b", "value": False}]}}]
    control = ["\x01\x02\x07\x08\x0b\x0c\x1b\x1f\x7f", "tab\there", "multi\nline\r\nwindows",
               "\u2028\u2029\ufeff\u202e"]
    huge = "ä" * 524_288 + "😀"  # just over 1 MiB of UTF-8 in one line
    datas = {
        "ACnul": summary("ACnul", ["before\x00after", "\x00"], ["step\x00"], nul_job),
        "ACctl": summary("ACctl", control, ["\x00\x01"]),
        "AChuge": summary("AChuge", [huge, "short"], [huge[:1000]]),
        "ACempty": summary("ACempty", [], [], []),
        "ACnulls": {"callId": "ACnulls", "status": "completed", "summary": None, "nextSteps": None, "jobs": None},
    }
    for call_id, data in datas.items():
        fake.set_summary(call_id, data)
    # Unknown keys at every level are ignored for the rows but kept in raw_json.
    extra_data = summary("ACextra", ["line"], ["step"], [{"icon": "i", "name": "n", "id": "job-1",
                                                          "result": {"data": [{"name": "x", "value": 1.5,
                                                                               "confidence": 0.9}],
                                                                     "model": "v2"}}])
    extra_body = {"data": {**extra_data, "sentiment": "positive", "durationSeconds": 61},
                  "meta": {"requestId": "r-1", "nested": [1, {"deep": None}]}}
    fake.set_response("ACextra", 200, extra_body)
    enqueue(engine, [*NORMAL, *datas, "ACextra"])

    stats = run_served(engine, settings, fake)
    assert (stats.completed, stats.errors, stats.exit_code) == (len(NORMAL) + len(datas) + 1, 0, 0)
    assert {r["state"] for r in queue(engine).values()} == {"done"}

    extra_wire = json.dumps(extra_body, separators=(",", ":"), ensure_ascii=False)
    expected = {i: expected_call(sample_summary(i), wire_json(sample_summary(i))) for i in NORMAL}
    expected |= {i: expected_call(d, wire_json(d)) for i, d in datas.items()}
    expected["ACextra"] = expected_call(extra_data, extra_wire)
    stored = {i: comparable(c) for i, c in stored_calls(engine).items()}
    assert stored == expected

    # The same facts spelled out, so the expectation above is not taken on trust.
    nul = stored["ACnul"]
    assert nul["lines"] == [(0, f"before{REPLACEMENT}after"), (1, REPLACEMENT)]
    assert nul["jobs"] == [(0, f"Job{REPLACEMENT}", REPLACEMENT)]
    assert nul["fields"][0] == (0, 0, f"f{REPLACEMENT}", "string", f"v{REPLACEMENT}", None, None)
    assert nul["fields"][1:] == [(0, 1, "n", "number", None, 0.0, None), (0, 2, "b", "boolean", None, None, False)]
    assert "\x00" not in nul["raw_json"] and nul["raw_json"].count("\\u0000") == 7
    assert [t for _, t in stored["ACctl"]["lines"]] == control
    assert stored["ACctl"]["next_steps"] == [(0, REPLACEMENT + "\x01")]
    assert stored["AChuge"]["lines"][0] == (0, huge) and len(huge.encode()) > 1 << 20
    assert (stored["ACempty"]["summary_text"], stored["ACempty"]["line_count"]) == ("", 0)
    assert (stored["ACnulls"]["summary_text"], stored["ACnulls"]["job_count"]) == (None, 0)
    assert '"meta":{"requestId":"r-1"' in stored["ACextra"]["raw_json"]
    assert stored["ACextra"]["fields"] == [(0, 0, "x", "number", None, 1.5, None)]


def test_lone_surrogate_escape_is_stored_as_replacement_character(engine, settings):
    # Valid JSON a JavaScript server emits for an emoji cut in half; pydantic's own
    # parser refuses it, and the summary must not be lost for that.
    fake = FakeOpenPhone(api_key=API_KEY)
    body = b'{"data":{"callId":"ACsur","status":"completed","summary":["cut \\ud83d here"],"nextSteps":null}}'
    fake.set_response("ACsur", 200, body)
    enqueue(engine, ["ACsur"])
    sync_until_settled(engine, settings.replace(backoff=SHORT_BACKOFF), fake)
    assert queue(engine)["ACsur"]["state"] == "done"
    stored = stored_calls(engine)["ACsur"]
    assert stored["lines"] == [(0, f"cut {REPLACEMENT} here")]
    assert stored["raw_json"] == body.decode()


# --- broken 200 answers: transient, then `error` with the reason -------------------------


BROKEN = {
    # call id: (body, last_error after the retries)
    "ACmissing": ({"data": {"callId": "ACmissing", "status": "completed", "summary": ["a"]}},
                  SCHEMA + "data.nextSteps: Field required"),
    "ACwrongtype": ({"data": {"callId": "ACwrongtype", "status": "completed", "summary": "a", "nextSteps": None}},
                    SCHEMA + "data.summary: Input should be a valid array"),
    "ACnumline": ({"data": {"callId": "ACnumline", "status": "completed", "summary": [1], "nextSteps": None}},
                  SCHEMA + "data.summary.0: Input should be a valid string"),
    "ACstatus": ({"data": {"callId": "ACstatus", "status": "done", "summary": None, "nextSteps": None}},
                 SCHEMA + "data.status: Input should be 'absent', 'in-progress', 'completed' or 'failed'"),
    "ACmismatch": ({"data": sample_summary("ACother")}, "200 for another call id ('ACother')"),
    "ACnotutf8": (b'{"data":{"callId":"ACnotutf8","summary":["\xff\xfe"]}}', "200 with a body that is not UTF-8"),
    "AChtml": (b"<html>oops</html>", SCHEMA + "body: Invalid JSON: expected value at line 1 column 1"),
    "ACarray": (b"[]", SCHEMA + "body: Input should be an object"),
    "ACempty": (b"", SCHEMA + "body: Invalid JSON: EOF while parsing a value at line 1 column 0"),
}


def test_broken_answers_end_in_error_and_spare_the_others(engine, settings, json_logs):
    read_logs = json_logs()
    fake = FakeOpenPhone(api_key=API_KEY)
    for call_id, (body, _) in BROKEN.items():
        fake.set_response(call_id, 200, body)
    enqueue(engine, [*NORMAL, *BROKEN])
    s = settings.replace(backoff=SHORT_BACKOFF, retry_attempts=2)
    sync_until_settled(engine, s, fake)

    rows = queue(engine)
    got = {i: (r["state"], r["attempts"], r["consecutive_errors"], r["last_api_status"], r["last_error"])
           for i, r in rows.items() if i in BROKEN}
    assert got == {i: ("error", 2, 2, "http 200", f"gave up after 2 attempts: {err}")
                   for i, (_, err) in BROKEN.items()}
    assert {fake.requests[i] for i in BROKEN} == {4}  # 2 queue attempts x 2 tries, no more
    assert {(rows[i]["state"], rows[i]["attempts"], fake.requests[i]) for i in NORMAL} == {("done", 1, 1)}
    assert set(stored_calls(engine)) == set(NORMAL)

    # One clear line per attempt of each broken id, carrying the reason.
    events = [e for e in read_logs() if e.get("event") == "call" and e.get("call_id") in BROKEN]
    for call_id, (_, err) in BROKEN.items():
        mine = [(e["outcome"], e["error"]) for e in events if e["call_id"] == call_id]
        assert mine == [("pending", err), ("error", f"gave up after 2 attempts: {err}")], call_id


def test_oversized_body_is_rejected_at_once(engine, settings):
    fake = FakeOpenPhone(api_key=API_KEY)
    fake.set_summary("ACbig", summary("ACbig", ["x" * 5000]))
    small = [i for i in NORMAL if len(wire_json(sample_summary(i)).encode()) < 2000]
    enqueue(engine, ["ACbig", *small])
    stats = run_served(engine, settings.replace(max_body_bytes=2000), fake)
    assert (stats.errors, stats.completed) == (1, len(small))
    row = queue(engine)["ACbig"]
    assert (row["state"], row["attempts"], row["last_api_status"], row["last_error"]) == (
        "error", 1, "http 200", "response body larger than 2000 bytes")
    assert fake.requests["ACbig"] == 1  # a permanent problem: not retried
    assert set(stored_calls(engine)) == set(small)


# --- bad ids -----------------------------------------------------------------------------


BAD_QUEUE_IDS = ["AC1/../2", "AC 1", "AC1?x=1", "AC1%2F2", "XY123", "ac123", "AC", "AC-1", "AC1\n", "AC1\t2"]


def test_malformed_ids_inserted_by_other_systems_never_reach_the_api(engine, settings):
    # docs/contract.md: other systems enqueue with a bare INSERT, so nothing validated these.
    with engine.begin() as conn:
        for call_id in BAD_QUEUE_IDS:
            conn.execute(sa.text("INSERT INTO summary_queue (call_id) VALUES (:i)"), {"i": call_id})
    enqueue(engine, NORMAL)
    fake = FakeOpenPhone(api_key=API_KEY)
    stats = run_served(engine, settings, fake)
    assert (stats.completed, stats.failed, stats.invalid) == (len(NORMAL), 0, len(BAD_QUEUE_IDS))
    rows = queue(engine)
    assert {i: (rows[i]["state"], rows[i]["attempts"], rows[i]["last_error"]) for i in BAD_QUEUE_IDS} == {
        i: ("invalid", 1, "malformed call id") for i in BAD_QUEUE_IDS}
    assert set(fake.requests) == set(NORMAL)
    # Each valid id: its call's context (it has no calls row) and its summary; nothing else.
    assert fake.total_requests == 2 * len(NORMAL)


@pytest.mark.slow
def test_enqueue_file_reports_each_bad_line_and_keeps_the_good(engine, db_url, tmp_path):
    lines = [b"AC1good", b"AC/etc/passwd", b"AC 12", b"x" * 10_000, b"AC\xff\xfe", b"", b"# a comment",
             b"AC2good\r", b"AC" + b"a" * 65, b"AC1\x01x", b"BC123", b"AC1good"]
    path = tmp_path / "ids.txt"
    path.write_bytes(b"\n".join(lines) + b"\n")
    result = run_etl(["enqueue", "--file", str(path)], etl_env(db_url))
    assert result.returncode == 0, result.stderr
    assert result.stdout == "Enqueued 2 new ids (1 already queued, 7 invalid skipped).\n"
    assert result.stderr.splitlines() == [
        f"{path}:2: contains a path separator: 'AC/etc/passwd' (skipped)",
        f"{path}:3: contains white space: 'AC 12' (skipped)",
        f"{path}:4: line longer than 256 bytes (skipped)",
        f"{path}:5: not UTF-8 text: 'AC\\ufffd\\ufffd' (skipped)",
        f"{path}:9: too long (67 characters, at most 66): '{'AC' + 'a' * 38}'… (skipped)",
        f"{path}:10: contains a control character: 'AC1\\x01x' (skipped)",
        f"{path}:11: does not start with AC: 'BC123' (skipped)",
    ]
    assert set(queue(engine)) == {"AC1good", "AC2good"}


# --- secrets -----------------------------------------------------------------------------


SECRET_KEY = "sk-live-9f8e7d6c5b4a"


@pytest.mark.slow
def test_api_key_never_in_output_at_any_log_level(engine, db_url, tmp_path):
    fake = FakeOpenPhone(api_key=SECRET_KEY)
    # A careless API that echoes the key in an error message.
    fake.set_response("ACecho", 500, {"message": f"upstream rejected key {SECRET_KEY}"})
    fake.set_response("ACgone", 404, {"message": "Call summary not found"})
    enqueue(engine, ["ACecho", "ACgone", *NORMAL])
    with serve(fake) as url:
        ok = run_etl(["sync", "--log-level", "debug", "--rate", "0"], etl_env(db_url, url, SECRET_KEY))
        make_due(engine)
        refused = run_etl(["sync", "--log-level", "debug", "--api-key", SECRET_KEY + "x"], etl_env(db_url, url))
    assert (ok.returncode, refused.returncode) == (0, 3), (ok.stderr, refused.stderr)
    for result in (ok, refused):
        assert SECRET_KEY not in result.stdout + result.stderr
    events = [json.loads(line) for line in ok.stderr.splitlines() if line.startswith("{")]
    [echo] = [e for e in events if e.get("event") == "call" and e.get("call_id") == "ACecho"]
    assert echo["error"] == "HTTP 500 Internal Server Error: upstream rejected key ***"
    assert {e["level"] for e in events} >= {"info"}
    assert len(events) >= len(NORMAL) + 3


PASSWORD_URLS = {
    "postgresql": ("postgresql+psycopg://postgres:s3cretpw@127.0.0.1:1/x",
                   "Error: database postgresql+psycopg://postgres:***@127.0.0.1:1/x is unavailable: "
                   'connection failed: connection to server at "127.0.0.1", port 1 failed: Connection refused '
                   "Is the server running on that host and accepting TCP/IP connections?"),
    "mysql": ("mysql+pymysql://root:s3cretpw@127.0.0.1:1/x",
              "Error: database mysql+pymysql://root:***@127.0.0.1:1/x is unavailable: (2003, \"Can't connect "
              "to MySQL server on '127.0.0.1' ([Errno 111] Connection refused)\")"),
    # Needs a running MariaDB: the URL is the test database's with a wrong password (built in the test).
    "mysql-wrong-password": ("", ""),
    "sqlite": ("sqlite:////nonexistent-etl-dir/etl.db", None),
}


@pytest.mark.slow
@pytest.mark.parametrize("case", PASSWORD_URLS)
def test_database_unavailable_at_start_is_explained_without_the_password(case):
    url, expected = PASSWORD_URLS[case]
    if case == "mysql-wrong-password":
        # A real server that refuses the password: skips without ETL_TEST_MYSQL_URL like every MariaDB test.
        server = make_url(server_url("mysql"))
        url = server.set(password="s3cretpw", database="x").render_as_string(hide_password=False)
        shown = make_url(url).render_as_string(hide_password=True)
        expected = (f"Error: database {shown} is unavailable: (1045, \"Access denied for user "
                    f"'{server.username}'@'{server.host}' (using password: YES)\")")
    if case == "sqlite":
        # SQLite has no password; the path is shown as given, and the cause is plain.
        expected = ("Error: cannot create the SQLite database /nonexistent-etl-dir/etl.db: "
                    "the directory /nonexistent-etl-dir does not exist")
    for args in (["sync", "--log-level", "debug"], ["status"], ["enqueue", "AC1"]):
        result = run_etl(args, etl_env(url, "http://127.0.0.1:9", API_KEY))
        assert (result.returncode, result.stdout) == (2, ""), result.stderr
        if case == "sqlite" and args == ["status"]:
            # A read-only command never creates a database: it says there is none (issue 20, item 6).
            assert error_lines(result.stderr) == [
                "Error: the SQLite database /nonexistent-etl-dir/etl.db does not exist (check --database-url "
                "or ETL_DATABASE_URL; `etl sync` and `etl db upgrade` create it)"]
            continue
        assert error_lines(result.stderr) == [expected], args
        if case != "sqlite":
            assert "s3cretpw" not in result.stderr


@pytest.mark.slow
def test_password_never_printed_by_a_working_run(tmp_path, sqlite_template):
    """PostgreSQL here trusts local users, so a URL with any password connects."""
    url = fresh_url("postgresql", tmp_path, sqlite_template)
    parsed = make_url(url)
    with_password = parsed.set(password="s3cret/pw@x").render_as_string(hide_password=False)
    fake = FakeOpenPhone(api_key=API_KEY)
    with serve(fake) as api:
        env = etl_env(with_password, api, API_KEY)
        results = [run_etl(["enqueue", *NORMAL], env), run_etl(["sync", "--log-level", "debug"], env),
                   run_etl(["status"], env), run_etl(["db", "upgrade"], env)]
    assert [r.returncode for r in results] == [0, 0, 0, 0], [r.stderr for r in results]
    for r in results:
        for secret in ("s3cret/pw@x", "s3cret%2Fpw%40x"):
            assert secret not in r.stdout + r.stderr
    shown = make_url(with_password).render_as_string(hide_password=True)
    assert ":***@" in shown and results[2].stdout.startswith(f"Database: {shown}\n")


# --- a database that goes away mid-run ---------------------------------------------------


@pytest.mark.slow
def test_postgres_going_away_mid_run_then_resume(tmp_path, sqlite_template):
    """PostgreSQL only: it is the one server here whose connections a test can both cut
    and refuse (ALLOW_CONNECTIONS false) without touching other databases."""
    url = fresh_url("postgresql", tmp_path, sqlite_template)
    name = make_url(url).database
    admin = sa.create_engine(make_url(url).set(database="postgres"), isolation_level="AUTOCOMMIT")
    engine = db.create_engine(url)
    ids = [f"ACgone{i:03d}" for i in range(300)]
    enqueue(engine, ids)
    fake = FakeOpenPhone(api_key=API_KEY, latency_ms=30)
    try:
        with serve(fake) as api:
            env = etl_env(url, api, API_KEY)
            proc = start_etl(["sync", "--rate", "0", "--concurrency", "4"], env, tmp_path, "cut")
            try:
                wait_for(lambda: count(engine, "call_summaries") >= 20, 60, "20 summaries", proc)
                engine.dispose()
                with admin.connect() as conn:
                    conn.execute(sa.text(f'ALTER DATABASE "{name}" WITH ALLOW_CONNECTIONS false'))
                    conn.execute(sa.text("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                                         "WHERE datname = :n AND pid <> pg_backend_pid()"), {"n": name})
                rc = stop(proc)
            finally:
                with admin.connect() as conn:
                    conn.execute(sa.text(f'ALTER DATABASE "{name}" WITH ALLOW_CONNECTIONS true'))
                if proc.poll() is None:  # the test failed before the cut: do not leave it running
                    proc.kill()
                    proc.wait()
            out, err = output_of(tmp_path, "cut")
            assert rc == 1, err
            [line] = error_lines(err)
            [run] = runs(engine)
            assert out.startswith(f"Sync run {run['id']}: ") and out.endswith("; stopped: the database was lost.\n")
            prefix = f"Error: run {run['id']} did not finish cleanly: database {url} is unavailable: "
            assert line.startswith(prefix), line
            # Cut between transactions (the usual case) or in the middle of one.
            cause = line[len(prefix):]
            assert ((cause.startswith("connection failed: ")
                    and f'database "{name}" is not currently accepting connections' in cause)
                    or cause.startswith("terminating connection due to administrator command")), cause
            # It could not record its end; nothing it saved is half written.
            assert run["finished_at"] is None
            rows = check_consistent(engine)
            done = sum(r["state"] == "done" for r in rows.values())
            assert 20 <= done < len(ids)

            make_due(engine)  # the dead run's leases expire
            resumed = run_etl(["sync", "--rate", "0", "--concurrency", "4"], env)
        assert resumed.returncode == 0, resumed.stderr
        rows = check_consistent(engine)
        assert {r["state"] for r in rows.values()} == {"done"}
        expected = {i: expected_call(sample_summary(i), wire_json(sample_summary(i))) for i in ids}
        assert {i: comparable(c) for i, c in stored_calls(engine).items()} == expected
        assert runs(engine)[-1]["exit_code"] == 0
    finally:
        engine.dispose()
        admin.dispose()
