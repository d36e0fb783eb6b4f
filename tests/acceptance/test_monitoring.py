"""Issue 26 #8 and #15: the dashboard and alert rules in monitoring/ name only metrics that a
real running `etl serve` exports, and /metrics starts from what the database knows.

`etl serve` runs as a subprocess (configured through the environment, as an operator
runs it) with two workspaces (issue 27), each against its own simulated API (own key) on a
real socket; /metrics is scraped over HTTP and parsed with prometheus_client's own text parser.
"""

from __future__ import annotations

import json
import re
import shutil
import signal
import subprocess
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
import sqlalchemy as sa
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy.engine import Engine

from etl import store
from etl.tables import runs_t
from etl.testing import FakeOpenPhone, serve, webhooks
from tests.support.proc import etl_env, free_port, healthy, output_of, start_etl, stop, wait_for

ROOT = Path(__file__).resolve().parents[2]
ALERTS = ROOT / "monitoring" / "alerts.yml"
DASHBOARD = ROOT / "monitoring" / "grafana-dashboard.json"
API_KEY = "monitoring-key-0123456789"
NORTH_KEY = "monitoring-north-0123456789"
SECRET = webhooks.new_standard_secret(b"secret-monitoring").removeprefix("whsec_")
NORTH_SECRET = webhooks.new_standard_secret(b"secret-monitoring-north")
# What a name in a rule may add to a family's name (counters, histograms).
SUFFIXES = ("", "_total", "_bucket", "_sum", "_count", "_created")


def named_metrics(text: str) -> set[str]:
    """Every etl_* metric a rules file or a dashboard names."""
    return set(re.findall(r"\betl_[a-z0-9_]+", text))


def dashboard_exprs() -> list[str]:
    board = json.loads(DASHBOARD.read_text())
    return [target["expr"] for panel in board["panels"] for target in panel["targets"]]


def scrape_running_serve(db_url: str, tmp_path: Path) -> tuple[str, str]:
    """/metrics of `etl serve --workspaces` with two workspaces: `default` (where the rows of a
    deployment before workspaces are) and `north`, each with its own API, key and secret."""
    with serve(FakeOpenPhone(api_key=API_KEY)) as api_url, serve(FakeOpenPhone(api_key=NORTH_KEY)) as north_url:
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        workspaces = tmp_path / "workspaces.toml"
        workspaces.write_text(
            '[workspace.default]\napi_key_env = "QUO_KEY_DEFAULT"\nwebhook_secrets_env = "QUO_WHSEC_DEFAULT"\n'
            f'base_url = "{api_url}"\n'
            '[workspace.north]\napi_key_env = "QUO_KEY_NORTH"\nwebhook_secrets_env = "QUO_WHSEC_NORTH"\n'
            f'base_url = "{north_url}"\n')
        env = etl_env(db_url, None, None, ETL_WORKSPACES=str(workspaces), QUO_KEY_DEFAULT=API_KEY,
                      QUO_KEY_NORTH=NORTH_KEY, QUO_WHSEC_DEFAULT=SECRET, QUO_WHSEC_NORTH=NORTH_SECRET)
        proc = start_etl(["serve", "--port", str(port)], env, tmp_path, "serve")
        try:
            wait_for(lambda: healthy(url), 60, "etl serve to answer /healthz", proc)
            text = httpx.get(url + "/metrics", timeout=10).text
            proc.send_signal(signal.SIGTERM)
            assert stop(proc, timeout=60) == 0
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    return text, output_of(tmp_path, "serve")[1]


def test_every_metric_the_dashboard_and_alerts_name_is_exported_and_last_success_starts_from_the_database(
        db_url: str, engine: Engine, tmp_path: Path) -> None:
    # A cron sync fetched something 20 minutes ago; the server has not been asked anything yet.
    fetched_at = (datetime.now(UTC) - timedelta(minutes=20)).replace(tzinfo=None, microsecond=0)
    with engine.begin() as conn:
        run_id = store.start_run(conn, "sync", fetched_at - timedelta(seconds=5))
        store.add_run_counts(conn, run_id, claimed=1, completed=1, fetched=1)
        store.finish_run(conn, run_id, fetched_at, 0, None)
        conn.execute(sa.update(runs_t).values(started_at=fetched_at - timedelta(seconds=5)))

    text, _log = scrape_running_serve(db_url, tmp_path)
    families = list(text_string_to_metric_families(text))
    exported = {family.name + suffix for family in families for suffix in SUFFIXES}
    exported |= {sample.name for family in families for sample in family.samples}

    rules = named_metrics(ALERTS.read_text())
    board = named_metrics("\n".join(dashboard_exprs()))
    assert rules and board
    assert sorted(rules - exported) == []
    assert sorted(board - exported) == []
    # The dashboard and the alerts cover what the issue asks for: lag, errors, 429s, queue depth
    # by state, last success, deliveries refused.
    for wanted in ("etl_queue_oldest_due_seconds", "etl_api_requests_total", "etl_rate_budget_pauses_total",
                   "etl_queue_items", "etl_api_last_success_timestamp_seconds", "etl_webhook_refusals_total"):
        assert wanted in rules & board, wanted

    # Every series is a workspace's (issue 27): each of the two has its own, from the start.
    workspaces: dict[str, set[str]] = {}
    for family in families:
        for sample in family.samples:
            workspaces.setdefault(sample.name, set()).add(sample.labels.get("workspace", "-"))
    for name in ("etl_engine_alive", "etl_engine_runs_total", "etl_rate_budget_requests_per_second",
                 "etl_rate_budget_use_ratio", "etl_rate_budget_granted_total", "etl_rate_budget_pauses_total",
                 "etl_api_last_success_timestamp_seconds", "etl_queue_items", "etl_transcript_queue_items",
                 "etl_queue_oldest_due_seconds", "etl_summary_landing_seconds_count"):
        assert workspaces[name] == {"default", "north"}, (name, workspaces[name])
    assert not [name for name, found in workspaces.items() if "-" in found and name.startswith("etl_")]

    # /metrics starts from the database, not from 0 (a staleness alert would fire at every restart):
    # the workspace's own runs (the cron sync above was default's; north has none yet).
    samples = {(sample.name, sample.labels.get("workspace")): sample.value for family in families
               for sample in family.samples if set(sample.labels) == {"workspace"}}
    expected = fetched_at.replace(tzinfo=UTC).timestamp()
    assert samples["etl_api_last_success_timestamp_seconds", "default"] == expected
    assert samples["etl_runs_last_fetch_timestamp_seconds", "default"] == expected
    assert ("etl_runs_last_fetch_timestamp_seconds", "north") not in samples
    for workspace in ("default", "north"):
        queue = {sample.labels["state"]: sample.value for family in families for sample in family.samples
                 if sample.name == "etl_queue_items" and sample.labels["workspace"] == workspace}
        assert queue == {"pending": 0, "done": 0, "failed": 0, "absent": 0, "not_found": 0, "invalid": 0,
                         "error": 0}, workspace


def test_the_alert_rules_pass_promtool() -> None:
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.skip("promtool is not installed (Prometheus's own checker): `promtool check rules "
                    "monitoring/alerts.yml` runs where it is")
    done = subprocess.run([promtool, "check", "rules", str(ALERTS)], capture_output=True, text=True, timeout=60,
                          check=False)
    assert done.returncode == 0, done.stdout + done.stderr

