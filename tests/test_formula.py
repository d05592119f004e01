"""net.formula(): a snapshot of the ReLU derivation (recognisably the arc-cosine kernel),
its LaTeX valid in text mode for LaTeX and MathJax (headings, wrapped notes, Γ names),
and the composed expression evaluated by sympy equals the library's numbers."""
import re

import numpy as np
import pytest
import sympy as sp

import ntkdsl
from ntkdsl.derivation import PAIR_INPUTS, D
from ntkdsl.formula import TEXT_WIDTH, Formula

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


# --------------------------------------------------------------------------- LaTeX --
LATEX_ARCHS = [
    "Dense(512, W_std=1.5, b_std=0.1) > Tanh > Dense(1)",
    'Dense(512) > Fn("x^2 + 0.5*x") > Dense(1)',
    "Dense(512) > (Relu > Dense(512, b_std=0.2) + Identity) > Relu > Dense(1)",
]
# TeX's special characters, which LaTeX's text mode does not take literally; in roman type
# also those the default OT1 font prints as other glyphs (< as an inverted exclamation mark).
TT_FORBIDDEN = set("\\{}_#$%&^~")
ROMAN_FORBIDDEN = TT_FORBIDDEN | set("<>|")


def _text_arguments(latex: str) -> list[tuple[str, str]]:
    """(command, argument) of every \\text{...}, \\texttt{...} in ``latex``, the argument
    read up to its matching brace, as TeX reads it."""
    found = []
    for match in re.finditer(r"\\(text|texttt)\{", latex):
        depth, end = 1, match.end()
        while depth:
            depth += {"{": 1, "}": -1}.get(latex[end], 0)
            end += 1
        found.append((match[1], latex[match.end():end - 1]))
    return found


@pytest.mark.parametrize("arch", LATEX_ARCHS)
def test_latex_text_is_valid_in_latex_and_mathjax_text_mode(arch):
    """Every text argument holds only characters that LaTeX prints as themselves and that
    MathJax shows as themselves (it does not read escapes such as \\_ inside \\text)."""
    net = ntkdsl.compile(arch)
    for formula in (net.formula("ntk"), Formula(arch, net.diagonal_program, "both")):
        latex = formula.latex()
        assert latex.count("{") == latex.count("}")
        arguments = _text_arguments(latex)
        assert any(command == "texttt" for command, _ in arguments)  # the architecture
        for command, argument in arguments:
            forbidden = TT_FORBIDDEN if command == "texttt" else ROMAN_FORBIDDEN
            assert not forbidden & set(argument), (command, argument)


def test_latex_heading_wraps_notes_and_names_duals():
    latex = ntkdsl.compile(LATEX_ARCHS[0]).formula("ntk").latex()
    rows = latex.split(" \\\\\n")
    assert rows[0] == (r"\begin{align}" "\n" r"&\text{NTK of }\texttt{Dense(512, W}\_\texttt{std=1.5, "
                       r"b}\_\texttt{std=0.1) > Tanh > Dense(1)}")
    text_rows = [row for row in rows if "&=" not in row]
    longest = max(sum(len(a) for _, a in _text_arguments(row)) for row in text_rows)
    assert TEXT_WIDTH - 10 < longest <= TEXT_WIDTH  # the note wraps, and fills its rows
    assert r"\Gamma_{\mathrm{Tanh}}{\left(" in latex and r"\dot{\Gamma}_{\mathrm{Tanh}}" in latex
    assert "Gamma[" not in latex and "operatorname" not in latex
