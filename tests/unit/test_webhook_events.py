"""Reading both envelopes (issue 18 item 9): what a delivery is about and what it carries (pure)."""

from __future__ import annotations

import pytest

from etl.api._dated import dated_call_as_v1
from etl.testing import webhooks
from etl.testing._workspace import ApiClock, Workspace
from etl.webhooks.events import is_sample_id, parse_event


def body(doc: dict[str, object]) -> bytes:
    return webhooks.body_bytes(doc)


def a_call(call_id: str = "ACev1") -> dict[str, object]:
    return Workspace(ApiClock()).synth_call(call_id).to_json()


def test_dated_call_completed_is_read_as_a_call() -> None:
    call = a_call()
    event = parse_event(body(webhooks.dated_call_completed(call, event_id="EVc1")))
    assert (event.action, event.call_id, event.envelope, event.type) == ("call_completed", "ACev1", "dated",
                                                                       "call.completed")
    # The call-row step sees v1 names; the raw object stays as sent.
    assert event.call is not None and event.call["userId"] == call["userId"]
    assert event.call["participants"] == call["participants"]
    assert event.payload == webhooks.dated_call(call)
    assert event.summary is None


def test_dated_summary_carries_the_whole_summary() -> None:
    doc = webhooks.dated_summary_completed("ACev2")
    event = parse_event(body(doc))
    assert (event.action, event.call_id, event.envelope) == ("summary_completed", "ACev2", "dated")
    resource = doc["data"]["resource"]  # type: ignore[index]
    assert event.summary == {**resource, "callId": "ACev2"}


def test_legacy_summary_carries_none_and_is_fetched() -> None:
    event = parse_event(body(webhooks.summary_completed("ACev3")))
    assert (event.action, event.call_id, event.envelope, event.summary) == (
        "summary_completed", "ACev3", "legacy", None)


def test_dated_summary_nested_in_a_call_and_call_id_from_context() -> None:
    nested = webhooks.dated_event("call.summary.completed", {"id": "ACev4", "summary": {"status": "in-progress"}})
    event = parse_event(body(nested))
    assert event.call_id == "ACev4" and event.summary == {"status": "in-progress", "summary": None,
                                                          "nextSteps": None, "callId": "ACev4"}
    in_context = webhooks.dated_event("call.summary.completed", {"status": "completed"},
                                      context={"call": {"id": "ACev5"}})
    assert parse_event(body(in_context)).call_id == "ACev5"


def test_transcript_event_names_its_call() -> None:
    event = parse_event(body(webhooks.dated_transcript_completed("ACev6")))
    assert (event.action, event.call_id, event.type) == ("transcript_completed", "ACev6",
                                                         "call.transcript.completed")


@pytest.mark.parametrize("resource", [{}, {"callId": "not-a-call"}, {"callId": 5}, {"callId": "AC\n1"}])
def test_summary_without_a_valid_call_id_is_ignored(resource: dict[str, object]) -> None:
    event = parse_event(body(webhooks.dated_event("call.summary.completed", resource)))
    assert (event.action, event.call_id) == ("ignore", None)
    assert event.note == "call.summary.completed without a valid callId"


def test_the_envelope_is_told_by_api_version_or_resource() -> None:
    assert parse_event(body({"type": "x", "apiVersion": "2026-03-30", "data": {}})).envelope == "dated"
    assert parse_event(body({"type": "x", "data": {"resource": {}}})).envelope == "dated"
    assert parse_event(body({"type": "x", "apiVersion": "v4", "data": {"object": {}}})).envelope == "legacy"
    # A legacy body with its object under data.resource is read, but carries no summary to store.
    legacy = parse_event(body(webhooks.summary_completed("ACev9", shape="resource")))
    assert (legacy.envelope, legacy.call_id, legacy.summary) == ("legacy", "ACev9", None)


def test_a_malformed_dated_call_keeps_its_shape_for_the_validation_to_refuse() -> None:
    odd = {"id": "ACev7", "participants": [{"phoneNumber": "+15555550100"}, "+15555550101"], "duration": "long"}
    own = dated_call_as_v1({"id": "ACev8", "participants": [{"phoneNumber": None, "actorId": "US1"},
                                                             {"phoneNumber": "+15555550100"}]})
    assert own["participants"] == ["+15555550100"]
    assert dated_call_as_v1(odd) == odd  # mixed participants: left as sent
    event = parse_event(body(webhooks.dated_event("call.completed", odd)))
    assert (event.action, event.call_id) == ("call_completed", "ACev7")


# --- Quo's test events (POST /webhooks/{id}/events/test): its canonical sample, recorded and ignored ---


@pytest.mark.parametrize("event_type", ["call.completed", "call.summary.completed", "call.transcript.completed",
                                        "contact.updated", "contact.deleted"])
def test_a_test_event_about_quos_sample_is_ignored(event_type: str) -> None:
    event = parse_event(body(webhooks.sample_dated_event(event_type)))
    sample = "CTsampleContact01234" if event_type.startswith("contact.") else webhooks.SAMPLE_CALL_ID
    assert (event.action, event.type, event.contact_id) == ("ignore", event_type, None)
    assert event.call_id == (None if event_type.startswith("contact.") else sample)
    assert event.note == f"test event: {event_type} about Quo's sample {sample}; recorded, not applied"
    assert event.event_key is not None  # recorded under its event id: `etl webhooks migrate` looks for it


def test_quos_sample_ids_and_only_those_are_test_ids() -> None:
    assert webhooks.SAMPLE_CALL_ID == "ACsampleactivity0000000000000000"  # Quo's reference sample
    assert [is_sample_id(i) for i in ("ACsampleactivity0000000000000000", "CTsampleContact01234",
                                      "PNsamplephonenumber000000000000", "USsampleus")] == [True] * 4
    assert [is_sample_id(i) for i in ("ACsampl3", "ACSampleactivity", "ACxsample", "AC0sample", "sample",
                                      "ACev1")] == [False] * 6
    # A real call whose id merely contains the word is a call.
    assert parse_event(body(webhooks.dated_transcript_completed("ACnotsample1"))).action == "transcript_completed"
