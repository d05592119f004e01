"""Issue 13, "one of each": logic that ntkdsl once wrote two or more ways now lives in one place.
The checks read the package's source (every module, as tests/test_import_graph.py does), and the
shared pieces are checked against independent computations."""
from __future__ import annotations

import ast
import dataclasses
import io

import numpy as np
import pytest
import sympy as sp
from test_import_graph import ROOT, module_files

from ntkdsl import activations, expressions, finite, formula, numerical, progress
from ntkdsl.ast import Activation
from ntkdsl.kinds import KINDS

TREES = {name: ast.parse(path.read_text(), str(path)) for name, path in module_files(ROOT).items()}


def _where(predicate) -> list[str]:
    """``module:line`` of every syntax node of the package for which ``predicate`` holds."""
    return [f"{name}:{node.lineno}" for name, tree in TREES.items() for node in ast.walk(tree)
            if predicate(node)]


def _strings(node: ast.AST) -> list[str] | None:
    if isinstance(node, (ast.Tuple, ast.List)) and all(
            isinstance(e, ast.Constant) and isinstance(e.value, str) for e in node.elts):
        return [e.value for e in node.elts]
    return None


def test_the_kernel_names_are_written_once():
    pairs = _where(lambda node: sorted(_strings(node) or []) == ["nngp", "ntk"])
    # The runtime stands alone (standalone modules embed its text), so it may not import them.
    library = [where.split(":")[0] for where in pairs if not where.startswith("ntkdsl.runtime")]
    assert library == ["ntkdsl.kinds"]
    assert KINDS == ("nngp", "ntk")  # the order of a program's outputs and of kernels()


def _imports_tqdm(node: ast.AST) -> bool:
    if isinstance(node, ast.Import):
        return any(alias.name.split(".")[0] == "tqdm" for alias in node.names)
    return isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] == "tqdm"


def test_tqdm_is_used_by_the_one_progress_helper_only():
    assert [where.split(":")[0] for where in _where(_imports_tqdm)] == ["ntkdsl.progress"]


def _symbol_x(node: ast.AST) -> bool:
    return (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
            and node.func.attr == "Symbol" and bool(node.args)
            and isinstance(node.args[0], ast.Constant) and node.args[0].value == "x")


def test_the_activation_variable_is_defined_once():
    assert [where.split(":")[0] for where in _where(_symbol_x)] == ["ntkdsl.expressions"]
    assert activations.x is expressions.x


def _drops_dirac_deltas(node: ast.AST) -> bool:
    return (isinstance(node, ast.Attribute) and node.attr == "DiracDelta"
            and isinstance(node.ctx, ast.Load))


def test_phi_prime_is_derived_in_one_place():
    assert [where.split(":")[0] for where in _where(_drops_dirac_deltas)] == ["ntkdsl.activations"]
    assert numerical.derivative is activations.derivative


@pytest.mark.parametrize("text, phi", [
    ("x*tanh(x) + step(x - 0.5)", lambda t: t * np.tanh(t) + (t >= 0.5)),
    ("relu(x)**2 + sign(x)*sin(x)", lambda t: np.maximum(t, 0) ** 2 + np.sign(t) * np.sin(t)),
])
def test_the_one_phi_prime_is_the_almost_everywhere_derivative(text, phi):
    """Central differences of φ away from its jumps and kinks, against the finite networks' φ'
    (the same derivative the NTK and the numerical route use)."""
    node = Activation("Fn", (("expr", text),))
    _, phi_prime = finite.activation_functions(node)
    t = np.array([-2.3, -0.7, 0.2, 0.9, 1.7, 3.1])
    h = 1e-6
    np.testing.assert_allclose(phi_prime(t), (phi(t + h) - phi(t - h)) / (2 * h), rtol=1e-7,
                               atol=1e-8)
    symbolic = sp.lambdify(activations.x, activations.derivative(expressions.parse_expression(text)))
    np.testing.assert_allclose(phi_prime(t), symbolic(t), rtol=1e-14)


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


@pytest.mark.parametrize("show, terminal, shown", [
    (True, False, True), (True, True, True), (False, True, False), (False, False, False),
    (None, True, True), (None, False, False)])
def test_one_rule_for_showing_a_progress_bar(monkeypatch, show, terminal, shown):
    stream = _Terminal() if terminal else io.StringIO()
    monkeypatch.setattr("sys.stderr", stream)
    with progress.stages(show, 2) as stage:
        stage("first")
        stage.note("half way")
        stage("second")
    assert ("second" in stream.getvalue()) == shown
    bar = progress.progress_bar(show, 3, desc="kernel")
    assert (bar is not None) == shown
    if bar is not None:
        bar.close()


def test_every_caller_shows_progress_through_the_helper():
    """verify, fit and the kernel evaluation import the helper, not tqdm (the estimators show
    the network's own bar: tests/test_estimators.py)."""
    users = {name for name, tree in TREES.items() for node in ast.walk(tree)
             if isinstance(node, ast.ImportFrom) and (node.module or "").endswith("progress")}
    assert {"ntkdsl.verify", "ntkdsl.commands.fit"} <= users
    assert any(name.startswith("ntkdsl.evaluation") for name in users)


def test_dead_code_is_gone():
    """formula.LEGEND and the registry's ``doc`` fields were never read."""
    assert not hasattr(formula, "LEGEND")
    assert "doc" not in {f.name for f in dataclasses.fields(activations.ActivationSpec)}
