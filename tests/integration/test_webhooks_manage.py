"""`etl webhooks register|list|delete` against the simulated API's webhooks CRUD (``etl.testing``):
the library over the fake's httpx transport, the CLI (click's CliRunner) over a real local socket.
"""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest
from sqlalchemy.engine import Engine

from etl.clock import SYSTEM
from etl.config import Settings
from etl.errors import AuthError, EtlError, UsageError
from etl.testing import FakeOpenPhone, serve
from etl.webhooks import manage
from tests.support.proc import cli_run, error_lines, etl_env, free_port, run_etl

API_KEY = "test-key-0123456789"
URL = "https://etl.example.com/webhooks/openphone"


def settings(key: str = API_KEY) -> Settings:
    return Settings(api_key=key, base_url="http://fake.test")


def test_register_list_delete_library() -> None:
    fake = FakeOpenPhone(api_key=API_KEY)
    created = manage.register(settings(), URL, "etl", clock=SYSTEM, transport=fake.transport())
    assert [h.events for h in created] == [["call.completed"], ["call.summary.completed"]]
    # What the API stored: one webhook per resource, for every line, enabled, with its key
    # (the fake refuses any Authorization but the bare key, so no "Bearer" was sent).
    stored = [fake.webhooks[h.id] for h in created]
    assert [(w["url"], w["events"], w["resourceIds"], w["status"], w["label"]) for w in stored] == [
        (URL, ["call.completed"], ["*"], "enabled", "etl"),
        (URL, ["call.summary.completed"], ["*"], "enabled", "etl")]
    assert [h.secret for h in created] == [w["key"] for w in stored]
    assert fake.endpoint_requests["webhooks"] == 3  # the list (anything to reuse?), then two creates
    listed = manage.list_all(settings(), clock=SYSTEM, transport=fake.transport())
    assert sorted(h["id"] for h in listed) == sorted(h.id for h in created)
    manage.delete(settings(), created[0].id, clock=SYSTEM, transport=fake.transport())
    assert list(fake.webhooks) == [created[1].id]


def test_api_errors_are_clear() -> None:
    fake = FakeOpenPhone(api_key=API_KEY)
    with pytest.raises(AuthError):
        manage.list_all(settings("wrong-key-0123"), clock=SYSTEM, transport=fake.transport())
    with pytest.raises(UsageError, match=r"^--url must start with https://"):
        manage.register(settings(), "ftp://etl.example.com/webhooks/openphone", clock=SYSTEM,
                        transport=fake.transport())
    with pytest.raises(EtlError, match=r"^DELETE /v1/webhooks/WH9999 failed: HTTP 404 Not Found: Not Found; no "
                                       r"webhook of either API version has this id \(`etl webhooks list` and "
                                       r"`etl webhooks list --api-version 2026-03-30` show them\)$"):
        manage.delete(settings(), "WH9999", clock=SYSTEM, transport=fake.transport())
    with pytest.raises(EtlError, match="not a webhook id"):
        manage.delete(settings(), "../phone-numbers", clock=SYSTEM, transport=fake.transport())
    assert fake.webhooks == {}


def test_cli_register_list_delete(tmp_path: Path) -> None:
    fake = FakeOpenPhone(api_key=API_KEY)
    db = f"sqlite:///{tmp_path / 'x.db'}"
    with serve(fake) as api_url:
        env = etl_env(db, api_url, API_KEY)
        result = cli_run(["webhooks", "register", "--url", URL], env)
        assert result.returncode == 0, result.stderr
        calls_hook, summaries_hook = fake.webhooks.values()
        secrets = [str(calls_hook["key"]), str(summaries_hook["key"])]
        assert result.stdout.splitlines() == [
            f"Created webhook {calls_hook['id']} for call.completed",
            f"Created webhook {summaries_hook['id']} for call.summary.completed",
            "Store the signing secrets (shown once) for `etl serve`:",
            "OPENPHONE_WEBHOOK_SECRETS=" + ",".join(secrets)]
        assert not any(s in result.stderr for s in secrets)  # printed once, on stdout, never logged
        listed = cli_run(["webhooks", "list"], env)
        assert listed.stdout.splitlines() == [
            f"{calls_hook['id']}  enabled  call.completed  {URL}",
            f"{summaries_hook['id']}  enabled  call.summary.completed  {URL}"]
        assert not any(s in listed.stdout + listed.stderr for s in secrets)
        deleted = cli_run(["webhooks", "delete", str(calls_hook["id"])], env)
        assert (deleted.returncode, deleted.stdout) == (0, f"Deleted webhook {calls_hook['id']}.\n")
        missing = cli_run(["webhooks", "delete", str(calls_hook["id"])], env)
        assert missing.returncode == 1
        assert error_lines(missing.stderr) == [f"Error: DELETE /v1/webhooks/{calls_hook['id']} failed: "
                                               "HTTP 404 Not Found: Not Found; no webhook of either API version "
                                               "has this id (`etl webhooks list` and `etl webhooks list "
                                               "--api-version 2026-03-30` show them)"]
        refused = cli_run(["webhooks", "list"], etl_env(db, api_url, "bad-key-0123"))
        assert refused.returncode == 3
        assert error_lines(refused.stderr) == [  # the key hint of every command (issue 26)
            "Error: the API refused the key (HTTP 401): HTTP 401 Unauthorized: Missing or invalid API key. "
            "Check OPENPHONE_API_KEY."]
        no_key = cli_run(["webhooks", "list"], etl_env(db, api_url))
        assert (no_key.returncode, error_lines(no_key.stderr)) == (
            2, ["Error: no API key: set OPENPHONE_API_KEY or pass --api-key"])


def test_cli_register_prints_the_first_secret_when_the_second_webhook_fails(tmp_path: Path) -> None:
    # The API's own rate limit (two requests -- the list and the first POST --, then 429 for a
    # long while) refuses the second POST.
    fake = FakeOpenPhone(api_key=API_KEY, rate=0.001, burst=2)
    with serve(fake) as api_url:
        partial = cli_run(["webhooks", "register", "--url", URL],
                          etl_env(f"sqlite:///{tmp_path / 'x.db'}", api_url, API_KEY))
    (hook,) = fake.webhooks.values()
    assert partial.returncode == 1
    assert partial.stdout.splitlines() == [
        f"Created webhook {hook['id']} for call.completed",
        "Store the signing secrets (shown once) for `etl serve`:",
        f"OPENPHONE_WEBHOOK_SECRETS={hook['key']}"]
    assert error_lines(partial.stderr) == ["Error: POST /v1/webhooks/call-summaries failed: "
                                           "HTTP 429 Too Many Requests: Too many requests"]


def test_cli_usage_errors(tmp_path: Path) -> None:
    env = etl_env(f"sqlite:///{tmp_path / 'x.db'}", "http://127.0.0.1:9", API_KEY)
    bad_url = cli_run(["webhooks", "register", "--url", "etl.example.com/webhooks/openphone"], env)
    assert (bad_url.returncode, error_lines(bad_url.stderr)) == (
        2, ["Error: --url must start with https:// (http:// only for localhost or 127.0.0.1), "
            "e.g. https://etl.example.com/webhooks/openphone (got 'etl.example.com/webhooks/openphone')"])
    bad_id = cli_run(["webhooks", "delete", "../phone-numbers"], env)
    assert (bad_id.returncode, error_lines(bad_id.stderr)) == (1, ["Error: not a webhook id: '../phone-numbers'"])
    unreachable = cli_run(["webhooks", "list"], env)
    assert (unreachable.returncode, error_lines(unreachable.stderr)) == (
        1, ["Error: GET /v1/webhooks: connection error (ConnectError)"])


# --- issue 20 item 7: code, help and error text agree on the URL -----------------------


@pytest.mark.parametrize(("url", "error"), [
    ("http://etl.example.com/webhooks/openphone",
     "Error: --url must start with https:// (http:// only for localhost or 127.0.0.1), "
     "e.g. https://etl.example.com/webhooks/openphone (got 'http://etl.example.com/webhooks/openphone')"),
    ("https://etl.example.com/hooks",
     "Error: --url must end in /webhooks/openphone, where `etl serve` receives deliveries "
     "(got 'https://etl.example.com/hooks'; use https://etl.example.com/webhooks/openphone)"),
    ("https://etl.example.com:8443/webhooks/openphone/extra",
     "Error: --url must end in /webhooks/openphone, where `etl serve` receives deliveries "
     "(got 'https://etl.example.com:8443/webhooks/openphone/extra'; "
     "use https://etl.example.com:8443/webhooks/openphone)"),
])
def test_cli_register_refuses_a_url_etl_serve_cannot_receive_on(tmp_path: Path, url: str, error: str) -> None:
    fake = FakeOpenPhone(api_key=API_KEY)
    with serve(fake) as api_url:
        for version in ("v1", "2026-03-30"):
            refused = run_etl(["webhooks", "register", "--api-version", version, "--url", url],
                              etl_env(f"sqlite:///{tmp_path / 'x.db'}", api_url, API_KEY))
            assert (refused.returncode, error_lines(refused.stderr), refused.stdout) == (2, [error], "")
    assert fake.webhooks == {} and fake.total_requests == 0  # refused before any request


def test_cli_help_says_what_the_code_accepts() -> None:
    result = run_etl(["webhooks", "register", "--help"], etl_env("sqlite://"))
    assert ("https://HOST[:PORT]/webhooks/NAME (/webhooks/openphone without a workspaces file; http:// only for "
            "localhost or 127.0.0.1)") in " ".join(result.stdout.split())
    assert "--workspace NAME" in result.stdout and "--workspaces FILE" in result.stdout
    assert "2026-03-30" in result.stdout


def test_register_twice_reuses_the_webhooks(tmp_path: Path) -> None:
    fake = FakeOpenPhone(api_key=API_KEY)
    local = "http://127.0.0.1:8080/webhooks/openphone"  # http:// is fine on loopback (tests)
    with serve(fake) as api_url:
        env = etl_env(f"sqlite:///{tmp_path / 'x.db'}", api_url, API_KEY)
        first = run_etl(["webhooks", "register", "--url", local], env)
        assert first.returncode == 0, first.stderr
        hooks = list(fake.webhooks.values())
        again = run_etl(["webhooks", "register", "--url", local], env)
    assert list(fake.webhooks.values()) == hooks  # no duplicate
    assert (again.returncode, again.stdout.splitlines()) == (0, [
        f"Reusing webhook {hooks[0]['id']} for call.completed: it already points at this URL "
        "(its secret was shown when it was created)",
        f"Reusing webhook {hooks[1]['id']} for call.summary.completed: it already points at this URL "
        "(its secret was shown when it was created)"])


# --- issue 18 item 10: a current webhook on the dated API ----------------------------


def test_register_current_webhook_library_and_cli(tmp_path: Path) -> None:
    fake = FakeOpenPhone(api_key=API_KEY)
    dated = settings().replace(api_version="2026-03-30")
    (hook,) = manage.register(dated, URL, "etl", clock=SYSTEM, transport=fake.transport())
    stored = fake.webhooks[hook.id]
    assert (stored["url"], stored["events"], stored["apiVersion"], stored["label"]) == (
        URL, ["call.completed", "call.summary.completed", "call.transcript.completed", "contact.updated",
              "contact.deleted"], "2026-03-30", "etl")
    assert hook.secret == stored["key"] and hook.secret.startswith("whsec_") and not hook.reused
    # Legacy listing does not show it; the dated one does.
    assert manage.list_all(settings(), clock=SYSTEM, transport=fake.transport()) == []
    assert [h["id"] for h in manage.list_all(dated, clock=SYSTEM, transport=fake.transport())] == [hook.id]
    with serve(fake) as api_url:
        env = etl_env(f"sqlite:///{tmp_path / 'x.db'}", api_url, API_KEY, OPENPHONE_API_VERSION="2026-03-30")
        again = run_etl(["webhooks", "register", "--url", URL], env)
        other = run_etl(["webhooks", "register", "--url", "https://other.example.com/webhooks/openphone"], env)
        listed = run_etl(["webhooks", "list"], env)
        deleted = run_etl(["webhooks", "delete", hook.id], env)
    assert (again.returncode, again.stdout.splitlines()) == (0, [
        f"Reusing webhook {hook.id} for call.completed, call.summary.completed, call.transcript.completed, "
        "contact.updated, contact.deleted: "
        "it already points at this URL (its secret was shown when it was created)"])
    assert other.returncode == 0, other.stderr
    created_line, store_line, secret_line = other.stdout.splitlines()
    assert created_line.startswith("Created webhook WH") and store_line.startswith("Store the signing secrets")
    assert secret_line.startswith("OPENPHONE_WEBHOOK_SECRETS=whsec_")
    assert len(listed.stdout.splitlines()) == 2 and f"{hook.id}  enabled  " in listed.stdout
    assert (deleted.returncode, deleted.stdout) == (0, f"Deleted webhook {hook.id}.\n")
    assert hook.id not in fake.webhooks


def test_dated_requests_carry_the_version_header_and_no_v1() -> None:
    fake = FakeOpenPhone(api_key=API_KEY)
    client = httpx.Client(transport=fake.transport(), base_url="http://fake.test")
    without = client.get("/webhooks", headers={"Authorization": API_KEY})
    assert without.status_code == 400 and "Quo-Api-Version" in without.json()["message"]
    with_header = client.get("/webhooks", headers={"Authorization": API_KEY, "Quo-Api-Version": "2026-03-30"})
    assert with_header.json() == {"data": [], "nextCursor": None}
    hooks = manage.register(settings().replace(api_version="2026-03-30"), URL, clock=SYSTEM, transport=fake.transport())
    assert len(hooks) == 1 and fake.endpoint_requests["webhooks"] == 4


# --- issue 18 item 11: migrate gives up within its bound, deleting nothing ----------------


def test_migrate_gives_up_after_its_wait_and_deletes_nothing(engine: Engine) -> None:
    from etl.testing.clock import FakeClock

    fake = FakeOpenPhone(api_key=API_KEY)
    # Nothing listens on this port: every test event fails to arrive.
    dead = f"http://127.0.0.1:{free_port()}/webhooks/openphone"
    legacy = manage.register(settings(), dead, clock=SYSTEM, transport=fake.transport())
    clock = FakeClock()
    steps: list[str] = []
    with pytest.raises(manage.MigrationError) as refused:
        manage.migrate(settings(), dead, engine, wait=60, resend_every=15, poll=1, clock=clock,
                       on_step=steps.append, transport=fake.transport())
    (current,) = [h for h in fake.webhooks.values() if h.get("apiVersion") == "2026-03-30"]
    assert str(refused.value) == (
        f"no test event reached `etl serve` within 60 s (4 sent to webhook {current['id']}, {dead}): no legacy "
        "webhook was deleted. Check that `etl serve` runs on this database, that its OPENPHONE_WEBHOOK_SECRETS "
        f"holds the new webhook's secret and that {dead} reaches it, then run migrate again (the new webhook "
        "is reused)")
    assert refused.value.exit_code == 1
    assert {h.id for h in legacy} <= set(fake.webhooks)  # nothing deleted
    assert [r["webhook_id"] for r in fake.wait_for_test_deliveries()] == [current["id"]] * 4
    assert all("error" in r for r in fake.test_deliveries)
    assert steps[0] == (f"Created webhook {current['id']} for call.completed, call.summary.completed, "
                        "call.transcript.completed, contact.updated, contact.deleted")
    assert sum(s.startswith("Sent test event") for s in steps) == 4
    assert not any(str(current["key"]) in s for s in steps[2:])  # the secret once, in the second line only


@pytest.mark.parametrize("url", ["https://etl.example.com/webhooks/openphone",
                                 "https://etl.example.com:8443/webhooks/openphone",
                                 "http://localhost:8080/webhooks/openphone",
                                 "http://127.0.0.1/webhooks/openphone"])
def test_receiver_urls_that_are_accepted(url: str) -> None:
    assert manage.check_receiver_url(url) == url


@pytest.mark.parametrize("url", ["http://[::1]:8080/webhooks/openphone", "http://10.0.0.5/webhooks/openphone",
                                 "https://etl.example.com/webhooks/openphone?x=1", "https:///webhooks/openphone",
                                 "https://etl.example.com:99999/webhooks/openphone"])
def test_receiver_urls_that_are_refused(url: str) -> None:
    with pytest.raises(UsageError, match=r"^--url "):
        manage.check_receiver_url(url)


@pytest.mark.parametrize(("url", "workspace"), [("https://etl.example.com/webhooks/default", "default"),
                                                ("https://etl.example.com/webhooks/north", "north"),
                                                ("http://127.0.0.1:8080/webhooks/north-2", "north-2")])
def test_receiver_urls_of_a_workspace(url: str, workspace: str) -> None:
    assert manage.check_receiver_url(url, workspace) == url


def test_a_workspaces_url_is_its_own_path() -> None:
    with pytest.raises(UsageError) as refused:
        manage.check_receiver_url("https://etl.example.com/webhooks/openphone", "north")
    assert str(refused.value) == (
        "--url must end in /webhooks/north, where `etl serve` receives workspace north's deliveries "
        "(got 'https://etl.example.com/webhooks/openphone'; use https://etl.example.com/webhooks/north)")
    with pytest.raises(UsageError) as refused:
        manage.check_receiver_url("https://etl.example.com/webhooks/north")
    assert str(refused.value) == (
        "--url must end in /webhooks/openphone, where `etl serve` receives deliveries "
        "(got 'https://etl.example.com/webhooks/north'; use https://etl.example.com/webhooks/openphone)")


def test_webhooks_of_one_workspace_each_with_its_own_key(monkeypatch: pytest.MonkeyPatch) -> None:
    """The library: `Etl.workspace(name).webhooks` uses that workspace's key and URL; a job of several
    workspaces has no one set of webhooks."""
    from etl import Etl
    from etl.workspaces import WorkspaceConfig

    north, south = FakeOpenPhone(api_key="north-key-0123456789"), FakeOpenPhone(api_key="south-key-0123456789")
    monkeypatch.setenv("QUO_KEY_NORTH", north.api_key)
    monkeypatch.setenv("QUO_KEY_SOUTH", south.api_key)
    spaces = [WorkspaceConfig("north", "QUO_KEY_NORTH", webhook_secrets_env="QUO_WHSEC_NORTH"),
              WorkspaceConfig("south", "QUO_KEY_SOUTH")]
    with pytest.raises(UsageError) as refused:
        Etl(workspaces=spaces).webhooks.list()
    assert str(refused.value) == ("webhooks belong to one workspace, and this job has 2 (north, south): "
                                  "use Etl.workspace(name).webhooks")
    for fake, name in ((north, "north"), (south, "south")):
        job = Etl(workspaces=spaces, transport=fake.transport()).workspace(name)
        created = job.webhooks.register(f"https://etl.example.com/webhooks/{name}")
        assert len(created) == 2 and all(not h.reused for h in created)
        assert [h["url"] for h in fake.webhooks.values()] == [f"https://etl.example.com/webhooks/{name}"] * 2
    assert Etl(workspaces=spaces).workspace("north").webhooks.secrets_variable == "QUO_WHSEC_NORTH"
    assert Etl(workspaces=spaces).workspace("south").webhooks.secrets_variable is None
    assert Etl().webhooks.secrets_variable == "OPENPHONE_WEBHOOK_SECRETS"


def test_an_earlier_test_event_is_no_proof_for_a_new_migrate(engine: Engine) -> None:
    """Quo's test event has one fixed sample id: a delivery of it an earlier migrate left (kept for days)
    must not let a new migrate delete legacy webhooks; one received since, even as a duplicate, does."""
    import hashlib
    from datetime import datetime, timedelta

    from etl import store

    sample = "WEsample0000000000000000000000000"
    since = datetime(2026, 12, 7, 12, 0, 0)
    common = {"scheme": "standard", "event_type": manage.TEST_EVENT_TYPE, "call_id": None, "outcome": "ignored",
              "signed_at": since}
    with engine.begin() as conn:
        store.record_delivery(conn, message_key="m-old", event_key=hashlib.sha256(sample.encode()).hexdigest(),
                              received_at=since - timedelta(days=2), **common)
    assert manage.test_event_received(engine, [sample], since) is False
    assert manage.test_event_received(engine, [], since) is False
    with engine.begin() as conn:  # the same event again, after `since`: recorded as a duplicate, no event key
        store.record_delivery(conn, message_key="m-new", event_key=None, received_at=since + timedelta(seconds=3),
                              **{**common, "outcome": "duplicate"})
    assert manage.test_event_received(engine, [sample], since) is True
    assert manage.test_event_received(engine, [sample], since, workspace="north") is False
