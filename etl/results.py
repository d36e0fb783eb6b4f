"""What the API answered for one call id: the domain value the policy and the store act on.

:mod:`etl.api` produces a :class:`FetchResult` per id (after in-run retries);
:mod:`etl.policy` turns it into a queue update and :mod:`etl.store` writes it.
It lives here, not in the HTTP client, so those pure modules need no HTTP.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from etl.schema import SummaryData

Kind = Literal["summary", "not_found", "invalid", "transient", "rejected"]


@dataclass(frozen=True, slots=True)
class FetchResult:
    """What the API answered for one id, after in-run retries.

    kind: ``summary`` (a valid 200; see ``summary.status``), ``not_found``
    (404), ``invalid`` (400), ``transient`` (retries exhausted; reschedule),
    ``rejected`` (a permanent problem with this id's answer, e.g. too large).
    """

    call_id: str
    kind: Kind
    http_status: int | None
    tries: int
    latency_ms: float
    summary: SummaryData | None = None
    raw_json: str | None = None
    content_hash: str | None = None
    error: str | None = None
    retry_after: float | None = None

    @property
    def api_status(self) -> str:
        """Short text for ``summary_queue.last_api_status``."""
        if self.summary is not None:
            return self.summary.status
        if self.http_status is not None:
            return f"http {self.http_status}"
        return "no response"
