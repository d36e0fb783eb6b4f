"""Making API values storable, and refusing those that cannot be (issue 25).  Pure: no I/O.

Every database here takes UTF-8 text without NUL, and timestamps between
year 1 and 9999 — but an API answer is JSON, whose grammar allows an escaped
lone surrogate (``"\\ud800"``), a ``\\u0000``, and any date.  So:

* text columns get :func:`clean_text` (NUL and unpaired surrogates become
  U+FFFD, the replacement character);
* a JSON payload kept whole (``raw_json``, in any field, known or not) gets
  :func:`json_text`: as received where that is storable, else with every
  non-ASCII character escaped, which keeps a lone surrogate as its escape,
  losslessly;
* an item of a listing page that its model refuses (``participants:
  "nobody"``) becomes a :class:`Malformed` in its place (:func:`each_item`),
  instead of failing the page;
* a timestamp outside :data:`EARLIEST` … :data:`LATEST` (year 1, year 9999,
  one that overflows when shifted to UTC) is refused with :class:`Refused`,
  whose message names the field: the caller keeps the record aside
  (``rejected_records``) instead of crashing or dropping it silently.

Each repair is reported once per process through :func:`on_repair` (the
caller decides how to say it: :mod:`etl.logs` logs one warning per kind).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from pydantic import BaseModel, ConfigDict, ValidationError, WrapValidator

__all__ = ["EARLIEST", "LATEST", "REPLACEMENT", "Malformed", "Refused", "clean_text", "each_item", "json_text",
           "on_repair", "utc_in_range", "validation_reason"]

REPLACEMENT = "\ufffd"
# No call, summary or delivery this job stores is older than OpenPhone or centuries ahead.
EARLIEST = datetime(1970, 1, 1)
LATEST = datetime(2200, 1, 1)

_said: set[str] = set()
_listeners: list[Callable[[str], None]] = []


class Refused(ValueError):
    """A value that cannot be stored; the message says which field and why."""


def on_repair(listener: Callable[[str], None]) -> None:
    """Call ``listener(kind)`` the first time each kind of repair happens in this process."""
    _listeners.append(listener)


def _repaired(kind: str) -> None:
    if kind in _said:
        return
    _said.add(kind)
    for listener in list(_listeners):
        listener(kind)


def clean_text(value: str) -> str:
    """``value`` with NUL and unpaired surrogates replaced by U+FFFD."""
    if value.isascii():
        if "\x00" in value:
            _repaired("nul")
            return value.replace("\x00", REPLACEMENT)
        return value
    if "\x00" in value:
        _repaired("nul")
        value = value.replace("\x00", REPLACEMENT)
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        _repaired("surrogate")
        # UTF-16 rejoins valid pairs and gives one U+FFFD per lone surrogate.
        value = value.encode("utf-16", "surrogatepass").decode("utf-16", "replace")
    return value


def json_text(raw: Any) -> str:
    """``raw`` as compact JSON text every database stores: non-ASCII kept as is, unless some of it
    (a lone surrogate, in any field) is not UTF-8: then escaped (``\\ud800``), losslessly.
    JSON escapes NUL itself (``\\u0000``)."""
    text = json.dumps(raw, separators=(",", ":"), ensure_ascii=False)
    if text.isascii():
        return text
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        _repaired("surrogate")
        return json.dumps(raw, separators=(",", ":"), ensure_ascii=True)
    return text


_NO_OFFSET = timedelta(0)


def utc_in_range(value: datetime | None, field: str) -> datetime | None:
    """``value`` as naive UTC (a time without an offset is taken as UTC), or :class:`Refused`
    when it lies outside :data:`EARLIEST` … :data:`LATEST` (or cannot be shifted to UTC at all)."""
    if value is None:
        return None
    try:
        if value.tzinfo is None:
            utc = value
        elif value.utcoffset() == _NO_OFFSET:  # the API's "Z": no shift to compute
            utc = value.replace(tzinfo=None)
        else:
            utc = value.astimezone(UTC).replace(tzinfo=None)
    except (OverflowError, ValueError):
        raise Refused(f"{field}: {value.isoformat()} cannot be shifted to UTC") from None
    if not EARLIEST <= utc < LATEST:
        raise Refused(f"{field}: {value.isoformat()} is outside {EARLIEST.year}-{LATEST.year - 1}")
    return utc


class Malformed(BaseModel):
    """An item of a listing page that its model refused: kept (``raw``, ``reason``) in the page's place,
    so that one bad call costs only itself and the page's other calls line up with the raw JSON."""

    model_config = ConfigDict(frozen=True, arbitrary_types_allowed=True)

    raw: Any
    reason: str


def validation_reason(exc: ValidationError) -> str:
    """A pydantic error in one line: the first field and its message, and how many more."""
    errors = exc.errors(include_url=False, include_input=False)
    if not errors:
        return str(exc)[:500]
    first = errors[0]
    where = ".".join(str(p) for p in first.get("loc", ())) or "item"
    more = f" (+{len(errors) - 1} more)" if len(errors) > 1 else ""
    return f"{where}: {first.get('msg', '')}{more}"[:500]


def each_item(model: type[BaseModel]) -> WrapValidator:
    """For ``list[Annotated[Model | Malformed, each_item(Model)]]``: each item validated alone; one the
    model refuses becomes a :class:`Malformed` in its place instead of failing the whole list."""
    def validate(value: Any, _handler: Any) -> Any:
        if isinstance(value, model | Malformed):
            return value
        try:
            return model.model_validate(value)
        except ValidationError as exc:
            return Malformed(raw=value, reason=validation_reason(exc))
    return WrapValidator(validate)
