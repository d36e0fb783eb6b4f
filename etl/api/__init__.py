"""The OpenPhone (Quo) API: one client, one request path, one adapter per API surface.

Public names only; the parts live in private modules (the httpx/httpcore
layout):

* :mod:`._client` — :class:`OpenPhoneClient`: the connections (a transport per thread) and the one
  request path (rate slot, tenacity retries, classification) every endpoint
  takes;
* :mod:`._surface` — :class:`Surface`, the interface each surface's adapter
  implements; :mod:`._v1` (``v1``) and :mod:`._dated` (``2026-03-30``) are the
  adapters: paths, headers, paginator, webhook routes and envelopes, and the
  mapping from wire models (:mod:`etl.schema`) to canonical types;
* :mod:`._paging` — one paginator per cursor style (:class:`TokenPages`,
  :class:`CursorPages`);
* :mod:`._dimensions` — users, lines and contacts to :mod:`etl.dimensions`;
* :mod:`._events` — which surface a webhook delivery comes in;
* :mod:`._http` — reading one answer (classification, error text, ``Retry-After``).

Nothing outside this package compares a version string or branches on a
surface: callers read capabilities (:attr:`OpenPhoneClient.discovery`,
:attr:`OpenPhoneClient.fetches_call_separately`,
:attr:`etl.results.SummaryAnswer.absent_is_final`).
"""

from etl.api._client import CURRENT, LEGACY, SURFACES, OpenPhoneClient, surface_for
from etl.api._dated import dated_answer
from etl.api._events import event_surface, webhook_call, webhook_contact, webhook_summary
from etl.api._http import USER_AGENT, api_time, parse_retry_after
from etl.api._paging import CursorPages, PagingError, TokenPages
from etl.api._surface import Discovery, Surface, WebhookSpec
from etl.config import DATED_API_VERSION
from etl.ratelimit import NotSent
from etl.results import ApiResult, SummaryResult

DATED_VERSION = DATED_API_VERSION  # the dated surface's name (etl.config)

__all__ = [
           "CURRENT",
           "DATED_VERSION",
           "LEGACY",
           "SURFACES",
           "USER_AGENT",
           "ApiResult",
           "CursorPages",
           "Discovery",
           "NotSent",
           "OpenPhoneClient",
           "PagingError",
           "SummaryResult",
           "Surface",
           "TokenPages",
           "WebhookSpec",
           "api_time",
           "dated_answer",
           "event_surface",
           "parse_retry_after",
           "surface_for",
           "webhook_call",
           "webhook_contact",
           "webhook_summary",
]
