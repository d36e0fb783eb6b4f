"""The public Python API (``etl.Etl``): the README's example as written, and the object on every database."""

from __future__ import annotations

import io
import re
import subprocess
import sys
from datetime import date, datetime
from pathlib import Path

import pytest
import sqlalchemy as sa

import etl
from etl import Etl, EtlError, Selection, UsageError
from etl.testing import FakeOpenPhone

README = Path(__file__).resolve().parents[2] / "README.md"


def python_example() -> str:
    text = README.read_text()
    section = text[text.index("## Use it from Python"):]
    match = re.search(r"```python\n(.*?)```", section, re.S)
    assert match, "README's 'Use it from Python' has no python block"
    return match.group(1)


def test_the_readme_example_runs_and_prints_what_its_comments_say(tmp_path: Path):
    code = python_example()
    # Each print(...) line documents its output in a trailing comment.
    expected = [line.split("#", 1)[1].strip() for line in code.splitlines() if line.strip().startswith("print(")]
    assert len(expected) == 4
    done = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    # A library never writes to the caller's stdout: exactly what the example prints (issue 20, item 9).
    assert done.stdout.splitlines() == expected
    assert done.stderr == ""  # no warning, no error: nothing from the library's logging either
    assert (tmp_path / "summaries.db").exists()


def test_the_readme_example_logs_through_the_callers_logging_and_names_the_in_process_api(tmp_path: Path):
    # The caller's logging decides where lines go; the run never claims to talk to the real API.
    code = "import logging, sys\nlogging.basicConfig(level=logging.INFO, stream=sys.stderr)\n" + python_example()
    done = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert len(done.stdout.splitlines()) == 4
    log = done.stderr.splitlines()
    [started] = [line for line in log if line.startswith("INFO:etl:run started")]
    assert "base_url=http://in-process.invalid" in started
    assert "api.openphone.com" not in done.stderr
    assert any(line.startswith("INFO:etl:run finished") for line in log)
    assert "demo-key" not in done.stderr  # the key never reaches a log line


def test_importing_the_package_configures_no_output():
    code = ("import structlog, logging\nimport etl, etl.sync, etl.discover, etl.testing, etl.cli\n"
            "print(structlog.is_configured(), logging.getLogger('etl').handlers, logging.getLogger().handlers)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert (done.returncode, done.stdout, done.stderr) == (0, "False [] []\n", "")


@pytest.mark.parametrize("since", ["2026-11-20", "2026-11-20T00:00:00", "2026-11-20T01:00:00+01:00",
                                   "2026-11-20T00:00:00Z", date(2026, 11, 20), datetime(2026, 11, 20)])
def test_discover_takes_a_date_string_a_date_or_a_datetime(since, tmp_path: Path):
    fake = FakeOpenPhone(api_key="k", seed=2)
    fake.workspace.generate(phone_numbers=1, conversations=1, calls=2, days=2)
    with Etl(database_url=f"sqlite:///{tmp_path}/d.db", api_key="k", rate=0, transport=fake.transport()) as job:
        stats = job.discover(since=since)
        assert (stats.exit_code, stats.phone_numbers, stats.calls_seen) == (0, 1, 2)
        with job.engine.connect() as conn:
            [started] = conn.execute(sa.text("SELECT started_at FROM discovery_runs")).scalars()
        assert started is not None


@pytest.mark.parametrize(("since", "message"), [
    ("20/11/2026", "since='20/11/2026' is not a date or an ISO 8601 time, e.g. '2026-11-20' or "
                   "'2026-11-20T08:00:00Z'"),
    (20261120, "since must be a datetime, a date or ISO 8601 text, not int"),
])
def test_discover_refuses_anything_else_with_a_clear_usage_error(since, message, tmp_path: Path):
    with Etl(database_url=f"sqlite:///{tmp_path}/d.db", api_key="k", transport=FakeOpenPhone().transport()) as job:
        with pytest.raises(UsageError) as exc:
            job.discover(since=since)
        assert str(exc.value) == message
        with pytest.raises(UsageError, match="discover_since='yesterday' is not a date"):
            job.backfill(discover=True, discover_since="yesterday")


def test_the_public_names_are_importable_and_curated():
    for name in etl.__all__:
        assert getattr(etl, name) is not None, name
    assert "Etl" in etl.__all__ and "run_sync" not in etl.__all__
    assert etl.RunStats.__module__ == "etl.sync"


def test_enqueue_sync_status_and_backfill_on_every_database(db_url: str, engine, settings):
    fake = FakeOpenPhone(api_key=settings.api_key or "k")
    fake.set_response("ACgone1", 404, {"message": "Call not found", "status": 404})
    invalid: list[str] = []
    with Etl(settings, engine=engine, rate=0, not_found_window=0, transport=fake.transport()) as job:
        counts = job.enqueue(["ACapi1", "ACapi2", "ACgone1", "bad id"],
                             on_invalid=lambda item, n: invalid.append(item.shown))
        assert counts == (3, 3, 1)
        assert invalid == ["'bad id'"]
        assert job.enqueue(["ACapi1"]).new == 0  # queued ids stay as they are
        due, _, rows = job.due(10)
        assert due == 3 and {r["call_id"] for r in rows} == {"ACapi1", "ACapi2", "ACgone1"}

        stats = job.sync()
        assert (stats.completed, stats.failed, stats.not_found, stats.exit_code) == (2, 0, 1, 0)
        status = job.status()
        assert status.queue["done"] == 2 and status.queue["not_found"] == 1
        assert status.as_dict()["total"] == 3 and status.as_dict()["last_runs"][0]["completed"] == 2

        plan = job.backfill(requeue=Selection(("not_found",)), dry_run=True,
                            file=io.BytesIO(b"ACnew1\nnope\n")).plan
        assert plan is not None and plan.requeue == {"not_found": 1} and plan.file == (1, 1)
        result = job.backfill(requeue=Selection(("not_found",)), progress=False)
        assert result.requeued is not None and result.requeued.count == 1
        assert result.run is not None and result.run.not_found == 1  # still a 404, after the window


def test_expected_failures_are_the_exception_tree(tmp_path: Path):
    with pytest.raises(UsageError, match="needs a scheme and a host"):
        Etl(base_url="api.openphone.com")
    job = Etl(database_url=f"sqlite:///{tmp_path}/q.db")
    with pytest.raises(UsageError, match="no API key"):
        job.sync()
    assert issubclass(UsageError, EtlError) and UsageError.exit_code == 2
    assert "password" not in repr(Etl(database_url="postgresql+psycopg://u:password@h/db"))
    job.close()


def test_webhooks_are_managed_through_the_object_and_need_a_key(tmp_path: Path):
    fake = FakeOpenPhone(api_key="hook-key")
    url = "https://etl.example.com/webhooks/openphone"
    with Etl(database_url=f"sqlite:///{tmp_path / 'hooks.db'}", api_key="hook-key",
             transport=fake.transport()) as job:
        seen: list[etl.Registered] = []
        created = job.webhooks.register(url, "etl", on_created=seen.append)
        assert seen == created and [h.events for h in created] == [["call.completed"], ["call.summary.completed"]]
        assert all(h.secret and not h.reused for h in created)
        assert created[0].line == f"Created webhook {created[0].id} for call.completed"
        assert sorted(h["id"] for h in job.webhooks.list()) == sorted(h.id for h in created)
        job.webhooks.delete(created[0].id)
        assert [h["id"] for h in job.webhooks.list()] == [created[1].id]
    with pytest.raises(UsageError, match="no API key"):
        Etl(transport=fake.transport()).webhooks.list()
    with pytest.raises(UsageError, match="--url must end in /webhooks/openphone"):
        Etl(api_key="hook-key", transport=fake.transport()).webhooks.register("https://etl.example.com/hooks")


@pytest.mark.parametrize(("secrets", "options", "message"), [
    ([], {}, "no webhook secret: set OPENPHONE_WEBHOOK_SECRETS"),
    (["whsec_" + "QUJD" * 8], {"tolerance": 300.0, "delivery_retention": 0.1},
     "delivery_retention must be at least twice tolerance"),  # the parameters' names (the CLI's: the flags)
])
def test_serve_refuses_a_configuration_it_cannot_run_before_listening(tmp_path: Path, secrets: list[str],
                                                                      options: dict[str, float], message: str):
    with Etl(database_url=f"sqlite:///{tmp_path / 'serve.db'}", api_key="serve-key") as job, \
            pytest.raises(UsageError, match=re.escape(message)):
        job.serve(secrets, port=1, **options)  # type: ignore[arg-type]
    assert not (tmp_path / "serve.db").exists()  # refused before the database was opened


def test_the_demo_runs_on_the_objects_database(tmp_path: Path, capsys: pytest.CaptureFixture[str]):
    url = f"sqlite:///{tmp_path / 'demo.db'}"
    with Etl(database_url=url) as job:
        job.demo()
    out = capsys.readouterr().out
    assert "Summaries per user per week" in out and f"into {url}." in out
    with Etl(database_url=url, read_only=True) as job:
        assert job.status().queue["done"] > 0
