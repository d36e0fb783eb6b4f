"""The rows a real sync run writes, on every database (SQLite, PostgreSQL, MariaDB).

Representative payloads go through the simulated API, the real client, the
state machine and the upsert; the tests then read docs/contract.md's tables back and
compare exact values: positions, joined text, counts, raw_json equal to the
bytes the API sent, content_hash, typed job values, 1 MB texts and emoji.
Re-syncing must replace a call's child rows as a whole, never duplicate them.
"""

from __future__ import annotations

import hashlib
from datetime import datetime, timedelta
from typing import Any

import httpx
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from etl import Etl, store
from etl.clock import utcnow
from etl.config import Backoff, Settings
from etl.sync import RunStats
from etl.tables import fields_t, jobs_t, lines_t, queue_t, runs_t, steps_t, summaries_t
from etl.testing import FakeOpenPhone
from tests.support.db import make_due, queue_rows, run


class Recorder(httpx.BaseTransport, httpx.AsyncBaseTransport):
    """The fake's transport, keeping the exact response body sent for each call id."""

    def __init__(self, fake: FakeOpenPhone) -> None:
        self.inner = fake.transport()
        self.bodies: dict[str, bytes] = {}

    def _keep(self, request: httpx.Request, body: bytes) -> None:
        self.bodies[request.url.path.rsplit("/", 1)[1]] = body

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        response = self.inner.handle_request(request)
        self._keep(request, response.read())
        return response

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        response = await self.inner.handle_async_request(request)
        self._keep(request, await response.aread())
        return response


def sync(engine: Engine, settings: Settings, fake: FakeOpenPhone) -> tuple[RunStats, dict[str, bytes]]:
    recorder = Recorder(fake)
    stats = Etl(settings, engine=engine).sync(transport=recorder)
    return stats, recorder.bodies


def enqueue(engine: Engine, *ids: str) -> None:
    with engine.begin() as conn:
        store.enqueue_ids(conn, list(ids))


def requeue(engine: Engine, *ids: str) -> None:
    """What an operator (or backfill) does: make a finished item pending and due again."""
    with engine.begin() as conn:
        conn.execute(sa.update(queue_t).where(queue_t.c.call_id.in_(ids))
                     .values(state="pending", next_attempt_at=datetime(2000, 1, 1)))


def select_all(engine: Engine, table: sa.Table, *order: str) -> list[dict[str, Any]]:
    with engine.connect() as conn:
        rows = conn.execute(sa.select(table).order_by(*[table.c[o] for o in order]))
        return [dict(r._mapping) for r in rows]


def typed_queue(engine: Engine) -> dict[str, dict[str, Any]]:
    """summary_queue rows with typed values (datetimes, not SQLite's strings)."""
    return {r["call_id"]: r for r in select_all(engine, queue_t, "call_id")}


def summary_row(engine: Engine, call_id: str) -> dict[str, Any]:
    with engine.connect() as conn:
        return dict(conn.execute(sa.select(summaries_t).where(summaries_t.c.call_id == call_id)).one()._mapping)


def children(engine: Engine, call_id: str) -> dict[str, list[dict[str, Any]]]:
    """Every child row of one call, minus the call_id and workspace columns (each child is in its summary's
    workspace)."""
    out = {}
    parent_workspace = summary_row(engine, call_id)["workspace"]
    for name, table, order in (("lines", lines_t, ("position",)), ("steps", steps_t, ("position",)),
                               ("jobs", jobs_t, ("job_position",)),
                               ("fields", fields_t, ("job_position", "field_position"))):
        with engine.connect() as conn:
            rows = conn.execute(sa.select(table).where(table.c.call_id == call_id)
                                .order_by(*[table.c[o] for o in order]))
            found = [dict(r._mapping) for r in rows]
            assert {r["workspace"] for r in found} <= {parent_workspace}, name
            out[name] = [{k: v for k, v in r.items() if k not in ("call_id", "workspace")} for r in found]
    return out


def fld(job: int, pos: int, name: str, vtype: str, text: Any = None, number: Any = None,
        boolean: Any = None) -> dict[str, Any]:
    return {"job_position": job, "field_position": pos, "name": name, "value_type": vtype,
            "value_text": text, "value_number": number, "value_boolean": boolean}


RICH = {
    "callId": "ACrich1",
    "status": "completed",
    "summary": ["Zoë confirmed the address in Zürich.", "", "They need SSO 👍", "電話のまとめ 😀"],
    "nextSteps": ["Send the pricing sheet.", "Refund the duplicate invoice 💸"],
    "jobs": [
        {"icon": "📋", "name": "Lead qualification", "result": {"data": [
            {"name": "Qualified", "value": True},
            {"name": "Follow-up needed", "value": False},
            {"name": "Callback requested", "value": 1},
            {"name": "Declined", "value": 0},
            {"name": "Budget (USD)", "value": 1234.5},
            {"name": "Confidence", "value": 0.1},
            {"name": "Big", "value": 9007199254740993},
            {"name": "Negative", "value": -42},
        ]}},
        {"icon": "🛠️", "name": "Support triage", "result": {"data": [
            {"name": "Contact name", "value": "José Núñez"},
            {"name": "Notes", "value": ""},
            {"name": "Looks like a number", "value": "1"},
            {"name": "Looks like a boolean", "value": "true"},
        ]}},
        {"icon": "📞", "name": "Empty job", "result": {"data": []}},
    ],
}


def test_rich_payload_exact_rows(engine, settings, fake):
    fake.set_summary("ACrich1", RICH)
    enqueue(engine, "ACrich1")
    before = utcnow()
    stats, bodies = sync(engine, settings, fake)
    assert (stats.claimed, stats.completed, stats.exit_code) == (1, 1, 0)
    body = bodies["ACrich1"]

    row = summary_row(engine, "ACrich1")
    synced = row.pop("first_synced_at")
    assert row.pop("last_synced_at") == synced
    assert before - timedelta(seconds=1) <= row.pop("as_of") <= utcnow()  # when the API answered
    assert before - timedelta(seconds=1) <= synced <= utcnow()
    assert row == {
        "call_id": "ACrich1",
        "status": "completed",
        "summary_text": "Zoë confirmed the address in Zürich.\n\nThey need SSO 👍\n電話のまとめ 😀",
        "line_count": 4,
        "next_step_count": 2,
        "job_count": 3,
        "type": None,  # the dated API's; v1 leaves them NULL
        "title": None,
        "content_hash": hashlib.sha256(body).hexdigest(),
        "raw_json": body.decode("utf-8"),
        "workspace": "default",  # no workspaces file: the one workspace
    }
    assert children(engine, "ACrich1") == {
        "lines": [
            {"position": 0, "text": "Zoë confirmed the address in Zürich."},
            {"position": 1, "text": ""},
            {"position": 2, "text": "They need SSO 👍"},
            {"position": 3, "text": "電話のまとめ 😀"},
        ],
        "steps": [
            {"position": 0, "text": "Send the pricing sheet."},
            {"position": 1, "text": "Refund the duplicate invoice 💸"},
        ],
        "jobs": [
            {"job_position": 0, "name": "Lead qualification", "icon": "📋"},
            {"job_position": 1, "name": "Support triage", "icon": "🛠️"},
            {"job_position": 2, "name": "Empty job", "icon": "📞"},
        ],
        "fields": [
            fld(0, 0, "Qualified", "boolean", boolean=True),
            fld(0, 1, "Follow-up needed", "boolean", boolean=False),
            fld(0, 2, "Callback requested", "number", number=1.0),
            fld(0, 3, "Declined", "number", number=0.0),
            fld(0, 4, "Budget (USD)", "number", number=1234.5),
            fld(0, 5, "Confidence", "number", number=0.1),
            fld(0, 6, "Big", "number", number=float(9007199254740993)),
            fld(0, 7, "Negative", "number", number=-42.0),
            fld(1, 0, "Contact name", "string", text="José Núñez"),
            fld(1, 1, "Notes", "string", text=""),
            fld(1, 2, "Looks like a number", "string", text="1"),
            fld(1, 3, "Looks like a boolean", "string", text="true"),
        ],
    }
    queue = queue_rows(engine)["ACrich1"]
    assert {k: queue[k] for k in ("state", "attempts", "consecutive_errors", "last_api_status", "last_error",
                                  "lease_owner", "lease_expires_at", "incomplete_since")} == {
        "state": "done", "attempts": 1, "consecutive_errors": 0, "last_api_status": "completed",
        "last_error": None, "lease_owner": None, "lease_expires_at": None, "incomplete_since": None,
    }
    assert queue["finished_at"] is not None


def test_booleans_stay_booleans_and_numbers_stay_numbers(engine, settings, fake):
    fake.set_summary("ACrich1", RICH)
    enqueue(engine, "ACrich1")
    sync(engine, settings, fake)
    fields = children(engine, "ACrich1")["fields"][:4]
    # Python's True == 1, so compare the types: MariaDB's BOOLEAN is a TINYINT underneath.
    assert [(f["value_type"], f["value_boolean"], type(f["value_boolean"])) for f in fields[:2]] == [
        ("boolean", True, bool), ("boolean", False, bool)]
    assert [(f["value_type"], f["value_number"], type(f["value_number"]), f["value_boolean"]) for f in fields[2:]] \
        == [("number", 1.0, float, None), ("number", 0.0, float, None)]
    # The columns analysts filter on: 1/0 never appear as booleans, true/false never as numbers.
    with engine.connect() as conn:
        counts = [conn.execute(sa.select(sa.func.count()).where(cond)).scalar_one() for cond in (
            fields_t.c.value_boolean.is_(True), fields_t.c.value_boolean.is_(False),
            fields_t.c.value_number == 1, fields_t.c.value_number == 0)]
    assert counts == [1, 1, 1, 1]


def test_null_and_empty_lists(engine, settings, fake):
    fake.set_summary("ACempty", {"callId": "ACempty", "status": "completed", "summary": [], "nextSteps": [],
                                 "jobs": []})
    fake.set_summary("ACnull", {"callId": "ACnull", "status": "completed", "summary": None, "nextSteps": None})
    fake.set_summary("ACnulljobs", {"callId": "ACnulljobs", "status": "completed", "summary": None,
                                    "nextSteps": None, "jobs": None})
    enqueue(engine, "ACempty", "ACnull", "ACnulljobs")
    stats, bodies = sync(engine, settings, fake)
    assert stats.completed == 3
    got = {cid: summary_row(engine, cid) for cid in ("ACempty", "ACnull", "ACnulljobs")}
    assert {cid: (r["summary_text"], r["line_count"], r["next_step_count"], r["job_count"], r["raw_json"])
            for cid, r in got.items()} == {
        "ACempty": ("", 0, 0, 0, bodies["ACempty"].decode()),
        "ACnull": (None, 0, 0, 0, bodies["ACnull"].decode()),
        "ACnulljobs": (None, 0, 0, 0, bodies["ACnulljobs"].decode()),
    }
    for table in (lines_t, steps_t, jobs_t, fields_t):
        assert select_all(engine, table, "call_id") == []


def test_one_megabyte_line_and_emoji_stored_whole(engine, settings, fake):
    big = ("Zürich 😀 " * 10) + "x" * 1_000_000 + "🚀end"
    fake.set_summary("ACbig", {"callId": "ACbig", "status": "completed", "summary": ["short", big],
                               "nextSteps": [big], "jobs": [{"icon": "😀", "name": "Big 🚀", "result": {"data": [
                                   {"name": "big value", "value": big}]}}]})
    enqueue(engine, "ACbig")
    stats, bodies = sync(engine, settings, fake)
    assert (stats.completed, stats.errors) == (1, 0)
    row = summary_row(engine, "ACbig")
    assert row["summary_text"] == "short\n" + big
    assert row["raw_json"] == bodies["ACbig"].decode()
    assert len(row["raw_json"].encode()) > 3_000_000
    kids = children(engine, "ACbig")
    assert kids["lines"] == [{"position": 0, "text": "short"}, {"position": 1, "text": big}]
    assert kids["steps"] == [{"position": 0, "text": big}]
    assert kids["jobs"] == [{"job_position": 0, "name": "Big 🚀", "icon": "😀"}]
    assert kids["fields"] == [fld(0, 0, "big value", "string", text=big)]


def test_nul_characters_replaced_but_kept_in_raw_json(engine, settings, fake):
    fake.set_summary("ACnul", {"callId": "ACnul", "status": "completed", "summary": ["a\x00b"],
                               "nextSteps": ["\x00"], "jobs": [{"icon": "i", "name": "n", "result": {"data": [
                                   {"name": "k\x00", "value": "v\x00"}]}}]})
    enqueue(engine, "ACnul")
    stats, bodies = sync(engine, settings, fake)
    assert (stats.completed, stats.errors) == (1, 0)
    row = summary_row(engine, "ACnul")
    assert row["summary_text"] == "a\ufffdb"
    assert "a\\u0000b" in row["raw_json"]
    assert row["raw_json"] == bodies["ACnul"].decode()
    kids = children(engine, "ACnul")
    assert kids["steps"] == [{"position": 0, "text": "\ufffd"}]
    assert kids["fields"] == [fld(0, 0, "k\ufffd", "string", text="v\ufffd")]


def test_lone_surrogate_escape_is_stored_with_replacement(engine, settings, fake):
    body = b'{"data":{"callId":"ACsur","status":"completed","summary":["a\\ud800b"],"nextSteps":null}}'
    fake.set_response("ACsur", 200, body)
    enqueue(engine, "ACsur")
    sync(engine, settings, fake)
    assert queue_rows(engine)["ACsur"]["state"] == "done"
    row = summary_row(engine, "ACsur")
    assert (row["raw_json"], row["summary_text"][0], row["summary_text"][-1]) == (body.decode(), "a", "b")
    assert "\ufffd" in row["summary_text"]


def test_resync_same_content_changes_nothing_but_last_synced_at(engine, settings, fake):
    fake.set_summary("ACrich1", RICH)
    enqueue(engine, "ACrich1")
    sync(engine, settings, fake)
    first = summary_row(engine, "ACrich1")
    first_children = children(engine, "ACrich1")

    requeue(engine, "ACrich1")
    stats, bodies = sync(engine, settings, fake)
    assert (stats.claimed, stats.completed) == (1, 1)
    again = summary_row(engine, "ACrich1")
    assert again["first_synced_at"] == first["first_synced_at"]
    assert again["last_synced_at"] > first["last_synced_at"]
    assert {k: v for k, v in again.items() if k != "last_synced_at"} == \
        {k: v for k, v in first.items() if k != "last_synced_at"}
    assert again["content_hash"] == hashlib.sha256(bodies["ACrich1"]).hexdigest()
    assert children(engine, "ACrich1") == first_children
    counts = {t.name: len(select_all(engine, t, "call_id")) for t in (lines_t, steps_t, jobs_t, fields_t)}
    assert counts == {"call_summary_lines": 4, "call_next_steps": 2, "call_jobs": 3, "call_job_fields": 12}
    assert queue_rows(engine)["ACrich1"]["attempts"] == 2


def test_resync_changed_content_replaces_child_rows(engine, settings, fake):
    fake.set_summary("ACrich1", RICH)
    fake.set_summary("ACother", {"callId": "ACother", "status": "completed", "summary": ["Other call."],
                                 "nextSteps": ["Keep me."], "jobs": None})
    enqueue(engine, "ACrich1", "ACother")
    sync(engine, settings, fake)
    first = summary_row(engine, "ACrich1")
    other_before = children(engine, "ACother")

    fake.set_summary("ACrich1", {
        "callId": "ACrich1", "status": "completed", "summary": ["Only one line now."], "nextSteps": None,
        "jobs": [{"icon": "💰", "name": "Deal details", "result": {"data": [{"name": "Seats", "value": 40}]}}],
    })
    requeue(engine, "ACrich1")
    stats, bodies = sync(engine, settings, fake)
    assert (stats.claimed, stats.completed) == (1, 1)
    row = summary_row(engine, "ACrich1")
    assert row["first_synced_at"] == first["first_synced_at"]
    assert row["last_synced_at"] > first["last_synced_at"]
    assert (row["summary_text"], row["line_count"], row["next_step_count"], row["job_count"]) == (
        "Only one line now.", 1, 0, 1)
    assert row["raw_json"] == bodies["ACrich1"].decode()
    assert row["content_hash"] == hashlib.sha256(bodies["ACrich1"]).hexdigest() != first["content_hash"]
    assert children(engine, "ACrich1") == {
        "lines": [{"position": 0, "text": "Only one line now."}],
        "steps": [],
        "jobs": [{"job_position": 0, "name": "Deal details", "icon": "💰"}],
        "fields": [fld(0, 0, "Seats", "number", number=40.0)],
    }
    # Another call's rows are not touched.
    assert children(engine, "ACother") == other_before


def test_bare_insert_is_due_at_once_and_syncs(engine, settings, fake):
    with engine.begin() as conn:
        conn.execute(sa.text("INSERT INTO summary_queue (call_id) VALUES ('ACbare1')"))
    queued = queue_rows(engine)["ACbare1"]
    assert {k: queued[k] for k in ("state", "attempts", "consecutive_errors", "lease_owner", "last_error",
                                   "finished_at")} == {
        "state": "pending", "attempts": 0, "consecutive_errors": 0, "lease_owner": None, "last_error": None,
        "finished_at": None}
    stats, bodies = sync(engine, settings, fake)
    assert (stats.claimed, stats.completed, stats.exit_code) == (1, 1, 0)
    assert queue_rows(engine)["ACbare1"]["state"] == "done"
    assert summary_row(engine, "ACbare1")["raw_json"] == bodies["ACbare1"].decode()


def test_enqueue_of_a_done_id_does_not_reset_it(engine, settings, fake):
    enqueue(engine, "ACdone1")
    sync(engine, settings, fake)
    before = queue_rows(engine)["ACdone1"]
    assert before["state"] == "done"
    with engine.begin() as conn:
        assert store.enqueue_ids(conn, ["ACdone1", "ACnew1"]) == 1
    after = queue_rows(engine)
    assert after["ACdone1"] == before
    assert after["ACnew1"]["state"] == "pending"
    stats = run(engine, settings, fake)
    assert stats.claimed == 1  # only the new id
    assert fake.requests["ACdone1"] == 1


def test_non_completed_answers_land_in_their_states(engine, settings, fake):
    for status in ("in-progress", "absent", "failed"):
        call_id = "AC" + status.replace("-", "")
        fake.set_summary(call_id, {"callId": call_id, "status": status, "summary": None, "nextSteps": None})
    fake.set_response("ACmissing", 404, {"message": "Call not found", "code": "0500404", "status": 404,
                                         "docs": "https://openphone.com/docs", "title": "Not Found"})
    fake.set_response("ACbad", 400, {"message": "Invalid call id", "code": "0500400", "status": 400,
                                     "docs": "https://openphone.com/docs", "title": "Bad Request"})
    ids = ("ACinprogress", "ACabsent", "ACfailed", "ACmissing", "ACbad")
    enqueue(engine, *ids)
    settings = settings.replace(backoff=Backoff(not_found_window=0))  # the window: test_sync_calls.py
    start = utcnow()
    stats = run(engine, settings, fake)
    assert (stats.claimed, stats.completed, stats.rescheduled, stats.errors, stats.exit_code) == (5, 0, 2, 0, 0)
    # Each end state counted under its own name, as the queue shows it (issue 20, item 10).
    assert (stats.failed, stats.absent, stats.not_found, stats.invalid) == (1, 0, 1, 1)
    q = typed_queue(engine)
    assert {i: (q[i]["state"], q[i]["last_api_status"], q[i]["attempts"]) for i in ids} == {
        "ACinprogress": ("pending", "in-progress", 1),
        "ACabsent": ("pending", "absent", 1),
        "ACfailed": ("failed", "failed", 1),
        "ACmissing": ("not_found", "http 404", 1),
        "ACbad": ("invalid", "http 400", 1),
    }
    assert start + timedelta(seconds=59) <= q["ACinprogress"]["next_attempt_at"] <= utcnow() + timedelta(seconds=61)
    assert start + timedelta(seconds=299) <= q["ACabsent"]["next_attempt_at"] <= utcnow() + timedelta(seconds=301)
    assert q["ACmissing"]["last_error"] == "HTTP 404 Not Found: Call not found"
    assert q["ACbad"]["last_error"] == "HTTP 400 Bad Request: Invalid call id"
    # Not due yet: a second run claims nothing; once due, they are fetched again.
    assert run(engine, settings, fake).claimed == 0
    make_due(engine)
    assert run(engine, settings, fake).claimed == 2


def test_run_is_recorded(engine, settings, fake):
    fake.set_response("ACmissing", 404, {"message": "Call not found", "code": "0500404", "status": 404,
                                         "docs": "https://openphone.com/docs", "title": "Not Found"})
    enqueue(engine, "ACok1", "ACok2", "ACmissing")
    settings = settings.replace(backoff=Backoff(not_found_window=0))  # the window: test_sync_calls.py
    stats = run(engine, settings, fake)
    runs = select_all(engine, runs_t, "id")
    assert len(runs) == 1
    r = runs[0]
    assert r["id"] == stats.run_id
    assert {k: r[k] for k in ("command", "claimed", "completed", "rescheduled", "failed", "not_found", "errors",
                              "exit_code", "stop_reason")} == {
        "command": "sync", "claimed": 3, "completed": 2, "rescheduled": 0, "failed": 0, "not_found": 1,
        "errors": 0, "exit_code": 0, "stop_reason": None}
    assert r["started_at"] <= r["finished_at"]
