"""Sample call summaries, deterministic from the call id, and the simulator's id and time helpers.

The summary generator of the simulated API: ``sample_summary(call_id)`` gives
the ``data`` object the real ``GET /v1/call-summaries/{callId}`` would return,
always the same for the same id, with the variety a loader must cope with
(Unicode, emoji, 0/1 ints next to booleans, whole floats, empty strings).
"""

from __future__ import annotations

import datetime as dt
import functools
import hashlib
import json
import random
import re
from collections.abc import Callable

STATUSES = ("absent", "in-progress", "completed", "failed")

# The schema's pattern ^AC(.*)$ is evaluated by a JavaScript engine: "." stops
# at line terminators and "$" matches only at the very end -- unlike Python's
# "$", which also matches before a trailing "\n" and would let "AC1\n" through.
CALL_ID_RE = re.compile("AC[^\n\r\u2028\u2029]*")


def dumps(obj: object) -> bytes:
    """Compact UTF-8 JSON, as the API sends it (not ASCII-escaped)."""
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False).encode()


def iso(when: dt.datetime | None) -> str | None:
    """ISO 8601 in UTC with a ``Z``, as the API writes times (milliseconds only when present)."""
    if when is None:
        return None
    when = when.astimezone(dt.UTC)
    spec = "milliseconds" if when.microsecond else "seconds"
    return when.replace(tzinfo=None).isoformat(timespec=spec) + "Z"


def make_id(prefix: str, *parts: object) -> str:
    """A deterministic API-style id: ``prefix`` and a hash of ``parts``."""
    digest = hashlib.blake2b(":".join(map(str, parts)).encode(), digest_size=16).hexdigest()
    return prefix + digest


def rng_for(*parts: object) -> random.Random:
    """A random generator seeded from ``parts``, identical in every process."""
    # hashlib rather than hash(): str hashes are salted per process.
    digest = hashlib.blake2b(":".join(map(str, parts)).encode(), digest_size=8).digest()
    return random.Random(int.from_bytes(digest, "big"))


_SUMMARY_LINES = (
    "You talked about the weather.",
    "The customer asked about pricing for the Business plan.",
    "Renewal is due next month; they want a multi-year discount.",
    "The caller reported that exports fail on large workspaces.",
    "Zoë confirmed the delivery address in Zürich.",
    "They compared us with two competitors.",
    "The invoice from March was paid twice by mistake.",
    'The customer said the onboarding was "surprisingly easy".',
    "A demo is booked for Thursday at 10:00.",
    "They need SSO before rolling out to 40 seats 👍",
    "Nobody picked up the first transfer; the second one worked.",
    "José will send the signed contract by Friday.",
)
_NEXT_STEPS = (
    "Bring an umbrella.",
    "Send the pricing sheet.",
    "Refund the duplicate March invoice.",
    "Schedule a follow-up call next week.",
    "Open a ticket with engineering about exports.",
    "Share the SSO setup guide.",
    "Ask finance to approve the discount.",
)
_JOBS = (
    ("📋", "Lead qualification"),
    ("📞", "Call outcome"),
    ("💰", "Deal details"),
    ("🛠️", "Support triage"),
)
_FIELDS: tuple[tuple[str, Callable[[random.Random], object]], ...] = (
    ("Qualified", lambda r: r.random() < 0.5),
    ("Follow-up needed", lambda r: r.random() < 0.5),
    # 0/1 ints next to real booleans: a loader must not confuse the two.
    ("Callback requested", lambda r: r.randint(0, 1)),
    ("Lead score", lambda r: r.randint(0, 100)),
    ("Seats", lambda r: r.randint(1, 500)),
    ("Budget (USD)", lambda r: round(r.uniform(100, 50_000), 2)),
    ("Confidence", lambda r: round(r.random(), 3)),
    # Whole floats serialise as "2.0": still a number, not an int-looking string.
    ("Hours estimated", lambda r: r.choice((0.25, 1.5, 2.0, 10.0))),
    ("Sentiment", lambda r: r.choice(("positive", "neutral", "negative", "mixed"))),
    (
        "Contact name",
        lambda r: r.choice(("Zoë Martin", "José Núñez", "Ana O'Neil", "李雷", 'Sam "Sammy" Lee')),
    ),
    ("Notes", lambda r: r.choice(("", "Prefers email 👍", "Call after 5pm", "N/A"))),
)


def sample_summary(call_id: str, status: str = "completed") -> dict[str, object]:
    """The ``data`` object the API would return for ``call_id``.

    Deterministic from a hash of ``call_id``. ``completed`` summaries have 1-4
    summary lines, 0-3 next steps and 0-2 jobs with 1-4 fields whose values mix
    str, int, float and bool. Other statuses have ``summary`` and ``nextSteps``
    null and either no ``jobs`` key or ``jobs`` null (both are valid).
    """
    if status not in STATUSES:
        raise ValueError(f"status must be one of {STATUSES}, not {status!r}")
    rng = rng_for("summary", call_id)
    data: dict[str, object] = {"callId": call_id, "status": status}
    if status != "completed":
        data["summary"] = None
        data["nextSteps"] = None
        if rng.random() < 0.5:
            data["jobs"] = None
        return data
    data["summary"] = rng.sample(_SUMMARY_LINES, rng.randint(1, 4))
    data["nextSteps"] = rng.sample(_NEXT_STEPS, rng.randint(0, 3))
    jobs: list[dict[str, object]] = []
    for icon, name in rng.sample(_JOBS, rng.randint(0, 2)):
        fields = [
            {"name": n, "value": gen(rng)} for n, gen in rng.sample(_FIELDS, rng.randint(1, 4))
        ]
        jobs.append({"icon": icon, "name": name, "result": {"data": fields}})
    data["jobs"] = jobs
    return data


@functools.lru_cache(maxsize=1 << 15)
def sample_body(call_id: str, status: str) -> bytes:
    """``{"data": sample_summary(...)}`` as bytes (cached: bytes are immutable, dicts are not)."""
    return dumps({"data": sample_summary(call_id, status)})
