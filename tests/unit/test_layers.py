"""The house rules of docs/architecture.md, checked on the source: who reads the clock, who writes
tables, what the CLI may import.  A module that breaks a rule fails here with the line to look at."""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import etl

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "etl"


def modules() -> Iterator[tuple[str, ast.Module]]:
    for path in sorted(PACKAGE.rglob("*.py")):
        rel = path.relative_to(ROOT).as_posix()
        yield rel, ast.parse(path.read_text(), rel)


def attribute_calls(tree: ast.AST) -> Iterator[tuple[int, str, str]]:
    """``(line, owner, attribute)`` of every call ``owner.attribute(...)`` (``a.b.c()``: owner ``b``)."""
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
            owner = node.func.value
            name = owner.id if isinstance(owner, ast.Name) else owner.attr if isinstance(owner, ast.Attribute) else ""
            yield node.lineno, name, node.func.attr


WRITES = {"insert", "update", "delete"}


def test_only_the_store_writes_tables() -> None:
    """Migrations live outside ``etl/``; inside it, only ``etl/store/`` inserts, updates or deletes."""
    found = []
    for rel, tree in modules():
        if rel.startswith("etl/store/"):
            continue
        for line, owner, attr in attribute_calls(tree):
            if attr in WRITES and owner in {"sa", "sqlalchemy", "pg_dialect", "sqlite_dialect", "mysql_dialect"}:
                found.append(f"{rel}:{line} {owner}.{attr}()")
        for node in ast.walk(tree):
            if isinstance(node, ast.Constant) and isinstance(node.value, str):
                head = node.value.lstrip().upper()
                if head.startswith(("INSERT INTO", "UPDATE ", "DELETE FROM")):
                    found.append(f"{rel}:{node.lineno} SQL {head[:30]!r}")
    assert found == []


CLOCK_READS = {("time", "monotonic"), ("time", "time"), ("time", "sleep"), ("time", "perf_counter"),
               ("time", "time_ns"), ("time", "monotonic_ns"), ("datetime", "now"), ("datetime", "utcnow"),
               ("date", "today")}


def test_only_the_clock_module_reads_the_system_clock() -> None:
    found = [f"{rel}:{line} {owner}.{attr}()" for rel, tree in modules() if rel != "etl/clock.py"
             for line, owner, attr in attribute_calls(tree) if (owner, attr) in CLOCK_READS]
    assert found == []


def test_the_cli_imports_only_the_public_api() -> None:
    tree = ast.parse((PACKAGE / "cli.py").read_text())
    allowed = {"etl", "etl.logs"}
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("etl"):
            if node.module not in allowed:
                found.append(f"etl/cli.py:{node.lineno} from {node.module}")
            elif node.module == "etl":
                found += [f"etl/cli.py:{node.lineno} {a.name} (not in etl.__all__)" for a in node.names
                          if a.name not in etl.__all__]
        elif isinstance(node, ast.Import):
            found += [f"etl/cli.py:{node.lineno} import {a.name}" for a in node.names
                      if a.name.startswith("etl") and a.name not in allowed]
    assert found == []
