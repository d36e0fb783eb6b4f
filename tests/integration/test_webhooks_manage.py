"""`etl webhooks register|list|delete` against the simulated API's webhooks CRUD (``etl.testing``):
the library over the fake's httpx transport, the CLI (click's CliRunner) over a real local socket.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from etl.config import Settings
from etl.errors import AuthError, EtlError
from etl.testing import FakeOpenPhone, serve
from etl.webhooks import manage
from tests.support.proc import cli_run, error_lines, etl_env

API_KEY = "test-key-0123456789"
URL = "https://etl.example.com/webhooks/openphone"


def settings(key: str = API_KEY) -> Settings:
    return Settings(api_key=key, base_url="http://fake.test")


def test_register_list_delete_library() -> None:
    fake = FakeOpenPhone(api_key=API_KEY)
    created = manage.register(settings(), URL, "etl", transport=fake.transport())
    assert [h.events for h in created] == [["call.completed"], ["call.summary.completed"]]
    # What the API stored: one webhook per resource, for every line, enabled, with its key
    # (the fake refuses any Authorization but the bare key, so no "Bearer" was sent).
    stored = [fake.webhooks[h.id] for h in created]
    assert [(w["url"], w["events"], w["resourceIds"], w["status"], w["label"]) for w in stored] == [
        (URL, ["call.completed"], ["*"], "enabled", "etl"),
        (URL, ["call.summary.completed"], ["*"], "enabled", "etl")]
    assert [h.secret for h in created] == [w["key"] for w in stored]
    assert fake.endpoint_requests["webhooks"] == 2
    listed = manage.list_all(settings(), transport=fake.transport())
    assert sorted(h["id"] for h in listed) == sorted(h.id for h in created)
    manage.delete(settings(), created[0].id, transport=fake.transport())
    assert list(fake.webhooks) == [created[1].id]


def test_api_errors_are_clear() -> None:
    fake = FakeOpenPhone(api_key=API_KEY)
    with pytest.raises(AuthError):
        manage.list_all(settings("wrong-key-0123"), transport=fake.transport())
    with pytest.raises(EtlError, match=r"^POST /v1/webhooks/calls failed: HTTP 400 Bad Request: "
                                       r"url must be an http\(s\) URL$"):
        manage.register(settings(), "ftp://etl.example.com/x", transport=fake.transport())
    with pytest.raises(EtlError, match=r"^DELETE /v1/webhooks/WH9999 failed: HTTP 404 Not Found: Not Found$"):
        manage.delete(settings(), "WH9999", transport=fake.transport())
    with pytest.raises(EtlError, match="not a webhook id"):
        manage.delete(settings(), "../phone-numbers", transport=fake.transport())
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
                                               "HTTP 404 Not Found: Not Found"]
        refused = cli_run(["webhooks", "list"], etl_env(db, api_url, "bad-key-0123"))
        assert refused.returncode == 3
        assert error_lines(refused.stderr) == [
            "Error: HTTP 401 Unauthorized: Missing or invalid API key"]
        no_key = cli_run(["webhooks", "list"], etl_env(db, api_url))
        assert (no_key.returncode, error_lines(no_key.stderr)) == (
            2, ["Error: no API key: set OPENPHONE_API_KEY or pass --api-key"])


def test_cli_register_prints_the_first_secret_when_the_second_webhook_fails(tmp_path: Path) -> None:
    # The API's own rate limit (one request, then 429 for a long while) refuses the second POST.
    fake = FakeOpenPhone(api_key=API_KEY, rate=0.001, burst=1)
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
        2, ["Error: --url must start with https:// (got 'etl.example.com/webhooks/openphone')"])
    bad_id = cli_run(["webhooks", "delete", "../phone-numbers"], env)
    assert (bad_id.returncode, error_lines(bad_id.stderr)) == (1, ["Error: not a webhook id: '../phone-numbers'"])
    unreachable = cli_run(["webhooks", "list"], env)
    assert (unreachable.returncode, error_lines(unreachable.stderr)) == (
        1, ["Error: GET /v1/webhooks: connection error (ConnectError)"])
