"""End-to-end tests of finite convolutional networks, verify, the estimators and ``ntkdsl
fit`` against the analytic convolutional kernels of ``ntkdsl.compile`` (issue 14).

Not collected by pytest under this name: they need the analytic conv kernels (the wt-conv
branch). After merging both branches, rename it to tests/test_conv_e2e.py and run
``python -m pytest tests/test_conv_e2e.py -q``.
"""
from __future__ import annotations

import numpy as np
import pytest
from conftest import assert_matches_reference, load_reference
from test_cli_verify import CONV, _CNNGPStub
from test_finite_conv import CONVERGENCE, ONE_LAYER, _converges, _reference, _width_errors

import ntkdsl
from ntkdsl.cli import main
from ntkdsl.estimators import NTKClassifier
from ntkdsl.finite import with_width
from ntkdsl.verify import METRICS, verify

CASES = load_reference("nt_cnn_kernels.json")["cases"]


@pytest.mark.parametrize("name", CONVERGENCE)
def test_finite_conv_networks_converge_to_the_compiled_kernels(name):
    index, widths, nngp_bound, ntk_bound = CONVERGENCE[name]
    arch, x, _ = _reference(index)
    n = len(CASES[index]["x1"])
    nngp, ntk = ntkdsl.compile(arch).kernels(x[:n], x)
    for kind, got in (("nngp", nngp), ("ntk", ntk)):  # the compiled kernels are the reference
        assert_matches_reference(got[:, :n], CASES[index + 1], kind, rtol=1e-9)
        assert_matches_reference(got[:, n:], CASES[index], kind, rtol=1e-9)
    compiled = {"nngp": (nngp[:, :n], nngp[:, n:]), "ntk": (ntk[:, :n], ntk[:, n:])}
    mc, emp = _width_errors(arch, x, lambda width: compiled, widths)
    assert _converges(widths, mc, nngp_bound) and _converges(widths, emp, ntk_bound)


def test_standard_parameterization_at_each_width_is_the_compiled_kernel():
    arch, x, ref = _reference(20)
    n = len(CASES[20]["x1"])

    def at_width(width):
        nngp, ntk = ntkdsl.compile(str(with_width(ntkdsl.parse(arch), width))).kernels(x[:n], x)
        expected = tuple(t + (width - 8) * 16 * k for t, k in zip(ref["ntk"], ref["nngp"]))
        np.testing.assert_allclose(np.concatenate([ntk[:, :n], ntk[:, n:]], axis=1),
                                   np.concatenate(expected, axis=1), rtol=1e-9)
        return {"nngp": (nngp[:, :n], nngp[:, n:]), "ntk": (ntk[:, :n], ntk[:, n:])}

    mc, emp = _width_errors(arch, x, at_width, ONE_LAYER)
    assert _converges(ONE_LAYER, mc, 0.02) and _converges(ONE_LAYER, emp, 0.03)


def test_verify_with_the_compiled_kernels_equals_the_stubbed_run(monkeypatch, capsys):
    kwargs = dict(samples=8, steps=50, n_train=8, n_test=4, input_shape=(6, 6, 2))
    real = verify(CONV, (16, 64, 256, 1024), **kwargs)
    import ntkdsl.verify as verify_module

    monkeypatch.setattr(verify_module, "compile_network", _CNNGPStub)
    stubbed = verify(CONV, (16, 64, 256, 1024), **kwargs)
    for got, want in zip(real.rows, stubbed.rows):
        for name, _, _ in METRICS:
            assert getattr(got, name) == pytest.approx(getattr(want, name), rel=1e-6)
    monkeypatch.undo()
    assert main(["verify", CONV, "--shape", "6,6,2", "--widths", "16,64,256"]) == 0
    assert "inputs of shape (6, 6, 2)" in capsys.readouterr().out


def test_conv_classifier_on_digits_images_and_rows():
    from sklearn.datasets import load_digits

    digits = load_digits()
    arch = "Conv(64, (3, 3), padding='SAME', W_std=1.4, b_std=0.1) > Relu > Flatten > Dense(1)"
    clf = NTKClassifier(arch, input_shape=(8, 8, 1), diag_reg=1e-4)
    clf.fit(digits.data[:1000] / 16, digits.target[:1000])
    by_rows = clf.predict(digits.data[1000:] / 16)
    by_images = clf.predict(digits.images[1000:, :, :, None] / 16)
    np.testing.assert_array_equal(by_rows, by_images)
    assert np.mean(by_rows == digits.target[1000:]) > 0.9


def test_fit_command_on_digits_with_a_conv_architecture(capsys):
    arch = "Conv(32, (3, 3), padding='SAME', W_std=1.4, b_std=0.1) > Relu > Flatten > Dense(1)"
    assert main(["fit", arch, "--dataset", "digits", "--times", "100", "--diag-reg",
                 "1e-4"]) == 0
    out = capsys.readouterr().out
    assert "64 features as 8x8x1 images" in out
    test_accuracy = float(out.strip().splitlines()[-1].split()[-1])
    assert test_accuracy > 0.9
