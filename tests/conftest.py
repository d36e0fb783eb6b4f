"""Shared fixtures: real databases (SQLite always; PostgreSQL and MariaDB when
their URLs are given) and the simulated OpenPhone API.

How server databases are found, migrated and emptied, and the plain helpers
tests import (``run``, ``queue_rows``, ``make_due``, ``fresh_url``), live in
``tests/support/db.py``; tests never import this module.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
import structlog
from sqlalchemy.engine import Engine

from etl import db
from etl.config import Settings
from etl.logs import configure_logging
from etl.testing import FakeOpenPhone
from etl.testing.clock import FakeClock
from tests.support.db import API_KEY, BACKENDS, fresh_url


@pytest.fixture(autouse=True)
def _unconfigured_logging() -> Iterator[None]:
    """Every test starts as a library user would: a command run in process (CliRunner) configures
    structlog for the process, onto a stderr that is closed once the command returns."""
    yield
    structlog.reset_defaults()


@pytest.fixture(scope="session")
def sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("template") / "template.db"
    db.upgrade(f"sqlite:///{path}")
    return path


@pytest.fixture(params=BACKENDS)
def db_url(request: pytest.FixtureRequest, tmp_path: Path, sqlite_template: Path) -> str:
    """Each test using this runs once per database."""
    return fresh_url(request.param, tmp_path, sqlite_template)


@pytest.fixture
def engine(db_url: str) -> Iterator[Engine]:
    eng = db.create_engine(db_url)
    yield eng
    eng.dispose()


@pytest.fixture
def fake() -> FakeOpenPhone:
    return FakeOpenPhone(api_key=API_KEY)


@pytest.fixture
def settings(db_url: str) -> Settings:
    return Settings(
        database_url=db_url, api_key=API_KEY, base_url="http://fake.test", rate=0, concurrency=4,
        retry_attempts=3, retry_initial=0.001, retry_max=0.01, connect_timeout=2, read_timeout=2,
    )


@pytest.fixture
def clock(request: pytest.FixtureRequest) -> FakeClock:
    """A clock that moves only when the test advances it (or the code under test sleeps on it).

    It starts at a fixed instant, or at the wall clock's now (to the second) for a test marked
    ``clock_at_now``: one whose data is dated from today (a fake workspace generated "the last N days",
    a discovery since a week ago)."""
    if request.node.get_closest_marker("clock_at_now") is not None:
        return FakeClock(start=datetime.now(UTC).replace(tzinfo=None, microsecond=0))
    return FakeClock()


@pytest.fixture
def quiet_logs() -> None:
    """Logging configured as a command configures it, JSON at warning and above: for a module that runs
    whole jobs in process (``pytestmark = pytest.mark.usefixtures("quiet_logs")``), whose info lines
    would only fill the captured output."""
    configure_logging("json", "warning")


# Modules whose tests start real processes or wait on real time: they run first, so that the
# long ones overlap the many short tests instead of being the last thing CI waits for (-n 6 on
# 2 cores: a 60 s test started at the end adds 60 s to the run).
LONG_FIRST = ("test_cron_install", "test_imports", "test_dbt_sources", "test_webhook_end_to_end",
              "test_webhook_receiver", "test_serve_process", "test_discover_process", "test_webhooks_manage",
              "test_transcripts", "test_dated_processes", "test_crash", "test_discover_then_sync",
              "test_shared_budget", "test_overlap", "test_workspaces_processes", "test_hostile", "test_operate",
              "test_cron_discover", "test_sync_calls", "test_operator_week", "test_auth", "test_cron", "test_drip",
              "test_round_trip_with_rows", "test_migrations")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Long tests first (a stable sort: each group keeps its order; every xdist worker sorts alike)."""
    rank = {name: i for i, name in enumerate(LONG_FIRST)}

    def key(item: pytest.Item) -> int:
        module = item.path.stem
        if module in rank:
            return rank[module]
        return len(LONG_FIRST) if item.get_closest_marker("slow") or item.get_closest_marker("realtime") \
            else len(LONG_FIRST) + 1

    items.sort(key=key)
