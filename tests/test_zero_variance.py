"""Issue 12: a pre-activation of variance exactly 0 is exactly 0, so an activation φ with a
jump at 0 (Sign, steps) gives φ(0) there — E[φ(u)²] = φ(0)² and E[φ(u) φ(v)] = φ(0)·E[φ(v)]
— not the limit as the variance goes to 0. Checked on every route (registry closed forms,
Gaussian-integration rules, the numerical Hermite route), pair and diagonal programs, NNGP
and NTK, library and standalone module, against the definition (φ(0) and 1-D quadrature of
E[φ(v)], 2-D quadrature elsewhere) and against Monte-Carlo finite networks. Continuous φ
keep their values (and get no zero test in their code), and input-independent variances
(after Sign, a constant Polynomial) still compile and evaluate."""
from __future__ import annotations

import math
import time

import numpy as np
import pytest
import sympy as sp
from scipy import integrate
from test_numerical_duals import quad2

import ntkdsl
from ntkdsl import derivation
from ntkdsl.activations import x as X
from ntkdsl.derivation import ZeroVarianceCase, derive, dual_maps, jumps_at_zero
from ntkdsl.finite import empirical_ntk, monte_carlo_nngp
from ntkdsl.symbolic import AtZeroVariance

# quad2's inner integrals across sign's jump report roundoff at their 1e-13 target; the
# values agree with the kernels to 1e-8 and better.
pytestmark = pytest.mark.filterwarnings("ignore::scipy.integrate.IntegrationWarning")


def _step(z):
    return np.where(np.asarray(z) >= 0, 1.0, 0.0)  # step(0) = 1, as Fn's step is written


def _zero(z):
    return np.zeros_like(np.asarray(z, dtype=float))


# activation text: (φ, φ' almost everywhere), written from the definitions, not from ntkdsl.
JUMPS = {
    "Sign": (np.sign, _zero),
    # neural-tangents: (x >= 0) * x**degree, so 1 at 0 for degree 0 (as in the registry).
    "RectifiedMonomial(0)": (_step, _zero),
    'Fn("sign(x)")': (np.sign, _zero),
    'Fn("3*sign(x)")': (lambda z: 3 * np.sign(z), _zero),
    'Fn("step(x)")': (_step, _zero),
    'Fn("2*step(x) - 1")': (lambda z: 2 * _step(z) - 1, _zero),
    'Fn("step(-x)")': (lambda z: _step(-np.asarray(z)), _zero),
    'Fn("sign(x)*exp(x)")': (lambda z: np.sign(z) * np.exp(z), lambda z: np.sign(z) * np.exp(z)),
    'Fn("step(x) + x")': (lambda z: _step(z) + z, lambda z: np.ones_like(np.asarray(z, float))),
    "Relu > Sign": (lambda z: np.sign(np.maximum(z, 0)), _zero),
    "Sign > Relu": (lambda z: np.maximum(np.sign(z), 0), _zero),
}

W1, B1, W2, B2 = 1.3, 0.2, 0.9, 0.4
ZERO_ROWS = {"x1": ((0,), ()), "x2": ((), (1,)), "both": ((0,), (1,))}


def _inputs(where: str) -> tuple[np.ndarray, np.ndarray]:
    x1 = np.array([[0.4, -1.1, 0.8], [1.0, -0.5, 2.0], [-0.3, 0.9, 0.2]])
    x2 = np.array([[0.3, 1.2, -0.7], [0.6, 0.1, -1.5]])
    rows1, rows2 = ZERO_ROWS[where]
    x1[list(rows1)] = 0.0
    x2[list(rows2)] = 0.0
    return x1, x2


def _mean(f, q: float) -> float:
    """E[f(√q z)], z ~ N(0, 1), by adaptive quadrature (the jump at z = 0 a breakpoint)."""
    g = lambda z: float(f(math.sqrt(q) * z)) * math.exp(-z * z / 2) / math.sqrt(2 * math.pi)
    return integrate.quad(g, -14, 14, points=[0.0], epsabs=1e-14, epsrel=1e-13, limit=200)[0]


def expectation(f, q1: float, q2: float, k: float) -> float:
    """E[f(u) f(v)] for (u, v) ~ N(0, [[q1, k], [k, q2]]) from the definition: a variance of
    exactly 0 means the value is exactly 0."""
    if q1 == 0 and q2 == 0:
        return float(f(0.0)) ** 2
    if q1 == 0 or q2 == 0:
        return float(f(0.0)) * _mean(f, q1 + q2)
    return quad2(f, q1, q2, max(-1.0, min(1.0, k / math.sqrt(q1 * q2))))


def _arch(act: str, first_bias: bool, last_bias: bool) -> str:
    first = f"Dense(512, W_std={W1}" + (f", b_std={B1})" if first_bias else ")")
    last = f"Dense(1, W_std={W2}" + (f", b_std={B2})" if last_bias else ")")
    return f"{first} > {act} > {last}"


def reference(act: str, x1, x2, first_bias: bool, last_bias: bool, entries):
    """(NNGP, NTK) entries of Dense > act > Dense(1) by the recursion of DESIGN §2 with the
    expectations above (NTK parameterisation: T = K after the first Dense)."""
    phi, dphi = JUMPS[act]
    d, b1, b2 = x1.shape[1], B1 ** 2 if first_bias else 0.0, B2 ** 2 if last_bias else 0.0
    out = {}
    for i, j in entries:
        q1 = W1 ** 2 * (x1[i] @ x1[i]) / d + b1
        q2 = W1 ** 2 * (x2[j] @ x2[j]) / d + b1
        k = W1 ** 2 * (x1[i] @ x2[j]) / d + b1
        nngp = W2 ** 2 * expectation(phi, q1, q2, k) + b2
        ntk = nngp + (W2 ** 2 * k * expectation(dphi, q1, q2, k) if k else 0.0)
        out[i, j] = nngp, ntk
    return out


def _zero_entries(x1, x2):
    """Every (i, j) with a zero row on either side."""
    zero1 = {i for i in range(len(x1)) if not x1[i].any()}
    zero2 = {j for j in range(len(x2)) if not x2[j].any()}
    return [(i, j) for i in range(len(x1)) for j in range(len(x2)) if i in zero1 or j in zero2]


def _standalone(arch: str) -> dict:
    namespace: dict = {}
    exec(compile(ntkdsl.codegen(arch), "<standalone>", "exec"), namespace)  # our generated code
    return namespace


@pytest.mark.parametrize("last_bias", [False, True], ids=["no bias", "bias"])
@pytest.mark.parametrize("where", list(ZERO_ROWS))
@pytest.mark.parametrize("act", list(JUMPS))
def test_zero_rows_pair_kernels_match_the_definition(act, where, last_bias):
    arch = _arch(act, first_bias=False, last_bias=last_bias)
    x1, x2 = _inputs(where)
    net = ntkdsl.compile(arch)
    nngp, ntk = net.kernels(x1, x2)
    module = _standalone(arch)
    np.testing.assert_allclose(module["nngp"](x1, x2), nngp, rtol=1e-11, atol=1e-15)
    np.testing.assert_allclose(module["ntk"](x1, x2), ntk, rtol=1e-11, atol=1e-15)
    for (i, j), (want_nngp, want_ntk) in reference(act, x1, x2, False, last_bias,
                                                    _zero_entries(x1, x2)).items():
        assert nngp[i, j] == pytest.approx(want_nngp, rel=1e-9, abs=1e-12), (i, j)
        assert ntk[i, j] == pytest.approx(want_ntk, rel=1e-9, abs=1e-12), (i, j)


@pytest.mark.parametrize("last_bias", [False, True], ids=["no bias", "bias"])
@pytest.mark.parametrize("act", list(JUMPS))
def test_zero_rows_diagonal_matches_the_definition(act, last_bias):
    """x against itself (the diagonal program gives identical pairs) and net.diagonal."""
    arch = _arch(act, first_bias=False, last_bias=last_bias)
    x, _ = _inputs("x1")
    net = ntkdsl.compile(arch)
    nngp, ntk = net.kernels(x)
    diagonal = net.diagonal(x)
    module = _standalone(arch)
    want = reference(act, x, x, False, last_bias, [(0, j) for j in range(len(x))])
    for j in range(len(x)):
        assert nngp[0, j] == nngp[j, 0] == pytest.approx(want[0, j][0], rel=1e-9, abs=1e-12)
        assert ntk[0, j] == pytest.approx(want[0, j][1], rel=1e-9, abs=1e-12)
    assert diagonal[0][0] == pytest.approx(want[0, 0][0], rel=1e-12, abs=1e-15)
    assert diagonal[1][0] == pytest.approx(want[0, 0][1], rel=1e-12, abs=1e-15)
    np.testing.assert_allclose(module["nngp"](x), nngp, rtol=1e-11, atol=1e-15)
    np.testing.assert_allclose(module["ntk"](x), ntk, rtol=1e-11, atol=1e-15)


@pytest.mark.parametrize("act", ["Sign", "RectifiedMonomial(0)", 'Fn("step(x) + x")'])
def test_zero_rows_in_the_standard_parameterization(act):
    """Standard parameterisation: T ← n_in·K + σw²·T (+1 for a bias). A zero row's T is 0
    wherever its variance is (its gradients vanish with it), so the NTK there is
    512·Γ + 1 from the readout alone, with Γ from the definition."""
    arch = (f"Dense(512, W_std={W1}, parameterization='standard') > {act} > "
            f"Dense(1, W_std={W2}, b_std={B2}, parameterization='standard')")
    x1, x2 = _inputs("both")
    nngp, ntk = ntkdsl.compile(arch).kernels(x1, x2)
    phi = JUMPS[act][0]
    d = x1.shape[1]
    for i, j in _zero_entries(x1, x2):
        q1, q2 = W1 ** 2 * (x1[i] @ x1[i]) / d, W1 ** 2 * (x2[j] @ x2[j]) / d
        gamma = expectation(phi, q1, q2, W1 ** 2 * (x1[i] @ x2[j]) / d)
        assert nngp[i, j] == pytest.approx(W2 ** 2 * gamma + B2 ** 2, rel=1e-9, abs=1e-12)
        assert ntk[i, j] == pytest.approx(512 * gamma + 1, rel=1e-9, abs=1e-12)


@pytest.mark.parametrize("act", ["Sign", "RectifiedMonomial(0)", 'Fn("step(x) + x")', "Relu > Sign"])
def test_a_bias_before_the_jump_leaves_no_zero_variance(act):
    """With a bias the zero row's pre-activation has variance b², correlated with every
    other row: the ordinary values (2-D quadrature), unchanged by the zero-variance case."""
    x1, x2 = _inputs("both")
    nngp, ntk = ntkdsl.compile(_arch(act, first_bias=True, last_bias=True)).kernels(x1, x2)
    for (i, j), (want_nngp, want_ntk) in reference(act, x1, x2, True, True,
                                                    [(0, 0), (0, 1), (1, 1)]).items():
        assert nngp[i, j] == pytest.approx(want_nngp, rel=1e-8, abs=1e-10)
        assert ntk[i, j] == pytest.approx(want_ntk, rel=1e-8, abs=1e-10)


def test_the_issue_example():
    """Dense(3, W_std=1.558) > Sign > Dense(1, W_std=1.852, b_std=0.32) on a zero row: the
    network outputs its bias alone, variance 0.32² = 0.1024 (it gave 3.532304)."""
    net = ntkdsl.compile("Dense(3, W_std=1.558) > Sign > Dense(1, W_std=1.852, b_std=0.32)")
    x = np.array([[0.0, 0.0, 0.0], [1.0, 2.0, 3.0]])
    nngp, ntk = net.kernels(x)
    assert nngp[0, 0] == pytest.approx(0.32 ** 2, rel=1e-15)
    assert ntk[0, 0] == pytest.approx(0.32 ** 2, rel=1e-15)
    assert nngp[1, 1] == pytest.approx(1.852 ** 2 + 0.32 ** 2, rel=1e-15)


# ---------------------------------------------------------------------------------------
# A second check: finite networks
# ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("act", ["Sign", "RectifiedMonomial(0)", 'Fn("2*step(x) - 1")',
                                 'Fn("step(x) + x")', "Relu > Sign"])
def test_zero_rows_match_monte_carlo_finite_networks(act):
    """Wide random networks (three seeds averaged) on the zero-row entries: their
    pre-activations there are exactly 0, so each unit gives φ(0) — within 0.03 of the
    kernel, where the limit q → 0 was 0.25 to 1 off."""
    arch = _arch(act, first_bias=False, last_bias=True)
    x1, x2 = _inputs("both")
    nngp, ntk = ntkdsl.compile(arch).kernels(x1, x2)
    mc = np.mean([monte_carlo_nngp(arch, x1, x2, width=2048, samples=8, seed=s)
                  for s in range(3)], axis=0)
    emp = np.mean([empirical_ntk(arch, x1, x2, width=2048, seed=s) for s in range(3)], axis=0)
    for i, j in _zero_entries(x1, x2):
        assert abs(mc[i, j] - nngp[i, j]) < 0.03, (i, j, mc[i, j], nngp[i, j])
        assert abs(emp[i, j] - ntk[i, j]) < 0.03 * max(1.0, abs(ntk[i, j])), (i, j)


# ---------------------------------------------------------------------------------------
# What must not change
# ---------------------------------------------------------------------------------------

# activation: φ(0)
CONTINUOUS = {"Relu": 0.0, "Erf(c=0.3)": 0.3, "Gelu": 0.0, "Tanh": 0.0, "Cos": 1.0,
              'Fn("x*sign(x)")': 0.0, 'Fn("relu(x)*step(x) + 1")': 1.0,
              "Polynomial([0.5, 1.0, 0.3])": 0.5}


@pytest.mark.parametrize("act", list(CONTINUOUS))
def test_continuous_activations_keep_their_limit_and_get_no_zero_test(act):
    """For φ continuous at 0 the limit is φ(0)² already: the value at a zero row is
    W² φ(0)² + b², equal to the value at variance 1e-300, and no zero test is emitted."""
    arch = _arch(act, first_bias=False, last_bias=True)
    net = ntkdsl.compile(arch)
    assert "_at_zero_variance" not in net.source
    phi0 = CONTINUOUS[act]
    x = np.array([[0.0, 0.0, 0.0], [1e-150, 1e-150, 1e-150], [1.0, -0.5, 0.3]])
    nngp = net.nngp(x)
    assert nngp[0, 0] == pytest.approx(W2 ** 2 * phi0 ** 2 + B2 ** 2, rel=1e-12, abs=1e-15)
    assert nngp[1, 1] == pytest.approx(nngp[0, 0], rel=1e-12, abs=1e-15)
    assert nngp[0, 2] == pytest.approx(nngp[1, 2], rel=1e-12, abs=1e-15)


@pytest.mark.parametrize("act", ["Sign", "RectifiedMonomial(0)", 'Fn("step(x)")'])
def test_a_tiny_nonzero_variance_is_not_zero(act):
    """Variance 1e-300 > 0: φ(u) is ±1 (or 0/1) with the two sides equally likely, so
    E[φ(u)²] is the positive-variance value, not φ(0)²."""
    phi = JUMPS[act][0]
    net = ntkdsl.compile(_arch(act, first_bias=False, last_bias=True))
    x = np.array([[1e-150, 1e-150, 1e-150], [0.0, 0.0, 0.0]])
    nngp = net.nngp(x)
    assert nngp[0, 0] == pytest.approx(W2 ** 2 * _mean(lambda z: phi(z) ** 2, 1.0) + B2 ** 2,
                                       rel=1e-9)
    assert nngp[1, 1] == pytest.approx(W2 ** 2 * float(phi(0.0)) ** 2 + B2 ** 2, rel=1e-12)


def test_the_zero_test_only_where_it_changes_something():
    """Sign's arcsine is 0 = sign(0)·E[sign(v)] at a zero variance already (the correlation
    is 0 there), so only its variances get the test, no matrix pass; RectifiedMonomial(0)
    gets it on the kernel too (its arccosine gives 1/4 where φ(0)·E[φ(v)] = 1/2)."""
    sign = derive(ntkdsl.parse("Dense(8) > Sign"))
    step = derive(ntkdsl.parse("Dense(8) > RectifiedMonomial(0)"))
    tested = {a.target.name for s in sign.steps for a in s.assignments if a.expr.has(AtZeroVariance)}
    assert tested == {"q1_1", "q2_1"}
    assert all(a.expr.has(AtZeroVariance) for s in step.steps for a in s.assignments)


def test_jumps_at_zero_is_decided_from_phi():
    for phi, jumps in [(sp.sign(X), True), (sp.Heaviside(X, 1), True), (sp.floor(X), True),
                       (sp.sign(X) * sp.exp(X), True), (sp.sign(X) ** 2, True),
                       (X * sp.sign(X), False), (sp.Max(X, 0), False), (sp.erf(X), False),
                       (sp.Max(X, 0) * sp.Heaviside(X, 1), False)]:
        assert jumps_at_zero(phi) is jumps, phi


def test_a_jump_without_a_closed_form_mean_takes_the_numerical_route(monkeypatch):
    """E[φ(v)] must be exact: where sympy finds no closed form, the numerical route (exact
    at a zero variance by construction) computes the whole dual."""
    node = ntkdsl.parse("Dense(8) > Sign").layers[1]
    monkeypatch.setattr(derivation, "zero_variance_case",
                        lambda n: ZeroVarianceCase(sp.S.Zero, None))
    assert dual_maps.__wrapped__(node)[2].startswith("numerical")


# ---------------------------------------------------------------------------------------
# Input-independent variances (after Sign, RectifiedMonomial(0), a constant polynomial)
# ---------------------------------------------------------------------------------------

def _erf_layer_norm_tail(q1, q2, k, t, eps=1e-12):
    """Dense(8) > LayerNorm > Erf > Dense(1) on a state, in floats (DESIGN §2)."""
    t = k + t                                     # Dense(8), NTK parameterisation
    scale = math.sqrt((q1 + eps) * (q2 + eps))
    q1, q2, k, t = q1 / (q1 + eps), q2 / (q2 + eps), k / scale, t / scale
    outer = (1 + 2 * q1) * (1 + 2 * q2)
    gamma = 2 / math.pi * math.asin(2 * k / math.sqrt(outer))
    gamma_dot = 4 / math.pi / math.sqrt(outer - 4 * k * k)
    return gamma, gamma + t * gamma_dot


@pytest.mark.parametrize("act, phi", [("Sign", np.sign), ("RectifiedMonomial(0)", _step),
                                      ("Polynomial([2])", lambda z: 2.0 + 0 * np.asarray(z))])
def test_input_independent_variances_into_layer_norm_and_erf(act, phi):
    """Issue 12: the generated code took numpy.sqrt of a Python integer too large for int64
    once a variance stopped depending on the input. With zero rows, each entry against a
    float recursion whose first activation comes from the definition."""
    arch = f"Dense(8) > {act} > Dense(8) > LayerNorm > Erf > Dense(1)"
    x1, x2 = _inputs("both")
    nngp, ntk = ntkdsl.compile(arch).kernels(x1, x2)
    assert nngp.dtype == np.float64 and np.isfinite(nngp).all() and np.isfinite(ntk).all()
    d = x1.shape[1]
    for i, j in [(0, 0), (0, 1), (1, 0), (1, 1), (2, 0)]:
        q1, q2, k = x1[i] @ x1[i] / d, x2[j] @ x2[j] / d, x1[i] @ x2[j] / d
        state = (expectation(phi, q1, q1, q1), expectation(phi, q2, q2, q2),
                 expectation(phi, q1, q2, k), 0.0)  # φ' = 0 a.e.: nothing for the NTK
        want = _erf_layer_norm_tail(*state)
        assert nngp[i, j] == pytest.approx(want[0], rel=1e-9, abs=1e-12), (i, j)
        assert ntk[i, j] == pytest.approx(want[1], rel=1e-9, abs=1e-12), (i, j)


@pytest.mark.parametrize("bias", [None, 0.5])
def test_deep_sign_stacks_stay_linear_and_exact(bias):
    """(Dense(8[, b_std=0.5]) > Sign) * L: the largest step is the same for 10 and 30
    layers, 30 compile within a few seconds, and the kernels follow a float recursion
    (without a bias a zero row stays exactly 0 all the way)."""
    body = "Dense(8)" if bias is None else f"Dense(8, b_std={bias})"
    largest = {}
    for layers in (10, 30):
        program = derive(ntkdsl.parse(f"({body} > Sign) * {layers} > Dense(1)"))
        largest[layers] = max(sp.count_ops(a.expr) for s in program.steps for a in s.assignments)
    assert largest[10] == largest[30]
    start = time.perf_counter()
    net = ntkdsl.compile(f"({body} > Sign) * 30 > Dense(2, b_std=0.1)")
    assert time.perf_counter() - start < 5.0
    x, _ = _inputs("x1")
    nngp, _ = net.kernels(x)
    b2 = 0.0 if bias is None else bias ** 2
    d = x.shape[1]
    q = (x * x).sum(1) / d
    k = x @ x.T / d
    for _ in range(30):
        q, k = q + b2, k + b2
        norm = np.sqrt(np.outer(q, q))
        c = np.divide(k, norm, out=np.zeros_like(k), where=norm > 0)
        k = 2 / np.pi * np.arcsin(np.clip(c, -1, 1))
        q = np.where(q == 0, 0.0, 1.0)   # sign(0)² = 0; ±1 otherwise
    np.testing.assert_allclose(nngp, k + 0.01, rtol=1e-12, atol=1e-15)


def test_constant_variances_are_still_folded():
    """After Sign the variances are now 0 or 1 by input, so the constant folding that kept
    Gelu's dual of numbers from nesting deeper per layer (85 s for three) is exercised by a
    constant activation instead: every value is a folded number, equal to a float recursion
    (1-D quadrature: all correlations are 1)."""
    arch = ("Dense(16) > Polynomial([1.3]) > Dense(256, b_std=0.7) > "
            "(Gelu > Dense(64, b_std=0.8)) * 8 > Dense(1)")
    program = derive(ntkdsl.parse(arch))
    assert program.steps == ()
    # bounded by the folding threshold, whatever the depth (e.g. (a + b*pi)/(2*pi) + c)
    assert all(o.is_number and sp.count_ops(o) <= 8 for o in program.outputs)
    gelu = lambda z: z * (1 + math.erf(z / math.sqrt(2))) / 2
    gelu_dot = lambda z: ((1 + math.erf(z / math.sqrt(2))) / 2
                          + z * math.exp(-z * z / 2) / math.sqrt(2 * math.pi))
    q = 1.3 ** 2 + 0.49                     # Polynomial([1.3]) then Dense(256, b_std=0.7)
    t = q                                   # the constant's Γ̇ = 0, then the Dense
    for _ in range(8):
        gamma = _mean(lambda z: gelu(z) ** 2, q)
        gamma_dot = _mean(lambda z: gelu_dot(z) ** 2, q)
        q, t = gamma + 0.64, gamma + 0.64 + t * gamma_dot
    assert float(program.outputs[0]) == pytest.approx(q, rel=1e-10)
    assert float(program.outputs[1]) == pytest.approx(q + t, rel=1e-10)


def test_a_zero_variance_of_every_input_has_correlation_zero():
    """Found evaluating the fuzzer's valid architectures: after Dense(W_std=0) without a
    bias every variance is the number 0, where the symbolic correlation Corr(0, 0, 0) was
    the 1 of identical inputs: Sign then made K = 1 beside variances 0, and the next layer's
    Corr divided by sqrt(0) — sympy's "The argument 'zoo' is not comparable" (issue 12's
    sympy internals leaking out). A correlation at a zero variance is 0, as the runtime's
    _corr has it. Every pre-activation of the Elu is then the shared bias, u ~ N(0, 1.95²),
    the same for every input: each entry is a 1-D Gaussian mean."""
    arch = ("Dense(8, W_std=0, parameterization='standard') > Sign > Dense(1) > Abs > "
            "Dense(8, W_std=1.14, b_std=1.95) > Elu > Dense(8, b_std=0.4191)")
    net = ntkdsl.compile(arch)
    x = np.random.default_rng(0).standard_normal((3, 4))
    elu = lambda z: z if z > 0 else math.expm1(z)
    elu_dot = lambda z: 1.0 if z > 0 else math.exp(z)
    q = 1.95 ** 2
    nngp = _mean(lambda z: elu(z) ** 2, q) + 0.4191 ** 2
    # the NTK is 0 after Sign (φ' = 0), q after the Dense; Γ̇ of the Elu multiplies it
    ntk = nngp + q * _mean(lambda z: elu_dot(z) ** 2, q)
    for got, want in zip((*net.kernels(x), *net.diagonal(x)), (nngp, ntk, nngp, ntk)):
        np.testing.assert_allclose(got, want, rtol=1e-10)


def test_a_correlation_of_numerical_moments_of_constants_is_computed_at_run_time():
    """Found with the previous one: after W_std=0 the numerical route's Mish moment of the
    constant variance 1/4 is a number sympy cannot order (Γ[Mish](1/4)), and LayerNorm's
    correlation of it was clipped by sympy's Max/Min: "not comparable", a ValueError. It
    stays a correlation computed at run time. Every pre-activation is the shared bias, so
    each quantity is a 1-D Gaussian mean (c = 1 throughout)."""
    net = ntkdsl.compile("Dense(8, W_std=0, b_std=0.5) > Mish > Dense(8, b_std=0.3) > LayerNorm > "
                         "Relu > Dense(1)")
    x = np.random.default_rng(0).standard_normal((3, 4))
    softplus = lambda z: math.log1p(math.exp(-abs(z))) + max(z, 0.0)
    mish = lambda z: z * math.tanh(softplus(z))
    mish_dot = lambda z: (math.tanh(softplus(z))
                          + z / math.cosh(softplus(z)) ** 2 / (1 + math.exp(-z)))
    q = _mean(lambda z: mish(z) ** 2, 0.25) + 0.09          # Mish, then Dense(8, b_std=0.3)
    t = q + 0.25 * _mean(lambda z: mish_dot(z) ** 2, 0.25)
    q, t = q / (q + 1e-12), t / (q + 1e-12)                  # LayerNorm: k = q, c = 1
    nngp, ntk = q / 2, q / 2 + t / 2                          # Relu at c = 1, then Dense(1)
    got_nngp, got_ntk = net.kernels(x)
    for got, want in zip((got_nngp, np.diag(got_ntk), *net.diagonal(x)), (nngp, ntk, nngp, ntk)):
        np.testing.assert_allclose(got, want, rtol=1e-10)
    # Off the diagonal the correlation of the constants is computed, 1 to rounding, where
    # Γ̇ = (π − θ)/(2π) has an infinite slope: DESIGN §5's rule for collinear entries.
    assert np.abs(got_ntk - ntk).max() <= 1e-7 * ntk
