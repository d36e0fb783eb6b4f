"""The `etl` command line: every command is "open the database, fetch, save".

Expected failures become one line ``Error: …`` on stderr and the exit codes
of docs/contract.md: 0 finished, 1 some items hit an unexpected error (or the run was
interrupted), 2 usage or configuration error, 3 the API refused the key.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Callable
from datetime import datetime
from typing import TYPE_CHECKING, Any, BinaryIO, TypeVar, cast

import click

from etl import __version__, health
from etl import backfill as backfill_mod
from etl.config import (
    DEFAULT_BASE_URL,
    DEFAULT_DATABASE_URL,
    Settings,
    command_hint,
    make_settings,
    redact_url,
    require_api_key,
)
from etl.db import open_database
from etl.enqueue import MAX_REPORTED_INVALID, EnqueueCounts, invalid_rest_message, no_valid_ids_message, source_name
from etl.errors import EtlError, UsageError
from etl.ids import InvalidId
from etl.job import Etl, Requeued, check_sources
from etl.logs import configure_logging
from etl.states import run_counts

if TYPE_CHECKING:
    from etl.discover import DiscoveryStats
    from etl.sync import RunStats

F = TypeVar("F", bound=Callable[..., Any])

# Dates and times accepted by --since/--discover-since (UTC).
_DATE_FORMATS = ["%Y-%m-%d", "%Y-%m-%dT%H:%M:%S", "%Y-%m-%d %H:%M:%S", "%Y-%m-%dT%H:%M:%SZ"]


class CliError(click.ClickException):
    """An :class:`EtlError` on its way out: ``Error: …`` and its exit code."""

    def __init__(self, message: str, exit_code: int) -> None:
        super().__init__(message)
        self.exit_code = exit_code  # type: ignore[misc]  # per instance, by design


def handle_errors(fn: F) -> F:
    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except EtlError as exc:
            raise CliError(str(exc), exc.exit_code) from None

    return cast(F, wrapper)


# --- shared options ---------------------------------------------------------------


class RateType(click.ParamType):  # type: ignore[type-arg]
    """``--rate``: 0 (unthrottled) or a rate the limiter paces exactly."""

    name = "rate"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> float:
        from etl.ratelimit import rate_problem

        if isinstance(value, float):
            return value
        try:
            rate = float(value)
        except ValueError:
            self.fail(f"{value!r} is not a number of requests per second", param, ctx)
        problem = rate_problem(rate)
        if problem:
            self.fail(problem, param, ctx)
        return rate


RATE = RateType()


def database_options(fn: F) -> F:
    fn = click.option("--log-level", type=click.Choice(["debug", "info", "warning", "error"]),
                      default="info", show_default=True, help="Lowest log level shown.")(fn)
    fn = click.option("--log-format", type=click.Choice(["auto", "console", "json"]), default="auto",
                      show_default=True, envvar="ETL_LOG_FORMAT",
                      help="auto: console on a terminal, JSON lines otherwise (cron).")(fn)
    fn = click.option("--database-url", envvar="ETL_DATABASE_URL", default=DEFAULT_DATABASE_URL,
                      show_default=True, metavar="URL",
                      help="SQLAlchemy URL: sqlite:///…, postgresql+psycopg://…, mysql+pymysql://… "
                           "[env: ETL_DATABASE_URL]")(fn)
    return fn


def api_options(fn: F) -> F:
    fn = click.option("--concurrency", type=click.IntRange(1, 256), default=Settings.concurrency, show_default=True,
                      help="Requests in flight at once (one connection pool).")(fn)
    fn = click.option("--rate", type=RATE, default=Settings.rate, show_default=True,
                      help="Requests per second for every etl process using this key and database "
                           "together (0.1 to 1000); 0 = no throttle. OpenPhone allows 10 per key.")(fn)
    fn = click.option("--base-url", envvar="OPENPHONE_BASE_URL", default=DEFAULT_BASE_URL,
                      show_default=True, help="API base URL [env: OPENPHONE_BASE_URL]")(fn)
    fn = click.option("--api-key", envvar="OPENPHONE_API_KEY", default=None, show_default=False,
                      help="OpenPhone API key [env: OPENPHONE_API_KEY]; never logged.")(fn)
    return fn


def run_limit_options(fn: F) -> F:
    fn = click.option("--max-runtime", type=click.FloatRange(min=1), default=None, metavar="SECONDS",
                      help="Stop claiming after this long, finish in-flight work, exit 0.")(fn)
    fn = click.option("--limit", type=click.IntRange(min=1), default=None, metavar="N",
                      help="Claim at most N items.")(fn)
    return fn


def not_found_window_option(fn: F) -> F:
    return click.option("--not-found-window", type=click.FloatRange(min=0), default=24.0, show_default=True,
                        metavar="HOURS",
                        help="A 404 for a summary or call within this many hours of the call's end (else of "
                             "enqueueing) is retried with backoff; after it, the item ends not_found. 0 = at once.")(fn)


# --- the group --------------------------------------------------------------------


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, prog_name="etl")
def cli() -> None:
    """Keep a SQL database in step with OpenPhone call summaries.

    \b
    Typical use:
      etl demo                      see the whole pipeline on a simulated API
      etl db upgrade                create or migrate the tables
      etl enqueue AC123 AC456       queue call ids (or --file ids.txt)
      etl sync                      fetch due summaries (cron runs this)
      etl status                    queue health
    """


@cli.group("db")
def db_group() -> None:
    """Manage the database schema (alembic migrations)."""


@db_group.command("upgrade")
@database_options
@click.option("--revision", default="head", show_default=True, help="Target revision.")
@handle_errors
def db_upgrade(database_url: str, log_format: str, log_level: str, revision: str) -> None:
    """Apply migrations (same as `alembic upgrade head`)."""
    configure_logging(cast(Any, log_format), log_level)
    with Etl(database_url=database_url) as job:
        before, after = job.upgrade(revision)
    click.echo(f"Database {redact_url(database_url)} is at revision {after} (was {before or 'empty'}).")


@db_group.command("current")
@database_options
@handle_errors
def db_current(database_url: str, log_format: str, log_level: str) -> None:
    """Show the schema revision of the database and of this version."""
    with Etl(database_url=database_url, read_only=True) as job:
        current, head = job.current()
    state = "up to date" if current == head else f"behind: run {command_hint('etl db upgrade', database_url)}"
    click.echo(f"database: {current or 'empty'}  code: {head}  ({state})")


# --- enqueue ----------------------------------------------------------------------


@cli.command()
@click.argument("ids", nargs=-1)
@click.option("--file", "-f", "file", type=click.File("rb"), default=None,
              help="File with one call id per line ('-' for stdin); blank lines and # comments skipped.")
@database_options
@handle_errors
def enqueue(ids: tuple[str, ...], file: BinaryIO | None, database_url: str, log_format: str,
            log_level: str) -> None:
    """Add call ids to the queue.  Idempotent: queued ids are left as they are.

    Invalid ids (not AC + 1-64 letters/digits) are reported with their line
    number and skipped; the valid ones are still enqueued.
    """
    configure_logging(cast(Any, log_format), log_level)
    if not ids and file is None:
        raise UsageError("no ids given: pass ids as arguments or use --file FILE (or --file - for stdin)")
    source = source_name(file)
    with Etl(database_url=database_url) as job:
        counts = job.enqueue(ids, file=file, on_invalid=_invalid_printer(source))
    _print_invalid_rest(counts.invalid)
    valid, new, invalid = counts
    click.echo(f"Enqueued {new} new id{'s' if new != 1 else ''} "
               f"({valid - new} already queued, {invalid} invalid skipped).")
    if valid == 0:
        raise CliError(no_valid_ids_message(source, invalid), 2)


def _invalid_printer(source: str) -> Callable[[InvalidId, int], None]:
    """One stderr line per bad id (the first MAX_REPORTED_INVALID), as enqueue and backfill print them."""
    def report(item: InvalidId, count: int) -> None:
        if count <= MAX_REPORTED_INVALID:
            click.echo(f"{item.message(source)} (skipped)", err=True)

    return report


def _print_invalid_rest(invalid: int) -> None:
    rest = invalid_rest_message(invalid)
    if rest:
        click.echo(rest, err=True)


# --- sync -------------------------------------------------------------------------


@cli.command()
@api_options
@run_limit_options
@click.option("--dry-run", is_flag=True, help="Show what is due; fetch nothing, change nothing.")
@not_found_window_option
@database_options
@handle_errors
def sync(api_key: str | None, base_url: str, rate: float, concurrency: int, limit: int | None,
         max_runtime: float | None, dry_run: bool, not_found_window: float, database_url: str, log_format: str,
         log_level: str) -> None:
    """Fetch due summaries, upsert their rows, reschedule incomplete ones (the cron job)."""
    configure_logging(cast(Any, log_format), log_level, secrets=[api_key or ""])
    settings = make_settings(database_url, api_key, base_url, rate, concurrency, not_found_window)
    with Etl(settings, read_only=dry_run) as job:  # a dry run never creates a database
        if dry_run:
            _print_due(job, limit)
            return
        require_api_key(settings)
        stats = job.sync(limit, max_runtime)
    _exit_for(stats)


def _print_due(job: Etl, limit: int | None) -> None:
    count, oldest, rows = job.due(min(limit or 20, 100))
    click.echo(f"{count} item{'s' if count != 1 else ''} due now"
               + (f", oldest due since {oldest:%Y-%m-%d %H:%M:%S} UTC" if oldest else "")
               + (f"; a run with --limit {limit} would claim {min(limit, count)}" if limit else ""))
    for row in rows:
        extra = f"  last error: {row['last_error'][:80]}" if row["last_error"] else ""
        click.echo(f"  {row['call_id']}  attempts={row['attempts']}{extra}")
    if count > len(rows):
        click.echo(f"  … and {count - len(rows)} more")


def _exit_for(stats: RunStats) -> None:
    if stats.exit_code == 3:
        raise CliError(f"{stats.stop_reason}; the run stopped and every claimed item was left as it was. "
                       "Check OPENPHONE_API_KEY.", 3)
    if stats.exit_code != 0:
        reason = stats.stop_reason or f"{stats.errors} item(s) hit an unexpected error; see the log"
        raise CliError(f"run {stats.run_id} did not finish cleanly: {reason}", stats.exit_code)


# --- backfill ---------------------------------------------------------------------


@cli.command()
@click.option("--file", "-f", "file", type=click.File("rb"), default=None,
              help="Enqueue the ids in this file first ('-' for stdin).")
@click.option("--status", "status_list", default=None, metavar="STATES",
              help="Re-queue items in these end states, comma-separated: "
                   "failed,error,absent,not_found,invalid (done needs --force).")
@click.option("--since", type=click.DateTime(), default=None, help="Only items finished at or after this UTC time.")
@click.option("--until", type=click.DateTime(), default=None, help="Only items finished before this UTC time.")
@click.option("--force", is_flag=True, help="Also re-fetch `done` items (unchanged content is not rewritten).")
@click.option("--dry-run", is_flag=True, help="Show what would be re-queued; change nothing.")
@click.option("--discover", "discover_first", is_flag=True,
              help="Discover call ids from the workspace (as `etl discover`) instead of reading an id file.")
@click.option("--discover-since", type=click.DateTime(formats=_DATE_FORMATS), default=None, metavar="DATE",
              help="With --discover: where the first discovery starts (UTC; later runs continue from "
                   "their watermarks).")
@not_found_window_option
@api_options
@run_limit_options
@database_options
@handle_errors
def backfill(file: BinaryIO | None, status_list: str | None, since: datetime | None, until: datetime | None,
             force: bool, dry_run: bool, discover_first: bool, discover_since: datetime | None,
             not_found_window: float, api_key: str | None, base_url: str, rate: float,
             concurrency: int, limit: int | None, max_runtime: float | None, database_url: str,
             log_format: str, log_level: str) -> None:
    """Enqueue and/or re-queue items, then sync until nothing is due, with progress.

    Interrupt it with Ctrl-C at any time: in-flight work is saved and running
    `etl backfill` again continues with whatever is still due.
    """
    configure_logging(cast(Any, log_format), log_level, secrets=[api_key or ""])
    selection = backfill_mod.selection(backfill_mod.parse_states(status_list), since, until, force)
    check_sources(file, discover_first, discover_since)
    settings = make_settings(database_url, api_key, base_url, rate, concurrency, not_found_window)
    if not dry_run or discover_first:
        require_api_key(settings)
    source = "-" if file is None else getattr(file, "name", "-")
    with Etl(settings, read_only=dry_run and not discover_first) as job:
        result = job.backfill(file=file, requeue=selection, discover=discover_first, discover_since=discover_since,
                              dry_run=dry_run, limit=limit, max_runtime=max_runtime, progress=None,
                              on_invalid=_invalid_printer(source), on_step=_print_backfill_step)
    if result.discovery is not None and result.discovery.exit_code != 0:
        _exit_for_discovery(result.discovery)
    if result.plan is not None:
        plan = result.plan
        if plan.file is not None:
            _print_invalid_rest(plan.file.invalid)
            click.echo(f"Would enqueue up to {plan.file.valid} ids from {plan.source} "
                       f"({plan.file.invalid} invalid skipped).")
        for state, n in sorted(plan.requeue.items()):
            click.echo(f"Would re-queue {n} {state} items.")
        click.echo(f"Would re-queue {sum(plan.requeue.values())} items in all; {plan.due_now} items are due now.")
        return
    stats = result.run
    if stats is None:  # no plan, no failed discovery, and nothing due: no run was started
        click.echo("Nothing to sync: no item is due, so no run was recorded.")
        return
    click.echo(f"Backfill run {stats.run_id}: {stats.summary()}.")
    _exit_for(stats)


def _print_backfill_step(step: EnqueueCounts | Requeued) -> None:
    if isinstance(step, EnqueueCounts):
        _print_invalid_rest(step.invalid)
        click.echo(f"Enqueued {step.new} new ids ({step.valid - step.new} already queued, "
                   f"{step.invalid} invalid skipped).", err=True)
    else:
        n = step.count
        click.echo(f"Re-queued {n} item{'s' if n != 1 else ''} ({', '.join(step.states)}).", err=True)


# --- discover ---------------------------------------------------------------------

@cli.command("discover")
@click.option("--since", type=click.DateTime(formats=_DATE_FORMATS), default=None, metavar="DATE",
              help="UTC start for lines without a watermark (the first run); an earlier date than a "
                   "watermark walks back to it.")
@click.option("--phone-number", "phone_numbers", multiple=True, metavar="PN…|+E164",
              help="Only this line (its id or E.164 number); repeat or comma-separate for several.")
@click.option("--dry-run", is_flag=True, help="List and count; store nothing, enqueue nothing, move no watermark.")
@api_options
@database_options
@handle_errors
def discover_cmd(since: datetime | None, phone_numbers: tuple[str, ...], dry_run: bool, api_key: str | None,
                 base_url: str, rate: float, concurrency: int, database_url: str, log_format: str,
                 log_level: str) -> None:
    """Find calls in the workspace, store their context, enqueue the completed ones.

    Walks phone numbers -> conversations updated since each line's watermark ->
    calls created since each conversation's watermark.  Safe to interrupt and
    re-run at any point: committed pages stay, nothing is enqueued twice.
    """
    configure_logging(cast(Any, log_format), log_level, secrets=[api_key or ""])
    settings = make_settings(database_url, api_key, base_url, rate, concurrency)
    require_api_key(settings)
    with Etl(settings) as job:
        stats = job.discover(since, phone_numbers, dry_run=dry_run, progress=None)
    click.echo(stats.summary(dry_run))
    _exit_for_discovery(stats)


def _exit_for_discovery(stats: DiscoveryStats) -> None:
    if stats.exit_code == 3:
        raise CliError(f"{stats.stop_reason}; discovery stopped. Check OPENPHONE_API_KEY.", 3)
    if stats.exit_code != 0:
        run = "" if stats.run_id is None else f"run {stats.run_id} "
        raise CliError(f"discovery {run}did not finish cleanly: {stats.stop_reason}", stats.exit_code)


# --- status -----------------------------------------------------------------------


@cli.command()
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output on stdout.")
@click.option("--check", is_flag=True, help="Exit 1 when unhealthy (see --max-age, --max-errors).")
@click.option("--max-age", type=click.IntRange(min=1), default=3600, show_default=True, metavar="SECONDS",
              help="With --check: the last successful run must have finished within this many seconds.")
@click.option("--max-errors", type=click.IntRange(min=0), default=0, show_default=True, metavar="N",
              help="With --check: the last finished run may have at most N errors.")
@click.option("--max-fetch-gap", type=click.IntRange(min=1), default=health.DEFAULT_MAX_FETCH_GAP_S,
              show_default=True, metavar="SECONDS",
              help="With --check: unhealthy once runs with work have fetched nothing for this long "
                   "(the API unreachable, timing out or answering 5xx/429).")
@database_options
@handle_errors
def status(as_json: bool, check: bool, max_age: int, max_errors: int, max_fetch_gap: int, database_url: str,
           log_format: str, log_level: str) -> None:
    """Queue counts by state, what is due, oldest due item, last runs, top errors."""
    with Etl(database_url=database_url, read_only=True) as job:
        report = job.status(health.Limits(max_age, max_errors, max_fetch_gap))
    data = report.as_dict()
    if as_json:
        click.echo(json.dumps(data, indent=2, default=str))
    else:
        _print_status(data)
    if check and report.problems:
        raise CliError("unhealthy: " + "; ".join(report.problems), 1)


def _print_status(data: dict[str, Any]) -> None:
    echo = click.echo
    echo(f"Database: {data['database']}")
    echo(f"Queue ({data['total']} items):")
    for state, n in data["queue"].items():
        echo(f"  {state:<10} {n:>10}")
    age = data["oldest_due_age_s"]
    since = f" (oldest due {age} s ago, since {data['oldest_due_at']})" if age is not None else ""
    echo(f"Due now: {data['due_now']}{since}")
    if data["fetch"]:
        echo(f"API: {data['fetch']}")
    echo("Last runs:")
    if not data["last_runs"]:
        echo("  none yet")
    for r in data["last_runs"]:
        state = "running or crashed" if r["finished_at"] is None else f"exit {r['exit_code']}"
        echo(f"  #{r['id']} {r['command']:<8} {r['started_at']}  {state}: {r['claimed']} claimed, "
             + run_counts(r) + (f" — {r['stop_reason']}" if r.get("stop_reason") else "")
             + (f" — {health.NOTHING_FETCHED}" if health.nothing_fetched(r) else ""))
    d = data.get("last_discovery")
    if d is None:
        echo("Last discovery: none yet")
    else:
        state = "running or crashed" if d["finished_at"] is None else f"exit {d['exit_code']}"
        echo(f"Last discovery: #{d['id']} {d['command']} {d['started_at']}  {state}: "
             f"{d['phone_numbers']} phone numbers, {d['conversations']} conversations, {d['pages']} pages, "
             f"{d['calls_seen']} calls seen, {d['enqueued']} enqueued, {d['errors']} errors"
             + (f" — {d['stop_reason']}" if d.get("stop_reason") else ""))
    if data["top_errors"]:
        echo("Top errors:")
        for e in data["top_errors"]:
            echo(f"  {e['count']:>6}  {e['state']:<10} {str(e['last_error'])[:120]}")
    echo("Health: " + ("OK" if data["healthy"] else "; ".join(data["problems"])))


# --- demo -------------------------------------------------------------------------


@cli.command()
@database_options
@click.pass_context
@handle_errors
def demo(ctx: click.Context, database_url: str, log_format: str, log_level: str) -> None:
    """Run the real sync against a built-in simulated API (no API key needed).

    It writes to a fresh SQLite file in the temporary directory (each demo
    replaces the last one's), never to ETL_DATABASE_URL; pass --database-url
    to run it in a database of your choice.  Demo ids that end
    pending are removed, so no real sync ever sends them.
    """
    from etl import demo as demo_mod

    configure_logging(cast(Any, log_format), log_level)
    explicit = ctx.get_parameter_source("database_url") == click.core.ParameterSource.COMMANDLINE
    url = database_url if explicit else demo_mod.sandbox_url()
    with open_database(url) as engine:
        demo_mod.run_demo(engine, url, sandbox=not explicit)


# --- serve (webhook receiver) ------------------------------------------------------


def _webhook_secrets(given: tuple[str, ...]) -> list[str]:
    """Secrets from repeatable --webhook-secret plus OPENPHONE_WEBHOOK_SECRETS (comma-separated)."""
    import os

    from_env = os.environ.get("OPENPHONE_WEBHOOK_SECRETS", "")
    values = [v.strip() for v in (*given, *from_env.split(",")) if v.strip()]
    if not values:
        raise UsageError("no webhook secret: set OPENPHONE_WEBHOOK_SECRETS (comma-separated) or pass "
                         "--webhook-secret (repeatable); `etl webhooks register` prints them")
    return values


@cli.command()
@click.option("--host", default="127.0.0.1", show_default=True, help="Interface to listen on.")
@click.option("--port", type=click.IntRange(1, 65535), default=8080, show_default=True, help="Port to listen on.")
@click.option("--webhook-secret", "webhook_secrets", multiple=True, metavar="SECRET",
              help="A webhook signing secret (repeatable) [env: OPENPHONE_WEBHOOK_SECRETS, comma-separated]; "
                   "never logged.")
@click.option("--tolerance", type=click.FloatRange(min=1), default=300.0, show_default=True, metavar="SECONDS",
              help="Refuse signatures whose timestamp is further than this from now.")
@click.option("--max-body-bytes", type=click.IntRange(min=1024), default=1024 * 1024, show_default=True,
              help="Refuse larger deliveries with 413.")
@click.option("--delivery-retention", type=click.FloatRange(min=1), default=168.0, show_default=True,
              metavar="HOURS", help="Keep delivery records (replay and redelivery checks) this long.")
@click.option("--poll-interval", type=click.FloatRange(min=0.1), default=30.0, show_default=True,
              metavar="SECONDS", help="Also sync what became due by itself this often.")
@api_options
@database_options
@handle_errors
def serve(host: str, port: int, webhook_secrets: tuple[str, ...], tolerance: float, max_body_bytes: int,
          delivery_retention: float, poll_interval: float, api_key: str | None, base_url: str, rate: float,
          concurrency: int, database_url: str, log_format: str, log_level: str) -> None:
    """Receive signed OpenPhone webhooks and sync each summary seconds after it is ready.

    POST /webhooks/openphone, GET /healthz, GET /metrics.  Needs the API key
    (it fetches the summaries, on the key's shared --rate budget) and the
    signing secrets `etl webhooks register` printed.  Run it behind a reverse
    proxy with TLS (docs/webhooks.md).  SIGTERM drains and exits.

    \b
    Example:
      export OPENPHONE_API_KEY=... OPENPHONE_WEBHOOK_SECRETS=...,...
      etl serve --host 127.0.0.1 --port 8080
    """
    from datetime import timedelta

    from etl.webhooks.app import ReceiverConfig
    from etl.webhooks.server import ServeOptions
    from etl.webhooks.server import serve as run_server
    from etl.webhooks.signatures import SecretError, load_secrets

    secrets = _webhook_secrets(webhook_secrets)
    configure_logging(cast(Any, log_format), log_level, secrets=[api_key or "", *secrets])
    try:
        load_secrets(secrets)
    except SecretError as exc:
        raise UsageError(str(exc)) from None
    retention = timedelta(hours=delivery_retention)
    if retention.total_seconds() < 2 * tolerance:
        raise UsageError("--delivery-retention must be at least twice --tolerance, or a replay could outlive "
                         "its record")
    settings = make_settings(database_url, api_key, base_url, rate, concurrency)
    require_api_key(settings)
    receiver = ReceiverConfig(secrets, tolerance, max_body_bytes, retention)
    with open_database(database_url) as engine:
        run_server(engine, settings, receiver, ServeOptions(host, port, poll_interval))


# --- webhooks (register / list / delete) ----------------------------------------------


@cli.group("webhooks")
def webhooks_group() -> None:
    """Manage the OpenPhone API webhooks `etl serve` receives.

    \b
    etl webhooks register --url https://etl.example.com/webhooks/openphone
        (prints OPENPHONE_WEBHOOK_SECRETS=...: store it for `etl serve`)
    etl webhooks list
    etl webhooks delete WH...
    """


def _key_options(fn: F) -> F:
    """--api-key and --base-url: a management request needs no --rate or --concurrency."""
    fn = click.option("--base-url", envvar="OPENPHONE_BASE_URL", default=DEFAULT_BASE_URL,
                      show_default=True, help="API base URL [env: OPENPHONE_BASE_URL]")(fn)
    fn = click.option("--api-key", envvar="OPENPHONE_API_KEY", default=None, show_default=False,
                      help="OpenPhone API key [env: OPENPHONE_API_KEY]; never logged.")(fn)
    return fn


def _management_settings(api_key: str | None, base_url: str) -> Settings:
    settings = make_settings(DEFAULT_DATABASE_URL, api_key, base_url)
    require_api_key(settings)
    return settings


@webhooks_group.command("register", short_help="Create both webhooks; print their secrets.")
@click.option("--url", required=True, help="Public HTTPS URL of `etl serve`, ending in /webhooks/openphone.")
@click.option("--label", default="openphone-summary-sync", show_default=True,
              help="Label of both webhooks in OpenPhone.")
@_key_options
@handle_errors
def webhooks_register(url: str, label: str, api_key: str | None, base_url: str) -> None:
    """Create the two webhooks `etl serve` needs; print their signing secrets.

    One webhook for call.completed, one for call.summary.completed, both to
    --url.  The secrets are shown once: store them in OPENPHONE_WEBHOOK_SECRETS.
    """
    from etl.webhooks import manage

    if not url.startswith(("https://", "http://")):
        raise UsageError(f"--url must start with https:// (got {url[:80]!r})")
    settings = _management_settings(api_key, base_url)
    created: list[manage.Registered] = []
    try:
        manage.register(settings, url, label, on_created=created.append)
    finally:
        # Also when the second webhook fails: the first one's secret is shown only once.
        for hook in created:
            click.echo(f"Created webhook {hook.id} for {', '.join(hook.events)}")
        if created:
            click.echo("Store the signing secrets (shown once) for `etl serve`:")
            click.echo("OPENPHONE_WEBHOOK_SECRETS=" + ",".join(h.secret for h in created))


@webhooks_group.command("list")
@_key_options
@handle_errors
def webhooks_list(api_key: str | None, base_url: str) -> None:
    """List the workspace's API webhooks (id, status, events, URL)."""
    from etl.webhooks import manage

    hooks = manage.list_all(_management_settings(api_key, base_url))
    if not hooks:
        click.echo("No webhooks.")
    for h in hooks:
        click.echo(f"{h.get('id')}  {h.get('status', '?')}  {','.join(h.get('events') or [])}  {h.get('url')}")


@webhooks_group.command("delete")
@click.argument("webhook_id")
@_key_options
@handle_errors
def webhooks_delete(webhook_id: str, api_key: str | None, base_url: str) -> None:
    """Delete one API webhook by id (as `etl webhooks list` shows it)."""
    from etl.webhooks import manage

    manage.delete(_management_settings(api_key, base_url), webhook_id)
    click.echo(f"Deleted webhook {webhook_id}.")


def main() -> None:
    cli(prog_name="etl")


if __name__ == "__main__":
    main()
