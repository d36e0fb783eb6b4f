"""Signature verification and event reading, pure: a fixed ``now``, no server, no database.

Deliveries are signed by ``etl.testing.webhooks`` (the simulator's signer, itself
checked against the documented recipe and the ``standardwebhooks`` verifier in
tests/unit/test_testing_webhooks.py), never by the code under test.
"""

from __future__ import annotations

import ast
import base64
import json
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from starlette.datastructures import Headers

import etl
import etl.testing
from etl.testing import webhooks
from etl.testing.clock import FakeClock
from etl.webhooks.events import EventError, parse_event
from etl.webhooks.signatures import SecretError, SignatureError, Verified, load_secrets, same_secret, verify

# Signing keys as OpenPhone shows them: base64 of 32 bytes (v1), whsec_<base64> (Standard Webhooks).
WHSEC = webhooks.new_standard_secret(b"secret-std")
SECRET_A = webhooks.new_standard_secret(b"secret-a").removeprefix("whsec_")
SECRET_B = webhooks.new_standard_secret(b"secret-b").removeprefix("whsec_")


def v1_headers(secret: str, body: bytes, ts_ms: int) -> dict[str, str]:
    return webhooks.sign_v1(body, secret, ts_ms)


def std_headers(secret: str, body: bytes, msg_id: str, ts: int) -> dict[str, str]:
    return webhooks.sign_standard(body, secret, msg_id=msg_id, timestamp=datetime.fromtimestamp(ts, UTC))


def summary_event(call_id: str, event_id: str, *, docs_sample_type: bool = False,
                  shape: webhooks.Shape = "object") -> bytes:
    return webhooks.body_bytes(webhooks.summary_completed(call_id, event_id=event_id,
                                                          docs_sample_type=docs_sample_type, shape=shape))

# The standardwebhooks library reads the real clock for its own 5-minute window,
# so "now" here is the real time (whole seconds); every timestamp is relative to it.
NOW = datetime.now(UTC).replace(tzinfo=None, microsecond=0)
NOW_MS = int(NOW.replace(tzinfo=UTC).timestamp() * 1000)
BODY = summary_event("ACabc123", "EV1")
SECRETS = load_secrets([SECRET_A, SECRET_B, WHSEC])


@pytest.fixture(autouse=True)
def _now_is_now(monkeypatch: pytest.MonkeyPatch) -> None:
    """Take "now" when each test starts: the library's window is real time, and a test may run
    many minutes after this module was imported (the whole suite)."""
    now = datetime.now(UTC).replace(tzinfo=None, microsecond=0)
    monkeypatch.setattr(sys.modules[__name__], "NOW", now)
    monkeypatch.setattr(sys.modules[__name__], "NOW_MS", int(now.replace(tzinfo=UTC).timestamp() * 1000))


def check(headers: dict[str, str], body: bytes = BODY, tolerance: float = 300, now: datetime | None = None
          ) -> Verified:
    return verify(Headers(headers), body, SECRETS, NOW if now is None else now, tolerance)


def refused(headers: dict[str, str], body: bytes = BODY, **kw: object) -> str:
    with pytest.raises(SignatureError) as info:
        check(headers, body, **kw)  # type: ignore[arg-type]
    assert SECRET_A not in str(info.value) and WHSEC not in str(info.value)
    return info.value.reason


def test_v1_accepts_each_configured_secret_and_milliseconds() -> None:
    for secret in (SECRET_A, SECRET_B):
        verified = check(v1_headers(secret, BODY, NOW_MS))
        assert verified.scheme == "openphone-v1"
        assert verified.signed_at == NOW


def test_v1_seconds_timestamp_is_read_as_seconds() -> None:
    assert check(v1_headers(SECRET_A, BODY, NOW_MS // 1000)).signed_at == NOW


def test_standard_scheme_verified_by_library() -> None:
    ts = NOW_MS // 1000
    for secret in (WHSEC, SECRET_A):  # a whsec_ key, and a plain base64 one
        verified = check(std_headers(secret, BODY, "msg_1", ts))
        assert verified.scheme == "standard" and verified.message_id == "msg_1"


def test_message_key_same_for_same_message_whatever_the_header_spelling() -> None:
    ts = NOW_MS // 1000
    headers = std_headers(WHSEC, BODY, "msg_1", ts)
    plain = check(headers).message_key
    headers["webhook-signature"] = "v1,AAAA " + headers["webhook-signature"]  # an extra, wrong entry
    assert check(headers).message_key == plain
    # The webhook-id and its timestamp are the message's identity: with the timestamp spelled
    # "0<ts>" it is the same message; re-signed later it is another one (answered by its event, so
    # that an exact replay is refused whatever order copies arrive in: issue 25, finding 8).
    resigned = check(std_headers(WHSEC, BODY, "msg_1", ts + 1))
    assert resigned.message_key != plain and resigned.signed_at == NOW + timedelta(seconds=1)
    headers = std_headers(WHSEC, BODY, "msg_1", ts)
    headers["webhook-timestamp"] = "0" + headers["webhook-timestamp"]
    padded = check(headers)
    assert (padded.message_key, padded.signed_at) == (plain, NOW)
    assert check(std_headers(WHSEC, BODY, "msg_2", ts)).message_key != plain
    first = check(v1_headers(SECRET_A, BODY, NOW_MS)).message_key
    assert first != check(v1_headers(SECRET_A, BODY, NOW_MS + 1)).message_key


@pytest.mark.parametrize(("name", "headers", "reason"), [
    ("no header", {"content-type": "application/json"}, "missing_header"),
    ("incomplete standard", {"webhook-id": "msg_1", "webhook-signature": "v1,AAAA"}, "missing_header"),
    ("v1 wrong prefix", {"openphone-signature": "sha256=abc"}, "malformed_header"),
    ("v1 wrong version", {"openphone-signature": f"hmac;2;{NOW_MS};AAAA"}, "malformed_header"),
    ("v1 no timestamp", {"openphone-signature": "hmac;1;;AAAA"}, "malformed_header"),
    ("v1 stripe style", {"openphone-signature": f"t={NOW_MS},v1=abcd"}, "malformed_header"),
    ("standard no comma", {"webhook-id": "m", "webhook-timestamp": str(NOW_MS // 1000),
                           "webhook-signature": "v1AAAA"}, "malformed_header"),
    ("standard ms timestamp", {"webhook-id": "m", "webhook-timestamp": "abc",
                               "webhook-signature": "v1,AAAA"}, "malformed_header"),
])
def test_malformed_or_missing_headers(name: str, headers: dict[str, str], reason: str) -> None:
    assert refused(headers) == reason


def test_wrong_secret_and_changed_body_are_bad_signatures() -> None:
    other = base64.b64encode(b"x" * 32).decode()
    assert refused(v1_headers(other, BODY, NOW_MS)) == "bad_signature"
    changed = BODY.replace(b"ACabc123", b"ACabc124")
    assert len(changed) == len(BODY)
    assert refused(v1_headers(SECRET_A, BODY, NOW_MS), body=changed) == "bad_signature"
    assert refused(std_headers(WHSEC, BODY, "m", NOW_MS // 1000), body=changed) == "bad_signature"
    assert refused(std_headers("whsec_" + other, BODY, "m", NOW_MS // 1000)) == "bad_signature"


def test_timestamps_outside_tolerance() -> None:
    for skew in (-301, 301):
        ms = NOW_MS + skew * 1000
        assert refused(v1_headers(SECRET_A, BODY, ms)) == "stale_timestamp"
        assert refused(std_headers(WHSEC, BODY, "m", ms // 1000)) == "stale_timestamp"
    assert check(v1_headers(SECRET_A, BODY, NOW_MS - 299_000)).scheme == "openphone-v1"
    # The tolerance is the receiver's for both schemes, narrower or wider than 5 minutes.
    assert refused(v1_headers(SECRET_A, BODY, NOW_MS - 61_000), tolerance=60) == "stale_timestamp"
    assert refused(std_headers(WHSEC, BODY, "m", NOW_MS // 1000 - 61), tolerance=60) == "stale_timestamp"
    assert check(v1_headers(SECRET_A, BODY, NOW_MS - 600_000), tolerance=900).scheme == "openphone-v1"
    assert check(std_headers(WHSEC, BODY, "m", NOW_MS // 1000 - 600), tolerance=900).scheme == "standard"


def test_verification_uses_the_given_now_not_the_system_clock() -> None:
    """"now" is the caller's (the receiver passes its Clock's): a delivery signed at a fake time verifies."""
    fake_now = FakeClock().utcnow()
    ts = int(fake_now.replace(tzinfo=UTC).timestamp())
    assert check(std_headers(WHSEC, BODY, "m", ts), now=fake_now).signed_at == fake_now
    assert check(v1_headers(SECRET_A, BODY, ts * 1000), now=fake_now).signed_at == fake_now
    assert refused(std_headers(WHSEC, BODY, "m", ts), now=fake_now + timedelta(seconds=301)) == "stale_timestamp"


@pytest.mark.parametrize("headers", [
    {"openphone-signature": "hmac;1;9999999999999999;AAAA"},
    {"openphone-signature": "hmac;1;0000000000000000;AAAA"},
    {"webhook-id": "m", "webhook-timestamp": "999999999999", "webhook-signature": "v1,AAAA"},
    {"webhook-id": "m", "webhook-timestamp": "0", "webhook-signature": "v1,AAAA"},
])
def test_timestamps_no_calendar_holds_are_stale_not_a_crash(headers: dict[str, str]) -> None:
    """Timestamps no calendar holds are stale, not a crash: these raised OverflowError/ValueError (a 500) before the
    HMAC check."""
    with pytest.raises(SignatureError) as info:
        check(headers)
    assert info.value.reason == "stale_timestamp"
    assert "tolerance 300 s" in str(info.value)


def test_unusable_secrets_refused_without_echoing_them() -> None:
    for bad in ("not base64!!", "whsec_%%%", base64.b64encode(b"short").decode()):
        with pytest.raises(SecretError) as info:
            load_secrets([SECRET_A, bad])
        assert "#2" in str(info.value) and bad not in str(info.value)


def test_events_both_shapes_and_types() -> None:
    shapes: tuple[webhooks.Shape, ...] = ("object", "resource")
    for shape in shapes:
        for docs_sample_type in (False, True):
            event = parse_event(summary_event("ACabc123", "EV1", docs_sample_type=docs_sample_type, shape=shape))
            assert (event.action, event.call_id) == ("summary_completed", "ACabc123")
    ignored = parse_event(json.dumps({"type": "message.received", "data": {"object": {}}}).encode())
    assert ignored.action == "ignore" and ignored.event_key is None
    bad_id = parse_event(summary_event("AC../../x", "EV2"))
    assert bad_id.action == "ignore" and bad_id.call_id is None
    for body in (b"{not json", b"[1,2]", b"\xff\xfe"):
        with pytest.raises(EventError):
            parse_event(body)


def test_the_signer_in_these_tests_does_not_use_the_verifier() -> None:
    """etl.testing signs on its own (hmac, standardwebhooks); were it to import etl.webhooks,
    these tests would check the verifier against itself."""
    imported: set[str] = set()
    for path in Path(etl.testing.__file__).parent.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module:
                imported.add(node.module)
            elif isinstance(node, ast.Import):
                imported.update(alias.name for alias in node.names)
    assert "standardwebhooks" in imported  # the walk saw the signer's imports
    assert not [m for m in imported if m == "etl.webhooks" or m.startswith("etl.webhooks.")]


def test_the_receiver_reads_time_only_through_the_clock_seam() -> None:
    """etl/webhooks takes an etl.clock.Clock: no time.*, datetime.now/utcnow or etl.clock.utcnow
    of its own, so tests of windows and retention run on a FakeClock."""
    found = []
    for path in sorted((Path(etl.__file__).parent / "webhooks").glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import) and any(a.name == "time" for a in node.names):
                found.append(f"{path.name}: import time")
            elif isinstance(node, ast.ImportFrom) and node.module in ("time", "etl.clock") and any(
                    a.name in ("time", "monotonic", "sleep", "utcnow") for a in node.names):
                found.append(f"{path.name}: from {node.module} import ...")
            elif isinstance(node, ast.Attribute) and node.attr in ("now", "utcnow", "today") and isinstance(
                    node.value, ast.Name) and node.value.id in ("datetime", "date"):
                found.append(f"{path.name}: {node.value.id}.{node.attr}")
    assert found == []


def test_same_secret_compares_signing_keys_however_spelled() -> None:
    """Two workspaces sharing a signing key would accept each other's deliveries: `etl serve` refuses it."""
    raw = webhooks.new_standard_secret(b"shared-key")
    plain = raw.removeprefix("whsec_")
    other = webhooks.new_standard_secret(b"other-key")
    assert same_secret([raw], [plain.rstrip("=")])  # whsec_ or not, padded or not: one key
    assert same_secret([other, raw], [plain])
    assert not same_secret([raw], [other])
    assert not same_secret([], [raw])
