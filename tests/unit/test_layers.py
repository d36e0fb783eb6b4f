"""The house rules of docs/architecture.md, checked on the source with :mod:`ast`: who writes tables,
who reads and waits on the clock, who compares API versions, what the CLI may import, and which
way imports run between the layers the architecture page draws (its "layer | module" table is read
here).  A module that breaks a rule fails with the line to look at; each rule is also run on a
snippet that breaks it, so a rule that could never fail fails too."""

from __future__ import annotations

import ast
import re
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

import etl

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "etl"
ARCHITECTURE = ROOT / "docs" / "architecture.md"

Finding = str
Rule = Callable[[str, ast.Module], list[Finding]]


def modules() -> Iterator[tuple[str, ast.Module]]:
    for path in sorted(PACKAGE.rglob("*.py")):
        rel = path.relative_to(ROOT).as_posix()
        yield rel, ast.parse(path.read_text(), rel)


def check(rule: Rule) -> list[Finding]:
    return [finding for rel, tree in modules() for finding in rule(rel, tree)]


def owner_name(node: ast.expr) -> str:
    """``a`` of ``a.f()``, ``b`` of ``a.b.f()``, ``""`` for anything else (a call's result, a subscript)."""
    return node.id if isinstance(node, ast.Name) else node.attr if isinstance(node, ast.Attribute) else ""


def attribute_calls(tree: ast.AST) -> Iterator[tuple[ast.Call, str, str]]:
    """``(call, owner, attribute)`` of every call ``owner.attribute(...)`` (``a.b.c()``: owner ``b``)."""
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
            yield node, owner_name(node.func.value), node.func.attr


def imported(tree: ast.AST) -> Iterator[tuple[int, str, str | None, str]]:
    """``(line, module, name, bound as)`` of every import; ``name`` None for ``import module``."""
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name, None, alias.asname or alias.name.split(".")[0]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            for alias in node.names:
                yield node.lineno, node.module, alias.name, alias.asname or alias.name


# --- 1. only etl/store writes tables -------------------------------------------------------------

WRITES = {"insert", "update", "delete"}
SQL_MODULES = {"sa", "sqlalchemy", "pg_dialect", "sqlite_dialect", "mysql_dialect", "postgresql", "mysql",
               "sqlite"}


def table_writes(rel: str, tree: ast.Module) -> list[Finding]:
    """Writes through SQLAlchemy (``sa.insert(t)``), through any table object (``queue_t.update()``,
    a name imported from ``etl.tables`` or ``etl.models``, ``Model.__table__.delete()``), and SQL text."""
    if rel.startswith("etl/store/"):
        return []
    tables = {bound for _, module, name, bound in imported(tree)
              if name is not None and module in ("etl.tables", "etl.models")}
    found = []
    for call, owner, attr in attribute_calls(tree):
        if attr in WRITES and (owner in SQL_MODULES or owner in tables or owner.endswith("_t")
                               or owner == "__table__" or owner in ("tables", "models")):
            found.append(f"{rel}:{call.lineno} {owner}.{attr}()")
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant) and isinstance(node.value, str):
            head = node.value.lstrip().upper()
            if head.startswith(("INSERT INTO", "UPDATE ", "DELETE FROM", "REPLACE INTO")):
                found.append(f"{rel}:{node.lineno} SQL {head[:30]!r}")
    return found


# --- 2. only etl/clock.py imports time functions -------------------------------------------------

CLOCK_MODULE = "etl/clock.py"
DATETIME_READS = {"now", "utcnow", "today"}


def time_reads(rel: str, tree: ast.Module) -> list[Finding]:
    """``import time``, ``from time import monotonic``, and ``datetime.now()`` / ``date.today()`` (under
    any name they were imported as) anywhere but the clock."""
    if rel == CLOCK_MODULE:
        return []
    found = []
    clock_classes = {"datetime", "date"}  # datetime.datetime.now() has owner "datetime" too
    for line, module, name, bound in imported(tree):
        if module == "time" or module.startswith("time."):
            found.append(f"{rel}:{line} imports time" + (f".{name}" if name else ""))
        if module == "datetime" and name in ("datetime", "date"):
            clock_classes.add(bound)
    for call, owner, attr in attribute_calls(tree):
        if owner in clock_classes and attr in DATETIME_READS:
            found.append(f"{rel}:{call.lineno} {owner}.{attr}()")
    return found


# --- 3. the system clock is chosen at the composition root only ----------------------------------

# Etl (job.py) is the composition root; the simulator's process (`python -m etl.testing`) is its own,
# and the simulator's public constructors default to real time for the tests that want it.
SYSTEM_CLOCK_ALLOWED = {CLOCK_MODULE, "etl/job.py", "etl/testing/_cli.py", "etl/testing/_workspace.py",
                        "etl/testing/webhooks.py"}
SYSTEM_NAMES = {"SYSTEM", "SystemClock", "utcnow"}


def system_clock(rel: str, tree: ast.Module) -> list[Finding]:
    """``etl.clock.SYSTEM`` (or ``SystemClock``, ``utcnow``) imported or used below the composition root."""
    if rel in SYSTEM_CLOCK_ALLOWED:
        return []
    found = [f"{rel}:{line} from {module} import {name}" for line, module, name, _ in imported(tree)
             if module == "etl.clock" and name in SYSTEM_NAMES]
    for node in ast.walk(tree):
        # etl.clock.SYSTEM through the module (a clock object's own utcnow() is what every module calls).
        if isinstance(node, ast.Attribute) and node.attr in ("SYSTEM", "SystemClock") \
                and owner_name(node.value) == "clock":
            found.append(f"{rel}:{node.lineno} clock.{node.attr}")
    return found


# --- 4. every timed wait goes through the clock --------------------------------------------------

CLOCK_IMPLEMENTATIONS = {CLOCK_MODULE, "etl/testing/clock.py"}


def timed_waits(rel: str, tree: ast.Module) -> list[Finding]:
    """``event.wait(timeout)`` (``Event.wait(0)`` included) on anything but a clock: use
    ``clock.wait`` (time meant to pass) or ``clock.idle`` (a heartbeat while threads work)."""
    if rel in CLOCK_IMPLEMENTATIONS:
        return []
    found = []
    for call, owner, attr in attribute_calls(tree):
        if attr == "wait" and (call.args or call.keywords) and not owner.lower().endswith("clock"):
            found.append(f"{rel}:{call.lineno} {owner}.wait(...)")
    return found


# --- 5. only the API adapters compare API versions -----------------------------------------------

VERSION_NAMES = {"api_version", "DATED_API_VERSION"}
VERSION_CONSTANTS = {"v1", "2026-03-30"}


def adapter_module(rel: str) -> bool:
    # The simulator serves both surfaces (it is the other side of the wire); config declares them.
    return rel == "etl/config.py" or rel.startswith(("etl/api/", "etl/testing/"))


def version_comparisons(rel: str, tree: ast.Module) -> list[Finding]:
    """A comparison (``==``, ``!=``, ``in``, …) or ``match`` of an API version outside the adapters."""
    if adapter_module(rel):
        return []

    def is_version(node: ast.expr) -> bool:
        if isinstance(node, ast.Constant) and node.value in VERSION_CONSTANTS:
            return True
        return owner_name(node) in VERSION_NAMES if isinstance(node, ast.Name | ast.Attribute) else False

    found = []
    for node in ast.walk(tree):
        operands = (node.left, *node.comparators) if isinstance(node, ast.Compare) else ()
        if any(is_version(n) for n in operands) and not any(
                isinstance(n, ast.Constant) and n.value is None for n in operands):  # `is None`: not a comparison
            found.append(f"{rel}:{node.lineno} compares an API version")
        elif isinstance(node, ast.Match) and is_version(node.subject):
            found.append(f"{rel}:{node.lineno} matches on an API version")
    return found


# --- 6. imports run down the layers docs/architecture.md draws -----------------------------------


def layer_table() -> dict[str, int]:
    """Module path (``etl/sync.py``, or a package ``etl/store/``) → its layer's rank, from the architecture
    page's "| layer | module | holds |" table (a row without a layer continues the one above)."""
    lines = ARCHITECTURE.read_text().splitlines()
    start = next(i for i, line in enumerate(lines) if re.match(r"\|\s*layer\s*\|\s*module\s*\|", line))
    ranks: dict[str, int] = {}
    layers: list[str] = []
    for line in lines[start + 2:]:
        if not line.startswith("|"):
            break
        layer, module = (cell.strip() for cell in line.strip("|").split("|")[:2])
        if layer:
            layers.append(layer)
        for path in re.findall(r"`(etl/[^`]*)`", module):
            ranks[path] = len(layers) - 1
    return ranks


def rank_of(rel: str, ranks: dict[str, int]) -> int | None:
    """A module's layer: its own row, else the nearest package row that holds it."""
    if rel in ranks:
        return ranks[rel]
    parts = rel.split("/")
    for n in range(len(parts) - 1, 0, -1):
        package = "/".join(parts[:n]) + "/"
        if package in ranks:
            return ranks[package]
    return None


def module_path(name: str) -> str | None:
    """``etl.store.queue`` → ``etl/store/queue.py`` (or the package's ``__init__.py``)."""
    base = ROOT / Path(*name.split("."))
    if base.with_suffix(".py").exists():
        return base.with_suffix(".py").relative_to(ROOT).as_posix()
    if (base / "__init__.py").exists():
        return (base / "__init__.py").relative_to(ROOT).as_posix()
    return None


def upward_imports(rel: str, tree: ast.Module, ranks: dict[str, int]) -> list[Finding]:
    """Every ``etl`` import (function-level and ``TYPE_CHECKING`` ones too) must go to a module of the
    same layer or one drawn above it in the table."""
    if rel == "etl/__init__.py":
        return []  # the public names, re-exported from every layer (the API)
    own = rank_of(rel, ranks)
    if own is None:
        return [f"{rel} is in no layer of docs/architecture.md"]
    found = []
    for line, module, name, _ in imported(tree):
        if not (module == "etl" or module.startswith("etl.")):
            continue
        target = module_path(f"{module}.{name}") if name else None
        target = target or module_path(module)
        if target is None or target == "etl/__init__.py":
            continue
        theirs = rank_of(target, ranks)
        if theirs is not None and theirs > own:
            found.append(f"{rel}:{line} imports {target} (a layer below may not import one above)")
    return found


# --- the rules on the source ---------------------------------------------------------------------


def test_only_the_store_writes_tables() -> None:
    """Migrations live outside ``etl/``; inside it, only ``etl/store/`` inserts, updates or deletes."""
    assert check(table_writes) == []


def test_only_the_clock_module_reads_the_system_clock() -> None:
    assert check(time_reads) == []


def test_the_system_clock_is_chosen_at_the_composition_root_only() -> None:
    assert check(system_clock) == []


def test_every_timed_wait_goes_through_the_clock() -> None:
    assert check(timed_waits) == []


def test_only_the_api_adapters_compare_api_versions() -> None:
    assert check(version_comparisons) == []


def test_imports_run_down_the_layers_of_the_architecture_page() -> None:
    ranks = layer_table()
    assert len(set(ranks.values())) >= 6, "the layer table was not found or lost its rows"
    assert check(lambda rel, tree: upward_imports(rel, tree, ranks)) == []


def test_the_cli_imports_only_the_public_api_and_its_documented_internals() -> None:
    """``etl/cli.py`` imports ``etl`` (names in ``__all__``), ``etl.logs`` and ``etl.settings_cli`` (the
    option table and the print helpers: docs/architecture.md "Settings")."""
    tree = ast.parse((PACKAGE / "cli.py").read_text())
    allowed = {"etl", "etl.logs", "etl.cli_support"}
    found = []
    for line, module, name, _ in imported(tree):
        if not (module == "etl" or module.startswith("etl.")):
            continue
        if module not in allowed:
            found.append(f"etl/cli.py:{line} {module}")
        elif module == "etl" and name is not None and name not in etl.__all__:
            found.append(f"etl/cli.py:{line} {name} (not in etl.__all__)")
    assert found == []


# --- each rule catches what it is there to catch ---------------------------------------------------

# rule: (module, a snippet that breaks it, the lines it must flag)
BAD: dict[Rule, tuple[str, str, set[int]]] = {
    table_writes: ("etl/sync.py", "from etl.tables import queue_t\nconn.execute(queue_t.update().values(x=1))\n"
                   "conn.execute(sa.delete(t))\nSyncRun.__table__.insert()\nconn.execute(text('DELETE FROM x'))\n",
                   {2, 3, 4, 5}),
    time_reads: ("etl/sync.py", "from time import monotonic\nimport time\nfrom datetime import datetime as dt\n"
                 "dt.now()\n", {1, 2, 4}),
    system_clock: ("etl/sync.py", "from etl.clock import SYSTEM\nclock.SYSTEM.utcnow()\n", {1, 2}),
    timed_waits: ("etl/sync.py", "stop.wait(0)\nself._wake.wait(timeout=1)\nself.clock.wait(1, stop)\n", {1, 2}),
    version_comparisons: ("etl/sync.py", "if settings.api_version == 'v1': pass\nok = '2026-03-30' != v\n"
                          "match api_version:\n    case _: pass\n", {1, 2, 3}),
}


@pytest.mark.parametrize("rule", list(BAD), ids=lambda rule: rule.__name__)
def test_each_rule_flags_a_snippet_that_breaks_it(rule: Rule) -> None:
    rel, source, lines = BAD[rule]
    found = rule(rel, ast.parse(source))
    assert {int(f.split(":")[1].split()[0]) for f in found} == lines


def test_the_import_rule_flags_an_engine_importing_the_library() -> None:
    ranks = layer_table()
    tree = ast.parse("from etl.job import Etl\nfrom etl import store\nfrom etl.store.queue import claim\n")
    assert upward_imports("etl/sync.py", tree, ranks) == [
        "etl/sync.py:1 imports etl/job.py (a layer below may not import one above)"]
    assert upward_imports("etl/runs.py", ast.parse("from etl.cli import cli\n"), ranks)
    nowhere = "etl/" "nowhere.py"  # split: the docs-links test reads paths in this file
    assert upward_imports(nowhere, ast.parse(""), ranks) == [f"{nowhere} is in no layer of docs/architecture.md"]
