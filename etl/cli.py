"""The `etl` command line: each command parses its options, calls one method of :class:`etl.Etl` and prints.

It is a client of the public API like any other: it imports only what ``etl.__all__``
names, :mod:`etl.logs`, :mod:`etl.cli_support` (the setting declarations its options are
built from, the helpers it prints with) and click (``tests/unit/test_layers.py``).  A
library error names a parameter (``base_url``); here it names the flag (``--base-url``).

Expected failures become one line ``Error: …`` on stderr and the exit codes
of docs/contract.md: 0 finished, 1 some items hit an unexpected error (or the run was
interrupted), 2 usage or configuration error, 3 the API refused the key.
"""

from __future__ import annotations

import functools
import json
import os
import sys
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO, TypeVar, cast

import click

from etl import (
    AuthError,
    BackfillResult,
    EnqueueCounts,
    Etl,
    EtlError,
    HealthLimits,
    Requeued,
    TranscriptsQueued,
    UsageError,
    WorkspaceConfig,
    __version__,
    load_workspaces,
)
from etl.cli_support import (
    API_KEY,
    API_VERSION,
    BASE_URL,
    BATCH_SIZE,
    CONCURRENCY,
    CONTACTS_REFRESH_HOURS,
    DATABASE_URL,
    DBT_ERROR_AFTER,
    DBT_SOURCE_NAME,
    DBT_WARN_AFTER,
    DELIVERY_RETENTION,
    FETCH_CALLS,
    HOST,
    MAX_AGE,
    MAX_CONNECTIONS,
    MAX_ERRORS,
    MAX_FETCH_GAP,
    MIGRATE_WAIT,
    NOT_FOUND_WINDOW,
    POLL_INTERVAL,
    PORT,
    RATE,
    REVISION,
    SERVE_READ_TIMEOUT,
    TOLERANCE,
    TRANSCRIPTS,
    WEBHOOK_LABEL,
    WEBHOOK_MAX_BODY_BYTES,
    WEBHOOK_SECRETS,
    WORKSPACE,
    WORKSPACES_FILE,
    Setting,
    flag_of,
    invalid_printer,
    invalid_rest_message,
    no_valid_ids_message,
    plural,
    rate_problem,
    requeue_selection,
    source_name,
    workspaces_document,
    workspaces_text,
)
from etl.logs import configure_logging

if TYPE_CHECKING:
    from etl import DiscoveryStats, PruneResult, Registered, RunStats, WorkspaceResults

F = TypeVar("F", bound=Callable[..., Any])

# Dates and times accepted by --since/--discover-since (UTC).
_DATE_FORMATS = ["%Y-%m-%d", "%Y-%m-%dT%H:%M:%S", "%Y-%m-%d %H:%M:%S", "%Y-%m-%dT%H:%M:%SZ"]


class CliError(click.ClickException):
    """An :class:`EtlError` on its way out: ``Error: …`` and its exit code."""

    def __init__(self, message: str, exit_code: int) -> None:
        super().__init__(message)
        self.exit_code = exit_code  # type: ignore[misc]  # per instance, by design


def command(fn: F) -> F:
    """What every command does around its body, in one place: logging configured from
    ``--log-format``/``--log-level`` (for the commands that have them, with the API key kept out
    of every line), and an :class:`EtlError` turned into ``Error: …`` and its exit code."""
    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        if "log_format" in kwargs:
            configure_logging(cast(Any, kwargs.pop("log_format")), kwargs.pop("log_level"),
                              secrets=[kwargs.get("api_key") or ""])
        try:
            return fn(*args, **kwargs)
        except AuthError as exc:  # every command that talks to the API: the same hint
            message = str(exc)
            if "OPENPHONE_API_KEY" not in message:
                message = f"the API refused the key (HTTP {exc.http_status}): {message}. Check OPENPHONE_API_KEY."
            raise CliError(message, exc.exit_code) from None
        except UsageError as exc:
            raise CliError(exc.worded(flag_of), exc.exit_code) from None  # the flags, not the parameters
        except EtlError as exc:
            raise CliError(str(exc), exc.exit_code) from None

    return cast(F, wrapper)


# --- options, built from the setting declarations (etl.config) --------------------------------


def option(setting: Setting[Any], **overrides: Any) -> Callable[[F], F]:
    """The click option of a declared setting: its flag, environment variable, default, bounds and help
    (``overrides`` for what one command words differently, e.g. ``etl webhooks``'s ``--api-version``;
    an override of ``...`` leaves that attribute to click)."""
    kind: Any = None
    low, high = setting.minimum, setting.maximum
    if isinstance(setting.default, bool):
        kind = None  # a --x/--no-x switch
    elif isinstance(setting.default, int) and (low is not None or high is not None):
        kind = click.IntRange(None if low is None else int(low), None if high is None else int(high))
    elif isinstance(setting.default, float) and (low is not None or high is not None):
        kind = click.FloatRange(low, high)
    attrs: dict[str, Any] = {"type": kind, "default": setting.default, "show_default": setting.show_default,
                             "envvar": setting.env, "metavar": setting.metavar, "help": setting.help}
    attrs.update(overrides)
    return click.option(setting.flag or setting.option, setting.name,
                        **{k: v for k, v in attrs.items() if v is not ...})


class RateType(click.ParamType):  # type: ignore[type-arg]
    """``--rate``: 0 (unthrottled) or a rate the limiter paces exactly."""

    name = "rate"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> float:
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


LOG_LEVEL = click.option("--log-level", type=click.Choice(["debug", "info", "warning", "error"]),
                         default="info", show_default=True, help="Lowest log level shown.")
LOG_FORMAT = click.option("--log-format", type=click.Choice(["auto", "console", "json"]), default="auto",
                          show_default=True, envvar="ETL_LOG_FORMAT",
                          help="auto: console on a terminal, JSON lines otherwise (cron).")
DATABASE_URL_OPTION = option(DATABASE_URL)
API_KEY_OPTION = option(API_KEY)
BASE_URL_OPTION = option(BASE_URL)
RATE_OPTION = option(RATE, type=RateType())
CONCURRENCY_OPTION = option(CONCURRENCY)
# Run commands: the job checks the value (one message for the CLI and the library).
API_VERSION_OPTION = option(API_VERSION, type=None)


def database_options(fn: F) -> F:
    return DATABASE_URL_OPTION(LOG_FORMAT(LOG_LEVEL(fn)))


def calls_option(fn: F) -> F:
    return option(FETCH_CALLS)(fn)


def api_options(fn: F) -> F:
    return API_KEY_OPTION(BASE_URL_OPTION(RATE_OPTION(CONCURRENCY_OPTION(API_VERSION_OPTION(fn)))))


def run_limit_options(fn: F) -> F:
    fn = click.option("--max-runtime", type=click.FloatRange(min=1), default=None, metavar="SECONDS",
                      help="Stop claiming after this long, finish in-flight work, exit 0.")(fn)
    fn = click.option("--limit", type=click.IntRange(min=1), default=None, metavar="N",
                      help="Claim at most N items.")(fn)
    return fn


def workspace_options(fn: F) -> F:
    """--workspaces FILE (ETL_WORKSPACES) and the repeatable --workspace NAME: the commands that act on
    workspaces.  The file is read by the command (:func:`_job`), so each of its errors is one ``Error:`` line."""
    fn = option(WORKSPACE, multiple=True)(fn)
    return option(WORKSPACES_FILE)(fn)


def _job(workspaces_file: str | None, **kwargs: Any) -> Etl:
    """The command's job: with a workspaces file, its workspaces (each with its own key)."""
    workspaces = load_workspaces(workspaces_file) if workspaces_file else None
    return Etl(workspaces=workspaces, **kwargs)


def _key_variable(job: Etl, workspace: str) -> str:
    """Where a workspace's key comes from, for an error's hint."""
    config: WorkspaceConfig | None = next((w for w in job.workspaces if w.name == workspace), None)
    return config.api_key_env if config is not None and config.api_key_env else "OPENPHONE_API_KEY"


def not_found_window_option(fn: F) -> F:
    return option(NOT_FOUND_WINDOW)(fn)


def transcripts_option(fn: F) -> F:
    return option(TRANSCRIPTS)(fn)


# --- the group --------------------------------------------------------------------


class OneLineErrors(click.Group):
    """The ``etl`` group: a usage error is one line too (``Error: … Try 'etl sync --help'.``), not click's
    usage block, hint and error on three lines (docs/contract.md: every expected failure is one line)."""

    def main(self, args: Any = None, prog_name: str | None = None, complete_var: str | None = None,
             standalone_mode: bool = True, **extra: Any) -> Any:
        if not standalone_mode:
            return super().main(args, prog_name, complete_var, standalone_mode, **extra)
        try:
            rv = super().main(args, prog_name, complete_var, False, **extra)
        except click.UsageError as exc:
            message = exc.format_message().rstrip()
            hint = f" Try '{exc.ctx.command_path} --help'." if exc.ctx is not None else ""
            click.echo(f"Error: {message}{'' if message.endswith('.') else '.'}{hint}", err=True)
            sys.exit(exc.exit_code)
        except click.ClickException as exc:
            exc.show()
            sys.exit(exc.exit_code)
        except click.exceptions.Abort:
            click.echo("Aborted!", err=True)
            sys.exit(1)
        sys.exit(rv if isinstance(rv, int) else 0)


@click.group(cls=OneLineErrors, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
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
@option(REVISION)
@command
def db_upgrade(database_url: str, revision: str) -> None:
    """Apply migrations (same as `alembic upgrade head`)."""
    with Etl(database_url=database_url) as job:
        before, after = job.upgrade(revision)
    click.echo(f"Database {job.database} is at revision {after} (was {before or 'empty'}).")


@db_group.command("current")
@database_options
@command
def db_current(database_url: str) -> None:
    """Show the schema revision of the database and of this version."""
    with Etl(database_url=database_url, read_only=True) as job:
        current, head = job.current()
    if current == head:
        state = "up to date"
    elif current is not None and not job.knows_revision(current):
        state = "ahead: a newer release of etl migrated this database"
    else:
        state = f"behind: run {job.hint('etl db upgrade')}"
    click.echo(f"database: {current or 'empty'}  code: {head}  ({state})")


# --- dbt --------------------------------------------------------------------------


@cli.group("dbt")
def dbt_group() -> None:
    """Files for a dbt project (docs/bi.md)."""


@dbt_group.command("sources")
@click.option("--output", "-o", type=click.Path(dir_okay=False, path_type=Path), default=None, metavar="FILE",
              help="Write the YAML to FILE (e.g. models/sources.yml; its directory is created). Default: stdout.")
@option(DBT_SOURCE_NAME)
@click.option("--schema", default=None,
              help="Schema holding the tables. Default: public (PostgreSQL), the database (MariaDB), main (SQLite).")
@option(DBT_WARN_AFTER)
@option(DBT_ERROR_AFTER)
@database_options
@command
def dbt_sources(output: Path | None, name: str, schema: str | None, warn_after_hours: int, error_after_hours: int,
                database_url: str) -> None:
    """Write a dbt sources file of every table and view: descriptions, freshness, key tests."""
    with Etl(database_url=database_url, read_only=True) as job:
        text = job.dbt_sources(name=name, schema=schema, warn_after_hours=warn_after_hours,
                               error_after_hours=error_after_hours)
    if output is None:
        click.echo(text, nl=False)
        return
    try:
        output.parent.mkdir(parents=True, exist_ok=True)
        output.write_text(text, encoding="utf-8")
    except OSError as exc:
        raise UsageError(f"cannot write {output}: {exc.strerror}") from None
    click.echo(f"Wrote dbt sources to {output}.", err=True)


# --- enqueue ----------------------------------------------------------------------


@cli.command()
@click.argument("ids", nargs=-1)
@click.option("--file", "-f", "file", type=click.File("rb"), default=None,
              help="File with one call id per line ('-' for stdin); blank lines and # comments skipped.")
@workspace_options
@database_options
@command
def enqueue(ids: tuple[str, ...], file: BinaryIO | None, workspaces_file: str | None,
            workspace_names: tuple[str, ...], database_url: str) -> None:
    """Add call ids to the queue.  Idempotent: queued ids are left as they are.

    Invalid ids (not AC + 1-64 letters/digits) are reported with their line
    number and skipped; the valid ones are still enqueued.  With several
    workspaces, --workspace NAME says whose ids they are.
    """
    if not ids and file is None:
        raise UsageError("no ids given: pass ids as arguments or use --file FILE (or --file - for stdin)")
    source = source_name(file)
    with _job(workspaces_file, database_url=database_url) as job:
        target = job.single_workspace(workspace_names, "call ids belong to one workspace", api=False)
        counts = target.enqueue(ids, file=file, on_invalid=_invalid_printer(source))
    _print_invalid_rest(counts.invalid)
    valid, new, invalid = counts
    click.echo(f"Enqueued {new} new id{'s' if new != 1 else ''} "
               f"({valid - new} already queued, {invalid} invalid skipped).")
    if valid == 0:
        raise CliError(no_valid_ids_message(source, invalid), 2)


def _invalid_printer(source: str) -> Callable[[Any, int], None]:
    """One stderr line per bad id (up to `invalid_printer`'s limit), as enqueue and backfill print them."""
    return invalid_printer(source, functools.partial(click.echo, err=True))


def _print_invalid_rest(invalid: int) -> None:
    rest = invalid_rest_message(invalid)
    if rest:
        click.echo(rest, err=True)


# --- sync -------------------------------------------------------------------------


@cli.command()
@api_options
@calls_option
@run_limit_options
@click.option("--dry-run", is_flag=True, help="Show what is due; fetch nothing, change nothing.")
@not_found_window_option
@transcripts_option
@workspace_options
@database_options
@command
def sync(api_key: str | None, base_url: str, rate: float, concurrency: int, api_version: str, fetch_calls: bool,
         limit: int | None, max_runtime: float | None, dry_run: bool, not_found_window: float, transcripts: bool,
         workspaces_file: str | None, workspace_names: tuple[str, ...], database_url: str) -> None:
    """Fetch due summaries, upsert their rows, reschedule incomplete ones (the cron job).

    With --workspaces FILE every workspace (or each --workspace) syncs at once, each on its own
    key's budget, one summary line each; --limit and --max-runtime apply to each.
    """
    with _job(workspaces_file, database_url=database_url, api_key=api_key, base_url=base_url, rate=rate,
              concurrency=concurrency, not_found_window=not_found_window, transcripts=transcripts,
              api_version=api_version, fetch_calls=fetch_calls,
              read_only=dry_run) as job:  # a dry run never creates a database
        names = job.selected(workspace_names)
        if dry_run:
            for name in names:
                _print_due(job.workspace(name, api=False) if workspaces_file else job, limit,
                           f"Workspace {name}: " if workspaces_file else "")
            return
        if workspaces_file:
            runs = job.sync_workspaces(names, limit, max_runtime)
        else:
            stats = job.sync(limit, max_runtime)
    if workspaces_file:
        _exit_for_workspaces(job, runs, lambda name, stats: [
            summary_line(f"Workspace {name}: sync run {stats.run_id}: {stats.summary()}.", stats)])
        return
    click.echo(summary_line(f"Sync run {stats.run_id}: {stats.summary()}.", stats))
    _exit_for(stats)


def _print_due(job: Etl, limit: int | None, prefix: str = "") -> None:
    count, oldest, rows = job.due(min(limit or 20, 100))
    click.echo(f"{prefix}{count} item{'s' if count != 1 else ''} due now"
               + (f", oldest due since {oldest:%Y-%m-%d %H:%M:%S} UTC" if oldest else "")
               + (f"; a run with --limit {limit} would claim {min(limit, count)}" if limit else ""))
    for row in rows:
        extra = f"  last error: {row['last_error'][:80]}" if row["last_error"] else ""
        click.echo(f"  {row['call_id']}  attempts={row['attempts']}{extra}")
    if count > len(rows):
        click.echo(f"  … and {count - len(rows)} more")


def summary_line(text: str, stats: RunStats | DiscoveryStats) -> str:
    """A run's one-line summary, saying why it stopped when it exits non-zero (never a clean-looking line
    beside exit 3)."""
    why = stats.stopped_because
    return text if why is None else f"{text.rstrip('.')}; stopped: {why}."


def _exit_for(stats: RunStats | DiscoveryStats) -> None:
    """Exit 0, or the run's exit code with one ``Error:`` line saying why (a sync's and a discovery's wording)."""
    if stats.exit_code != 0:
        raise CliError(_failure(stats), stats.exit_code)


def _failure(stats: RunStats | DiscoveryStats, key_variable: str = "OPENPHONE_API_KEY") -> str:
    """Why a run exited non-zero, for its ``Error:`` line."""
    from etl import RunStats as SyncStats  # already imported: the run just used it
    from etl import StopReason

    if isinstance(stats, SyncStats):
        run, stopped = f"run {stats.run_id}", "the run stopped and every claimed item was left as it was"
    else:
        run = "discovery" if stats.run_id is None else f"discovery run {stats.run_id}"
        stopped = "discovery stopped"
    if stats.stop is StopReason.AUTH_REFUSED:
        return f"{stats.stop_reason}; {stopped}. Check {key_variable}."
    reason = stats.stop_reason or f"{stats.errors} item(s) hit an unexpected error; see the log"
    return f"{run} did not finish cleanly: {reason}"


R = TypeVar("R")


def _exit_for_workspaces(job: Etl, runs: WorkspaceResults[R], lines: Callable[[str, R], list[str]],
                         failure: Callable[[R], RunStats | DiscoveryStats | None] = lambda r: cast(Any, r)) -> None:
    """One summary line (or a few) per workspace on stdout, one ``Error: workspace NAME: …`` line per
    workspace that failed, in the file's order, and the combined exit code (etl.fleet.combined_exit_code)."""
    errors: list[str] = []
    for name, code in runs.exit_codes.items():
        if name in runs.failures:
            exc = runs.failures[name]
            errors.append(f"workspace {name}: {exc.worded(flag_of) if isinstance(exc, UsageError) else exc}")
            continue
        result = runs[name]
        for line in lines(name, result):
            click.echo(line)
        failed = failure(result)
        if code != 0 and failed is not None:
            errors.append(f"workspace {name}: {_failure(failed, _key_variable(job, name))}")
    if runs.exit_code != 0:
        for line in errors[:-1]:
            click.echo(f"Error: {line}", err=True)
        raise CliError(errors[-1] if errors else "a workspace did not finish cleanly", runs.exit_code)


# --- backfill ---------------------------------------------------------------------


@cli.command()
@click.option("--file", "-f", "file", type=click.File("rb"), default=None,
              help="Enqueue the ids in this file first ('-' for stdin).")
@click.option("--status", "status_list", default=None, metavar="STATES",
              help="Re-queue items in these end states, comma-separated: "
                   "failed,error,absent,not_found,invalid (done needs --force).")
@click.option("--since", type=click.DateTime(formats=_DATE_FORMATS), default=None, metavar="DATE",
              help="Only items finished at or after this UTC time.")
@click.option("--until", type=click.DateTime(formats=_DATE_FORMATS), default=None, metavar="DATE",
              help="Only items finished before this UTC time.")
@click.option("--missing-transcripts", is_flag=True,
              help="First queue the transcript of every call already synced that has none (transcripts turned "
                   "on later); with --since/--until only of items finished then. Implies --transcripts.")
@click.option("--force", is_flag=True, help="Also re-fetch `done` items (unchanged content is not rewritten).")
@click.option("--dry-run", is_flag=True, help="Show what would be re-queued; change nothing.")
@click.option("--discover", "discover_first", is_flag=True,
              help="Discover call ids from the workspace (as `etl discover`) instead of reading an id file.")
@click.option("--discover-since", type=click.DateTime(formats=_DATE_FORMATS), default=None, metavar="DATE",
              help="With --discover: where the first discovery starts (UTC; later runs continue from "
                   "their watermarks).")
@not_found_window_option
@transcripts_option
@api_options
@calls_option
@run_limit_options
@workspace_options
@database_options
@command
def backfill(file: BinaryIO | None, status_list: str | None, since: datetime | None, until: datetime | None,
             force: bool, missing_transcripts: bool, dry_run: bool, discover_first: bool,
             discover_since: datetime | None,
             not_found_window: float, transcripts: bool, api_key: str | None, base_url: str, rate: float,
             concurrency: int, api_version: str, fetch_calls: bool, limit: int | None, max_runtime: float | None,
             workspaces_file: str | None, workspace_names: tuple[str, ...], database_url: str) -> None:
    """Enqueue and/or re-queue items, then sync until nothing is due, with progress.

    Interrupt it with Ctrl-C at any time: in-flight work is saved and running
    `etl backfill` again continues with whatever is still due.  With
    --workspaces FILE every workspace (or each --workspace) at once, a
    progress log line each instead of a bar; --file needs one --workspace.
    """
    requeues = bool(status_list or force)
    # With --missing-transcripts alone, --since/--until pick the calls whose transcripts are queued.
    window = (since, until) if missing_transcripts else (None, None)
    selection = requeue_selection(status_list, since, until, force) if requeues or not missing_transcripts else None
    source = "-" if file is None else getattr(file, "name", "-")
    with _job(workspaces_file, database_url=database_url, api_key=api_key, base_url=base_url, rate=rate,
              concurrency=concurrency, not_found_window=not_found_window,
              transcripts=transcripts or missing_transcripts, api_version=api_version,
              fetch_calls=fetch_calls, read_only=dry_run and not discover_first) as job:
        names = job.selected(workspace_names)
        if workspaces_file:
            runs = job.backfill_workspaces(
                names, file=file, requeue=selection, discover=discover_first, discover_since=discover_since,
                dry_run=dry_run, limit=limit, max_runtime=max_runtime, on_invalid=_invalid_printer(source),
                on_step=lambda name, step: _print_backfill_step(step, f"Workspace {name}: "),
                missing_transcripts=missing_transcripts, transcripts_since=window[0], transcripts_until=window[1])
        else:
            result = job.backfill(file=file, requeue=selection, discover=discover_first,
                                  discover_since=discover_since, dry_run=dry_run, limit=limit,
                                  max_runtime=max_runtime, progress=None, on_invalid=_invalid_printer(source),
                                  on_step=_print_backfill_step, missing_transcripts=missing_transcripts,
                                  transcripts_since=window[0], transcripts_until=window[1])
    if workspaces_file:
        _exit_for_workspaces(job, runs, lambda name, r: _backfill_lines(r, f"Workspace {name}: "), _backfill_failure)
        return
    if result.discovery is not None and result.discovery.exit_code != 0:
        _exit_for(result.discovery)
    for line in _backfill_lines(result):
        click.echo(line)
    if result.run is not None:
        _exit_for(result.run)


def _backfill_lines(result: BackfillResult, prefix: str = "") -> list[str]:
    """What a backfill prints on stdout: its plan (a dry run), or its run's summary line."""
    if result.discovery is not None and result.discovery.exit_code != 0:
        return [prefix + summary_line(result.discovery.summary().split("\n")[0], result.discovery)]
    lines: list[str] = []
    if result.plan is not None:
        plan = result.plan
        if plan.file is not None:
            _print_invalid_rest(plan.file.invalid)
            lines.append(f"Would enqueue up to {plan.file.valid} ids from {plan.source} "
                         f"({plan.file.invalid} invalid skipped).")
        for state, n in sorted(plan.requeue.items()):
            lines.append(f"Would re-queue {plural(n, f'{state} item')}.")
        if plan.transcripts is not None:
            lines.append(f"Would queue {plural(plan.transcripts, 'transcript')} of calls already synced.")
        due = plan.due_now
        lines.append(f"Would re-queue {plural(sum(plan.requeue.values()), 'item')} in all; "
                     f"{plural(due, 'item')} {'is' if due == 1 else 'are'} due now.")
        return [prefix + line for line in lines]
    stats = result.run
    if stats is None:  # no plan, no failed discovery, and nothing due: no run was started
        return [prefix + "Nothing to sync: no item is due, so no run was recorded."]
    return [prefix + summary_line(f"Backfill run {stats.run_id}: {stats.summary()}.", stats)]


def _backfill_failure(result: BackfillResult) -> RunStats | DiscoveryStats | None:
    """The run a backfill's exit code comes from: its failed discovery, else its sync."""
    if result.discovery is not None and result.discovery.exit_code != 0:
        return result.discovery
    return result.run


def _print_backfill_step(step: EnqueueCounts | Requeued | TranscriptsQueued, prefix: str = "") -> None:
    if isinstance(step, TranscriptsQueued):
        click.echo(f"{prefix}Queued {plural(step.count, 'transcript')} of calls already synced.", err=True)
    elif isinstance(step, EnqueueCounts):
        _print_invalid_rest(step.invalid)
        click.echo(f"{prefix}Enqueued {step.new} new ids ({step.valid - step.new} already queued, "
                   f"{step.invalid} invalid skipped).", err=True)
    else:
        n = step.count
        click.echo(f"{prefix}Re-queued {n} item{'s' if n != 1 else ''} ({', '.join(step.states)}).", err=True)


# --- discover ---------------------------------------------------------------------

@cli.command("discover")
@click.option("--since", type=click.DateTime(formats=_DATE_FORMATS), default=None, metavar="DATE",
              help="UTC start for lines without a watermark (the first run); an earlier date than a "
                   "watermark walks back to it.")
@click.option("--phone-number", "phone_numbers", multiple=True, metavar="PN…|+E164",
              help="Only this line (its id or E.164 number; on the dated API its id, which maps to "
                   "phoneNumberId); repeat or comma-separate for several.")
@click.option("--dry-run", is_flag=True, help="List and count; store nothing, enqueue nothing, move no watermark.")
@click.option("--refresh-contacts", is_flag=True,
              help="List the workspace's contacts now, in full, whatever their schedule says.")
@option(CONTACTS_REFRESH_HOURS)
@transcripts_option
@api_options
@workspace_options
@database_options
@command
def discover_cmd(since: datetime | None, phone_numbers: tuple[str, ...], dry_run: bool, refresh_contacts: bool,
                 contacts_refresh_hours: float, transcripts: bool, api_key: str | None, base_url: str, rate: float,
                 concurrency: int, api_version: str, workspaces_file: str | None, workspace_names: tuple[str, ...],
                 database_url: str) -> None:
    """Find calls in the workspace, store their context, enqueue the completed ones.

    v1 walks phone numbers -> conversations updated since each line's watermark ->
    calls created since each conversation's watermark.  The dated API lists
    every call since the watermark in pages of 50 and stores summaries that
    are ready from the page.  Then the workspace's users and lines (a few
    requests) are refreshed, and its contacts when due.  Safe to interrupt and
    re-run at any point: committed pages stay, nothing is enqueued twice.
    With --workspaces FILE every workspace (or each --workspace) at once.
    """
    with _job(workspaces_file, database_url=database_url, api_key=api_key, base_url=base_url, rate=rate,
              concurrency=concurrency, transcripts=transcripts, api_version=api_version,
              contacts_refresh_hours=contacts_refresh_hours) as job:
        names = job.selected(workspace_names)
        if workspaces_file:
            runs = job.discover_workspaces(names, since, phone_numbers, dry_run=dry_run,
                                           refresh_contacts=refresh_contacts)
        else:
            stats = job.discover(since, phone_numbers, dry_run=dry_run, progress=None,
                                 refresh_contacts=refresh_contacts)
    if workspaces_file:
        _exit_for_workspaces(job, runs, lambda name, stats: [
            f"Workspace {name}: {line}" for line in _discovery_lines(stats, dry_run)])
        return
    click.echo("\n".join(_discovery_lines(stats, dry_run)))
    _exit_for(stats)


def _discovery_lines(stats: DiscoveryStats, dry_run: bool) -> list[str]:
    walk, *refreshed = stats.summary(dry_run).split("\n")  # the walk's line, then what the refresh cost
    return [summary_line(walk, stats), *refreshed]


# --- prune ----------------------------------------------------------------------


@cli.command()
@click.option("--transcripts-older-than", type=click.FloatRange(min=0), default=None, metavar="DAYS",
              help="Delete the transcript lines of calls that started more than DAYS ago (the call_transcripts "
                   "rows stay, marked pruned; a pruned transcript is never stored again).")
@click.option("--raw-json-older-than", type=click.FloatRange(min=0), default=None, metavar="DAYS",
              help="Clear call_summaries.raw_json and calls.raw_json (set to '') of calls that started more "
                   "than DAYS ago.")
@click.option("--dry-run", is_flag=True, help="Count what would be removed; change nothing.")
@click.option("--yes", "-y", is_flag=True,
              help="Do not ask before a prune that deletes every stored transcript line (off a terminal such a "
                   "prune is refused without it).")
@option(BATCH_SIZE)
@workspace_options
@database_options
@command
def prune(transcripts_older_than: float | None, raw_json_older_than: float | None, dry_run: bool, yes: bool,
          batch_size: int, workspaces_file: str | None, workspace_names: tuple[str, ...], database_url: str) -> None:
    """Forget on schedule: transcript lines and raw JSON payloads of old calls (cron: daily).

    A prune that would delete every stored transcript line (e.g.
    --transcripts-older-than 0) asks first on a terminal and needs --yes
    elsewhere: pruned transcripts are never fetched again.  With
    --workspaces FILE each workspace of the file (or each --workspace) in
    turn, a line each: each may have its own retention.
    """
    with _job(workspaces_file, database_url=database_url) as job:
        names = job.selected(workspace_names)
        targets = [(name, job.workspace(name, api=False)) for name in names] if workspaces_file else [("", job)]
        if transcripts_older_than is not None and not dry_run and not yes:
            for name, target in targets:
                _confirm_pruning_everything(target, transcripts_older_than, f"workspace {name}: " if name else "")
        for name, target in targets:
            result = target.prune(transcripts_older_than=transcripts_older_than,
                                  raw_json_older_than=raw_json_older_than, dry_run=dry_run, batch_size=batch_size)
            _print_pruned(result, f"Workspace {name}: " if name else "")


def _print_pruned(result: PruneResult, prefix: str) -> None:
    dry_run = result.dry_run
    verb = "Would remove" if dry_run else "Removed"
    if result.transcripts_before is not None:
        click.echo(f"{prefix}{verb} {result.transcript_lines} transcript line(s) of {result.transcript_calls} "
                   f"call(s) that started before {result.transcripts_before:%Y-%m-%d %H:%M:%S} UTC.")
    if result.raw_json_before is not None:
        click.echo(f"{prefix}{'Would clear' if dry_run else 'Cleared'} {result.summary_payloads} summary payload(s) "
                   f"and {result.call_payloads} call payload(s) of calls that started before "
                   f"{result.raw_json_before:%Y-%m-%d %H:%M:%S} UTC.")


def _confirm_pruning_everything(job: Etl, days: float, where: str = "") -> None:
    """Ask (on a terminal) or refuse (elsewhere) before deleting every stored transcript line (of the
    workspace ``where`` names)."""
    stored, calls = job.transcript_lines_stored()
    if stored == 0:
        return
    would = job.prune(transcripts_older_than=days, dry_run=True)
    if would.transcript_lines < stored:
        return
    what = (f"every stored transcript line ({plural(stored, 'line')} of {plural(calls, 'call')}), permanently: "
            "pruned transcripts are never fetched again")
    if not (sys.stdin.isatty() and sys.stdout.isatty()):
        raise CliError(f"{where}this prune would delete {what}; pass --yes to confirm", 2)
    prompt = f"{where}this prune deletes {what}. Continue?"
    click.confirm(prompt[:1].upper() + prompt[1:], abort=True)


# --- status -----------------------------------------------------------------------


@cli.command()
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output on stdout.")
@click.option("--check", is_flag=True, help="Exit 1 when unhealthy (see --max-age, --max-errors).")
@option(MAX_AGE)
@option(MAX_ERRORS)
@option(MAX_FETCH_GAP)
@workspace_options
@database_options
@command
def status(as_json: bool, check: bool, max_age_s: int, max_errors: int, max_fetch_gap_s: int,
           workspaces_file: str | None, workspace_names: tuple[str, ...], database_url: str) -> None:
    """Queue counts by state, what is due, oldest due item, last runs, top errors.

    With --workspaces FILE a section per workspace (or each --workspace); --json then has
    "workspaces": {NAME: the single-workspace document}; --check fails if any workspace is unhealthy.
    """
    limits = HealthLimits(max_age_s, max_errors, max_fetch_gap_s)
    with _job(workspaces_file, database_url=database_url, read_only=True) as job:
        names = job.selected(workspace_names)
        if workspaces_file:
            reports = job.status_workspaces(names, limits)
        else:
            report = job.status(limits)
    if not workspaces_file:
        click.echo(json.dumps(report.as_dict(), indent=2, default=str) if as_json else report.text())
        if check and report.problems:
            raise CliError("unhealthy: " + "; ".join(report.problems), 1)
        return
    click.echo(json.dumps(workspaces_document(job.database, reports), indent=2, default=str) if as_json
               else workspaces_text(job.database, reports))
    problems = workspaces_document(job.database, reports)["problems"]
    if check and problems:
        raise CliError("unhealthy: " + "; ".join(problems), 1)


# --- demo -------------------------------------------------------------------------


@cli.command()
@transcripts_option
@API_VERSION_OPTION
@database_options
@click.pass_context
@command
def demo(ctx: click.Context, transcripts: bool, api_version: str, database_url: str) -> None:
    """Run the real sync against a built-in simulated API (no API key needed).

    It writes to a fresh SQLite file in the temporary directory (each demo
    replaces the last one's), never to ETL_DATABASE_URL; pass --database-url
    to run it in a database of your choice.  Demo ids that end
    pending are removed, so no real sync ever sends them.
    """
    explicit = ctx.get_parameter_source("database_url") == click.core.ParameterSource.COMMANDLINE
    url = database_url if explicit else Etl.demo_database_url()
    with Etl(database_url=url, transcripts=transcripts, api_version=api_version) as job:
        job.demo(sandbox=not explicit)


# --- serve (webhook receiver) ------------------------------------------------------


def _webhook_secrets(given: tuple[str, ...], workspaces_file: str | None) -> list[str]:
    """Secrets from repeatable --webhook-secret plus OPENPHONE_WEBHOOK_SECRETS (comma-separated).  With a
    workspaces file only the flags (which the job then refuses): each workspace's secrets are in the
    variable its webhook_secrets_env names, and OPENPHONE_WEBHOOK_SECRETS is just one such name."""
    from_env = "" if workspaces_file else os.environ.get(WEBHOOK_SECRETS.env or "", "")
    return [v.strip() for v in (*given, *from_env.split(",")) if v.strip()]


@cli.command()
@option(HOST)
@option(PORT)
# Repeatable; the environment variable is comma-separated, read by _webhook_secrets.
@option(WEBHOOK_SECRETS, multiple=True, envvar=None, default=..., show_default=...)
@option(TOLERANCE)
@option(WEBHOOK_MAX_BODY_BYTES)
@option(DELIVERY_RETENTION)
@option(POLL_INTERVAL)
@transcripts_option
@option(SERVE_READ_TIMEOUT)
@option(MAX_CONNECTIONS)
@api_options
@calls_option
@workspace_options
@database_options
@command
def serve(host: str, port: int, webhook_secrets: tuple[str, ...], tolerance: float, max_body_bytes: int,
          delivery_retention: float, poll_interval: float, read_timeout: float, max_connections: int,
          transcripts: bool, api_key: str | None, base_url: str, rate: float, concurrency: int, api_version: str,
          fetch_calls: bool, workspaces_file: str | None, workspace_names: tuple[str, ...],
          database_url: str) -> None:
    """Receive signed OpenPhone webhooks and sync each summary seconds after it is ready.

    POST /webhooks/openphone, GET /healthz, GET /metrics.  Needs the API key
    (it fetches the summaries, on the key's shared --rate budget) and the
    signing secrets `etl webhooks register` printed.  Run it behind a reverse
    proxy with TLS (docs/webhooks.md).  SIGTERM or Ctrl-C drains and exits 0.

    With --workspaces FILE each workspace (or each --workspace) has its own
    path, POST /webhooks/NAME, verified with the secrets in the variable its
    webhook_secrets_env names, and its own engine on its own key and budget.

    \b
    Example:
      export OPENPHONE_API_KEY=... OPENPHONE_WEBHOOK_SECRETS=...,...
      etl serve --host 127.0.0.1 --port 8080
      etl serve --workspaces /etc/openphone-summary-sync/workspaces.toml
    """
    with _job(workspaces_file, database_url=database_url, api_key=api_key, base_url=base_url, rate=rate,
              concurrency=concurrency, transcripts=transcripts, api_version=api_version,
              fetch_calls=fetch_calls) as job:
        job.serve(_webhook_secrets(webhook_secrets, workspaces_file), host=host, port=port, tolerance=tolerance,
                  max_body_bytes=max_body_bytes, delivery_retention=delivery_retention, poll_interval=poll_interval,
                  read_timeout=read_timeout, max_connections=max_connections, workspace_names=workspace_names)


# --- webhooks (register / list / delete / migrate) -------------------------------------


@cli.group("webhooks")
def webhooks_group() -> None:
    """Manage the OpenPhone (Quo) API webhooks `etl serve` receives.

    \b
    etl webhooks register --url https://etl.example.com/webhooks/openphone
        (prints OPENPHONE_WEBHOOK_SECRETS=...: store it for `etl serve`)
    etl webhooks register --api-version 2026-03-30 --url https://…/webhooks/openphone
        (one current webhook instead of the two legacy ones)
    etl webhooks migrate --url https://etl.example.com/webhooks/openphone
        (current webhook, test event received, then the legacy ones deleted)
    etl webhooks list
    etl webhooks delete WH...

    \b
    With --workspaces FILE, one workspace's webhooks at a time (its key, its
    URL https://…/webhooks/NAME): register, delete and migrate need exactly
    one --workspace; list shows every workspace's in turn.
    """


def _key_options(fn: F) -> F:
    """--api-key, --base-url and --api-version: a management request needs no --rate or --concurrency;
    --workspaces and --workspace: whose webhooks."""
    return API_KEY_OPTION(BASE_URL_OPTION(option(
        API_VERSION, type=click.Choice(API_VERSION.choices), metavar=None,
        help="v1: the legacy webhooks (/v1/webhooks/…); 2026-03-30: the current ones (/webhooks, header "
             "Quo-Api-Version) [env: OPENPHONE_API_VERSION]")(workspace_options(fn))))


_URL_HELP = ("Public URL of `etl serve` for the workspace: https://HOST[:PORT]/webhooks/NAME "
             "(/webhooks/openphone without a workspaces file; http:// only for localhost or 127.0.0.1).")


def _webhooks_of(command_name: str, job: Etl, workspace_names: tuple[str, ...]) -> Etl:
    """The one workspace a webhook command changes: with several configured, exactly one --workspace
    (each has its own key and URL, so doing each in turn with one --url could never be right)."""
    return job.single_workspace(workspace_names, f"`etl webhooks {command_name}` changes one workspace's webhooks")


@webhooks_group.command("register", short_help="Create (or reuse) the webhooks; print new secrets.")
@click.option("--url", required=True, help=_URL_HELP)
@option(WEBHOOK_LABEL)
@_key_options
@command
def webhooks_register(url: str, label: str, api_key: str | None, base_url: str, api_version: str,
                      workspaces_file: str | None, workspace_names: tuple[str, ...]) -> None:
    """Create the webhooks `etl serve` needs; print their signing secrets.

    v1: one webhook for call.completed, one for call.summary.completed.
    2026-03-30: one webhook for call.completed, call.summary.completed and
    call.transcript.completed.  A webhook that already points at --url with
    those events is reused, not made twice.  New secrets are shown once:
    store them in OPENPHONE_WEBHOOK_SECRETS (with a workspaces file: in the
    variable the workspace's webhook_secrets_env names).
    """
    hooks: list[Registered] = []
    job = _job(workspaces_file, api_key=api_key, base_url=base_url, api_version=api_version)
    webhooks = _webhooks_of("register", job, workspace_names).webhooks
    try:
        webhooks.register(url, label, on_created=hooks.append)
    finally:
        # Also when the second webhook fails: the first one's secret is shown only once.
        for hook in hooks:
            click.echo(hook.line)
        created = [h for h in hooks if not h.reused]
        if created:
            variable = webhooks.secrets_variable
            if variable is None:
                variable = "WEBHOOK_SECRETS_" + webhooks.workspace.upper().replace("-", "_")
                click.echo(f"Name this variable in the workspaces file: webhook_secrets_env = \"{variable}\" "
                           f"in [workspace.{webhooks.workspace}]")
            click.echo("Store the signing secrets (shown once) for `etl serve`:")
            click.echo(f"{variable}=" + ",".join(h.secret for h in created))


@webhooks_group.command("list")
@_key_options
@command
def webhooks_list(api_key: str | None, base_url: str, api_version: str, workspaces_file: str | None,
                  workspace_names: tuple[str, ...]) -> None:
    """List the workspace's API webhooks of --api-version (id, status, events, URL); with several
    workspaces, each one's in turn under a `Workspace NAME:` line."""
    job = _job(workspaces_file, api_key=api_key, base_url=base_url, api_version=api_version)
    names = job.selected(workspace_names)
    for name in names:
        hooks = job.workspace(name).webhooks.list()
        if len(names) > 1:
            click.echo(f"Workspace {name}:")
        if not hooks:
            click.echo("No webhooks.")
        for h in hooks:
            click.echo(f"{h.get('id')}  {h.get('status', '?')}  {','.join(h.get('events') or [])}  {h.get('url')}")


@webhooks_group.command("delete")
@click.argument("webhook_id")
@_key_options
@command
def webhooks_delete(webhook_id: str, api_key: str | None, base_url: str, api_version: str,
                    workspaces_file: str | None, workspace_names: tuple[str, ...]) -> None:
    """Delete one API webhook by id (as `etl webhooks list` shows it): of --api-version, or of the other
    API version when only that one has the id."""
    job = _job(workspaces_file, api_key=api_key, base_url=base_url, api_version=api_version)
    deleted = _webhooks_of("delete", job, workspace_names).webhooks.delete(webhook_id)
    on = deleted.api_version
    other = f" (a {on} webhook: found with --api-version {on})" if deleted.elsewhere else ""
    click.echo(f"Deleted webhook {webhook_id}{other}.")


@webhooks_group.command("migrate", short_help="Move --url from the legacy webhooks to a current one, no gap.")
@click.option("--url", required=True, help=_URL_HELP)
@option(WEBHOOK_LABEL)
@option(MIGRATE_WAIT)
@API_KEY_OPTION
@BASE_URL_OPTION
@workspace_options
@database_options
@command
def webhooks_migrate(url: str, label: str, wait: float, api_key: str | None, base_url: str,
                     workspaces_file: str | None, workspace_names: tuple[str, ...], database_url: str) -> None:
    """Move --url from the legacy webhooks to a current (2026-03-30) one without a gap.

    \b
    1. create the current webhook (or reuse one that points at --url) and print
       its secret; give it to `etl serve` (OPENPHONE_WEBHOOK_SECRETS, or the
       workspace's webhook_secrets_env, old and new together) and restart it;
    2. send it a test event until `etl serve` has recorded one for the
       workspace in the database (--database-url, the receiver's), for up to
       --wait seconds;
    3. only then delete the legacy webhooks of --url.

    Events sent through both meanwhile are stored once (the second is a
    duplicate).  If no test event arrives: exit 1, nothing deleted.
    """
    with _job(workspaces_file, database_url=database_url, api_key=api_key, base_url=base_url) as job:
        result = _webhooks_of("migrate", job, workspace_names).webhooks.migrate(url, label=label, wait=wait,
                                                                                 on_step=click.echo)
    click.echo(f"Migrated {url} to webhook {result.current.id}; deleted {len(result.deleted)} legacy webhook(s).")


def main() -> None:
    cli(prog_name="etl")


if __name__ == "__main__":
    main()
