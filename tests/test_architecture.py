"""The import graph of the packages: no cycle, and package edges only in the documented direction.

Built with ``ast`` over every module of the tree (imports inside functions count: a function-level
import that dodges a cycle is still a cycle). docs/architecture.md draws the same directions.
"""

from __future__ import annotations

import ast
import graphlib
from pathlib import Path

from tests.tree import PACKAGES, ROOT, module_files

# package -> the packages it may import (docs/architecture.md, "Packages and dependency direction")
ALLOWED = {
    "megadocs": set(),
    "train": {"megadocs"},
    "gen": {"megadocs"},
    "search": {"train", "megadocs"},
    "analysis": {"search", "train", "megadocs"},
}
# the dispatcher and the end-to-end demo may reach every package
EXEMPT = {"megadocs.cli", "megadocs.demo"}


def _imported_names(module: str, path: Path) -> set[str]:
    """Every dotted name an import statement anywhere in the file may refer to."""
    names: set[str] = set()
    is_package = path.name == "__init__.py"
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: resolve against this module's package
                package = module.split(".") if is_package else module.split(".")[:-1]
                package = package[: len(package) - (node.level - 1)]
                base = ".".join(package + ([node.module] if node.module else []))
            names.add(base)
            names.update(f"{base}.{alias.name}" for alias in node.names)
    return names


def import_graph(root: Path, packages=PACKAGES) -> dict[str, set[str]]:
    """Module -> the project modules it imports (the longest known prefix of each imported name)."""
    modules = module_files(root, packages)

    def known(name: str) -> str | None:
        while name and name not in modules:
            name = name.rpartition(".")[0]
        return name or None

    graph = {}
    for module, path in modules.items():
        targets = {known(name) for name in _imported_names(module, path)}
        graph[module] = {t for t in targets if t and t != module}
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle of ``graph`` (as graphlib reports it), or None."""
    try:
        tuple(graphlib.TopologicalSorter(graph).static_order())
    except graphlib.CycleError as exc:
        return exc.args[1]
    return None


def forbidden_edges(graph: dict[str, set[str]]) -> list[str]:
    """``module -> target`` lines whose package edge is not an ALLOWED direction."""
    bad = []
    for module, targets in sorted(graph.items()):
        if module in EXEMPT:
            continue
        source = module.split(".")[0]
        for target in sorted(targets):
            package = target.split(".")[0]
            if package != source and package not in ALLOWED[source]:
                bad.append(f"{module} -> {target}")
    return bad


def test_no_module_import_cycle():
    assert find_cycle(import_graph(ROOT)) is None


def test_package_edges_follow_the_documented_direction():
    assert forbidden_edges(import_graph(ROOT)) == []


def test_the_documented_directions_are_the_tested_ones():
    text = (ROOT / "docs" / "architecture.md").read_text()
    for package, allowed in ALLOWED.items():
        if allowed:
            line = f"{package} -> {', '.join(p for p in ('search', 'train', 'megadocs') if p in allowed)}"
            assert line in text, line


def _write(root: Path, files: dict[str, str]) -> None:
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)


def test_the_checks_see_function_level_and_relative_imports(tmp_path):
    _write(tmp_path, {
        "megadocs/__init__.py": "",
        "megadocs/base.py": "def f():\n    from train import loop\n",  # base -> train: forbidden
        "train/__init__.py": "",
        "train/loop.py": "from . import evaluate\n",
        "train/evaluate.py": "def g():\n    import train.loop\n",  # the cycle hides in a function
    })  # fmt: skip
    graph = import_graph(tmp_path, ("megadocs", "train"))
    assert "train.evaluate" in graph["train.loop"] and graph["train.evaluate"] == {"train.loop"}
    assert set(find_cycle(graph)) == {"train.loop", "train.evaluate"}
    assert forbidden_edges(graph) == ["megadocs.base -> train", "megadocs.base -> train.loop"]

