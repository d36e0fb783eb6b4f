"""The transcript queries of docs/schema.md, checked for their exact answers on every database.

Same approach as tests/integration/test_bi_calls.py: every ```sql block after
a ``<!-- transcript-query: name -->`` line runs exactly as written (a DBAPI
cursor, like a BI tool) against data loaded through the real path (a sync
with transcripts on against the simulated API); the expected answers are
computed here from what the API served, not from the database.
"""

from __future__ import annotations

import datetime as dt
import re
from collections import defaultdict
from decimal import ROUND_HALF_UP, Decimal
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy.engine import Engine

from etl import demo, store
from etl.config import Backoff
from etl.testing import FakeOpenPhone
from tests.support.db import raw_rows, run

SCHEMA_DOC = Path(__file__).resolve().parents[2] / "docs" / "schema.md"
_QUERY_RE = re.compile(r"^<!-- transcript-query: ([a-z0-9-]+) -->\n```sql\n(.*?)\n```$", re.M | re.S)


pytestmark = pytest.mark.usefixtures("quiet_logs")


def documented_queries() -> dict[str, str]:
    text = SCHEMA_DOC.read_text(encoding="utf-8")
    found = _QUERY_RE.findall(text)
    assert len(dict(found)) == len(found), "two documented queries share a name"
    assert text.count("<!-- transcript-query:") == len(found)
    return dict(found)


def ms(value: float) -> float:
    """Rounded to the millisecond, half up, as ROUND(CAST(x AS DECIMAL(12, 3)), 3) does."""
    return float(Decimal(repr(value)).quantize(Decimal("0.001"), rounding=ROUND_HALF_UP))


@pytest.fixture
def loaded(engine: Engine, settings, fake: FakeOpenPhone) -> dict[str, Any]:
    """A workspace's transcripts synced through the real path; what the API served, per call."""
    ws = fake.workspace
    ws.generate(phone_numbers=2, conversations=2, calls=4, days=20)
    ids = sorted(ws.calls)
    with engine.begin() as conn:
        store.enqueue_ids(conn, ids)
    stats = run(engine, settings.replace(transcripts=True, backoff=Backoff(not_found_window=0)), fake)
    assert stats.errors == 0
    served = {}
    for call_id in ids:
        data = fake.transcript_v1(call_id)
        assert data is not None
        if data["dialogue"]:
            served[call_id] = (ws.calls[call_id], data["dialogue"])
    assert len(served) >= 8
    return served


def side(line: dict[str, Any]) -> str:
    return "external" if line["userId"] is None else "user"


def test_every_documented_query_is_tested():
    assert sorted(documented_queries()) == sorted(EXPECTED)


def expected_talk_time_per_call(served: dict[str, Any]) -> list[tuple[Any, ...]]:
    out = []
    for call_id in sorted(served):
        per: dict[str, list[float]] = defaultdict(list)
        for line in served[call_id][1]:
            per[side(line)].append(line["end"] - line["start"])
        out += [(call_id, s, ms(sum(v)), len(v)) for s, v in sorted(per.items())]
    return out


def expected_talk_time_per_user_per_week(served: dict[str, Any]) -> list[tuple[Any, ...]]:
    sums: dict[tuple[str, str], list[Any]] = defaultdict(lambda: [0.0, 0.0, set()])
    for call_id, (call, lines) in served.items():
        created = call.created_at.date()
        week = (created - dt.timedelta(days=created.weekday())).isoformat()
        entry = sums[(week, call.user_id)]
        for line in lines:
            entry[0 if side(line) == "user" else 1] += line["end"] - line["start"]
        entry[2].add(call_id)
    return [(week, user, ms(u), ms(e), len(calls)) for (week, user), (u, e, calls) in sorted(sums.items())]


def expected_one_sided(served: dict[str, Any]) -> list[tuple[Any, ...]]:
    one_sided = 0
    for _call, lines in served.values():
        user = sum(line["end"] - line["start"] for line in lines if side(line) == "user")
        external = sum(line["end"] - line["start"] for line in lines if side(line) == "external")
        total = sum(line["end"] - line["start"] for line in lines)
        one_sided += user > 0.7 * total or external > 0.7 * total
    percent = float(Decimal(100 * one_sided / len(served)).quantize(Decimal("0.1"), rounding=ROUND_HALF_UP))
    return [(len(served), one_sided, percent)]


def expected_mentions(served: dict[str, Any]) -> list[tuple[Any, ...]]:
    counts = {call_id: sum("acme" in line["content"].lower() for line in lines)
              for call_id, (_call, lines) in served.items()}
    return [(call_id, n) for call_id, n in sorted(counts.items()) if n]


EXPECTED = {
    "talk-time-per-call": expected_talk_time_per_call,
    "talk-time-per-user-per-week": expected_talk_time_per_user_per_week,
    "one-sided-calls": expected_one_sided,
    "calls-mentioning-a-word": expected_mentions,
}


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_documented_transcript_queries_give_the_exact_answers(engine, loaded, name):
    got = raw_rows(engine, documented_queries()[name])
    want = EXPECTED[name](loaded)
    assert want, f"{name}: the fixture data gives this query nothing to answer"
    assert got == want


def test_the_demo_shows_the_documented_talk_time_query():
    documented = documented_queries()["talk-time-per-call"]
    assert demo.TALK_TIME_QUERY.strip() == documented.strip()
