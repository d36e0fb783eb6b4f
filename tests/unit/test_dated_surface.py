"""The dated API (2026-03-30) without a database: its models, normalising, the policy's `absent`, the client.

Pure parts are checked on literal payloads shaped like docs/api/calls-2026-03-30.md;
the client talks to the simulator in process (its transport).
"""

from __future__ import annotations

import hashlib
import json
import random
from datetime import datetime
from typing import Any

import httpx
import pytest
from click.testing import CliRunner

from etl.api import OpenPhoneClient, dated_answer
from etl.api._dated import call_of
from etl.cli import cli
from etl.clock import SYSTEM
from etl.config import Settings
from etl.errors import EtlError, UsageError
from etl.normalize import normalize, normalize_call
from etl.policy import ClaimedItem, decide
from etl.results import ApiResult, SummaryAnswer
from etl.schema import DatedCall
from etl.testing import FakeOpenPhone

NOW = datetime(2026, 12, 1, 12, 0)
KEY = "test-key-0123456789"
CALL: dict[str, Any] = {
    "id": "ACgroup1", "phoneNumberId": "PNline1", "actorId": "SYUaiagent1", "direction": "incoming",
    "status": "completed",
    "participants": [
        {"phoneNumber": "+15555550100", "actorId": "SYUaiagent1"},
        {"phoneNumber": "+15555550100", "actorId": "USbob"},
        {"phoneNumber": "+15555550123", "actorId": None},
        {"phoneNumber": "anonymous", "actorId": None},
    ],
    "answeredAt": "2026-11-30T10:00:05Z", "answeredBy": "SYUaiagent1", "initiatedBy": None,
    "completedAt": "2026-11-30T10:03:05Z", "createdAt": "2026-11-30T10:00:00Z", "updatedAt": "2026-11-30T10:03:05Z",
    "callRoute": "phone-menu", "duration": 180, "forwardedFrom": None, "forwardedTo": None, "aiHandled": "ai-agent",
    "recordingIds": ["CR1"], "someFutureField": {"nested": True},
    "summary": {
        "status": "completed", "type": "agent", "summary": ["Booked a visit."], "nextSteps": None,
        "jobs": [{"icon": "📋", "name": "Booking", "result": {"data": [
            {"name": "visitors", "value": 2}, {"name": "confirmed", "value": True}]}}],
        "title": "Booking request", "language": "en",
    },
    "voicemail": {"id": "VM1", "status": "completed", "duration": 12, "recordingUrl": "https://x.test/vm1.mp3",
                  "transcript": "Call me\u0000 back", "sentiment": "neutral"},
}


def call_model(raw: dict[str, Any] = CALL) -> DatedCall:
    return DatedCall.model_validate(raw)


def test_a_dated_call_normalises_every_party_its_actor_route_and_voicemail():
    answer = dated_answer(call_model(), CALL)
    assert answer.call_json is not None
    assert answer.call is not None
    rows = normalize_call(answer.call, answer.call_json, NOW)
    parent = rows.parent
    assert (parent["actor_id"], parent["call_route"], parent["ai_handled"]) == ("SYUaiagent1", "phone-menu",
                                                                                 "ai-agent")
    assert parent["user_id"] is None  # the actor is not a user
    assert parent["participant_count"] == 4
    assert [(p["number"], p["actor_id"], p["is_own_number"], p["is_e164"]) for p in rows.participants] == [
        ("+15555550100", "SYUaiagent1", True, True),
        ("+15555550100", "USbob", True, True),
        ("+15555550123", None, False, True),
        ("anonymous", None, False, False),
    ]
    assert rows.voicemails == [{"call_id": "ACgroup1", "voicemail_id": "VM1", "status": "completed",
                                "duration_seconds": 12, "recording_url": "https://x.test/vm1.mp3",
                                "transcript": "Call me\ufffd back"}]
    assert json.loads(parent["raw_json"]) == {k: v for k, v in CALL.items() if k != "summary"}


def test_a_users_call_fills_user_id_from_its_actor_and_a_call_without_voicemail_has_none():
    raw = {**CALL, "actorId": "USbob", "aiHandled": None, "voicemail": None}
    rows = normalize_call(call_of(call_model(raw)), json.dumps(raw), NOW)
    assert (rows.parent["user_id"], rows.parent["ai_handled"], rows.voicemails) == ("USbob", None, [])


def test_the_dated_summary_is_stored_as_its_own_object_with_type_and_title():
    answer = dated_answer(call_model(), CALL)
    summary_json = json.dumps(CALL["summary"], separators=(",", ":"), ensure_ascii=False)
    assert (answer.raw_json, answer.content_hash, answer.absent_is_final) == (
        summary_json, hashlib.sha256(summary_json.encode()).hexdigest(), True)
    rows = normalize(answer.summary, answer.raw_json, answer.content_hash, NOW)
    assert {k: rows.parent[k] for k in ("call_id", "status", "type", "title", "next_step_count", "job_count")} == {
        "call_id": "ACgroup1", "status": "completed", "type": "agent", "title": "Booking request",
        "next_step_count": 0, "job_count": 1}
    assert [(f["name"], f["value_type"], f["value_number"], f["value_boolean"]) for f in rows.job_fields] == [
        ("visitors", "number", 2.0, None), ("confirmed", "boolean", None, True)]


def test_a_dated_summary_takes_its_call_id_from_its_call():
    answer = dated_answer(call_model(), CALL)
    assert (answer.call_id, answer.summary.call_id) == ("ACgroup1", "ACgroup1")
    assert normalize(answer.summary, "{}", "0" * 64, NOW).parent["call_id"] == "ACgroup1"


def test_unknown_values_are_stored_but_a_job_field_value_is_still_strict():
    raw = {**CALL, "callRoute": "ivr-v2", "summary": {**CALL["summary"], "type": "hybrid"}}
    assert dated_answer(call_model(raw), raw).summary.type == "hybrid"
    bad = {**CALL, "summary": {**CALL["summary"], "jobs": [{"icon": "x", "name": "n", "result": {"data": [
        {"name": "f", "value": {"not": "a scalar"}}]}}]}}
    with pytest.raises(ValueError, match="value"):
        call_model(bad)


def item() -> ClaimedItem:
    return ClaimedItem(call_id="ACgroup1", attempts=2, consecutive_errors=1, incomplete_since=None,
                       next_attempt_at=NOW)


def answered(status: str, *, final: bool) -> ApiResult[SummaryAnswer]:
    summary = call_model({**CALL, "summary": {"status": status, "summary": None, "nextSteps": None}}).summary
    assert summary is not None
    answer = SummaryAnswer(call_id="ACgroup1", summary=summary, raw_json="{}", content_hash="0" * 64,
                           absent_is_final=final)
    return ApiResult(what="GET /calls/ACgroup1", kind="ok", http_status=200, tries=1, latency_ms=1.0, data=answer)


def test_absent_on_the_dated_surface_ends_the_item_at_once():
    update = decide(item(), answered("absent", final=True), NOW, Settings().backoff, random.Random(0))
    assert (update.state, update.outcome, update.attempts, update.finished_at, update.last_error) == (
        "absent", "failed", 3, NOW, "the API reports that no summary will be generated for this call")


def test_absent_on_v1_is_still_asked_again():
    update = decide(item(), answered("absent", final=False), NOW, Settings().backoff, random.Random(0))
    assert (update.state, update.outcome, update.incomplete_since) == ("pending", "rescheduled", NOW)


def test_an_unknown_api_version_is_a_usage_error_everywhere():
    # The library names the parameter, the CLI the flag.
    message = "unknown API version '2026-04-01': use v1 or 2026-03-30 (--api-version, OPENPHONE_API_VERSION)"
    with pytest.raises(UsageError) as raised:
        Settings(api_version="2026-04-01")
    assert str(raised.value) == message.replace("--api-version", "api_version")
    runner = CliRunner()
    for args, env in ((["sync", "--api-version", "2026-04-01"], {}),
                      (["discover", "--since", "2026-11-01"], {"OPENPHONE_API_VERSION": "2026-04-01"})):
        result = runner.invoke(cli, args, env={"OPENPHONE_API_KEY": KEY, "ETL_DATABASE_URL": "sqlite://", **env})
        assert (result.exit_code, result.output.strip().splitlines()[-1]) == (2, f"Error: {message}")


# --- the client against the simulator ------------------------------------------------


def client(fake: FakeOpenPhone, version: str = "2026-03-30", **kw: Any) -> OpenPhoneClient:
    settings = Settings(api_key=KEY, base_url="http://fake.test", rate=0, retry_attempts=2, retry_initial=0.001,
                        retry_max=0.001, api_version=version, **kw)
    return OpenPhoneClient(settings, clock=SYSTEM, transport=fake.transport())


def test_a_summary_on_the_dated_surface_is_one_request_with_the_version_header_and_its_call():
    fake = FakeOpenPhone(api_key=KEY)
    result = client(fake).fetch_summary("AChand1")
    assert fake.request_log == [("GET", "/calls/AChand1", "2026-03-30")]
    assert result.kind == "ok" and result.data is not None
    assert result.data.call is not None and result.data.call.id == "AChand1"
    assert result.data.status == "completed" and result.api_status == "completed"
    assert client(fake).fetches_call_separately is False
    assert client(fake, "v1").fetches_call_separately is True
    assert client(fake, "v1", fetch_calls=False).fetches_call_separately is False


def test_the_simulator_refuses_a_dated_request_without_the_version_header():
    fake = FakeOpenPhone(api_key=KEY)
    http = httpx.Client(transport=fake.transport(), base_url="http://fake.test", headers={"Authorization": KEY})
    refused = http.get("/calls/AC1")
    assert refused.status_code == 400
    assert refused.json()["message"] == "the Quo-Api-Version header is required (2026-03-30); got None"


def test_the_v1_surface_cannot_list_the_workspace():
    with pytest.raises(EtlError, match="API version v1 cannot list the workspace's calls"):
        client(FakeOpenPhone(api_key=KEY), "v1").list_workspace_calls(created_gte=NOW)


def test_a_schema_violation_on_the_dated_surface_is_transient():
    from etl.testing import Faults

    fake = FakeOpenPhone(api_key=KEY, faults=Faults(schema_violation=1.0, max_per_id=5))
    result = client(fake).fetch_summary("AC1")
    assert (result.kind, result.http_status, result.tries) == ("transient", 200, 2)
    assert result.error is not None and result.error.startswith("200 with a body that violates the schema")
