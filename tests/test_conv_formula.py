"""The derivation of convolutional kernels as formulas: ``net.formula()`` and ``ntkdsl derive``
say which path the kernels take (same positions only, or every pair of positions up to the
last pooling layer), print a convolution as an operator on the covariance
(``K_3 = (225*conv3x3(K_2) + 1)/100``) and activations per entry as for dense networks; the
LaTeX renders in MathJax 3; formulas pickle."""
from __future__ import annotations

import pickle

import pytest
from test_latex_render import _shown_text, render  # noqa: F401 - the MathJax fixture

import ntkdsl
from ntkdsl.cli import main
from ntkdsl.formula import Formula

FLATTEN = "Conv(8, (3, 3)) > Relu > Conv(8, (3, 3), W_std=1.5, b_std=0.1) > Relu > Flatten > Dense(1)"
GAP = "(Conv(32, (3, 3), padding='SAME', W_std=1.4, b_std=0.1) > Relu) * 2 > GlobalAvgPool > Dense(1)"
POOLED = ("Conv(8, (3, 3), padding='SAME') > Erf > AvgPool((2, 2), strides=(2, 2)) > "
          "Conv(8, (2, 2)) > Relu > Flatten > Dense(1)")
STANDARD = ("Conv(8, (3, 3), padding='SAME', b_std=0.1, parameterization='standard') > Relu > "
            "Flatten > Dense(1, parameterization='standard')")


def _lines(arch: str, kind: str = "ntk") -> list[str]:
    return str(ntkdsl.compile(arch).formula(kind)).split("\n")


def test_the_cheap_path_is_named_and_a_conv_step_reads_as_an_operator():
    lines = _lines(FLATTEN)
    assert any(line.startswith("  (path: same positions only (no pooling layer)") for line in lines)
    assert "    K_3 = (225*conv3x3(K_2) + 1)/100" in lines
    assert "    K_1 = conv3x3(K_0)" in lines
    assert "    T_4 = T_3*(pi - theta_4)/(2*pi)" in lines  # Relu per entry, as for Dense
    assert "    K_5 = flatten(K_4)" in lines


def test_pooling_names_position_pairs_up_to_the_last_pool():
    lines = _lines(POOLED)
    path = next(line for line in lines if line.startswith("  (path:"))
    assert "every pair of positions" in path
    assert "up to step 3 (AvgPool((2, 2), strides=(2, 2))), the last pooling layer; the same " \
           "positions only after it" in path
    assert "    K_3 = avgpool2x2_stride2x2(K_2)" in lines
    assert "    q1_3 = diag(avgpool2x2_stride2x2(Q1_2))" in lines  # pooled variances
    assert "  step 4: (same positions from here on: no pooling follows)" in lines
    gap = next(line for line in _lines(GAP) if line.startswith("  (path:"))
    assert "up to step 5 (GlobalAvgPool)" in gap
    # on position pairs the variances are read at each position of a pair
    assert any("q1_1[p]" in line and "q2_1[p']" in line for line in _lines(GAP))


def test_the_standard_parameterisation_counts_the_flattened_positions():
    lines = _lines(STANDARD)
    assert "    T_1 = 9*d*conv3x3_same(K_0) + 1" in lines  # fan-in: channels x filter
    assert any(line.startswith("    T_4 = 8*K_3*positions(q1_2)") for line in lines)


def test_the_diagonal_derivation_keeps_same_positions_exact():
    net = ntkdsl.compile(GAP)
    text = str(Formula(GAP, net.diagonal_program, "both"))
    assert "Q_0 = <x[p],x[p']>/C" in text
    assert "with_diagonal(" in text  # an image with itself: exact variances on the diagonal


def test_derive_prints_the_same(capsys):
    for arch in (FLATTEN, POOLED):
        assert main(["derive", arch]) == 0
        out, err = capsys.readouterr()
        assert err == "" and out == str(ntkdsl.compile(arch).formula("nngp")).replace(
            "NNGP of", "NNGP and NTK of", 1).split("\n")[0] + out[out.index("\n"):]
        assert "(path:" in out
    assert main(["derive", POOLED, "--latex"]) == 0
    out, _ = capsys.readouterr()
    assert r"\operatorname{avgpool}_{2{\times}2,\,\mathrm{stride2x2}}" in out


def test_formulas_pickle():
    formula = ntkdsl.compile(POOLED).formula("ntk")
    text = str(formula)
    copy = pickle.loads(pickle.dumps(formula))
    assert copy.program == formula.program and str(copy) == text


@pytest.mark.parametrize("arch", [FLATTEN, GAP, POOLED, STANDARD])
def test_latex_renders_in_mathjax(render, arch):  # noqa: F811 - the fixture
    net = ntkdsl.compile(arch)
    texts = []
    for program in (net.program, net.diagonal_program):
        for kind in ("nngp", "ntk", "both"):
            formula = Formula(arch, program, kind)
            texts += [formula.latex(), formula.expanded(latex=True)]
    for result in render(texts):
        assert not result["errors"], result["errors"]
    heading = _shown_text(render([net.formula("ntk").latex()])[0])
    assert "path:" in heading and "images with C channels" in heading
