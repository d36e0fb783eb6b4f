"""Several workspaces in one database (issue 27, part 1 and the data under parts 2 and 4), on every database.

Two simulated workspaces, each its own :class:`FakeOpenPhone` with its own key (``north`` on v1, ``south``
on the dated API, both with transcripts), run through ``Etl(workspaces=…).workspace(name)`` on one
database, on the default (throttled) rate and a :class:`FakeClock`: every row each stores carries its
workspace, every view shows it, a sync of one never claims, asks for or changes another's items, each
has its own discovery watermarks and refresh schedule, and ``status`` counts per workspace.  The
``default`` workspace (no workspaces file) keeps working beside them.  Then the store's rules at the
edges: an id another workspace stored is left as it is; deliveries, rejected records, re-queues and
prunes are per workspace.
"""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from datetime import datetime, timedelta
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from etl import Etl, store
from etl.api import webhook_summary
from etl.backfill import selection
from etl.dimensions import Listing, User
from etl.errors import UsageError
from etl.models import VIEWS, Base
from etl.normalize import CallRows, normalize
from etl.store import dimensions
from etl.testing import FakeOpenPhone, sample_summary, webhooks
from etl.testing.clock import FakeClock
from etl.webhooks import intake
from etl.webhooks.events import parse_event
from etl.webhooks.signatures import Verified
from etl.workspaces import WorkspaceConfig

KEYS = {"QUO_KEY_NORTH": "north-key-0123456789", "QUO_KEY_SOUTH": "south-key-0123456789"}
DEFAULT_KEY = "default-key-0123456789"
DATED = "2026-03-30"
WORKSPACES = (WorkspaceConfig("north", api_key_env="QUO_KEY_NORTH", api_version="v1", transcripts=True),
              WorkspaceConfig("south", api_key_env="QUO_KEY_SOUTH", api_version=DATED, transcripts=True))
# Every table with a workspace (all but rate_budgets: per API key).
DATA_TABLES = sorted(t for t in Base.metadata.tables if t != "rate_budgets")
CALL_TABLES = ("summary_queue", "call_summaries", "call_summary_lines", "call_next_steps", "call_jobs",
               "call_job_fields", "calls", "call_participants", "call_voicemails", "call_lookups",
               "transcript_queue", "call_transcripts", "call_transcript_lines")


pytestmark = [pytest.mark.usefixtures("quiet_logs"), pytest.mark.clock_at_now]


def _fake(key: str, seed: int, clock: FakeClock, **generate: Any) -> FakeOpenPhone:
    fake = FakeOpenPhone(api_key=key, seed=seed, clock=clock)
    if generate:
        fake.workspace.generate(days=5, **generate)
    return fake


def _jobs(db_url: str, engine: Engine, clock: FakeClock) -> tuple[Etl, Etl]:
    # No rate given: each workspace on the default (throttled) rate of its own key, waits on the fake clock.
    deployment = Etl(database_url=db_url, engine=engine, workspaces=WORKSPACES, clock=clock)
    return deployment.workspace("north", environ=KEYS), deployment.workspace("south", environ=KEYS)


def _rows(engine: Engine, sql: str, **params: Any) -> list[tuple[Any, ...]]:
    with engine.connect() as conn:
        return [tuple(r) for r in conn.execute(sa.text(sql), params)]


def _table(engine: Engine, table: str, workspace: str) -> list[dict[str, Any]]:
    with engine.connect() as conn:
        rows = conn.execute(sa.text(f"SELECT * FROM {table} WHERE workspace = :w"), {"w": workspace})
        return sorted((dict(r._mapping) for r in rows), key=repr)


def _workspaces_of(engine: Engine, table: str) -> Counter[str]:
    return Counter({str(w): int(n) for w, n in _rows(engine, f"SELECT workspace, COUNT(*) FROM {table} "
                                                             "GROUP BY workspace")})


def _asked(fake: FakeOpenPhone) -> set[str]:
    """The call ids a simulator was asked about (any route naming one)."""
    return {part for _method, path, _version in fake.request_log for part in path.split("/") if part.startswith("AC")}


# --- two workspaces end to end -------------------------------------------------------------


def test_two_workspaces_discover_and_sync_into_one_database_each_row_in_its_own(db_url: str, engine: Engine,
                                                                                 clock: FakeClock) -> None:
    north_api = _fake(KEYS["QUO_KEY_NORTH"], 101, clock, phone_numbers=1, conversations=2, calls=3)
    south_api = _fake(KEYS["QUO_KEY_SOUTH"], 202, clock, phone_numbers=2, conversations=1, calls=3, agent_calls=1)
    north_calls, south_calls = set(north_api.workspace.calls), set(south_api.workspace.calls)
    assert north_calls and south_calls and not north_calls & south_calls
    north, south = _jobs(db_url, engine, clock)
    since = clock.utcnow() - timedelta(days=7)

    found = {"north": north.discover(since, transport=north_api.transport()),
             "south": south.discover(since, transport=south_api.transport())}
    assert [f.exit_code for f in found.values()] == [0, 0], [f.stop_reason for f in found.values()]
    assert clock.sleeps  # the default rate paced the requests

    # North's sync: it claims, asks for and changes north's items only.
    south_before = {t: _table(engine, t, "south") for t in ("summary_queue", "transcript_queue")}
    south_asked = len(south_api.request_log)
    synced_north = north.sync(transport=north_api.transport())
    assert synced_north.exit_code == 0 and synced_north.claimed > 0, synced_north.stop_reason
    assert len(south_api.request_log) == south_asked
    assert _asked(north_api) <= north_calls
    assert {t: _table(engine, t, "south") for t in south_before} == south_before
    synced_south = south.sync(transport=south_api.transport())
    assert synced_south.exit_code == 0, synced_south.stop_reason
    assert _asked(south_api) <= south_calls

    # Every row of every data table carries its workspace; a call's rows are in the workspace of its API.
    for table in DATA_TABLES:
        assert "default" not in _workspaces_of(engine, table), table
    for table in CALL_TABLES:
        for call_id, workspace in _rows(engine, f"SELECT call_id, workspace FROM {table}"):
            assert workspace == ("north" if call_id in north_calls else "south"), (table, call_id)
    for name, api in (("north", north_api), ("south", south_api)):
        people, lines = api.workspace.people, api.workspace.phone_numbers
        assert {r[0] for r in _rows(engine, "SELECT user_id FROM users WHERE workspace = :w", w=name)} == \
            set(people.users)
        assert {r[0] for r in _rows(engine, "SELECT phone_number_id FROM phone_numbers WHERE workspace = :w",
                                    w=name)} == set(lines)
        assert {r[0] for r in _rows(engine, "SELECT contact_id FROM contacts WHERE workspace = :w", w=name)} == \
            set(people.contacts)
        # Each discovered, refreshed and synced in its own records.
        assert _rows(engine, "SELECT id FROM discovery_runs WHERE workspace = :w", w=name) == [(found[name].run_id,)]
        assert Counter(r[0] for r in _rows(engine, "SELECT resource FROM dimension_refreshes WHERE workspace = :w",
                                           w=name)) == {"users": 1, "lines": 1, "contacts": 1}
    assert _rows(engine, "SELECT id, workspace FROM sync_runs ORDER BY id") == [
        (synced_north.run_id, "north"), (synced_south.run_id, "south")]
    # Each its own watermarks: north's lines (v1), south's whole workspace ('*', the dated listing).
    assert {r[0] for r in _rows(engine, "SELECT workspace FROM discovery_watermarks")} == {"north"}
    assert _rows(engine, "SELECT workspace, scope FROM discovery_call_watermarks") == [("south", "*")]

    # Every view shows the workspace; call_overview has each workspace's calls.
    for view in VIEWS:
        assert set(_workspaces_of(engine, view)) <= {"north", "south"}, view
    assert _workspaces_of(engine, "call_overview") == _workspaces_of(engine, "calls")
    assert {w: n for w, n in _rows(engine, "SELECT workspace, SUM(calls) FROM daily_line_stats GROUP BY workspace")} \
        == dict(_workspaces_of(engine, "calls"))

    # status is the workspace's own: its queue, its runs, its discovery.
    for name, job, run in (("north", north, synced_north), ("south", south, synced_south)):
        status = job.status()
        assert status.workspace == name and status.as_dict()["workspace"] == name
        expected = Counter({str(s): int(n) for s, n in _rows(
            engine, "SELECT state, COUNT(*) FROM summary_queue WHERE workspace = :w GROUP BY state", w=name)})
        assert {s: n for s, n in status.queue.items() if n} == dict(expected)
        assert [r["id"] for r in status.last_runs] == [run.run_id]
        assert status.last_discovery is not None and status.last_discovery["id"] == found[name].run_id
        assert status.refreshes is not None and set(status.refreshes) == {"users", "lines", "contacts"}


def test_a_sync_claims_only_its_own_workspace_and_default_works_beside_them(db_url: str, engine: Engine,
                                                                             clock: FakeClock) -> None:
    apis = {"north": _fake(KEYS["QUO_KEY_NORTH"], 1, clock), "south": _fake(KEYS["QUO_KEY_SOUTH"], 2, clock),
            "default": _fake(DEFAULT_KEY, 3, clock)}
    north, south = _jobs(db_url, engine, clock)
    default = Etl(database_url=db_url, engine=engine, api_key=DEFAULT_KEY, clock=clock)
    jobs = {"north": north, "south": south, "default": default}
    ids = {name: [f"AC{name}{n}" for n in range(4)] for name in jobs}
    for name, job in jobs.items():
        assert job.enqueue(ids[name]).new == 4
    assert north.enqueue(ids["south"]).new == 0  # queued under another workspace: left as it is
    assert _rows(engine, "SELECT DISTINCT workspace FROM summary_queue WHERE call_id LIKE 'ACsouth%'") == [("south",)]
    assert north.due()[0] == 4 and default.due()[0] == 4

    untouched = {name: _table(engine, "summary_queue", name) for name in ("south", "default")}
    ran = north.sync(transport=apis["north"].transport())
    assert (ran.claimed, ran.completed, ran.exit_code) == (4, 4, 0)
    assert _asked(apis["north"]) == set(ids["north"])
    assert not apis["south"].request_log and not apis["default"].request_log
    assert {name: _table(engine, "summary_queue", name) for name in untouched} == untouched
    assert north.status().queue["done"] == 4
    assert south.status().queue["pending"] == 4 and south.status().last_runs == []

    # The default workspace as before: its own queue, its rows in 'default'.
    ran = default.sync(transport=apis["default"].transport())
    assert (ran.claimed, ran.completed) == (4, 4)
    assert _asked(apis["default"]) == set(ids["default"])
    assert _rows(engine, "SELECT workspace, COUNT(*) FROM call_summaries GROUP BY workspace ORDER BY workspace") == [
        ("default", 4), ("north", 4)]
    assert default.status().queue["done"] == 4 and south.status().queue["pending"] == 4
    assert {r["workspace"] for r in default.status().last_runs} == {"default"}


def test_each_workspace_has_its_own_watermarks_and_refresh_schedule(db_url: str, engine: Engine,
                                                                    clock: FakeClock) -> None:
    both = (WorkspaceConfig("north", api_key_env="QUO_KEY_NORTH", api_version=DATED),
            WorkspaceConfig("south", api_key_env="QUO_KEY_SOUTH", api_version=DATED))
    deployment = Etl(database_url=db_url, engine=engine, workspaces=both, clock=clock, rate=0)
    north, south = deployment.workspace("north", environ=KEYS), deployment.workspace("south", environ=KEYS)
    north_api = _fake(KEYS["QUO_KEY_NORTH"], 11, clock, phone_numbers=1, conversations=1, calls=2)
    south_api = _fake(KEYS["QUO_KEY_SOUTH"], 12, clock, phone_numbers=1, conversations=1, calls=2)
    assert north.discover(clock.utcnow() - timedelta(days=7), transport=north_api.transport()).exit_code == 0
    # North's watermark is no watermark of south's: a first discovery of south still needs --since.
    with pytest.raises(UsageError, match="no discovery watermark yet for the workspace"):
        south.discover(transport=south_api.transport())
    found = south.discover(clock.utcnow() - timedelta(days=7), transport=south_api.transport())
    # Contacts were just listed for north, never for south: south's are due all the same.
    assert found.refresh is not None and [r.resource for r in found.refresh.done] == ["users", "lines", "contacts"]
    clock.advance(3600)
    again = north.discover(transport=north_api.transport())  # from its own watermark
    assert again.refresh is not None and again.refresh.contacts_next_at is not None  # north's are not due yet
    assert _rows(engine, "SELECT workspace, scope FROM discovery_call_watermarks ORDER BY workspace") == [
        ("north", "*"), ("south", "*")]


# --- the store at the edges ------------------------------------------------------------------


def _summary_rows(call_id: str, content_of: str, now: datetime) -> CallRows:
    data = dict(sample_summary(content_of), callId=call_id)
    raw = json.dumps({"data": data}, sort_keys=True)
    return normalize(webhook_summary(data), raw, hashlib.sha256(raw.encode()).hexdigest(), now)


def test_an_id_stored_under_another_workspace_is_left_as_it_is(engine: Engine, clock: FakeClock) -> None:
    now = clock.utcnow()
    with engine.begin() as conn:
        store.enqueue_ids(conn, ["ACshared"], now, workspace="north")
        store.save_summaries(conn, [_summary_rows("ACshared", "ACshared", now)], now, workspace="north")
        dimensions.save_users(conn, Listing(items=(User(id="USshared", email="a@x.com", first_name="Ann",
                                                        last_name=None, role="member"),),
                                            complete=True, requests=1), now, workspace="north")
    before = {t: _table(engine, t, "north") for t in ("summary_queue", "call_summaries", "call_summary_lines",
                                                       "users")}
    later = now + timedelta(minutes=5)
    with engine.begin() as conn:
        assert store.enqueue_ids(conn, ["ACshared"], later, workspace="south") == 0
        store.make_due_first(conn, "ACshared", later, ("done",), workspace="south")
        store.mark_done(conn, "ACshared", later, workspace="south")
        # Other content from south: not written over north's summary, children and all.
        assert store.save_summaries(conn, [_summary_rows("ACshared", "ACother", later)], later,
                                    workspace="south") == set()
        saved = dimensions.save_users(conn, Listing(items=(User(id="USshared", email="b@x.com", first_name="Bob",
                                                                last_name=None, role="admin"),),
                                                    complete=True, requests=1), later, workspace="south")
        assert (saved.seen, saved.new, saved.changed, saved.gone) == (1, 0, 0, 0)
    assert {t: _table(engine, t, "north") for t in before} == before
    assert not any(_table(engine, t, "south") for t in before)
    # A complete listing of south without the user does not mark north's user gone.
    with engine.begin() as conn:
        dimensions.save_users(conn, Listing(items=(), complete=True, requests=1), later, workspace="south")
    assert _rows(engine, "SELECT workspace, gone_at FROM users") == [("north", None)]


def test_deliveries_rejected_records_requeues_and_prunes_are_per_workspace(engine: Engine, clock: FakeClock) -> None:
    now = clock.utcnow()
    message = Verified("standard", "k" * 64, "msg_1", now)
    event = parse_event(webhooks.body_bytes(webhooks.summary_completed("ACwebhook1", event_id="EVsame")))
    seen = [intake.accept(engine, message, event, now, clock=clock, workspace=w).outcome
            for w in ("north", "south", "north")]
    # The same signed message is new to each workspace's receiver, a replay to the one that took it.
    assert seen == ["queued", "queued", "replay"]
    assert _rows(engine, "SELECT workspace FROM webhook_deliveries ORDER BY workspace") == [("north",), ("south",)]
    assert _rows(engine, "SELECT call_id, workspace FROM summary_queue") == [("ACwebhook1", "north")]
    assert intake.prune(engine, now + timedelta(days=30), timedelta(days=7), workspace="south") == 1
    assert _rows(engine, "SELECT workspace FROM webhook_deliveries") == [("north",)]

    rejected = store.Rejected("sync", "GET /calls/{id}", "", "createdAt: out of range", {"id": None})
    with engine.begin() as conn:
        for workspace in ("north", "south", "north"):
            store.record_rejected(conn, rejected, now, workspace=workspace)
    assert _rows(engine, "SELECT workspace, times FROM rejected_records ORDER BY workspace") == [
        ("north", 2), ("south", 1)]

    # backfill's re-queue and prune of one workspace leave the other's rows alone.
    with engine.begin() as conn:
        for workspace in ("north", "south"):
            store.enqueue_ids(conn, [f"ACold{workspace}"], now, workspace=workspace)
            conn.execute(sa.text("UPDATE summary_queue SET state = 'failed' WHERE call_id = :c"),
                         {"c": f"ACold{workspace}"})
            store.save_summaries(conn, [_summary_rows(f"ACold{workspace}", "x", now - timedelta(days=90))],
                                 now - timedelta(days=90), workspace=workspace)
    deployment = Etl(database_url=str(engine.url.render_as_string(hide_password=False)), engine=engine,
                     workspaces=WORKSPACES, clock=clock)
    north = deployment.workspace("north", environ=KEYS)
    chosen = selection(["failed"])
    assert chosen is not None and north.requeue(chosen) == 1
    assert _rows(engine, "SELECT call_id, state FROM summary_queue WHERE call_id LIKE 'ACold%' ORDER BY call_id") == [
        ("AColdnorth", "pending"), ("AColdsouth", "failed")]
    assert north.prune(raw_json_older_than=30).summary_payloads == 1
    assert _rows(engine, "SELECT call_id, raw_json = '' FROM call_summaries WHERE call_id LIKE 'ACold%' "
                         "ORDER BY call_id") in ([("AColdnorth", True), ("AColdsouth", False)],
                                                 [("AColdnorth", 1), ("AColdsouth", 0)])
