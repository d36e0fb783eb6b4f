"""``etl webhooks register|list|delete|migrate``: the API webhooks this job needs.

Each command acts on one workspace (issue 27): its key, and its receiver URL,
which must be ``https://HOST[:PORT]/webhooks/<workspace>`` (``/webhooks/openphone``,
today's path, or ``/webhooks/default`` for the ``default`` workspace; ``http://``
only for localhost and 127.0.0.1, for tests).  ``register`` points webhooks at it:

* with ``api_version`` ``v1`` (the default): two legacy webhooks,
  ``call.completed`` (``POST /v1/webhooks/calls``) and
  ``call.summary.completed`` (``POST /v1/webhooks/call-summaries``);
* with ``api_version`` ``2026-03-30``: one current webhook (``POST /webhooks``,
  header ``Quo-Api-Version``) for ``call.completed``,
  ``call.summary.completed`` and ``call.transcript.completed``.

A webhook already pointing at the URL with those events is reused, not made
twice.  Each new webhook's ``key`` is its signing secret: the command prints
them once, for the operator to store in ``OPENPHONE_WEBHOOK_SECRETS`` (or the
workspace's ``webhook_secrets_env``); they are
never logged.

``migrate`` moves a URL from the legacy webhooks to a current one without a
gap (Quo: events between deleting the legacy webhook and enabling the new one
are not delivered): the current webhook first, then a test event
(``POST /webhooks/{id}/events/test``) until the receiver has recorded one in
``webhook_deliveries`` for that workspace, and only then the legacy webhooks of
that URL are deleted.  While both exist, an event comes twice (same event ``id``); the
receiver stores the second as a ``duplicate``.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import urlsplit

import httpx
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from etl.api import CURRENT, LEGACY, SURFACES, OpenPhoneClient, Surface
from etl.clock import Clock
from etl.config import DEFAULT_WORKSPACE, MIGRATE_WAIT, Settings
from etl.errors import AuthError, EtlError, UsageError
from etl.tables import deliveries_t
from etl.webhooks.app import WEBHOOK_PATH as RECEIVER_PATH
from etl.webhooks.app import receiver_paths, workspace_path
from etl.webhooks.events import SUBSCRIBED_EVENTS

LOCAL_HOSTS = frozenset({"localhost", "127.0.0.1"})  # http:// allowed (tests); the help and errors name both

# The test event `migrate` asks for: the cheapest event for the receiver (the sample call's
# id is only made due; no call row or summary rows are written for it).
TEST_EVENT_TYPE = "call.transcript.completed"


@dataclass(frozen=True)
class Registered:
    id: str
    events: list[str]
    secret: str = field(repr=False)  # "" when reused: the API shows a secret only at creation
    reused: bool = False

    @property
    def line(self) -> str:
        """What ``register`` and ``migrate`` print for it (never its secret)."""
        return registered_line(self)


def check_receiver_url(url: str, workspace: str = DEFAULT_WORKSPACE) -> str:
    """``url`` if Quo can deliver to it and ``etl serve`` receives ``workspace``'s deliveries there;
    :class:`UsageError` otherwise."""
    path = RECEIVER_PATH if workspace == DEFAULT_WORKSPACE else workspace_path(workspace)
    example = f"https://etl.example.com{path}"
    try:
        parts = urlsplit(url.strip())
        host = parts.hostname
        parts.port  # noqa: B018  # raises ValueError on a bad port
    except ValueError:
        raise UsageError(f"--url {url[:200]!r} is not a valid URL; expected e.g. {example}") from None
    if parts.scheme != "https" and not (parts.scheme == "http" and host in LOCAL_HOSTS):
        raise UsageError(f"--url must start with https:// (http:// only for localhost or 127.0.0.1), "
                         f"e.g. {example} (got {url[:200]!r})")
    if not host:
        raise UsageError(f"--url has no host, e.g. {example} (got {url[:200]!r})")
    if parts.path not in receiver_paths(workspace) or parts.query or parts.fragment:
        whose = "" if workspace == DEFAULT_WORKSPACE else f"workspace {workspace}'s "
        raise UsageError(f"--url must end in {path}, where `etl serve` receives {whose}deliveries "
                         f"(got {url[:200]!r}; use {parts.scheme}://{parts.netloc}{path})")
    return url.strip()


def register(settings: Settings, url: str, label: str | None = None, *, clock: Clock,
             on_created: Callable[[Registered], None] | None = None,
             transport: httpx.BaseTransport | None = None, surface: Surface | None = None) -> list[Registered]:
    """Create (or reuse) the webhooks that deliver :data:`SUBSCRIBED_EVENTS` for ``url`` on ``surface``
    (default: ``settings.api_version``'s; the surface says how many webhooks that takes).  ``on_created``
    sees each one as soon as it exists (or is found), so a failure on the second still leaves the first
    one's secret in the caller's hands."""
    url = check_receiver_url(url, settings.workspace)
    with OpenPhoneClient(settings, clock=clock, transport=transport, surface=surface) as client:
        existing = [h for h in client.list_webhooks() if h.get("url") == url]
        done = []
        for spec in client.webhook_specs(SUBSCRIBED_EVENTS):
            found = next((h for h in existing if set(spec.events) <= set(h.get("events") or ())), None)
            if found is not None:
                hook = Registered(str(found.get("id", "")), list(found.get("events") or spec.events), "",
                                  reused=True)
            else:
                data = client.create_webhook(spec, url, label)
                hook = Registered(str(data.get("id", "")), list(data.get("events") or spec.events),
                                  str(data.get("key", "")))
            done.append(hook)
            if on_created is not None:
                on_created(hook)
        return done


def list_all(settings: Settings, *, clock: Clock, transport: httpx.BaseTransport | None = None) -> list[dict[str, Any]]:
    with OpenPhoneClient(settings, clock=clock, transport=transport) as client:
        return client.list_webhooks()


@dataclass(frozen=True)
class Deleted:
    """Which API version's webhook was deleted; ``elsewhere``: not the one asked for (found on the other)."""

    api_version: str
    elsewhere: bool


def delete(settings: Settings, webhook_id: str, *, clock: Clock,
           transport: httpx.BaseTransport | None = None) -> Deleted:
    """Delete the webhook ``webhook_id`` of ``settings.api_version``, or, when that surface has none,
    of the other surface (issue 26: a current webhook's id given without ``--api-version``)."""
    with OpenPhoneClient(settings, clock=clock, transport=transport) as client:
        try:
            client.delete_webhook(webhook_id)
            return Deleted(client.surface.version, elsewhere=False)
        except (AuthError, UsageError):
            raise
        except EtlError as exc:
            if "HTTP 404" not in str(exc):
                raise
            others = [s for s in SURFACES if s is not client.surface]
            other = next((s for s in others
                          if any(h.get("id") == webhook_id for h in client.list_webhooks(surface=s))), None)
            if other is None:
                raise EtlError(f"{exc}; no webhook of either API version has this id (`etl webhooks list` "
                               f"and `etl webhooks list --api-version {CURRENT.version}` show them)") from None
        client.delete_webhook(webhook_id, surface=other)
        return Deleted(other.version, elsewhere=True)


# --- migrate ----------------------------------------------------------------------------


class MigrationError(EtlError):
    """The test event never reached the receiver: nothing was deleted (exit 1)."""


@dataclass
class Migrated:
    current: Registered
    test_events: int  # test events sent until one was recorded
    waited_s: float
    deleted: list[str]  # legacy webhook ids deleted


def test_event_received(engine: Engine, event_ids: list[str], since: datetime, *,
                        workspace: str = DEFAULT_WORKSPACE) -> bool:
    """True once ``webhook_deliveries`` holds a Standard Webhooks delivery to ``workspace`` received at or
    after ``since`` that is one of the test events ``event_ids`` (the receiver stores the sha256 of an
    event's id) or of :data:`TEST_EVENT_TYPE`.

    Only deliveries since ``since`` count: Quo's test event has a fixed sample id, shared by every
    dispatch, so a test event an earlier ``migrate`` left (deliveries are kept for days) proves
    nothing about the receiver now.  A second one with that id is recorded as a duplicate, without
    its event key: its type still names it."""
    d = deliveries_t.c
    keys = [hashlib.sha256(e.encode("utf-8", "replace")).hexdigest() for e in event_ids]
    which = sa.or_(d.event_key.in_(keys), d.event_type == TEST_EVENT_TYPE) if keys else \
        d.event_type == TEST_EVENT_TYPE
    with engine.connect() as conn:
        return conn.execute(sa.select(d.message_key).where(
            d.workspace == workspace, d.scheme == "standard", d.received_at >= since, which,
        ).limit(1)).first() is not None


def migrate(settings: Settings, url: str, engine: Engine, *, label: str | None = None,
            wait: float = MIGRATE_WAIT.default,
            resend_every: float = 15.0, poll: float = 0.5, clock: Clock,
            on_step: Callable[[str], None] | None = None,
            transport: httpx.BaseTransport | None = None,
            secrets_variable: str | None = "OPENPHONE_WEBHOOK_SECRETS") -> Migrated:
    """Current webhook first, test event until the receiver recorded one, then delete the legacy ones.

    ``engine`` is the receiver's database (``etl serve``'s); the test event must be recorded for
    ``settings.workspace``.  ``secrets_variable``: where ``etl serve`` reads the workspace's secrets
    (named in the line that shows a new secret; None: its workspaces-file table names none yet).
    A test event is sent at once and again every ``resend_every`` seconds (the receiver may only
    now have been given the new secret) for up to ``wait`` seconds; if none is recorded by then,
    :class:`MigrationError` and no legacy webhook is deleted.
    """
    say = on_step or (lambda _line: None)
    url = check_receiver_url(url, settings.workspace)
    (current,) = register(settings, url, label, clock=clock, on_created=lambda h: say(registered_line(h)),
                          transport=transport, surface=CURRENT)
    if not current.reused:
        variable = secrets_variable or "WEBHOOK_SECRETS"
        where = "" if secrets_variable else (f" (name it in webhook_secrets_env of [workspace.{settings.workspace}]"
                                             " of the workspaces file)")
        say(f"Add its secret to {variable} of `etl serve`{where} and restart it (old and new secrets "
            f"together): {variable}=…," + current.secret)
    since = clock.utcnow() - timedelta(seconds=1)
    started = clock.monotonic()
    sent: list[str] = []
    n = 0
    with OpenPhoneClient(settings, clock=clock, transport=transport, surface=CURRENT) as client:
        next_send = started
        while True:
            now = clock.monotonic()
            if now >= next_send and now - started < wait:
                answer = client.send_test_event(current.id, TEST_EVENT_TYPE)
                n += 1
                event_id = _event_id_of(answer)
                if event_id:
                    sent.append(event_id)
                say(f"Sent test event {n} ({TEST_EVENT_TYPE}) to webhook {current.id}; waiting for `etl serve` "
                    f"to record it (up to {wait:.0f} s)")
                next_send = now + resend_every
            if test_event_received(engine, sent, since, workspace=settings.workspace):
                break
            if clock.monotonic() - started >= wait:
                raise MigrationError(
                    f"no test event reached `etl serve` within {wait:.0f} s ({n} sent to webhook {current.id}, "
                    f"{url}): no legacy webhook was deleted. Check that `etl serve` runs on this database, that "
                    f"its {secrets_variable or 'webhook secrets'} holds the new webhook's secret and that {url} "
                    "reaches it, "
                    "then run migrate again (the new webhook is reused)")
            clock.sleep(poll)
        waited = clock.monotonic() - started
        say(f"`etl serve` received the test event after {waited:.1f} s")
        deleted = []
        for hook in client.list_webhooks(surface=LEGACY):
            if hook.get("url") == url:
                client.delete_webhook(str(hook.get("id", "")), surface=LEGACY)
                deleted.append(str(hook.get("id")))
                say(f"Deleted legacy webhook {hook.get('id')} ({', '.join(hook.get('events') or [])})")
    return Migrated(current, n, waited, deleted)


def registered_line(hook: Registered) -> str:
    """What `register` and `migrate` print for each webhook (never its secret)."""
    events = ", ".join(hook.events)
    if hook.reused:
        return (f"Reusing webhook {hook.id} for {events}: it already points at this URL "
                "(its secret was shown when it was created)")
    return f"Created webhook {hook.id} for {events}"


def _event_id_of(answer: dict[str, Any]) -> str | None:
    """The sample event's id in a test-event answer (``{payload: {id}}`` or the event itself)."""
    payload = answer.get("payload")
    event = payload if isinstance(payload, dict) else answer
    value = event.get("id")
    return value if isinstance(value, str) and value else None
