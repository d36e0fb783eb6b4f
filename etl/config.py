"""Configuration: every setting declared once, and the settings of a job in one frozen object.

Each setting an operator can give is a :class:`Setting` here: its name (the
``Settings`` field or the ``Etl`` method's keyword), its environment
variable, its default, its bounds and its help.  :class:`Settings` takes its
defaults from these declarations, :class:`etl.Etl` takes them as keywords
(:class:`SettingOverrides`, applied by :func:`apply_overrides`; the serve,
prune, dbt, webhook and upgrade ones as method keywords with the declared
defaults, the status ones as :class:`etl.health.Limits` fields), and ``etl/cli.py``
builds its click options from them.  Library errors name the parameter
(:class:`etl.errors.UsageError` ``params``); the CLI words them as the flag
(:attr:`Setting.option`).  The tuning knobs without an option (timeouts,
retries, ``Backoff``) are plain ``Settings`` fields.

The CLI fills a :class:`Settings` from options and environment variables; the
rest of the code only ever sees this object.  Nothing here logs the API key:
``Settings.__repr__`` hides it and :func:`redact_url` hides database passwords.
"""

from __future__ import annotations

import dataclasses
import functools
import os
import re
import shlex
from dataclasses import dataclass, field
from typing import Any, Generic, TypedDict, TypeVar
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
# The workspace of a deployment without a workspaces file (etl.workspaces), and of every row
# stored before workspaces existed.
DEFAULT_WORKSPACE = "default"
API_VERSIONS = ("v1", DATED_API_VERSION)

T = TypeVar("T")


@dataclass(frozen=True)
class Setting(Generic[T]):
    """One setting, declared once: the library's name for it, the CLI's flag, its environment variable,
    default, bounds and help (the help text is the CLI's, exactly as ``--help`` prints it)."""

    name: str  # the Settings field or the Etl keyword; also the click parameter's name
    default: T
    help: str
    env: str | None = None
    flag: str | None = None  # the CLI's spelling when it is not "--" + name with dashes (e.g. "--calls/--no-calls")
    metavar: str | None = None
    minimum: float | None = None
    maximum: float | None = None
    choices: tuple[str, ...] = ()
    show_default: bool = True

    @property
    def option(self) -> str:
        """How the CLI words this setting: ``--rate``, ``--calls`` (the positive half of a switch)."""
        return (self.flag or "--" + self.name.replace("_", "-")).split("/")[0]


# --- the job's settings: Settings fields, Etl(...) keywords, options of the run commands ---------------

DATABASE_URL = Setting("database_url", DEFAULT_DATABASE_URL, env="ETL_DATABASE_URL", metavar="URL",
                       help="SQLAlchemy URL: sqlite:///…, postgresql+psycopg://…, mysql+pymysql://… "
                            "[env: ETL_DATABASE_URL]")
API_KEY: Setting[str | None] = Setting("api_key", None, env="OPENPHONE_API_KEY", show_default=False,
                                       help="OpenPhone API key [env: OPENPHONE_API_KEY]; never logged.")
BASE_URL = Setting("base_url", DEFAULT_BASE_URL, env="OPENPHONE_BASE_URL",
                   help="API base URL [env: OPENPHONE_BASE_URL]")
RATE = Setting("rate", 10.0, help="Requests per second for every etl process using this key and database "
                                  "together (0.1 to 1000); 0 = no throttle. OpenPhone allows 10 per key.")
CONCURRENCY = Setting("concurrency", 8, minimum=1, maximum=256,
                      help="Requests in flight at once (one connection pool).")
API_VERSION = Setting("api_version", "v1", env="OPENPHONE_API_VERSION", choices=API_VERSIONS, metavar="v1|2026-03-30",
                      help="API surface: v1, or the dated API 2026-03-30 (a call with its summary in one request, "
                           "the workspace in pages of 50) [env: OPENPHONE_API_VERSION]")
FETCH_CALLS = Setting("fetch_calls", True, env="ETL_FETCH_CALLS", flag="--calls/--no-calls",
                      help="v1: fetch the call of an id that has none (a request of its own); --no-calls "
                           "spends the budget on summaries only. The dated API brings the call with the "
                           "summary either way [env: ETL_FETCH_CALLS]")
TRANSCRIPTS = Setting("transcripts", False, env="ETL_TRANSCRIPTS", flag="--transcripts/--no-transcripts",
                      help="Also sync the transcript of every call the API answers (one more request per call; "
                           "Business and Scale plans) [env: ETL_TRANSCRIPTS=1].")
NOT_FOUND_WINDOW = Setting("not_found_window", 24.0, minimum=0, metavar="HOURS",
                           help="A 404 for a summary or call within this many hours of the call's end (else of "
                                "enqueueing) is retried with backoff; after it, the item ends not_found. 0 = at once.")
CONTACTS_REFRESH_HOURS = Setting("contacts_refresh_hours", 24.0, env="ETL_CONTACTS_REFRESH_HOURS", minimum=0,
                                 metavar="HOURS",
                                 help="discover: list the workspace's contacts at most this often (users and lines: "
                                      "every run; --refresh-contacts: now) [env: ETL_CONTACTS_REFRESH_HOURS].")

# --- many workspaces (issue 27): the commands that act on workspaces (etl.workspaces, etl.fleet) ---------

WORKSPACES_FILE: Setting[str | None] = Setting(
    "workspaces_file", None, env="ETL_WORKSPACES", flag="--workspaces", metavar="FILE", show_default=False,
    help="TOML file of the deployment's workspaces, one [workspace.NAME] table each with api_key_env (the "
         "variable holding its key); every workspace runs at once, each on its own key's budget "
         "[env: ETL_WORKSPACES]. Without it: one workspace, 'default', with today's settings.")
WORKSPACE: Setting[tuple[str, ...]] = Setting(
    "workspace_names", (), flag="--workspace", metavar="NAME", show_default=False,
    help="Only this workspace of the file (repeatable); without a file only 'default' exists.")

# --- etl serve (Etl.serve keywords) ----------------------------------------------------------------------

HOST = Setting("host", "127.0.0.1", help="Interface to listen on.")
PORT = Setting("port", 8080, minimum=1, maximum=65535, help="Port to listen on.")
WEBHOOK_SECRETS: Setting[tuple[str, ...]] = Setting(
    "webhook_secrets", (), env="OPENPHONE_WEBHOOK_SECRETS", flag="--webhook-secret", metavar="SECRET",
    show_default=False, help="A webhook signing secret (repeatable) [env: OPENPHONE_WEBHOOK_SECRETS, "
                             "comma-separated]; never logged.")
TOLERANCE = Setting("tolerance", 300.0, minimum=1, metavar="SECONDS",
                    help="Refuse signatures whose timestamp is further than this from now.")
WEBHOOK_MAX_BODY_BYTES = Setting("max_body_bytes", 1024 * 1024, minimum=1024, help="Refuse larger deliveries with 413.")
DELIVERY_RETENTION = Setting("delivery_retention", 168.0, minimum=1, metavar="HOURS",
                             help="Keep delivery records (replay and redelivery checks) this long.")
POLL_INTERVAL = Setting("poll_interval", 30.0, minimum=0.1, metavar="SECONDS",
                        help="Also sync what became due by itself this often.")
SERVE_READ_TIMEOUT = Setting("read_timeout", 10.0, minimum=0.1, metavar="SECONDS",
                             help="A request's headers, and then its body, must each arrive within this.")
MAX_CONNECTIONS = Setting("max_connections", 100, minimum=2,
                          help="Open connections at most; beyond it the oldest idle one is closed.")

# --- etl prune (Etl.prune keywords) ----------------------------------------------------------------------

BATCH_SIZE = Setting("batch_size", 500, minimum=1, metavar="N",
                     help="Calls per transaction (short transactions: safe next to a running sync).")

# --- etl dbt sources (Etl.dbt_sources keywords) -----------------------------------------------------------

DBT_SOURCE_NAME = Setting("name", "openphone", flag="--source-name", help="The dbt source's name.")
DBT_WARN_AFTER = Setting("warn_after_hours", 24, flag="--warn-after", metavar="HOURS",
                         help="Freshness: warn when the newest synced-at value is older than this.")
DBT_ERROR_AFTER = Setting("error_after_hours", 72, flag="--error-after", metavar="HOURS",
                          help="Freshness: error when the newest synced-at value is older than this.")

# --- etl status (etl.HealthLimits fields: what --check calls unhealthy) -------------------------------------

MAX_AGE = Setting("max_age_s", 3600, flag="--max-age", minimum=1, metavar="SECONDS",
                  help="With --check: the last successful run must have finished within this many seconds.")
MAX_ERRORS = Setting("max_errors", 0, minimum=0, metavar="N",
                     help="With --check: the last finished run may have at most N errors.")
MAX_FETCH_GAP = Setting("max_fetch_gap_s", 1800, flag="--max-fetch-gap", minimum=1, metavar="SECONDS",
                        help="With --check: unhealthy once runs with work have fetched nothing for this long "
                             "(the API unreachable, timing out or answering 5xx/429).")

# --- etl webhooks register / migrate (Etl.webhooks.register / migrate keywords) ----------------------------

WEBHOOK_LABEL = Setting("label", "openphone-summary-sync",
                        help="Label of the webhooks it creates in OpenPhone (a reused one keeps its own).")
MIGRATE_WAIT = Setting("wait", 120.0, minimum=1, metavar="SECONDS",
                       help="How long to wait for `etl serve` to record the test event (sent again every 15 s).")

# --- etl db upgrade (Etl.upgrade keyword) ------------------------------------------------------------------

REVISION = Setting("revision", "head", help="Target revision.")

# Etl(...)'s setting keywords, in this order (SettingOverrides types them).
JOB_SETTINGS: tuple[Setting[Any], ...] = (DATABASE_URL, API_KEY, BASE_URL, RATE, CONCURRENCY, API_VERSION,
                                             FETCH_CALLS, TRANSCRIPTS, NOT_FOUND_WINDOW, CONTACTS_REFRESH_HOURS)
SERVE_SETTINGS: tuple[Setting[Any], ...] = (HOST, PORT, WEBHOOK_SECRETS, TOLERANCE, WEBHOOK_MAX_BODY_BYTES,
                                               DELIVERY_RETENTION, POLL_INTERVAL, SERVE_READ_TIMEOUT, MAX_CONNECTIONS)
PRUNE_SETTINGS: tuple[Setting[Any], ...] = (BATCH_SIZE,)
DBT_SETTINGS: tuple[Setting[Any], ...] = (DBT_SOURCE_NAME, DBT_WARN_AFTER, DBT_ERROR_AFTER)
# Options of the commands that act on workspaces (the file is read by the CLI: etl.workspaces.load_workspaces).
WORKSPACE_SETTINGS: tuple[Setting[Any], ...] = (WORKSPACES_FILE, WORKSPACE)
STATUS_SETTINGS: tuple[Setting[Any], ...] = (MAX_AGE, MAX_ERRORS, MAX_FETCH_GAP)
WEBHOOK_SETTINGS: tuple[Setting[Any], ...] = (WEBHOOK_LABEL, MIGRATE_WAIT)
UPGRADE_SETTINGS: tuple[Setting[Any], ...] = (REVISION,)
# Every declaration, each in one table.
ALL_SETTINGS: tuple[Setting[Any], ...] = (*JOB_SETTINGS, *SERVE_SETTINGS, *PRUNE_SETTINGS, *DBT_SETTINGS,
                                          *WORKSPACE_SETTINGS, *STATUS_SETTINGS, *WEBHOOK_SETTINGS,
                                          *UPGRADE_SETTINGS)


def flag_of(name: str) -> str:
    """The CLI's word for a library parameter: its declared flag, else ``--`` + the name with dashes."""
    for setting in ALL_SETTINGS:
        if setting.name == name:
            return setting.option
    return "--" + name.replace("_", "-")


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
    # Seconds here; declared in hours (NOT_FOUND_WINDOW, the option and Etl's keyword).
    not_found_window: float = NOT_FOUND_WINDOW.default * 3600.0
    not_found_first: float = 300.0
    not_found_cap: float = 3600.0
    # Transient failures that survived the in-run retries.
    transient_first: float = 30.0
    transient_cap: float = 3600.0
    max_attempts: int = 8


@dataclass(frozen=True)
class Settings:
    """The job's settings: the declared ones (defaults from their :class:`Setting`) and the tuning knobs."""

    database_url: str = DATABASE_URL.default
    api_key: str | None = field(default=API_KEY.default, repr=False)
    base_url: str = BASE_URL.default
    # Requests per second for the API key, shared by every etl process using it
    # through the database (etl.budget); 0 = unthrottled (see etl.ratelimit.rate_problem).
    rate: float = RATE.default
    concurrency: int = CONCURRENCY.default
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
    transcripts: bool = TRANSCRIPTS.default
    # Which API surface every request uses: "v1" or the dated "2026-03-30" (etl.api).
    api_version: str = API_VERSION.default
    # v1 only: fetch GET /v1/calls/{id} for an id without a call row (a request of
    # its own); off spends the whole budget on summaries.  The dated surface's
    # summary answer carries its call, so there it costs nothing either way.
    fetch_calls: bool = FETCH_CALLS.default
    # Contacts (tens of thousands, 50 per request) are listed at most this often (etl.refresh);
    # users and lines every run.
    contacts_refresh_hours: float = CONTACTS_REFRESH_HOURS.default
    # The workspace this job runs for (etl.workspaces): every row it writes carries the name,
    # every queue it claims from is this workspace's.
    workspace: str = DEFAULT_WORKSPACE

    def __post_init__(self) -> None:
        check_api_version(self.api_version)

    def replace(self, **changes: object) -> Settings:
        return dataclasses.replace(self, **changes)  # type: ignore[arg-type]


class SettingOverrides(TypedDict, total=False):
    """``Etl(...)``'s setting keywords: one per :data:`JOB_SETTINGS` declaration (None: keep the settings')."""

    database_url: str | None
    api_key: str | None
    base_url: str | None
    rate: float | None
    concurrency: int | None
    api_version: str | None
    fetch_calls: bool | None
    transcripts: bool | None
    not_found_window: float | None  # hours
    contacts_refresh_hours: float | None


def apply_overrides(settings: Settings, overrides: SettingOverrides) -> Settings:
    """``settings`` with the keywords given (not None) applied, each checked where it needs a check."""
    known = {s.name for s in JOB_SETTINGS}
    unknown = sorted(set(overrides) - known)
    if unknown:
        raise TypeError(f"unexpected setting keyword(s): {', '.join(unknown)}")
    changes: dict[str, object] = {k: v for k, v in overrides.items() if v is not None}
    if "api_version" in changes:
        changes["api_version"] = check_api_version(str(changes["api_version"]))
    if "base_url" in changes:
        changes["base_url"] = check_base_url(str(changes["base_url"]))
    if "not_found_window" in changes:
        hours = changes.pop("not_found_window")
        assert isinstance(hours, int | float)
        changes["backoff"] = dataclasses.replace(settings.backoff, not_found_window=hours * 3600.0)
    return settings.replace(**changes) if changes else settings


# scheme://user:PASSWORD@ — greedy up to the last "@", so a password holding "@" is hidden whole.
_PASSWORD = re.compile(r"^([^:/?#]*://[^:@/?#]*:)(.*)@")


# A run of this many characters of the key, in any case, is taken for a piece of it.
MIN_SECRET_FRAGMENT = 8


@functools.lru_cache(maxsize=64)
def _fragments(secret: str) -> tuple[int, frozenset[str], re.Pattern[str]]:
    """The fragment length, the key's fragments (lower case), and a pattern finding any of them."""
    key = secret.lower()
    n = min(MIN_SECRET_FRAGMENT, len(key))
    grams = frozenset(key[i:i + n] for i in range(len(key) - n + 1))
    return n, grams, re.compile("|".join(re.escape(g) for g in sorted(grams)))


def redact_secret(text: str, secret: str | None) -> str:
    """``text`` with ``secret`` and every echo of it replaced by ``***``.

    An API that echoes the key back may change its case or split it (a space,
    a line break, half of it quoted): any run of at least
    :data:`MIN_SECRET_FRAGMENT` characters (the whole key, if shorter) that
    appears in the key, compared case-insensitively, is hidden.
    """
    if not secret or not text:
        return text
    low = text.lower()
    n, grams, anywhere = _fragments(secret)
    if anywhere.search(low) is None:
        return text  # the usual case, found in one scan of the text (a log line per call runs this)
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
        out.append("***" if len(run) >= 12 or len(secret) < MIN_SECRET_FRAGMENT or not run.isalpha() else run)
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
        raise UsageError(f"{{base_url}} {url!r} is not a valid URL ({exc}); "
                         f"expected e.g. {DEFAULT_BASE_URL}", params=("base_url",)) from None
    if parts.scheme not in ("http", "https") or not host:
        raise UsageError(f"{{base_url}} {url!r} needs a scheme and a host, e.g. {DEFAULT_BASE_URL}",
                         params=("base_url",))
    base = url.strip().rstrip("/")
    if parts.path.rstrip("/").lower().endswith("/v1"):
        # OpenPhone's docs write the server as https://api.openphone.com/v1; every path etl
        # requests already starts with /v1, so this base would 404 on every id.
        raise UsageError(f"{{base_url}} {url!r} ends in /v1, which etl adds to every request: "
                         f"use {base[: -len('/v1')]}", params=("base_url",))
    return base


def check_api_version(value: str) -> str:
    """The API surface's name, refused unless it is one of :data:`API_VERSIONS` (a :class:`UsageError`, exit 2)."""
    if value not in API_VERSIONS:
        raise UsageError(f"unknown API version {value!r}: use {' or '.join(API_VERSIONS)} "
                         "({api_version}, OPENPHONE_API_VERSION)", params=("api_version",))
    return value


def require_api_key(settings: Settings) -> None:
    """Refuse to talk to the API without a usable key (a :class:`UsageError`, exit 2)."""
    if not settings.api_key or not settings.api_key.strip():
        raise UsageError("no API key: set OPENPHONE_API_KEY or pass {api_key}", params=("api_key",))
    if any(ord(c) < 33 or ord(c) > 126 for c in settings.api_key):
        raise UsageError("the API key contains spaces or non-printable characters")
