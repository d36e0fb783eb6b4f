"""Record by record, only when a batch failed: each write in a savepoint of its own (issue 25).

The fast path writes a page or a batch as one statement set; when that
fails, the caller opens a new transaction and hands the records here, so that
the ones the database stores are kept and only the one it refuses is set
aside (``rejected_records``) with the database's reason.  A savepoint per
record always would cost every page; this costs only a failed one.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TypeVar

from sqlalchemy.engine import Connection
from sqlalchemy.exc import DBAPIError

T = TypeVar("T")

# What a record can fail with on its way into the database: the database's refusal, or the driver's
# before it is sent (a text that does not encode: UnicodeEncodeError is a ValueError; an overflow).
RECORD_ERRORS = (DBAPIError, ValueError, ArithmeticError)


def each_storable(conn: Connection, records: Sequence[T], write: Callable[[Connection, T], object],
                  ) -> tuple[list[T], list[tuple[T, str]]]:
    """``write`` each record in a savepoint; returns (stored, [(refused, why)])."""
    stored: list[T] = []
    refused: list[tuple[T, str]] = []
    for record in records:
        try:
            with conn.begin_nested():
                write(conn, record)
        except RECORD_ERRORS as exc:
            refused.append((record, short_error(exc)))
        else:
            stored.append(record)
    return stored, refused


def short_error(exc: BaseException) -> str:
    orig = getattr(exc, "orig", None) or exc
    return " ".join(f"{type(orig).__name__}: {orig}".split())[:300]
