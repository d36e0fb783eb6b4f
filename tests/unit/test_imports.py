"""The package's import structure: every module imports on its own, and no two modules import each other.

The graph counts every ``import`` of an ``etl`` module anywhere in a file
(top level, inside functions, under ``TYPE_CHECKING``): a cycle hidden in a
function is still two modules that cannot be understood one without the other.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import etl

PACKAGE = Path(etl.__file__).parent
REPO = PACKAGE.parent


def module_name(path: Path) -> str:
    parts = list(path.relative_to(REPO).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


MODULES = {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def imported_modules(name: str, path: Path) -> set[str]:
    """The etl modules ``name`` imports: ``from etl import x`` is ``etl.x`` when that is a module."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parent = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*parent, base] if base else parent)
            targets = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in MODULES else base for alias in node.names]
        else:
            continue
        for target in targets:
            # `import etl.a.b` imports etl.a.b (and its packages, which this graph leaves out).
            while target and target not in MODULES:
                target = target.rpartition(".")[0]
            if target and target != name and target.startswith("etl"):
                found.add(target)
    return found


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle of ``graph`` as a path a -> ... -> a, or None."""
    state: dict[str, int] = {}  # 1 on the stack, 2 done
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return [*stack[stack.index(nxt):], nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def test_the_cycle_finder_finds_a_cycle():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": set()}) is None


def test_the_graph_sees_imports_inside_functions():
    graph = imported_modules("etl.job", MODULES["etl.job"])
    assert "etl.running" in graph  # imported inside Etl.sync
    assert "etl.db" in graph  # `from etl import db`


def test_no_import_cycle_between_etl_modules():
    # The package __init__ re-exports the public API: it imports its children,
    # and a child's `from etl import x` names the child module x, not the package.
    graph = {name: imported_modules(name, path) for name, path in MODULES.items()}
    assert find_cycle(graph) is None


def test_every_module_imports_on_its_own():
    """Each module in a fresh interpreter state (every etl module forgotten before it)."""
    # The timeout only guards a hang: ~15 s of CPU, far longer when CI starts six workers at once.
    script = (
        "import importlib, sys\n"
        f"names = {sorted(n for n in MODULES if not n.endswith('__main__'))!r}\n"
        "failed = []\n"
        "for name in names:\n"
        "    for loaded in [m for m in sys.modules if m == 'etl' or m.startswith('etl.')]:\n"
        "        del sys.modules[loaded]\n"
        "    try:\n"
        "        importlib.import_module(name)\n"
        "    except Exception as exc:\n"
        "        failed.append(f'{name}: {exc!r}')\n"
        "print('\\n'.join(failed))\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=REPO, timeout=600)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == ""
