"""Tests of the ``ntkdsl verify`` command."""
from __future__ import annotations

import re

import numpy as np
import pytest

import ntkdsl
from ntkdsl.cli import main
from ntkdsl.finite import FiniteNetwork
from ntkdsl.verify import METRICS, make_data, verify

ARCH = "Dense(512, W_std=1.5, b_std=0.05) > Relu > Dense(1, W_std=1.5, b_std=0.05)"
FAST = ["--widths", "16,64,256", "--samples", "4", "--steps", "30", "--train", "8",
        "--test", "4", "--dim", "5"]


def table(output: str) -> dict[str, list[float]]:
    """Rows of the printed table: width (or 'slope') -> the five numbers."""
    rows = {}
    number = r"\s+(-?[\d.]+(?:e[-+]\d+)?)"
    for line in output.splitlines():
        match = re.match(r"\s*(\d+|slope)" + number * len(METRICS) + r"\s*$", line)
        if match:
            rows[match.group(1)] = [float(v) for v in match.groups()[1:]]
    return rows


def test_table_matches_the_python_function_and_its_own_fit(capsys, tmp_path):
    plot = tmp_path / "curves.png"
    assert main(["verify", ARCH, *FAST, "--plot", str(plot)]) == 0
    out = capsys.readouterr().out
    rows = table(out)
    assert list(rows) == ["16", "64", "256", "slope"]
    result = verify(ARCH, (16, 64, 256), samples=4, steps=30, n_train=8, n_test=4,
                    input_dim=5)
    for row in result.rows:
        expected = [getattr(row, name) for name, _, _ in METRICS]
        np.testing.assert_allclose(rows[str(row.width)], expected, rtol=1e-3)
    # The printed slope is the least-squares line through the printed points.
    widths = np.log([16, 64, 256])
    for column, slope in enumerate(rows["slope"]):
        values = np.log([rows[w][column] for w in ("16", "64", "256")])
        assert slope == pytest.approx(np.polyfit(widths, values, 1)[0], abs=0.02)
    assert "discretisation floor" in out and f"plot saved to {plot}" in out
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and plot.stat().st_size > 10_000


def test_prediction_gap_is_measured_against_the_flow_from_the_networks_own_start(capsys):
    """Recompute one row's prediction gap by hand: train with plain gradient steps and
    evaluate the flow by an eigendecomposition, independently of ntkdsl.predict."""
    assert main(["verify", ARCH, *FAST]) == 0
    printed = table(capsys.readouterr().out)["64"][METRICS.index(
        next(m for m in METRICS if m[0] == "prediction_gap"))]
    x_train, y_train, x_test, _ = make_data(8, 4, 5, 1, seed=0)
    net = FiniteNetwork(ARCH, 5, 64)
    params = net.init(0)
    theta = ntkdsl.compile(str(net.ast)).ntk(np.concatenate([x_train, x_test]))
    train, cross = theta[:8, :8], theta[8:, :8]
    evals, evecs = np.linalg.eigh(train)
    learning_rate = 1.0 * 8 / evals[-1]
    manual = [p.copy() for p in params]
    for _ in range(30):
        for p, g in zip(manual, net.loss_and_grad(manual, x_train, y_train)[1]):
            p -= learning_rate * g
    f0_train, f0_test = net.apply(params, x_train)[0], net.apply(params, x_test)[0]
    gains = -np.expm1(-learning_rate * 30 * evals / 8) / evals
    flow = f0_test + cross @ evecs @ (gains[:, None] * (evecs.T @ (y_train - f0_train)))
    trained = net.apply(manual, x_test)[0]
    gap = np.linalg.norm(trained - flow) / np.linalg.norm(flow)
    assert printed == pytest.approx(gap, rel=1e-3)


@pytest.mark.parametrize("args, message", [
    (["--widths", "0,16"], "--widths must be whole numbers >= 1"),
    (["--widths", "a,b"], "--widths must be comma-separated whole numbers"),
    (["--samples", "1"], "samples must be a whole number >= 2"),
    (["--rate", "2.5"], "rate must be in (0, 2)"),
    (["--steps", "0"], "steps must be a whole number >= 1"),
])
def test_bad_options_are_one_line_errors(args, message, capsys):
    assert main(["verify", ARCH, *args]) == 1
    err = capsys.readouterr().err
    assert err.startswith("ntkdsl verify: error:") and message in err


def test_an_architecture_the_finite_network_cannot_build_points_at_the_sum(capsys):
    assert main(["verify", "Dense(4) > (Relu > Dense(1) + Identity)", *FAST]) == 1
    err = capsys.readouterr().err
    assert "different widths" in err and "^" in err


def test_an_architecture_without_an_analytic_kernel_is_reported(capsys):
    assert main(["verify", "Relu > Dense(1)", *FAST]) == 1
    assert "raw inputs" in capsys.readouterr().err


@pytest.mark.parametrize("rate", [0.3, 1.0, 1.7])
def test_discretisation_floor_matches_matrix_powers(rate):
    """Discrete steps (I − A)^s against the flow exp(−A s) for the linearised network,
    computed with dense matrix functions; rate 1.0 puts the top mode exactly at r = 1."""
    from scipy.linalg import expm

    from ntkdsl.verify import discretisation_floor

    x_train, _, x_test, _ = make_data(6, 3, 4, 1, seed=1)
    x = np.concatenate([x_train, x_test])
    theta = ntkdsl.compile("Dense(8) > Relu > Dense(1)").ntk(x)
    train, cross = theta[:6, :6], theta[6:, :6]
    residual = np.random.default_rng(0).standard_normal((6, 1))
    learning_rate, steps = rate * 6 / np.linalg.eigvalsh(train)[-1], 25
    a = learning_rate * train / 6
    inverse = np.linalg.inv(train)
    discrete = cross @ inverse @ (np.eye(6) - np.linalg.matrix_power(np.eye(6) - a, steps))
    flow = cross @ inverse @ (np.eye(6) - expm(-a * steps))
    expected = np.linalg.norm((discrete - flow) @ residual) / np.linalg.norm(flow @ residual)
    got = discretisation_floor(theta, 6, residual, learning_rate, steps)
    assert np.isfinite(got) and got == pytest.approx(expected, rel=1e-6)
