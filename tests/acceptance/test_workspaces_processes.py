"""Several `etl sync --workspaces FILE` processes on one PostgreSQL split every workspace's work (issue 27).

As on several machines: three processes started together, each running both
workspaces of one workspaces file, each workspace with its own key and its
own simulated API (real HTTP).  PostgreSQL is the only coordinator: the
per-workspace claims (``FOR UPDATE SKIP LOCKED``) must hand every item to
exactly one process, and each process must fetch a workspace's items from
that workspace's API with its key.  The simulators count every summary fetch
per call id.

The processes run at the default budget (10 requests/s per key, shared
through the database), so one claim takes 10 s of a key's work (100 items):
with 150 ids per workspace the first claim cannot take them all and the
others get the rest.  ``--no-calls``: one request per id (the summary), so the
run takes about 15 s.  The simulators themselves are unthrottled, so nothing
here depends on timing; the rate figures are bench/full_rate.py's.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest
import sqlalchemy as sa

from etl import Etl, db
from etl.config import Settings
from etl.testing import FakeOpenPhone, serve
from etl.workspaces import load_workspaces
from tests.support.db import empty_tables, server_url
from tests.support.proc import etl_env, output_of, start_etl, stop

N_IDS = 150  # per workspace: more than one claim's 100 at 10 requests/s
PROCESSES = 3
NAMES = ("north", "south")


def _completed_by_process(tmp_path: Path) -> list[Counter[str]]:
    """Per process, items completed per workspace (the ``run finished`` line of each workspace's run)."""
    out = []
    for n in range(PROCESSES):
        done: Counter[str] = Counter()
        for line in output_of(tmp_path, f"run{n}")[1].splitlines():
            if line.startswith("{") and '"run finished"' in line:
                event = json.loads(line)
                done[event["workspace"]] += event["completed"]
        out.append(done)
    return out


@pytest.mark.realtime
def test_processes_on_one_postgresql_fetch_every_workspace_item_exactly_once(tmp_path: Path) -> None:
    url = server_url("postgresql")  # skips without ETL_TEST_POSTGRES_URL
    empty_tables(url)
    ids = {name: [f"AC{name}{i:04d}" for i in range(N_IDS)] for name in NAMES}
    keys = {name: f"key-{name}-0123456789" for name in NAMES}
    fakes = {name: FakeOpenPhone(api_key=keys[name]) for name in NAMES}
    engine = db.create_engine(url)
    try:
        with serve(fakes["north"]) as north_url, serve(fakes["south"]) as south_url:
            bases = {"north": north_url, "south": south_url}
            file = tmp_path / "workspaces.toml"
            file.write_text("".join(f'[workspace.{name}]\napi_key_env = "KEY_{name.upper()}"\n'
                                    f'base_url = "{bases[name]}"\n\n' for name in NAMES), encoding="utf-8")
            env = etl_env(url, **{f"KEY_{name.upper()}": keys[name] for name in NAMES})
            job = Etl(Settings(database_url=url), engine=engine, workspaces=load_workspaces(file))
            for name in NAMES:
                assert job.workspace(name, api=False).enqueue(ids[name]).new == N_IDS
            procs = [start_etl(["sync", "--workspaces", str(file), "--no-calls"], env, tmp_path, f"run{n}")
                     for n in range(PROCESSES)]
            try:
                codes = [stop(p, timeout=120) for p in procs]
            finally:
                for proc in procs:  # none outlives a failed wait
                    if proc.poll() is None:
                        proc.kill()
                        proc.wait()
        assert codes == [0] * PROCESSES, [output_of(tmp_path, f"run{n}")[1][-2000:] for n in range(PROCESSES)]

        for name in NAMES:
            fake = fakes[name]
            # Every id of this workspace fetched exactly once, from its own API; none of the other's.
            assert dict(fake.requests) == dict.fromkeys(ids[name], 1), name
            assert fake.overlaps == []
            outcomes = fake.stats()["outcomes"]
            assert outcomes == {"200": N_IDS}, (name, outcomes)

        with engine.connect() as conn:
            queue = conn.execute(sa.text(
                "SELECT workspace, state, attempts, lease_owner, COUNT(*) FROM summary_queue "
                "GROUP BY workspace, state, attempts, lease_owner ORDER BY workspace")).all()
            summaries = dict(conn.execute(sa.text(
                "SELECT workspace, COUNT(*) FROM call_summaries GROUP BY workspace")).all())
            stored = {name: set(conn.execute(sa.text(
                "SELECT call_id FROM call_summaries WHERE workspace = :w"), {"w": name}).scalars())
                for name in NAMES}
        assert [tuple(r) for r in queue] == [(name, "done", 1, None, N_IDS) for name in NAMES]
        assert summaries == dict.fromkeys(NAMES, N_IDS)
        assert stored == {name: set(ids[name]) for name in NAMES}

        # The work was split: per workspace, the processes' runs add up to its ids, and more than one had a share.
        split = _completed_by_process(tmp_path)
        for name in NAMES:
            shares = [s[name] for s in split]
            assert sum(shares) == N_IDS, (name, shares)
            assert sum(1 for share in shares if share) >= 2, (name, shares)
        with engine.connect() as conn:
            runs = conn.execute(sa.text(
                "SELECT workspace, COUNT(*), SUM(claimed), SUM(completed), MAX(exit_code) FROM sync_runs "
                "GROUP BY workspace ORDER BY workspace")).all()
        assert [tuple(r) for r in runs] == [(name, PROCESSES, N_IDS, N_IDS, 0) for name in NAMES]
    finally:
        engine.dispose()
