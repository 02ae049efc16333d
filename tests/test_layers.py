"""Dependencies point one way: the plugin contract at the bottom, the engine above it, the
plugins above the engine, the CLI on top, and no import cycle.

The graph is read from the source (``ast``), from the imports a module runs when it is imported
(its top-level statements); imports inside functions are the lazy ones the CLI uses to start
fast and are not edges of the layering.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
#: pyproject.toml's package-dir: repository folder → import name.
FOLDERS = {"harness": "ltbench", "methods": "ltbench.methods", "datasets": "ltbench.datasets"}


def _modules() -> dict[str, Path]:
    found = {}
    for folder, package in FOLDERS.items():
        for path in (REPO / folder).rglob("*.py"):
            parts = [p for p in path.relative_to(REPO / folder).with_suffix("").parts
                     if p != "__init__"]
            found[".".join([package, *parts])] = path
    return found


def _imported(module: str, path: Path, modules: dict[str, Path]) -> set[str]:
    """The ltbench modules ``module`` imports at import time."""
    package = module.split(".") if path.name == "__init__.py" else module.split(".")[:-1]
    edges = set()
    for node in ast.parse(path.read_text(encoding="utf-8")).body:
        if isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(package[:len(package) - node.level + 1] + ([base] if base else []))
            edges |= {name for name in [base, *(f"{base}.{a.name}" for a in node.names)]
                      if name in modules}
        elif isinstance(node, ast.Import):
            edges |= {a.name for a in node.names if a.name in modules}
    edges.discard(module)
    return edges


@pytest.fixture(scope="module")
def graph() -> dict[str, set[str]]:
    modules = _modules()
    return {name: _imported(name, path, modules) for name, path in modules.items()}


def _layer(module: str) -> str:
    for prefix, layer in (("ltbench.api", "contract"), ("ltbench.engine", "engine"),
                          ("ltbench.methods", "plugin"), ("ltbench.datasets", "plugin"),
                          ("ltbench.cli", "cli"),
                          ("ltbench.__main__", "cli")):
        if module == prefix or module.startswith(prefix + "."):
            return layer
    return "harness"


def test_the_graph_sees_the_known_edges(graph):
    assert "ltbench.api" in graph["ltbench.engine.train"]
    assert "ltbench.engine.image_cache" in graph["ltbench.datasets.split_lists"]
    assert len(graph) > 80


def test_no_import_cycle(graph):
    state: dict[str, str] = {}

    def visit(module: str, path: list[str]) -> None:
        state[module] = "open"
        for target in sorted(graph[module]):
            assert state.get(target) != "open", " → ".join([*path, module, target])
            if target not in state:
                visit(target, [*path, module])
        state[module] = "done"

    for module in sorted(graph):
        if module not in state:
            visit(module, [])


def test_dependencies_point_one_way(graph):
    """The contract imports no engine, plugin or CLI module; the engine no plugin; nothing
    below the CLI imports the CLI."""
    forbidden = {"contract": {"engine", "plugin", "cli"}, "engine": {"plugin", "cli"},
                 "plugin": {"cli"}, "harness": {"cli"}}
    upward = sorted(f"{module} → {target}" for module, targets in graph.items()
                    for target in targets
                    if _layer(target) in forbidden.get(_layer(module), set()))
    assert upward == []
