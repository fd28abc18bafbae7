"""The layering a reviewer relies on: only rayjobs parses arguments; entrypoints do not share logic."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LIBRARY = ("modules", "analysis", "search", "sweetspot")


def imported(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
    return names


def test_only_rayjobs_parses_arguments() -> None:
    parsers = [
        str(path.relative_to(ROOT))
        for package in LIBRARY
        for path in (ROOT / package).rglob("*.py")
        if "argparse" in imported(path)
    ]
    assert parsers == []


def test_entrypoints_call_the_api_not_each_other() -> None:
    for path in (ROOT / "rayjobs").glob("*.py"):
        others = {n for n in imported(path) if n.startswith("rayjobs.") and n not in ("rayjobs._entry", "rayjobs.options")}
        assert others <= {"rayjobs"}, (path.name, others)


def test_sweetspot_only_reexports() -> None:
    for path in (ROOT / "sweetspot").glob("*.py"):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        defined = [n.name for n in tree.body if isinstance(n, (ast.FunctionDef, ast.ClassDef))]
        # PEP 562's module __getattr__ only re-exports lazily (the names that need Ray).
        assert [name for name in defined if name != "__getattr__"] == [], (path.name, defined)


def test_entrypoints_use_only_the_public_api() -> None:
    for path in (ROOT / "rayjobs").glob("*.py"):
        below = {n for n in imported(path) if n.split(".")[0] in ("modules", "analysis", "search")}
        assert below == set(), (path.name, below)
