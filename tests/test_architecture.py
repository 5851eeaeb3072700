"""The import graph of the packages: no cycle, and package edges only in the documented direction.

Built with ``ast`` over every module of the tree (imports inside functions count: a function-level
import that dodges a cycle is still a cycle). docs/architecture.md draws the same directions.
"""

from __future__ import annotations

import ast
import graphlib
from pathlib import Path

import pytest

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



# Process-wide state is the entry points' business: `<pkg>/cli.py`, the demo, and the process
# helpers of megadocs.procs (apply_environment_defaults for entry points; child_process_settings,
# the scoped environment the local executor starts its jobs with, restored at once).
ENTRY_POINTS = {"megadocs.cli", "megadocs.demo", "megadocs.procs", "train.cli", "train.train_cli",
                "train.data_cli", "gen.cli", "search.cli", "analysis.cli"}
_ENVIRONMENT_WRITES = {"setdefault", "update", "pop", "clear", "__setitem__"}


def process_global_writes(modules) -> list[str]:
    """``module:line what`` for each write of os.environ / putenv / optuna's verbosity in ``modules``."""
    found = []
    for name, path in sorted(modules.items()):
        for node in ast.walk(ast.parse(path.read_text())):
            text = ast.unparse(node) if isinstance(node, (ast.Call, ast.Assign, ast.Delete)) else ""
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
                owner = ast.unparse(node.func.value)
                if owner.endswith("environ") and node.func.attr in _ENVIRONMENT_WRITES:
                    found.append(f"{name}:{node.lineno} {text}")
                elif node.func.attr in ("putenv", "set_verbosity"):
                    found.append(f"{name}:{node.lineno} {text}")
            elif isinstance(node, (ast.Assign, ast.Delete)):
                targets = node.targets
                if any(isinstance(t, ast.Subscript) and ast.unparse(t.value).endswith("environ") for t in targets):
                    found.append(f"{name}:{node.lineno} {text}")
    return found


def test_library_code_sets_no_process_globals():
    library = {name: path for name, path in module_files(ROOT).items() if name not in ENTRY_POINTS}
    assert process_global_writes(library) == []


def test_process_global_check_sees_every_kind_of_write(tmp_path):
    (tmp_path / "lib").mkdir()
    (tmp_path / "lib" / "__init__.py").write_text("")
    (tmp_path / "lib" / "m.py").write_text(
        "import os\nimport optuna\n"
        "def f():\n    os.environ.setdefault('A', '1')\n    os.environ['B'] = '2'\n"
        "    optuna.logging.set_verbosity(optuna.logging.WARNING)\n    x = os.environ.get('C')\n"
    )
    writes = process_global_writes(module_files(tmp_path, ("lib",)))
    assert sorted(w.split()[0] for w in writes) == ["lib.m:4", "lib.m:5", "lib.m:6"]


def test_the_dispatcher_shows_a_failing_package_import(monkeypatch):
    import megadocs.cli

    monkeypatch.setitem(megadocs.cli.GROUPS, "broken", "no_such_package_here.cli:register")
    with pytest.raises(ModuleNotFoundError, match="no_such_package_here"):
        megadocs.cli.build_parser()
