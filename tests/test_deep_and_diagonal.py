"""Deep networks stay finite and agree with a plain layer-by-layer float64 recursion;
self-kernel diagonals agree with the exact (correlation-1) recursion to 1e-13."""
import numpy as np
import pytest

import ntkdsl

RNG = np.random.default_rng(7)
X = RNG.standard_normal((12, 6))
X[3] = 2.0 * X[1]            # collinear pair
X[5] = -X[2]                 # opposite pair
X[7] = X[0]                  # duplicate row


def relu_recursion(x, depth, w, b):
    """Textbook arc-cosine recursion (Cho & Saul / Jacot et al.), full matrices."""
    w2, b2 = w * w, b * b
    k = w2 * (x @ x.T) / x.shape[1] + b2
    t = k.copy()
    for _ in range(depth):
        d = np.sqrt(np.diag(k))
        c = np.clip(k / np.outer(d, d), -1, 1)
        th = np.arccos(c)
        kk = np.outer(d, d) * (np.sin(th) + (np.pi - th) * c) / (2 * np.pi)
        dot = (np.pi - th) / (2 * np.pi)
        k = w2 * kk + b2
        t = k + w2 * t * dot
    return kk, k, t


def erf_recursion(x, depth, w, b):
    w2, b2 = w * w, b * b
    k = w2 * (x @ x.T) / x.shape[1] + b2
    t = k.copy()
    for _ in range(depth):
        d = 1 + 2 * np.diag(k)
        norm = np.sqrt(np.outer(d, d))
        kk = 2 / np.pi * np.arcsin(2 * k / norm)
        dot = 4 / np.pi / np.sqrt(norm ** 2 - 4 * k ** 2)
        k = w2 * kk + b2
        t = k + w2 * t * dot
    return k, t


def test_fifty_relu_layers_finite_and_match_recursion():
    net = ntkdsl.compile("(Dense(512, W_std=1.4, b_std=0.1) > Relu) * 50 > Dense(1, W_std=1.4, b_std=0.1)")
    nngp, ntk = net.kernels(X)
    assert np.isfinite(nngp).all() and np.isfinite(ntk).all()
    _, k_ref, t_ref = relu_recursion(X, 50, 1.4, 0.1)
    # The plain recursion loses ~sqrt(eps) where correlations approach 1 (deep ReLU nets
    # drive all correlations there), so the comparison is to 1e-6.
    np.testing.assert_allclose(nngp, k_ref, rtol=1e-6)
    np.testing.assert_allclose(ntk, t_ref, rtol=1e-6)


def test_twenty_erf_layers_finite_and_match_recursion():
    net = ntkdsl.compile("(Dense(512, W_std=1.2, b_std=0.3) > Erf) * 20 > Dense(1, W_std=1.2, b_std=0.3)")
    nngp, ntk = net.kernels(X)
    assert np.isfinite(nngp).all() and np.isfinite(ntk).all()
    k_ref, t_ref = erf_recursion(X, 20, 1.2, 0.3)
    np.testing.assert_allclose(nngp, k_ref, rtol=1e-11)
    np.testing.assert_allclose(ntk, t_ref, rtol=1e-11)


def exact_relu_diagonal(q, depth, w, b, last_w, last_b):
    """Correlation 1: Relu halves the variance and its NTK factor is exactly 1/2."""
    k = w * w * q + b * b
    t = k
    for layer in range(depth):
        half = k / 2
        ww, bb = (w, b) if layer < depth - 1 else (last_w, last_b)
        k = ww * ww * half + bb * bb
        t = k + ww * ww * t / 2
    return k, t


@pytest.mark.parametrize("depth", [1, 5, 50])
def test_relu_diagonal_exact(depth):
    arch = f"(Dense(512, W_std=1.5, b_std=0.2) > Relu) * {depth} > Dense(1, W_std=0.9, b_std=0.3)"
    x = RNG.standard_normal((9, 512))
    q = np.einsum("ij,ij->i", x, x) / 512
    k_ref, t_ref = exact_relu_diagonal(q, depth, 1.5, 0.2, 0.9, 0.3)
    net = ntkdsl.compile(arch)
    nngp, ntk = net.kernels(x)
    np.testing.assert_allclose(np.diag(nngp), k_ref, rtol=1e-13, atol=0)
    np.testing.assert_allclose(np.diag(ntk), t_ref, rtol=1e-13, atol=0)
    # The same rows against a copy of themselves (x2 given): identical pairs are exact too.
    _, ntk12 = net.kernels(x, x[::-1].copy())
    np.testing.assert_allclose(np.diag(ntk12[:, ::-1]), t_ref, rtol=1e-13, atol=0)
    _, d_ntk = net.diagonal(x)
    np.testing.assert_allclose(d_ntk, t_ref, rtol=1e-13, atol=0)


def test_abrelu_family_diagonal_exact():
    for act, factor in [("LeakyRelu(0.1)", (0.01 + 1) / 2), ("Abs", 1.0),
                        ("ABRelu(-0.5, 2.0)", (0.25 + 4) / 2)]:
        net = ntkdsl.compile(f"Dense(64, b_std=0.1) > {act} > Dense(1)")
        q = np.einsum("ij,ij->i", X, X) / X.shape[1] + 0.01
        nngp, ntk = net.kernels(X)
        np.testing.assert_allclose(np.diag(nngp), factor * q, rtol=1e-14)
        np.testing.assert_allclose(np.diag(ntk), factor * q + factor * q, rtol=1e-14)


def test_duplicate_rows_and_opposite_rows():
    net = ntkdsl.compile("Dense(512) > Relu > Dense(1)")
    nngp, ntk = net.kernels(X)
    assert nngp[0, 7] == nngp[0, 0] and ntk[7, 0] == ntk[7, 7]
    # ReLU of opposite inputs is 0, up to the rounding of x·x' against x·x (a loose entry).
    assert abs(nngp[2, 5]) <= 1e-7 * nngp.max() and abs(ntk[2, 5]) <= 1e-7 * ntk.max()
    np.testing.assert_allclose(nngp, nngp.T, rtol=0, atol=0)


def test_zero_input_row_is_finite():
    x = X.copy()
    x[4] = 0.0
    for arch in ["Dense(8) > Relu > Dense(1)", "Dense(8) > LayerNorm > Relu > Dense(1)",
                 "Dense(8) > Sign > Dense(1)", "Dense(8) > RectifiedMonomial(2) > Dense(1)"]:
        nngp, ntk = ntkdsl.compile(arch).kernels(x)
        assert np.isfinite(nngp).all() and np.isfinite(ntk).all(), arch
