"""Configuration: the settings of docs/contract.md and the tuning knobs, in one frozen object.

The CLI fills a :class:`Settings` from options and environment variables; the
rest of the code only ever sees this object.  Nothing here logs the API key:
``Settings.__repr__`` hides it and :func:`redact_url` hides database passwords.
"""

from __future__ import annotations

import dataclasses
import os
import re
import shlex
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from sqlalchemy.engine import make_url

from etl.errors import UsageError

DEFAULT_DATABASE_URL = "sqlite:///openphone_summaries.db"
DEFAULT_BASE_URL = "https://api.openphone.com"
# What runs say they talk to when a transport replaces the network (etl.testing in process):
# a reserved name (RFC 2606) that no request could ever reach.
IN_PROCESS_BASE_URL = "http://in-process.invalid"

# The API surfaces: "v1" (paths under /v1) and the dated version (paths without /v1, every
# request with the header Quo-Api-Version: 2026-03-30; docs/api/webhooks-2026-03-30.md).
DATED_API_VERSION = "2026-03-30"
API_VERSIONS = ("v1", DATED_API_VERSION)


@dataclass(frozen=True)
class Backoff:
    """Queue-level delays (seconds) between attempts, per docs/contract.md's queue table."""

    # 200 in-progress: start ~1 min, cap ~1 h, give up after 48 h.
    in_progress_first: float = 60.0
    in_progress_cap: float = 3600.0
    in_progress_give_up: float = 48 * 3600.0
    # 200 absent: a longer backoff, give up after 24 h.
    absent_first: float = 300.0
    absent_cap: float = 4 * 3600.0
    absent_give_up: float = 24 * 3600.0
    # 404 for a summary (or a call) soon after the call: the summary may not be
    # generated yet (one public integration sees 404 where the schema says
    # absent).  Retried for this window, measured from the call's completion
    # (else from enqueueing), then final: not_found.  0 = a 404 is final at once.
    not_found_window: float = 24 * 3600.0
    not_found_first: float = 300.0
    not_found_cap: float = 3600.0
    # Transient failures that survived the in-run retries.
    transient_first: float = 30.0
    transient_cap: float = 3600.0
    max_attempts: int = 8


@dataclass(frozen=True)
class Settings:
    database_url: str = DEFAULT_DATABASE_URL
    api_key: str | None = field(default=None, repr=False)
    base_url: str = DEFAULT_BASE_URL
    # Requests per second for the API key, shared by every etl process using it
    # through the database (etl.budget); 0 = unthrottled (see etl.ratelimit.rate_problem).
    rate: float = 10.0
    concurrency: int = 8
    connect_timeout: float = 5.0
    read_timeout: float = 20.0
    # In-run retries of one request (429, 5xx, timeouts, unparsable bodies).
    retry_attempts: int = 3
    retry_initial: float = 0.5
    retry_max: float = 10.0
    # A claimed item belongs to this run until its lease expires.
    lease_seconds: float = 300.0
    # Rows written per transaction; bounds memory and lock time.
    write_batch: int = 500
    max_body_bytes: int = 8 * 1024 * 1024
    backoff: Backoff = field(default_factory=Backoff)
    # Also fetch every answered call's transcript (transcript_queue; one more request per call).
    transcripts: bool = False
    # Which API surface every request uses: "v1" or the dated "2026-03-30" (etl.api).
    api_version: str = "v1"
    # v1 only: fetch GET /v1/calls/{id} for an id without a call row (a request of
    # its own); off spends the whole budget on summaries.  The dated surface's
    # summary answer carries its call, so there it costs nothing either way.
    fetch_calls: bool = True
    # Contacts (tens of thousands, 50 per request) are listed at most this often (etl.refresh);
    # users and lines every run.
    contacts_refresh_hours: float = 24.0

    def __post_init__(self) -> None:
        check_api_version(self.api_version)

    def replace(self, **changes: object) -> Settings:
        return dataclasses.replace(self, **changes)  # type: ignore[arg-type]


# scheme://user:PASSWORD@ — greedy up to the last "@", so a password holding "@" is hidden whole.
_PASSWORD = re.compile(r"^([^:/?#]*://[^:@/?#]*:)(.*)@")


# A run of this many characters of the key, in any case, is taken for a piece of it.
MIN_SECRET_FRAGMENT = 8


def redact_secret(text: str, secret: str | None) -> str:
    """``text`` with ``secret`` and every echo of it replaced by ``***``.

    An API that echoes the key back may change its case or split it (a space,
    a line break, half of it quoted): any run of at least
    :data:`MIN_SECRET_FRAGMENT` characters (the whole key, if shorter) that
    appears in the key, compared case-insensitively, is hidden.
    """
    if not secret or not text:
        return text
    key = secret.lower()
    low = text.lower()
    n = min(MIN_SECRET_FRAGMENT, len(key))
    grams = {key[i:i + n] for i in range(len(key) - n + 1)}
    hidden = [False] * len(text)
    for i in range(len(low) - n + 1):
        if low[i:i + n] in grams:
            hidden[i:i + n] = [True] * n
    out: list[str] = []
    i = 0
    while i < len(text):
        if not hidden[i]:
            out.append(text[i])
            i += 1
            continue
        j = i
        while j < len(text) and hidden[j]:
            j += 1
        run = text[i:j]
        # A word that happens to be part of the key ("Forbidden" of "forbidden-key-1") stays: a
        # piece of a key has a digit or a sign in it, or is long.
        out.append("***" if len(run) >= 12 or len(key) < MIN_SECRET_FRAGMENT or not run.isalpha() else run)
        i = j
    return "".join(out)


def redact_url(url: str) -> str:
    """The database URL with its password replaced by ``***``, safe for any message."""
    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:
        # Unparsable: show it as typed (the operator must see the typo), password hidden.
        return _PASSWORD.sub(r"\1***@", url)


def command_hint(command: str, database_url: str) -> str:
    """``command`` in backticks as a user can paste it, with the ``--database-url`` it needs.

    The option is left out when the command would find this URL anyway: the
    one ``ETL_DATABASE_URL`` holds, else the default.  A password is never
    shown: the URL then carries ``***`` and the hint says so.
    """
    if database_url == os.environ.get("ETL_DATABASE_URL", DEFAULT_DATABASE_URL):
        return f"`{command}`"
    try:
        has_password = bool(make_url(database_url).password)
    except Exception:
        has_password = False
    if not has_password:
        return f"`{command} --database-url {shlex.quote(database_url)}`"
    return (f"`{command} --database-url {shlex.quote(redact_url(database_url))}` "
            "(with the password in place of ***)")


def check_base_url(url: str) -> str:
    """The API base URL, refused unless it is http(s)://host[:port][/path] (no silent connection errors)."""
    try:
        parts = urlsplit(url.strip())
        host = parts.hostname
        parts.port  # noqa: B018  # raises ValueError on a bad port
    except ValueError as exc:
        raise UsageError(f"--base-url {url!r} is not a valid URL ({exc}); "
                         f"expected e.g. {DEFAULT_BASE_URL}") from None
    if parts.scheme not in ("http", "https") or not host:
        raise UsageError(f"--base-url {url!r} needs a scheme and a host, e.g. {DEFAULT_BASE_URL}")
    base = url.strip().rstrip("/")
    if parts.path.rstrip("/").lower().endswith("/v1"):
        # OpenPhone's docs write the server as https://api.openphone.com/v1; every path etl
        # requests already starts with /v1, so this base would 404 on every id.
        raise UsageError(f"--base-url {url!r} ends in /v1, which etl adds to every request: "
                         f"use {base[: -len('/v1')]}")
    return base


def check_api_version(value: str) -> str:
    """The API surface's name, refused unless it is one of :data:`API_VERSIONS` (a :class:`UsageError`, exit 2)."""
    if value not in API_VERSIONS:
        raise UsageError(f"unknown API version {value!r}: use {' or '.join(API_VERSIONS)} "
                         "(--api-version, OPENPHONE_API_VERSION)")
    return value


def require_api_key(settings: Settings) -> None:
    """Refuse to talk to the API without a usable key (a :class:`UsageError`, exit 2)."""
    if not settings.api_key or not settings.api_key.strip():
        raise UsageError("no API key: set OPENPHONE_API_KEY or pass --api-key")
    if any(ord(c) < 33 or ord(c) > 126 for c in settings.api_key):
        raise UsageError("the API key contains spaces or non-printable characters")
