"""The house rules of docs/architecture.md, checked on the source: who writes tables.

Each rule names the modules allowed to break it (``etl/store/`` here; migrations live outside
``etl/``); a new module that breaks one fails here with the line to look at."""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "etl"

WRITES = {"insert", "update", "delete"}


def modules() -> Iterator[tuple[str, ast.Module]]:
    for path in sorted(PACKAGE.rglob("*.py")):
        rel = path.relative_to(ROOT).as_posix()
        yield rel, ast.parse(path.read_text(), rel)


def attribute_calls(tree: ast.AST) -> Iterator[tuple[int, str, str]]:
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
            owner = node.func.value
            name = owner.id if isinstance(owner, ast.Name) else owner.attr if isinstance(owner, ast.Attribute) else ""
            yield node.lineno, name, node.func.attr


def test_only_the_store_writes_tables() -> None:
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
