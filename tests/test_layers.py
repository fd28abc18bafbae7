"""The layering a reviewer relies on: arrows one way between packages and rooms, no import cycle,
Ray, Optuna and the training frameworks only where allowed; only rayjobs parses arguments."""

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


# -- the whole layering rule, over every import (lazy and TYPE_CHECKING ones included) ------------

PACKAGES = ("rayjobs", "sweetspot", "search", "analysis", "modules")
#: Each top-level package may import itself and the packages after it in this order.
ORDER = {package: index for index, package in enumerate(PACKAGES)}
#: Rooms inside a package, in the order their arrows point (a room imports only later ones).
ROOMS = {
    "search": ("workflow", "calibration", "execution", "tracking", "algorithms", "scoring"),
    "modules": ("codec", "demo", "integrations", "recorder", "combine", "importing", "rundir", "spec"),
}
#: Third-party libraries confined to part of the tree.
CONFINED = {
    "ray": ("search",),
    "optuna": ("search",),
    "mlflow": ("search",),
    "transformers": ("modules.integrations",),
    "lightning": ("modules.integrations",),
    "pytorch_lightning": ("modules.integrations",),
}


def _modules() -> dict[str, Path]:
    out = {}
    for package in PACKAGES:
        for path in (ROOT / package).rglob("*.py"):
            name = ".".join(path.relative_to(ROOT).with_suffix("").parts)
            out[name.removesuffix(".__init__")] = path
    return out


def _edges(modules: dict[str, Path]) -> dict[str, set[str]]:
    """Module -> the project modules it imports (a ``from pkg import name`` of a submodule counts as it)."""
    edges: dict[str, set[str]] = {}
    for name, path in modules.items():
        targets = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            found = []
            if isinstance(node, ast.Import):
                found = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                found = [f"{node.module}.{a.name}" for a in node.names] + [node.module]
            for target in found:
                while target and target not in modules:
                    target = target.rpartition(".")[0]
                if target and target != name and target.split(".")[0] in ORDER:
                    targets.add(target)
        edges[name] = targets
    return edges


def _room(name: str) -> str | None:
    parts = name.split(".")
    rooms = ROOMS.get(parts[0], ())
    return parts[1] if len(parts) > 1 and parts[1] in rooms else None


def arrow_problems(edges: dict[str, set[str]]) -> list[str]:
    wrong = []
    for source, targets in edges.items():
        for target in targets:
            top_s, top_t = source.split(".")[0], target.split(".")[0]
            if ORDER[top_t] < ORDER[top_s]:
                wrong.append(f"{source} -> {target} (package order {' -> '.join(PACKAGES)})")
            elif top_s == top_t and top_s in ROOMS:
                order = ROOMS[top_s]
                room_s, room_t = _room(source), _room(target)
                if room_s and room_t and order.index(room_t) < order.index(room_s):
                    wrong.append(f"{source} -> {target} (room order {' -> '.join(order)})")
    return wrong


def cycles(edges: dict[str, set[str]]) -> list[str]:
    state: dict[str, int] = {}  # 1 on the path, 2 done
    found = []

    def visit(node: str, path: list[str]) -> None:
        state[node] = 1
        for target in sorted(edges.get(node, ())):
            if state.get(target) == 1:
                found.append(" -> ".join([*path[path.index(target):], target]))
            elif target not in state:
                visit(target, [*path, target])
        state[node] = 2

    for node in sorted(edges):
        if node not in state:
            visit(node, [node])
    return found


def confined_problems(modules: dict[str, Path]) -> list[str]:
    wrong = []
    for name, path in modules.items():
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            found = []
            if isinstance(node, ast.Import):
                found = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                found = [node.module]
            for library in {f.split(".")[0] for f in found} & set(CONFINED):
                if not any(name == place or name.startswith(f"{place}.") for place in CONFINED[library]):
                    wrong.append(f"{name} imports {library}")
    return wrong


def test_arrows_point_one_way_between_packages_and_between_rooms() -> None:
    assert arrow_problems(_edges(_modules())) == []


def test_no_import_cycle_even_inside_a_room() -> None:
    assert cycles(_edges(_modules())) == []


def test_ray_optuna_and_the_training_frameworks_are_imported_only_where_allowed() -> None:
    assert confined_problems(_modules()) == []


def test_the_rules_catch_planted_wrong_arrows_cycles_and_libraries(tmp_path: Path) -> None:
    planted = {
        "analysis.series": {"search.execution.api"},
        "search.scoring.scorer": {"search.execution.pool"},
        "modules.combine.plan": {"modules.combine.sources"},
        "modules.combine.sources": {"modules.combine.plan"},
    }
    problems = arrow_problems(planted)
    assert any(p.startswith("analysis.series -> search.execution.api") for p in problems)
    assert any(p.startswith("search.scoring.scorer -> search.execution.pool") for p in problems)
    assert cycles(planted) == ["modules.combine.plan -> modules.combine.sources -> modules.combine.plan"]
    below = tmp_path / "stats.py"
    below.write_text("import ray\nfrom optuna import samplers\n")
    assert sorted(confined_problems({"analysis.stats": below})) == ["analysis.stats imports optuna", "analysis.stats imports ray"]
