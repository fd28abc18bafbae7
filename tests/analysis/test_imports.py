"""The analysis package has no import cycle, and importing it leaves matplotlib's backend alone."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "analysis"
MODULES = sorted(
    ".".join(path.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__") for path in PACKAGE.rglob("*.py")
)


def _imports(path: Path) -> set[str]:
    """Analysis modules ``path`` imports at run time (anywhere, functions included; not under TYPE_CHECKING)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    skipped = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            skipped |= {id(child) for stmt in node.body for child in ast.walk(stmt)}
    found = set()
    for node in ast.walk(tree):
        if id(node) in skipped:
            continue
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("analysis"):
            found.add(node.module)
            found |= {f"{node.module}.{alias.name}" for alias in node.names}
        elif isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names if alias.name.startswith("analysis")}
    return found & set(MODULES)


def test_the_analysis_import_graph_has_no_cycle() -> None:
    graph = {}
    for module in MODULES:
        path = ROOT / Path(*module.split("."))
        path = path / "__init__.py" if path.is_dir() else path.with_suffix(".py")
        graph[module] = _imports(path) - {module}
    state: dict[str, int] = {}

    def visit(node: str, stack: list[str]) -> None:
        state[node] = 1
        for child in sorted(graph[node]):
            if state.get(child) == 1:
                pytest.fail("import cycle: " + " -> ".join([*stack[stack.index(child):], child]))
            if child not in state:
                visit(child, [*stack, child])
        state[node] = 2

    for module in MODULES:
        if module not in state:
            visit(module, [module])


def test_the_result_types_import_nothing_else_from_analysis() -> None:
    assert _imports(PACKAGE / "results.py") == set()


def test_each_module_imports_alone_and_none_imports_pyplot_or_switches_the_backend(tmp_path) -> None:
    # One interpreter, to keep the suite fast: before each module every analysis module is
    # forgotten, so each is imported first, as it would be alone (third-party packages stay loaded:
    # that is only speed). Then a whole analysis with plots is written, under a backend the caller chose.
    code = f"""
import importlib, sys, matplotlib
matplotlib.use("svg")
for module in {MODULES!r}:
    for name in [n for n in sys.modules if n == "analysis" or n.startswith("analysis.")]:
        del sys.modules[name]
    importlib.import_module(module)
from analysis.report import write_outputs
from tests.analysis.test_report import small_analysis
write_outputs(small_analysis(), {str(tmp_path / "out")!r})
assert "matplotlib.pyplot" not in sys.modules, "pyplot imported"
assert matplotlib.get_backend() == "svg", matplotlib.get_backend()
"""
    subprocess.run([sys.executable, "-c", code], cwd=ROOT, check=True, timeout=300)
    assert (tmp_path / "out" / "visualizations" / "heatmap.png").stat().st_size > 1000
