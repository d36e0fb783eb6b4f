"""`etl serve --workspaces` and `etl webhooks --workspace` as an operator runs them (issue 27, part 3):
subprocesses configured through the environment and a workspaces file, two simulated APIs on real
sockets with different keys, webhooks registered per workspace, deliveries pushed by each API to its
own workspace's path, signed with that webhook's own key.
"""

from __future__ import annotations

import signal
from pathlib import Path

import httpx
import sqlalchemy as sa
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy.engine import Engine

from etl.testing import FakeOpenPhone, serve, webhooks
from tests.support.proc import (
    cli_run,
    error_lines,
    etl_env,
    free_port,
    healthy,
    output_of,
    run_etl,
    start_etl,
    stop,
    wait_for,
)

NORTH_KEY = "north-key-0123456789"
SOUTH_KEY = "south-key-0123456789"
NORTH_SECRET = webhooks.new_standard_secret(b"north-secret").removeprefix("whsec_")
SOUTH_SECRET = webhooks.new_standard_secret(b"south-secret")


def workspaces_file(tmp_path: Path, north_url: str, south_url: str, *, north_extra: str = "",
                    south_secrets: bool = True) -> Path:
    path = tmp_path / "workspaces.toml"
    path.write_text(
        '[workspace.north]\napi_key_env = "QUO_KEY_NORTH"\nwebhook_secrets_env = "QUO_WHSEC_NORTH"\n'
        f'base_url = "{north_url}"\n{north_extra}'
        '[workspace.south]\napi_key_env = "QUO_KEY_SOUTH"\napi_version = "2026-03-30"\n'
        + ('webhook_secrets_env = "QUO_WHSEC_SOUTH"\n' if south_secrets else "")
        + f'base_url = "{south_url}"\n')
    return path


def env_for(db_url: str, path: Path, **extra: str) -> dict[str, str]:
    env = etl_env(db_url, None, None, ETL_WORKSPACES=str(path), QUO_KEY_NORTH=NORTH_KEY, QUO_KEY_SOUTH=SOUTH_KEY)
    env.pop("OPENPHONE_WEBHOOK_SECRETS", None)
    env.update(extra)
    return env


def rows(engine: Engine, query: str) -> set[tuple[object, ...]]:
    with engine.connect() as conn:
        return {tuple(row) for row in conn.execute(sa.text(query))}


def secrets_line(stdout: str, variable: str) -> str:
    (line,) = [line for line in stdout.splitlines() if line.startswith(variable + "=")]
    return line.split("=", 1)[1]


def test_register_per_workspace_then_serve_lands_each_in_its_own_workspace(db_url: str, engine: Engine,
                                                                         tmp_path: Path) -> None:
    # Two seeds: the simulator's webhook keys follow from its seed, and `etl serve` refuses one key in two
    # workspaces (as two real workspaces never share one).
    north, south = FakeOpenPhone(api_key=NORTH_KEY, seed=1), FakeOpenPhone(api_key=SOUTH_KEY, seed=2)
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    with serve(north) as north_url, serve(south) as south_url:
        path = workspaces_file(tmp_path, north_url, south_url)
        env = env_for(db_url, path)
        # Changing webhooks takes exactly one workspace; the URL must be that workspace's path.
        refused = cli_run(["webhooks", "register", "--url", base + "/webhooks/north"], env)
        assert (refused.returncode, error_lines(refused.stderr)) == (2, [
            "Error: `etl webhooks register` changes one workspace's webhooks: pick one with --workspace "
            "(the workspaces are north, south)"])
        refused = cli_run(["webhooks", "register", "--workspace", "north", "--url", base + "/webhooks/south"], env)
        assert (refused.returncode, error_lines(refused.stderr)) == (2, [
            f"Error: --url must end in /webhooks/north, where `etl serve` receives workspace north's deliveries "
            f"(got '{base}/webhooks/south'; use {base}/webhooks/north)"])
        assert north.webhooks == {} and south.webhooks == {}

        registered = {}
        for name in ("north", "south"):
            result = cli_run(["webhooks", "register", "--workspace", name, "--url", f"{base}/webhooks/{name}"], env)
            assert result.returncode == 0, result.stderr
            registered[name] = result.stdout
        # Each workspace's webhooks on its own API (its own key): north's two legacy ones, south's one current.
        assert sorted(h["url"] for h in north.webhooks.values()) == [base + "/webhooks/north"] * 2
        assert [h["url"] for h in south.webhooks.values()] == [base + "/webhooks/south"]
        assert [h.get("apiVersion") for h in south.webhooks.values()] == ["2026-03-30"]
        assert registered["north"].splitlines()[-2:] == [
            "Store the signing secrets (shown once) for `etl serve`:",
            "QUO_WHSEC_NORTH=" + ",".join(str(h["key"]) for h in north.webhooks.values())]
        assert secrets_line(registered["south"], "QUO_WHSEC_SOUTH") == str(next(iter(south.webhooks.values()))["key"])
        listed = cli_run(["webhooks", "list"], env)
        assert listed.returncode == 0, listed.stderr
        lines = listed.stdout.splitlines()
        assert [line for line in lines if line.startswith("Workspace ")] == ["Workspace north:", "Workspace south:"]
        assert len(lines) == 5 and lines[3] == "Workspace south:"

        serve_env = {**env, "QUO_WHSEC_NORTH": secrets_line(registered["north"], "QUO_WHSEC_NORTH"),
                     "QUO_WHSEC_SOUTH": secrets_line(registered["south"], "QUO_WHSEC_SOUTH")}
        proc = start_etl(["serve", "--port", str(port)], serve_env, tmp_path, "serve")
        try:
            wait_for(lambda: healthy(base), 60, "etl serve to answer /healthz", proc)
            # Each API pushes to its own webhooks, signed with each webhook's own key.
            pushed = webhooks.push(north.webhooks, webhooks.summary_completed("ACnorth1"))
            pushed += webhooks.push(south.webhooks, webhooks.dated_summary_completed("ACsouth1"))
            assert [(r.status_code, r.json()) for r in pushed] == [(200, {"status": "queued"})] * 2
            # South's secret on north's path: refused like a forged delivery.
            body = webhooks.body_bytes(webhooks.summary_completed("ACcross1"))
            cross = webhooks.deliver(base + "/webhooks/north", body, standard_secret=SOUTH_SECRET)
            assert (cross.status_code, cross.json()["error"]) == (401, "bad_signature")

            def landed() -> bool:
                return rows(engine, "SELECT call_id, state FROM summary_queue") == {("ACnorth1", "done"),
                                                                                   ("ACsouth1", "done")}
            wait_for(landed, 60, "both summaries to land", proc)
            metrics = httpx.get(base + "/metrics", timeout=10).text
            proc.send_signal(signal.SIGTERM)
            code = stop(proc, timeout=60)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        # A webhook id is one workspace's: delete and migrate change exactly one, with its key.
        (south_id,) = south.webhooks
        for args in (["delete", south_id], ["migrate", "--url", base + "/webhooks/north"]):
            refused = cli_run(["webhooks", *args], env)
            assert (refused.returncode, error_lines(refused.stderr)) == (2, [
                f"Error: `etl webhooks {args[0]}` changes one workspace's webhooks: pick one with --workspace "
                "(the workspaces are north, south)"])
        deleted = cli_run(["webhooks", "delete", "--workspace", "south", south_id], env)
        assert (deleted.returncode, deleted.stdout) == (0, f"Deleted webhook {south_id}.\n"), deleted.stderr
        assert south.webhooks == {} and len(north.webhooks) == 2
    out, err = output_of(tmp_path, "serve")
    assert code == 0, err[-2000:]
    assert rows(engine, "SELECT call_id, workspace FROM summary_queue") == {("ACnorth1", "north"),
                                                                           ("ACsouth1", "south")}
    assert rows(engine, "SELECT call_id, workspace FROM call_summaries") == {("ACnorth1", "north"),
                                                                            ("ACsouth1", "south")}
    assert rows(engine, "SELECT call_id, workspace FROM webhook_deliveries") == {("ACnorth1", "north"),
                                                                                ("ACsouth1", "south")}
    # North's summary was fetched with north's key from north's API; south's came whole in its event.
    assert (north.requests["ACnorth1"], south.requests.get("ACnorth1", 0), south.requests.get("ACsouth1", 0)) == (
        1, 0, 0)
    deliveries = {(s.labels["workspace"], s.labels["outcome"]): s.value
                  for family in text_string_to_metric_families(metrics) for s in family.samples
                  if s.name == "etl_webhook_deliveries_total"}
    assert deliveries == {("north", "queued"): 1.0, ("south", "queued"): 1.0}
    assert 'etl_webhook_refusals_total{reason="bad_signature",workspace="north"} 1.0' in metrics
    assert 'etl_engine_alive{workspace="north"} 1.0' in metrics and 'etl_engine_alive{workspace="south"} 1.0' in metrics
    for secret in (NORTH_SECRET, SOUTH_SECRET, NORTH_KEY, SOUTH_KEY, *serve_env["QUO_WHSEC_NORTH"].split(",")):
        assert secret not in out + err


def test_serve_refuses_at_start_naming_the_workspace(tmp_path: Path) -> None:
    db = f"sqlite:///{tmp_path / 'x.db'}"
    path = workspaces_file(tmp_path, "http://127.0.0.1:9", "http://127.0.0.1:9")
    env = env_for(db, path, QUO_WHSEC_NORTH=NORTH_SECRET, QUO_WHSEC_SOUTH=SOUTH_SECRET)
    port = str(free_port())
    cases: list[tuple[dict[str, str | None], list[str], str]] = [
        ({"QUO_KEY_SOUTH": None}, [],
         "Error: workspace 'south': the environment variable QUO_KEY_SOUTH (its api_key_env) is not set"),
        ({"QUO_WHSEC_NORTH": None}, [],
         "Error: workspace 'north' has no webhook secret: the environment variable QUO_WHSEC_NORTH (its "
         "webhook_secrets_env) is not set"),
        ({"QUO_WHSEC_SOUTH": "not-base64!"}, [],
         "Error: workspace 'south': webhook secret #1 is not base64 (expected the signing key as shown by "
         "OpenPhone, optionally prefixed whsec_)"),
        # The same signing key, spelled differently: a delivery to one path would verify on the other.
        ({"QUO_WHSEC_SOUTH": "whsec_" + NORTH_SECRET}, [],
         "Error: workspaces 'north' and 'south' share a webhook secret: each workspace's deliveries must be "
         "verified with its own (a delivery to one could be replayed to the other)"),
        ({}, ["--webhook-secret", NORTH_SECRET],
         "Error: --webhook-secret is for a deployment without a workspaces file: with one, each workspace's "
         "secrets are in the environment variable its webhook_secrets_env names"),
        ({}, ["--workspace", "east"], "Error: unknown workspace 'east': the workspaces are north, south"),
    ]
    for change, extra, error in cases:
        case_env = {k: v for k, v in {**env, **change}.items() if v is not None}
        result = run_etl(["serve", "--port", port, *extra], case_env, timeout=60)
        assert (result.returncode, error_lines(result.stderr)) == (2, [error]), (change, extra)
        assert '"receiver started"' not in result.stderr
        assert "not-base64!" not in result.stderr and NORTH_SECRET not in result.stderr
    no_variable = workspaces_file(tmp_path, "http://127.0.0.1:9", "http://127.0.0.1:9", south_secrets=False)
    result = run_etl(["serve", "--port", port], env_for(db, no_variable, QUO_WHSEC_NORTH=NORTH_SECRET), timeout=60)
    assert (result.returncode, error_lines(result.stderr)) == (2, [
        "Error: workspace 'south' has no webhook secret: add webhook_secrets_env to its [workspace.south] table "
        "(the environment variable holding its comma-separated secrets), or serve only the other workspaces"])
    # Serving only north: south's missing secrets do not matter, and south's path is no path of this server.
    proc = start_etl(["serve", "--port", port, "--workspace", "north"],
                     env_for(db, no_variable, QUO_WHSEC_NORTH=NORTH_SECRET), tmp_path, "north-only")
    try:
        wait_for(lambda: healthy(f"http://127.0.0.1:{port}"), 60, "etl serve to answer /healthz", proc)
        body = webhooks.body_bytes(webhooks.summary_completed("ACsouth9"))
        answer = webhooks.deliver(f"http://127.0.0.1:{port}/webhooks/south", body, v1_key=NORTH_SECRET)
        assert (answer.status_code, answer.json()["error"]) == (404, "unknown_workspace")
        health = httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=10).json()
        assert list(health["workspaces"]) == ["north"]
        proc.send_signal(signal.SIGTERM)
        assert stop(proc, timeout=60) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    reserved = tmp_path / "reserved.toml"
    reserved.write_text('[workspace.openphone]\napi_key_env = "QUO_KEY_NORTH"\n')
    result = run_etl(["serve", "--port", port], env_for(db, reserved), timeout=60)
    assert (result.returncode, error_lines(result.stderr)) == (2, [
        f"Error: {reserved}: [workspace.openphone]: the name is reserved: /webhooks/openphone is the default "
        "workspace's receiver path"])
