"""Putting call ids into the queue: checked, deduplicated, in batches, in flat memory.

Used by ``etl enqueue``, ``etl backfill --file`` and :meth:`etl.Etl.enqueue`.
Invalid ids never stop the others: each is handed to ``on_invalid`` (the CLI
prints it with its line number) and counted.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from datetime import datetime
from typing import Any, BinaryIO, NamedTuple

from sqlalchemy import event as sa_event
from sqlalchemy.engine import Engine

from etl import store
from etl.config import DEFAULT_WORKSPACE
from etl.ids import InvalidId, check_ids, read_id_lines

ENQUEUE_BATCH = 10_000
ANALYZE_AFTER = 10_000
# The CLI prints this many invalid lines, then one line with the rest's count.
MAX_REPORTED_INVALID = 1000

# Called with each invalid id and how many were invalid so far (1, 2, ...).
OnInvalid = Callable[[InvalidId, int], None]


class EnqueueCounts(NamedTuple):
    """What one enqueue did: valid ids read, rows new to the queue, invalid entries skipped."""

    valid: int
    new: int
    invalid: int


class IdCounts(NamedTuple):
    """What an id file holds (``backfill --dry-run``): valid and invalid entries."""

    valid: int
    invalid: int


def id_items(ids: Iterable[str] = (), file: BinaryIO | None = None) -> Iterator[str | InvalidId | None]:
    """The ids given as values, then those of ``file`` (one a line), each checked."""
    ids = tuple(ids)
    if ids:
        yield from check_ids(ids)
    if file is not None:
        yield from read_id_lines(file)


def source_name(file: BinaryIO | None) -> str:
    """How messages name where ids came from: ``argument``, a file name, or ``-`` (stdin)."""
    return "argument" if file is None else (getattr(file, "name", None) or "-")


def no_valid_ids_message(source: str, invalid: int) -> str:
    """Why nothing was enqueued: an empty input is not the same mistake as a file of bad ids."""
    where = {"argument": "the arguments", "-": "stdin", "<stdin>": "stdin"}.get(source, source)
    if invalid == 0:
        return f"no ids in {where} (blank lines and # comments are skipped)"
    return (f"no valid call ids in {where}: {invalid} invalid {'entry' if invalid == 1 else 'entries'} skipped "
            "(a call id is AC followed by 1-64 letters or digits)")


def invalid_rest_message(invalid: int) -> str | None:
    """The one line that stands for the invalid entries past :data:`MAX_REPORTED_INVALID`."""
    if invalid > MAX_REPORTED_INVALID:
        return f"… and {invalid - MAX_REPORTED_INVALID} more invalid lines (skipped)"
    return None


def invalid_printer(source: str, echo: Callable[[str], object]) -> OnInvalid:
    """An ``on_invalid`` that hands ``echo`` one line per bad id, the first :data:`MAX_REPORTED_INVALID` of them."""
    def report(item: InvalidId, count: int) -> None:
        if count <= MAX_REPORTED_INVALID:
            echo(f"{item.message(source)} (skipped)")

    return report


def enqueue_stream(engine: Engine, items: Iterable[str | InvalidId | None],
                   on_invalid: OnInvalid | None = None, *, now: datetime,
                   workspace: str = DEFAULT_WORKSPACE) -> EnqueueCounts:
    """Enqueue valid ids in batches into ``workspace``'s queue, due at ``now`` (queued ids stay as they are,
    whatever their workspace); report invalid ones."""
    valid = new = invalid = 0
    batch: list[str] = []
    seen_in_batch: set[str] = set()

    def flush() -> None:
        nonlocal new
        if batch:
            with engine.begin() as conn:
                new += store.enqueue_ids(conn, batch, now, workspace=workspace)
            batch.clear()
            seen_in_batch.clear()

    if engine.dialect.name == "sqlite":
        # Random-key inserts into a large index thrash SQLite's default 2 MiB
        # page cache; 16 MiB takes most of the kernel time off a million-id
        # enqueue (15 s -> 9 s here) and bounds memory all the same.
        @sa_event.listens_for(engine, "connect")
        def _cache(dbapi_conn: Any, _record: Any) -> None:
            dbapi_conn.execute("PRAGMA cache_size = -16384")

        engine.dispose()
    for item in items:
        if item is None:
            continue
        if isinstance(item, InvalidId):
            invalid += 1
            if on_invalid is not None:
                on_invalid(item, invalid)
            continue
        valid += 1
        if item in seen_in_batch:
            continue
        seen_in_batch.add(item)
        batch.append(item)
        if len(batch) >= ENQUEUE_BATCH:
            flush()
    flush()
    if new >= ANALYZE_AFTER:
        # Fresh statistics, or the planner may sort the whole queue to claim from it.
        with engine.begin() as conn:
            store.analyze_queue(conn)
    return EnqueueCounts(valid, new, invalid)


def count_ids(items: Iterable[str | InvalidId | None], on_invalid: OnInvalid | None = None) -> IdCounts:
    """Count valid and invalid entries without enqueuing (a dry run), reporting the invalid ones."""
    valid = invalid = 0
    for item in items:
        if isinstance(item, InvalidId):
            invalid += 1
            if on_invalid is not None:
                on_invalid(item, invalid)
        elif item is not None:
            valid += 1
    return IdCounts(valid, invalid)
