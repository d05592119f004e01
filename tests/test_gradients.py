"""Kernel gradients (issue 15): derivatives of the NNGP and NTK with respect to an
architecture's numbers, checked against central finite differences of the kernels that
ntkdsl computes at θ ± h (an independent computation: the plain kernel program), for every
layer kind and activation route, on pairs of distinct inputs and on identical ones."""
import pickle

import numpy as np
import pytest

import ntkdsl
from ntkdsl import network
from ntkdsl.errors import ParameterError
from ntkdsl.templates import ArchTemplate

# Central differences, Richardson-extrapolated: truncation ~ h^4 ~ 1e-11, and the kernels'
# own error (1e-11 relative on the numerical route) over h ~ 1e-8.
STEP = 2e-3

CASES = [
    # closed forms: the arc-cosine family, repeats, a number used twice
    ("(Dense(512, W_std={w}, b_std={b}) > Relu) * 2 > Dense(1, W_std={w})", dict(w=1.5, b=0.5)),
    ("Dense(8, W_std={w}, b_std={b}) > LeakyRelu({a}) > Dense(1)", dict(w=1.2, a=0.1, b=0.3)),
    ("Dense(8, W_std={w}, b_std={b}) > ABRelu({a}, {c}) > Dense(1)",
     dict(w=1.2, b=0.1, a=-0.3, c=0.8)),
    ("Dense(8, W_std={w}, b_std=0.2) > Erf(a={a}, b={s}, c={c}) > Dense(1)",
     dict(w=1.2, a=1.0, s=0.5, c=0.1)),
    ("Dense(8, W_std={w}, b_std={b}) > Gelu > Dense(1, b_std={b})", dict(w=1.2, b=0.1)),
    ("Dense(8, W_std={w}, b_std={b}) > Sign > Dense(1, W_std={w})", dict(w=1.2, b=0.1)),
    # Gaussian integration rules
    ('Dense(8, W_std={w}, b_std={b}) > Fn("sin(x)") > Dense(1)', dict(w=1.2, b=0.1)),
    # both parameterisations, LayerNorm, a residual sum
    ("Dense(8, W_std={w}, b_std={b}, parameterization='standard') > Relu > "
     "Dense(3, W_std={w}, b_std=0.1, parameterization='standard')", dict(w=1.2, b=0.1)),
    ("Dense(8, W_std={w}, b_std={b}) > LayerNorm > Relu > Dense(1)", dict(w=1.2, b=0.1)),
    ("Dense(8, W_std={w}, b_std={b}) > (Relu > Dense(8, W_std={w}) + Identity) > Relu > "
     "Dense(1)", dict(w=1.2, b=0.1)),
    # the numerical route: variance derivatives from the cross series (Price's theorem)
    ("Dense(8, W_std={w}, b_std={b}) > Tanh > Dense(1)", dict(w=1.2, b=0.1)),
    ("Dense(8, W_std={w}, b_std={b}) > Softplus > Dense(8, W_std={w}) > Tanh > Dense(1)",
     dict(w=1.2, b=0.3)),
    ('Dense(8, W_std={w}, b_std={b}) > Fn("x*tanh(x)") > Dense(1)', dict(w=1.2, b=0.1)),
]


def _inputs():
    rng = np.random.default_rng(0)
    x1 = rng.normal(size=(7, 5))
    x1[3] = x1[1]  # identical inputs: entries from the exact diagonal program
    return x1, rng.normal(size=(4, 5))


def _kernel(template, values, kind, x1, x2):
    # The plain kernel program, compiled afresh: the differences need dozens of values,
    # which would crowd compile()'s per-string cache (other tests rely on what it holds).
    arch = ArchTemplate(template, **values).render()
    return getattr(network._compile.__wrapped__(arch), kind)(x1, x2)


def _finite_difference(template, values, name, kind, x1, x2):
    def central(h):
        up = _kernel(template, {**values, name: values[name] + h}, kind, x1, x2)
        down = _kernel(template, {**values, name: values[name] - h}, kind, x1, x2)
        return (up - down) / (2 * h)
    h = STEP * max(1.0, abs(values[name]))
    return (4 * central(h / 2) - central(h)) / 3


@pytest.mark.parametrize("kind", ["nngp", "ntk"])
@pytest.mark.parametrize("template, values", CASES, ids=[c[0][:60] for c in CASES])
def test_gradients_match_finite_differences(template, values, kind):
    names = list(values)
    net = ntkdsl.compile(ArchTemplate(template, **values), gradients=names)
    x1, x2 = _inputs()
    for other in (None, x2):
        value, derivatives = getattr(net, kind)(x1, other, eval_gradient=True)
        n2 = len(x1) if other is None else len(other)
        assert derivatives.shape == (len(x1), n2, len(names))
        np.testing.assert_allclose(value, _kernel(template, values, kind, x1, other),
                                   rtol=1e-13, atol=0)
        for j, name in enumerate(names):
            fd = _finite_difference(template, values, name, kind, x1, other)
            scale = np.abs(fd).max()
            err = np.abs(derivatives[..., j] - fd).max() / scale
            assert err <= 1e-7, (name, err)
        if other is None:  # a self-kernel: symmetric, identical rows equal the diagonal's
            np.testing.assert_array_equal(derivatives, derivatives.transpose(1, 0, 2))
            np.testing.assert_array_equal(derivatives[1, 3], derivatives[1, 1])


CONV_CASES = [
    ("Conv(4, (3, 3), padding='SAME', W_std={w}, b_std={b}) > Relu > AvgPool((2, 2)) > "
     "Flatten > Dense(1, W_std={w})", dict(w=1.3, b=0.2), (4, 4, 2)),
    ("Conv(4, (3, 3), W_std={w}, b_std={b}) > Erf(a={a}) > GlobalAvgPool > Dense(1, W_std={w})",
     dict(w=1.3, b=0.2, a=1.2), (5, 5, 2)),
    ("Conv(4, (2,), padding='CIRCULAR', W_std={w}, b_std={b}, parameterization='standard') > "
     "Relu > Flatten > Dense(1)", dict(w=1.3, b=0.2), (6, 3)),
    ("Conv(4, (3, 3), padding='SAME', W_std={w}, b_std={b}) > (Relu > Conv(4, (3, 3), "
     "padding='SAME', W_std={w}) + Identity) > Relu > SumPool((2, 2)) > GlobalAvgPool > Dense(1)",
     dict(w=1.3, b=0.2), (4, 4, 2)),
    ("Conv(4, (3, 3), padding='SAME', W_std={w}, b_std={b}) > Tanh > GlobalAvgPool > Dense(1)",
     dict(w=1.3, b=0.2), (4, 4, 1)),
]


@pytest.mark.parametrize("kind", ["nngp", "ntk"])
@pytest.mark.parametrize("template, values, shape", CONV_CASES, ids=[c[0][:60] for c in CONV_CASES])
def test_convolutional_gradients_match_finite_differences(template, values, shape, kind):
    rng = np.random.default_rng(3)
    x1, x2 = rng.normal(size=(3, *shape)), rng.normal(size=(2, *shape))
    x1[2] = x1[0]
    net = ntkdsl.compile(ArchTemplate(template, **values), gradients=list(values))
    for other in (None, x2):
        value, derivatives = getattr(net, kind)(x1, other, eval_gradient=True)
        np.testing.assert_allclose(value, _kernel(template, values, kind, x1, other),
                                   rtol=1e-12, atol=0)
        for j, name in enumerate(values):
            fd = _finite_difference(template, values, name, kind, x1, other)
            assert np.abs(derivatives[..., j] - fd).max() <= 1e-7 * np.abs(fd).max(), name
        if other is None:
            np.testing.assert_array_equal(derivatives[0, 2], derivatives[0, 0])


def test_gradient_order_follows_the_names():
    template = "Dense(8, W_std={w}, b_std={b}) > Relu > Dense(1)"
    x = _inputs()[0]
    a = ntkdsl.compile(ArchTemplate(template, w=1.3, b=0.2), gradients=["w", "b"])
    b = ntkdsl.compile(ArchTemplate(template, w=1.3, b=0.2), gradients=["b", "w"])
    np.testing.assert_allclose(a.ntk(x, eval_gradient=True)[1][..., ::-1],
                               b.ntk(x, eval_gradient=True)[1], rtol=1e-13, atol=1e-16)


def test_numpy_scalar_values_give_the_gradients_of_python_floats():
    """Values as NumPy scalars (what an optimiser hands back) are numbers like any other."""
    template = "Dense(8, W_std={w}, b_std={b}) > Relu > Dense(1)"
    x = _inputs()[0]
    a = ntkdsl.compile(ArchTemplate(template, w=1.3, b=0.2), gradients=["w", "b"])
    b = ntkdsl.compile(ArchTemplate(template, w=np.float64(1.3), b=np.float64(0.2)),
                       gradients=["w", "b"])
    got, want = b.ntk(x, eval_gradient=True), a.ntk(x, eval_gradient=True)
    for g, w in zip(got, want):
        np.testing.assert_array_equal(g, w)


def test_each_correlation_is_computed_once():
    """The fused arc-cosine call's argument, the correlation, is also read by the
    derivatives: one pass makes it for both (it was made twice, once per reader)."""
    arch = ArchTemplate("(Dense(8, W_std={w}, b_std={b}) > Relu) * 3 > Dense(1)", w=1.3, b=0.2)
    source = ntkdsl.compile(arch, gradients=["w", "b"]).gradient_kernels("ntk").source
    pair = source[source.index("def pair("):source.index("def diagonal(")]
    assert pair.count("numpy.clip(") == 3


def test_a_gradient_network_pickles_and_keeps_plain_kernels():
    arch = ArchTemplate("Dense(8, W_std={w}) > Erf > Dense(1)", w=1.3)
    net = ntkdsl.compile(arch, gradients=["w"])
    copy = pickle.loads(pickle.dumps(net))
    x = _inputs()[0]
    np.testing.assert_array_equal(copy.nngp(x, eval_gradient=True)[1],
                                  net.nngp(x, eval_gradient=True)[1])
    np.testing.assert_array_equal(net.nngp(x), ntkdsl.compile(arch.render()).nngp(x))


@pytest.mark.parametrize("template, values, names, message", [
    ("Dense(8, W_std={w}) > Relu > Dense(1)", dict(w=1.0), ["v"], "'v' is not a placeholder"),
    ("Dense({n}, W_std={w}) > Relu > Dense(1)", dict(n=8, w=1.0), ["n"], "fills an integer"),
    ("(Dense(8) > Relu) * {L} > Dense(1)", dict(L=2), ["L"], "fills an integer"),
    ("Dense(8) > Monomial({k}) > Dense(1)", dict(k=2), ["k"], "fills an integer"),
    ("Dense(8) > Relu > Dense(1)", {}, ["w"], "has no placeholders"),
    ("Dense(8, W_std={w}) > Relu > Dense(1)", dict(w=1.0), [], "names no placeholder"),
    ("Dense(8, W_std={w}) > Relu > Dense(1)", dict(w=1.0), ["w", "w"], "twice"),
])
def test_bad_gradient_requests_name_the_parameter(template, values, names, message):
    with pytest.raises(ParameterError, match=message):
        ntkdsl.compile(ArchTemplate(template, **values), gradients=names)


def test_a_jump_in_phi_prime_is_refused_on_the_numerical_route():
    # Elu's phi'' jumps at 0: Price's theorem for the NTK's variance derivative would drop
    # the point mass, so the gradient is refused, naming the layer.
    with pytest.raises(ParameterError, match=r"step 2: Elu.*derivative with respect to w"):
        ntkdsl.compile(ArchTemplate("Dense(8, W_std={w}) > Elu > Dense(1)", w=1.0),
                       gradients=["w"])


def test_a_parameter_of_a_numerical_route_activation_is_refused():
    with pytest.raises(ParameterError, match=r"Elu\(alpha=a\) has no closed-form dual.*"
                                             "parameter a") as err:
        ntkdsl.compile(ArchTemplate("Dense(8, W_std={w}) > Elu({a}) > Dense(1)", w=1.0,
                                    a=0.5), gradients=["w", "a"])
    assert "^^^" in str(err.value)  # the caret under the layer


def test_gradients_need_a_template():
    with pytest.raises(ParameterError, match="needs an ArchTemplate"):
        ntkdsl.compile("Dense(8) > Relu > Dense(1)", gradients=["w"])


@pytest.mark.parametrize("kind", ["nngp", "ntk"])
def test_collinear_inputs_have_finite_gradients(kind):
    # x' = 2x and x' = -x stay collinear through ReLU layers without bias: the NTK's factor
    # J_0 has an infinite slope there, times a tangent of the correlation that is 0.
    template, values = "(Dense(8, W_std={w}) > Relu) * 2 > Dense(1)", dict(w=1.3)
    x = np.random.default_rng(0).normal(size=(3, 5))
    x[1], x[2] = 2 * x[0], -x[0]
    net = ntkdsl.compile(ArchTemplate(template, **values), gradients=["w"])
    _, derivatives = getattr(net, kind)(x, eval_gradient=True)
    fd = _finite_difference(template, values, "w", kind, x, None)
    # collinear entries: the kernels themselves are good to ~1e-7 of the largest (DESIGN §5)
    assert np.abs(derivatives[..., 0] - fd).max() <= 1e-6 * np.abs(fd).max()


def test_the_symbol_tree_is_reused_but_every_value_is_still_checked():
    from ntkdsl.errors import LayerValueError
    from ntkdsl.templates import parameter_tree

    text = "(Dense(64, W_std={w}, b_std={b}) > Relu) * 2 > Dense(1, W_std={w})"
    first = parameter_tree(ArchTemplate(text, w=1.25, b=0.5), ["w"])
    again = parameter_tree(ArchTemplate(text, w=2.5, b=0.5), ["w"])
    assert again.ast is first.ast and again.values == (2.5,)
    assert again.arch == text.format(w=2.5, b=0.5)
    # Another value of b is another tree (b is fixed, its number is in the tree).
    assert parameter_tree(ArchTemplate(text, w=2.5, b=0.25), ["w"]).ast != first.ast
    with pytest.raises(LayerValueError, match="magnitude"):
        parameter_tree(ArchTemplate(text, w=1e60, b=0.5), ["w"])
