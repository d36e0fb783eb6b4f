"""What must not take `etl serve` down, against a real running receiver (uvicorn with `etl serve`'s configuration,
on a thread) over real HTTP, on every database: a database outage the engine must survive, a
locked SQLite file, the webhook-id as the Standard Webhooks idempotency key, hostile signed
payloads, and the one clock seam (FakeClock) for signature windows and retention.
"""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
import sqlalchemy as sa
import structlog
from sqlalchemy.engine import Engine, make_url

from etl import db
from etl.config import Settings
from etl.testing import webhooks
from etl.testing.clock import FakeClock
from etl.webhooks.app import ReceiverConfig
from etl.webhooks.metrics import Metrics
from etl.webhooks.worker import Housekeeper, SyncWorker
from tests.support.receiver import SECRET_A, WHSEC, Receiver, running_receiver
from tests.support.tcpproxy import TcpProxy

JSON = {"content-type": "application/json"}


def wait_until(predicate: object, timeout: float, what: str) -> float:
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        if predicate():  # type: ignore[operator]
            return time.monotonic() - started
        time.sleep(0.1)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


def summary(call_id: str, event_id: str | None = None) -> bytes:
    return webhooks.body_bytes(webhooks.summary_completed(call_id, event_id=event_id))


def send(r: Receiver, call_id: str) -> httpx.Response:
    """A fresh v1-signed call.summary.completed delivery for ``call_id``."""
    body = summary(call_id)
    return r.post(body, v1(body))


def v1(body: bytes, ts_ms: int | None = None) -> dict[str, str]:
    return {**webhooks.sign_v1(body, SECRET_A, ts_ms), **JSON}


def std(body: bytes, msg_id: str, ts: int) -> dict[str, str]:
    return {**webhooks.sign_standard(body, WHSEC, msg_id=msg_id, timestamp=datetime.fromtimestamp(ts, UTC)), **JSON}


# --- 2 and 7: a database outage --------------------------------------------------------


class Outage:
    """Takes the test database away and brings it back: a SQLite file moved aside and back, or a
    TCP proxy in front of PostgreSQL/MariaDB cut and restored (the shared server keeps running)."""

    def __init__(self, db_url: str) -> None:
        self.db_url = db_url
        self.proxy: TcpProxy | None = None
        self.url = db_url
        if make_url(db_url).get_backend_name() != "sqlite":
            self.proxy, self.url = TcpProxy.for_url(db_url)
        self.path = Path(make_url(db_url).database or "") if self.proxy is None else Path("/nowhere/x.db")
        self.aside = self.path.parent.with_name(self.path.parent.name + "-aside")

    def start(self) -> None:
        if self.proxy is not None:
            self.proxy.cut()
            return
        # The file's whole directory goes (an unmounted volume).  The server's open connections
        # would go on using the moved file by its inode: they must notice it is not there.
        self.path.parent.rename(self.aside)

    def end(self) -> None:
        if self.proxy is not None:
            self.proxy.restore()
        else:
            self.aside.rename(self.path.parent)

    def close(self) -> None:
        if self.proxy is not None:
            self.proxy.close()
        elif self.aside.exists():
            self.aside.rename(self.path.parent)


@contextmanager
def outage_for(db_url: str) -> Iterator[Outage]:
    outage = Outage(db_url)
    try:
        yield outage
    finally:
        outage.close()


def test_engine_survives_a_database_outage_and_healthz_recovers(db_url: str, engine: Engine,
                                                                 capsys: pytest.CaptureFixture[str],
                                                                 caplog: pytest.LogCaptureFixture) -> None:
    """After a database outage the engine resumes by itself (before: the thread died,
    deliveries were answered 200 and never fetched, /healthz stayed 503 with the full error text)."""
    # Library mode: the lines go to the standard library logger `etl` (caplog), whatever an earlier
    # test of this worker configured structlog to write to.
    structlog.reset_defaults()
    with outage_for(db_url) as outage:
        served = db.create_engine(outage.url)
        try:
            with running_receiver(served, outage.url, poll_interval=1) as r:
                assert send(r, "ACout1").json() == {"status": "queued"}
                r.wait_done(["ACout1"])
                outage.start()
                answer = send(r, "ACout2")
                assert answer.status_code == 503, answer.text
                assert answer.json() == {"error": "database_unavailable"}
                assert answer.headers["retry-after"] == "5"
                r.worker.wake()

                def engine_paused() -> bool:
                    return r.worker.error is not None
                wait_until(engine_paused, 30, "the engine to notice the outage")
                health = r.client.get(r.url + "/healthz")
                assert health.status_code == 503
                shown = health.text
                assert health.json()["engine_error"]["reason"] == "database unavailable"
                parsed = make_url(db_url)
                secrets = [str(parsed.database), "SELECT", "INSERT", "summary_queue", "sqlite3", "[SQL"]
                if parsed.host:
                    secrets += [parsed.host, str(parsed.username), str(parsed.port or "")]
                assert [s for s in secrets if s and s in shown] == [], shown
                time.sleep(2)  # the outage lasts a while; the engine keeps retrying, never dies
                assert r.worker.alive
                outage.end()
                came_back = time.monotonic()
                assert send(r, "ACout3").json() == {"status": "queued"}
                r.wait_done(["ACout1", "ACout3"], timeout=30)
                green = wait_until(lambda: r.client.get(r.url + "/healthz").status_code == 200, 30,
                                   "/healthz to be green again")
                assert time.monotonic() - came_back < 30, green
                assert r.client.get(r.url + "/healthz").json()["engine_error"] is None
                assert r.fake.requests["ACout3"] == 1
        finally:
            served.dispose()
    # In process the package logs to the standard library logger `etl` unless structlog was configured.
    # (SQLAlchemy's pool logs a failed reset of a cut connection with its traceback: `etl serve`'s
    # logging set-up silences that logger, etl.logs.configure_logging.)
    ours = [r for r in caplog.records if r.name == "etl" or r.name.startswith("etl.")]
    logged = "".join(capsys.readouterr()) + "".join(caplog.handler.format(r) for r in ours)
    assert "Traceback" not in logged  # an outage is a few warning lines, not tracebacks
    assert logged.count("sync engine paused") == 1


# --- 5: a locked SQLite database --------------------------------------------------------


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_locked_sqlite_answers_503_quickly_and_reads_take_no_write_lock(db_url: str, engine: Engine) -> None:
    """A locked SQLite database answers 503 at once (before, a delivery waited 60 s x 6 tries for the lock, and
    /healthz waited too)."""
    with running_receiver(engine, db_url) as r:
        path = make_url(db_url).database
        assert path is not None
        holder = sqlite3.connect(path, isolation_level=None)
        try:
            holder.execute("BEGIN IMMEDIATE")  # another writer holds the write lock
            holder.execute("UPDATE summary_queue SET attempts = attempts")
            started = time.monotonic()
            answer = send(r, "AClock1")
            took = time.monotonic() - started
            assert answer.status_code == 503, answer.text
            assert answer.headers["retry-after"] == "5"
            assert took < 6, took
            started = time.monotonic()
            assert r.client.get(r.url + "/healthz").status_code == 200  # a reader: no write lock to wait for
            assert 'etl_queue_items' in r.scrape()
            assert time.monotonic() - started < 1.5
        finally:
            holder.execute("ROLLBACK")
            holder.close()
        assert send(r, "AClock1").json() == {"status": "queued"}
        r.wait_done(["AClock1"])


# --- 4: the webhook-id is the Standard Webhooks idempotency key ------------------------------


def test_standard_webhooks_dedupe_on_webhook_id(db_url: str, engine: Engine) -> None:
    """Standard Webhooks deliveries are deduplicated on `webhook-id` (`webhook-timestamp: 0<ts>` made a new replay
    key, so a captured message was
    accepted again; and a re-signed retry of a body without an event id was queued twice."""
    with running_receiver(engine, db_url) as r:
        body = summary("ACwid1")
        ts = int(time.time())
        first = std(body, "msg_wid1", ts)
        assert r.post(body, first).json() == {"status": "queued"}
        padded = dict(first, **{"webhook-timestamp": "0" + first["webhook-timestamp"]})
        replay = r.post(body, padded)
        assert (replay.status_code, replay.json()["error"]) == (401, "replay")
        # The sender's retry: the same webhook-id signed again later.
        assert r.post(body, std(body, "msg_wid1", ts + 2)).json() == {"status": "duplicate"}
        # A body without an event id: only the webhook-id tells a retry from a new message.
        bare = json.loads(summary("ACwid2"))
        del bare["id"]
        raw = json.dumps(bare).encode()
        assert r.post(raw, std(raw, "msg_wid2", ts)).json() == {"status": "queued"}
        assert r.post(raw, std(raw, "msg_wid2", ts + 3)).json() == {"status": "duplicate"}
        r.wait_done(["ACwid1", "ACwid2"])
        time.sleep(0.3)
        # One row per signed message (each copy's exact replay is refused later, in any order): the two
        # queued and the two re-signed duplicates; the refused replay stored nothing.
        assert r.count("webhook_deliveries") == 4
        assert (r.fake.requests["ACwid1"], r.fake.requests["ACwid2"]) == (1, 1)
        assert 'etl_webhook_refusals_total{reason="replay",workspace="default"} 1.0' in r.scrape()


# --- 6: hostile signed payloads ---------------------------------------------------------------


def _call(call_id: str, **changes: object) -> dict[str, object]:
    call: dict[str, object] = {
        "id": call_id, "object": "call", "direction": "incoming", "status": "completed",
        "createdAt": "2026-11-25T10:00:00Z", "answeredAt": "2026-11-25T10:00:05Z",
        "completedAt": "2026-11-25T10:04:00Z", "duration": 235, "phoneNumberId": "PNabc123",
        "userId": "USabc123", "participants": ["+15555550100"], "contactIds": []}
    call.update(changes)
    return call


HOSTILE_CALLS: dict[str, dict[str, object]] = {
    "AChostNul": {"direction": "in\x00coming", "userId": "US\x00x"},
    "AChostSurrogate": {"userId": "US\ud800x", "participants": ["+1555\udfff0100"]},
    "AChostDuration": {"duration": 10**30},
    "AChostYear1": {"createdAt": "0001-01-01T00:00:00Z", "completedAt": "0001-01-01T00:04:00Z"},
    "AChostYear9999": {"completedAt": "9999-12-31T23:59:59-05:00"},
    "AChostNotAnObject": {"participants": "+15555550100"},
}


def test_hostile_signed_payloads_queue_the_call_id_and_never_500(db_url: str, engine: Engine) -> None:
    """Hostile signed payloads queue the call id and never answer 500: each of these failed on every retry (500)
    before, or stored a control
    byte as a metric label; now the call id is queued, the answer is 2xx or a 4xx that says why."""
    config = ReceiverConfig.single([SECRET_A, WHSEC])  # the default 1 MiB body limit
    with running_receiver(engine, db_url, rate=100, config=config) as r:
        for call_id, changes in HOSTILE_CALLS.items():
            body = json.dumps(webhooks.call_completed(_call(call_id, **changes))).encode()  # \ud800 escaped
            answer = r.post(body, v1(body))
            assert answer.json() == {"status": "queued"}, (call_id, answer.status_code, answer.text)
            assert r.state(call_id) is not None, call_id
        nested = b'{"type":"call.completed","data":{"object":' + b"[" * 100_000 + b"]" * 100_000 + b"}}"
        answer = r.client.post(r.url + "/webhooks/openphone", content=nested, headers=v1(nested))
        assert (answer.status_code, answer.json()["error"]) == (400, "bad_json")
        assert "nested too deeply" in answer.json()["message"]
        for bad_type in ("call.completed\x00", "call.\ud800summary", "x" * 10_000):
            body = json.dumps(webhooks.event(bad_type, {"id": "ACtype1"})).encode()
            answer = r.post(body, v1(body))
            assert answer.json() == {"status": "ignored"}, (bad_type[:20], answer.text)
        body = json.dumps(webhooks.summary_completed("AC\x00bad")).encode()
        assert r.post(body, v1(body)).json() == {"status": "ignored"}
        # Every call id was queued, whatever its call object held.
        with engine.connect() as conn:
            queued = set(conn.execute(sa.text("SELECT call_id FROM summary_queue")).scalars())
        assert queued == set(HOSTILE_CALLS)
        with engine.connect() as conn:
            user = conn.execute(sa.text("SELECT user_id FROM calls WHERE call_id = 'AChostNul'")).scalar()
        assert user == "US\ufffdx"
        r.wait_done(sorted(HOSTILE_CALLS), timeout=30)
        # The calls the events could not store were fetched from the API by the engine instead.
        with engine.connect() as conn:
            stored = {row.call_id: row for row in conn.execute(sa.text(
                "SELECT call_id, duration_seconds, created_at FROM calls"))}
        assert set(stored) == set(HOSTILE_CALLS)
        assert all(row.duration_seconds is None or row.duration_seconds < 2**31 for row in stored.values())
        assert str(stored["AChostYear1"].created_at)[:4] != "0001"
        scraped = r.scrape()
        types = {line.split('type="')[1].split('"')[0] for line in scraped.splitlines()
                 if line.startswith("etl_webhook_deliveries_total{")}
        assert types == {"call.completed", "call.summary.completed", "other"}, types
        assert 'etl_webhook_deliveries_total{outcome="ignored",type="other",workspace="default"} 3.0' in scraped


# --- the clock seam: windows and retention on a FakeClock ------------------------------------


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_signature_window_and_retention_follow_the_receivers_clock(db_url: str, engine: Engine) -> None:
    clock = FakeClock(datetime(2026, 1, 1, 12, 0))
    ts = int(clock.utcnow().replace(tzinfo=UTC).timestamp())
    with running_receiver(engine, db_url, clock=clock) as r:
        body = summary("ACclock1")
        # Signed at the receiver's (fake) now, eleven months before the system clock: accepted.
        assert r.post(body, std(body, "msg_clock1", ts)).json() == {"status": "queued"}
        clock.advance(301)
        body = summary("ACclock2")
        late = r.post(body, std(body, "msg_clock2", ts))
        assert (late.status_code, late.json()["error"]) == (401, "stale_timestamp")
        with engine.connect() as conn:
            received = conn.execute(sa.text("SELECT received_at FROM webhook_deliveries")).scalar()
        assert str(received).startswith("2026-01-01 12:00:00")
        keeper = Housekeeper(engine, r.metrics, timedelta(days=7), clock=clock)
        assert keeper.prune() == 0
        clock.advance(7 * 86400)
        assert keeper.prune() == 1
        assert r.count("webhook_deliveries") == 0


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_a_sqlite_file_swapped_underneath_gets_the_next_writes(db_url: str, engine: Engine) -> None:
    """A pooled connection keeps its file by inode: without following the path, deliveries after a
    swap (a restored copy put in place) were written into the replaced, unlinked file and lost."""
    with running_receiver(engine, db_url) as r:
        assert send(r, "ACswap1").json() == {"status": "queued"}
        r.wait_done(["ACswap1"])
        path = Path(make_url(db_url).database or "")
        copy = path.with_name("copy.db")
        with sqlite3.connect(path) as source, sqlite3.connect(copy) as target:
            source.backup(target)
        copy.replace(path)  # a new inode at the same path, the same content
        for stale in (path.with_name(path.name + "-wal"), path.with_name(path.name + "-shm")):
            stale.unlink(missing_ok=True)
        assert send(r, "ACswap2").json() == {"status": "queued"}
        r.wait_done(["ACswap1", "ACswap2"])
    with sqlite3.connect(path) as conn:
        landed = {row[0] for row in conn.execute("SELECT call_id FROM call_summaries")}
    assert landed == {"ACswap1", "ACswap2"}


def test_engine_backs_off_on_the_receivers_clock_while_the_database_is_away() -> None:
    """The back-off is 0.5 s doubling to 8 s, on the injected clock (a FakeClock: no real waiting)."""
    clock = FakeClock()
    unreachable = db.create_engine("postgresql+psycopg://etl@127.0.0.1:1/nowhere")  # connection refused
    settings = Settings(database_url=str(unreachable.url), api_key="k" * 20, base_url="http://fake.test", rate=10)
    worker = SyncWorker(unreachable, settings, Metrics(None, clock), poll_interval=0.01, clock=clock)
    worker.start()
    try:
        wait_until(lambda: len(clock.sleeps) >= 7, 30, "seven back-offs")
        assert worker.alive
        assert worker.error is not None and worker.error.as_dict() == {"type": "OperationalError",
                                                                       "reason": "database unavailable"}
    finally:
        worker.stop()
        unreachable.dispose()
    assert clock.sleeps[:7] == [0.5, 1, 2, 4, 8, 8, 8]
