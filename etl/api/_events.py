"""Webhook deliveries, read by the surface whose envelope they come in.

Which surface an event comes from is read from the delivery itself (its
``apiVersion``, else its shape), never from the job's settings: a workspace
migrating from the legacy webhooks to a dated one gets both at once.
"""

from __future__ import annotations

from typing import Any

from etl.api._client import CURRENT, LEGACY
from etl.api._dated import is_dated_version
from etl.api._surface import Surface
from etl.api._v1 import call_of, summary_of
from etl.results import Call, Summary
from etl.schema import CallData, SummaryData


def event_surface(doc: dict[str, Any], data: dict[str, Any]) -> Surface:
    """The surface of a delivery: dated for a dated ``apiVersion`` (``YYYY-MM-DD``); without an
    ``apiVersion``, for a ``data.resource`` without ``data.object``.  A legacy version (``v4``) stays
    legacy whatever its ``data`` holds: only a dated payload is trusted to carry the whole summary."""
    version = doc.get("apiVersion")
    if isinstance(version, str):
        return CURRENT if is_dated_version(version) else LEGACY
    return CURRENT if "resource" in data and "object" not in data else LEGACY


def webhook_call(obj: dict[str, Any]) -> Call:
    """A call object a delivery carried (as :meth:`Surface.event_call` shaped it) as the canonical
    :class:`Call`; raises :class:`pydantic.ValidationError` when it does not validate."""
    return call_of(CallData.model_validate(obj))


def webhook_summary(obj: dict[str, Any]) -> Summary:
    """A whole summary a delivery carried (as :meth:`Surface.event_summary` shaped it, with ``callId``) as
    the canonical :class:`Summary`; raises :class:`pydantic.ValidationError` when it does not validate."""
    return summary_of(SummaryData.model_validate(obj))
