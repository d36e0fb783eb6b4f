"""dbt sources for the job's tables and views, generated from the schema's own metadata.

``sources(...)`` builds one dbt source (https://docs.getdbt.com/reference/source-properties)
holding every table of :data:`etl.models.Base.metadata` and every analyst view,
so a table or view another module adds is included without a change here:

* descriptions: a table's and column's ``comment`` (``etl/models.py`` has one on
  every column); a view's paragraph and column table in ``docs/schema.md``
  (the one place views are documented; the wheel ships a copy);
* freshness: on tables and views with a synced-at column (the first of
  :data:`LOADED_AT_COLUMNS` they have), ``loaded_at_field`` with warn and
  error thresholds in hours; not on :data:`NO_FRESHNESS` (``rejected_records``
  logs problems: empty or old is the good case);
* tests on keys: ``not_null`` on every primary-key column; ``unique`` on a
  one-column key, and on a composite key dbt's documented expression form
  (``unique`` with ``column_name: "concat(a, '|', b)"`` at table level),
  standard SQL that dbt-postgres runs with no package.  Its limit: two keys
  whose text columns contain ``|`` could collide; the key columns here are
  ids and positions.

Pure: no database connection; :meth:`etl.Etl.dbt_sources` adds the schema
name of the configured database and writes the file.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from sqlalchemy import MetaData, Table

from etl.errors import UsageError

# Columns that say when a row last arrived, in order of preference.
LOADED_AT_COLUMNS = ("last_synced_at", "last_seen_at", "synced_at")
# Tables that log problems rather than hold synced data: empty or old is the good case, so no freshness.
NO_FRESHNESS = frozenset({"rejected_records"})
DEFAULT_SOURCE_NAME = "openphone"
DEFAULT_WARN_HOURS = 24
DEFAULT_ERROR_HOURS = 72

_VIEW_HEADING = re.compile(r"^### `([a-z0-9_]+)` \(view\)\s*$")
_ROW = re.compile(r"^\| `([a-z0-9_]+)` \|[^|]*\|[^|]*\| (.*) \|\s*$")


@dataclass(frozen=True, slots=True)
class ViewDoc:
    """A view as docs/schema.md documents it: its paragraph and (name, meaning) per column."""

    description: str
    columns: tuple[tuple[str, str], ...]


def schema_doc_path() -> Path:
    """docs/schema.md: beside the package in a checkout, or the copy inside an installed wheel."""
    here = Path(__file__).resolve().parent
    for candidate in (here / "_docs" / "schema.md", here.parent / "docs" / "schema.md"):
        if candidate.is_file():
            return candidate
    raise UsageError("docs/schema.md not found; the installation is incomplete")


def parse_view_docs(text: str) -> dict[str, ViewDoc]:
    """Every ``### `name` (view)`` section of docs/schema.md: its first paragraph and column table."""
    views: dict[str, ViewDoc] = {}
    lines = text.splitlines()
    i = 0
    while i < len(lines):
        match = _VIEW_HEADING.match(lines[i])
        i += 1
        if match is None:
            continue
        prose: list[str] = []
        columns: list[tuple[str, str]] = []
        while i < len(lines) and not lines[i].startswith("#"):
            row = _ROW.match(lines[i])
            if row is not None:
                columns.append((row.group(1), row.group(2).strip()))
            elif not columns and not lines[i].startswith("|"):
                prose.append(lines[i].strip())
            i += 1
        first = " ".join(prose).strip().split("  ")[0]  # the first paragraph (blank lines join as "  ")
        views[match.group(1)] = ViewDoc(first, tuple(columns))
    return views


def _key_tests(table: Table) -> tuple[list[dict[str, Any]], dict[str, list[Any]]]:
    """(table-level tests, column name -> column tests) for ``table``'s primary key."""
    key = [str(c.name) for c in table.primary_key.columns]
    column_tests: dict[str, list[Any]] = {name: ["not_null"] for name in key}
    if len(key) == 1:
        column_tests[key[0]] = ["unique", "not_null"]
        return [], column_tests
    if not key:
        return [], column_tests
    expression = "concat(" + ", '|', ".join(key) + ")"
    return [{"unique": {"column_name": expression}}], column_tests


def _freshness(warn_hours: int, error_hours: int) -> dict[str, Any]:
    return {"warn_after": {"count": warn_hours, "period": "hour"},
            "error_after": {"count": error_hours, "period": "hour"}}


def _loaded_at(columns: Iterable[str]) -> str | None:
    names = set(columns)
    return next((c for c in LOADED_AT_COLUMNS if c in names), None)


def check_thresholds(warn_hours: int, error_hours: int) -> None:
    """UsageError unless 0 < warn < error (hours)."""
    if warn_hours <= 0 or error_hours <= 0:
        raise UsageError("freshness thresholds must be positive hours")
    if warn_hours >= error_hours:
        raise UsageError(f"the warning threshold ({warn_hours} h) must be below the error threshold "
                         f"({error_hours} h)")


def sources(metadata: MetaData, views: Mapping[str, ViewDoc | None], *, schema: str | None,
            name: str = DEFAULT_SOURCE_NAME, warn_hours: int = DEFAULT_WARN_HOURS,
            error_hours: int = DEFAULT_ERROR_HOURS, database: str | None = None) -> dict[str, Any]:
    """The dbt properties document (``version: 2``, one source) for ``metadata``'s tables and ``views``
    (name -> its docs, None when undocumented: listed with its name only)."""
    check_thresholds(warn_hours, error_hours)
    tables: list[dict[str, Any]] = []
    for table in metadata.sorted_tables:
        table_tests, column_tests = _key_tests(table)
        entry: dict[str, Any] = {"name": str(table.name), "description": str(table.comment or "")}
        loaded_at = None if table.name in NO_FRESHNESS else _loaded_at(c.name for c in table.columns)
        if loaded_at is not None:
            entry["loaded_at_field"] = loaded_at
            entry["freshness"] = _freshness(warn_hours, error_hours)
        if table_tests:
            entry["data_tests"] = table_tests
        columns = []
        for column in table.columns:
            item: dict[str, Any] = {"name": str(column.name), "description": str(column.comment or "")}
            if column.name in column_tests:
                item["data_tests"] = column_tests[column.name]
            columns.append(item)
        entry["columns"] = columns
        tables.append(entry)
    for view_name, doc in views.items():
        entry = {"name": view_name, "description": (doc.description if doc else "") + " (view)"}
        if doc is not None:
            loaded_at = _loaded_at(c for c, _ in doc.columns)
            if loaded_at is not None:
                entry["loaded_at_field"] = loaded_at
                entry["freshness"] = _freshness(warn_hours, error_hours)
            entry["columns"] = [{"name": c, "description": meaning} for c, meaning in doc.columns]
        tables.append(entry)
    source: dict[str, Any] = {
        "name": name,
        "description": "OpenPhone (Quo) calls, summaries and transcripts kept by openphone-summary-sync "
                       "(generated by `etl dbt sources`; docs/schema.md).",
    }
    if database is not None:
        source["database"] = database
    if schema is not None:
        source["schema"] = schema
    source["tables"] = tables
    return {"version": 2, "sources": [source]}


def sources_yaml(document: Mapping[str, Any]) -> str:
    """``document`` as YAML, in the order built, with a header saying how to regenerate it."""
    body = yaml.safe_dump(dict(document), sort_keys=False, allow_unicode=True, width=100)
    return "# Generated by `etl dbt sources`; regenerate after upgrading rather than editing.\n" + body


def all_views(known: Iterable[str], docs: Mapping[str, ViewDoc]) -> dict[str, ViewDoc | None]:
    """The views to list: ``known`` (the migrations' views) in order, then any other documented view."""
    listed: dict[str, ViewDoc | None] = {v: docs.get(v) for v in known}
    for name, doc in docs.items():
        listed.setdefault(name, doc)
    return listed


def default_schema(dialect: str, database: str | None) -> str | None:
    """Where the tables live for dbt: PostgreSQL ``public``, MySQL/MariaDB the database, SQLite ``main``."""
    if dialect == "postgresql":
        return "public"
    if dialect in ("mysql", "mariadb"):
        return database
    if dialect == "sqlite":
        return "main"
    return None
