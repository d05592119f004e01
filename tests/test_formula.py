"""net.formula(): a snapshot of the ReLU derivation (recognisably the arc-cosine kernel),
and the composed expression evaluated by sympy equals the library's numbers."""
import numpy as np
import sympy as sp

import ntkdsl
from ntkdsl.derivation import D, PAIR_INPUTS

RELU_NTK = """\
NTK of Dense(512) > Relu > Dense(1)
  (inputs: q1_0 = <x,x>/d, q2_0 = <x',x'>/d, K_0 = <x,x'>/d (d = number of features))
  (after step l: q1_l, q2_l = variances, K_l = NNGP, T_l = NTK; its input's correlation c_l and angle theta_l = arccos(c_l))
  (a layer that leaves the kernels unchanged (Identity, Dense(n) without bias) takes no step)
  step 1: Relu [closed form]
    c_1 = K_0/(sqrt(q1_0)*sqrt(q2_0))
    theta_1 = acos(c_1)
    K_1 = sqrt(q1_0)*sqrt(q2_0)*(-c_1*theta_1 + pi*c_1 + sin(theta_1))/(2*pi)
    T_1 = K_0*(pi - theta_1)/(2*pi)
  step 2: Dense(1)
    T_2 = K_1 + T_1
  ntk = T_2"""


def test_relu_formula_snapshot():
    assert str(ntkdsl.compile("Dense(512) > Relu > Dense(1)").formula("ntk")) == RELU_NTK


def test_relu_nngp_is_the_arc_cosine_kernel():
    expr = ntkdsl.compile("Dense(512) > Relu > Dense(1)").formula("nngp").expression
    q1, q2, k = PAIR_INPUTS
    theta = sp.Symbol("theta")
    arc_cosine = sp.sqrt(q1 * q2) * (sp.sin(theta) + (sp.pi - theta) * sp.cos(theta)) / (2 * sp.pi)
    # Substitute k = sqrt(q1 q2) cos θ for one angle and compare numerically.
    for value in [0.3, 1.1, 2.9]:
        at = {q1: 1.7, q2: 0.6, k: sp.sqrt(1.7 * 0.6) * sp.cos(value)}
        assert abs(float(expr.subs(at)) - float(arc_cosine.subs({**at, theta: value}))) < 1e-14


def test_composed_expression_equals_library():
    arch = "Dense(64, W_std=1.3, b_std=0.2) > Erf > Dense(64, W_std=1.1) > Relu > Dense(1)"
    net = ntkdsl.compile(arch)
    x = np.random.default_rng(3).standard_normal((2, 5))
    q = (x * x).sum(1) / 5
    at = {PAIR_INPUTS[0]: q[0], PAIR_INPUTS[1]: q[1], PAIR_INPUTS[2]: x[0] @ x[1] / 5, D: 5}
    for kind in ("nngp", "ntk"):
        value = float(net.formula(kind).expression.subs(at).evalf(30))
        assert abs(value - getattr(net, kind)(x)[0, 1]) < 1e-12 * abs(value)


def test_latex_align_block():
    latex = ntkdsl.compile("Dense(512) > Relu > Dense(1)").formula("ntk").latex()
    assert latex.startswith("\\begin{align}") and latex.endswith("\\end{align}")
    assert "\\arccos" in latex
