"""Every link and file reference resolves in a fresh clone, and none leaves the repository.

A clone is all a newcomer has: the contract (docs/contract.md), the API shapes
(docs/api/) and every file a README, a docstring or a comment names must be in
it.  Markdown: every relative link target exists inside the repository (a
``../`` that climbs out of it fails).  Python: every repository path a
docstring or comment names (``docs/…``, ``etl/…``, ``cron/…``, a ``*.md``
file) exists.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
# Folders that are not the project's own files (virtualenvs, caches, build output).
_SKIP_PARTS = {"build", "dist", "__pycache__", "node_modules"}
# Top-level folders a path in a docstring may start with; "shared" is the old home outside the repo.
_ROOTS = {"docs", "etl", "tests", "bench", "cron", "migrations", "shared", ".ci"}

_INLINE_LINK = re.compile(r"!?\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
_REF_LINK = re.compile(r"^\s*\[[^\]]+\]:\s*<?(\S+?)>?(?:\s|$)", re.MULTILINE)
_FENCE = re.compile(r"^(```|~~~).*?^\1", re.MULTILINE | re.DOTALL)
_PATH = re.compile(r"(?<![\w/.:-])((?:\.\./)*(?:[\w.-]+/)+[\w.-]+\.(?:md|py|toml|ini|sh|txt|example|service|timer))")
_MD_NAME = re.compile(r"(?<![\w/.:-])([\w-]+\.md)\b")


def _project_files(pattern: str) -> list[Path]:
    files = []
    for path in REPO.rglob(pattern):
        rel = path.relative_to(REPO)
        if any(part.startswith(".") or part in _SKIP_PARTS or part.endswith(".egg-info") for part in rel.parts[:-1]):
            continue
        files.append(path)
    return sorted(files)


MARKDOWN = _project_files("*.md")
# This file names missing paths on purpose (the detector's own test below).
PYTHON = [p for p in _project_files("*.py") if p != Path(__file__).resolve()]
MD_NAMES = {p.name for p in MARKDOWN}


def _links(text: str) -> list[str]:
    text = _FENCE.sub("", text)  # code blocks are examples, not links
    return _INLINE_LINK.findall(text) + _REF_LINK.findall(text)


def _is_external(target: str) -> bool:
    return bool(re.match(r"^[a-zA-Z][a-zA-Z0-9+.-]*:", target)) or target.startswith("#")


def broken_links(md: Path) -> list[str]:
    """Relative link targets of ``md`` that are missing or lie outside the repository."""
    bad = []
    for target in _links(md.read_text(encoding="utf-8")):
        if _is_external(target):
            continue
        path = target.split("#", 1)[0].split("?", 1)[0]
        if not path:
            continue
        resolved = (REPO / path.lstrip("/")) if path.startswith("/") else (md.parent / path)
        resolved = resolved.resolve()
        if not resolved.is_relative_to(REPO):
            bad.append(f"{target} (leaves the repository)")
        elif not resolved.exists():
            bad.append(f"{target} (missing)")
    return bad


def missing_citations(source: Path) -> list[str]:
    """Repository paths and Markdown files named in ``source`` that are missing or outside the repository."""
    text = source.read_text(encoding="utf-8")
    bad = []
    for ref in _PATH.findall(text):
        if ref.startswith("../"):
            resolved = (source.parent / ref).resolve()
            if not resolved.is_relative_to(REPO):
                bad.append(f"{ref} (outside the repository)")
            elif not resolved.exists():
                bad.append(ref)
        elif ref.split("/", 1)[0] in _ROOTS and not (REPO / ref).exists():
            bad.append(ref)
    bad += [name for name in _MD_NAME.findall(text) if name not in MD_NAMES]
    return bad


def test_the_contract_and_api_shapes_are_in_the_repository():
    for doc in ("docs/contract.md", "docs/architecture.md", "docs/schema.md",
                "docs/api/call-summaries.md", "docs/api/more-endpoints.md"):
        assert (REPO / doc).is_file(), doc
    assert len(MARKDOWN) >= 8 and len(PYTHON) >= 30  # the walk found the project, not an empty folder


@pytest.mark.parametrize("md", MARKDOWN, ids=lambda p: str(p.relative_to(REPO)))
def test_markdown_links_resolve_inside_the_repository(md: Path):
    assert broken_links(md) == []


@pytest.mark.parametrize("source", PYTHON + MARKDOWN, ids=lambda p: str(p.relative_to(REPO)))
def test_python_and_markdown_cite_only_files_that_exist(source: Path):
    assert missing_citations(source) == []


def test_the_checks_catch_what_they_look_for(tmp_path: Path):
    """The detectors themselves: an escaping link, a missing file and a stale citation are all found."""
    md = REPO / "docs" / "contract.md"
    text = "[a](../shared/SPEC.md) [b](docs/nope.md) [ok](https://x.test/a.md) [c](#anchor)\n[r]: ../../x.md\n"
    found = []
    for target in _links(text):
        if not _is_external(target):
            resolved = (md.parent / target.split("#")[0]).resolve()
            found.append((target, resolved.is_relative_to(REPO) and resolved.exists()))
    assert found == [("../shared/SPEC.md", False), ("docs/nope.md", False), ("../../x.md", False)]

    src = tmp_path / "x.py"
    src.write_text('"""See ../shared/SPEC.md, docs/gone.md and docs/contract.md; SPEC.md too."""\n')
    assert missing_citations(src) == ["../shared/SPEC.md (outside the repository)", "docs/gone.md", "SPEC.md"]
