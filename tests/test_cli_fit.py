"""Tests of the ``ntkdsl fit`` command."""
from __future__ import annotations

import argparse
import re
from typing import ClassVar

import numpy as np
import pytest
from sklearn.datasets import load_diabetes
from sklearn.model_selection import train_test_split
from sklearn.preprocessing import StandardScaler
from test_estimators import ReluKernel

import ntkdsl
from ntkdsl.cli import main
from ntkdsl.commands.fit import load_csv, parse_times
from ntkdsl.errors import InputError

ARCH = "(Dense(512, W_std=1.5, b_std=0.05) > Relu) * 2 > Dense(1, W_std=1.5, b_std=0.05)"


@pytest.fixture
def local_kernel(monkeypatch):
    """Stand in the test-local ReLU kernels for the compiler the estimators call (the same
    architecture as ARCH), so that the command's own logic is checked against independent numbers."""
    monkeypatch.setattr(ntkdsl.network, "compile", lambda arch: ReluKernel(2, 1.5, 0.05))


def table_rows(output: str) -> dict[str, list[float]]:
    """The metrics table: time -> [train loss, train score, test loss, test score]."""
    rows = {}
    for line in output.splitlines():
        match = re.match(r"\s*(inf|[\d.e+]+)\s+([-\d.e+]+)\s+([-\d.e+]+)\s+([-\d.e+]+)\s+"
                         r"([-\d.e+]+)\s*$", line)
        if match:
            rows[match.group(1)] = [float(v) for v in match.groups()[1:]]
    return rows


def test_default_run_reports_kernel_and_metrics(local_kernel, capsys):
    assert main(["fit", ARCH, "--times", "1,100"]) == 0
    out = capsys.readouterr().out
    assert "breast_cancer: classification, 30 features, 426 train / 143 test" in out
    assert "NTK (all layers trained)" in out
    rows = table_rows(out)
    assert list(rows) == ["1", "100", "inf"]
    assert rows["inf"][1] == 1.0  # the ensemble interpolates its training set at t = ∞
    assert rows["inf"][0] < 1e-20
    assert rows["1"][0] > rows["100"][0] > rows["inf"][0]  # training loss decreases


def test_regression_numbers_match_an_independent_solve(local_kernel, capsys):
    assert main(["fit", ARCH, "--dataset", "diabetes", "--times", "10",
                 "--diag-reg", "0.1"]) == 0
    rows = table_rows(capsys.readouterr().out)
    X, y = load_diabetes(return_X_y=True)
    X_train, X_test, y_train, y_test = train_test_split(X, y, test_size=0.25, random_state=0)
    scaler = StandardScaler().fit(X_train)
    X_train, X_test = scaler.transform(X_train), scaler.transform(X_test)
    kern = ReluKernel(2, 1.5, 0.05)
    ntk = kern.ntk(X_train)
    ridge = 0.1 * np.mean(np.diag(ntk))
    centre, scale = y_train.mean(), y_train.std()
    pred = kern.ntk(X_test, X_train) @ np.linalg.solve(ntk + ridge * np.eye(len(ntk)),
                                                       (y_train - centre) / scale)
    r2 = 1 - np.sum((pred * scale + centre - y_test) ** 2) / np.sum((y_test - y_test.mean())**2)
    assert rows["inf"][3] == pytest.approx(r2, abs=1e-4)  # printed with 4 decimals


def test_csv_input_and_plot(local_kernel, tmp_path, capsys):
    rng = np.random.default_rng(0)
    X = rng.normal(size=(60, 3))
    label = np.where(X[:, 0] > 0, "yes", "no")
    path = tmp_path / "data.csv"
    lines = ["a,b,label,c"] + [f"{x[0]},{x[1]},{lab},{x[2]}" for x, lab in zip(X, label)]
    path.write_text("\n".join(lines) + "\n")
    plot = tmp_path / "curves.png"
    assert main(["fit", ARCH, "--data", str(path), "--target", "label",
                 "--plot", str(plot)]) == 0
    out = capsys.readouterr().out
    assert "data.csv: classification, 3 features, 45 train / 15 test samples, 2 classes" in out
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_end_to_end_with_compiled_architecture(capsys):
    assert main(["fit", ARCH, "--dataset", "wine", "--times", "10"]) == 0
    out = capsys.readouterr().out
    assert "wine: classification" in out
    assert "NTK of (Dense(512, W_std=1.5, b_std=0.05) > Relu) * 2" in out  # the derivation
    assert table_rows(out)["inf"][3] > 0.8


# ----------------------------------------------------------------------------- bad input

def write(tmp_path, text):
    path = tmp_path / "bad.csv"
    path.write_text(text)
    return path


@pytest.mark.parametrize("text, target, message", [
    ("a,b,y\n1,2,3\n4,5,6\n", "z", "no column named 'z'; the columns are a, b, y"),
    ("a,b,y\n1,x,3\n4,5,6\n", "y", r"line 2, column 'b': 'x' is not a number"),
    ("a,b,y\n1,,3\n4,5,6\n", "y", "is not a number"),
    ("a,b,y\n1,2,3\n4,5\n", "y", "line 3: 2 fields"),
    ("a,b,y\n1,2,\n4,5,6\n", "y", "empty cells"),
    ("a,y\n", "y", "at least 2 data rows"),
    ("y\n1\n2\n", "y", "no feature columns"),
])
def test_bad_csv_files_raise_clear_errors(tmp_path, text, target, message):
    with pytest.raises(InputError, match=message):
        load_csv(write(tmp_path, text), target)


def test_csv_task_detection(tmp_path):
    path = write(tmp_path, "a,y\n0.5,1\n0.1,0\n0.3,1\n")
    assert load_csv(path, "y").task == "classification"
    assert load_csv(path, "y", "regression").task == "regression"
    path = write(tmp_path, "a,y\n0.5,1.5\n0.1,0\n0.3,1\n")
    assert load_csv(path, "y").task == "regression"
    with pytest.raises(InputError, match="--task classification"):
        load_csv(write(tmp_path, "a,y\n0.5,u\n0.1,v\n"), "y", "regression")


@pytest.mark.parametrize("argv, message", [
    (["--data", "/nonexistent/file.csv", "--target", "y"], "cannot read"),
    (["--plot", "/nonexistent/dir/curves.png"], "the directory /nonexistent/dir does not exist"),
])
def test_file_errors_print_an_error_and_return_1(local_kernel, capsys, argv, message):
    assert main(["fit", ARCH, *argv]) == 1
    assert message in capsys.readouterr().err


@pytest.mark.parametrize("argv, message", [
    (["--data", "missing.csv"], "--data needs --target"),
    (["--target", "y"], "--target and --task are for --data"),
    (["--task", "regression"], "--target and --task are for --data"),
    (["--times", "1,abc"], "argument --times: 'abc' is not a number"),
    (["--times", "1,-5"], "times must be >= 0, got '-5'"),
    (["--times", "1,nan"], "times must be >= 0, got 'nan'"),
    (["--times", "soon"], "'soon' is not a number"),
    (["--times", ""], "give comma-separated values"),
    (["--times", "1,,10"], "has an empty entry"),
    (["--test-size", "1.5"], "argument --test-size: must be a finite number > 0 and < 1"),
    (["--test-size", "0"], "argument --test-size: must be a finite number > 0 and < 1"),
    (["--learning-rate", "-1"], "argument --learning-rate: must be a finite number > 0"),
    (["--learning-rate", "nan"], "argument --learning-rate: must be a finite number > 0"),
    (["--diag-reg", "-0.1"], "argument --diag-reg: must be a finite number >= 0"),
    (["--diag-reg", "inf"], "argument --diag-reg: must be a finite number >= 0"),
    (["--seed", "-1"], "argument --seed: must be a whole number from 0 to 4294967295"),
    (["--seed", "1.5"], "argument --seed: '1.5' is not a whole number"),
    (["--plot", "curves.xyz"], "does not end in an image format"),
    (["--dataset", "mnist"], "invalid choice: 'mnist'"),
    (["--dataset", "wine", "--data", "x.csv"], "not allowed with argument --dataset"),
])
def test_usage_errors_exit_2_with_one_line_on_stderr(local_kernel, capsys, argv, message):
    with pytest.raises(SystemExit) as info:
        main(["fit", ARCH, *argv])
    assert info.value.code == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    lines = captured.err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("ntkdsl fit: error: ")
    assert message in lines[0] and lines[0].endswith("(usage: ntkdsl fit --help)")


def test_parse_times():
    np.testing.assert_array_equal(parse_times("100, 1,10,inf"), [1.0, 10.0, 100.0])
    np.testing.assert_array_equal(parse_times("inf"), [])
    for bad in ("nan", "-1", "1,x", ""):
        with pytest.raises(argparse.ArgumentTypeError):
            parse_times(bad)


# ----------------------------------------------------------------------------- the plot

@pytest.fixture
def captured_figure(monkeypatch):
    """The figure `fit --plot` draws, kept for inspection after it is saved."""
    from ntkdsl.commands import fit

    kept = []

    def keep(*args):
        kept.append(fit_figure(*args))
        return kept[-1]

    fit_figure = fit.figure
    monkeypatch.setattr(fit, "figure", keep)
    return kept


def test_plot_has_a_log_loss_axis_down_to_a_floor_and_readable_text(local_kernel, capsys,
                                                                    tmp_path, captured_figure):
    plot = tmp_path / "curves.png"
    assert main(["fit", ARCH, "--times", "0,1,100,1000", "--plot", str(plot)]) == 0
    rows = table_rows(capsys.readouterr().out)
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    (fig,) = captured_figure
    loss, score = fig.axes
    assert loss.get_yscale() == "log" and loss.get_xscale() == "log"
    assert score.get_yscale() == "linear" and score.get_xscale() == "log"
    curves = {line.get_label(): line for line in loss.get_lines()}
    # The plotted losses are the table's at the same times (one eigendecomposition).
    for label, column in (("train", 0), ("test", 2)):
        times, values = curves[label].get_xdata(), curves[label].get_ydata()
        for t in ("1", "100", "1000"):
            assert values[np.argmin(abs(times - float(t)))] == pytest.approx(rows[t][column],
                                                                             rel=1e-3)
    # The t = inf train loss (~1e-31, an interpolating ensemble) sits at a floor at most
    # eight decades below the largest loss, inside the axis, and its legend entry says so.
    largest = max(max(line.get_ydata()) for line in curves.values())
    inf_line = next(line for label, line in curves.items() if label.startswith("train, t = inf"))
    floor = inf_line.get_ydata()[0]
    assert rows["inf"][0] < floor and "at the floor" in inf_line.get_label()
    assert floor >= largest * 1e-8 * (1 - 1e-12)
    assert floor <= max(largest * 1e-8, rows["1000"][0] / 10) * (1 + 1e-12)
    bottom, top = loss.get_ylim()
    assert 0 < bottom <= floor and top >= largest
    for line in curves.values():
        assert np.all(np.isfinite(line.get_ydata())) and np.all(line.get_ydata() >= floor)
    # Readable at a glance: large fonts, grids, a title naming the architecture.
    fig.canvas.draw()
    assert fig.get_suptitle().startswith("breast_cancer: NTK ensemble of") and \
        fig._suptitle.get_fontsize() >= 14
    for axis in (loss, score):
        assert axis.xaxis.label.get_fontsize() >= 13 and axis.yaxis.label.get_fontsize() >= 13
        assert all(t.get_fontsize() >= 12 for t in axis.get_xticklabels())
        assert any(g.get_visible() for g in axis.get_xgridlines())
        assert any(g.get_visible() for g in axis.get_ygridlines())


# ----------------------------------------------------------------------------- images

CONV = "Conv(16, (3, 3), padding='SAME', W_std=1.4) > Relu > Flatten > Dense(1)"


class ImagesSeenByTheKernel:
    """Stands in for a compiled convolutional network: records the shapes of the inputs,
    and gives the test-local ReLU kernels of the flattened images — so that the numbers
    must equal those of the fully-connected ARCH on the rows."""

    shapes: ClassVar[list] = []  # every instance's calls: the command compiles once

    def __init__(self, arch):
        self.relu = ReluKernel(2, 1.5, 0.05)

    def _flat(self, x):
        self.shapes.append(x.shape[1:])
        return x.reshape(len(x), -1)

    def nngp(self, x1, x2=None):
        return self.relu.nngp(self._flat(x1), None if x2 is None else self._flat(x2))

    def ntk(self, x1, x2=None):
        return self.relu.ntk(self._flat(x1), None if x2 is None else self._flat(x2))


def test_digits_go_to_a_convolutional_architecture_as_8x8_images(monkeypatch, capsys,
                                                                 local_kernel):
    assert main(["fit", ARCH, "--dataset", "digits", "--times", "10,1000"]) == 0
    dense = table_rows(capsys.readouterr().out)
    monkeypatch.setattr(ntkdsl.network, "compile", ImagesSeenByTheKernel)
    ImagesSeenByTheKernel.shapes = []
    assert main(["fit", CONV, "--dataset", "digits", "--times", "10,1000"]) == 0
    out = capsys.readouterr().out
    assert "digits: classification, 64 features as 8x8x1 images, 1347 train / 450 test" in out
    assert set(ImagesSeenByTheKernel.shapes) == {(8, 8, 1)}
    rows = table_rows(out)
    assert list(rows) == list(dense) == ["10", "1000", "inf"]
    for time in rows:
        np.testing.assert_allclose(rows[time], dense[time], rtol=1e-9, atol=1e-12)
    # Any dataset with --shape: wine's 13 features as 13 positions of one channel.
    ImagesSeenByTheKernel.shapes = []
    conv_1d = "Conv(8, (3,), padding='SAME') > Relu > GlobalAvgPool > Dense(1)"
    assert main(["fit", conv_1d, "--dataset", "wine", "--shape", "13,1", "--times", "1"]) == 0
    assert "13 features as 13x1 images" in capsys.readouterr().out
    assert set(ImagesSeenByTheKernel.shapes) == {(13, 1)}


@pytest.mark.parametrize("argv, message", [
    ([CONV, "--dataset", "wine"], "wine has no known image shape"),
    ([CONV, "--dataset", "digits", "--shape", "7,7,1"],
     "--shape 7,7,1 makes each row a 7x7x1 image of 49 values, but digits has 64 features "
     "per row\ngive --shape H,W,C (channels last) with H*W*C = 64, e.g. 8,8,1"),
    ([CONV, "--dataset", "digits", "--shape", "64,1"],
     "--shape 64,1 makes each row a 64x1 image, with 1 spatial axis, but the filters and "
     "windows of this architecture have 2 spatial axes"),
    (["Conv(8, (3,)) > Relu > Flatten > Dense(1)", "--dataset", "digits"],
     "the digits rows are 8x8x1 images (the dataset's own shape), with 2 spatial axes, but "
     "the filters and windows of this architecture have 1 spatial axis (Conv(8, (3,)))\n"
     "    Conv(8, (3,)) > Relu > Flatten > Dense(1)\n    ^^^^^^^^^^^^^\n"
     "give --shape L,C (channels last, product 64), e.g. 64,1, or filters with 2 spatial axes"),
    ([ARCH, "--dataset", "digits", "--shape", "8,8,1"], "--shape 8,8,1 is for convolutional "
                                                        "architectures"),
])
def test_image_shapes_that_do_not_fit_are_errors(local_kernel, capsys, argv, message):
    assert main(["fit", *argv]) == 1
    err = capsys.readouterr().err
    assert message in err
    assert "input_shape" not in err  # what the user gave: --shape or the dataset's images


def test_a_bad_shape_option_is_a_usage_error(capsys):
    with pytest.raises(SystemExit) as info:
        main(["fit", CONV, "--shape", "8,x,1"])
    assert info.value.code == 2
    assert "argument --shape: 'x' is not a whole number" in capsys.readouterr().err


# ---------------------------------------------------------------- --optimize (issue 15)

TEMPLATE = "(Dense(512, W_std={w}, b_std={b}) > Relu) * 2 > Dense(1, W_std={w})"
OPTIMIZE = ["--dataset", "diabetes", "--kernel", "nngp", "--set", "w=1,b=0.5",
            "--diag-reg", "0.1", "--optimize", "w=0.1:10,b=0.001:10,diag_reg=1e-4:10",
            "--times", "10"]


def test_optimize_prints_the_fitted_numbers_evidence_and_test_metrics(capsys):
    assert main(["fit", TEMPLATE, *OPTIMIZE]) == 0
    out = capsys.readouterr().out
    fitted = re.search(r"fitted\s+w = (\S+), b = (\S+), diag_reg = (\S+): log marginal "
                       r"likelihood (\S+) \(from w = 1, b = 0.5, diag_reg = 0.1\)", out)
    assert fitted, out
    w, b, diag_reg, evidence = map(float, fitted.groups())
    arch = re.search(r"architecture\s+(.*)", out).group(1)
    # An independent solve with the printed architecture: its evidence and test R².
    X, y = load_diabetes(return_X_y=True)
    X_train, X_test, y_train, y_test = train_test_split(X, y, test_size=0.25, random_state=0)
    scaler = StandardScaler().fit(X_train)
    X_train, X_test = scaler.transform(X_train), scaler.transform(X_test)
    centre, scale = y_train.mean(), y_train.std()
    y_train, y_test = (y_train - centre) / scale, (y_test - centre) / scale
    net = ntkdsl.compile(arch)
    w_text, b_text = re.search(r"W_std=([^,)]+), b_std=([^,)]+)", arch).groups()
    assert arch == TEMPLATE.format(w=w_text, b=b_text)  # the template, filled in
    assert (float(w_text), float(b_text)) == pytest.approx((w, b), rel=1e-5)
    train = net.nngp(X_train)
    matrix = train + diag_reg * np.trace(train) / len(train) * np.eye(len(train))
    _, log_det = np.linalg.slogdet(matrix)
    expected = (-0.5 * y_train @ np.linalg.solve(matrix, y_train) - 0.5 * log_det
                - 0.5 * len(train) * np.log(2 * np.pi))
    assert evidence == pytest.approx(expected, rel=1e-5)
    start = ntkdsl.compile(TEMPLATE.format(w=1, b=0.5)).nngp(X_train)
    start = start + 0.1 * np.trace(start) / len(start) * np.eye(len(start))
    _, start_log_det = np.linalg.slogdet(start)
    assert expected > (-0.5 * y_train @ np.linalg.solve(start, y_train) - 0.5 * start_log_det
                       - 0.5 * len(train) * np.log(2 * np.pi))
    prediction = net.nngp(X_test, X_train) @ np.linalg.solve(matrix, y_train)
    r2 = 1 - np.sum((prediction - y_test) ** 2) / np.sum((y_test - y_test.mean()) ** 2)
    assert table_rows(out)["inf"][3] == pytest.approx(r2, abs=1e-4)


@pytest.mark.parametrize("argv, message", [
    (["--optimize", "w=0:10"], "argument --optimize: w: must be a finite number > 0 (the "
                               "search is in log space), got '0'"),
    (["--optimize", "w=2:1"], "LOW is above HIGH"),
    (["--optimize", "w"], "'w' in 'w' is not name=value"),
    (["--optimize", "w=1"], "'1' is not LOW:HIGH"),
    (["--optimize", "w=1:2,w=1:3"], "w is given twice"),
    (["--set", "w=abc"], "argument --set: w: 'abc' is not a number"),
    (["--restarts", "-1"], "argument --restarts: must be a whole number from 0 to 1000"),
])
def test_optimize_usage_errors_exit_2(capsys, argv, message):
    with pytest.raises(SystemExit) as info:
        main(["fit", TEMPLATE, *argv])
    assert info.value.code == 2
    assert message in capsys.readouterr().err


@pytest.mark.parametrize("arch, argv, message", [
    (ARCH, ["--set", "w=1"], "--set w: the architecture has no {name} placeholders"),
    (TEMPLATE, ["--set", "w=1"], "placeholders {b} need values"),
    (TEMPLATE, ["--set", "w=1,b=1,v=2"], "--set v: not placeholders of the architecture"),
    (TEMPLATE, ["--set", "w=20,b=1", "--optimize", "w=0.1:10"],
     "w = 20 is outside its bounds (0.1, 10.0)"),
    ("(Dense(64, W_std={w}) > Relu) * {L} > Dense(1)", ["--set", "w=1,L=2", "--optimize",
                                                          "L=1:4"], "{L} = 2 fills an integer"),
    (TEMPLATE, ["--set", "w=1,b=1", "--optimize", "v=1:4"], "'v', which is not a placeholder"),
])
def test_optimize_input_errors_exit_1(capsys, arch, argv, message):
    assert main(["fit", arch, "--dataset", "diabetes", *argv]) == 1
    assert message in capsys.readouterr().err
