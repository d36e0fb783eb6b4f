"""Issue 25: the receiver's engine reports unhealthy when it cannot make progress, instead of
retrying forever behind a healthy /healthz.

No progress, for real: a lease shorter than a request may take (``lease_seconds`` under the
read timeout) makes the engine release every item it claims unsent, run after run.
"""

from __future__ import annotations

from etl import store
from etl.clock import SYSTEM
from etl.webhooks.metrics import Metrics
from etl.webhooks.worker import NO_PROGRESS_RUNS, SyncWorker


def test_runs_that_claim_and_save_nothing_make_the_engine_unhealthy_until_one_saves(engine, settings, fake):
    with engine.begin() as conn:
        store.enqueue_ids(conn, ["ACstall1", "ACstall2"])
    stuck = settings.replace(lease_seconds=5, read_timeout=20)
    # The system clock, as `etl serve` runs: nothing here waits (the lease check releases before sending).
    worker = SyncWorker(engine, stuck, Metrics(engine, SYSTEM), transport=fake.transport(),
                        poll_interval=3600, clock=SYSTEM)
    for n in range(1, NO_PROGRESS_RUNS + 1):
        assert worker.error is None, n
        worker._attempt()
        assert worker.last_run is not None and worker.last_run["claimed"] == 2
    assert worker.error is not None
    reason = f"no progress: {NO_PROGRESS_RUNS} runs in a row claimed due work and saved none"
    assert worker.error.as_dict() == {"type": "NoProgress", "reason": reason}
    # Put right, the next run saves the items and the engine is healthy again.
    worker.settings = settings
    worker._attempt()
    assert worker.error is None and worker.last_run["completed"] == 2
