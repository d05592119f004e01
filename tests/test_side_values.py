"""Side values (issue 13, speed): what a fully-connected network's pair program computes of
one input alone — variances, their square roots and inverse square roots, sums of them — is
split off into ``side(q1_0, q2_0, d)``, which the evaluation runs once for all rows and
columns; ``pair(K_0, d, *side values)`` runs per chunk of entries on slices of them. These
tests hold the split to the program it comes from: the side function's values equal the ones
the unsplit pair program computes for a chunk itself, the kernels equal the standalone
module's (which keeps the unsplit ``pair``) and independent formulas, a network with nothing
to hoist works, and convolutional networks keep their own split."""
import dataclasses
import sys

import numpy as np
import pytest
from test_evaluation import relu_recursion
from test_runtime import _standalone

import ntkdsl
from ntkdsl.derivation import derive
from ntkdsl.generate import compile_program, hoisted_code
from ntkdsl.inplace import COLUMN, ROW, SCALAR
from ntkdsl.parser import parse

ARCHS = [
    "(Dense(8, W_std=1.4, b_std=0.1) > Relu) * 3 > Dense(1, W_std=1.4, b_std=0.1)",
    "(Dense(8, W_std=1.5, b_std=0.1) > Erf) * 2 > Dense(1)",
    "Dense(8, b_std=0.1) > Relu > (Dense(8) + Dense(8)) > LayerNorm > Erf > Dense(1)",
    "Dense(8, b_std=0.3) > Sin > Dense(8) > Gelu > Dense(1)",             # joint exp(m)sinh(d)
    "(Dense(8, W_std=1.5, b_std=0.1) > Tanh) * 2 > Dense(1)",             # numerical route
    'Dense(8) > Fn("relu(x)*step(x) + 1") > Dense(1, b_std=0.2)',         # zero-variance test
    "Dense(8) > (Relu > Dense(8) + Identity) > ABRelu(-0.5, 2.0) > Dense(1)",
]


def _inputs(n1=12, n2=9, d=5, seed=3):
    rng = np.random.default_rng(seed)
    x1, x2 = rng.normal(size=(n1, d)), rng.normal(size=(n2, d))
    x2[0] = x1[0]  # an identical pair
    x1[3] = 0.0    # a zero row: variance 0
    return x1, x2


def _statistics(x1, x2):
    d = x1.shape[1]
    return (x1 * x1).sum(1) / d, (x2 * x2).sum(1) / d, x1 @ x2.T / d, d


def _side_names(compiled) -> tuple[str, ...]:
    """The names of pair's side-value arguments (after K_0 and d)."""
    code = compiled.pair.__code__
    return code.co_varnames[:code.co_argcount][2:]


def _values_seen(function, args) -> tuple[tuple, dict]:
    """(function(*args), the last value each local name of its frame held), watched line by
    line: what the unsplit program computes for itself."""
    seen: dict = {}

    def trace(frame, event, arg):
        if frame.f_code is not function.__code__:
            return None
        seen.update(frame.f_locals)
        return trace

    sys.settrace(trace)
    try:
        result = function(*args)
    finally:
        sys.settrace(None)
    return result, seen


@pytest.mark.parametrize("arch", ARCHS)
def test_side_values_equal_what_the_unsplit_pair_program_computes_per_chunk(arch):
    net = ntkdsl.compile(arch)
    sides = net.compiled.sides
    unsplit = compile_program(net.program, "pair")  # pair(q1_0, q2_0, K_0, d), one function
    q1, q2, k, d = _statistics(*_inputs())
    values = sides.side(q1[:, None], q2[None, :], d)
    names = _side_names(net.compiled)
    assert len(values) == len(names) == len(sides.kinds) > 0
    rows, columns = slice(3, 7), slice(2, None)  # a chunk: rows 3:7, columns from 2 on
    expected, seen = _values_seen(unsplit, (q1[rows, None], q2[None, columns], k[rows, columns], d))
    for name, kind, value in zip(names, sides.kinds, values):
        chunk = {COLUMN: lambda v: v[rows], ROW: lambda v: v[:, columns]}.get(kind, lambda v: v)
        if kind == SCALAR:
            assert np.ndim(value) == 0, name
        else:  # a column of all rows of x, or a row of all rows of x'
            assert np.shape(value) == ((len(q1), 1) if kind == COLUMN else (1, len(q2))), name
        np.testing.assert_allclose(chunk(np.asarray(value)), seen[name], rtol=1e-15, atol=0,
                                   err_msg=name)
    got = net.compiled.pair(k[rows, columns], d,
                            *({COLUMN: lambda v: v[rows], ROW: lambda v: v[:, columns]}
                              .get(kind, lambda v: v)(v) for kind, v in zip(sides.kinds, values)))
    # The numerical engine's coefficients of a variance may come from its process-wide cache,
    # made for another batch of variances: equal to its rounding, far inside its 1e-11 bound.
    tolerance = 1e-13 if net.compiled.numerical else 1e-15
    for a, b in zip(got, expected):
        np.testing.assert_allclose(a, b, rtol=tolerance, atol=0)


@pytest.mark.parametrize("arch", ARCHS[:5])
def test_library_kernels_equal_the_standalone_modules(arch, tmp_path):
    """The standalone module keeps the unsplit pair(q1_0, q2_0, K_0, d) on whole matrices;
    the library runs side once and pair per chunk: the same numbers (up to the rounding of
    Gram products of different blocks)."""
    module = _standalone(arch, tmp_path, "module")
    net = ntkdsl.compile(arch)
    x1, x2 = _inputs(40, 31)
    for args in ((x1, x2), (x1,)):
        for mine, theirs in zip(net.kernels(*args), module.kernels(*args)):
            np.testing.assert_allclose(mine, theirs, rtol=1e-13, atol=1e-15)


def _relu_diagonal(x, depth, w2, b2):
    """The same recursion for inputs with themselves (correlation 1: E[relu(u)²] = q/2)."""
    q = w2 * (x * x).sum(1) / x.shape[1] + b2
    t = q.copy()
    for _ in range(depth):
        q = w2 * q / 2 + b2
        t = w2 * t / 2 + q
    return q, t


@pytest.mark.parametrize("threads, dtype", [(1, np.float64), (2, np.float64), (1, np.float32)])
def test_an_evaluation_computes_the_side_values_once(threads, dtype):
    """One call of side per evaluation, many of pair (each on slices of its values), and the
    kernels of the arc-cosine recursion, for a self-kernel (the triangle of each panel) and
    a cross-kernel."""
    arch = "(Dense(8, W_std=1.4, b_std=0.1) > Relu) * 3 > Dense(1, W_std=1.4, b_std=0.1)"
    net = ntkdsl.compile(arch)
    compiled = net.compiled
    calls = {"side": 0, "pair": 0}

    def counted(name, function):
        def call(*args):
            calls[name] += 1
            return function(*args)
        return call

    counting = dataclasses.replace(
        compiled, pair=counted("pair", compiled.pair),
        sides=dataclasses.replace(compiled.sides, side=counted("side", compiled.sides.side)))
    x1, x2 = np.random.default_rng(5).normal(size=(400, 6)), np.random.default_rng(6).normal(size=(150, 6))
    object.__setattr__(net, "compiled", counting)  # frozen
    try:
        for args in ((x1,), (x1, x2)):
            calls.update(side=0, pair=0)
            got = net.kernels(*args, dtype=dtype, threads=threads)
            assert calls["side"] == 1 and calls["pair"] > 3
            expected = relu_recursion(x1, args[-1])
            # arccos near 1 loses half the digits: an input with itself from c = 1 exactly
            same = np.eye(len(x1), dtype=bool) if len(args) == 1 else np.zeros(np.shape(got[0]), bool)
            tolerance = 1e-12 if dtype == np.float64 else 2e-6
            for a, b, c in zip(got, expected, _relu_diagonal(x1, 3, 1.4 ** 2, 0.1 ** 2)):
                np.testing.assert_allclose(a[~same], b[~same], rtol=tolerance,
                                           atol=tolerance * abs(b).max())
                if len(args) == 1:
                    np.testing.assert_allclose(np.diagonal(a), c, rtol=tolerance)
    finally:
        object.__setattr__(net, "compiled", compiled)


def test_a_network_with_nothing_to_hoist():
    """A linear network's kernels read no value of one input alone: side returns nothing,
    pair(K_0, d) alone; the kernels are the two Dense maps of x.x'/d."""
    net = ntkdsl.compile("Dense(4, W_std=1.5, b_std=0.2) > Dense(1, W_std=0.5)")
    assert net.compiled.sides.kinds == () and _side_names(net.compiled) == ()
    x1, x2 = _inputs()
    _, _, k, _ = _statistics(x1, x2)
    first = 2.25 * k + 0.04
    nngp, ntk = net.kernels(x1, x2)
    np.testing.assert_allclose(nngp, 0.25 * first, rtol=1e-14)
    np.testing.assert_allclose(ntk, 0.25 * first + 0.25 * first, rtol=1e-14)


def test_a_network_reading_only_scalars_of_the_sides():
    """Erf straight after a Dense of W_std 0 has constant variances: what pair reads of the
    sides is scalars (or nothing) — no column or row needed."""
    net = ntkdsl.compile("Dense(4, W_std=0.0, b_std=0.5) > Erf > Dense(1)")
    assert set(net.compiled.sides.kinds) <= {SCALAR}
    x1, x2 = _inputs()
    q = 0.25  # every variance and covariance is b_std² = 0.25
    expected = 2 / np.pi * np.arcsin(2 * q / (1 + 2 * q))
    np.testing.assert_allclose(net.nngp(x1, x2), np.full((12, 9), expected), rtol=1e-14)


def _statement_counts(arch):
    code = hoisted_code(derive(parse(arch), arch), "")
    return [sum(1 for s in f.statements if s.targets or s.reads) for f in (code.side, code.pair)]


def test_the_split_is_by_statement_and_grows_linearly_with_depth():
    """Side holds no statement on matrices, pair no statement on vectors alone; both grow by
    the same number of statements per block (the split is one pass over the statements)."""
    arch = "(Dense(8, b_std=0.1) > Relu) * 6 > Dense(1)"
    code = hoisted_code(derive(parse(arch), arch), "")
    assert not any(s.matrix for s in code.side.statements)
    assert all(s.matrix or s.deletes for s in code.pair.statements if s.targets or s.reads)
    counts = {n: _statement_counts(f"(Dense(8, b_std=0.1) > Relu) * {n} > Dense(1)")
              for n in (10, 20, 40)}
    for function in (0, 1):
        per_block = (counts[20][function] - counts[10][function]) / 10
        assert per_block > 0
        assert counts[40][function] - counts[20][function] == 20 * per_block


def test_convolutional_networks_keep_their_own_split(tmp_path):
    """A convolutional network's values of each image alone are its SpatialKernels' side
    (ntkdsl.evaluation.spatial): no SideValues, and the kernels equal the standalone
    module's."""
    arch = "Conv(4, (3,), padding='SAME', b_std=0.1) > Relu > GlobalAvgPool > Dense(1)"
    net = ntkdsl.compile(arch)
    assert net.compiled.sides is None and net.compiled.spatial is not None
    module = _standalone(arch, tmp_path, "conv_module")
    x = np.random.default_rng(2).normal(size=(6, 7, 3))
    for mine, theirs in zip(net.kernels(x), module.kernels(x)):
        np.testing.assert_allclose(mine, theirs, rtol=1e-13, atol=1e-15)


def test_the_side_values_memory_is_checked_before_any_work(monkeypatch):
    """A deep network reads four values of each input alone per ReLU layer: for all rows of
    x and x' they must fit, checked (InputError naming them) before any work."""
    from ntkdsl.errors import InputError
    from ntkdsl.evaluation import memory

    net = ntkdsl.compile("(Dense(8, b_std=0.1) > Relu) * 50 > Dense(1)")
    kinds = net.compiled.sides.kinds
    assert kinds.count(COLUMN) == kinds.count(ROW) == 100  # sqrt and 1/sqrt, per layer
    x = np.random.default_rng(4).normal(size=(100, 3))
    outs = [np.zeros((100, 100)), np.zeros((100, 100))]
    need = (100 * 100 + 100 * 100) * 8
    monkeypatch.setattr(memory, "available_memory", lambda: need - 1)
    with pytest.raises(InputError, match="values of each input alone"):
        net.kernels(x, out=outs)
    assert not outs[0].any() and not outs[1].any()
    monkeypatch.setattr(memory, "available_memory", lambda: need)
    net.kernels(x, out=outs)
    np.testing.assert_array_equal(outs[0], net.nngp(x))


def test_the_side_function_runs_with_blas_held_to_one_thread():
    """The numerical route's coefficients (computed in side, for every variance) are matrix
    products: with BLAS at one thread, as for every other part of the program, so the numbers
    do not depend on the machine's BLAS threads (a process-pool worker's and the parent's
    agreed only to the last bit then)."""
    from threadpoolctl import threadpool_info

    net = ntkdsl.compile("(Dense(8, W_std=1.5, b_std=0.1) > Tanh) * 2 > Dense(1)")
    compiled, seen = net.compiled, []

    def side(*args):
        seen.extend(info["num_threads"] for info in threadpool_info()
                    if info["user_api"] == "blas")
        return compiled.sides.side(*args)

    object.__setattr__(net, "compiled", dataclasses.replace(
        compiled, sides=dataclasses.replace(compiled.sides, side=side)))
    try:
        net.kernels(*_inputs())
    finally:
        object.__setattr__(net, "compiled", compiled)
    assert seen and set(seen) == {1}
