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


#: The layers from the bottom up: a module imports only modules of its own group or of a lower
#: layer. Groups that share a layer (the run engine, the report, the benchmarks) import none of
#: each other. The top-level modules (errors, spec, hparams, registry, ...) are the foundation.
LAYERS = (("foundation",), ("ltbench.metrics",), ("ltbench.store",), ("ltbench.api",),
          ("ltbench.engine",), ("ltbench.methods", "ltbench.datasets"),
          ("ltbench.run", "ltbench.report", "ltbench.bench"), ("ltbench.cli",))


def _group(module: str) -> str:
    if module == "ltbench.__main__":  # ``python -m ltbench``: the CLI's entry
        return "ltbench.cli"
    for layer in LAYERS:
        for group in layer:
            if module == group or module.startswith(group + "."):
                return group
    return "foundation"


def _rank(group: str) -> int:
    return next(rank for rank, layer in enumerate(LAYERS) if group in layer)


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
    """Contracts at the bottom, the engine above them, plugins above the engine, the run engine
    and the report above those, the CLI on top; nothing imports a layer above its own."""
    upward = sorted(f"{module} → {target}" for module, targets in graph.items()
                    for target in targets
                    if _group(target) != _group(module)
                    and _rank(_group(target)) >= _rank(_group(module)))
    assert upward == []


def test_every_sub_package_has_a_layer():
    """A new sub-package of harness/ must be placed in :data:`LAYERS` (else it would count as
    foundation and any module could import it)."""
    packages = {".".join(name.split(".")[:2]) for name, path in _modules().items()
                if path.name == "__init__.py" and name.count(".") == 1}
    placed = {group for layer in LAYERS for group in layer}
    assert packages - placed == set()
