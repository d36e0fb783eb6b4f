"""normalize(): one validated summary -> the exact rows of docs/contract.md's tables (pure, no I/O).

Covers positions and order, null vs empty lists, every job value type
(booleans stay booleans, 1/0 stay numbers), text that databases cannot hold
(NUL, lone surrogates -> U+FFFD) and very large strings.
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

from etl.api._v1 import summary_of
from etl.normalize import REPLACEMENT, clean_text, normalize, typed_value
from etl.results import Summary
from etl.schema import SummaryData, SummaryEnvelope

NOW = datetime(2026, 1, 2, 3, 4, 5, 123456)
HASH = "ab" * 32


def validated(data: dict[str, Any]) -> Summary:
    """Through the same JSON validation and mapping as the API client's v1 adapter."""
    return summary_of(SummaryEnvelope.model_validate_json(json.dumps({"data": data})).data)


def parent(call_id: str, status: str, summary_text: str | None, lines: int, steps: int, jobs: int,
           raw: str) -> dict[str, Any]:
    return {
        "call_id": call_id, "status": status, "summary_text": summary_text, "line_count": lines,
        "next_step_count": steps, "job_count": jobs, "type": None, "title": None, "content_hash": HASH, "raw_json": raw,
        "first_synced_at": NOW, "last_synced_at": NOW,
    }


def test_full_payload_exact_rows():
    payload = {
        "callId": "ACfull1",
        "status": "completed",
        "summary": ["Zoë confirmed the address in Zürich.", "", "They need SSO 👍", "李雷 called."],
        "nextSteps": ["Send the pricing sheet.", "Ship 🚀"],
        "jobs": [
            {"icon": "📋", "name": "Lead qualification", "result": {"data": [
                {"name": "Qualified", "value": True},
                {"name": "Follow-up needed", "value": False},
                {"name": "Callback requested", "value": 1},
                {"name": "Declined", "value": 0},
                {"name": "Budget (USD)", "value": 1234.5},
                {"name": "Hours", "value": 2.0},
                {"name": "Contact", "value": "José Núñez"},
                {"name": "Notes", "value": ""},
                {"name": "Looks numeric", "value": "1"},
            ]}},
            {"icon": "📞", "name": "Call outcome", "result": {"data": []}},
        ],
    }
    raw = json.dumps({"data": payload}, ensure_ascii=False)
    rows = normalize(validated(payload), raw, HASH, NOW)
    assert rows.parent == parent(
        "ACfull1", "completed",
        "Zoë confirmed the address in Zürich.\n\nThey need SSO 👍\n李雷 called.", 4, 2, 2, raw,
    )
    assert rows.lines == [
        {"call_id": "ACfull1", "position": 0, "text": "Zoë confirmed the address in Zürich."},
        {"call_id": "ACfull1", "position": 1, "text": ""},
        {"call_id": "ACfull1", "position": 2, "text": "They need SSO 👍"},
        {"call_id": "ACfull1", "position": 3, "text": "李雷 called."},
    ]
    assert rows.next_steps == [
        {"call_id": "ACfull1", "position": 0, "text": "Send the pricing sheet."},
        {"call_id": "ACfull1", "position": 1, "text": "Ship 🚀"},
    ]
    assert rows.jobs == [
        {"call_id": "ACfull1", "job_position": 0, "name": "Lead qualification", "icon": "📋"},
        {"call_id": "ACfull1", "job_position": 1, "name": "Call outcome", "icon": "📞"},
    ]

    def fld(pos: int, name: str, vtype: str, text: Any = None, number: Any = None,
            boolean: Any = None) -> dict[str, Any]:
        return {"call_id": "ACfull1", "job_position": 0, "field_position": pos, "name": name,
                "value_type": vtype, "value_text": text, "value_number": number, "value_boolean": boolean}

    assert rows.job_fields == [
        fld(0, "Qualified", "boolean", boolean=True),
        fld(1, "Follow-up needed", "boolean", boolean=False),
        fld(2, "Callback requested", "number", number=1.0),
        fld(3, "Declined", "number", number=0.0),
        fld(4, "Budget (USD)", "number", number=1234.5),
        fld(5, "Hours", "number", number=2.0),
        fld(6, "Contact", "string", text="José Núñez"),
        fld(7, "Notes", "string", text=""),
        fld(8, "Looks numeric", "string", text="1"),
    ]
    # Python's True == 1: check the types too, a boolean must never turn into a number.
    types = [(type(f["value_number"]), type(f["value_boolean"])) for f in rows.job_fields[:4]]
    assert types == [(type(None), bool), (type(None), bool), (float, type(None)), (float, type(None))]


def test_null_lists_give_no_child_rows_and_null_summary_text():
    payload = {"callId": "ACnull", "status": "in-progress", "summary": None, "nextSteps": None, "jobs": None}
    rows = normalize(validated(payload), "{}", HASH, NOW)
    assert rows.parent == parent("ACnull", "in-progress", None, 0, 0, 0, "{}")
    assert (rows.lines, rows.next_steps, rows.jobs, rows.job_fields) == ([], [], [], [])


def test_missing_jobs_key_is_like_null():
    payload = {"callId": "ACnojobs", "status": "absent", "summary": None, "nextSteps": None}
    rows = normalize(validated(payload), "{}", HASH, NOW)
    assert rows.parent == parent("ACnojobs", "absent", None, 0, 0, 0, "{}")
    assert rows.jobs == []


def test_empty_lists_give_no_child_rows_and_empty_summary_text():
    payload = {"callId": "ACempty", "status": "completed", "summary": [], "nextSteps": [], "jobs": []}
    rows = normalize(validated(payload), "{}", HASH, NOW)
    assert rows.parent == parent("ACempty", "completed", "", 0, 0, 0, "{}")
    assert (rows.lines, rows.next_steps, rows.jobs, rows.job_fields) == ([], [], [], [])


def test_typed_value_every_type():
    assert typed_value(True) == ("boolean", None, None, True)
    assert typed_value(False) == ("boolean", None, None, False)
    assert typed_value(1) == ("number", None, 1.0, None)
    assert typed_value(0) == ("number", None, 0.0, None)
    assert typed_value(-7) == ("number", None, -7.0, None)
    assert typed_value(0.1) == ("number", None, 0.1, None)
    assert typed_value(1e300) == ("number", None, 1e300, None)
    assert typed_value("true") == ("string", "true", None, None)
    assert typed_value("") == ("string", "", None, None)
    assert typed_value("a\x00b") == ("string", "a\ufffdb", None, None)


def test_json_true_is_not_validated_as_int():
    body = b'{"data":{"callId":"ACb","status":"completed","summary":[],"nextSteps":[],' \
           b'"jobs":[{"icon":"i","name":"n","result":{"data":[{"name":"t","value":true},' \
           b'{"name":"one","value":1},{"name":"f","value":1.0}]}}]}}'
    data = summary_of(SummaryEnvelope.model_validate_json(body).data)
    rows = normalize(data, body.decode(), HASH, NOW)
    assert [(f["value_type"], f["value_number"], f["value_boolean"]) for f in rows.job_fields] == [
        ("boolean", None, True), ("number", 1.0, None), ("number", 1.0, None),
    ]


def test_nul_bytes_replaced_everywhere():
    payload = {
        "callId": "ACnul", "status": "completed",
        "summary": ["a\x00b", "\x00"], "nextSteps": ["x\x00"],
        "jobs": [{"icon": "\x00i", "name": "n\x00", "result": {"data": [{"name": "k\x00", "value": "v\x00"}]}}],
    }
    rows = normalize(validated(payload), "raw", HASH, NOW)
    assert rows.parent["summary_text"] == "a\ufffdb\n\ufffd"
    assert [r["text"] for r in rows.lines] == ["a\ufffdb", "\ufffd"]
    assert [r["text"] for r in rows.next_steps] == ["x\ufffd"]
    assert (rows.jobs[0]["icon"], rows.jobs[0]["name"]) == ("\ufffdi", "n\ufffd")
    assert (rows.job_fields[0]["name"], rows.job_fields[0]["value_text"]) == ("k\ufffd", "v\ufffd")
    # raw_json is stored as received: nothing is lost.
    assert rows.parent["raw_json"] == "raw"


def lone_surrogate_payload() -> Summary:
    # Lone surrogates cannot come through pydantic's JSON parser; built in Python instead.
    return summary_of(SummaryData.model_validate({
        "callId": "ACsur", "status": "completed",
        "summary": ["a\ud800b", "\udc00", "ok 😀"], "nextSteps": ["Zoë \udfff"],
        "jobs": [{"icon": "\ud83d", "name": "n", "result": {"data": [{"name": "é\udc80", "value": "\ud800"}]}}],
    }))


def all_texts(rows: Any) -> list[str]:
    return ([rows.parent["summary_text"]] + [r["text"] for r in rows.lines + rows.next_steps]
            + [j[k] for j in rows.jobs for k in ("icon", "name")]
            + [f[k] for f in rows.job_fields for k in ("name", "value_text")])


def test_lone_surrogates_never_reach_the_database():
    rows = normalize(lone_surrogate_payload(), "raw", HASH, NOW)
    for text in all_texts(rows):
        text.encode("utf-8")  # raises on any surrogate left behind
    assert rows.lines[2]["text"] == "ok 😀"


def test_each_lone_surrogate_becomes_one_replacement_character():
    rows = normalize(lone_surrogate_payload(), "raw", HASH, NOW)
    assert [r["text"] for r in rows.lines] == ["a\ufffdb", "\ufffd", "ok 😀"]
    assert rows.parent["summary_text"] == "a\ufffdb\n\ufffd\nok 😀"
    assert rows.next_steps[0]["text"] == "Zoë \ufffd"
    assert rows.jobs[0]["icon"] == "\ufffd"
    assert (rows.job_fields[0]["name"], rows.job_fields[0]["value_text"]) == ("é\ufffd", "\ufffd")


def test_clean_text():
    assert clean_text("plain") == "plain"
    assert clean_text("") == ""
    assert clean_text("\x00\x00") == REPLACEMENT * 2
    assert clean_text("a\x00b") == "a\ufffdb"
    assert clean_text("Zürich 😀") == "Zürich 😀"
    assert clean_text("Zürich\x00😀") == "Zürich\ufffd😀"


def test_one_megabyte_string_kept_whole():
    big = "é" * 200_000 + "x" * 600_000 + "😀" * 50_000 + "end"
    assert len(big.encode("utf-8")) > 1_000_000
    payload = {"callId": "ACbig", "status": "completed", "summary": [big], "nextSteps": [big],
               "jobs": [{"icon": "i", "name": "n", "result": {"data": [{"name": "v", "value": big}]}}]}
    rows = normalize(validated(payload), "raw", HASH, NOW)
    assert rows.parent["summary_text"] == big
    assert rows.lines[0]["text"] == big
    assert rows.next_steps[0]["text"] == big
    assert rows.job_fields[0]["value_text"] == big
