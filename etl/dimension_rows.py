"""Turn users, lines and contacts (:mod:`etl.dimensions`) into the rows of their tables (pure, no I/O).

Text is cleaned as the summaries' is (:func:`etl.normalize.clean_text`: NUL and
unpaired surrogates become U+FFFD); ids, emails, numbers and labels are cut at
255 characters; free text (names, companies, field values) is kept whole.
Timestamps become naive UTC; a record with one no database holds (before 1970,
from 2200 on, or one that overflows when shifted to UTC) is refused
(:class:`etl.storable.Refused`, naming the field), as a call is: the caller
keeps it aside in ``rejected_records``.
``raw_json`` is the object as received (escaped JSON where a character cannot
be stored), or, when an adapter kept no raw object, the modelled rows.
Each parent row carries a ``content_hash`` over itself and its child rows, so
an unchanged row is not rewritten.  A contact's phone numbers get their E.164
form (:func:`e164`), the key calls are matched on (docs/schema.md "Matching").
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from etl.dimensions import Contact, ContactField, Line, User
from etl.models import API_ID_LENGTH
from etl.normalize import clean_text, is_e164
from etl.storable import utc_in_range

Row = dict[str, Any]

# Numbers written without a country code are read as North American (+1): the
# API's own numbers are, and a 10-digit number has no other reading worth guessing.
DEFAULT_COUNTRY_CODE = "1"
_SEPARATORS = re.compile(r"[\s\-().\u00a0/]")
_EXTENSION = re.compile(r"(?i)(;ext=|ext\.?|x|#|,|;).*$")


def e164(value: str | None) -> str | None:
    """``value`` as an E.164 number (``+`` and 8 to 15 digits), or None when it cannot be read as one.

    Separators (spaces, dashes, dots, brackets, slashes) and an extension
    (``x12``, ``ext. 12``, ``;ext=12``, ``,12``) are dropped; ``00`` stands for
    ``+``; ten digits (or eleven starting with 1) without ``+`` are a North
    American number.  Anything else without ``+`` is not guessed: None.
    """
    if not value:
        return None
    text = _EXTENSION.sub("", _SEPARATORS.sub("", value.strip()))
    if text.startswith("00"):
        text = "+" + text[2:]
    if text.startswith("+"):
        candidate = text
    elif text.isdigit() and len(text) == 10 and text[0] not in "01":
        candidate = f"+{DEFAULT_COUNTRY_CODE}{text}"
    elif text.isdigit() and len(text) == 11 and text[0] == DEFAULT_COUNTRY_CODE:
        candidate = "+" + text
    else:
        return None
    return candidate if is_e164(candidate) else None


def _text(value: Any) -> str | None:
    return None if value is None else clean_text(str(value))


def _short(value: Any) -> str | None:
    return None if value is None else clean_text(str(value))[:API_ID_LENGTH]


def _utc(value: datetime | None, field: str) -> datetime | None:
    """Naive UTC; a date no database holds is refused (:class:`etl.storable.Refused`, naming ``field``)."""
    return utc_in_range(value, field)


def _full_name(first: str | None, last: str | None) -> str | None:
    name = " ".join(part.strip() for part in (first or "", last or "") if part and part.strip())
    return name or None


def _json_default(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat()
    raise TypeError(f"not JSON: {type(value).__name__}")


def raw_json(raw: Any) -> str:
    """Compact JSON of the object as received (non-ASCII kept), escaped where a character cannot be stored."""
    text = json.dumps(raw, separators=(",", ":"), ensure_ascii=False, default=_json_default)
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:  # a lone surrogate: keep it as its JSON escape
        text = json.dumps(raw, separators=(",", ":"), ensure_ascii=True, default=_json_default)
    return text


def _finish(key: str, raw: Any, parent: Row, children: dict[str, list[Row]]) -> Tree:
    """The tree with its ``raw_json`` (the modelled rows when the adapter kept no raw object) and hash."""
    if raw is None:
        raw = {"modelled": parent, **children}
    parent["raw_json"] = raw_json(raw)
    parent["content_hash"] = _hash(parent, children)
    return Tree(key=key, parent=parent, children=children)


def _hash(parent: Row, children: dict[str, list[Row]]) -> str:
    payload = json.dumps([parent, children], sort_keys=True, default=str, ensure_ascii=True)
    return hashlib.sha256(payload.encode()).hexdigest()


@dataclass(slots=True)
class Tree:
    """One parent row (without its seen columns) and its child rows per table name."""

    key: str
    parent: Row
    children: dict[str, list[Row]] = field(default_factory=dict)


def user_tree(user: User) -> Tree:
    parent: Row = {
        "user_id": _short(user.id), "name": _full_name(_text(user.first_name), _text(user.last_name)),
        "email": _short(user.email), "first_name": _text(user.first_name), "last_name": _text(user.last_name),
        "role": _short(user.role), "group_id": _short(user.group_id), "picture_url": _text(user.picture_url),
        "created_at": _utc(user.created_at, "createdAt"), "updated_at": _utc(user.updated_at, "updatedAt"),
    }
    return _finish(parent["user_id"], user.raw, parent, {})


def line_tree(line: Line) -> Tree:
    """A line; its members (``phone_number_users``) only when the listing said who is on it."""
    parent: Row = {
        "phone_number_id": _short(line.id), "name": _text(line.name), "number": _short(line.number),
        "formatted_number": _short(line.formatted_number), "symbol": _short(line.symbol),
        "group_id": _short(line.group_id), "created_at": _utc(line.created_at, "createdAt"),
        "updated_at": _utc(line.updated_at, "updatedAt"),
    }
    children: dict[str, list[Row]] = {}
    if line.members is not None:
        members: list[Row] = []
        seen: set[str] = set()
        for member in line.members:
            user_id = _short(member.user_id)
            if not user_id or user_id in seen:  # a member listed twice is one membership
                continue
            seen.add(user_id)
            members.append({"phone_number_id": parent["phone_number_id"], "user_id": user_id,
                            "position": len(members), "email": _short(member.email), "role": _short(member.role)})
        children["phone_number_users"] = members
    return _finish(parent["phone_number_id"], line.raw, parent, children)


def _typed(value: Any) -> tuple[str, str | None, float | None, bool | None]:
    """``(value_type, value_text, value_number, value_boolean)`` of one custom field value."""
    if value is None:
        return "null", None, None, None
    if isinstance(value, bool):  # before int: True must never become the number 1
        return "boolean", None, None, value
    if isinstance(value, int | float):
        try:
            number = float(value)
        except OverflowError:  # an integer beyond a double: kept exactly, as text
            number = math.inf
        if math.isfinite(number):
            return "number", None, number, None
        return "string", str(value), None, None  # MariaDB stores no infinity or NaN
    if isinstance(value, str):
        return "string", clean_text(value), None, None
    return "json", raw_json(value), None, None


def custom_field_rows(contact_id: str, position: int, custom: ContactField) -> list[Row]:
    """One row per value: a multi-select list gives one row per selected value (none selected: one null row)."""
    base = {"contact_id": contact_id, "field_position": position, "field_key": _short(custom.key),
            "field_id": _short(custom.id), "name": _text(custom.name), "field_type": _short(custom.type)}
    values = custom.value if isinstance(custom.value, list) else [custom.value]
    if isinstance(custom.value, list) and custom.type != "multi-select":
        values = [custom.value]  # a list in another type is one JSON value
    rows: list[Row] = []
    for value_position, value in enumerate(values or [None]):
        value_type, text, number, boolean = _typed(value)
        rows.append({**base, "value_position": value_position, "value_type": value_type, "value_text": text,
                     "value_number": number, "value_boolean": boolean})
    return rows


def contact_tree(contact: Contact) -> Tree:
    contact_id = _short(contact.id) or ""
    parent: Row = {
        "contact_id": contact_id, "name": _full_name(_text(contact.first_name), _text(contact.last_name)),
        "first_name": _text(contact.first_name), "last_name": _text(contact.last_name),
        "company": _text(contact.company), "role": _text(contact.role), "external_id": _short(contact.external_id),
        "source": _short(contact.source), "source_url": _text(contact.source_url),
        "created_by_user_id": _short(contact.created_by_user_id),
        "created_at": _utc(contact.created_at, "createdAt"), "updated_at": _utc(contact.updated_at, "updatedAt"),
    }
    numbers = [{"contact_id": contact_id, "position": i, "label": _short(v.label), "value": _short(v.value) or "",
                "number_e164": e164(clean_text(v.value)), "value_id": _short(v.id)}
               for i, v in enumerate(contact.phone_numbers)]
    emails = [{"contact_id": contact_id, "position": i, "label": _short(v.label), "value": _text(v.value) or "",
               "value_id": _short(v.id)} for i, v in enumerate(contact.emails)]
    fields = [row for i, f in enumerate(contact.custom_fields) for row in custom_field_rows(contact_id, i, f)]
    children = {"contact_phone_numbers": numbers, "contact_emails": emails, "contact_custom_fields": fields}
    return _finish(contact_id, contact.raw, parent, children)
