"""The house rules of docs/architecture.md, checked on the source: who reads the clock, who writes tables,
what the CLI may import.  Each rule names the modules allowed to break it; a new module that breaks one
fails here with the line to look at."""

from __future__ import annotations

import ast
from pathlib import Path

import etl

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "etl"


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
