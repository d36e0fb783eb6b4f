"""Prometheus metrics of ``etl serve``, on a registry of their own (not the process-global one).

Deliveries by type and outcome, refusals by reason, queue depth by state of both
queues and the newest run that fetched anything (read from the database at scrape
time, cached a few seconds), API requests by
outcome, the rate budget and its use over the last 10 s, engine runs, and the
landing latency: from a ``call.summary.completed`` delivery to its summary's
rows committed.

Every series is a workspace's (issue 27), labelled ``workspace``: each workspace
has its own path, secrets, key, budget, engine thread and queue items.  The one
exception is a refusal of a path no workspace has (``unknown_workspace``): its
``workspace`` label is empty, which PromQL reads as no label.  A workspace's
series exist from the start (counters at 0, ``etl_engine_alive`` 0 until its
engine runs), so a rule over them sees every configured workspace.

Budget use is counted where the key's shared budget grants a request slot
(:meth:`Metrics.slot_granted`, called by the engine's budget wrapper), so it is
this server's share of the key's rate: a cron ``etl sync`` running at the same
time takes the rest.

Label values are bounded: the event type of a delivery is signed but chosen by
the sender, so only the types this job knows are labels (:func:`type_label`);
any other is ``other``, one series however many types arrive.  So is the
``workspace`` label: only configured workspaces' names (:meth:`Metrics.workspace`),
never the path a sender asked for.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from sqlalchemy.engine import Connection, Engine

from etl import report
from etl.clock import Clock
from etl.db import reader

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
LANDING_BUCKETS = (0.25, 0.5, 1, 2, 3, 5, 10, 20, 30, 60, 120, 300, 900, 3600)
_BUDGET_WINDOW_S = 10.0
_QUEUE_CACHE_S = 5.0
# Event types that are metric labels as they are; every other type is counted as "other".
KNOWN_TYPES = frozenset({"call.completed", "call.summary.completed", "callSummary", "call.transcript.completed",
                         "call.ringing", "call.recording.completed", "message.received", "message.delivered",
                         "contact.updated", "contact.deleted"})


def type_label(event_type: str | None) -> str:
    """The ``type`` label of a delivery: a known event type, else ``other``."""
    return event_type if event_type in KNOWN_TYPES else "other"


class _QueueDepth(Collector):
    """Per workspace, from the database at scrape time (cached: a count is a scan):
    ``etl_queue_items{workspace,state}``, ``etl_transcript_queue_items{workspace,state}``,
    ``etl_queue_oldest_due_seconds{workspace}`` and ``etl_runs_last_fetch_timestamp_seconds{workspace}``."""

    def __init__(self, engine: Engine, clock: Clock, names: Callable[[], list[str]]) -> None:
        self.engine = reader(engine)  # a scrape never takes SQLite's write lock
        self.clock = clock
        self.names = names
        self._cached: tuple[float, dict[str, _Figures]] | None = None
        self._lock = threading.Lock()

    def collect(self) -> Iterator[Metric]:
        figures = self._figures()
        summaries = GaugeMetricFamily("etl_queue_items", "Queue rows by workspace and state.",
                                      labels=["workspace", "state"])
        transcripts = GaugeMetricFamily("etl_transcript_queue_items", "transcript_queue rows by workspace and state.",
                                        labels=["workspace", "state"])
        lag = GaugeMetricFamily("etl_queue_oldest_due_seconds", "How long the workspace's oldest due summary item "
                                "has waited past its due time (0: none due): the queue's lag.", labels=["workspace"])
        last = GaugeMetricFamily(
            "etl_runs_last_fetch_timestamp_seconds", "Unix time of the end of the newest run of any etl process "
            "(this server or a cron sync) that fetched anything for the workspace, from sync_runs.",
            labels=["workspace"])
        for name, fig in figures.items():
            for state, n in fig.summaries.items():
                summaries.add_metric([name, state], n)
            for state, n in fig.transcripts.items():
                transcripts.add_metric([name, state], n)
            lag.add_metric([name], fig.lag_s)
            if fig.last_fetch is not None:
                last.add_metric([name], fig.last_fetch)
        yield from (summaries, transcripts, lag, last)

    def _figures(self) -> dict[str, _Figures]:
        with self._lock:
            now = self.clock.monotonic()
            if self._cached is None or now - self._cached[0] > _QUEUE_CACHE_S:
                try:
                    with self.engine.connect() as conn:
                        self._cached = (now, {name: _read_figures(conn, name, self.clock.utcnow())
                                              for name in self.names()})
                except Exception:  # an unreachable database shows in /healthz, not as a failed scrape
                    return self._cached[1] if self._cached else {}
            return self._cached[1]


@dataclass(frozen=True, slots=True)
class _Figures:
    summaries: dict[str, int]
    transcripts: dict[str, int]
    lag_s: int
    last_fetch: int | None


def _read_figures(conn: Connection, workspace: str, now: datetime) -> _Figures:
    fetched = report.fetch_history(conn, workspace=workspace).last_fetch_ok_at
    _, oldest = report.due_now(conn, now, workspace=workspace)
    lag = max(0, int((now - oldest).total_seconds())) if oldest else 0
    return _Figures(report.queue_counts(conn, workspace=workspace), report.transcript_counts(conn, workspace=workspace),
                    lag, unix(fetched) if fetched else None)


def unix(naive_utc: datetime) -> int:
    """Unix seconds of a naive UTC time (as the database stores them)."""
    return int(naive_utc.replace(tzinfo=UTC).timestamp())


def last_fetch_unix(engine: Engine, workspace: str) -> float | None:
    """When any etl process last got an answer from the API for ``workspace``, from ``sync_runs``
    (None: never, or unreadable)."""
    try:
        with reader(engine).connect() as conn:
            fetched = report.fetch_history(conn, workspace=workspace).last_fetch_ok_at
    except Exception:  # a database down at start shows in /healthz; the gauge then starts empty
        return None
    return float(unix(fetched)) if fetched else None


class _BudgetUse(Collector):
    """``etl_rate_budget_use_ratio{workspace}``: computed at scrape time from each workspace's grants."""

    def __init__(self, workspaces: Callable[[], list[WorkspaceMetrics]]) -> None:
        self.workspaces = workspaces

    def collect(self) -> Iterator[Metric]:
        family = GaugeMetricFamily("etl_rate_budget_use_ratio", "Slots this server was granted in the last 10 s "
                                   "divided by the workspace key's budget for 10 s (the rest is left to other "
                                   "processes).", labels=["workspace"])
        for ws in self.workspaces():
            family.add_metric([ws.name], ws.budget_use())
        yield family


class Metrics:
    """The registry and its families; :meth:`workspace` gives one workspace's view of them."""

    def __init__(self, engine: Engine | None, clock: Clock) -> None:
        self.engine = engine
        self.clock = clock
        self.registry = CollectorRegistry()
        r = self.registry
        self.deliveries = Counter("etl_webhook_deliveries", "Accepted webhook deliveries by workspace, event type "
                                  "and outcome (queued, duplicate, ignored).", ["workspace", "type", "outcome"],
                                  registry=r)
        self.refusals = Counter("etl_webhook_refusals", "Refused webhook deliveries by workspace and reason "
                                "(workspace empty: a path no workspace has).", ["workspace", "reason"], registry=r)
        self.fetches = Counter("etl_api_requests", "API requests sent by the workspace's in-process engine, by "
                               "outcome (2xx, 4xx, 5xx, 404, 429, or error: no answer).", ["workspace", "outcome"],
                               registry=r)
        self.runs = Counter("etl_engine_runs", "Sync engine runs started by the server, by workspace.",
                            ["workspace"], registry=r)
        self.landing = Histogram("etl_summary_landing_seconds", "From a call.summary.completed delivery to the "
                                 "summary's rows committed, by workspace.", ["workspace"], buckets=LANDING_BUCKETS,
                                 registry=r)
        self.budget = Gauge("etl_rate_budget_requests_per_second", "The workspace key's request budget shared by "
                            "every etl process (--rate; 0 = unthrottled).", ["workspace"], registry=r)
        self.granted = Counter("etl_rate_budget_granted", "Request slots this server was granted from the "
                               "workspace key's shared budget.", ["workspace"], registry=r)
        self.pauses = Counter("etl_rate_budget_pauses", "429 answers that paused every process of the workspace's "
                              "key.", ["workspace"], registry=r)
        self.last_success = Gauge("etl_api_last_success_timestamp_seconds",
                                  "Unix time of this server's last API answer for the workspace (2xx, 3xx, or "
                                  "404: the API was reached).", ["workspace"], registry=r)
        self.engine_alive = Gauge("etl_engine_alive", "1 while the workspace's sync engine thread runs.",
                                  ["workspace"], registry=r)
        self._workspaces: dict[str, WorkspaceMetrics] = {}
        self._lock = threading.Lock()
        r.register(_BudgetUse(self._all))
        if engine is not None:
            r.register(_QueueDepth(engine, clock, lambda: [w.name for w in self._all()]))

    def workspace(self, name: str, rate: float | None = None) -> WorkspaceMetrics:
        """Workspace ``name``'s metrics, made (with its series at 0) on first use; ``rate``: its key's budget."""
        with self._lock:
            ws = self._workspaces.get(name)
            if ws is None:
                ws = self._workspaces[name] = WorkspaceMetrics(self, name, rate or 0.0)
            elif rate is not None:
                ws.set_rate(rate)
            return ws

    @property
    def workspace_names(self) -> list[str]:
        return [w.name for w in self._all()]

    def refused(self, workspace: str | None, reason: str) -> None:
        """Count a refusal; ``workspace`` None: a path no workspace has (an empty label, not the path)."""
        self.refusals.labels(workspace or "", reason).inc()

    def _all(self) -> list[WorkspaceMetrics]:
        with self._lock:
            return list(self._workspaces.values())

    def render(self) -> bytes:
        return generate_latest(self.registry)


class WorkspaceMetrics:
    """One workspace's series: what its engine, budget and deliveries count."""

    def __init__(self, parent: Metrics, name: str, rate: float) -> None:
        self.name = name
        self.clock = parent.clock
        self._parent = parent
        self.runs = parent.runs.labels(name)
        self.landing = parent.landing.labels(name)
        self.granted = parent.granted.labels(name)
        self.pauses = parent.pauses.labels(name)
        self.engine_alive = parent.engine_alive.labels(name)
        self.engine_alive.set(0)
        self.last_success = parent.last_success.labels(name)
        self.rate = 0.0
        self.set_rate(rate)
        self._granted: deque[float] = deque()
        self._lock = threading.Lock()
        self.last_success_unix: float | None = None
        if parent.engine is not None:
            # Not 0 at start (a staleness alert would fire at every restart): the last answer any
            # etl process recorded for the workspace, until this server gets one of its own (issue 26).
            started_from = last_fetch_unix(parent.engine, name)
            if started_from is not None:
                self.last_success_unix = started_from
                self.last_success.set(started_from)

    def set_rate(self, rate: float) -> None:
        self.rate = rate
        self._parent.budget.labels(self.name).set(rate)

    def delivery(self, event_type: str | None, outcome: str) -> None:
        self._parent.deliveries.labels(self.name, type_label(event_type), outcome).inc()

    def refused(self, reason: str) -> None:
        self._parent.refused(self.name, reason)

    def request_sent(self, outcome: str, ok: bool) -> None:
        self._parent.fetches.labels(self.name, outcome).inc()
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

    def budget_use(self) -> float:
        if self.rate <= 0:
            return 0.0
        with self._lock:
            self._trim(self.clock.monotonic())
            return len(self._granted) / (self.rate * _BUDGET_WINDOW_S)
