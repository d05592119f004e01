"""Tests of the ``ntkdsl verify`` command."""
from __future__ import annotations

import re

import numpy as np
import pytest

import ntkdsl
from ntkdsl.cli import main
from ntkdsl.errors import ArchitectureError, InputError
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
    (["--widths", "0,16"], "argument --widths: must be a whole number >= 1, got 0"),
    (["--widths", "a,b"], "'a' is not a whole number"),
    (["--widths", "64"], "give at least two different widths"),
    (["--widths", "64,64"], "give at least two different widths"),
    (["--widths", "16,,64"], "has an empty entry"),
    (["--samples", "1"], "argument --samples: must be a whole number >= 2, got 1"),
    (["--rate", "2.5"], "argument --rate: must be a finite number > 0 and < 2 (gradient descent"),
    (["--rate", "nan"], "argument --rate: must be a finite number > 0 and < 2"),
    (["--steps", "0"], "argument --steps: must be a whole number >= 1, got 0"),
    (["--train", "1"], "argument --train: must be a whole number >= 2, got 1"),
    (["--test", "0"], "argument --test: must be a whole number >= 1, got 0"),
    (["--dim", "x"], "argument --dim: 'x' is not a whole number"),
    (["--seed", "-1"], "argument --seed: must be a whole number from 0 to 4294967295"),
    (["--plot", "curves.xyz"], "does not end in an image format"),
])
def test_bad_options_are_usage_errors_on_one_line(args, message, capsys):
    with pytest.raises(SystemExit) as info:
        main(["verify", ARCH, *args])
    assert info.value.code == 2
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("ntkdsl verify: error:")
    assert message in lines[0]


@pytest.mark.parametrize("kwargs, message", [
    ({"widths": (64,)}, "at least two different widths"),
    ({"widths": (64, 64)}, "at least two different widths"),
    ({"seed": -1}, "seed must be a whole number >= 0"),
])
def test_python_verify_refuses_what_it_cannot_fit_a_slope_to(kwargs, message):
    with pytest.raises(InputError, match=message):
        verify(ARCH, **{"widths": (16, 64), **kwargs})


@pytest.mark.parametrize("arch", ["Dense(512) > Relu", "Dense(4) > Erf * 2",
                                  "Dense(8) + Dense(8)"])
def test_an_architecture_without_a_hidden_dense_is_refused(arch, capsys):
    """Without a hidden Dense every width gives the same network: the old command printed
    identical rows and slopes of 0."""
    assert main(["verify", arch, *FAST]) == 1
    err = capsys.readouterr().err
    assert "no hidden Dense or Conv layer" in err and "^" * len(arch) in err
    with pytest.raises(ArchitectureError, match="no hidden Dense"):
        verify(arch, (16, 64))


def test_a_quantity_that_is_exactly_zero_has_no_slope_instead_of_nan(capsys):
    """Sign has φ' = 0, so the first layer never trains and the NTK (the readout's features)
    does not change at all: that column reads n/a with a note, never 'nan'."""
    arch = "Dense(512) > Sign > Dense(1)"
    assert main(["verify", arch, *FAST]) == 0
    out = capsys.readouterr().out
    assert "nan" not in out
    assert re.search(r"^\s*slope(\s+-?[\d.]+){3}\s+n/a\s+-?[\d.]+\s*$", out, re.M)
    assert "n/a: Δ NTK is exactly 0 at some width" in out
    result = verify(arch, (16, 64, 256), samples=4, steps=30, n_train=8, n_test=4, input_dim=5)
    assert all(row.ntk_change == 0.0 for row in result.rows)
    assert result.slopes["ntk_change"] is None
    widths = np.log([16, 64, 256])
    errors = np.log([row.ntk_error for row in result.rows])
    assert result.slopes["ntk_error"] == pytest.approx(np.polyfit(widths, errors, 1)[0])


def test_plot_labels_every_width_with_a_grid_and_readable_text():
    result = verify(ARCH, (16, 64, 256), samples=4, steps=30, n_train=8, n_test=4,
                    input_dim=5)
    fig = result.figure()
    fig.canvas.draw()
    (axis,) = fig.axes
    assert axis.get_xscale() == "log" and axis.get_yscale() == "log"
    assert [t.get_text() for t in axis.get_xticklabels()] == ["16", "64", "256"]
    assert list(axis.get_xticks()) == [16, 64, 256]
    assert any(g.get_visible() for g in axis.get_xgridlines())
    assert any(g.get_visible() for g in axis.get_ygridlines())
    assert axis.title.get_text() == ARCH and axis.title.get_fontsize() >= 13
    assert axis.xaxis.label.get_fontsize() >= 13 and axis.yaxis.label.get_fontsize() >= 13
    assert all(t.get_fontsize() >= 12 for t in axis.get_xticklabels() + axis.get_yticklabels())
    legend = axis.get_legend()
    assert legend.get_texts()[0].get_fontsize() >= 11
    # One curve per measured quantity through the measured points, with its slope named.
    for (name, _, description), line in zip(METRICS, axis.get_lines()):
        np.testing.assert_array_equal(line.get_ydata(), [getattr(r, name) for r in result.rows])
        assert line.get_label() == f"{description} (slope {result.slopes[name]:.2f})"
    # The legend sits below the axes, clear of the curves.
    renderer = fig.canvas.get_renderer()
    assert legend.get_window_extent(renderer).y1 < axis.get_window_extent(renderer).y0


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


# ----------------------------------------------------------------------------- convolutional

CONV = "Conv(8, (3, 3), padding='SAME', W_std=1.5, b_std=0.1) > Relu > Flatten > Dense(1)"


def _cnn_gp_relu_flatten(x1, x2, w_std=1.5, b_std=0.1):
    """(NNGP, NTK) of Conv(n, (3, 3), padding='SAME', W_std, b_std) > Relu > Flatten > Dense(1)
    from DESIGN §2, written out here: Flatten needs same-position covariances only, the
    Conv averages them over the 3x3 window (zeros outside), ReLU is the arc-cosine kernel."""
    channels = x1.shape[-1]

    def window_mean(k):  # mean over the 3x3 window of the last two (position) axes
        padded = np.pad(k, [(0, 0)] * (k.ndim - 2) + [(1, 1), (1, 1)])
        h, w = k.shape[-2:]
        return sum(padded[..., i:i + h, j:j + w] for i in range(3) for j in range(3)) / 9

    def conv(k):
        return w_std ** 2 * window_mean(k) + b_std ** 2

    q1 = conv(np.einsum("nhwc,nhwc->nhw", x1, x1) / channels)[:, None]
    q2 = conv(np.einsum("nhwc,nhwc->nhw", x2, x2) / channels)[None, :]
    k = conv(np.einsum("nhwc,mhwc->nmhw", x1, x2) / channels)
    theta = np.arccos(np.clip(k / np.sqrt(q1 * q2), -1, 1))
    gamma = np.sqrt(q1 * q2) / (2 * np.pi) * (np.sin(theta) + (np.pi - theta) * np.cos(theta))
    gamma_dot = (np.pi - theta) / (2 * np.pi)
    return gamma.mean(axis=(2, 3)), (gamma + k * gamma_dot).mean(axis=(2, 3))


class _CNNGPStub:
    """Stands in for ``ntkdsl.compile`` of CONV at any width, until the analytic conv
    kernels exist: the kernels of :func:`_cnn_gp_relu_flatten`, checked against
    neural-tangents' numbers in the test below."""

    def __init__(self, arch):
        assert re.fullmatch(re.escape(CONV).replace("8", r"\d+", 1), arch), arch

    def kernels(self, x1, x2=None):
        return _cnn_gp_relu_flatten(x1, x1 if x2 is None else x2)


def test_the_stub_kernel_is_neural_tangents_cnn_gp():
    from conftest import assert_matches_reference, load_reference

    cases = [c for c in load_reference("nt_cnn_kernels.json")["cases"] if c["arch"] == CONV]
    assert len(cases) == 2
    for case in cases:
        x1 = np.array(case["x1"])
        x2 = x1 if case["x2"] is None else np.array(case["x2"])
        for kind, got in zip(("nngp", "ntk"), _cnn_gp_relu_flatten(x1, x2)):
            # 1e-7: arccos of a correlation a rounding off 1 on the identical entries.
            assert_matches_reference(got, case, kind, rtol=1e-7)


def test_verify_measures_conv_networks_on_images(monkeypatch, capsys):
    import ntkdsl.verify as verify_module

    monkeypatch.setattr(verify_module, "compile_network", _CNNGPStub)
    result = verify(CONV, (16, 64, 256, 1024), samples=8, steps=50, n_train=8, n_test=4,
                    input_shape=(6, 6, 2))
    assert result.input_shape == (6, 6, 2)
    for name in ("nngp_error", "ntk_error", "weight_change"):
        assert -0.9 < result.slopes[name] < -0.25, (name, result.slopes)
    small, large = result.rows[0], result.rows[-1]
    assert large.nngp_error < 0.03 and large.ntk_error < 0.05
    assert large.prediction_gap < small.prediction_gap / 4
    assert "8 train / 4 test inputs of shape (6, 6, 2)" in result.report()
    # The command line: the same numbers from --shape (each width's row is measured on its
    # own, so two widths suffice); by default 8x8 single-channel images.
    assert main(["verify", CONV, "--widths", "16,64", "--samples", "8", "--steps", "50",
                 "--train", "8", "--test", "4", "--shape", "6,6,2"]) == 0
    rows = table(capsys.readouterr().out)
    for row in result.rows[:2]:
        np.testing.assert_allclose(rows[str(row.width)],
                                   [getattr(row, name) for name, _, _ in METRICS], rtol=1e-3)
    default = verify(CONV, (16, 32), samples=2, steps=2, n_train=4, n_test=2)
    assert default.input_shape == (8, 8, 1)


@pytest.mark.parametrize("kwargs, error, message", [
    ({"input_shape": (6, 6)}, "ShapeError", r"a batch of input_shape \(6, 6\) has shape "
                                            r"\(n, 6, 6\) \(3-D\) but this network, whose "
                                            r"filters have 2 spatial axes, takes 4-D"),
    ({"input_shape": (36,)}, "ShapeError", r"\(n, 36\) \(2-D\) but this network"),
    ({"input_shape": (2, 2, 1), "widths": (4, 8)}, None, None),  # SAME: any size is fine
    ({"input_shape": (6, 0, 1)}, "InputError", "input_shape must be"),
])
def test_verify_checks_the_image_shape_against_the_architecture(kwargs, error, message,
                                                                monkeypatch):
    import ntkdsl.verify as verify_module
    from ntkdsl import errors

    monkeypatch.setattr(verify_module, "compile_network", _CNNGPStub)
    arguments = {"widths": (4, 8), "samples": 2, "steps": 2, "n_train": 4, "n_test": 2,
                 **kwargs}
    if error is None:
        assert verify(CONV, **arguments).input_shape == kwargs["input_shape"]
        return
    with pytest.raises(getattr(errors, error), match=message):
        verify(CONV, **arguments)
    with pytest.raises(errors.ShapeError, match=r"has shape \(n, 4, 4, 1\), but this network "
                                                r"is fully connected"):
        verify(ARCH, (16, 64), input_shape=(4, 4, 1))


def test_a_conv_architecture_without_a_hidden_layer_is_refused(monkeypatch):
    import ntkdsl.verify as verify_module

    monkeypatch.setattr(verify_module, "compile_network", lambda arch: None)
    with pytest.raises(ArchitectureError, match="no hidden Dense or Conv layer"):
        verify("Conv(1, (3, 3), padding='SAME') > GlobalAvgPool", (16, 64))
