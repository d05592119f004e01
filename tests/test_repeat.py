"""Repetition means repetition of the text: ``A * n`` is ``A > A > ... > A`` written out, and
parentheses around a chain change nothing. Every stage — kernels, formulas, ``ntkdsl derive``,
standalone modules, finite networks — must give the written-out string's numbers."""
from __future__ import annotations

import numpy as np
import pytest
from test_codegen import _load

import ntkdsl
from ntkdsl.cli import main
from ntkdsl.finite import empirical_ntk, monte_carlo_nngp

# (with repeats or parentheses, the same text written out)
CASES = [
    ("Dense(512) > Relu * 2 > Dense(1)", "Dense(512) > Relu > Relu > Dense(1)"),
    ("Dense(512, b_std=0.1) > Relu * 3 > Dense(1)",
     "Dense(512, b_std=0.1) > Relu > Relu > Relu > Dense(1)"),
    ("Dense(512) > (Relu > Sin) * 2 > Dense(1)",
     "Dense(512) > Relu > Sin > Relu > Sin > Dense(1)"),
    ("Dense(512) > Relu * 2 * 3 > Dense(1)", "Dense(512) > " + "Relu > " * 6 + "Dense(1)"),
    ("Dense(512) > Relu > (Sin > Erf) > Dense(1)", "Dense(512) > Relu > Sin > Erf > Dense(1)"),
    ("(Dense(512, W_std=1.4) > Relu) * 3 > Dense(1)",
     " > ".join(["Dense(512, W_std=1.4) > Relu"] * 3 + ["Dense(1)"])),
    ("Dense(512) > (Erf * 2 > Dense(512) + Identity) * 2 > Relu > Dense(1)",
     ("Dense(512) > (Erf > Erf > Dense(512) + Identity) > (Erf > Erf > Dense(512) + Identity)"
      " > Relu > Dense(1)")),
    ("Dense(512) > (Relu * 2 > Dense(512) + Dense(512) > Erf * 2 > Dense(512)) > Dense(1)",
     "Dense(512) > (Relu > Relu > Dense(512) + Dense(512) > Erf > Erf > Dense(512)) > Dense(1)"),
]
IDS = [repeated for repeated, _ in CASES]


def _inputs(n=6, d=5, seed=0):
    x = np.random.default_rng(seed).standard_normal((n, d))
    return x, np.random.default_rng(seed + 1).standard_normal((3, d))


@pytest.mark.parametrize("repeated, written", CASES, ids=IDS)
def test_kernels_equal_the_written_out_string(repeated, written):
    x1, x2 = _inputs()
    got, expected = ntkdsl.compile(repeated), ntkdsl.compile(written)
    for kind in ("nngp", "ntk"):
        np.testing.assert_array_equal(getattr(got, kind)(x1, x2), getattr(expected, kind)(x1, x2))
        np.testing.assert_array_equal(getattr(got, kind)(x1), getattr(expected, kind)(x1))


@pytest.mark.parametrize("repeated, written", CASES, ids=IDS)
def test_formulas_and_derive_output_equal_the_written_out_string(repeated, written, capsys):
    got, expected = ntkdsl.compile(repeated), ntkdsl.compile(written)
    for kind in ("nngp", "ntk"):
        assert got.formula(kind).expression == expected.formula(kind).expression
    printed = []
    for arch in (repeated, written):
        assert main(["derive", arch]) == 0
        printed.append(capsys.readouterr().out.splitlines())
    assert printed[0][0].endswith(repeated)
    # Every line but the title and the step labels (which quote the layers as written) is
    # identical: the same steps with the same assignments.
    assert [_unlabelled(line) for line in printed[0][1:]] == [_unlabelled(line)
                                                             for line in printed[1][1:]]


def _unlabelled(line: str) -> str:
    return line.split(":")[0] if line.startswith("  step ") else line


def test_a_repeated_activation_reads_as_written():
    text = str(ntkdsl.compile("Dense(512) > Relu * 3 > Dense(1)").formula("ntk"))
    assert "step 1: Relu * 3 [" in text
    text = str(ntkdsl.compile("Dense(512) > (Relu > Sin) * 2 > Dense(1)").formula("ntk"))
    assert "step 1: (Relu > Sin(a=1.0, b=1.0, c=0.0)) * 2 [" in text


def test_relu_of_relu_is_relu():
    """An independent check of the composition: relu∘relu∘relu = relu."""
    x1, x2 = _inputs()
    got = ntkdsl.compile("Dense(512, b_std=0.1) > Relu * 3 > Dense(1)")
    expected = ntkdsl.compile("Dense(512, b_std=0.1) > Relu > Dense(1)")
    np.testing.assert_allclose(got.ntk(x1, x2), expected.ntk(x1, x2), rtol=1e-13)
    np.testing.assert_allclose(got.nngp(x1), expected.nngp(x1), rtol=1e-13)


@pytest.mark.parametrize("repeated, written", CASES[:3] + CASES[5:6], ids=IDS[:3] + IDS[5:6])
def test_standalone_modules_equal_the_written_out_string(repeated, written, tmp_path):
    x1, x2 = _inputs()
    got = _load(ntkdsl.codegen(repeated), tmp_path, "repeated_kernel")
    expected = _load(ntkdsl.codegen(written), tmp_path, "written_kernel")
    library = ntkdsl.compile(written)
    for kind in ("nngp", "ntk"):
        np.testing.assert_array_equal(getattr(got, kind)(x1, x2), getattr(expected, kind)(x1, x2))
        np.testing.assert_allclose(getattr(got, kind)(x1, x2), getattr(library, kind)(x1, x2),
                                   rtol=1e-12)


@pytest.mark.parametrize("repeated, written", CASES, ids=IDS)
def test_finite_networks_equal_the_written_out_string(repeated, written):
    x1, x2 = _inputs(n=4, d=3)
    np.testing.assert_array_equal(empirical_ntk(repeated, x1, x2, width=16, seed=3),
                                  empirical_ntk(written, x1, x2, width=16, seed=3))
    np.testing.assert_array_equal(monte_carlo_nngp(repeated, x1, width=16, samples=4, seed=3),
                                  monte_carlo_nngp(written, x1, width=16, samples=4, seed=3))


def test_finite_repeated_activation_converges_to_the_analytic_kernel():
    """The finite network of ``Sin * 2`` (sin∘sin) approaches the derived kernel with width."""
    arch = "Dense(512) > Sin * 2 > Dense(1)"
    x = _inputs(n=5, d=3)[0]
    analytic = ntkdsl.compile(arch).nngp(x)
    errors = [np.linalg.norm(monte_carlo_nngp(arch, x, width=w, samples=8, seed=0) - analytic)
              / np.linalg.norm(analytic) for w in (64, 4096)]
    assert errors[1] < 0.05 and errors[1] < errors[0] / 3
