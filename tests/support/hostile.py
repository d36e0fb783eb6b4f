"""Hostile but parseable API answers: the simulated API's bodies, rewritten on their way to the client.

:func:`rewriting` wraps :meth:`FakeOpenPhone.transport` (a real httpx transport,
so the client's whole path runs) and hands every 200 body to ``rewrite``,
which returns the body to send instead.  The helpers here rewrite one call in
a body the way the reliability review of issue 25 did.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import httpx

from etl.testing import FakeOpenPhone

Rewrite = Callable[[httpx.Request, bytes], bytes]


def rewriting(fake: FakeOpenPhone, rewrite: Rewrite,
              request: Callable[[httpx.Request], httpx.Request] | None = None) -> httpx.MockTransport:
    """``fake``'s transport with each 200 body rewritten (and each request first, by ``request``)."""
    inner = fake.transport()

    def handle(sent: httpx.Request) -> httpx.Response:
        response = inner.handle_request(sent if request is None else request(sent))
        body = response.read()
        if response.status_code == 200:
            body = rewrite(sent, body)
        headers = {k: v for k, v in response.headers.items() if k.lower() not in ("content-length",
                                                                                  "content-encoding")}
        return httpx.Response(response.status_code, headers=headers, content=body)

    return httpx.MockTransport(handle)


def calls_in(doc: Any) -> list[dict[str, Any]]:
    """The call objects of a body: ``data`` of one call, or each of a page's ``data`` list."""
    data = doc.get("data") if isinstance(doc, dict) else None
    if isinstance(data, list):
        return [c for c in data if isinstance(c, dict) and str(c.get("id", "")).startswith("AC")]
    if isinstance(data, dict) and str(data.get("id", "")).startswith("AC"):
        return [data]
    return []


def edit_calls(ids: set[str], edit: Callable[[dict[str, Any]], None]) -> Rewrite:
    """Apply ``edit`` to every call object with one of ``ids`` in any body (single call or page)."""
    def rewrite(_request: httpx.Request, body: bytes) -> bytes:
        try:
            doc = json.loads(body)
        except ValueError:
            return body
        touched = False
        for call in calls_in(doc):
            if call.get("id") in ids:
                edit(call)
                touched = True
        # ensure_ascii: a lone surrogate goes over the wire as the JSON escape "\ud800", as the review sent it.
        return json.dumps(doc).encode() if touched else body
    return rewrite
