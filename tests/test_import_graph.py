"""The layer rules of README's "Architecture as built", checked over the package's real import graph.

Every ``import`` in every module under ``toolchain/`` counts, the lazy ones inside functions included; only
imports under ``if TYPE_CHECKING:`` are left out (they name a type for the checker and never run). The rules:

1. nothing under ``toolchain/`` but ``toolchain/cli`` and ``toolchain/__main__.py`` imports ``toolchain.cli``;
2. the runtime (the files the roadside image ships, :func:`toolchain.package.runtime_files.runtime_files`, and
   everything they import, transitively) imports no training or build code;
3. there are no import cycles between top-level packages (``toolchain.X``: a package or a module).

Each rule is also shown to fail: the same checks run over a copy of the package with a violation planted.
"""

from __future__ import annotations

import ast
import shutil
from collections.abc import Iterable
from pathlib import Path

import pytest

from toolchain.package.runtime_files import WORKSTATION_ONLY, runtime_files

PACKAGE = Path(__file__).resolve().parents[1] / "toolchain"
CLI_ALLOWED = ("toolchain.cli", "toolchain.__main__")
# What the roadside runtime must never reach: training, data preparation, model building and export, the
# engine builds, packaging and rollout (all workstation work).
NOT_IN_RUNTIME = ("toolchain.train", "toolchain.models", "toolchain.data", "toolchain.export", "toolchain.quantize",
                  "toolchain.build", "toolchain.package", "toolchain.deploy", "toolchain.images", "toolchain.pipeline",
                  "toolchain.cli", "toolchain.synth")

Graph = dict[str, set[str]]


def _module_name(path: Path, root: Path) -> str:
    parts = list(path.relative_to(root.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _type_checking_only(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _imports(tree: ast.AST, module: str, is_package: bool, known: set[str]) -> Iterable[str]:
    """The toolchain modules ``tree`` imports (``from X import Y`` counts as ``X.Y`` when that is a module)."""
    package = module if is_package else module.rpartition(".")[0]
    stack = [tree]
    while stack:
        node = stack.pop()
        if isinstance(node, ast.If) and _type_checking_only(node):
            stack.extend(node.orelse)
            continue
        stack.extend(ast.iter_child_nodes(node))
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names if alias.name.split(".")[0] == "toolchain")
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                source = ".".join(base + ([node.module] if node.module else []))
            else:
                source = node.module or ""
            if source.split(".")[0] != "toolchain":
                continue
            for alias in node.names:
                yield f"{source}.{alias.name}" if f"{source}.{alias.name}" in known else source


def import_graph(root: Path = PACKAGE) -> Graph:
    """Module -> the toolchain modules it imports, for every ``.py`` under ``root`` (the ``toolchain`` folder)."""
    files = {_module_name(path, root): path for path in root.rglob("*.py")}
    known = set(files)
    return {module: {name for name in _imports(ast.parse(path.read_text(), str(path)), module,
                                               path.name == "__init__.py", known) if name != module}
            for module, path in files.items()}


def _within(module: str, prefixes: Iterable[str]) -> bool:
    return any(module == p or module.startswith(p + ".") for p in prefixes)


def cli_importers(graph: Graph) -> list[str]:
    """Rule 1: ``module -> toolchain.cli...`` edges from outside the CLI."""
    return sorted(f"{module} -> {name}" for module, names in graph.items() if not _within(module, CLI_ALLOWED)
                  for name in names if _within(name, ["toolchain.cli"]))


def runtime_reaches(graph: Graph, roots: Iterable[str], forbidden: Iterable[str] = NOT_IN_RUNTIME) -> list[str]:
    """Rule 2: the forbidden modules the runtime's files reach, each with the path of imports that gets there.

    The workstation-only modules the runtime imports inside functions the image never calls
    (:data:`WORKSTATION_ONLY`: serving a registry reference on a workstation) are not followed.
    """
    via: dict[str, list[str]] = {root: [root] for root in roots}
    todo = list(via)
    while todo:
        module = todo.pop()
        for name in sorted(graph.get(module, ())):
            if name in via or name in WORKSTATION_ONLY:
                continue
            via[name] = [*via[module], name]
            todo.append(name)
    return sorted(" -> ".join(path) for name, path in via.items() if _within(name, forbidden))


def _top(module: str) -> str:
    return ".".join(module.split(".")[:2])


def package_cycles(graph: Graph) -> list[list[str]]:
    """Rule 3: the strongly connected sets of more than one top-level package (Tarjan), each sorted."""
    edges: dict[str, set[str]] = {}
    for module, names in graph.items():
        edges.setdefault(_top(module), set()).update(_top(n) for n in names if _top(n) != _top(module))
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in sorted(edges.get(node, ())):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(edges):
        if node not in index:
            visit(node)
    return sorted(found)


def cycle_edges(graph: Graph, cycle: list[str]) -> list[str]:
    """The module imports that make up one package cycle (what to look at to break it)."""
    return sorted(f"{m} -> {n}" for m, names in graph.items() if _top(m) in cycle for n in names
                  if _top(n) in cycle and _top(n) != _top(m))


def _runtime_roots() -> list[str]:
    return [_module_name(PACKAGE / relative, PACKAGE) for relative in runtime_files()]


# -- the rules hold ----------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def graph() -> Graph:
    return import_graph()


def test_nothing_outside_the_cli_imports_the_cli(graph: Graph) -> None:
    assert "toolchain.cli.main" in graph and "toolchain.serve.__main__" in graph  # the graph covers the package
    assert cli_importers(graph) == []


def test_the_runtime_imports_no_training_or_build_code(graph: Graph) -> None:
    roots = _runtime_roots()
    assert "toolchain.serve.__main__" in roots and "toolchain.runtime.vehicles" in roots
    assert runtime_reaches(graph, roots) == []


def test_top_level_packages_import_each_other_without_cycles(graph: Graph) -> None:
    cycles = package_cycles(graph)
    assert cycles == [], "\n".join(f"{c}: {cycle_edges(graph, c)}" for c in cycles)


# -- and each fails on a planted violation ------------------------------------------------------------------------
@pytest.fixture
def planted(tmp_path: Path) -> Path:
    """A copy of the package's sources (``.py`` only) to plant violations in."""
    copy = tmp_path / "toolchain"
    shutil.copytree(PACKAGE, copy, ignore=lambda folder, names: [
        n for n in names if n == "__pycache__" or ((Path(folder) / n).is_file() and not n.endswith(".py"))])
    return copy


def _plant(root: Path, relative: str, line: str, *, in_function: bool = False) -> None:
    path = root / relative
    text = path.read_text()
    planted = f"\n\ndef _planted() -> None:\n    {line}\n" if in_function else f"\n{line}\n"
    path.write_text(text + planted)


def test_a_library_module_importing_the_cli_is_caught(planted: Path) -> None:
    assert cli_importers(import_graph(planted)) == []
    _plant(planted, "runtime/lines.py", "from toolchain.cli.output import console", in_function=True)
    assert cli_importers(import_graph(planted)) == ["toolchain.runtime.lines -> toolchain.cli.output"]


def test_the_runtime_reaching_training_code_is_caught(planted: Path) -> None:
    assert runtime_reaches(import_graph(planted), _runtime_roots()) == []
    _plant(planted, "serve/credentials.py", "from toolchain.train import loop", in_function=True)
    found = runtime_reaches(import_graph(planted), _runtime_roots())
    assert "toolchain.serve.credentials -> toolchain.train.loop" in found, found


def test_a_cycle_between_packages_is_caught(planted: Path) -> None:
    _plant(planted, "errors.py", "import toolchain.registry.store", in_function=True)
    cycles = package_cycles(import_graph(planted))
    assert any({"toolchain.errors", "toolchain.registry"} <= set(c) for c in cycles), cycles


def test_type_checking_imports_are_left_out(planted: Path) -> None:
    _plant(planted, "errors.py", "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    import toolchain.cli.main")
    assert cli_importers(import_graph(planted)) == []
