"""``etl webhooks register|list|delete``: the API webhooks this job needs.

``register`` creates two webhooks pointing at one URL: ``call.completed``
(``POST /v1/webhooks/calls``) and ``call.summary.completed``
(``POST /v1/webhooks/call-summaries``).  Each answer's ``key`` is that
webhook's signing secret: the command prints them once, for the operator to
store in ``OPENPHONE_WEBHOOK_SECRETS``; they are never logged.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import httpx

from etl.api import OpenPhoneClient
from etl.config import Settings

REGISTRATIONS: tuple[tuple[str, list[str]], ...] = (
    ("calls", ["call.completed"]),
    ("call-summaries", ["call.summary.completed"]),
)


@dataclass(frozen=True)
class Registered:
    id: str
    events: list[str]
    secret: str


def register(settings: Settings, url: str, label: str | None = None, *,
             on_created: Callable[[Registered], None] | None = None,
             transport: httpx.BaseTransport | None = None) -> list[Registered]:
    """Create both webhooks.  ``on_created`` sees each one as soon as it exists, so a
    failure on the second still leaves the first one's secret in the caller's hands."""
    client = OpenPhoneClient(settings, transport=transport)
    try:
        created = []
        for resource, events in REGISTRATIONS:
            data = client.create_webhook(resource, url, events, label)  # type: ignore[arg-type]
            hook = Registered(str(data.get("id", "")), list(data.get("events") or events), str(data.get("key", "")))
            created.append(hook)
            if on_created is not None:
                on_created(hook)
        return created
    finally:
        client.close()


def list_all(settings: Settings, *, transport: httpx.BaseTransport | None = None) -> list[dict[str, Any]]:
    client = OpenPhoneClient(settings, transport=transport)
    try:
        return client.list_webhooks()
    finally:
        client.close()


def delete(settings: Settings, webhook_id: str, *, transport: httpx.BaseTransport | None = None) -> None:
    client = OpenPhoneClient(settings, transport=transport)
    try:
        client.delete_webhook(webhook_id)
    finally:
        client.close()
