"""`etl webhooks register|list|delete` against a small fake of the webhook endpoints.

The fake speaks the documented shapes (POST /v1/webhooks/calls and
/v1/webhooks/call-summaries answer 201 with ``data.key``, the signing
secret); the library is driven over an httpx.MockTransport, the CLI over a
real local socket (the sim helper's simulator serves these endpoints later).
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
import pytest

from etl.config import Settings
from etl.errors import AuthError, EtlError
from etl.webhooks import manage
from tests.support.proc import error_lines, etl_env, run_etl

API_KEY = "test-key-0123456789"


class FakeWebhooks:
    """In-memory webhooks API: answers like the documented endpoints; records what it was sent."""

    def __init__(self) -> None:
        self.hooks: dict[str, dict[str, Any]] = {}
        self.seen: list[tuple[str, str, dict[str, Any] | None, str | None]] = []
        self._n = 0
        self.fail_next: str | None = None

    def answer(self, method: str, path: str, body: bytes, auth: str | None) -> tuple[int, dict[str, Any] | None]:
        payload = json.loads(body) if body else None
        self.seen.append((method, path, payload, auth))
        if path == self.fail_next:
            self.fail_next = None
            return 500, {"message": "try again"}
        if auth != API_KEY:
            return 401, {"message": "Unauthorized", "code": "0500401"}
        if method == "POST" and path in ("/v1/webhooks/calls", "/v1/webhooks/call-summaries"):
            assert payload is not None
            if not str(payload.get("url", "")).startswith("https://"):
                return 400, {"message": "url must be https"}
            self._n += 1
            hook_id = f"WH{self._n:04d}"
            self.hooks[hook_id] = {"id": hook_id, "url": payload["url"], "events": payload["events"],
                                   "key": f"c2VjcmV0LXtoaXMtaXMtc2VjcmV0LW51bWJlci0{self._n}",
                                   "status": "enabled", "label": payload.get("label"),
                                   "resourceIds": payload.get("resourceIds"), "createdAt": "2026-11-25T00:00:00Z"}
            return 201, {"data": self.hooks[hook_id]}
        if method == "GET" and path == "/v1/webhooks":
            return 200, {"data": [{k: v for k, v in h.items() if k != "key"} for h in self.hooks.values()]}
        if method == "DELETE" and path.startswith("/v1/webhooks/"):
            hook_id = path.rsplit("/", 1)[1]
            if self.hooks.pop(hook_id, None) is None:
                return 404, {"message": f"Webhook {hook_id} not found"}
            return 204, None
        return 404, {"message": "no route"}

    def transport(self) -> httpx.MockTransport:
        def handle(request: httpx.Request) -> httpx.Response:
            status, doc = self.answer(request.method, request.url.path, request.read(),
                                      request.headers.get("authorization"))
            return httpx.Response(status, json=doc) if doc is not None else httpx.Response(status)
        return httpx.MockTransport(handle)


@pytest.fixture
def fake_hooks() -> FakeWebhooks:
    return FakeWebhooks()


def settings(key: str = API_KEY) -> Settings:
    return Settings(api_key=key, base_url="http://fake.test")


def test_register_list_delete_library(fake_hooks: FakeWebhooks) -> None:
    created = manage.register(settings(), "https://etl.example.com/webhooks/openphone",
                              transport=fake_hooks.transport())
    assert [h.events for h in created] == [["call.completed"], ["call.summary.completed"]]
    assert all(h.secret for h in created)
    posts = [(m, p, body) for m, p, body, _ in fake_hooks.seen if m == "POST"]
    assert [p for _, p, _ in posts] == ["/v1/webhooks/calls", "/v1/webhooks/call-summaries"]
    assert posts[0][2] == {"url": "https://etl.example.com/webhooks/openphone", "events": ["call.completed"],
                           "resourceIds": ["*"], "status": "enabled"}
    assert all(auth == API_KEY for *_, auth in fake_hooks.seen)  # no "Bearer"
    listed = manage.list_all(settings(), transport=fake_hooks.transport())
    assert sorted(h["id"] for h in listed) == sorted(h.id for h in created)
    manage.delete(settings(), created[0].id, transport=fake_hooks.transport())
    assert list(fake_hooks.hooks) == [created[1].id]


def test_api_errors_are_clear(fake_hooks: FakeWebhooks) -> None:
    with pytest.raises(AuthError):
        manage.list_all(settings("wrong-key-0123"), transport=fake_hooks.transport())
    with pytest.raises(EtlError, match=r"POST /v1/webhooks/calls failed: HTTP 400 Bad Request: url must be https"):
        manage.register(settings(), "http://insecure.example.com/x", transport=fake_hooks.transport())
    with pytest.raises(EtlError, match="HTTP 404 Not Found: Webhook WH9999 not found"):
        manage.delete(settings(), "WH9999", transport=fake_hooks.transport())
    with pytest.raises(EtlError, match="not a webhook id"):
        manage.delete(settings(), "../phone-numbers", transport=fake_hooks.transport())


@pytest.fixture
def fake_server(fake_hooks: FakeWebhooks) -> Iterator[str]:
    class Handler(BaseHTTPRequestHandler):
        def _serve(self) -> None:
            length = int(self.headers.get("content-length") or 0)
            status, doc = fake_hooks.answer(self.command, self.path, self.rfile.read(length),
                                            self.headers.get("authorization"))
            data = json.dumps(doc).encode() if doc is not None else b""
            self.send_response(status)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        do_GET = do_POST = do_DELETE = _serve

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


def test_cli_register_list_delete(fake_server: str, fake_hooks: FakeWebhooks, tmp_path: Any) -> None:
    env = etl_env(f"sqlite:///{tmp_path / 'x.db'}", fake_server, API_KEY)
    result = run_etl(["webhooks", "register", "--url", "https://etl.example.com/webhooks/openphone"], env)
    assert result.returncode == 0, result.stderr
    secrets = [h["key"] for h in fake_hooks.hooks.values()]
    lines = result.stdout.splitlines()
    assert lines[0] == "Created webhook WH0001 for call.completed"
    assert lines[1] == "Created webhook WH0002 for call.summary.completed"
    assert lines[-1] == "OPENPHONE_WEBHOOK_SECRETS=" + ",".join(secrets)
    assert not any(s in result.stderr for s in secrets)  # printed once, on stdout, never logged
    listed = run_etl(["webhooks", "list"], env)
    assert listed.stdout.splitlines() == [
        "WH0001  enabled  call.completed  https://etl.example.com/webhooks/openphone",
        "WH0002  enabled  call.summary.completed  https://etl.example.com/webhooks/openphone"]
    deleted = run_etl(["webhooks", "delete", "WH0001"], env)
    assert (deleted.returncode, deleted.stdout) == (0, "Deleted webhook WH0001.\n")
    missing = run_etl(["webhooks", "delete", "WH0001"], env)
    assert missing.returncode == 1
    assert error_lines(missing.stderr) == ["Error: DELETE /v1/webhooks/WH0001 failed: HTTP 404 Not Found: "
                                           "Webhook WH0001 not found"]
    # The second webhook refused: the first one's secret is still printed, then the error.
    fake_hooks.fail_next = "/v1/webhooks/call-summaries"
    partial = run_etl(["webhooks", "register", "--url", "https://etl.example.com/webhooks/openphone"], env)
    assert partial.returncode == 1
    assert partial.stdout.splitlines()[0] == "Created webhook WH0003 for call.completed"
    assert partial.stdout.splitlines()[-1] == "OPENPHONE_WEBHOOK_SECRETS=" + fake_hooks.hooks["WH0003"]["key"]
    assert error_lines(partial.stderr) == ["Error: POST /v1/webhooks/call-summaries failed: "
                                           "HTTP 500 Internal Server Error: try again"]
    refused = run_etl(["webhooks", "list"], etl_env(f"sqlite:///{tmp_path / 'x.db'}", fake_server, "bad-key-0123"))
    assert refused.returncode == 3
    no_key = run_etl(["webhooks", "list"], etl_env(f"sqlite:///{tmp_path / 'x.db'}", fake_server))
    assert (no_key.returncode, error_lines(no_key.stderr)) == (
        2, ["Error: no API key: set OPENPHONE_API_KEY or pass --api-key"])
