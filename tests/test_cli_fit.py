"""Tests of the ``ntkdsl fit`` command."""
from __future__ import annotations

import re

import numpy as np
import pytest
from sklearn.datasets import load_diabetes
from sklearn.model_selection import train_test_split
from sklearn.preprocessing import StandardScaler

import ntkdsl
from ntkdsl.cli import main
from ntkdsl.commands.fit import load_csv, parse_times
from ntkdsl.errors import InputError
from test_estimators import ReluKernel

ARCH = "(Dense(512, W_std=1.5, b_std=0.05) > Relu) * 2 > Dense(1, W_std=1.5, b_std=0.05)"


@pytest.fixture
def local_kernel(monkeypatch):
    """Stand in the test-local ReLU kernels for ntkdsl.compile (the same architecture as ARCH),
    so that the command's own logic is checked against independent numbers."""
    monkeypatch.setattr(ntkdsl, "compile", lambda arch: ReluKernel(2, 1.5, 0.05), raising=False)


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
    (["--data", "missing.csv"], "--data needs --target"),
    (["--data", "/nonexistent/file.csv", "--target", "y"], "cannot read"),
    (["--target", "y"], "--target and --task are for --data"),
    (["--times", "1,-5"], "--times must be >= 0"),
    (["--times", "soon"], "comma-separated numbers"),
    (["--test-size", "1.5"], "--test-size must be between 0 and 1"),
    (["--learning-rate", "-1"], "learning_rate must be"),
])
def test_bad_arguments_print_an_error_and_return_1(local_kernel, capsys, argv, message):
    assert main(["fit", ARCH, *argv]) == 1
    assert message in capsys.readouterr().err


def test_unknown_dataset_is_refused_by_the_parser(capsys):
    with pytest.raises(SystemExit):
        main(["fit", ARCH, "--dataset", "mnist"])
    assert "invalid choice: 'mnist'" in capsys.readouterr().err


def test_parse_times():
    np.testing.assert_array_equal(parse_times("100, 1,10,inf"), [1.0, 10.0, 100.0])
    with pytest.raises(InputError):
        parse_times("nan")
