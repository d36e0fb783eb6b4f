"""Fault rules of the simulated API: what goes wrong, how often, reproducibly.

``Faults`` holds the probabilities of injected failures (429 with or without
``Retry-After``, 500, dropped connections, hangs, truncated, garbage and
schema-violating bodies); ``Quirks`` holds the list and timing oddities of a
real workspace (a page repeating the previous page's last item, an empty page
with a next token, a call listed twice, a summary answering 404 for a while
after its call ended). ``draw_fault`` decides one request's fault from (fault
seed, key, n-th request for that key) only, so a failing run replays
identically whatever the concurrency order.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

from etl.testing._data import rng_for

DROP, HANG = "drop", "hang"

# Every endpoint of the simulated API, as named in statistics and Faults.endpoints.
ENDPOINTS = ("call-summaries", "calls", "call", "conversations", "phone-numbers", "webhooks", "call-transcripts",
             "transcripts", "dated-calls", "dated-call", "users", "user", "contacts", "contact", "dated-users",
             "dated-user", "dated-phone-numbers", "dated-contact")


@dataclass
class Faults:
    """Probabilities of injected faults, per request that reaches a resource.

    One draw decides at most one fault, in field order; if the probabilities
    add up to more than 1 the later ones are squeezed out. ``max_per_id``
    bounds the faults per resource (a call id, a call, a list query);
    ``endpoints`` limits faults to some endpoints (None: all of them).
    """

    seed: int = 0
    error_500: float = 0.0
    rate_429: float = 0.0
    retry_after: str | None = "1"
    drop: float = 0.0
    hang: float = 0.0
    hang_seconds: float = 5.0
    truncated: float = 0.0
    garbage: float = 0.0
    schema_violation: float = 0.0
    max_per_id: int | None = 3
    endpoints: frozenset[str] | None = None

    def any(self) -> bool:
        return any(p > 0 for _, p in self.table())

    def table(self) -> tuple[tuple[str, float], ...]:
        return (
            ("500", self.error_500),
            ("429", self.rate_429),
            (DROP, self.drop),
            (HANG, self.hang),
            ("truncated", self.truncated),
            ("garbage", self.garbage),
            ("schema_violation", self.schema_violation),
        )


@dataclass
class Quirks:
    """Oddities of real list pages and summary timing (all off by default).

    * ``repeat_item``: every page after the first starts with the last item of
      the page before it (the page still holds at most ``maxResults`` items);
    * ``empty_page``: the first page's next token leads to an empty page that
      has a next token of its own;
    * ``listed_twice``: these call ids appear twice in a call listing;
    * ``summary_pending_seconds``: a workspace call's summary answers 404
      ("not generated yet") until this long after the call completed, on the
      fake's clock, then 200;
    * ``contacts_need_external_ids``: ``GET /v1/contacts`` without ``externalIds``
      answers 400 naming it (a workspace whose contacts cannot be listed).
    """

    repeat_item: bool = False
    empty_page: bool = False
    listed_twice: frozenset[str] = field(default_factory=frozenset)
    summary_pending_seconds: float = 0.0
    contacts_need_external_ids: bool = False


def draw_fault(faults: Faults, key: str, nth: int) -> tuple[str, random.Random] | None:
    """The fault for the nth request of ``key`` (a kind from ``Faults.table``), or None.

    Depends only on (seed, key, nth): the same requests for a resource get the
    same faults however requests for other resources interleave. The caller
    applies ``max_per_id``, which needs its own count of faults injected.
    """
    rng = rng_for("fault", faults.seed, key, nth)
    draw = rng.random()
    for name, p in faults.table():
        if draw < p:
            return name, rng
        draw -= p
    return None
