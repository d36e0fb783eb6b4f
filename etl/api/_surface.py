"""The one interface every API surface's adapter implements (the httpcore model: one pool, one adapter per
protocol), and what the adapters share.

An adapter owns everything that differs between surfaces: paths, headers, how
its lists page, its webhook routes and envelopes, and the mapping from its
wire models (:mod:`etl.schema`) to the canonical types (:mod:`etl.results`,
:mod:`etl.dimensions`).  It sends nothing itself: it hands the client's one
request path (:class:`Sender`) a path, parameters and a parser.
"""

from __future__ import annotations

import hashlib
import json
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, ClassVar, Literal, Protocol, TypeVar

from etl.api._http import Parse, Transient
from etl.dimensions import Contact, Line, Listing, User
from etl.errors import EtlError
from etl.results import ApiResult, Call, Conversation, DialogueLine, Job, JobField, Page, SummaryAnswer, Transcript
from etl.schema import DialogueData
from etl.schema import Job as JobData
from etl.storable import Malformed

M = TypeVar("M")
T = TypeVar("T")

# How discovery finds calls on a surface: walking lines -> conversations -> calls (v1),
# or listing the workspace's calls (GET /calls).
Discovery = Literal["lines", "workspace"]


class Sender(Protocol):
    """The client's one request path, as an adapter sees it."""

    def get(self, path: str, params: dict[str, Any], parse: Parse[M], *, surface: Surface,
            max_wait: float | None = None) -> ApiResult[M]:
        """A GET through the budget, retries and classification."""
        ...

    def monotonic(self) -> float:
        """The client's clock (for time left across pages)."""
        ...


@dataclass(frozen=True, slots=True)
class WebhookSpec:
    """One webhook this job registers on a surface: the creation path and its events."""

    path: str
    events: tuple[str, ...]


class Surface(ABC):
    """One API surface.  Capabilities are attributes; everything else is a method."""

    version: ClassVar[str]
    headers: ClassVar[tuple[tuple[str, str], ...]]
    discovery: ClassVar[Discovery]
    # The summary's answer carries its call (no separate call request).
    call_in_summary: ClassVar[bool]
    # The name of its webhook deliveries' envelope.
    envelope: ClassVar[str]

    # --- one summary, one call ------------------------------------------------------
    @abstractmethod
    def summary_route(self, call_id: str) -> tuple[str, dict[str, Any]]:
        """The path and parameters of a call's summary."""

    @abstractmethod
    def read_summary(self, call_id: str) -> Parse[SummaryAnswer]:
        """A parser of the summary's 200 answer."""

    @abstractmethod
    def call_route(self, call_id: str) -> tuple[str, dict[str, Any]]:
        """The path and parameters of a call."""

    def read_call(self, call_id: str) -> Parse[Call]:
        """A parser of the call's 200 answer (``raw``: the call object)."""
        def read(raw: Any) -> tuple[str, Call, Any]:
            call = self.call_in_answer(raw)
            return call.id, call, raw["data"]

        return about_call(call_id, read)

    @abstractmethod
    def call_in_answer(self, raw: Any) -> Call:
        """The call a call's answer (its JSON) holds, validated and mapped."""

    @abstractmethod
    def transcript(self, sender: Sender, call_id: str, *, max_wait: float | None,
                   page_size: int) -> ApiResult[Transcript]:
        """A call's whole transcript (every page)."""

    # --- call listings (discovery) ----------------------------------------------------
    def line_page(self, sender: Sender, params: dict[str, Any]) -> ApiResult[Page[Line | Malformed]]:
        """One page of the workspace's lines for the lines walk (a line its model refused: a Malformed)."""
        raise self._cannot("walk the workspace's lines")

    def conversation_page(self, sender: Sender, line_id: str, updated_after: datetime | None,
                          params: dict[str, Any], max_results: int) -> ApiResult[Page[Conversation]]:
        raise self._cannot("list conversations")

    def line_call_page(self, sender: Sender, line_id: str, participant: str, created_after: datetime | None,
                       params: dict[str, Any], max_results: int) -> ApiResult[Page[Call | Malformed]]:
        raise self._cannot("list the calls of one conversation")

    def workspace_call_page(self, sender: Sender, *, created_gte: datetime, created_lte: datetime | None,
                            phone_number_id: str | None, params: dict[str, Any],
                            limit: int) -> ApiResult[Page[SummaryAnswer | Call | Malformed]]:
        raise self._cannot("list the workspace's calls")

    # --- users, lines, contacts (docs/api/dimensions.md) -----------------------------------
    @abstractmethod
    def list_users(self, sender: Sender) -> Listing[User]: ...

    @abstractmethod
    def list_lines(self, sender: Sender) -> Listing[Line]: ...

    @abstractmethod
    def list_contacts(self, sender: Sender, updated_since: datetime | None) -> Listing[Contact]: ...

    # --- webhooks ---------------------------------------------------------------------
    @abstractmethod
    def webhook_path(self, path: str) -> str:
        """A management path (``/webhooks…``) on this surface."""

    @abstractmethod
    def webhook_specs(self, events: Sequence[str]) -> tuple[WebhookSpec, ...]:
        """The webhooks that deliver ``events`` on this surface (v1: one per resource)."""

    @abstractmethod
    def webhook_body(self, spec: WebhookSpec, url: str, label: str | None) -> dict[str, Any]:
        """The creation body of ``spec`` for ``url``."""

    def test_event_path(self, webhook_id: str) -> str:
        raise self._cannot("send a test event")

    @abstractmethod
    def event_object(self, data: dict[str, Any]) -> dict[str, Any]:
        """The object a delivery's ``data`` holds in this surface's envelope (``{}`` if none)."""

    @abstractmethod
    def event_call(self, obj: dict[str, Any]) -> dict[str, Any]:
        """A call event's object in the shape :func:`etl.api.webhook_call` reads."""

    @abstractmethod
    def event_summary(self, obj: dict[str, Any], call_id: str) -> dict[str, Any] | None:
        """The whole summary a summary event carries (with ``callId``), to be stored without a request
        when it validates and is completed; None when the envelope carries none (only a signal)."""

    def _cannot(self, what: str) -> EtlError:
        return EtlError(f"API version {self.version} cannot {what}")


# --- what the adapters share -------------------------------------------------------------

def about_call(call_id: str, read: Callable[[Any], tuple[str, T, Any]]) -> Parse[T]:
    """A parser of an answer about one call: ``read(json)`` gives the call id the answer names, its value and
    the JSON to keep; an answer about another call is no answer (transient)."""
    def parse(body: bytes) -> tuple[T, Any]:
        answered, value, raw = read(json.loads(body))
        if answered != call_id:
            raise Transient(f"200 for another call id ({answered[:80]!r})", 200)
        return value, raw

    return parse


def jobs_of(jobs: list[JobData] | None) -> tuple[Job, ...]:
    """A summary's jobs, values exactly as sent."""
    return tuple(Job(j.name, j.icon, tuple(JobField(f.name, f.value) for f in j.result.data)) for j in jobs or ())


def naive_utc(value: datetime | None) -> datetime | None:
    if value is None or value.tzinfo is None:
        return value
    return value.astimezone(UTC).replace(tzinfo=None)


def as_float(value: float | None) -> float | None:
    return None if value is None else float(value)


def dialogue(lines: list[DialogueData] | None) -> tuple[DialogueLine, ...] | None:
    if lines is None:
        return None
    return tuple(DialogueLine(d.content, float(d.start), float(d.end), d.identifier,
                              d.userId if d.userId is not None else d.actorId) for d in lines)


def json_hash(raw: Any) -> str:
    """SHA-256 of the answer's JSON with keys sorted: the same transcript hashes alike whatever the paging."""
    text = json.dumps(raw, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()


def items_of(raw: Any) -> list[Any]:
    """``raw["data"]`` of a list page's JSON, or an empty list."""
    items = raw.get("data") if isinstance(raw, dict) else None
    return items if isinstance(items, list) else []
