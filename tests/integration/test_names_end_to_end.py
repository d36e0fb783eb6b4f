"""Names beside every call, end to end: `discover` + `sync` against the simulator on both surfaces.

Issue 24's "Done when" on SQLite, PostgreSQL and MariaDB (the ``db_url``
fixture): every user, line (with its members) and contact the simulated
workspace holds is stored; ``call_overview`` names the person (the AI agent's
system actor as the agent), the line and the other party beside every call; the
daily views count every call; a user who leaves is kept and marked gone; and
what each refresh cost, as recorded, is exactly what the simulator's request
log saw.  The job runs on its default rate (10 requests per second, throttled)
on a :class:`FakeClock`, as production does but without waiting.
"""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime, timedelta

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from etl import Etl
from etl.logs import configure_logging
from etl.testing import FakeOpenPhone, Quirks, serve
from etl.testing.clock import FakeClock

KEY = "names-e2e-key"
SURFACES = ["v1", "2026-03-30"]


pytestmark = pytest.mark.usefixtures("quiet_logs")


def _workspace(**kw: object) -> FakeOpenPhone:
    fake = FakeOpenPhone(api_key=KEY, seed=24, **kw)  # type: ignore[arg-type]
    fake.workspace.generate(phone_numbers=2, conversations=3, calls=3, days=5, group_calls=3, agent_calls=2)
    return fake


def _job(db_url: str, engine: Engine, fake: FakeOpenPhone, api_version: str, clock: FakeClock) -> Etl:
    # No rate given: the default (throttled) rate, its waits on the fake clock.
    return Etl(database_url=db_url, engine=engine, api_key=KEY, api_version=api_version, transport=fake.transport(),
               clock=clock)


def _requests(fake: FakeOpenPhone, *paths: str) -> int:
    return sum(1 for _method, path, _version in fake.request_log if path in paths)


def _rows(engine: Engine, sql: str) -> list[tuple[object, ...]]:
    with engine.connect() as conn:
        return [tuple(r) for r in conn.execute(sa.text(sql))]


def _refreshes(engine: Engine) -> dict[str, list[tuple[object, ...]]]:
    found: dict[str, list[tuple[object, ...]]] = {}
    for resource, requests, seen, complete, problem in _rows(
            engine, "SELECT resource, requests, rows_seen, complete, problem FROM dimension_refreshes ORDER BY id"):
        found.setdefault(str(resource), []).append((requests, seen, bool(complete), problem))
    return found


@pytest.mark.parametrize("api_version", SURFACES)
def test_discover_and_sync_name_every_call(db_url: str, engine: Engine, api_version: str) -> None:
    fake = _workspace()
    ws, people = fake.workspace, fake.workspace.people
    clock = FakeClock(start=datetime.now(UTC).replace(tzinfo=None, microsecond=0))
    with _job(db_url, engine, fake, api_version, clock) as job:
        found = job.discover(clock.utcnow() - timedelta(days=7))
        synced = job.sync()
        status = job.status()
    assert found.exit_code == 0 and synced.exit_code == 0, (found.stop_reason, synced.stop_reason)
    assert found.refresh is not None and clock.sleeps  # the default rate paced the requests

    # Every user, line (with its members) and contact is stored.
    assert {r[0] for r in _rows(engine, "SELECT user_id FROM users WHERE gone_at IS NULL")} == set(people.users)
    assert {r[0] for r in _rows(engine, "SELECT phone_number_id FROM phone_numbers")} == set(ws.phone_numbers)
    members = {(r[0], r[1]) for r in _rows(engine, "SELECT phone_number_id, user_id FROM phone_number_users")}
    assert members == {(pn.id, uid) for pn in ws.phone_numbers.values() for uid in pn.users} and members
    assert {r[0] for r in _rows(engine, "SELECT contact_id FROM contacts WHERE gone_at IS NULL")} \
        == set(people.contacts)
    names = dict(_rows(engine, "SELECT phone_number_id, name FROM phone_numbers"))
    assert names == {pn.id: pn.name for pn in ws.phone_numbers.values()} and all(names.values())

    # call_overview: the person (the agent as the agent), the line and the other party by name.
    overview = _rows(engine, "SELECT call_id, user_id, actor_id, user_name, user_kind, phone_number_name, "
                             "other_party_number, contact_name FROM call_overview")
    calls = _rows(engine, "SELECT call_id FROM calls")
    assert len(overview) == len(calls) > 10
    agents = 0
    for call_id, user_id, actor_id, user_name, kind, line_name, other, contact_name in overview:
        assert line_name, call_id
        if str(actor_id or "").startswith("SYU") or (user_id is None and actor_id is None):
            assert (user_name, kind) == ("AI agent", "agent") or user_id is None, call_id
            agents += user_name == "AI agent"
        else:
            person = people.users[str(user_id or actor_id)]
            assert (user_name, kind) == (f"{person.first_name} {person.last_name}", "user"), call_id
        holders = people.contacts_of(str(other)) if other else []
        assert (contact_name is not None) == bool(holders), (call_id, other)
    # The AI agent's two calls name its system actor on the dated surface; v1 names the line's user.
    assert agents == (0 if api_version == "v1" else 2)
    with_contact = [row for row in overview if row[7] is not None]
    assert with_contact and len(with_contact) < len(overview)  # some numbers have no contact

    # The daily views count every call, per person and per line.
    total = len(calls)
    assert _rows(engine, "SELECT SUM(calls) FROM daily_user_stats")[0][0] == total
    assert _rows(engine, "SELECT SUM(calls) FROM daily_line_stats")[0][0] == total
    done = _rows(engine, "SELECT COUNT(*) FROM call_summaries WHERE status = 'completed'")[0][0]
    assert _rows(engine, "SELECT SUM(summaries_completed) FROM daily_user_stats")[0][0] == done

    # What each refresh cost is exactly what the simulator was asked.
    pages = -(-len(people.contacts) // 50)
    user_paths = ("/v1/users",) if api_version == "v1" else ("/users",)
    refreshes = _refreshes(engine)
    assert refreshes["users"] == [(1, len(people.users), True, None)] == [(_requests(fake, *user_paths),
                                                                           len(people.users), True, None)]
    assert refreshes["lines"] == [(1, len(ws.phone_numbers), True, None)]
    on_dated = api_version != "v1"
    # The dated surface lists no contacts (404): they come from GET /v1/contacts, one request more.
    assert refreshes["contacts"] == [(pages + on_dated, len(people.contacts), True, None)]
    assert _requests(fake, "/v1/contacts", "/contacts") == pages + on_dated
    if on_dated:  # the walk lists /calls, so the only lines request is the refresh's
        assert _requests(fake, "/phone-numbers") == 1
    assert found.refresh.requests == 2 + pages + on_dated
    lines = found.summary().splitlines()
    contact_requests = pages + on_dated
    assert lines[1] == (f"Refreshed users {len(people.users)} (1 request, {len(people.users)} new); "
                        f"lines {len(ws.phone_numbers)} (1 request, {len(ws.phone_numbers)} new); "
                        f"contacts {len(people.contacts)} ({contact_requests} request"
                        f"{'s' if contact_requests > 1 else ''}, {len(people.contacts)} new).")
    assert status.refreshes is not None and set(status.refreshes) == {"users", "lines", "contacts"}
    assert "Last refreshes:" in status.text()


@pytest.mark.parametrize("api_version", SURFACES)
def test_a_user_who_leaves_is_kept_and_marked_and_contacts_wait_for_their_turn(db_url: str, engine: Engine,
                                                                              api_version: str) -> None:
    fake = _workspace()
    ws, people = fake.workspace, fake.workspace.people
    clock = FakeClock(start=datetime.now(UTC).replace(tzinfo=None, microsecond=0))
    with _job(db_url, engine, fake, api_version, clock) as job:
        job.discover(clock.utcnow() - timedelta(days=7))
        # Nora (on a line, no calls) leaves the workspace.
        [nora] = [u for u in people.users.values() if (u.first_name, u.last_name) == ("Nora", "Newhire")]
        for pn in ws.phone_numbers.values():
            if nora.id in pn.users:
                pn.users.remove(nora.id)
        del people.users[nora.id]
        clock.advance(3600)
        before = len(fake.request_log)
        again = job.discover()
        asked = Counter(path for _m, path, _v in fake.request_log[before:])
        clock.advance(3600)
        forced = job.discover(refresh_contacts=True)
    assert again.refresh is not None and forced.refresh is not None
    # Kept, marked gone, its name still there; no longer a member of any line.
    [(name, gone_at)] = _rows(engine, f"SELECT name, gone_at FROM users WHERE user_id = '{nora.id}'")
    assert (name, gone_at is not None) == ("Nora Newhire", True)
    assert _rows(engine, f"SELECT COUNT(*) FROM phone_number_users WHERE user_id = '{nora.id}'")[0][0] == 0
    # The second run listed users and lines, not contacts (not due for 24 h); the third was asked to.
    assert [r.resource for r in again.refresh.done] == ["users", "lines"]
    assert again.refresh.contacts_next_at is not None and "contacts not due until" in again.summary()
    assert asked["/v1/contacts"] + asked["/contacts"] == 0
    assert [r.resource for r in forced.refresh.done] == ["users", "lines", "contacts"]
    assert again.summary().splitlines()[1].startswith(f"Refreshed users {len(people.users)} (1 request, 1 gone); ")


def test_contacts_that_cannot_be_listed_cost_one_warning_and_nothing_else(
        db_url: str, engine: Engine, capsys: pytest.CaptureFixture[str]) -> None:
    configure_logging("json", "info")  # on the stream capsys reads
    fake = _workspace(quirks=Quirks(contacts_need_external_ids=True))
    clock = FakeClock(start=datetime.now(UTC).replace(tzinfo=None, microsecond=0))
    with _job(db_url, engine, fake, "v1", clock) as job:
        found = job.discover(clock.utcnow() - timedelta(days=7))
    assert found.exit_code == 0 and found.enqueued > 0
    assert found.refresh is not None and found.refresh.problems
    assert _rows(engine, "SELECT COUNT(*) FROM users")[0][0] == len(fake.workspace.people.users)
    assert _rows(engine, "SELECT COUNT(*) FROM contacts")[0][0] == 0
    logged = capsys.readouterr()
    warnings = [line for line in (logged.out + logged.err).splitlines() if "dimension listing incomplete" in line]
    assert len(warnings) == 1 and "contacts cannot be listed on this workspace" in warnings[0]
    assert "contacts 0 (1 request, incomplete)" in found.summary()


def test_the_contacts_options_on_the_command_line(db_url: str, engine: Engine) -> None:
    from click.testing import CliRunner

    from etl.cli import cli

    fake = _workspace()
    refused = CliRunner().invoke(cli, ["discover", "--contacts-refresh-hours", "-1", "--database-url", db_url],
                                 prog_name="etl")
    assert (refused.exit_code, refused.stderr) == (
        2, "Error: Invalid value for '--contacts-refresh-hours': -1.0 is not in the range x>=0. "
           "Try 'etl discover --help'.\n")
    with serve(fake) as url:
        args = ["discover", "--since", "2026-01-01", "--api-key", KEY, "--base-url", url, "--rate", "0",
                "--database-url", db_url, "--log-format", "json"]
        first = CliRunner().invoke(cli, args)
        again = CliRunner().invoke(cli, args)
        forced = CliRunner().invoke(cli, [*args, "--refresh-contacts"])
    contacts = len(fake.workspace.people.contacts)
    assert first.exit_code == again.exit_code == forced.exit_code == 0, first.output
    assert first.stdout.splitlines()[1].endswith(f"; contacts {contacts} (1 request, {contacts} new).")
    assert "; contacts not due until " in again.stdout.splitlines()[1]
    assert forced.stdout.splitlines()[1].endswith(f"; contacts {contacts} (1 request).")
