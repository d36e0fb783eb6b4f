"""One run serves every workspace (issue 27, part 2), on every database.

Two simulated workspaces, each a `FakeOpenPhone` with OpenPhone's limit (10 requests/s, burst 10)
served over real HTTP with its own key, both on one `FakeClock` with the job: `Etl.sync_workspaces`
runs both at once on the default throttled path (each key's budget in `rate_budgets`).

* fairness: workspace a has a backlog of 2,000 ids, b a few fresh ones; b's are all answered before
  a has been answered more than one claim (100 items at 10/s: `Syncer._claim_batch`);
* each run claims only its own workspace's items and fetches them with its own key;
* a refused key stops that workspace's run (exit 3) and the combined exit code is 3 while the
  other workspace syncs everything;
* one SIGTERM stops both runs (each `interrupted by SIGTERM`, items left pending);
* every log line of a run, those of its fetch threads included, says which workspace.
"""

from __future__ import annotations

import json
import signal
import threading
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from etl import Etl, WorkspaceConfig
from etl.logs import configure_logging
from etl.runs import StopReason
from etl.testing import FakeOpenPhone, Faults, serve
from etl.testing.clock import FakeClock

KEYS = {"a": "key-of-a-0123456789", "b": "key-of-b-9876543210"}
# At 10 requests/s a run claims 10 s of work at once (etl.sync.Syncer._claim_batch): 100 items.
CLAIM_BATCH = 100


class Recorded(FakeOpenPhone):
    """A simulated workspace that notes each summary it answered in a list shared with the other one, so
    the test sees the order of both workspaces' answers."""

    def __init__(self, name: str, answered: list[tuple[str, str]], **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.name = name
        self.answered = answered

    def route(self, method: str, target: str, authorization: str | None, body: bytes = b"", gone: Any = None, *,
              version: str | None = None) -> Any:
        reply = super().route(method, target, authorization, body, gone, version=version)
        if reply.status == 200 and "/call-summaries/" in target:
            self.answered.append((self.name, target.rsplit("/", 1)[1]))  # one append: atomic under the GIL
        return reply


@contextmanager
def two_workspaces(monkeypatch: pytest.MonkeyPatch, clock: FakeClock, keys: dict[str, str] | None = None,
                   **per_fake: dict[str, Any]) -> Iterator[tuple[tuple[WorkspaceConfig, ...], dict[str, Recorded],
                                                                 list[tuple[str, str]]]]:
    """Workspaces a and b, each served over HTTP at OpenPhone's limit with its key in a variable."""
    answered: list[tuple[str, str]] = []
    fakes = {name: Recorded(name, answered, api_key=KEYS[name], rate=10.0, burst=10, clock=clock,
                            **per_fake.get(name, {})) for name in KEYS}
    for name, key in (keys or KEYS).items():
        monkeypatch.setenv(f"ETL_TEST_KEY_{name.upper()}", key)
    with ExitStack() as stack:
        urls = {name: stack.enter_context(serve(fake)) for name, fake in fakes.items()}
        configs = tuple(WorkspaceConfig(name, f"ETL_TEST_KEY_{name.upper()}", base_url=urls[name]) for name in KEYS)
        yield configs, fakes, answered


def enqueue(job: Etl, workspace: str, ids: list[str]) -> None:
    counts = job.workspace(workspace, api=False).enqueue(ids)
    assert counts.new == len(ids)


def states(engine: Engine) -> dict[str, dict[str, int]]:
    with engine.connect() as conn:
        rows = conn.execute(sa.text("SELECT workspace, state, COUNT(*) FROM summary_queue "
                                    "GROUP BY workspace, state")).all()
    found: dict[str, dict[str, int]] = {}
    for workspace, state, n in rows:
        found.setdefault(workspace, {})[state] = int(n)
    return found


def summary_ids(fake: FakeOpenPhone) -> set[str]:
    return {path.rsplit("/", 1)[1] for _, path, _ in fake.request_log if "/call-summaries/" in path}


def test_a_long_backlog_does_not_hold_back_another_workspaces_fresh_calls(db_url, engine, monkeypatch, clock):
    backlog = [f"ACa{i:05d}" for i in range(2000)]
    fresh = [f"ACb{i:05d}" for i in range(5)]
    with two_workspaces(monkeypatch, clock) as (configs, fakes, answered), \
            Etl(database_url=db_url, workspaces=configs, clock=clock, fetch_calls=False) as job:
        enqueue(job, "a", backlog)
        enqueue(job, "b", fresh)
        runs = job.sync_workspaces()
    assert job.settings.rate == 10.0  # the default throttled path
    assert runs.exit_code == 0, runs
    assert (runs["a"].completed, runs["b"].completed) == (2000, 5)
    assert states(engine) == {"a": {"done": 2000}, "b": {"done": 5}}
    # Each workspace's ids went to its own API with its own key, never to the other's.
    assert summary_ids(fakes["a"]) == set(backlog) and summary_ids(fakes["b"]) == set(fresh)
    # Fair: b's fresh calls were all answered before a had been answered more than one claim.
    last_b = max(i for i, (name, _) in enumerate(answered) if name == "b")
    served_a_before = sum(1 for name, _ in answered[:last_b] if name == "a")
    assert served_a_before <= CLAIM_BATCH, (served_a_before, len(answered))
    for fake in fakes.values():  # each key within its own budget
        outcomes = fake.stats()["outcomes"]
        assert isinstance(outcomes, dict)
        assert outcomes.get("429", 0) <= 0.01 * fake.total_requests, outcomes


def test_a_refused_key_stops_its_workspace_only_and_the_exit_code_combines(db_url, engine, monkeypatch, clock):
    with two_workspaces(monkeypatch, clock, keys={"a": KEYS["a"], "b": "not-the-key-of-b-000"}) as (configs, _, _), \
            Etl(database_url=db_url, workspaces=configs, clock=clock) as job:
        enqueue(job, "a", [f"ACa{i:03d}" for i in range(30)])
        enqueue(job, "b", [f"ACb{i:03d}" for i in range(30)])
        runs = job.sync_workspaces()
    assert (runs.exit_codes, runs.exit_code) == ({"a": 0, "b": 3}, 3)
    assert runs["b"].stop is StopReason.AUTH_REFUSED
    assert runs["b"].stop_reason.startswith("the API refused the key (HTTP 401)")
    assert states(engine) == {"a": {"done": 30}, "b": {"pending": 30}}  # b's items left as they were


def test_workspace_names_limit_the_run(db_url, engine, monkeypatch, clock):
    with two_workspaces(monkeypatch, clock) as (configs, fakes, _), \
            Etl(database_url=db_url, workspaces=configs, clock=clock) as job:
        enqueue(job, "a", ["ACa1", "ACa2"])
        enqueue(job, "b", ["ACb1"])
        runs = job.sync_workspaces(["b"])
    assert list(runs) == ["b"] and runs["b"].completed == 1
    assert states(engine) == {"a": {"pending": 2}, "b": {"done": 1}}
    assert fakes["a"].total_requests == 0


class Interrupting(Recorded):
    """Raises SIGTERM in the process when it has answered ``after`` summaries (from its server thread:
    the signal is handled on the main thread, as a real one is)."""

    after = 20
    raised = False
    _once = threading.Lock()

    def route(self, method: str, target: str, authorization: str | None, body: bytes = b"", gone: Any = None, *,
              version: str | None = None) -> Any:
        reply = super().route(method, target, authorization, body, gone, version=version)
        with self._once:
            due = not self.raised and sum(1 for n, _ in self.answered if n == self.name) >= self.after
            self.raised = self.raised or due
        if due:
            signal.raise_signal(signal.SIGTERM)
        return reply


def test_one_sigterm_stops_every_workspaces_run(db_url, engine, monkeypatch, clock):
    assert threading.current_thread() is threading.main_thread()
    answered: list[tuple[str, str]] = []
    fakes = {"a": Interrupting("a", answered, api_key=KEYS["a"], rate=10.0, burst=10, clock=clock),
             "b": Recorded("b", answered, api_key=KEYS["b"], rate=10.0, burst=10, clock=clock)}
    for name, key in KEYS.items():
        monkeypatch.setenv(f"ETL_TEST_KEY_{name.upper()}", key)
    before = signal.getsignal(signal.SIGTERM)
    with ExitStack() as stack:
        urls = {name: stack.enter_context(serve(fake)) for name, fake in fakes.items()}
        configs = tuple(WorkspaceConfig(n, f"ETL_TEST_KEY_{n.upper()}", base_url=urls[n]) for n in KEYS)
        with Etl(database_url=db_url, workspaces=configs, clock=clock, fetch_calls=False) as job:
            enqueue(job, "a", [f"ACa{i:04d}" for i in range(1000)])
            enqueue(job, "b", [f"ACb{i:04d}" for i in range(1000)])
            runs = job.sync_workspaces()
    assert signal.getsignal(signal.SIGTERM) is before
    assert runs.exit_codes == {"a": 1, "b": 1} and runs.exit_code == 1
    for name in KEYS:
        assert (runs[name].stop, runs[name].stop_reason) == (StopReason.SIGNAL, "interrupted by SIGTERM")
    left = states(engine)
    assert left["a"].get("pending", 0) > 0 and left["b"].get("pending", 0) > 0, left
    assert left["a"].get("done", 0) == runs["a"].completed and left["b"].get("done", 0) == runs["b"].completed


def test_every_log_line_of_a_run_names_its_workspace(db_url, monkeypatch, clock, capsys):
    configure_logging("json", "info")
    # b's call lookups fail (500): its fetch threads log why, on their own threads.
    calls_fail = Faults(error_500=1.0, endpoints=frozenset({"call"}), max_per_id=None)
    with two_workspaces(monkeypatch, clock, b={"faults": calls_fail}) as (configs, _, _), \
            Etl(database_url=db_url, workspaces=configs, clock=clock) as job:
        enqueue(job, "a", ["ACa1", "ACa2"])
        enqueue(job, "b", ["ACb1", "ACb2"])
        capsys.readouterr()
        runs = job.sync_workspaces()
    assert runs.exit_code == 0
    lines = [json.loads(line) for line in capsys.readouterr().err.splitlines()]
    assert lines and all(line.get("workspace") in ("a", "b") for line in lines), lines
    by_event = {(line["event"], line["workspace"]) for line in lines}
    assert {("run started", "a"), ("run started", "b"), ("run finished", "a"), ("run finished", "b")} <= by_event
    calls = {line["call_id"]: line["workspace"] for line in lines if line["event"] == "call"}
    assert calls == {"ACa1": "a", "ACa2": "a", "ACb1": "b", "ACb2": "b"}
    from_fetch_threads = [line for line in lines if line["event"].startswith("call context not fetched")]
    assert {line["call_id"] for line in from_fetch_threads} == {"ACb1", "ACb2"}
    assert {line["workspace"] for line in from_fetch_threads} == {"b"}
    assert not any(key in json.dumps(lines) for key in KEYS.values())
