"""Many workspaces from the command line (issue 27): `--workspaces FILE` / `ETL_WORKSPACES` and the
repeatable `--workspace NAME` on sync, discover, backfill, status and enqueue.

Two simulated workspaces (`FakeOpenPhone`), each served over real HTTP with its own key, named in a
workspaces file whose keys are in environment variables: `etl sync` syncs both, `--workspace`
limits, a refused key in one workspace is that workspace's `Error:` line and the combined exit
code while the other still syncs, `etl status` has a section (and a JSON object) per workspace.
Every configuration error is one `Error:` line, exit 2, asserted exactly.  One real subprocess runs
the whole thing as cron would, and no key reaches its output, its logs or the database.
"""

from __future__ import annotations

import json
import re
import signal
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa
import structlog
from click.testing import CliRunner, Result
from sqlalchemy.engine import Engine

from etl.cli import cli
from etl.testing import FakeOpenPhone, serve
from tests.support.proc import etl_env, output_of, run_etl, start_etl, stop, wait_for

KEYS = {"north": "north-key-0123456789", "south": "south-key-9876543210"}
VARIABLES = {"north": "QUO_KEY_NORTH", "south": "QUO_KEY_SOUTH"}
IDS = {"north": [f"ACnorth{i:03d}" for i in range(6)], "south": [f"ACsouth{i:03d}" for i in range(4)]}


@pytest.fixture(autouse=True)
def _reset_logging() -> Iterator[None]:
    yield
    structlog.reset_defaults()


def invoke(args: list[str], **env: str | None) -> Result:
    base: dict[str, str | None] = {"OPENPHONE_API_KEY": None, "ETL_DATABASE_URL": None, "OPENPHONE_BASE_URL": None,
                                   "ETL_LOG_FORMAT": "json", "ETL_WORKSPACES": None,
                                   **dict.fromkeys(VARIABLES.values())}
    base.update(env)
    return CliRunner(env=base).invoke(cli, args, catch_exceptions=False, prog_name="etl")


def errors(result: Result) -> list[str]:
    return [line for line in result.stderr.splitlines() if line.startswith("Error:")]


def messages(result: Result) -> list[str]:
    """stderr without the JSON log lines."""
    return [line for line in result.stderr.splitlines() if not line.startswith("{")]


def write_file(path: Path, urls: dict[str, str], **extra: str) -> Path:
    text = "".join(f'[workspace.{name}]\napi_key_env = "{VARIABLES[name]}"\nbase_url = "{url}"\n{extra.get(name, "")}\n'
                   for name, url in urls.items())
    path.write_text(text, encoding="utf-8")
    return path


@contextmanager
def workspaces(**fakes: FakeOpenPhone) -> Iterator[dict[str, str]]:
    """Each fake served over real HTTP: name -> base URL."""
    with ExitStack() as stack:
        yield {name: stack.enter_context(serve(fake)) for name, fake in fakes.items()}


def keys_env() -> dict[str, str | None]:
    return {VARIABLES[name]: key for name, key in KEYS.items()}


def queue_by_workspace(engine: Engine) -> dict[str, dict[str, str]]:
    with engine.connect() as conn:
        rows = conn.execute(sa.text("SELECT workspace, call_id, state FROM summary_queue")).all()
    found: dict[str, dict[str, str]] = {}
    for workspace, call_id, state in rows:
        found.setdefault(workspace, {})[call_id] = state
    return found


def summary_requests(fake: FakeOpenPhone) -> list[str]:
    return sorted(path.rsplit("/", 1)[1] for _, path, _ in fake.request_log if "/call-summaries/" in path)


def enqueue_both(db_url: str, file: Path) -> None:
    for name, ids in IDS.items():
        result = invoke(["enqueue", "--database-url", db_url, "--workspaces", str(file), "--workspace", name, *ids])
        assert (result.exit_code, result.stdout) == (0, f"Enqueued {len(ids)} new ids (0 already queued, "
                                                        "0 invalid skipped).\n"), result.stderr


# -- configuration errors: one line each, exit 2 -------------------------------------------------


def test_every_workspaces_file_error_is_one_line_exit_2(tmp_path, db_url):
    def sync(*args: str, **env: str | None) -> Result:
        return invoke(["sync", "--database-url", db_url, *args], **{**keys_env(), **env})

    missing = tmp_path / "nope.toml"
    result = sync("--workspaces", str(missing))
    assert (result.exit_code, errors(result)) == (2, [
        f"Error: cannot read the workspaces file '{missing}': No such file or directory"])

    bad = tmp_path / "bad.toml"
    bad.write_text("[workspace.north\napi_key_env = 'X'\n")
    result = sync(ETL_WORKSPACES=str(bad))  # the environment variable names the file too
    assert (result.exit_code, errors(result)) == (2, [
        f"Error: {bad} is not valid TOML: Expected ']' at the end of a table declaration (at line 1, column 17)"])

    unknown = tmp_path / "unknown.toml"
    unknown.write_text('[workspace.north]\napi_key_env = "QUO_KEY_NORTH"\napi_key = "north-key-0123456789"\n')
    result = sync("--workspaces", str(unknown))
    assert (result.exit_code, errors(result)) == (2, [
        f"Error: {unknown}: [workspace.north]: unknown key 'api_key' (known: api_key_env, api_version, base_url, "
        "rate, transcripts, webhook_secrets_env)"])
    assert "north-key" not in result.output + result.stderr

    no_variable = tmp_path / "no_variable.toml"
    no_variable.write_text('[workspace.north]\nbase_url = "http://127.0.0.1:9"\n')
    result = sync("--workspaces", str(no_variable))
    assert (result.exit_code, errors(result)) == (2, [
        f"Error: {no_variable}: [workspace.north] needs api_key_env: the name of the environment variable "
        "holding its key"])

    bad_name = tmp_path / "bad_name.toml"
    bad_name.write_text('[workspace."north pole"]\napi_key_env = "QUO_KEY_NORTH"\n')
    result = sync("--workspaces", str(bad_name))
    assert (result.exit_code, errors(result)) == (2, [
        f"Error: {bad_name}: [workspace.north pole]: the name is not valid: use 1 to 63 letters, digits, '-' or '_', "
        "starting with a letter or digit"])

    good = write_file(tmp_path / "good.toml", {"north": "http://127.0.0.1:9", "south": "http://127.0.0.1:9"})
    result = sync("--workspaces", str(good), QUO_KEY_SOUTH=None)
    assert (result.exit_code, errors(result)) == (2, [
        "Error: workspace 'south': the environment variable QUO_KEY_SOUTH (its api_key_env) is not set"])

    result = sync("--workspaces", str(good), "--workspace", "east")
    assert (result.exit_code, errors(result)) == (2, [
        "Error: unknown workspace 'east': the workspaces are north, south"])

    result = sync("--workspaces", str(good), "--workspace", "no/way")
    assert (result.exit_code, errors(result)) == (2, [
        "Error: workspace name 'no/way' is not valid: use 1 to 63 letters, digits, '-' or '_', starting with a "
        "letter or digit"])

    # Without a file there is one workspace, 'default'.
    result = sync("--workspace", "north", OPENPHONE_API_KEY="k-0123456789")
    assert (result.exit_code, errors(result)) == (2, [
        "Error: unknown workspace 'north': without a workspaces file (--workspaces, ETL_WORKSPACES) the only "
        "workspace is 'default'"])


def test_enqueue_needs_one_workspace_when_the_file_has_several(tmp_path, db_url):
    file = write_file(tmp_path / "w.toml", {"north": "http://127.0.0.1:9", "south": "http://127.0.0.1:9"})
    result = invoke(["enqueue", "--database-url", db_url, "--workspaces", str(file), "AC1"])
    assert (result.exit_code, result.stdout, errors(result)) == (2, "", [
        "Error: call ids belong to one workspace: pick one with --workspace (the workspaces are north, south)"])
    both = invoke(["enqueue", "--database-url", db_url, "--workspaces", str(file), "--workspace", "north",
                   "--workspace", "south", "AC1"])
    assert (both.exit_code, errors(both)) == (2, [
        "Error: call ids belong to one workspace: pick one with --workspace (the workspaces are north, south)"])
    # enqueue needs no key: none is set here.
    one = invoke(["enqueue", "--database-url", db_url, "--workspaces", str(file), "--workspace", "south", "AC1"])
    assert (one.exit_code, one.stdout) == (0, "Enqueued 1 new id (0 already queued, 0 invalid skipped).\n")


def test_without_a_file_the_workspace_default_is_accepted(db_url, engine):
    result = invoke(["enqueue", "--database-url", db_url, "--workspace", "default", "AC1"])
    assert (result.exit_code, result.stdout) == (0, "Enqueued 1 new id (0 already queued, 0 invalid skipped).\n")
    status = invoke(["status", "--database-url", db_url, "--workspace", "default", "--json"])
    assert status.exit_code == 0
    document = json.loads(status.stdout)
    assert "workspaces" not in document and document["queue"]["pending"] == 1  # today's document
    assert document["workspace"] == "default"


def test_discover_phone_numbers_and_backfill_file_need_one_workspace(tmp_path, db_url):
    file = write_file(tmp_path / "w.toml", {"north": "http://127.0.0.1:9", "south": "http://127.0.0.1:9"})
    result = invoke(["discover", "--database-url", db_url, "--workspaces", str(file), "--phone-number", "PN1",
                     "--since", "2026-01-01"], **keys_env())
    assert (result.exit_code, errors(result)) == (2, [
        "Error: --phone-number names lines of one workspace: pick one with --workspace (the workspaces are "
        "north, south)"])
    ids = tmp_path / "ids.txt"
    ids.write_text("AC1\n")
    result = invoke(["backfill", "--database-url", db_url, "--workspaces", str(file), "--file", str(ids)],
                    **keys_env())
    assert (result.exit_code, errors(result)) == (2, [
        "Error: an id file's ids belong to one workspace: pick one with --workspace (the workspaces are "
        "north, south)"])


@pytest.mark.parametrize("command", [["sync"], ["discover"], ["backfill"], ["status"], ["enqueue"], ["prune"]])
def test_the_workspace_options_have_help(command):
    result = invoke([*command, "--help"])
    assert result.exit_code == 0
    text = " ".join(result.stdout.split())
    assert "--workspaces FILE" in text and "[env: ETL_WORKSPACES]" in text
    assert "--workspace NAME Only this workspace of the file (repeatable)" in text


# -- runs: every workspace at once ---------------------------------------------------------------

SUMMARY = re.compile(r"^Workspace (\w+): sync run (\d+): (.*)$")


def summaries(stdout: str) -> dict[str, str]:
    """name -> the counters of its summary line (run ids depend on which thread started first)."""
    found = {}
    for line in stdout.splitlines():
        match = SUMMARY.match(line)
        assert match, line
        found[match[1]] = match[3]
    return found


def test_sync_serves_every_workspace_and_workspace_limits_it(tmp_path, db_url, engine):
    fakes = {name: FakeOpenPhone(api_key=key) for name, key in KEYS.items()}
    with workspaces(**fakes) as urls:
        file = write_file(tmp_path / "w.toml", urls)
        enqueue_both(db_url, file)
        only = invoke(["sync", "--database-url", db_url, "--workspaces", str(file), "--workspace", "south"],
                      **keys_env())
        assert (only.exit_code, errors(only)) == (0, []), only.stderr
        assert summaries(only.stdout) == {"south": "4 completed, 0 rescheduled, 0 errors."}
        assert (summary_requests(fakes["north"]), summary_requests(fakes["south"])) == ([], IDS["south"])
        both = invoke(["sync", "--database-url", db_url], ETL_WORKSPACES=str(file), **keys_env())
    assert (both.exit_code, errors(both)) == (0, []), both.stderr
    assert summaries(both.stdout) == {"north": "6 completed, 0 rescheduled, 0 errors.",
                                      "south": "0 completed, 0 rescheduled, 0 errors."}
    assert [line.split(":")[0] for line in both.stdout.splitlines()] == ["Workspace north", "Workspace south"]
    assert (summary_requests(fakes["north"]), summary_requests(fakes["south"])) == (IDS["north"], IDS["south"])
    assert queue_by_workspace(engine) == {name: dict.fromkeys(ids, "done") for name, ids in IDS.items()}
    # Every log line of the runs names its workspace.
    logged = [json.loads(line) for line in both.stderr.splitlines() if line.startswith("{")]
    assert logged and {line.get("workspace") for line in logged} == {"north", "south"}


def test_a_refused_key_is_its_workspaces_error_line_and_the_other_still_syncs(tmp_path, db_url, engine):
    fakes = {name: FakeOpenPhone(api_key=key) for name, key in KEYS.items()}
    with workspaces(**fakes) as urls:
        file = write_file(tmp_path / "w.toml", urls)
        enqueue_both(db_url, file)
        result = invoke(["sync", "--database-url", db_url, "--workspaces", str(file)],
                        **{**keys_env(), "QUO_KEY_SOUTH": "revoked-key-00000000"})
    assert result.exit_code == 3, result.stderr
    assert summaries(result.stdout) == {
        "north": "6 completed, 0 rescheduled, 0 errors.",
        "south": "0 completed, 0 rescheduled, 0 errors; stopped: the API refused the key."}
    assert errors(result) == [
        "Error: workspace south: the API refused the key (HTTP 401): HTTP 401 Unauthorized: Missing or invalid "
        "API key; the run stopped and every claimed item was left as it was. Check QUO_KEY_SOUTH."]
    assert queue_by_workspace(engine) == {"north": dict.fromkeys(IDS["north"], "done"),
                                          "south": dict.fromkeys(IDS["south"], "pending")}
    assert "revoked-key" not in result.stdout + result.stderr

    status = invoke(["status", "--database-url", db_url, "--workspaces", str(file), "--check"])
    assert status.exit_code == 1
    assert errors(status) == [
        "Error: unhealthy: workspace south: no successful run recorded; workspace south: last run stopped: the API "
        "refused the key (HTTP 401): HTTP 401 Unauthorized: Missing or invalid API key"]


def test_status_has_a_section_and_a_json_object_per_workspace(tmp_path, db_url, engine):
    fakes = {name: FakeOpenPhone(api_key=key) for name, key in KEYS.items()}
    with workspaces(**fakes) as urls:
        file = write_file(tmp_path / "w.toml", urls)
        enqueue_both(db_url, file)
        synced = invoke(["sync", "--database-url", db_url, "--workspaces", str(file), "--workspace", "north"],
                        **keys_env())
        assert synced.exit_code == 0, synced.stderr
    text = invoke(["status", "--database-url", db_url, "--workspaces", str(file)])
    assert text.exit_code == 0
    lines = text.stdout.splitlines()
    assert lines[0].startswith("Database: ")
    north, south = lines.index("Workspace north:"), lines.index("Workspace south:")
    assert lines[north + 1] == "  Queue (6 items):" and lines[south + 1] == "  Queue (4 items):"
    assert "    done                6" in lines[north:south] and "    pending             4" in lines[south:]
    assert lines[-1] == "Health: OK" or lines[-1].startswith("Health: workspace south: ")

    document = json.loads(invoke(["status", "--database-url", db_url, "--workspaces", str(file), "--json"]).stdout)
    assert set(document) == {"database", "now", "healthy", "problems", "workspaces"}
    assert list(document["workspaces"]) == ["north", "south"]
    single = json.loads(invoke(["status", "--database-url", db_url, "--json"]).stdout)
    for name, total in (("north", 6), ("south", 4)):
        per = document["workspaces"][name]
        assert set(per) == set(single)  # the single-workspace document, of this workspace
        assert (per["workspace"], per["total"]) == (name, total)
    assert document["workspaces"]["north"]["queue"]["done"] == 6
    assert document["workspaces"]["south"]["queue"]["pending"] == 4
    assert document["workspaces"]["south"]["last_runs"] == []

    only = json.loads(invoke(["status", "--database-url", db_url, "--workspaces", str(file), "--workspace",
                              "south", "--json"]).stdout)
    assert list(only["workspaces"]) == ["south"]


def test_a_real_process_syncs_every_workspace_and_no_key_leaves_the_environment(tmp_path, db_url, engine):
    fakes = {name: FakeOpenPhone(api_key=key) for name, key in KEYS.items()}
    with workspaces(**fakes) as urls:
        file = write_file(tmp_path / "w.toml", urls)
        enqueue_both(db_url, file)
        env = etl_env(db_url, ETL_WORKSPACES=str(file), **{VARIABLES[n]: k for n, k in KEYS.items()})
        proc = run_etl(["sync"], env)
    assert proc.returncode == 0, proc.stderr
    assert summaries(proc.stdout) == {"north": "6 completed, 0 rescheduled, 0 errors.",
                                      "south": "4 completed, 0 rescheduled, 0 errors."}
    logged = [json.loads(line) for line in proc.stderr.splitlines()]
    assert {line.get("workspace") for line in logged} == {"north", "south"}
    assert {(line["event"], line["workspace"]) for line in logged if line["event"] == "run finished"} == {
        ("run finished", "north"), ("run finished", "south")}
    everything = proc.stdout + proc.stderr + file.read_text() + dump(engine)
    for key in KEYS.values():
        assert key not in everything and key[:12] not in everything


def dump(engine: Engine) -> str:
    """Every row of every table, as text."""
    with engine.connect() as conn:
        return "\n".join(repr(conn.execute(sa.text(f"SELECT * FROM {name}")).all())
                         for name in sa.inspect(conn).get_table_names())


def calls_by_workspace(engine: Engine) -> dict[str, set[str]]:
    with engine.connect() as conn:
        rows = conn.execute(sa.text("SELECT workspace, call_id FROM calls")).all()
    found: dict[str, set[str]] = {}
    for workspace, call_id in rows:
        found.setdefault(workspace, set()).add(call_id)
    return found


def test_discover_backfill_and_prune_per_workspace(tmp_path, db_url, engine):
    seeds = {"north": 1, "south": 2}  # two workspaces, no call id in both
    fakes = {name: FakeOpenPhone(api_key=key, seed=seeds[name]) for name, key in KEYS.items()}
    for fake in fakes.values():
        fake.workspace.generate()
    completed = {name: {i for i, c in fake.workspace.calls.items() if c.status == "completed"}
                 for name, fake in fakes.items()}
    since = (datetime.now(UTC) - timedelta(days=10)).strftime("%Y-%m-%d")
    with workspaces(**fakes) as urls:
        file = write_file(tmp_path / "w.toml", urls)
        found = invoke(["discover", "--database-url", db_url, "--workspaces", str(file), "--since", since],
                       **keys_env())
        assert (found.exit_code, errors(found)) == (0, []), found.stderr
        walks = [line for line in found.stdout.splitlines() if "Discovery run" in line]
        assert [line.split(":")[0] for line in walks] == ["Workspace north", "Workspace south"]
        for line, name in zip(walks, KEYS, strict=True):
            assert re.fullmatch(rf"Workspace {name}: Discovery run \d+: 2 phone numbers, 6 conversations, 24 calls "
                                rf"seen, enqueued {len(completed[name])}, 0 errors\.", line), line
        assert calls_by_workspace(engine) == {name: set(fake.workspace.calls) for name, fake in fakes.items()}
        assert {n: set(q) for n, q in queue_by_workspace(engine).items()} == completed

        plan = invoke(["backfill", "--database-url", db_url, "--workspaces", str(file), "--dry-run"], **keys_env())
        assert (plan.exit_code, plan.stdout.splitlines()) == (0, [
            f"Workspace {name}: Would re-queue 0 items in all; {len(completed[name])} items are due now."
            for name in KEYS]), plan.stderr
        filled = invoke(["backfill", "--database-url", db_url, "--workspaces", str(file)], **keys_env())
    assert (filled.exit_code, errors(filled)) == (0, []), filled.stderr
    lines = filled.stdout.splitlines()
    for line, name in zip(lines, KEYS, strict=True):
        assert re.fullmatch(rf"Workspace {name}: Backfill run \d+: {len(completed[name])} completed, 0 rescheduled, "
                            r"0 errors\.", line), line
    assert queue_by_workspace(engine) == {name: dict.fromkeys(ids, "done") for name, ids in completed.items()}

    pruned = invoke(["prune", "--database-url", db_url, "--workspaces", str(file), "--workspace", "north",
                     "--raw-json-older-than", "0"])
    assert pruned.exit_code == 0, pruned.stderr
    n = len(completed["north"])
    assert re.fullmatch(rf"Workspace north: Cleared {n} summary payload\(s\) and 24 call payload\(s\) of calls that "
                        r"started before [-\d: ]+ UTC\.\n", pruned.stdout), pruned.stdout
    with engine.connect() as conn:
        emptied = dict(conn.execute(sa.text("SELECT workspace, SUM(CASE WHEN raw_json = '' THEN 1 ELSE 0 END) "
                                            "FROM call_summaries GROUP BY workspace")).all())
    assert {k: int(v) for k, v in emptied.items()} == {"north": n, "south": 0}


@pytest.mark.realtime
def test_one_sigterm_stops_every_workspace_of_a_real_process(tmp_path, db_url, engine):
    """The signal goes to the process (any of its threads may take it): every workspace's run stops,
    saves what it fetched, releases the rest; exit 1 with an Error line per workspace."""
    fakes = {name: FakeOpenPhone(api_key=key, latency_ms=40) for name, key in KEYS.items()}
    many = {name: [f"AC{name}{i:04d}" for i in range(400)] for name in KEYS}
    with workspaces(**fakes) as urls:
        file = write_file(tmp_path / "w.toml", urls)
        for name, ids in many.items():
            assert invoke(["enqueue", "--database-url", db_url, "--workspaces", str(file), "--workspace", name,
                           *ids]).exit_code == 0
        env = etl_env(db_url, ETL_WORKSPACES=str(file), **{VARIABLES[n]: k for n, k in KEYS.items()})
        proc = start_etl(["sync", "--rate", "0"], env, tmp_path, "sync")
        try:
            wait_for(lambda: all(len(summary_requests(f)) >= 10 for f in fakes.values()), 60,
                     "both workspaces' first summaries", proc)
        finally:
            proc.send_signal(signal.SIGTERM)
            rc = stop(proc)
    out, err = output_of(tmp_path, "sync")
    assert rc == 1, err
    assert {name: text.endswith("; stopped: interrupted.") for name, text in summaries(out).items()} == {
        "north": True, "south": True}
    assert [line.split(":", 2)[1] for line in err.splitlines() if line.startswith("Error:")] == [
        " workspace north", " workspace south"]
    assert all(line.endswith("did not finish cleanly: interrupted by SIGTERM")
               for line in err.splitlines() if line.startswith("Error:"))
    left = queue_by_workspace(engine)
    for name in many:
        states = set(left[name].values())
        assert states == {"done", "pending"}, (name, states)
