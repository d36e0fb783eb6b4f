"""Issue 26: a new operator's first week, each item driven as it was typed.

Commands run through click's CliRunner (or as processes where a signal, a
terminal or a pipe matters) against the simulated API (``etl.testing``) over
real HTTP, on every database; messages are asserted exactly.
"""

from __future__ import annotations

import json
import os
import pty
import re
import subprocess
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import structlog
from click.testing import CliRunner, Result

from etl import db
from etl.cli import cli
from etl.testing import FakeOpenPhone, serve
from tests.acceptance.test_cron_prune import store_call_with_transcript
from tests.support.proc import ETL, etl_env, read_terminal

KEY = "operator-week-key-123"


@pytest.fixture(autouse=True)
def _reset_logging() -> Iterator[None]:
    yield
    structlog.reset_defaults()


def etl(*args: str, key: str = KEY, input: str | None = None) -> Result:
    env: dict[str, str | None] = {"OPENPHONE_API_KEY": key, "ETL_DATABASE_URL": None, "OPENPHONE_BASE_URL": None,
                                  "ETL_LOG_FORMAT": None, "NO_COLOR": None, "ETL_TRANSCRIPTS": None}
    try:
        return CliRunner(env=env).invoke(cli, list(args), input=input, catch_exceptions=False, prog_name="etl")
    finally:
        structlog.reset_defaults()


def runs_as_n(text: str) -> str:
    """Run numbers as ``N``: a server database's ids go on across tests."""
    return re.sub(r"\b(run|Run) \d+", r"\1 N", text)


def plain(text: str) -> list[str]:
    return [line for line in text.splitlines() if line and not line.startswith("{")]


def json_lines(text: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in text.splitlines() if line.startswith("{")]


# --- 1. counters per queue ------------------------------------------------------------


def test_a_plan_without_transcripts_is_not_counted_as_failed_summaries(db_url):
    fake = FakeOpenPhone(api_key=KEY)
    fake.transcripts_enabled = False  # python -m etl.testing --no-transcripts
    assert etl("enqueue", "AC1aa", "AC2bb", "AC3cc", "--database-url", db_url).exit_code == 0
    with serve(fake) as url:
        sync = etl("sync", "--transcripts", "--database-url", db_url, "--base-url", url, "--concurrency", "1",
                   "--log-format", "json")
    assert sync.exit_code == 0, sync.output
    assert runs_as_n(sync.stdout) == ("Sync run N: 3 completed, 0 rescheduled, 0 errors; "
                           "transcripts: 0 completed, 0 rescheduled, 1 forbidden, 0 errors.\n")
    [finished] = [line for line in json_lines(sync.stderr) if line["event"] == "run finished"]
    assert {k: finished[k] for k in ("claimed", "completed", "failed", "fetched",
                                     "transcripts_forbidden", "transcripts_failed", "transcripts_fetched")} == {
        "claimed": 3, "completed": 3, "failed": 0, "fetched": 3,
        "transcripts_forbidden": 1, "transcripts_failed": 0, "transcripts_fetched": 1}
    # Transcript items are queued with their summaries, batch by batch: the first 403 stops the
    # queue, so how many were claimed by then (1 to 3) depends on how the summaries' batches fell.
    assert 1 <= finished["transcripts_claimed"] <= 3
    status = etl("status", "--database-url", db_url)
    lines = status.stdout.splitlines()
    assert "  failed              0" in lines
    [run] = [line for line in lines if re.match(r"  #\d+ sync ", line)]
    assert run.endswith("exit 0: 3 claimed, 3 completed, 0 rescheduled, 0 errors; "
                        "transcripts: 0 completed, 0 rescheduled, 1 forbidden, 0 errors")
    as_json = json.loads(etl("status", "--json", "--database-url", db_url).stdout)
    assert (as_json["last_runs"][0]["failed"], as_json["last_runs"][0]["transcripts_forbidden"]) == (0, 1)


# --- 4. the summary line says why it stopped --------------------------------------------


def test_a_refused_key_is_in_the_summary_line_of_discover_and_sync(db_url):
    fake = FakeOpenPhone(api_key=KEY)
    fake.workspace.generate(phone_numbers=1, conversations=1, calls=2, days=1)
    with serve(fake) as url:
        found = etl("discover", "--since", "2020-01-01", "--database-url", db_url, "--base-url", url,
                    key="wrong-key-123")
        assert etl("enqueue", "AC1aa", "--database-url", db_url).exit_code == 0
        synced = etl("sync", "--database-url", db_url, "--base-url", url, key="wrong-key-123")
    assert found.exit_code == 3
    assert runs_as_n(found.stdout) == ("Discovery run N: 0 calls seen, enqueued 0, 0 errors; "
                            "stopped: the API refused the key.\n")
    assert synced.exit_code == 3
    assert runs_as_n(synced.stdout) == ("Sync run N: 0 completed, 0 rescheduled, 0 errors; "
                                        "stopped: the API refused the key.\n")


# --- 2. backfill's progress counts transcripts ------------------------------------------


def test_backfill_progress_counts_transcripts_and_logs_every_10_s(db_url, tmp_path):
    ids = [f"AC{n:03d}pg" for n in range(12)]
    id_file = tmp_path / "ids.txt"
    id_file.write_text("\n".join(ids) + "\n")
    with serve(FakeOpenPhone(api_key=KEY)) as url:
        # 24 requests at 2 a second: about 12 s, so a line at 10 s and one at the end.
        result = etl("backfill", "--file", str(id_file), "--transcripts", "--rate", "2", "--database-url", db_url,
                     "--base-url", url, "--log-format", "json")
    assert result.exit_code == 0, result.output
    assert runs_as_n(result.stdout) == ("Backfill run N: 12 completed, 0 rescheduled, 0 errors; "
                             "transcripts: 12 completed, 0 rescheduled, 0 errors.\n")
    progress = [line for line in json_lines(result.stderr) if line["event"] == "progress"]
    # Every line knows the whole: 12 summaries and the 12 transcripts they bring.
    assert {line["total"] for line in progress} == {24}
    assert [line["remaining"] for line in progress].count(0) == 1 and progress[-1]["remaining"] == 0
    assert (progress[-1]["done"], progress[-1]["eta_s"]) == (24, 0)
    assert all(line["remaining"] > 0 and line["eta_s"] > 0 for line in progress[:-1])
    assert 2 <= len(progress) <= 3  # one every 10 s, and the last


# --- 3. latency_ms is the API's; the rate budget's wait is apart -------------------------


def test_latency_is_the_apis_and_the_budget_wait_is_reported_apart(db_url):
    ids = [f"AC{n:02d}lat" for n in range(10)]
    assert etl("enqueue", *ids, "--database-url", db_url).exit_code == 0
    with serve(FakeOpenPhone(api_key=KEY)) as url:
        # The default path: throttled (--rate 5 here), 10 items in flight at once.
        result = etl("sync", "--rate", "5", "--concurrency", "10", "--no-calls", "--database-url", db_url,
                     "--base-url", url, "--log-format", "json")
    assert result.exit_code == 0, result.output
    calls = [line for line in json_lines(result.stderr) if line["event"] == "call"]
    assert len(calls) == 10
    waits = sorted(line["wait_ms"] for line in calls)
    # 10 requests at 5 a second: the last waits about 1.8 s for its slot ...
    assert waits[-1] >= 1200
    slowest = max(calls, key=lambda line: line["wait_ms"])
    # ... which is not the API's latency (the simulator answers at once).
    assert slowest["latency_ms"] < slowest["wait_ms"]
    assert sum(line["latency_ms"] for line in calls) < sum(waits)


# --- 11. webhooks delete finds the webhook on either surface; 14. list with a wrong key ---------


def test_delete_finds_a_current_webhook_without_the_api_version_flag_and_list_hints_at_the_key():
    fake = FakeOpenPhone(api_key=KEY)
    receiver = "https://etl.example.com/webhooks/openphone"
    with serve(fake) as url:
        created = etl("webhooks", "register", "--api-version", "2026-03-30", "--url", receiver, "--base-url", url)
        assert created.exit_code == 0, created.output
        [hook_id] = list(fake.webhooks)
        deleted = etl("webhooks", "delete", hook_id, "--base-url", url)  # v1, the default surface
        missing = etl("webhooks", "delete", "WHnosuchhook", "--base-url", url)
        listed = etl("webhooks", "list", "--base-url", url, key="wrong-key-123")
    assert deleted.exit_code == 0, deleted.output
    assert deleted.stdout == (f"Deleted webhook {hook_id} (a 2026-03-30 webhook: found with "
                              "--api-version 2026-03-30).\n")
    assert list(fake.webhooks) == []
    assert missing.exit_code == 1
    assert plain(missing.stderr) == [
        "Error: DELETE /v1/webhooks/WHnosuchhook failed: HTTP 404 Not Found: Not Found; no webhook of either API "
        "version has this id (`etl webhooks list` and `etl webhooks list --api-version 2026-03-30` show them)"]
    assert listed.exit_code == 3
    assert plain(listed.stderr) == ["Error: the API refused the key (HTTP 401): HTTP 401 Unauthorized: Missing or "
                                    "invalid API key. Check OPENPHONE_API_KEY."]


# --- 10. transcripts for calls synced before transcripts were turned on; 14. --since ...Z --------


def test_backfill_missing_transcripts_fetches_them_for_calls_already_synced(db_url, engine):
    fake = FakeOpenPhone(api_key=KEY)
    with serve(fake) as url:
        api = ["--database-url", db_url, "--base-url", url, "--rate", "0"]
        assert etl("enqueue", "AC1aa", "AC2bb", "--database-url", db_url).exit_code == 0
        assert runs_as_n(etl("sync", *api).stdout) == "Sync run N: 2 completed, 0 rescheduled, 0 errors.\n"
        # Turning transcripts on later does nothing for calls already synced ...
        later = etl("sync", "--transcripts", *api)
        assert runs_as_n(later.stdout) == "Sync run N: 0 completed, 0 rescheduled, 0 errors.\n"
        # ... --missing-transcripts does (--since takes a trailing Z, as discover's does).
        plan = etl("backfill", "--missing-transcripts", "--since", "2000-01-01T00:00:00Z", "--dry-run", *api)
        done = etl("backfill", "--missing-transcripts", "--since", "2000-01-01T00:00:00Z", *api)
        again = etl("backfill", "--missing-transcripts", *api)
    assert plan.exit_code == 0, plan.output
    assert plan.stdout == ("Would queue 2 transcripts of calls already synced.\n"
                           "Would re-queue 0 items in all; 0 items are due now.\n")
    assert done.exit_code == 0, done.output
    assert plain(done.stderr) == ["Queued 2 transcripts of calls already synced."]
    assert runs_as_n(done.stdout) == ("Backfill run N: 0 completed, 0 rescheduled, 0 errors; "
                           "transcripts: 2 completed, 0 rescheduled, 0 errors.\n")
    with engine.connect() as conn:
        stored = conn.exec_driver_sql("SELECT call_id FROM call_transcripts ORDER BY call_id").scalars().all()
    assert stored == ["AC1aa", "AC2bb"]
    assert (again.exit_code, plain(again.stderr), again.stdout) == (
        0, ["Queued 0 transcripts of calls already synced."],
        "Nothing to sync: no item is due, so no run was recorded.\n")


# --- 12. a prune that would remove every transcript line asks first ---------------------------


def _stored_lines(url: str) -> int:
    engine = db.create_engine(url)
    try:
        with engine.connect() as conn:
            return int(conn.exec_driver_sql("SELECT count(*) FROM call_transcript_lines").scalar_one())
    finally:
        engine.dispose()


def test_pruning_every_transcript_line_needs_confirmation(tmp_path):
    url = f"sqlite:///{tmp_path / 'etl.db'}"
    db.upgrade(url)
    now = datetime.now(UTC).replace(tzinfo=None)
    store_call_with_transcript(url, "ACold1", now - timedelta(days=120), now)
    store_call_with_transcript(url, "ACnew1", now - timedelta(days=10), now)

    refused = etl("prune", "--transcripts-older-than", "0", "--database-url", url)
    assert (refused.exit_code, plain(refused.stderr)) == (2, [
        "Error: this prune would delete every stored transcript line (4 lines of 2 calls), permanently: pruned "
        "transcripts are never fetched again; pass --yes to confirm"])
    assert _stored_lines(url) == 4

    # Not everything: no question asked.
    some = etl("prune", "--transcripts-older-than", "90", "--database-url", url)
    assert some.exit_code == 0, some.output
    assert _stored_lines(url) == 2

    # On a terminal it asks; "n" keeps everything.
    controller, terminal = pty.openpty()
    try:
        proc = subprocess.Popen([str(ETL), "prune", "--transcripts-older-than", "0", "--database-url", url],
                                stdin=terminal, stdout=terminal, stderr=terminal, env=etl_env(url))
        os.close(terminal)
        screen = b""
        while b"Continue? [y/N]" not in screen:
            chunk = os.read(controller, 4096)
            assert chunk, screen
            screen += chunk
        os.write(controller, b"n\n")
        screen += read_terminal(controller)
        assert proc.wait(timeout=60) == 1
    finally:
        os.close(controller)
    assert ("This prune deletes every stored transcript line (2 lines of 1 call), permanently: pruned transcripts "
            "are never fetched again. Continue? [y/N]") in screen.decode()
    assert "Aborted!" in screen.decode()
    assert _stored_lines(url) == 2

    confirmed = etl("prune", "--transcripts-older-than", "0", "--yes", "--database-url", url)
    assert confirmed.exit_code == 0, confirmed.output
    assert confirmed.stdout.startswith("Removed 2 transcript line(s) of 1 call(s) that started before ")
    assert _stored_lines(url) == 0


# --- 14. nits: one-line usage errors; discover --since in the future ---------------------------


def test_a_usage_error_is_one_line():
    result = subprocess.run([str(ETL), "sync", "--bogus"], capture_output=True, text=True, timeout=60, check=False)
    assert (result.returncode, result.stdout, result.stderr) == (
        2, "", "Error: No such option '--bogus'. Try 'etl sync --help'.\n")
    result = subprocess.run([str(ETL), "nosuch"], capture_output=True, text=True, timeout=60, check=False)
    assert (result.returncode, result.stderr) == (2, "Error: No such command 'nosuch'. Try 'etl --help'.\n")


def test_discover_since_a_future_date_is_refused(db_url):
    with serve(FakeOpenPhone(api_key=KEY)) as url:
        result = etl("discover", "--since", "2999-01-01", "--database-url", db_url, "--base-url", url)
    assert (result.exit_code, result.stdout, plain(result.stderr)) == (2, "", [
        "Error: --since 2999-01-01 00:00:00 UTC is in the future: no call can have started after it yet; "
        "give a past date"])


def test_counts_of_one_are_singular(db_url):
    fake = FakeOpenPhone(api_key=KEY)
    fake.workspace.generate(phone_numbers=1, conversations=1, calls=1, days=1)
    with serve(fake) as url:
        found = etl("discover", "--since", "2020-01-01", "--api-version", "2026-03-30", "--database-url", db_url,
                    "--base-url", url)
        assert found.exit_code == 0, found.output
        assert etl("enqueue", "AC1one", "--database-url", db_url).exit_code == 0
        plan = etl("backfill", "--dry-run", "--database-url", db_url)
        status = etl("status", "--database-url", db_url)
    assert plan.stdout == "Would re-queue 0 items in all; 1 item is due now.\n"
    [line] = [line for line in status.stdout.splitlines() if line.startswith("Last discovery: ")]
    assert line.endswith("exit 0: 1 page, 1 call seen, 0 enqueued, 0 errors"), line


def test_the_demo_table_lines_up_and_no_line_ends_in_spaces(tmp_path):
    result = etl("demo", "--database-url", f"sqlite:///{tmp_path / 'demo.db'}")
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert [line for line in lines if line != line.rstrip()] == []
    header = next(line for line in lines if line.startswith("call id "))
    rows = [line for line in lines if line.startswith("ACdemo")]
    assert rows
    column = header.index("what it shows")
    for row in rows:
        # The column starts where its heading does: after the counts and one space.
        assert row[column - 1] == " " and row[column] != " ", (header, row)
