"""The import graph of ntkdsl, read from its source: no cycles, and no stage importing a later one.

DESIGN §1: each stage of the pipeline is a module (or package) with one job; later stages import
earlier ones, never the reverse. Every ``import`` and ``from ... import`` counts — at module level,
inside functions (a function-local import only hides a cycle until that function runs) and under
``if TYPE_CHECKING``. ``from package import name`` is an edge to the submodule ``package.name``
when there is one, else to the package itself.
"""
from __future__ import annotations

import ast
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

import ntkdsl

PACKAGE = "ntkdsl"

# The pipeline order as data: stage by stage, earliest first. A module may import its own stage
# (without a cycle) and earlier stages only. A name covers a module or a whole subpackage.
STAGES: tuple[tuple[str, tuple[str, ...]], ...] = (
    # NumPy-only code that standalone modules embed verbatim: first, so it can import nothing else
    # of ntkdsl, and every later stage (printing included) may use it.
    ("runtime", ("ntkdsl.runtime",)),
    # Vocabulary every stage shares: exceptions, size limits, argument specs, the kernel names, the
    # progress bar, and the symbolic building blocks (Pair, exact, ...) that registry entries use,
    # with the spatial ops of convolutional kernels (conv3x3(K), ... as sympy functions).
    # The NumPy printer (sympy -> NumPy text, imports sympy and symbolic only) is here too: the
    # numerical route beside the derivation, code generation and finite networks all print with it.
    ("foundation", ("ntkdsl._version", "ntkdsl.errors", "ntkdsl.limits", "ntkdsl.params",
                    "ntkdsl.kinds", "ntkdsl.progress", "ntkdsl.symbolic", "ntkdsl.spatial",
                    "ntkdsl.printing")),
    # The language: text -> typed AST. The activation registry sits here, so the parser checks
    # layer names and arguments without importing the derivation.
    ("language", ("ntkdsl.grammars", "ntkdsl.ast", "ntkdsl.expressions", "ntkdsl.activations",
                  "ntkdsl.layers", "ntkdsl.parser", "ntkdsl.templates")),
    # AST -> kernel program: the rules, the Gaussian-integration and numerical duals, and the
    # program's own types (the derivation builds program objects, so they share a stage).
    ("derivation", ("ntkdsl.small_variance", "ntkdsl.gaussian", "ntkdsl.numerical", "ntkdsl.program",
                    "ntkdsl.derivation", "ntkdsl.tangents")),
    # Program -> text: NumPy source, the in-place emitter, readable formulas, standalone modules.
    ("printing", ("ntkdsl.inplace", "ntkdsl.generate", "ntkdsl.formula", "ntkdsl.standalone")),
    ("evaluation", ("ntkdsl.evaluation",)),
    ("network", ("ntkdsl.network",)),
    # What users build on a compiled network.
    ("solvers", ("ntkdsl.predict", "ntkdsl.nystrom", "ntkdsl.krylov", "ntkdsl.estimators",
                 "ntkdsl.verify", "ntkdsl.finite", "ntkdsl.sklearn", "ntkdsl.dask")),
    ("command line", ("ntkdsl.cli", "ntkdsl.commands", "ntkdsl.__main__")),
    # The package's own namespace re-exports everything, so nothing inside may import it.
    ("package", (PACKAGE,)),
)


@dataclass(frozen=True)
class Edge:
    """``source`` imports ``target`` at ``line`` of ``path``."""

    source: str
    target: str
    path: Path
    line: int

    def __str__(self) -> str:
        return f"{self.source} -> {self.target} ({self.path.name}:{self.line})"


def module_files(root: Path) -> dict[str, Path]:
    """Every module of the package under ``root`` by dotted name (``ntkdsl.commands.fit``,
    ``ntkdsl.commands`` for its __init__). The grammars directory is a symlink: followed."""
    found = {}
    for directory, subdirectories, files in os.walk(root, followlinks=True):
        subdirectories[:] = [d for d in subdirectories if d != "__pycache__"]
        package = Path(directory).relative_to(root).parts
        for name in files:
            if name.endswith(".py"):
                stem = () if name == "__init__.py" else (name[:-3],)
                found[".".join((PACKAGE, *package, *stem))] = Path(directory) / name
    return found


def _base(module: str, path: Path, node: ast.ImportFrom) -> str:
    """The absolute module a ``from ... import`` reads from."""
    if not node.level:
        return node.module or ""
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    for _ in range(node.level - 1):
        package = package.rpartition(".")[0]
    return f"{package}.{node.module}" if node.module else package


def imports(module: str, path: Path, modules: set[str]) -> Iterator[Edge]:
    """The edges from ``module`` to other modules of the package, one per imported module."""
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = _base(module, path, node)
            targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in modules else base for a in node.names]
        else:
            continue
        for target in dict.fromkeys(targets):
            if target in modules and target != module:
                yield Edge(module, target, path, node.lineno)


def import_graph(root: Path) -> dict[str, list[Edge]]:
    files = module_files(root)
    return {name: list(imports(name, path, set(files))) for name, path in files.items()}


def stage_of(module: str) -> int | None:
    """The index of the stage holding ``module``: the longest name in STAGES that is the module
    or a package containing it (the top package holds only itself)."""
    best, best_length = None, -1
    for index, (_, names) in enumerate(STAGES):
        for name in names:
            covers = module == name or (name != PACKAGE and module.startswith(name + "."))
            if covers and len(name) > best_length:
                best, best_length = index, len(name)
    return best


def cycles(graph: dict[str, list[Edge]]) -> list[list[Edge]]:
    """The import cycles (their edges, in order): in each strongly connected component (Tarjan's
    algorithm, iterative) a shortest cycle through each member, each cycle once."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components = []
    for root in graph:
        if root in index:
            continue
        work = [(root, iter(graph[root]))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            node, edges = work[-1]
            edge = next(edges, None)
            if edge is not None:
                if edge.target not in index:
                    index[edge.target] = low[edge.target] = len(index)
                    stack.append(edge.target)
                    on_stack.add(edge.target)
                    work.append((edge.target, iter(graph[edge.target])))
                elif edge.target in on_stack:
                    low[node] = min(low[node], index[edge.target])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = set()
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.add(member)
                    if member == node:
                        break
                if len(component) > 1:
                    components.append(component)
    found = {}
    for component in components:
        for start in sorted(component):
            cycle = _cycle_through(graph, component, start)
            found.setdefault(frozenset((e.source, e.target) for e in cycle), cycle)
    return list(found.values())


def _cycle_through(graph: dict[str, list[Edge]], component: set[str], start: str) -> list[Edge]:
    """A shortest cycle from ``start`` back to itself inside its component."""
    paths = {start: []}
    frontier = [start]
    while frontier:
        following = []
        for node in frontier:
            for edge in graph[node]:
                if edge.target == start:
                    return paths[node] + [edge]
                if edge.target in component and edge.target not in paths:
                    paths[edge.target] = paths[node] + [edge]
                    following.append(edge.target)
        frontier = following
    raise AssertionError(f"no cycle in the component {component}")  # pragma: no cover


def backward_edges(graph: dict[str, list[Edge]]) -> list[Edge]:
    """Imports of a later stage."""
    return [edge for edges in graph.values() for edge in edges
            if stage_of(edge.target) > stage_of(edge.source)]


def _describe(cycle: list[Edge]) -> str:
    return " -> ".join([cycle[0].source, *(f"{e.target} ({e.path.name}:{e.line})" for e in cycle)])


ROOT = Path(ntkdsl.__file__).resolve().parent
GRAPH = import_graph(ROOT)


def test_every_module_has_a_stage():
    missing = sorted(name for name in GRAPH if stage_of(name) is None)
    assert not missing, f"put these modules into a stage of STAGES (DESIGN §1): {missing}"


def test_no_import_cycles():
    found = cycles(GRAPH)
    assert not found, "import cycles:\n" + "\n".join(_describe(cycle) for cycle in found)


def test_no_stage_imports_a_later_stage():
    found = backward_edges(GRAPH)
    assert not found, "imports of a later stage:\n" + "\n".join(
        f"{edge}: {STAGES[stage_of(edge.source)][0]} imports {STAGES[stage_of(edge.target)][0]}"
        for edge in found)


# ------------------------------------------------------------ the checker itself, on made-up trees

def _write(root: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        path = root / PACKAGE / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return root / PACKAGE


def test_a_function_local_import_closes_a_cycle(tmp_path):
    # Today's hidden cycle, in miniature: activations -> expressions -> parser -> layers ->
    # activations, the last edge inside a function.
    root = _write(tmp_path, {
        "__init__.py": "",
        "activations.py": "def phi():\n    from .expressions import parse\n",
        "expressions.py": "from .parser import grammar\n",
        "parser.py": "from .layers import build_layer\n",
        "layers.py": "from . import activations, limits\n",
        "limits.py": "",
    })
    found = cycles(import_graph(root))
    assert [[(e.source, e.target) for e in cycle] for cycle in found] == [[
        ("ntkdsl.activations", "ntkdsl.expressions"), ("ntkdsl.expressions", "ntkdsl.parser"),
        ("ntkdsl.parser", "ntkdsl.layers"), ("ntkdsl.layers", "ntkdsl.activations")]]
    assert found[0][0].line == 2  # the function-local import is seen where it is written


def test_imports_resolve_to_submodules_packages_and_relative_levels(tmp_path):
    root = _write(tmp_path, {
        "__init__.py": "from . import network\n__version__ = '1'\n",
        "network.py": "import ntkdsl.errors\nfrom typing import TYPE_CHECKING\n"
                      "if TYPE_CHECKING:\n    from .cli import main\n",
        "errors.py": "import numpy\n",
        "cli.py": "from . import __version__\n",
        "commands/__init__.py": "",
        "commands/fit.py": "from ..errors import InputError\nfrom .. import network\n",
    })
    graph = import_graph(root)
    targets = {name: sorted(e.target for e in edges) for name, edges in graph.items()}
    assert targets == {
        "ntkdsl": ["ntkdsl.network"],
        "ntkdsl.network": ["ntkdsl.cli", "ntkdsl.errors"],  # TYPE_CHECKING imports count
        "ntkdsl.errors": [],  # outside the package: not an edge
        "ntkdsl.cli": ["ntkdsl"],  # a name of the package's namespace: an edge to the package
        "ntkdsl.commands": [],
        "ntkdsl.commands.fit": ["ntkdsl.errors", "ntkdsl.network"],
    }
    backward = {(e.source, e.target) for e in backward_edges(graph)}
    assert backward == {("ntkdsl.network", "ntkdsl.cli"), ("ntkdsl.cli", "ntkdsl")}
    assert {frozenset(e.source for e in cycle) for cycle in cycles(graph)} == {
        frozenset({"ntkdsl", "ntkdsl.network", "ntkdsl.cli"})}


def test_stage_lookup_takes_the_longest_name_and_the_package_only_for_itself():
    assert STAGES[stage_of("ntkdsl.runtime.hermite")][0] == "runtime"
    assert STAGES[stage_of("ntkdsl.commands.fit")][0] == "command line"
    assert STAGES[stage_of("ntkdsl")][0] == "package"
    assert stage_of("ntkdsl.somethingnew") is None
    assert stage_of("ntkdsl.evaluationx") is None  # a prefix of the name is not a package


@pytest.mark.parametrize("module", ["ntkdsl.parser", "ntkdsl.layers", "ntkdsl.activations"])
def test_the_language_stage_does_not_reach_the_derivation(module):
    """The parser checks layer names against the registry, which must not need the derivation."""
    reached, todo = set(), [module]
    while todo:
        for edge in GRAPH[todo.pop()]:
            if edge.target not in reached:
                reached.add(edge.target)
                todo.append(edge.target)
    later = sorted(m for m in reached if stage_of(m) > stage_of("ntkdsl.parser"))
    assert not later
