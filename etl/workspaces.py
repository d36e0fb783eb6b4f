"""Several workspaces in one deployment (issue 27): the workspaces file and each workspace's settings.

A workspaces file (``--workspaces FILE`` / ``ETL_WORKSPACES``) is TOML, one
table per workspace::

    [workspace.north]
    api_key_env = "QUO_KEY_NORTH"      # the environment variable holding the key
    # optional: base_url, api_version ("v1" | "2026-03-30"), transcripts (bool),
    #           rate (requests/s of this key), webhook_secrets_env
    [workspace.south]
    api_key_env = "QUO_KEY_SOUTH"

Keys never enter the file or the database: the file names the environment
variable, :func:`settings_for` reads it.  Without a file there is one workspace,
:data:`DEFAULT_WORKSPACE`, with today's single-workspace settings.  Every data
row carries its workspace's name (the ``workspace`` column); a workspace's
settings are the job's settings with its name, key and its own values in
place (``Settings.workspace``).  Pure apart from reading the file.
"""

from __future__ import annotations

import os
import re
import tomllib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from etl.config import (
    API_VERSIONS,
    DEFAULT_WORKSPACE,
    Settings,
    check_api_version,
    check_base_url,
)
from etl.errors import UsageError
from etl.ratelimit import rate_problem

# A workspace's name is a URL path segment (the receiver's /webhooks/<name>), a metric label and a
# column value: short, plain, case-sensitive.
NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,62}")
NAME_LENGTH = 64
# /webhooks/openphone is the default workspace's receiver path (every deployment before workspaces
# registered it), so no workspace may be named so (docs/webhooks.md).
RESERVED_NAMES = frozenset({"openphone"})
_ENV_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_RESERVED_WHY = "/webhooks/openphone is the default workspace's receiver path"
_KEYS = {"api_key_env", "base_url", "api_version", "transcripts", "rate", "webhook_secrets_env"}


@dataclass(frozen=True)
class WorkspaceConfig:
    """One workspace of the file: its name and where its key (and webhook secrets) are; None: the job's own."""

    name: str
    api_key_env: str | None = None
    base_url: str | None = None
    api_version: str | None = None
    transcripts: bool | None = None
    rate: float | None = None
    webhook_secrets_env: str | None = None


DEFAULT = WorkspaceConfig(DEFAULT_WORKSPACE)


def check_name(name: str) -> str:
    """A workspace name, refused (:class:`UsageError`) unless letters, digits, ``-`` and ``_`` (at most 63)."""
    if not NAME_RE.fullmatch(name):
        raise UsageError(f"workspace name {name!r} is not valid: use 1 to 63 letters, digits, '-' or '_', "
                         "starting with a letter or digit")
    if name in RESERVED_NAMES:
        raise UsageError(f"workspace name {name!r} is reserved: {_RESERVED_WHY}")
    return name


def parse_workspaces(text: str, source: str) -> tuple[WorkspaceConfig, ...]:
    """The workspaces of a file's text (``source`` names it in messages), in the file's order."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise UsageError(f"{source} is not valid TOML: {exc}") from None
    unknown = sorted(set(data) - {"workspace"})
    if unknown:
        raise UsageError(f"{source}: unknown table {unknown[0]!r}; workspaces are [workspace.NAME] tables")
    tables = data.get("workspace")
    if not isinstance(tables, dict) or not tables:
        raise UsageError(f"{source} declares no workspace: add a [workspace.NAME] table with api_key_env")
    return tuple(_workspace(name, table, source) for name, table in tables.items())


def load_workspaces(path: str | os.PathLike[str]) -> tuple[WorkspaceConfig, ...]:
    """The workspaces of a TOML file (a :class:`UsageError` naming the file and the problem)."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise UsageError(f"cannot read the workspaces file {os.fspath(path)!r}: {reason}") from None
    return parse_workspaces(text, os.fspath(path))


def select(workspaces: Sequence[WorkspaceConfig], names: Iterable[str]) -> tuple[WorkspaceConfig, ...]:
    """The workspaces named (all of them when none is), in the file's order; an unknown name is refused."""
    wanted = list(dict.fromkeys(names))
    if not wanted:
        return tuple(workspaces)
    known = {w.name for w in workspaces}
    for name in wanted:
        if name not in known:
            raise UsageError(f"unknown workspace {name!r}: the workspaces are {', '.join(sorted(known))}")
    return tuple(w for w in workspaces if w.name in wanted)


def settings_for(base: Settings, workspace: WorkspaceConfig, environ: Mapping[str, str] | None = None) -> Settings:
    """``base`` as ``workspace`` runs it: its name, its key (read from its variable now), its own values."""
    env = os.environ if environ is None else environ
    changes: dict[str, Any] = {"workspace": workspace.name}
    if workspace.api_key_env is not None:
        key = env.get(workspace.api_key_env)
        if not key or not key.strip():
            raise UsageError(f"workspace {workspace.name!r}: the environment variable {workspace.api_key_env} "
                             "(its api_key_env) is not set")
        changes["api_key"] = key
    for name in ("base_url", "api_version", "transcripts", "rate"):
        value = getattr(workspace, name)
        if value is not None:
            changes[name] = value
    return base.replace(**changes)


def webhook_secrets_for(workspace: WorkspaceConfig, environ: Mapping[str, str] | None = None) -> tuple[str, ...]:
    """The workspace's webhook signing secrets (comma-separated in its ``webhook_secrets_env``); () if none."""
    if workspace.webhook_secrets_env is None:
        return ()
    env = os.environ if environ is None else environ
    raw = env.get(workspace.webhook_secrets_env, "")
    return tuple(s.strip() for s in raw.split(",") if s.strip())


def _workspace(name: str, table: object, source: str) -> WorkspaceConfig:
    where = f"{source}: [workspace.{name}]"
    if not NAME_RE.fullmatch(name):
        raise UsageError(f"{where}: the name is not valid: use 1 to 63 letters, digits, '-' or '_', "
                         "starting with a letter or digit")
    if name in RESERVED_NAMES:
        raise UsageError(f"{where}: the name is reserved: {_RESERVED_WHY}")
    if not isinstance(table, dict):
        raise UsageError(f"{where} must be a table")
    unknown = sorted(set(table) - _KEYS)
    if unknown:
        raise UsageError(f"{where}: unknown key {unknown[0]!r} (known: {', '.join(sorted(_KEYS))})")
    if "api_key_env" not in table:
        raise UsageError(f"{where} needs api_key_env: the name of the environment variable holding its key")
    for key in ("api_key_env", "webhook_secrets_env"):
        value = table.get(key)
        if value is not None and (not isinstance(value, str) or not _ENV_RE.fullmatch(value)):
            raise UsageError(f"{where}: {key} must be the name of an environment variable, got {value!r} "
                             "(never the key itself)")
    for key in ("base_url", "api_version"):
        if key in table and not isinstance(table[key], str):
            raise UsageError(f"{where}: {key} must be a string")
    base_url = table.get("base_url")
    api_version = table.get("api_version")
    try:
        if base_url is not None:
            base_url = check_base_url(base_url)
        if api_version is not None:
            api_version = check_api_version(api_version)
    except UsageError as exc:
        raise UsageError(f"{where}: {exc.template.format_map({'base_url': 'base_url', 'api_version': 'api_version'})}"
                         ) from None
    transcripts = table.get("transcripts")
    if transcripts is not None and not isinstance(transcripts, bool):
        raise UsageError(f"{where}: transcripts must be true or false")
    rate = table.get("rate")
    if rate is not None:
        if isinstance(rate, bool) or not isinstance(rate, int | float):
            raise UsageError(f"{where}: rate must be a number of requests per second")
        problem = rate_problem(float(rate))
        if problem:
            raise UsageError(f"{where}: rate {problem}")
        rate = float(rate)
    return WorkspaceConfig(name, table["api_key_env"], base_url, api_version, transcripts, rate,
                           table.get("webhook_secrets_env"))


__all__ = ["API_VERSIONS", "DEFAULT", "NAME_LENGTH", "RESERVED_NAMES", "WorkspaceConfig", "check_name",
           "load_workspaces", "parse_workspaces", "select", "settings_for", "webhook_secrets_for"]
