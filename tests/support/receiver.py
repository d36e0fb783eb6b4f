"""A real ``etl serve`` receiver on a thread, for tests: the app, an engine thread per workspace, the
housekeeper and uvicorn with ``etl serve``'s own configuration (``server.uvicorn_config``,
``ReceiverServer``), on a free local port, against the simulated API (in-process transport: one
``FakeOpenPhone`` per workspace, each with its own key).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import timedelta

import httpx
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from etl.clock import SYSTEM, Clock
from etl.config import Settings
from etl.testing import FakeOpenPhone, webhooks
from etl.webhooks.app import ReceiverConfig, ServedWorkspace, create_app
from etl.webhooks.metrics import Metrics
from etl.webhooks.server import ReceiverServer, ServeOptions, serving_engines, uvicorn_config
from etl.webhooks.worker import Housekeeper, SyncWorker
from tests.support.proc import free_port

API_KEY = "test-key-0123456789"
# Signing keys as OpenPhone shows them: base64 of 32 bytes (v1), whsec_<base64> (Standard Webhooks).
WHSEC = webhooks.new_standard_secret(b"secret-std")
SECRET_A = webhooks.new_standard_secret(b"secret-a").removeprefix("whsec_")
SECRET_B = webhooks.new_standard_secret(b"secret-b").removeprefix("whsec_")


@dataclass
class FakeWorkspace:
    """A workspace of a test receiver: its name, its own simulated API (own key) and its secrets."""

    name: str
    fake: FakeOpenPhone
    secrets: list[str] = field(repr=False)
    transcripts: bool = False


@dataclass
class Receiver:
    url: str
    engine: Engine
    fake: FakeOpenPhone  # the first workspace's
    metrics: Metrics
    client: httpx.Client
    workers: dict[str, SyncWorker]
    housekeeper: Housekeeper
    intake_engine: Engine | None  # SQLite: the deliveries' engine, with a short busy timeout
    fakes: dict[str, FakeOpenPhone] = field(default_factory=dict)  # each workspace's API

    @property
    def worker(self) -> SyncWorker:
        """The first workspace's engine thread."""
        return next(iter(self.workers.values()))

    def post(self, body: bytes, headers: dict[str, str], path: str = "/webhooks/openphone") -> httpx.Response:
        return self.client.post(self.url + path, content=body, headers=headers)

    def count(self, table: str, where: str = "") -> int:
        with self.engine.connect() as conn:
            return int(conn.execute(sa.text(f"SELECT count(*) FROM {table} {where}")).scalar_one())

    def state(self, call_id: str) -> str | None:
        with self.engine.connect() as conn:
            return conn.execute(sa.text("SELECT state FROM summary_queue WHERE call_id = :c"),
                                {"c": call_id}).scalar()

    def wait_done(self, call_ids: list[str], timeout: float = 30) -> float:
        started = time.monotonic()
        deadline = started + timeout
        while time.monotonic() < deadline:
            if self.count("summary_queue", "WHERE state = 'done'") >= len(call_ids) and all(
                    self.state(c) == "done" for c in call_ids[:50]):
                return time.monotonic() - started
            time.sleep(0.05)
        done = self.count("summary_queue", "WHERE state = 'done'")
        raise AssertionError(f"not all done after {timeout} s: {done} of {len(call_ids)}")

    def scrape(self) -> str:
        return self.client.get(self.url + "/metrics").text


@contextmanager
def running_receiver(engine: Engine, db_url: str, *, rate: float = 10.0, clock: Clock = SYSTEM,
                     options: ServeOptions | None = None, config: ReceiverConfig | None = None,
                     fake: FakeOpenPhone | None = None, poll_interval: float = 5.0,
                     workspaces: Sequence[FakeWorkspace] = (), port: int | None = None) -> Iterator[Receiver]:
    """A running receiver at ``Receiver.url``; stopped (engines drained) on exit.

    ``workspaces``: what it serves, each with its own fake API, key and secrets (default: the one
    workspace ``default`` on ``fake``, with :data:`SECRET_A`, :data:`SECRET_B` and :data:`WHSEC`);
    ``config`` replaces the receiver's options (its workspaces included); ``port``: listen there (a URL
    registered before the server starts), else on a free one.
    """
    if not workspaces:
        workspaces = [FakeWorkspace("default", fake or FakeOpenPhone(api_key=API_KEY), [SECRET_A, SECRET_B, WHSEC])]
    engine, intake_engine = serving_engines(engine)
    metrics = Metrics(engine, clock)
    workers = {}
    for ws in workspaces:
        settings = Settings(database_url=db_url, api_key=ws.fake.api_key, base_url="http://fake.test", rate=rate,
                            concurrency=4, retry_initial=0.001, retry_max=0.01, workspace=ws.name,
                            transcripts=ws.transcripts)
        workers[ws.name] = SyncWorker(engine, settings, metrics, transport=ws.fake.transport(),
                                      poll_interval=poll_interval, clock=clock)
    housekeeper = Housekeeper(engine, metrics, timedelta(days=7), clock=clock,
                              workspaces=[ws.name for ws in workspaces])
    config = config or ReceiverConfig([ServedWorkspace(ws.name, ws.secrets, ws.transcripts) for ws in workspaces],
                                      max_body_bytes=64 * 1024)
    app = create_app(engine, config, metrics, list(workers.values()), housekeeper, clock=clock,
                     intake_engine=intake_engine)
    port = port or free_port()
    options = options or ServeOptions()
    options.host, options.port = "127.0.0.1", port
    server = ReceiverServer(uvicorn_config(app, options), f"http://127.0.0.1:{port}")
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        assert time.monotonic() < deadline and thread.is_alive(), "server did not start"
        time.sleep(0.01)
    try:
        with httpx.Client(timeout=10) as client:
            yield Receiver(f"http://127.0.0.1:{port}", engine, workspaces[0].fake, metrics, client, workers,
                           housekeeper, intake_engine, {ws.name: ws.fake for ws in workspaces})
    finally:
        server.should_exit = True
        thread.join(30)
        if intake_engine is not None:
            intake_engine.dispose()
            engine.dispose()
    assert not thread.is_alive()
