"""Issue 25, findings 2-3 in `etl sync`: a poison record costs only itself, is kept with its reason, and says so.

A lone surrogate (``"\\ud800"``, a valid JSON escape) in an unknown field, with
a NUL beside it, and a call from year 1: each in one call of a batch of good
ones, over the client's real HTTP path (a rewriting transport over the
simulated API).
"""

from __future__ import annotations

import json

import pytest
import sqlalchemy as sa
import structlog
from click.testing import CliRunner

from etl import Etl, storable, store
from etl.cli import cli
from etl.logs import configure_logging
from etl.testing import FakeOpenPhone
from tests.support.db import queue_rows, run
from tests.support.hostile import edit_calls, rewriting


@pytest.fixture(autouse=True)
def _reset_logging():
    yield
    structlog.reset_defaults()


def workspace(fake: FakeOpenPhone, n: int) -> list[str]:
    ws = fake.workspace
    conv = ws.add_conversation(ws.add_phone_number("+15550100000").id, ["+15550100001"])
    return [ws.add_call(conv.id).id for _ in range(n)]


def rows(engine, sql):
    with engine.connect() as conn:
        return conn.execute(sa.text(sql)).all()


def test_a_lone_surrogate_in_an_unknown_field_costs_nothing_and_is_said_once(engine, settings, fake, capsys,
                                                                              monkeypatch):
    monkeypatch.setattr(storable, "_said", set())  # once per process: this test's process starts afresh
    configure_logging("json", "info")
    ids = workspace(fake, 41)
    bad = {ids[7], ids[30]}
    with engine.begin() as conn:
        store.enqueue_ids(conn, ids)

    def poison(call):
        call["zz_unknown"] = "\ud800 and \x00"
        call["nested"] = {"list": ["\udfff"]}

    stats = Etl(settings, engine=engine).sync(transport=rewriting(fake, edit_calls(bad, poison)))
    assert (stats.completed, stats.errors, stats.rejected, stats.exit_code) == (41, 0, 0, 0)
    assert {r["state"] for r in queue_rows(engine).values()} == {"done"}
    stored = dict(rows(engine, "SELECT call_id, raw_json FROM calls"))
    assert set(stored) == set(ids)
    for call_id in bad:  # kept losslessly, as JSON escapes
        raw = json.loads(stored[call_id])
        assert (raw["zz_unknown"], raw["nested"]) == ("\ud800 and \x00", {"list": ["\udfff"]})
    said = [json.loads(line) for line in capsys.readouterr().err.splitlines() if line.startswith("{")]
    repairs = [line for line in said if line["event"] == "unstorable text in an API answer made storable"]
    assert len(repairs) <= 2 and repairs, said  # once per kind per process, not per record


def test_a_call_from_year_1_is_kept_aside_with_its_reason_and_the_run_says_so(db_url, engine, settings, fake):
    ids = workspace(fake, 6)
    with engine.begin() as conn:
        store.enqueue_ids(conn, ids)

    def year_1(call):
        call["createdAt"] = "0001-01-01T00:00:00+01:00"

    def year_9999(call):
        call["completedAt"] = "9999-12-31T23:59:59Z"

    def edit(call):
        (year_1 if call["id"] == ids[1] else year_9999)(call)

    stats = Etl(settings, engine=engine).sync(transport=rewriting(fake, edit_calls({ids[1], ids[4]}, edit)))
    # The summaries are fine: all done; the two call contexts are refused, counted, and the exit code says so.
    assert (stats.completed, stats.rejected, stats.exit_code) == (6, 2, 1)
    assert "2 rejected" in stats.summary()
    assert {r[0] for r in rows(engine, "SELECT call_id FROM calls")} == set(ids) - {ids[1], ids[4]}
    kept = {r.record_id: r for r in rows(engine, "SELECT * FROM rejected_records")}
    assert set(kept) == {ids[1], ids[4]}
    assert kept[ids[1]].reason == "createdAt: 0001-01-01T00:00:00+01:00 cannot be shifted to UTC"
    assert kept[ids[4]].reason == "completedAt: 9999-12-31T23:59:59+00:00 is outside 1970-2199"
    assert (kept[ids[1]].source, kept[ids[1]].endpoint, kept[ids[1]].times) == ("sync", "GET /calls/{id}", 1)
    assert json.loads(kept[ids[1]].payload)["createdAt"] == "0001-01-01T00:00:00+01:00"

    status = CliRunner().invoke(cli, ["status", "--json", "--database-url", db_url])
    assert json.loads(status.stdout)["rejected_records"] == 2
    text = CliRunner().invoke(cli, ["status", "--database-url", db_url])
    assert ("Rejected records: 2 (API records that could not be stored, with the reason: table rejected_records)"
            in text.stdout.splitlines())


def test_sync_is_not_stalled_by_one_unstorable_value_the_batch_isolates_it(engine, settings, fake, monkeypatch):
    """Whatever slips past the repairs (here: a text a driver refuses to encode) costs its own item only:
    the batch is written as one, and only when that fails, entry by entry."""
    ids = workspace(fake, 12)
    with engine.begin() as conn:
        store.enqueue_ids(conn, ids)
    import etl.sync as sync_module

    real = sync_module.normalize

    def unstorable(*args, **kwargs):
        rows = real(*args, **kwargs)
        if args[0].call_id == ids[5]:  # the canonical Summary names its call
            rows.parent["title"] = "\ud800"  # past clean_text: what the review's traceback came from
        return rows

    monkeypatch.setattr(sync_module, "normalize", unstorable)
    stats = run(engine, settings.replace(write_batch=50), fake)
    queue = queue_rows(engine)
    assert {i for i, r in queue.items() if r["state"] == "done"} == set(ids) - {ids[5]}
    assert queue[ids[5]]["state"] == "error" and "database rejected this summary" in queue[ids[5]]["last_error"]
    assert (stats.completed, stats.errors, stats.rejected, stats.exit_code) == (11, 1, 1, 1)
    kept = rows(engine, "SELECT source, endpoint, record_id, times FROM rejected_records")
    assert [tuple(r) for r in kept] == [("sync", "GET summary", ids[5], 1)]
