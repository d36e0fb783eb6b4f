"""`etl dbt sources` (issue 24 part 7): the generated file, and dbt itself running it on PostgreSQL.

The dbt test makes a throwaway dbt project (``dbt_project.yml``, ``profiles.yml``
pointing at the test database, the generated ``models/sources.yml``) after a
real discover + sync on the simulator, then runs ``dbt parse``, ``dbt source
freshness`` and ``dbt test`` once each (no packages, ``--no-version-check``).
dbt lives in its own virtualenv (its pins clash with the dev tools': docs/bi.md):
``ETL_TEST_DBT`` names its executable, else ``dbt`` on PATH or ``.venv-dbt/bin/dbt``;
without one the test skips, and fails under ``ETL_TEST_REQUIRE_DBT=1`` (CI).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
import yaml
from click.testing import CliRunner
from sqlalchemy.engine import make_url

from etl import Etl
from etl.cli import cli
from etl.models import VIEWS, Base
from etl.testing import FakeOpenPhone
from tests.support.db import fresh_url

REPO = Path(__file__).resolve().parents[2]
KEY = "test-key-0123456789"


def _generated(**options: Any) -> dict[str, Any]:
    with Etl(database_url="postgresql+psycopg://u@localhost/db") as job:
        document = yaml.safe_load(job.dbt_sources(**options))
    assert isinstance(document, dict)
    return document


def _tables(document: dict[str, Any]) -> dict[str, dict[str, Any]]:
    (source,) = document["sources"]
    return {t["name"]: t for t in source["tables"]}


def test_every_table_and_view_with_descriptions_keys_and_freshness() -> None:
    document = _generated()
    assert document["version"] == 2
    (source,) = document["sources"]
    assert (source["name"], source["schema"]) == ("openphone", "public")
    tables = _tables(document)
    assert set(tables) == set(Base.metadata.tables) | set(VIEWS)
    for table in Base.metadata.sorted_tables:
        entry = tables[table.name]
        assert entry["description"] == table.comment
        assert [(c["name"], c["description"]) for c in entry["columns"]] == \
            [(c.name, c.comment) for c in table.columns]
        key = [c.name for c in table.primary_key.columns]
        tests = {c["name"]: c.get("data_tests", []) for c in entry["columns"]}
        assert all("not_null" in tests[k] for k in key), table.name
        if len(key) == 1:
            assert "unique" in tests[key[0]]
        else:
            assert entry["data_tests"] == [{"unique": {"column_name": "concat(" + ", '|', ".join(key) + ")"}}]
    assert tables["call_summary_lines"]["data_tests"] == [
        {"unique": {"column_name": "concat(call_id, '|', position)"}}]
    for name in ("calls", "call_summaries", "call_transcripts", "call_summary_overview"):
        assert tables[name]["loaded_at_field"] == "last_synced_at"
        assert tables[name]["freshness"] == {"warn_after": {"count": 24, "period": "hour"},
                                             "error_after": {"count": 72, "period": "hour"}}
    assert "freshness" not in tables["summary_queue"]  # no synced-at column
    overview = tables["call_overview"]
    assert overview["description"].startswith("One row per call with stored context")
    columns = {c["name"]: c["description"] for c in overview["columns"]}
    assert columns["call_date"] == "The day the call was created, `YYYY-MM-DD` (UTC)."
    for view in VIEWS:
        assert tables[view]["columns"], f"{view} is documented in docs/schema.md"


def test_options_and_the_schema_of_each_database() -> None:
    tables = _tables(_generated(warn_after_hours=2, error_after_hours=6, name="quo", schema="raw"))
    assert tables["calls"]["freshness"]["warn_after"]["count"] == 2
    assert tables["calls"]["freshness"]["error_after"]["count"] == 6
    for url, schema in (("sqlite:///x.db", "main"), ("mysql+pymysql://root@h/etl_prod", "etl_prod")):
        with Etl(database_url=url) as job:
            assert yaml.safe_load(job.dbt_sources())["sources"][0]["schema"] == schema


def test_cli_writes_the_file_or_stdout_and_refuses_bad_thresholds(tmp_path: Path) -> None:
    runner = CliRunner()
    target = tmp_path / "project" / "models" / "sources.yml"
    db = f"sqlite:///{tmp_path / 'none.db'}"
    result = runner.invoke(cli, ["dbt", "sources", "--output", str(target), "--database-url", db])
    assert result.exit_code == 0, result.output
    assert yaml.safe_load(target.read_text(encoding="utf-8"))["sources"][0]["schema"] == "main"
    assert not (tmp_path / "none.db").exists()  # reads no database
    printed = runner.invoke(cli, ["dbt", "sources", "--database-url", db])
    assert printed.exit_code == 0 and printed.stdout == target.read_text(encoding="utf-8")
    bad = runner.invoke(cli, ["dbt", "sources", "--warn-after", "72", "--error-after", "24", "--database-url", db])
    assert bad.exit_code == 2
    assert bad.stderr.strip() == "Error: the warning threshold (72 h) must be below the error threshold (24 h)"
    zero = runner.invoke(cli, ["dbt", "sources", "--warn-after", "0", "--database-url", db])
    assert (zero.exit_code, zero.stderr.strip()) == (2, "Error: freshness thresholds must be positive hours")


# --- dbt itself --------------------------------------------------------------------


def _dbt_executable() -> str:
    found = os.environ.get("ETL_TEST_DBT") or shutil.which("dbt")
    local = REPO / ".venv-dbt" / "bin" / "dbt"
    if not found and local.exists():
        found = str(local)
    if not found:
        message = "dbt is not installed: set ETL_TEST_DBT or install dbt-core and dbt-postgres (docs/bi.md)"
        if os.environ.get("ETL_TEST_REQUIRE_DBT") == "1":
            pytest.fail(message + " (required: ETL_TEST_REQUIRE_DBT=1)")
        pytest.skip(message)
    return found


def _project(root: Path, url: str, sources: str) -> None:
    parts = make_url(url)
    (root / "models").mkdir(parents=True)
    (root / "models" / "sources.yml").write_text(sources, encoding="utf-8")
    (root / "dbt_project.yml").write_text(yaml.safe_dump({
        "name": "openphone_check", "version": "1.0.0", "config-version": 2, "profile": "openphone_check",
    }), encoding="utf-8")
    (root / "profiles.yml").write_text(yaml.safe_dump({"openphone_check": {"target": "ci", "outputs": {"ci": {
        "type": "postgres", "host": parts.host or "127.0.0.1", "port": parts.port or 5432,
        "user": parts.username or "postgres", "password": parts.password or "", "dbname": parts.database,
        "schema": "public", "threads": 4}}}}), encoding="utf-8")


def _dbt(dbt: str, root: Path, *args: str) -> tuple[subprocess.CompletedProcess[str], float]:
    env = {**os.environ, "DBT_SEND_ANONYMOUS_USAGE_STATS": "false", "DBT_USE_COLORS": "false"}
    started = time.monotonic()
    done = subprocess.run([dbt, *args, "--no-version-check", "--project-dir", str(root), "--profiles-dir", str(root)],
                          capture_output=True, text=True, env=env, timeout=300, check=False)
    return done, time.monotonic() - started


def _results(root: Path, name: str) -> dict[str, str]:
    data = json.loads((root / "target" / name).read_text(encoding="utf-8"))
    return {r["unique_id"]: r["status"] for r in data["results"]}


def test_dbt_parses_checks_freshness_and_tests_the_sources_on_postgresql(
        tmp_path: Path, sqlite_template: Path) -> None:
    dbt = _dbt_executable()
    url = fresh_url("postgresql", tmp_path, sqlite_template)
    fake = FakeOpenPhone(api_key=KEY)
    fake.workspace.generate()
    started = time.monotonic()
    with Etl(database_url=url, api_key=KEY, transport=fake.transport(), transcripts=True) as job:
        job.discover(since=fake.clock.now() - timedelta(days=8))
        stats = job.sync()
        assert stats.exit_code == 0
        root = tmp_path / "dbt"
        _project(root, url, job.dbt_sources())
    timings: dict[str, float] = {"discover + sync": time.monotonic() - started}

    parsed, timings["parse"] = _dbt(dbt, root, "parse")
    assert parsed.returncode == 0, parsed.stdout + parsed.stderr
    manifest = json.loads((root / "target" / "manifest.json").read_text(encoding="utf-8"))
    sources = {s["name"] for s in manifest["sources"].values()}
    assert sources == set(Base.metadata.tables) | set(VIEWS)

    fresh, timings["freshness"] = _dbt(dbt, root, "source", "freshness")
    assert fresh.returncode == 0, fresh.stdout + fresh.stderr
    checked = _results(root, "sources.json")
    assert {k.rsplit(".", 1)[1] for k in checked} >= {"calls", "call_summaries", "call_transcripts",
                                                     "call_summary_overview"}
    assert set(checked.values()) == {"pass"}

    tested, timings["test"] = _dbt(dbt, root, "test", "--select", "source:openphone")
    assert tested.returncode == 0, tested.stdout + tested.stderr
    results = _results(root, "run_results.json")
    assert set(results.values()) == {"pass"}
    assert any(".source_unique_openphone_call_summary_lines_concat" in k for k in results), sorted(results)
    assert sum(1 for k in results if ".source_not_null_" in k) >= len(Base.metadata.tables)

    # The checks can fail: calls last synced four days ago are past the 72-hour error threshold.
    engine = sa.create_engine(url)
    with engine.begin() as conn:
        conn.execute(sa.text("UPDATE calls SET last_synced_at = last_synced_at - INTERVAL '96 hours'"))
    engine.dispose()
    stale, timings["stale freshness"] = _dbt(dbt, root, "source", "freshness", "--select", "source:openphone.calls")
    assert stale.returncode == 1, stale.stdout + stale.stderr
    assert set(_results(root, "sources.json").values()) == {"error"}
    print("dbt seconds: " + ", ".join(f"{k} {v:.1f}" for k, v in timings.items()))
