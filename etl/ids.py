"""Call ids: the one validation rule, and streaming them out of files.

A valid id is ``AC`` followed by 1 to 64 ASCII letters or digits (docs/contract.md).
Validation happens before an id reaches the queue or a URL, so no path
separator, space or control character can ever be sent to the API.
"""

from __future__ import annotations

import codecs
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import BinaryIO

MAX_ID_CHARS = 64  # letters or digits after "AC"
CALL_ID_LENGTH = 2 + MAX_ID_CHARS  # the widest valid id: the width of every call_id column
CALL_ID_RE = re.compile(rf"AC[A-Za-z0-9]{{1,{MAX_ID_CHARS}}}")
# Longer lines are cut before anything else looks at them: a 10,000-character
# line must not become a 10,000-character log message.
_MAX_LINE_BYTES = 256
_SHOW_CHARS = 40


def is_valid_call_id(value: str) -> bool:
    return CALL_ID_RE.fullmatch(value) is not None


@dataclass(frozen=True)
class InvalidId:
    """An input line that is not a call id: where it was, and what it looked like."""

    line: int
    shown: str
    reason: str

    def message(self, source: str) -> str:
        shown = f": {self.shown}" if self.shown else ""
        return f"{source}:{self.line}: {self.reason}{shown}"


def describe_invalid(raw: str) -> str:
    """Why ``raw`` is not a call id, in a few words."""
    if not raw.startswith("AC"):
        return "does not start with AC"
    rest = raw[2:]
    if not rest:
        return "nothing after AC"
    if len(rest) > MAX_ID_CHARS:
        return f"too long ({len(raw)} characters, at most {CALL_ID_LENGTH})"
    if "/" in rest or "\\" in rest:
        return "contains a path separator"
    if any(c in " \t\r\n" for c in rest):
        return "contains white space"
    if any(ord(c) < 32 or 127 <= ord(c) < 160 for c in rest):
        return "contains a control character"
    if any(c.isspace() for c in rest):
        return "contains white space"
    return "contains characters other than ASCII letters and digits"


def shown(raw: str) -> str:
    """A printable, bounded rendering of a bad value for messages."""
    text = ascii(raw[:_SHOW_CHARS])
    return text + ("…" if len(raw) > _SHOW_CHARS else "")


def check_ids(values: Iterable[str], *, first_line: int = 1) -> Iterator[str | InvalidId]:
    """Each value as a valid id (str) or an :class:`InvalidId` with its position."""
    for n, value in enumerate(values, start=first_line):
        if CALL_ID_RE.fullmatch(value):
            yield value
        else:
            yield InvalidId(n, shown(value), describe_invalid(value))


def read_id_lines(stream: BinaryIO) -> Iterator[str | InvalidId | None]:
    """Stream a file of ids, one per line, in constant memory.

    Blank lines and ``#`` comments give ``None`` (skipped, but they still count
    as lines so reported line numbers match the file).  Surrounding white space
    (including a Windows ``\\r``) is stripped, and so is a UTF-8 byte-order mark
    at the start of the file.  Bytes that are not UTF-8 and
    over-long lines become :class:`InvalidId` values.
    """
    for n, raw in enumerate(_bounded_lines(stream), start=1):
        if n == 1 and raw is not None and raw.startswith(codecs.BOM_UTF8):
            raw = raw[len(codecs.BOM_UTF8):]  # Windows editors start UTF-8 files with a byte-order mark
        if raw is None:
            yield InvalidId(n, "", f"line longer than {_MAX_LINE_BYTES} bytes")
            continue
        try:
            # Only white space that can surround an id in a file; other control
            # characters must be reported, not silently stripped.
            text = raw.decode("utf-8").strip(" \t\r\n")
        except UnicodeDecodeError:
            yield InvalidId(n, shown(raw.decode("utf-8", "replace").strip()), "not UTF-8 text")
            continue
        if not text or text.startswith("#"):
            yield None
        elif CALL_ID_RE.fullmatch(text):
            yield text
        else:
            yield InvalidId(n, shown(text), describe_invalid(text))


def _bounded_lines(stream: BinaryIO) -> Iterator[bytes | None]:
    """Lines of ``stream``; ``None`` for a line over the limit (read through, not kept)."""
    while True:
        line = stream.readline(_MAX_LINE_BYTES + 1)
        if not line:
            return
        if len(line) > _MAX_LINE_BYTES and not line.endswith(b"\n"):
            # Drain the rest of the long line in bounded chunks.
            while True:
                more = stream.readline(65536)
                if not more or more.endswith(b"\n"):
                    break
            yield None
            continue
        yield line
