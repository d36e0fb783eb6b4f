"""A run's counters are named after the queue states they count (issue 20, item 10).

One run ends an item in every state a run can end one in; RunStats, the
``sync_runs`` row, the ``run finished`` log line and `etl status` (its queue
counts and its last runs) must then say the same number under the same name,
so "failed 1" never again sits next to "Queue: failed 0".
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import timedelta

import pytest
import sqlalchemy as sa
import structlog
from click.testing import CliRunner

from etl import Etl
from etl.cli import cli
from etl.clock import utcnow
from etl.config import Backoff
from etl.logs import configure_logging
from etl.states import RUN_COUNTER
from etl.tables import queue_t, runs_t
from etl.testing import sample_summary

# call id -> the state its answer ends it in
ENDS = {"ACdone": "done", "ACinprog": "pending", "ACfailed": "failed", "ACabsent": "absent",
        "ACgone": "not_found", "ACbad": "invalid", "ACbroken": "error"}


@pytest.fixture(autouse=True)
def _reset_logging() -> Iterator[None]:
    yield
    structlog.reset_defaults()


def test_each_end_state_has_its_own_counter_everywhere(engine, settings, fake, db_url, capsys):
    fake.set_summary("ACinprog", sample_summary("ACinprog", "in-progress"))
    fake.set_summary("ACfailed", sample_summary("ACfailed", "failed"))
    fake.set_summary("ACabsent", sample_summary("ACabsent", "absent"))
    fake.set_response("ACgone", 404, {"message": "Call summary not found", "code": "0500404", "status": 404})
    fake.set_response("ACbad", 400, {"message": "Invalid call id", "code": "0500400", "status": 400})
    fake.set_response("ACbroken", 503, {"message": "Unavailable", "status": 503})
    with engine.begin() as conn:
        conn.execute(sa.insert(queue_t), [{"call_id": call_id} for call_id in ENDS])
        # Absent for more than a day already; transient 7 times in a row already: both end this run.
        conn.execute(sa.update(queue_t).where(queue_t.c.call_id == "ACabsent")
                     .values(incomplete_since=utcnow() - timedelta(hours=25)))
        conn.execute(sa.update(queue_t).where(queue_t.c.call_id == "ACbroken").values(consecutive_errors=7))
    configure_logging("json", "info")
    settings = settings.replace(backoff=Backoff(not_found_window=0))
    stats = Etl(settings, engine=engine).sync(transport=fake.transport())

    with engine.connect() as conn:
        states = dict(conn.execute(sa.select(queue_t.c.call_id, queue_t.c.state)).all())
        [row] = [dict(r._mapping) for r in conn.execute(sa.select(runs_t))]
    assert states == ENDS
    expected = {RUN_COUNTER[state]: 1 for state in ENDS.values()}
    assert expected == {"completed": 1, "rescheduled": 1, "failed": 1, "absent": 1, "not_found": 1, "invalid": 1,
                        "errors": 1}
    assert {name: getattr(stats, name) for name in expected} == expected
    assert {name: row[name] for name in expected} == expected
    [finished] = [json.loads(line) for line in capsys.readouterr().err.splitlines()
                  if line.startswith("{") and json.loads(line)["event"] == "run finished"]
    assert {name: finished[name] for name in expected} == expected
    assert stats.summary() == "1 completed, 1 rescheduled, 1 failed, 1 absent, 1 not_found, 1 invalid, 1 error"

    structlog.reset_defaults()
    status = CliRunner().invoke(cli, ["status", "--database-url", db_url], env={"ETL_DATABASE_URL": None})
    lines = status.stdout.splitlines()
    for state in ("failed", "absent", "not_found", "invalid"):
        assert f"  {state:<10} {1:>10}" in lines, state  # the queue says 1 ...
    [last] = [line for line in lines if line.startswith(f"  #{stats.run_id} ")]
    assert last.endswith(": 7 claimed, 1 completed, 1 rescheduled, 1 failed, 1 absent, 1 not_found, 1 invalid, "
                         "1 error")  # ... and so does the run, under the same names
