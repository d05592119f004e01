"""The typed kernel program (issue 13): variables know their role and layer, generated code
takes shapes from roles and liveness from typed statements, the compiled object carries what
evaluation needs, and no module on the code-generation path reads generated text back."""
import ast
import pickle
import sys
from pathlib import Path

import numpy as np
import pytest
import sympy as sp

import ntkdsl
from ntkdsl.derivation import derive
from ntkdsl.generate import (
    EXTRA_TEMPORARIES,
    function_code,
    module_code,
    with_deletes,
)
from ntkdsl.inplace import Statement
from ntkdsl.parser import parse
from ntkdsl.printing import NumPyPrinter, compile_source
from ntkdsl.program import (
    DIAGONAL_ROLES,
    NNGP,
    PAIR_ROLES,
    VARIANCE1,
    VARIANCE2,
    Assignment,
    KernelVariable,
    Program,
    Step,
)
from ntkdsl.symbolic import Corr

PACKAGE = Path(ntkdsl.__file__).parent
ARCH = "Dense(8, b_std=0.1) > Relu > (Dense(8) + Dense(8)) > LayerNorm > Erf > Dense(1)"


@pytest.mark.parametrize("diagonal, roles", [(False, PAIR_ROLES), (True, DIAGONAL_ROLES)])
def test_every_step_assigns_variables_of_its_own_layer_and_a_state_role(diagonal, roles):
    program = derive(parse(ARCH), ARCH, diagonal=diagonal)
    assert program.diagonal is diagonal
    for number, step in enumerate(program.steps, start=1):
        assert step.layer == number
        for target in step.targets:
            assert isinstance(target, KernelVariable)
            assert target.role in roles and target.layer == number


def test_variables_pickle_with_role_and_layer_and_differ_by_role():
    k = KernelVariable("v", NNGP, 3, real=True)
    back = pickle.loads(pickle.dumps(2 * k + 1))
    (symbol,) = back.free_symbols
    assert (symbol.role, symbol.layer) == (NNGP, 3) and back == 2 * k + 1
    assert KernelVariable("v", VARIANCE1, 3, real=True) != k


def test_display_names_and_variables_share_one_attributed_symbol():
    """formula.DisplayName and KernelVariable are symbolic.AttributedSymbol: same-named
    symbols that differ in an attribute are different symbols, and sympy can order them
    (it compares their content item by item: an int layer against a template's str one
    raised TypeError); they pickle with their attributes and sort as plain symbols."""
    from ntkdsl.formula import DisplayName
    from ntkdsl.symbolic import AttributedSymbol
    a, b = DisplayName.of_layer("c", 2), DisplayName.of_layer("c", "2")
    assert isinstance(a, AttributedSymbol) and isinstance(KernelVariable("v", NNGP), AttributedSymbol)
    assert a != b and len({a, b}) == 2
    expr = 3 * a + sp.sqrt(b) + a * b
    back = pickle.loads(pickle.dumps(expr))
    assert back == expr
    assert {(s.family, s.layer, s.tag, s.is_real) for s in back.free_symbols} == {
        ("c", 2, "", True), ("c", "2", "", True)}
    plain = sp.Symbol("c_2", real=True)
    assert sp.default_sort_key(a) == sp.default_sort_key(plain)
    assert KernelVariable("v", NNGP, 1, real=True).class_key() == sp.Symbol("v").class_key()


def _hand_program():
    """A kernel program whose variables have names no convention knows: only the roles say
    that a is a column, b a row and c, z matrices."""
    a = KernelVariable("a", VARIANCE1, 0, positive=True)
    b = KernelVariable("b", VARIANCE2, 0, positive=True)
    c = KernelVariable("c", NNGP, 0, real=True)
    z = KernelVariable("z", NNGP, 1, real=True)
    step = Step("test", (Assignment(z, 2 * sp.acos(Corr(c, a, b)) + c),))
    return Program((a, b, c), (step,), (z, c))


def test_generated_code_takes_shapes_from_roles():
    code = function_code(_hand_program(), "f", "")
    in_place = [s for s in code.statements if not s.targets and not s.deletes and s.reads]
    assert in_place, "matrix expressions are written in place (out=)"
    assert code.arrays == ("c",)
    source, needs = module_code([code])
    f = compile_source(source, needs.imports)["f"]
    rng = np.random.default_rng(0)
    x1, x2 = rng.normal(size=(4, 3)), rng.normal(size=(5, 3))
    a, b, c = (x1 ** 2).sum(1)[:, None], (x2 ** 2).sum(1)[None, :], x1 @ x2.T
    expected = 2 * np.arccos(np.clip(c / np.sqrt(a * b), -1, 1)) + c
    np.testing.assert_allclose(f(a, b, c)[0], expected, rtol=1e-14)


def test_deletes_follow_the_names_statements_read_not_their_text():
    statements = [Statement("m = f()", ("m",)), Statement("s = 'm'", ("s",)),
                  Statement("n = g(m)", ("n",), ("m",)), Statement("p = 'm n'", ("p",))]
    out = with_deletes(statements, {"m", "n"})
    assert [s.text for s in out] == ["m = f()", "s = 'm'", "n = g(m)", "del m, n", "p = 'm n'"]


def _live_matrices(function, args, size):
    """Most distinct arrays of the input matrix's size alive at once in ``function``'s
    frame, watched line by line (an independent count of what ``temporaries`` predicts)."""
    most = [0]

    def trace(frame, event, arg):
        if frame.f_code is not function.__code__:
            return None
        arrays = {id(v.base if v.base is not None else v) for v in frame.f_locals.values()
                  if isinstance(v, np.ndarray) and v.size == size}
        most[0] = max(most[0], len(arrays))
        return trace

    sys.settrace(trace)
    try:
        function(*args)
    finally:
        sys.settrace(None)
    return most[0]


@pytest.mark.parametrize("arch", [ARCH, "(Dense(8, W_std=1.4) > Relu) * 3 > Dense(1)",
                                  "Dense(8, b_std=0.1) > Tanh > Dense(1)"])
def test_live_arrays_match_a_count_while_the_program_runs(arch):
    compiled = ntkdsl.compile(arch).compiled
    rng = np.random.default_rng(1)
    x1, x2 = rng.normal(size=(30, 4)), rng.normal(size=(20, 4))
    q1, q2 = (x1 ** 2).mean(1)[:, None], (x2 ** 2).mean(1)[None, :]
    sides = compiled.sides.side(q1, q2, 4)
    watched = _live_matrices(compiled.pair, (x1 @ x2.T / 4, 4, *sides), 600)
    assert compiled.temporaries - EXTRA_TEMPORARIES == watched


@pytest.mark.parametrize("arch, numerical", [("Dense(8) > Relu > Dense(1)", False),
                                             ("Dense(8) > Erf > Dense(1)", False),
                                             ("Dense(8) > Tanh > Dense(1)", True),
                                             ("Dense(8) > Relu > Sin > Dense(1)", True)])
def test_compiled_kernels_say_whether_they_call_the_numerical_engine(arch, numerical):
    compiled = ntkdsl.compile(arch).compiled
    assert compiled.numerical is numerical
    assert ("_hd_dual_pair" in compiled.pair.__globals__) is numerical


def test_the_printer_records_helpers_and_imports_it_used():
    k, q = sp.Symbol("k"), sp.Symbol("q", positive=True)
    printer = NumPyPrinter()
    text = printer.doprint(sp.erf(Corr(k, q, q + 1)) + sp.Max(k, 0))
    assert set(printer.helpers) == {"_corr"} and printer.imports() == ["numpy", "scipy.special"]
    namespace = compile_source(printer.helpers["_corr"] + f"\ndef g(k, q):\n    return {text}\n",
                               printer.imports())
    from math import erf, sqrt
    assert namespace["g"](0.5, 2.0) == pytest.approx(erf(0.5 / sqrt(6.0)) + 0.5, rel=1e-15)


def test_max_prints_elementwise_and_needs_no_functools():
    x = sp.Symbol("x")
    printer = NumPyPrinter()
    text = printer.doprint(sp.Max(x, 0, x ** 2 - 1))
    assert "functools" not in printer.imports()
    f = compile_source(f"def h(x):\n    return {text}\n", printer.imports())["h"]
    grid = np.linspace(-2, 2, 9)
    np.testing.assert_array_equal(f(grid), np.maximum(np.maximum(grid, 0), grid ** 2 - 1))


_TEXT_PATH = ("generate", "inplace", "printing", "program", "network", "derivation",
              "numerical", "standalone",
              *(f"{package}/{p.stem}" for package in ("evaluation", "runtime")
                for p in sorted((PACKAGE / package).glob("*.py"))))


@pytest.mark.parametrize("module", _TEXT_PATH)
def test_no_regular_expressions_on_the_code_generation_path(module):
    """Generated code is never read back as text: these modules do not import re."""
    tree = ast.parse((PACKAGE / f"{module}.py").read_text(encoding="utf-8"))
    imported = {alias.name for node in ast.walk(tree) if isinstance(node, ast.Import)
                for alias in node.names}
    imported |= {node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)}
    assert "re" not in imported


@pytest.mark.parametrize("name", ["Corr", "ExpSinh", "ExpCosh", "AtZeroVariance",
                                  "NumericalDual", "NumericalMoment"])
def test_sympy_functions_hold_mathematics_only(name):
    """How a call is printed, its helper sources, its partner call and whether it returns a
    new array are the NumPy printer's business, not the sympy class's."""
    from ntkdsl import numerical, symbolic
    cls = getattr(symbolic, name, None) or getattr(numerical, name)
    for backend in ("_numpycode", "_pythoncode", "helpers", "joint", "fresh_result"):
        assert not hasattr(cls, backend), f"{name}.{backend}"


def test_exp_sinh_and_cosh_of_one_step_are_one_call_and_give_the_closed_form():
    """Sin's Γ and Γ̇ need exp(m)·sinh(d) and exp(m)·cosh(d): fused on the expressions into
    one helper call; the kernel equals E[sin(u) sin(v)] = exp(-(q1+q2)/2) sinh(k)."""
    net = ntkdsl.compile("Dense(8, b_std=0.3) > Sin > Dense(1)")
    calls = [s for s in net.compiled.source.split("def pair(")[1].split("def diagonal(")[0]
             .splitlines() if "_exp_s" in s or "_exp_c" in s]
    assert len(calls) == 1 and "_exp_sinh_cosh(" in calls[0]
    x = np.random.default_rng(2).normal(size=(4, 3))
    q, k = (x ** 2).mean(1) + 0.09, x @ x.T / 3 + 0.09
    expected = np.exp(-(q[:, None] + q[None, :]) / 2) * np.sinh(k)
    np.testing.assert_allclose(net.nngp(x), expected, rtol=1e-13)
