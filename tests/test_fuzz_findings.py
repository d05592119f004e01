"""Regression tests for the classes of finding of the fuzzer (tests/fuzzing.py, issue 12),
each checked against an independent computation (Gauss–Hermite quadrature or a closed form
by hand) where a kernel comes out, and against the fuzzer's CPU-time limit where the finding
was a timeout."""
from __future__ import annotations

import math
import re
import time

import numpy as np
import pytest

import ntkdsl

# A guard against the hangs these inputs were (minutes before their fixes), not a speed
# claim: ten times the fuzzer's 3 s per input, so a loaded machine cannot fail it.
CPU_LIMIT = 30.0
X = np.array([[0.3, -0.4, 0.2, 0.5], [0.1, 0.6, -0.3, 0.2], [-0.5, 0.1, 0.4, -0.2]])


def _gauss_hermite_dual(f, fprime, q1, q2, k, nodes=120):
    """(E[f(u) f(v)], E[f'(u) f'(v)]) for (u, v) ~ N(0, [[q1, k], [k, q2]]) by a tensor
    Gauss–Hermite rule (exact for polynomials of degree < 2·nodes in each variable)."""
    z, w = np.polynomial.hermite_e.hermegauss(nodes)
    w = w / w.sum()
    c = k / math.sqrt(q1 * q2)
    u = math.sqrt(q1) * z[:, None]
    v = math.sqrt(q2) * (c * z[:, None] + math.sqrt(max(0.0, 1 - c * c)) * z[None, :])
    weights = w[:, None] * w[None, :]
    return (float((weights * f(u) * f(v)).sum()), float((weights * fprime(u) * fprime(v)).sum()))


def _compile_cpu(arch: str):
    start = time.process_time()
    net = ntkdsl.compile(arch)
    net.kernels(X)
    return net, time.process_time() - start


def _one_layer_reference(net, f, fprime):
    """NNGP and NTK of Dense(d) > φ > Dense(1) (unit weights, no biases) for X's rows."""
    gram = X @ X.T / X.shape[1]
    nngp, ntk = np.empty_like(gram), np.empty_like(gram)
    for i in range(len(X)):
        for j in range(len(X)):
            gamma, gamma_dot = _gauss_hermite_dual(f, fprime, gram[i, i], gram[j, j], gram[i, j])
            nngp[i, j], ntk[i, j] = gamma, gamma + gram[i, j] * gamma_dot
    return nngp, ntk


def _gelu_tanh(x):
    return x / 2 * (1 + np.tanh(math.sqrt(2 / math.pi) * (x + 0.044715 * x ** 3)))


def _gelu_tanh_prime(x, h=1e-6):
    return (_gelu_tanh(x + h) - _gelu_tanh(x - h)) / (2 * h)


def test_composed_activation_is_not_simplified_against_every_registry_entry():
    """Gelu(approximate=True) * 2 took 12 s to compile (sympy's simplify of φ/ψ for each
    registry entry ψ); now only an entry proportional to φ at the screening points is
    simplified. Its kernel is the numerical route's, checked against quadrature of φ∘φ."""
    net, cpu = _compile_cpu("Dense(4) > (Gelu(approximate=True)) * 2 > Dense(1)")
    assert cpu < CPU_LIMIT
    twice = lambda x: _gelu_tanh(_gelu_tanh(x))
    twice_prime = lambda x: _gelu_tanh_prime(_gelu_tanh(x)) * _gelu_tanh_prime(x)
    nngp, ntk = _one_layer_reference(net, twice, twice_prime)
    got_nngp, got_ntk = net.kernels(X)
    np.testing.assert_allclose(got_nngp, nngp, rtol=1e-9, atol=1e-14)
    np.testing.assert_allclose(got_ntk, ntk, rtol=1e-7, atol=1e-12)  # φ' by central differences


@pytest.mark.parametrize("expr, factor, entry", [("2*relu(x)", 2, "Relu"), ("-3*abs(x)", -3, "Abs"),
                                                 ("relu(x)/7", 1 / 7, "Relu")])
def test_a_multiple_of_a_registry_entry_still_takes_its_closed_form(expr, factor, entry):
    """The screening must not lose the α·ψ rule: Γ = α²·Γ_ψ, Γ̇ = α²·Γ̇_ψ."""
    net = ntkdsl.compile(f'Dense(4) > Fn("{expr}") > Dense(1)')
    plain = ntkdsl.compile(f"Dense(4) > {entry} > Dense(1)")
    assert "closed form" in str(net.formula("ntk"))
    for got, ref in zip(net.kernels(X), plain.kernels(X)):
        np.testing.assert_allclose(got, factor ** 2 * ref, rtol=1e-12)


@pytest.mark.parametrize("factors", [20, 40, 60])
def test_long_polynomial_product_compiles_in_time_and_is_exact(factors):
    """Fn("(x+1)*(x+1)*...") with 20–60 factors timed out: sympy's diff of the degree-n
    Hermite sum (Price's theorem) took minutes; the polynomial rule now gives Γ̇ as its own
    Hermite sum. Checked against Gauss–Hermite quadrature, exact for polynomials."""
    net, cpu = _compile_cpu('Dense(4) > Fn("' + "*".join(["(x+1)"] * factors) + '") > Dense(1)')
    assert cpu < CPU_LIMIT
    nngp, ntk = _one_layer_reference(net, lambda x: (x + 1) ** factors,
                                     lambda x: factors * (x + 1) ** (factors - 1))
    for got, ref in zip(net.kernels(X), (nngp, ntk)):
        # Entries 1e15 times smaller than the diagonal (an input's own (x+1)^60 moments)
        # come out of cancelling terms: compared on the Cauchy–Schwarz scale
        # sqrt(K(x, x) K(x', x')), as the README's rule for the numerical route.
        scale = np.sqrt(np.outer(np.diag(ref), np.diag(ref)))
        assert np.all(np.abs(got - ref) <= 1e-9 * scale)
        np.testing.assert_allclose(np.diag(got), np.diag(ref), rtol=1e-10)


def test_integer_beyond_int64_in_generated_code():
    """A kernel that does not depend on the input (after a constant Polynomial) was printed
    as numpy.sqrt(<a 35-digit integer>): a TypeError from NumPy. By hand: the constant c
    gives q = k = c², the Dense q' = w²c² + b², the Gaussian exp(βx²) at correlation 1
    Γ = 1/sqrt(1 − 4βq'), Γ̇ = 4β²q'(1 − 4βq')^(-3/2), and the NTK is Γ + q'·Γ̇ (the constant
    layer's Γ̇ is 0)."""
    c, w, b, beta = -0.70312345, 1.7912345, 2.0112345, -1.2912345
    net = ntkdsl.compile(f"Dense(8) > Polynomial([{c}]) > Dense(1, W_std={w}, b_std={b}) > "
                         f"Gaussian(b={beta}) > Dense(1)")
    q = w * w * c * c + b * b
    gamma = 1 / math.sqrt(1 - 4 * beta * q)
    gamma_dot = 4 * beta ** 2 * q * (1 - 4 * beta * q) ** -1.5
    nngp, ntk = net.kernels(X)
    np.testing.assert_allclose(nngp, np.full((3, 3), gamma), rtol=1e-13)
    np.testing.assert_allclose(ntk, np.full((3, 3), gamma + q * gamma_dot), rtol=1e-13)
    assert "numpy.sqrt(48136513994373953743795569265886698)" not in ntkdsl.codegen(
        f"Dense(8) > Polynomial([{c}]) > Dense(1, W_std={w}, b_std={b}) > Gaussian(b={beta}) > Dense(1)")


def test_numerical_series_whose_entries_are_all_complete_early():
    """A numerical dual whose certified entries all finish before the remainder's first term
    indexed an empty term matrix (IndexError in the generated _hd_series). The fuzz input
    (seed 101) now evaluates; its diagonal, taken by the collinear 1-D route, agrees with the
    pairs' matrix, and the matrix is symmetric."""
    arch = ("Dense(8, W_std=0.552, b_std=1.18) > (Dense(512) > Abs > Dense(1, W_std=0.909, "
            "b_std=0.02482) > Silu > Dense(64, b_std=1.27)) > Dense(512, W_std=1.41, b_std=1.63, "
            "parameterization='standard') > Softplus > Dense(1, b_std=3) > Fn(expr=\"(abs(x)) ** (2)\") "
            "> Dense(512, W_std=3, b_std=1.36)")
    rng = np.random.default_rng(0)
    x = rng.standard_normal((4, 3))
    x[2], x[3] = 0.0, x[0]
    x[1] *= 30.0
    net = ntkdsl.compile(arch)
    nngp, ntk = net.kernels(x)
    diag_nngp, diag_ntk = net.diagonal(x)
    for matrix, diagonal in ((nngp, diag_nngp), (ntk, diag_ntk)):
        assert np.isfinite(matrix).all()
        np.testing.assert_allclose(matrix, matrix.T, rtol=1e-12)
        np.testing.assert_allclose(np.diag(matrix), diagonal, rtol=1e-9)


def test_composed_trigonometric_activation_is_not_expanded_as_exponentials():
    """Sin * 16 timed out in the Gaussian-integration rules (sin(sin(...)) rewritten as
    complex exponentials and expanded); now its shape rules it out before expanding, and
    the numerical route's kernel matches quadrature of the 16-fold composition."""
    net, cpu = _compile_cpu("Dense(4) > Sin * 16 > Dense(1)")
    assert cpu < CPU_LIMIT

    def composed(x):
        for _ in range(16):
            x = np.sin(x)
        return x

    def composed_prime(x):
        slope = np.ones_like(x)
        for _ in range(16):
            slope, x = slope * np.cos(x), np.sin(x)
        return slope

    nngp, ntk = _one_layer_reference(net, composed, composed_prime)
    got_nngp, got_ntk = net.kernels(X)
    np.testing.assert_allclose(got_nngp, nngp, rtol=1e-9, atol=1e-15)
    # The NTK is Γ + q·Γ̇, each within the route's 1e-9 bound of its own scale: 2e-9 in all.
    np.testing.assert_allclose(got_ntk, ntk, rtol=2e-9, atol=1e-15)


def test_registry_screen_of_a_huge_composition_is_bounded():
    """Exp(b=1e8) * 2 spent seconds in 30-digit evaluation of exp(1e8·exp(1e8·x)) while the
    α·ψ rule was screened; the screen is in float64 now, and the moments are refused."""
    start = time.process_time()
    with pytest.raises(ntkdsl.NumericalError, match="not finite"):
        ntkdsl.compile("Dense(1, W_std=0.372, b_std=2) > (Exp(b=100000000)) * 2 > "
                       "Dense(1, b_std=0.356)").kernels(X)
    assert time.process_time() - start < CPU_LIMIT


def _split_gauss_dual(f, fprime, q1, q2, k, nodes=200):
    """(E[f(u) f(v)], E[f'(u) f'(v)]) for an f whose only kink is at 0: u = s1·z1 and
    v = s2·(c·z1 + s·z2), each integral split at the kink on [-12, 12] into two
    Gauss–Legendre rules, so every piece has an analytic integrand."""
    t, w = np.polynomial.legendre.leggauss(nodes)

    def halves(split):  # nodes and weights (times the normal density) either side of split
        split = np.clip(split, -12.0, 12.0)[..., None]
        lo, hi = (split + 12) / 2, (12 - split) / 2
        z = np.concatenate([-12 + lo * (t + 1), split + hi * (t + 1)], axis=-1)
        weight = np.concatenate([lo * w + 0 * split, hi * w + 0 * split], axis=-1)
        return z, weight * np.exp(-z * z / 2) / math.sqrt(2 * math.pi)

    s1, s2 = math.sqrt(q1), math.sqrt(q2)
    c = k / (s1 * s2)
    s = math.sqrt(max(0.0, 1 - c * c))
    z1, w1 = halves(np.array(0.0))
    with np.errstate(divide="ignore"):  # s = 0 on the diagonal: the kink at ±inf
        z2, w2 = halves(-c * z1 / s)  # the inner kink, v = 0, for each outer node
    u, v = s1 * z1, s2 * (c * z1[:, None] + s * z2)
    return tuple(float(w1 @ (g(u) * (w2 * g(v)).sum(axis=1))) for g in (f, fprime))


def _composite_gauss_dual(f, fprime, q1, q2, k, panels=56, nodes=12):
    """(E[f(u) f(v)], E[f'(u) f'(v)]) by a tensor composite Gauss–Legendre rule on [-14, 14]²
    in standard normal coordinates (u = s1·z1, v = s2·(c·z1 + s·z2))."""
    t, w = np.polynomial.legendre.leggauss(nodes)
    edges = np.linspace(-14.0, 14.0, panels + 1)
    half = (edges[1:, None] - edges[:-1, None]) / 2
    z = ((edges[:-1, None] + edges[1:, None]) / 2 + half * t).ravel()
    weight = (half * w).ravel() * np.exp(-z * z / 2) / math.sqrt(2 * math.pi)
    c = k / math.sqrt(q1 * q2)
    u = math.sqrt(q1) * z[:, None]
    v = math.sqrt(q2) * (c * z[:, None] + math.sqrt(max(0.0, 1 - c * c)) * z[None, :])
    weights = weight[:, None] * weight[None, :]
    return tuple(float((weights * g(u) * g(v)).sum()) for g in (f, fprime))


def _elu(x):
    return np.where(x > 0, x, np.expm1(np.minimum(x, 0)))


def _elu_prime(x):
    return np.where(x > 0, 1.0, np.exp(np.minimum(x, 0)))


def _thrice(f, fprime):
    def composed(x):
        return f(f(f(x)))

    def composed_prime(x):
        return fprime(f(f(x))) * fprime(f(x)) * fprime(x)
    return composed, composed_prime


def test_composed_piecewise_activation_finds_its_kinks_numerically():
    """Elu * 3 took seconds in sympy's solveset/solve for the kinks (and its φ' printed as a
    Piecewise of ever larger conditions, which numpy.select refused: TypeError). The kinks
    are sign changes of each argument on a grid, bisected; Heaviside prints as
    numpy.heaviside. Kernel against quadrature split at the kink."""
    net, cpu = _compile_cpu("Dense(4) > (Elu) * 3 > Dense(1)")
    assert cpu < CPU_LIMIT
    f, fprime = _thrice(_elu, _elu_prime)
    gram = X @ X.T / X.shape[1]
    nngp, ntk = np.empty_like(gram), np.empty_like(gram)
    for i, j in np.ndindex(gram.shape):
        gamma, gamma_dot = _split_gauss_dual(f, fprime, gram[i, i], gram[j, j], gram[i, j])
        nngp[i, j], ntk[i, j] = gamma, gamma + gram[i, j] * gamma_dot
    got_nngp, got_ntk = net.kernels(X)
    np.testing.assert_allclose(got_nngp, nngp, rtol=1e-9, atol=1e-15)
    np.testing.assert_allclose(got_ntk, ntk, rtol=2e-9, atol=1e-15)


@pytest.mark.parametrize("arg, roots", [
    ("sin(16*x)", [math.pi / 16 * n for n in range(-325, 326)]),   # every zero in [-64, 64]
    ("x**2 - 1/100000000", [-1e-4, 1e-4]),                       # two zeros closer than the grid
    ("exp(x) - 2", [math.log(2)]),
    ("x**2", [0.0]),                                             # a touching zero on the grid
])
def test_kinks_are_the_sign_changes_of_the_arguments(arg, roots):
    from ntkdsl import activations, numerical
    found = numerical._roots(activations.lookup("Fn").phi(expr=arg), activations.x)
    assert len(found) == len(roots)
    np.testing.assert_allclose(sorted(found), sorted(roots), rtol=1e-14, atol=1e-15)


def test_composed_smooth_activation_is_evaluated_with_shared_subexpressions():
    """Gelu(approximate=True) * 3 after b_std=3 took 11 s to evaluate: φ' of the composition
    printed without common subexpressions costs 20 µs a value, and the near-collinear
    entries at large variance need millions of values. Printed with sympy's cse it is 30
    times cheaper; the kernel matches quadrature of the composition (composite: Gauss–Hermite
    converges slowly here, tanh's poles come near the real axis at this scale)."""
    rng = np.random.default_rng(0)
    x = rng.standard_normal((4, 3))
    x[2], x[3], x[1] = 0.0, x[0], 30 * x[1]   # the fuzzer's inputs: zero row, pair, large row
    arch = "Dense(3, b_std=3) > (Gelu(approximate=True)) * 3 > Dense(1)"
    net = ntkdsl.compile(arch)
    start = time.process_time()
    net.kernels(x)
    assert time.process_time() - start < CPU_LIMIT
    f, fprime = _thrice(_gelu_tanh, _gelu_tanh_prime)
    got_nngp, got_ntk = net.kernels(X)
    gram = X @ X.T / X.shape[1] + 9.0
    nngp, ntk = np.empty_like(gram), np.empty_like(gram)
    for i, j in np.ndindex(gram.shape):
        gamma, gamma_dot = _composite_gauss_dual(f, fprime, gram[i, i], gram[j, j], gram[i, j])
        nngp[i, j], ntk[i, j] = gamma, gamma + gram[i, j] * gamma_dot
    np.testing.assert_allclose(got_nngp, nngp, rtol=1e-9)
    np.testing.assert_allclose(got_ntk, ntk, rtol=1e-7)  # φ' by central differences


def test_angle_of_constants_through_a_numerical_moment_stays_real():
    """After Dense(W_std=0) every variance is a constant; through Sigmoid it is a numerical
    moment whose sign sympy cannot decide, and sympy's atan2 rewrote Erf's angle as
    -I·log(...): complex generated code (a ComplexWarning, the real part cast) and seconds
    of printing. The NNGP is Erf's arcsine of the constant, with E[σ(z)²] by quadrature."""
    import warnings
    arch = "Dense(8, W_std=0, b_std=1) > Sigmoid > Dense(8, W_std=2.2) > Erf(b=-0.765, c=-2.69) > Dense(1)"
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        net, cpu = _compile_cpu(arch)
        nngp = net.nngp(X)
    assert cpu < CPU_LIMIT
    z, w = np.polynomial.hermite_e.hermegauss(80)
    second_moment = float(w @ (1 / (1 + np.exp(-z))) ** 2 / w.sum())
    q = 2.2 ** 2 * second_moment    # every entry: variance = covariance (correlation 1)
    s = 2 * 0.765 ** 2
    expected = 2 / math.pi * math.asin(s * q / (1 + s * q)) + 2.69 ** 2
    np.testing.assert_allclose(nngp, np.full_like(nngp, expected), rtol=1e-12)


@pytest.mark.parametrize("expr, bad", [
    ("sin(((x)+(x)) ^ (1e6))", "((x)+(x)) ^ (1e6)"),     # 2**1000000 * x**1000000
    ("(sqrt(2)*x)**1000000", "(sqrt(2)*x)**1000000"),     # sqrt(2)**1000000 = 2**500000
    ("(x/3)**5000", "(x/3)**5000"),
])
def test_power_of_a_product_bounds_its_constant_before_sympy_forms_it(expr, bad):
    """sympy distributes a power over a product's constant factors, so (2*x)**1000000
    computed the integer 2**1000000 (300,000 digits; printing it was a bare ValueError
    inside lark's VisitError). The constant factor's power is bounded first, like a
    number's power: an ExpressionError with a caret under the power."""
    arch = f'Dense(8) > Fn("{expr}") > Dense(1)'
    start = time.process_time()
    with pytest.raises(ntkdsl.ExpressionError, match="beyond the float64 range") as info:
        ntkdsl.compile(arch)
    assert time.process_time() - start < CPU_LIMIT
    assert str(info.value).splitlines()[2].strip() == "^" * len(bad)


def test_power_of_a_product_within_range_keeps_its_kernel():
    """(2*x)**3 is still 8*x**3: its kernel against Gauss–Hermite quadrature."""
    net = ntkdsl.compile('Dense(4) > Fn("(2*x)**3") > Dense(1)')
    nngp, ntk = _one_layer_reference(net, lambda x: (2 * x) ** 3, lambda x: 24 * x ** 2)
    for got, ref in zip(net.kernels(X), (nngp, ntk)):
        np.testing.assert_allclose(got, ref, rtol=1e-12)


@pytest.mark.parametrize("expr", ["max(sqrt(sin(pi**2)), x)", "min(x, sqrt(-2))"])
def test_max_of_a_constant_that_is_not_real_is_an_expression_error(expr):
    """sqrt(sin(pi**2)) is imaginary: sympy's Max raised 'not comparable' (a ValueError in
    lark's VisitError); now an ExpressionError under the call."""
    with pytest.raises(ntkdsl.ExpressionError, match="cannot compare its arguments") as info:
        ntkdsl.compile(f'Dense(8) > Fn("{expr}") > Dense(1)')
    assert str(info.value).splitlines()[2].strip() == "^" * len(expr)


def test_constant_variance_through_a_thousand_layers_stays_small():
    """After a constant activation (Fn("e")) every variance is a constant; 1,000 layers of
    b_std=1e-50 (1/10**100 squared) made its rationals thousands of digits long (a timeout
    in sympy's arithmetic, then a ValueError printing an int past 4,300 digits). Rationals
    past 2**53 fold to 30-digit Floats. The kernels against the recursion by hand: Fn("e")
    gives q = k = e², its Γ̇ is 0, each Dense maps k -> w²k + b² and t -> k + w²t."""
    w2, b2 = 0.52 ** 2, 1e-100
    arch = ("Dense(1, b_std=3.784) > Fn(expr=\"e\") > (Dense(8, W_std=0.52, b_std=1e-50)) * 1000"
            " > Dense(8, W_std=1.512, b_std=1.39)")
    net, cpu = _compile_cpu(arch)
    assert cpu < CPU_LIMIT
    assert not re.search(r"\d{20}", net.source)  # no constant with thousands of digits
    k, t = math.e ** 2, 0.0
    for w2_, b2_ in [(w2, b2)] * 1000 + [(1.512 ** 2, 1.39 ** 2)]:
        k = w2_ * k + b2_
        t = k + w2_ * t
    nngp, ntk = net.kernels(X)
    np.testing.assert_allclose(nngp, np.full((3, 3), k), rtol=1e-13)
    np.testing.assert_allclose(ntk, np.full((3, 3), t), rtol=1e-13)


@pytest.mark.parametrize("arch, layer", [
    ("Dense(8, W_std=0, b_std=30) > Exp > Dense(1)", "Exp"),
    # a constant activation, then Monomial(5) three times: (c^5)^5^5 past 1e308
    ('Dense(512, b_std=0.007573) > Fn("((0.7897) ** (3)) ^ (3)") > Dense(1, W_std=0.425) > '
     "((Dense(1, W_std=0.877, b_std=1.83) > Abs > Dense(1, W_std=3.045, b_std=0.8042) > "
     "Monomial(5) > Dense(512, W_std=3, b_std=2.16))) * 3 > Dense(64)", "Monomial(5)"),
])
def test_constant_variance_past_float64_names_its_layer(arch, layer):
    """A variance that is the same constant for every input is inlined in the generated
    code: past float64 it was an inf that no layer's variable showed, and the evaluation's
    error said, wrongly, that every layer's variance was finite. Now refused when compiling,
    with a caret under the layer."""
    with pytest.raises(ntkdsl.NumericalError, match="same constant for every input") as info:
        ntkdsl.compile(arch)
    lines = str(info.value).splitlines()
    column = lines[2].index("^")
    assert lines[1][column:column + len(layer)] == layer


def test_constant_variance_within_float64_keeps_its_value():
    """The same network with b_std=3: E[exp(u) exp(v)] at correlation 1 is exp(2q), q = 9,
    and the NTK is Γ + q·Γ̇ = exp(18) + 9·exp(18), by hand."""
    nngp, ntk = ntkdsl.compile("Dense(8, W_std=0, b_std=3) > Exp > Dense(1)").kernels(X)
    np.testing.assert_allclose(nngp, np.full((3, 3), math.exp(18)), rtol=1e-13)
    np.testing.assert_allclose(ntk, np.full((3, 3), 10 * math.exp(18)), rtol=1e-13)


def test_far_values_of_a_function_of_a_huge_argument_take_its_limit():
    """Fn("erfc(exp(x)**1e6)") hung in the growth check: mpmath's erfc of exp(1e10) at
    x = 1e4 loops for minutes. A function of an argument past 1e300 takes its limit there:
    erfc(exp(1e10)) is 0 (it is below 1e-(10**9)), at -1e4 erfc(exp(-1e10)) is 1; sin has
    no limit, so sin(exp(x)**1e6) is refused as having no value far out."""
    from ntkdsl.expressions import at_point, parse_expression
    phi = parse_expression("erfc(exp(x)**1e6)")
    assert at_point(phi, 1e4) == 0
    assert abs(at_point(phi, -1e4) - 1) < 1e-25
    assert abs(at_point(phi, 1e-7) - math.erfc(math.exp(0.1))) < 1e-15
    with pytest.raises(ntkdsl.ExpressionError, match=r"has no value at x = -?100 or farther"):
        parse_expression("sin(exp(x)**1e6)")


def test_numerical_dual_of_a_constant_variance_is_folded_to_its_value():
    """After W_std=0 every variance is a constant; through a numerical-route activation its
    dual was an unevaluated call that each later layer wrapped in a larger expression
    (Mish * 3 > ... > Mish timed out printing it; Tanh > ... > Polynomial * 3 spent seconds
    in evalf). The dual of numbers is now computed by the engine when deriving, so no
    engine call is left in the generated code. By hand: u ~ N(0, 1.75²) for every input,
    NNGP = w² E[φ(u)²], NTK = w² (E[φ(u)²] + 1.75² E[φ'(u)²]), φ = mish∘mish∘mish, by
    adaptive quadrature (1-D: the correlation is 1; Gauss–Hermite converges slowly here,
    tanh's poles are near the real axis)."""
    from scipy import integrate
    net, cpu = _compile_cpu("Dense(8, W_std=0, b_std=1.75) > (Mish) * 3 > Dense(1, W_std=2.67)")
    assert cpu < CPU_LIMIT
    assert not net.compiled.numerical

    def mish(t):
        return t * np.tanh(np.log1p(np.exp(t)))

    def mish_prime(t):
        inner = np.tanh(np.log1p(np.exp(t)))
        return inner + t * (1 - inner ** 2) / (1 + np.exp(-t))

    def moment(f):
        return integrate.quad(lambda z: f(1.75 * z) ** 2 * np.exp(-z * z / 2) / math.sqrt(2 * math.pi),
                              -40, 40, epsabs=1e-15, epsrel=1e-13, limit=500)[0]

    phi, phi_prime = _thrice(mish, mish_prime)
    second, slope = moment(phi), moment(phi_prime)
    nngp, ntk = net.kernels(X)
    np.testing.assert_allclose(nngp, np.full((3, 3), 2.67 ** 2 * second), rtol=1e-10)
    np.testing.assert_allclose(ntk, np.full((3, 3), 2.67 ** 2 * (second + 1.75 ** 2 * slope)),
                               rtol=1e-10)


def test_nested_quadrature_is_refused_before_it_starts():
    """The numerical route's nested quadrature (entries the Hermite series cannot certify:
    |c| near 1 at huge variances) checked its node budget while it ran, per entry, at
    about 2 s each: several such entries timed out (a Swish block repeated 50 times with
    W_std=65536). Every entry's grids of a call are now laid out first and the call is
    refused past the budget before φ is evaluated once."""
    from ntkdsl.runtime import hermite
    calls = []

    def silu(t):
        calls.append(t.size)
        return t / (1 + np.exp(-t))
    silu.label = "Silu"
    q1, q2 = np.full(3, 2.47351e148), np.full(3, 3.78508e151)
    start = time.process_time()
    with pytest.raises(ntkdsl.NumericalError, match="budget"):
        hermite._hd_direct(silu, (), q1, q2, np.full(3, 0.942849522612))
    assert not calls
    assert time.process_time() - start < CPU_LIMIT
    # Within the budget the same call computes: E[silu(u) silu(v)] at a moderate variance
    # against the Gauss–Hermite reference.
    got = hermite._hd_direct(silu, (), np.array([4.0]), np.array([9.0]), np.array([0.999]))
    silu_prime = lambda t: (1 + np.exp(-t) + t * np.exp(-t)) / (1 + np.exp(-t)) ** 2
    want = _gauss_hermite_dual(silu, silu_prime, 4.0, 9.0, 0.999 * 6.0, nodes=200)[0]
    np.testing.assert_allclose(got, [want], rtol=1e-10)


def test_formula_text_of_a_deep_network_prints_each_template_once(monkeypatch):
    """ntkdsl.codegen of 2,001 layers took 2.4–3.4 s, most of it printing each layer's
    equations into the module docstring with sympy. A template step's text is printed once
    and renamed per layer: sympy's printer runs as often for 100 blocks as for 10, and the
    text equals the printout of each layer's own equations (Formula.layers)."""
    from ntkdsl import formula

    def printed(blocks: int) -> tuple[int, str]:
        arch = f"(Dense(8, b_std=0.1) > Erf) * {blocks} > Dense(1)"
        net = ntkdsl.compile(arch)
        formula._TEMPLATE_TEXT.clear()
        calls = []
        real = formula.sp.sstr
        monkeypatch.setattr(formula.sp, "sstr", lambda *a, **k: calls.append(1) or real(*a, **k))
        text = str(formula.Formula(arch, net.program, "both"))
        monkeypatch.setattr(formula.sp, "sstr", real)
        layers = formula.Formula(arch, net.program, "both").layers
        by_layer = [f"    {real(eq.lhs)} = {real(eq.rhs)}" for layer in layers for eq in layer.equations]
        assert [line for line in text.split("\n") if line.startswith("    ")] == by_layer
        return len(calls), text

    few, _ = printed(10)
    many, _ = printed(100)
    assert few == many


def test_kinks_of_an_argument_with_countless_sign_changes_are_bounded():
    """sign(sin(exp(x))) changes sign at tens of thousands of the kink grid's points (its
    zeros log(nπ) crowd together as x grows): each was bisected, one numpy call per
    halving, for minutes (a hang of Fn("sinh(sign(atan(sin(exp(relu(x)))))) + 3.381")).
    All brackets are bisected at once; the MAX_KINKS kept, the nearest to 0, are log(nπ),
    n = 1 ... MAX_KINKS."""
    from ntkdsl import activations, numerical
    start = time.process_time()
    found = numerical.kinks(activations.lookup("Fn").phi(expr="sign(sin(exp(x)))"), activations.x)
    assert time.process_time() - start < CPU_LIMIT
    want = [math.log(n * math.pi) for n in range(1, numerical.MAX_KINKS + 1)]
    np.testing.assert_allclose(found, want, rtol=1e-14, atol=1e-15)


def test_composed_polynomials_are_bounded_by_their_degree():
    """(Polynomial([1, 1, 1])) * 8 composes into one polynomial of degree 2**8 = 256: the
    Gaussian-integration rules expanded it for minutes. A composition is held to the degree
    limit of an Fn of the same expression, with a caret under the run; (Polynomial([1, 2])) * 3
    stays a degree-1 map: its kernel by hand, φ(x) = 1 + 2(1 + 2(1 + 2x)) = 7 + 8x."""
    start = time.process_time()
    with pytest.raises(ntkdsl.LayerValueError, match="degree 256 in x") as info:
        ntkdsl.compile("Dense(8) > (Polynomial([1, 1, 1])) * 8 > Dense(1)")
    assert time.process_time() - start < CPU_LIMIT
    assert str(info.value).splitlines()[2].strip().startswith("^^^^")
    nngp, ntk = ntkdsl.compile("Dense(4) > (Polynomial([1, 2])) * 3 > Dense(1)").kernels(X)
    gram = X @ X.T / X.shape[1]
    np.testing.assert_allclose(nngp, 49 + 64 * gram, rtol=1e-13)
    np.testing.assert_allclose(ntk, 49 + 64 * gram + gram * 64, rtol=1e-13)


@pytest.mark.parametrize("body, f, fprime", [
    ("sin(x**2)", lambda x: np.sin(x ** 2), lambda x: 2 * x * np.cos(x ** 2)),
    ("cos(x*x) + x", lambda x: np.cos(x * x) + x, lambda x: 1 - 2 * x * np.sin(x * x)),
])
def test_trigonometric_function_of_a_quadratic_is_bounded_and_exact(body, f, fprime):
    """Fn("sin(x**2)") took 12 s in the Gaussian-integration rules (sympy's simplify of the
    moments' imaginary parts); a complex quadratic exponent now goes to the numerical route.
    Checked against tensor Gauss–Hermite quadrature (smooth φ, small variances)."""
    net, cpu = _compile_cpu(f'Dense(4) > Fn("{body}") > Dense(1)')
    assert cpu < CPU_LIMIT
    for got, ref in zip(net.kernels(X), _one_layer_reference(net, f, fprime)):
        np.testing.assert_allclose(got, ref, rtol=1e-9, atol=1e-12)


def test_step_of_an_expression_sympy_cannot_prove_real():
    """sympy leaves d/dx sign(f) unevaluated where it cannot tell that f is real (a
    PrintMethodNotImplementedError for Derivative from the numerical route's φ''; fuzz
    finding). It is 0 almost everywhere: here sign(sqrt(|tanh x + 2|) ± 1) = 1, so φ = x
    almost everywhere and the kernels are those of a linear network, NNGP = k, NTK = 2k."""
    net = ntkdsl.compile('Dense(4) > Fn("x*sign(sqrt(abs(tanh(x) + 2)) + 1/sign(sin(x)))") > Dense(1)')
    nngp, ntk = net.kernels(X)
    k = X @ X.T / X.shape[1]
    np.testing.assert_allclose(nngp, k, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(ntk, 2 * k, rtol=1e-10, atol=1e-12)


def test_step_screened_without_sympy_lambdify():
    """The Gaussian rules screen φ against the registry at a few points; sympy's lambdify
    printed step(...) as a Piecewise whose condition it simplified, here for minutes (a
    trigonometric argument: fuzz finding, more than 300 s). ntkdsl's printer takes
    numpy.heaviside; the screening values are φ's own (checked by hand at x = 1.3)."""
    from ntkdsl import gaussian, parse
    from ntkdsl.activations import x
    from ntkdsl.derivation import phi_of
    text = ("step((erf(cos((0.622) / (sqrt(((pi) ** (-1)) + (cosh(e))))))) / (((cos((((x) - (e)) ** (2)) "
            "+ (((x) - (pi)) ^ (100)))) * ((sinh(min((pi) ^ (3), sigmoid(x)))) * ((x) * (atan(max(e, e)))))) "
            "^ (-1)))")
    start = time.process_time()
    phi = phi_of(parse(f'Dense(8) > Fn("{text}")').layers[1])
    values = gaussian._values(phi, x)
    net = ntkdsl.compile(f'Dense(4) > Fn("{text}") > Dense(1)')
    assert np.isfinite(net.kernels(X)[0]).all()
    assert time.process_time() - start < CPU_LIMIT

    def by_hand(t):
        inner = math.erf(math.cos(0.622 / math.sqrt(1 / math.pi + math.cosh(math.e))))
        ratio = inner * (math.cos((t - math.e) ** 2 + (t - math.pi) ** 100)
                         * math.sinh(min(math.pi ** 3, 1 / (1 + math.exp(-t)))) * t * math.atan(math.e))
        return 1.0 if ratio > 0 else 0.0
    assert values[3] == by_hand(gaussian._SCREEN[3])


# The fuzzer's inputs (tests/fuzzing.py WORKER): a zero row, an identical pair, a 30x row.
FUZZ_X = np.random.default_rng(0).standard_normal((4, 3))
FUZZ_X[2], FUZZ_X[3], FUZZ_X[1] = 0.0, FUZZ_X[0], 30.0 * FUZZ_X[1]


def test_far_value_of_a_nested_complex_intermediate_is_bounded():
    """Fresh-seed finding (over 30 s in parsing): the growth check evaluated φ at x = ±1e4
    node by node as exact sympy expressions, and x**0.5 at -1e4 made cosh(cosh(...)) of a
    complex number whose sympy simplification (is_positive, a huge argument reduced modulo
    2*pi) hung. Every node is now a 30-digit number: the expression, not real out there, is
    an ExpressionError with a caret under it."""
    body = ("(relu(pi)) - ((exp(sin((x) / ((cosh(cosh(((atan(pi)) * ((x) ^ (0.5))) - (((x) / (pi)) "
            "* ((pi) + (x)))))) + ((x) ** (-1)))))) ** (0.5))")
    arch = f'Dense(8) > Fn("{body}") > Dense(1)'
    with pytest.raises(ntkdsl.ExpressionError) as err:
        ntkdsl.compile(arch)
    assert "line 1, column 16" in str(err.value)
    source, caret = str(err.value).splitlines()[1:3]
    assert caret.index("^") == source.index(body) and caret.count("^") == len(body)


def test_registry_multiple_is_not_simplified_for_other_functions(monkeypatch):
    """Fresh-seed finding (a timeout in gaussian._registry_multiple): min(sign(x), exp(cosh(
    ...))) equals sign(x) at every screening point, so sympy's simplify of φ/sign(x) ran, and
    it does not end. simplify now runs only for a φ made of ψ's own functions; this φ goes
    on to the other routes (its NTK needs φ', a step's delta: a NumericalError)."""
    from ntkdsl import gaussian
    from ntkdsl.activations import REGISTRY, x
    from ntkdsl.expressions import parse_expression
    calls = []
    simplify = gaussian.sp.simplify
    monkeypatch.setattr(gaussian.sp, "simplify", lambda e: calls.append(e) or simplify(e))
    phi = parse_expression("min(sign(x), exp(cosh(min(x**2, max(x, 0.002)))))")
    assert gaussian._registry_multiple(phi, x, REGISTRY) is None
    assert not calls
    factor, spec = gaussian._registry_multiple(parse_expression("-3*sign(x)"), x, REGISTRY)
    assert factor == -3 and spec.phi() == gaussian.sp.sign(x)
    with pytest.raises(ntkdsl.NumericalError, match="derivative"):
        ntkdsl.compile('Dense(8) > Fn("min(sign(x), exp(cosh(min(x**2, max(x, 0.002)))))") '
                       "> Dense(1)").kernels(X)


def test_constant_activation_is_its_real_value():
    """Fresh-seed finding (a foreign TypeError): Fn("softplus(exp(tanh(sin(erfc(e)))))") has
    no x; sympy rewrote sin of the constant into complex exponentials and the generated
    code called numpy.logaddexp on a complex number. A constant φ is now the real number
    it is: NNGP = φ², and the NTK adds Dense(1)'s φ² (φ' = 0)."""
    import mpmath
    net = ntkdsl.compile('Dense(8) > Fn("softplus(exp(tanh(sin(erfc(e)))))") > Dense(1)')
    phi = float(mpmath.log(1 + mpmath.exp(mpmath.exp(mpmath.tanh(mpmath.sin(mpmath.erfc(mpmath.e)))))))
    nngp, ntk = net.kernels(X)
    np.testing.assert_allclose(nngp, np.full((3, 3), phi ** 2), rtol=1e-14)
    np.testing.assert_allclose(ntk, np.full((3, 3), phi ** 2), rtol=1e-14)


@pytest.mark.parametrize("body, f, fprime", [
    ("((((x) + (1.97)) - ((x) + (x))) * ((pi) - ((x) + (1.59)))) ** (16)",
     lambda t: ((1.97 - t) * (math.pi - 1.59 - t)) ** 16,
     lambda t: 16 * ((1.97 - t) * (math.pi - 1.59 - t)) ** 15 * (2 * t - 1.97 - math.pi + 1.59)),
    ("(x - pi)**3 + log(3)*x", lambda t: (t - math.pi) ** 3 + math.log(3) * t,
     lambda t: 3 * (t - math.pi) ** 2 + math.log(3))])
def test_polynomial_with_irrational_constants_is_expanded_as_numbers(body, f, fprime):
    """Fresh-seed findings (timeouts in the Gaussian rules): a polynomial body holding
    exact irrational constants — (x + log(1529/500000))**100, (pi - 1.59 - x)**16 — was
    rewritten, powsimp'ed and its dual printed with symbolic coefficients (19 s, 3 s). A
    polynomial is now expanded with those constants as 30-digit numbers; its kernel
    against Gauss–Hermite quadrature, exact for polynomials."""
    net = ntkdsl.compile(f'Dense(4) > Fn("{body}") > Dense(1)')
    assert "numerical" not in str(net.formula("ntk"))
    nngp, ntk = _one_layer_reference(net, f, fprime)
    got_nngp, got_ntk = net.kernels(X)
    np.testing.assert_allclose(got_nngp, nngp, rtol=1e-10)
    np.testing.assert_allclose(got_ntk, ntk, rtol=1e-10)


def test_degree_100_polynomial_with_a_logarithm_goes_to_the_numerical_route(monkeypatch):
    """min(x + log(0.003058), x)**100 is (x + log(1529/500000))**100: past
    POLYNOMIAL_TERMS, so the numerical route, without the symbolic expansion of its exact
    coefficients (19 s before; Poly of it 13 s): sympy's Poly is not called, and the route
    refuses the moments that overflow float64 with a NumericalError."""
    from ntkdsl import gaussian
    monkeypatch.setattr(gaussian.sp, "Poly", lambda *a, **k: pytest.fail("Poly of the polynomial"))
    arch = 'Dense(8) > Fn("(min((x) + (log(0.003058)), x)) ** (100)") > Dense(1)'
    net = ntkdsl.compile(arch)
    assert "numerical" in str(net.formula("ntk"))
    with pytest.raises(ntkdsl.NumericalError, match="not finite in float64"):
        net.kernels(FUZZ_X)


def test_issue_relu_thousand_layers_against_a_40_digit_recursion():
    """Issue 12's (Dense(8) > Relu) * 1000 > Dense(1), 12 s to compile at the time (the
    compile-time bound is test_compile_scaling's): its kernels against the arc-cosine
    recursion in 40-digit mpmath, k <- sqrt(q1 q2) (sin a + (pi - a) cos a) / (2 pi),
    t <- t (pi - a) / (2 pi) + k for each Relu, then Dense(1)'s t <- k + t."""
    import mpmath
    mpmath.mp.dps = 40
    try:
        net = ntkdsl.compile("(Dense(8) > Relu) * 1000 > Dense(1)")
        nngp, ntk = net.kernels(X)
        d = X.shape[1]
        for i, j in [(0, 0), (0, 1), (1, 2)]:
            q1, q2 = mpmath.mpf(X[i] @ X[i]) / d, mpmath.mpf(X[j] @ X[j]) / d
            k, t = mpmath.mpf(X[i] @ X[j]) / d, mpmath.mpf(0)
            for _ in range(1000):
                t = k + t  # Dense(8): k is unchanged (W_std = 1, no bias)
                angle = mpmath.acos(max(-1, min(1, k / mpmath.sqrt(q1 * q2))))
                k, t = (mpmath.sqrt(q1 * q2) * (mpmath.sin(angle) + (mpmath.pi - angle) * mpmath.cos(angle))
                        / (2 * mpmath.pi), t * (mpmath.pi - angle) / (2 * mpmath.pi))
                q1, q2 = q1 / 2, q2 / 2
            assert nngp[i, j] == pytest.approx(float(k), rel=1e-10)
            assert ntk[i, j] == pytest.approx(float(k + t), rel=1e-10)
    finally:
        mpmath.mp.dps = 15
def _planned_nodes(plan) -> int:
    """The nodes a nested-quadrature plan evaluates, counted as _hd_direct_plan does."""
    z1, _, blocks, *_ = plan
    return z1.size + sum(16 * edges.size for _, _, edges in blocks)


def test_nested_quadrature_of_a_whole_network_shares_one_budget(monkeypatch):
    """(Dense(8, b_std=2) > Elu) * 20 > Dense(1) took 2.2 s and 40 such layers 4.4 s on the
    fuzzer's inputs (fresh-seed finding: a Silu block then a kinked Fn repeated 3 times,
    3.1 s): every layer's near-collinear entries went to the nested quadrature, whose 2**24
    budget was per call, none per network. All the layers of one evaluation now draw on
    MAX_QUADRATURE_NODES, checked from the grids before a layer's quadrature runs: what
    runs never exceeds it, and past it a NumericalError names the layer."""
    from ntkdsl import limits
    from ntkdsl.runtime import hermite
    assert hermite._HD_NETWORK_BUDGET == limits.MAX_QUADRATURE_NODES
    ran = []
    run = hermite._hd_direct_run
    monkeypatch.setattr(hermite, "_hd_direct_run",
                        lambda f, g, plan: ran.append(_planned_nodes(plan)) or run(f, g, plan))
    monkeypatch.setitem(hermite._HD_CACHE, "direct", {})
    net = ntkdsl.compile("(Dense(8, b_std=2) > Elu) * 200 > Dense(1)")
    with pytest.raises(ntkdsl.NumericalError, match=r"Elu\(alpha=1.0\).*MAX_QUADRATURE_NODES"):
        net.kernels(FUZZ_X)
    assert ran and sum(ran) <= limits.MAX_QUADRATURE_NODES
    # A smaller budget is met the same way, and no scope is left behind for later calls.
    ran.clear()
    monkeypatch.setattr(hermite, "_HD_NETWORK_BUDGET", 2 ** 22)
    monkeypatch.setitem(hermite._HD_CACHE, "direct", {})
    with pytest.raises(ntkdsl.NumericalError, match="MAX_QUADRATURE_NODES"):
        ntkdsl.compile("(Dense(8, b_std=2) > Elu) * 20 > Dense(1)").kernels(FUZZ_X)
    assert sum(ran) <= 2 ** 22
    assert getattr(hermite._hd_scope(), "left", None) is None


def test_nested_quadrature_entries_are_computed_once_and_exact(monkeypatch):
    """The (i, j) and (j, i) entries of a kernel matrix are one nested quadrature (E[f(u)
    f(v)] is symmetric), and a process remembers entries it computed: the cross kernel after
    kernels() of the same inputs repeats none. Checked against scipy's adaptive nested
    quadrature of Elu (split at its kink), and the network against itself computed afresh."""
    from scipy import integrate

    from ntkdsl.runtime import hermite

    def elu(t):
        t = np.asarray(t, dtype=float)
        return np.where(t > 0, t, np.expm1(np.minimum(t, 0.0)))
    elu.label = "Elu"
    q1, q2, c = 4.0, 4.1478, 0.98202168
    s1, s2, s = math.sqrt(q1), math.sqrt(q2), math.sqrt(1 - c * c)
    density = lambda t: math.exp(-t * t / 2) / math.sqrt(2 * math.pi)

    def inner(z):
        kink = -c * z / s
        return integrate.quad(lambda xi: float(elu(s2 * (c * z + s * xi))) * density(xi),
                              -40, 40, points=[kink], epsabs=1e-14, epsrel=1e-13, limit=400)[0]
    want = integrate.quad(lambda z: float(elu(s1 * z)) * density(z) * inner(z), -40, 40,
                          points=[0.0], epsabs=1e-14, epsrel=1e-13, limit=400)[0]
    monkeypatch.setitem(hermite._HD_CACHE, "direct", {})
    ran = []
    run = hermite._hd_direct_run
    monkeypatch.setattr(hermite, "_hd_direct_run",
                        lambda f, g, plan: ran.append(1) or run(f, g, plan))
    got = hermite._hd_direct(elu, (0.0,), np.array([q1, q2, q1]), np.array([q2, q1, q2]),
                             np.full(3, c))
    assert len(ran) == 1  # three entries, one quadrature
    np.testing.assert_allclose(got, np.full(3, want), rtol=1e-10)
    again = hermite._hd_direct(elu, (0.0,), np.array([q2]), np.array([q1]), np.array([c]))
    assert len(ran) == 1 and again[0] == got[0]  # remembered
    net = ntkdsl.compile("(Dense(8, b_std=2) > Elu) * 6 > Dense(1)")
    remembered = net.kernels(FUZZ_X), net.ntk(FUZZ_X[:2], FUZZ_X[1:])
    monkeypatch.setitem(hermite._HD_CACHE, "direct", {})
    afresh = net.ntk(FUZZ_X[:2], FUZZ_X[1:])
    np.testing.assert_array_equal(remembered[1], afresh)
    np.testing.assert_allclose(remembered[0][0], remembered[0][0].T, rtol=1e-15)



@pytest.mark.parametrize("body, where", [
    ("min(x, cosh(sinh((1.97) ** (100))))", "min(x, cosh(sinh((1.97) ** (100))))"),
    ("max(x, sinh(cosh(sinh(1.97 ** 100))))", "sinh(cosh(sinh(1.97 ** 100)))"),
])
def test_a_constant_too_large_for_mpmath_is_an_expression_error_at_its_call(body, where):
    """Fresh-seed finding (seed 1127187586 of an Fn-only fuzzer): comparing or evaluating
    cosh(sinh(1.97**100)) overflowed inside mpmath (OverflowError: too many digits in
    integer), which reached the user as lark's VisitError. It is now ntkdsl's error with the
    caret under the call that could not be evaluated."""
    arch = f'Dense(8) > Fn("{body}") > Dense(1)'
    with pytest.raises(ntkdsl.ExpressionError, match="far beyond float64's range") as info:
        ntkdsl.compile(arch)
    _, shown, caret, *_ = str(info.value).splitlines()
    start = caret.index("^")
    underlined = shown[start:start + caret.count("^")]
    # sympy's cache decides whether the overflow comes at the call or at the max around it
    assert underlined in (where, body) and "1.97" in underlined
