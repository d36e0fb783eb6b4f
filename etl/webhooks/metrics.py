"""Prometheus metrics of ``etl serve``, on a registry of their own (not the process-global one).

Deliveries by type and outcome, refusals by reason, queue depth by state of both
queues and the newest run that fetched anything (read from the database at scrape
time, cached a few seconds), API requests by
outcome, the rate budget and its use over the last 10 s, engine runs, and the
landing latency: from a ``call.summary.completed`` delivery to its summary's
rows committed.

Budget use is counted where the key's shared budget grants a request slot
(:meth:`Metrics.slot_granted`, called by the engine's budget wrapper), so it is
this server's share of the key's rate: a cron ``etl sync`` running at the same
time takes the rest.

Label values are bounded: the event type of a delivery is signed but chosen by
the sender, so only the types this job knows are labels (:func:`type_label`);
any other is ``other``, one series however many types arrive.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Iterator
from datetime import UTC, datetime

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from sqlalchemy.engine import Engine

from etl import report
from etl.clock import Clock
from etl.db import reader

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
LANDING_BUCKETS = (0.25, 0.5, 1, 2, 3, 5, 10, 20, 30, 60, 120, 300, 900, 3600)
_BUDGET_WINDOW_S = 10.0
_QUEUE_CACHE_S = 5.0
# Event types that are metric labels as they are; every other type is counted as "other".
KNOWN_TYPES = frozenset({"call.completed", "call.summary.completed", "callSummary", "call.transcript.completed",
                         "call.ringing", "call.recording.completed", "message.received", "message.delivered"})


def type_label(event_type: str | None) -> str:
    """The ``type`` label of a delivery: a known event type, else ``other``."""
    return event_type if event_type in KNOWN_TYPES else "other"


class _QueueDepth(Collector):
    """``etl_queue_items{state}`` from the database at scrape time (cached: a count is a scan)."""

    def __init__(self, engine: Engine, clock: Clock) -> None:
        self.engine = reader(engine)  # a scrape never takes SQLite's write lock
        self.clock = clock
        self._cached: tuple[float, dict[str, dict[str, int]]] | None = None
        self._lock = threading.Lock()

    def collect(self) -> Iterator[Metric]:
        counts = self._counts()
        family = GaugeMetricFamily("etl_queue_items", "Queue rows by state.", labels=["state"])
        for state, n in counts.get("summaries", {}).items():
            family.add_metric([state], n)
        yield family
        family = GaugeMetricFamily("etl_transcript_queue_items", "transcript_queue rows by state.",
                                   labels=["state"])
        for state, n in counts.get("transcripts", {}).items():
            family.add_metric([state], n)
        yield family
        yield GaugeMetricFamily("etl_queue_oldest_due_seconds", "How long the oldest due summary item has waited "
                                "past its due time (0: none due): the queue's lag.",
                                value=counts.get("lag", {}).get("s", 0))
        last = counts.get("last_fetch")
        if last:
            yield GaugeMetricFamily(
                "etl_runs_last_fetch_timestamp_seconds", "Unix time of the end of the newest run of any etl "
                "process (this server or a cron sync) that fetched anything, from sync_runs.", value=last["at"])

    def _counts(self) -> dict[str, dict[str, int]]:
        with self._lock:
            now = self.clock.monotonic()
            if self._cached is None or now - self._cached[0] > _QUEUE_CACHE_S:
                try:
                    with self.engine.connect() as conn:
                        fetched = report.fetch_history(conn).last_fetch_ok_at
                        _, oldest = report.due_now(conn, self.clock.utcnow())
                        lag = max(0, int((self.clock.utcnow() - oldest).total_seconds())) if oldest else 0
                        self._cached = (now, {"summaries": report.queue_counts(conn), "lag": {"s": lag},
                                              "transcripts": report.transcript_counts(conn),
                                              "last_fetch": {"at": unix(fetched)} if fetched else {}})
                except Exception:  # an unreachable database shows in /healthz, not as a failed scrape
                    return self._cached[1] if self._cached else {}
            return self._cached[1]


def unix(naive_utc: datetime) -> int:
    """Unix seconds of a naive UTC time (as the database stores them)."""
    return int(naive_utc.replace(tzinfo=UTC).timestamp())


def last_fetch_unix(engine: Engine) -> float | None:
    """When any etl process last got an answer from the API, from ``sync_runs`` (None: never, or unreadable)."""
    try:
        with reader(engine).connect() as conn:
            fetched = report.fetch_history(conn).last_fetch_ok_at
    except Exception:  # a database down at start shows in /healthz; the gauge then starts empty
        return None
    return float(unix(fetched)) if fetched else None


class Metrics:
    def __init__(self, engine: Engine | None, rate: float, clock: Clock) -> None:
        self.clock = clock
        self.registry = CollectorRegistry()
        r = self.registry
        self.deliveries = Counter("etl_webhook_deliveries", "Accepted webhook deliveries by event type and outcome "
                                  "(queued, duplicate, ignored).", ["type", "outcome"], registry=r)
        self.refusals = Counter("etl_webhook_refusals", "Refused webhook deliveries by reason.", ["reason"],
                                registry=r)
        self.fetches = Counter("etl_api_requests", "API requests sent by the in-process engine, by outcome "
                               "(2xx, 4xx, 5xx, 404, 429, or error: no answer).", ["outcome"], registry=r)
        self.runs = Counter("etl_engine_runs", "Sync engine runs started by the server.", registry=r)
        self.landing = Histogram("etl_summary_landing_seconds", "From a call.summary.completed delivery to the "
                                 "summary's rows committed.", buckets=LANDING_BUCKETS, registry=r)
        budget = Gauge("etl_rate_budget_requests_per_second", "The API key's request budget shared by every etl "
                       "process (--rate; 0 = unthrottled).", registry=r)
        budget.set(rate)
        self.rate = rate
        self.granted = Counter("etl_rate_budget_granted", "Request slots this server was granted from the key's "
                               "shared budget.", registry=r)
        self.pauses = Counter("etl_rate_budget_pauses", "429 answers that paused every process of the key.",
                              registry=r)
        use = Gauge("etl_rate_budget_use_ratio", "Slots this server was granted in the last 10 s divided by the "
                    "key's budget for 10 s (the rest is left to other processes).", registry=r)
        use.set_function(self._budget_use)
        self.last_success = Gauge("etl_api_last_success_timestamp_seconds",
                                  "Unix time of this server's last API answer (2xx, 3xx, or 404: "
                                  "the API was reached).", registry=r)
        self.engine_alive = Gauge("etl_engine_alive", "1 while the sync engine thread runs.", registry=r)
        self._granted: deque[float] = deque()
        self.last_success_unix: float | None = None
        self._lock = threading.Lock()
        if engine is not None:
            r.register(_QueueDepth(engine, clock))
            # Not 0 at start (a staleness alert would fire at every restart): the last answer any
            # etl process recorded, until this server gets one of its own (issue 26).
            started_from = last_fetch_unix(engine)
            if started_from is not None:
                self.last_success_unix = started_from
                self.last_success.set(started_from)

    def request_sent(self, outcome: str, ok: bool) -> None:
        self.fetches.labels(outcome).inc()
        if ok:
            self.last_success_unix = self.clock.time()
            self.last_success.set(self.last_success_unix)

    def slot_granted(self) -> None:
        self.granted.inc()
        now = self.clock.monotonic()
        with self._lock:
            self._granted.append(now)
            self._trim(now)

    def _trim(self, now: float) -> None:
        while self._granted and self._granted[0] < now - _BUDGET_WINDOW_S:
            self._granted.popleft()

    def _budget_use(self) -> float:
        if self.rate <= 0:
            return 0.0
        with self._lock:
            self._trim(self.clock.monotonic())
            return len(self._granted) / (self.rate * _BUDGET_WINDOW_S)

    def render(self) -> bytes:
        return generate_latest(self.registry)
