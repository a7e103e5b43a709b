"""The layer map of DEVELOPMENT.md, enforced: a package imports only its own modules and the
packages of the rows above it."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1] / "stars"

# Row by row, lowest first; a package may import any package of an earlier row.
LAYERS = [
    {"errors", "interrupts", "text"},
    {"config_ranges"},
    {"config", "skeleton", "location"},
    {"storage"},
    {"paths"},
    {"presets", "recipes"},
    {"data", "model", "metrics"},
    {"plots"},
    {"tracking"},
    {"train"},
    {"eval"},
    {"workflow"},
    {"sweep"},
    {"cli"},
]
ROW = {package: i for i, row in enumerate(LAYERS) for package in row}


def package_of(module: str) -> str:
    return module.split(".")[1] if module.count(".") else ""


def imports(path: Path, source: str | None = None) -> list[tuple[int, str]]:
    """(line, module) of every ``stars`` module the file imports, in every form:
    ``import stars.x``, ``from stars.x import y``, ``from stars import x`` and relative."""
    package = ["stars", *path.relative_to(ROOT).parent.parts]
    found = []
    tree = ast.parse(path.read_text() if source is None else source)
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parent = package[: len(package) - node.level + 1]
                base = ".".join([*parent, *([base] if base else [])])
            if base == "stars":  # ``from stars import storage`` names modules
                found += [(node.lineno, f"stars.{alias.name}") for alias in node.names]
            else:
                found.append((node.lineno, base))
        elif isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
    return [(line, m) for line, m in found if m == "stars" or m.startswith("stars.")]


def test_every_import_form_is_seen():
    source = (
        "import stars.model.encoder\n"
        "from stars import storage, paths\n"
        "from stars.train.optim import param_groups\n"
        "from . import features\n"
        "from ..metrics import knn\n"
    )
    found = {m for _, m in imports(ROOT / "eval" / "any.py", source)}
    assert {package_of(m) for m in found} == {
        "model",
        "storage",
        "paths",
        "train",
        "eval",
        "metrics",
    }


def test_every_package_has_a_row():
    packages = {
        p.stem if p.is_file() else p.name for p in ROOT.iterdir() if p.name != "__init__.py"
    }
    packages = {p for p in packages if not p.startswith("__")}
    assert packages <= set(ROW), f"packages missing from the layer map: {packages - set(ROW)}"


@pytest.mark.parametrize("path", sorted(ROOT.rglob("*.py")), ids=lambda p: str(p.relative_to(ROOT)))
def test_imports_point_down(path):
    rel = path.relative_to(ROOT)
    own = rel.parts[0].removesuffix(".py")
    if own == "__init__":
        return
    wrong = []
    for line, module in imports(path):
        other = package_of(module)
        if other == own or not other:
            continue
        if ROW[other] >= ROW[own]:
            wrong.append(f"line {line}: {module} (row {ROW[other]}) from {own} (row {ROW[own]})")
    assert not wrong, "; ".join(wrong)


def _module_name(path: Path) -> str:
    parts = ["stars", *path.relative_to(ROOT).with_suffix("").parts]
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def test_no_module_cycle_inside_a_package():
    """Deferred imports count: an import inside a function that hides a loop is still a loop."""
    modules = {_module_name(p): p for p in ROOT.rglob("*.py")}
    graph = {
        name: {m for _, m in imports(path) if m in modules and m != name and m != "stars"}
        for name, path in modules.items()
    }
    # Edges into a package's __init__ are edges into its parent, not a loop of its modules.
    graph = {n: {m for m in deps if not n.startswith(m + ".")} for n, deps in graph.items()}
    state: dict[str, int] = {}

    def visit(node: str, trail: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                cycle = [*trail[trail.index(nxt) :], nxt] if nxt in trail else [node, nxt]
                pytest.fail("import cycle: " + " -> ".join(cycle))
            if nxt not in state:
                visit(nxt, [*trail, nxt])
        state[node] = 2

    for name in sorted(graph):
        if name not in state:
            visit(name, [name])
