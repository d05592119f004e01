"""`ntkdsl derive`: snapshots of its output, and the printed formulas evaluated line by line
against the library's kernel values (so a misnamed intermediate cannot pass)."""
import os
import re
from pathlib import Path

import numpy as np
import pytest
import sympy as sp
from sympy.parsing.sympy_parser import parse_expr

import ntkdsl
from ntkdsl.cli import main
from ntkdsl.formula import Formula, latex_text

SNAPSHOTS = Path(__file__).parent / "snapshots"
RELU = "Dense(512, W_std=1.5, b_std=0.1) > Relu > Dense(1, W_std=1.5, b_std=0.1)"
ERF = "Dense(512, W_std=1.2, b_std=0.3) > Erf > Dense(1, W_std=1.2, b_std=0.3)"
SNAPSHOT_CASES = [
    ("derive_relu.txt", [RELU]),
    ("derive_erf.txt", [ERF]),
    ("derive_relu_latex.tex", [RELU, "--latex"]),
    ("derive_erf_ntk_latex.tex", [ERF, "--kernel", "ntk", "--latex"]),
    ("derive_relu_diagonal.txt", [RELU, "--diagonal"]),
    ("derive_relu_expand.txt", [RELU, "--expand"]),
]


def run_cli(argv, capsys) -> tuple[int, str, str]:
    code = main(argv)
    out, err = capsys.readouterr()
    return code, out, err


@pytest.mark.parametrize("name, argv", SNAPSHOT_CASES, ids=[c[0] for c in SNAPSHOT_CASES])
def test_derive_output_matches_snapshot(name, argv, capsys):
    """Set NTKDSL_UPDATE_SNAPSHOTS=1 to rewrite the files after an intended change."""
    code, out, err = run_cli(["derive", *argv], capsys)
    assert (code, err) == (0, "")
    path = SNAPSHOTS / name
    if os.environ.get("NTKDSL_UPDATE_SNAPSHOTS"):
        path.write_text(out)
    assert out == path.read_text()


def _evaluate_printout(text: str, stats: dict[str, float]) -> dict[str, float]:
    """Run the printed ``name = expr`` lines in order, as a reader would by hand."""
    env = {sp.Symbol(k): v for k, v in stats.items()}
    for line in text.splitlines():
        match = re.fullmatch(r"\s+(\w+) = (.+)", line)
        if match is None:  # a heading or the legend
            continue
        name, expr = match.groups()
        value = parse_expr(expr, local_dict={str(k): k for k in env}).xreplace(env)
        env[sp.Symbol(name)] = sp.N(value, 30)
    return {str(k): float(v) for k, v in env.items()}


ARCHS = [RELU, ERF, "(Dense(512, W_std=1.4, b_std=0.1) > Relu) * 10 > Dense(1)",
         "Dense(512, b_std=0.2) > ABRelu(a=-0.5, b=2.0) > Dense(1)",
         "Dense(512, W_std=1.3, b_std=0.1) > Gelu > Dense(1)",
         "Dense(512, b_std=0.1) > LayerNorm > Relu > Dense(1)",
         ("Dense(512, W_std=1.2, b_std=0.1) > (Relu > Dense(512, W_std=1.2, b_std=0.1) "
          "+ Identity) > Relu > Dense(1)"),
         ("Dense(256, W_std=1.4, b_std=0.1, parameterization='standard') > Relu > "
          "Dense(1, W_std=1.4, b_std=0.1, parameterization='standard')"),
         "Dense(512, b_std=0.2) > RectifiedMonomial(2) > Dense(1)"]


@pytest.mark.parametrize("arch", ARCHS)
def test_printed_formulas_evaluate_to_the_library_kernels(arch, capsys):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(2, 5))
    net = ntkdsl.compile(arch)
    nngp, ntk = net.kernels(x[:1], x[1:])
    code, out, _ = run_cli(["derive", arch], capsys)
    assert code == 0
    q1, q2, k = (x[0] @ x[0]) / 5, (x[1] @ x[1]) / 5, (x[0] @ x[1]) / 5
    values = _evaluate_printout(out, {"q1_0": q1, "q2_0": q2, "K_0": k, "d": 5})
    np.testing.assert_allclose([values["nngp"], values["ntk"]], [nngp[0, 0], ntk[0, 0]],
                               rtol=1e-12)


def test_diagonal_printout_evaluates_to_the_diagonal_kernels(capsys):
    x = np.array([[0.3, -1.2, 0.5]])
    net = ntkdsl.compile(RELU)
    code, out, _ = run_cli(["derive", RELU, "--diagonal"], capsys)
    assert code == 0
    values = _evaluate_printout(out, {"q_0": (x[0] @ x[0]) / 3, "d": 3})
    np.testing.assert_allclose([values["nngp"], values["ntk"]],
                               [net.nngp(x)[0, 0], net.ntk(x)[0, 0]], rtol=1e-13)


def test_expanded_expression_evaluates_to_the_library_kernels(capsys):
    x = np.array([[0.3, -1.2, 0.5], [1.0, 0.2, -0.4]])
    net = ntkdsl.compile(ERF)
    code, out, _ = run_cli(["derive", ERF, "--expand"], capsys)
    assert code == 0
    values = _evaluate_printout("\n".join("  " + line for line in out.splitlines()),
                                {"q1_0": (x[0] @ x[0]) / 3, "q2_0": (x[1] @ x[1]) / 3,
                                 "K_0": (x[0] @ x[1]) / 3, "d": 3})
    np.testing.assert_allclose([values["nngp"], values["ntk"]],
                               [net.nngp(x)[0, 1], net.ntk(x)[0, 1]], rtol=1e-12)


def test_deep_network_prints_short_lines(capsys):
    """Ten Dense > Relu blocks: every line stays short; the printout grows linearly."""
    deep = "(Dense(512, W_std=1.4, b_std=0.1) > Relu) * 10 > Dense(1)"
    code, out, _ = run_cli(["derive", deep], capsys)
    assert code == 0
    formulas = [line for line in out.splitlines() if line.startswith("    ")]
    assert max(len(line) for line in formulas) < 100
    assert sum("theta_" in line and "acos" in line for line in formulas) == 10
    assert len(out.splitlines()) < 150


def test_shared_subexpressions_are_named_once(capsys):
    code, out, _ = run_cli(["derive", ERF, "--kernel", "ntk"], capsys)
    assert code == 0
    # sqrt(det(I + 2Σ)), the leg of Erf's angle and the denominator of its Γ̇ (issue 12).
    assert "z1 = sqrt(-4*K_1**2 + 4*q1_1*q2_1 + 2*q1_1 + 2*q2_1 + 1)" in out
    assert out.count("4*q1_1*q2_1 + 2*q1_1 + 2*q2_1 + 1") == 1


def test_kernel_option_selects_results(capsys):
    _, nngp_out, _ = run_cli(["derive", RELU, "--kernel", "nngp"], capsys)
    assert "nngp = K_3" in nngp_out and "T_1 =" not in nngp_out
    _, ntk_out, _ = run_cli(["derive", RELU, "--kernel", "ntk"], capsys)
    assert "ntk = T_3" in ntk_out and "nngp =" not in ntk_out


def test_errors_in_the_architecture_go_to_stderr_with_a_caret(capsys):
    code, out, err = run_cli(["derive", "Dense(512) > Rleu > Dense(1)"], capsys)
    assert code == 1 and out == ""
    assert "did you mean 'Relu'" in err and "^^^^" in err


@pytest.mark.parametrize("argv", [["derive"], ["derive", RELU, "--kernel", "both2"],
                                  ["derive", RELU, "--bogus"]])
def test_usage_errors_exit_2(argv, capsys):
    with pytest.raises(SystemExit) as info:
        main(argv)
    assert info.value.code == 2
    assert "usage: ntkdsl" in capsys.readouterr().err


@pytest.mark.parametrize("command", ["derive", "codegen"])
def test_help_lists_every_option_with_examples(command, capsys):
    with pytest.raises(SystemExit) as info:
        main([command, "--help"])
    out = capsys.readouterr().out
    assert info.value.code == 0
    assert "examples:" in out and "ARCH" in out
    options = {"derive": ["--kernel", "--latex", "--expand", "--diagonal"],
               "codegen": ["--output"]}[command]
    assert all(option in out for option in options)


def test_top_level_help_lists_the_commands_and_exit_codes(capsys):
    with pytest.raises(SystemExit):
        main(["--help"])
    out = capsys.readouterr().out
    assert all(name in out for name in ("derive", "codegen", "exit status"))


def test_formula_renders_in_jupyter():
    latex = ntkdsl.compile(RELU).formula("ntk")._repr_latex_()
    assert latex.startswith("$$\\begin{aligned}") and latex.endswith("\\end{aligned}$$")
    assert r"\theta^{(2)} &= \arccos{\left(c^{(2)} \right)}" in latex


def test_latex_text_escapes_every_special_character():
    assert latex_text("a_b{c}#$%&^~\\") == (r"a\_b\{c\}\#\$\%\&\^{}\~{}\textbackslash{}")


def test_formula_rejects_unknown_kind():
    with pytest.raises(ValueError, match="kind must be one of"):
        Formula(RELU, ntkdsl.compile(RELU).program, "ntks")
