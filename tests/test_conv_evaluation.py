"""Evaluating convolutional kernels: tiles against one whole-array pass, threads, ``out``
arrays and memmaps, float32, exact symmetry and exact identical images, the memory check
before any work, and the side values (what depends on one image alone) computed once per
image."""
from __future__ import annotations

import numpy as np
import pytest

import ntkdsl
from ntkdsl.evaluation import spatial
from ntkdsl.runtime import driver

ARCHS = [
    "Conv(4, (3, 3), padding='SAME', W_std=1.4, b_std=0.1) > Relu > Conv(4, (3, 3)) > Erf > "
    "Flatten > Dense(1)",
    "(Conv(4, (3, 3), padding='SAME', W_std=1.4, b_std=0.1) > Relu) * 2 > AvgPool((2, 2)) > "
    "GlobalAvgPool > Dense(1)",
]


def _images(n: int, seed: int = 0, shape=(5, 5, 2)) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((n, *shape))


def _whole(net, x1, x2=None):
    """The kernels from one pass over whole arrays: the runtime's standalone driver."""
    c = net.compiled
    return driver.evaluate_image_kernels(c.spatial.side, c.pair, c.diagonal, c.spatial.pairs,
                                         c.spatial.plan.axes, x1, x2)


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("threads", [1, 2])
def test_tiles_and_threads_give_the_whole_arrays_numbers(arch, threads, monkeypatch):
    net = ntkdsl.compile(arch)
    x1, x2 = _images(13, 1), _images(6, 2)
    x2[3] = x1[7]
    monkeypatch.setattr(spatial, "SIDE_VALUES", 200)  # several chunks of side values
    for a, b in ((x1, x2), (x1, None)):
        whole = _whole(net, a, b)
        tiled = net.kernels(a, b, threads=threads)
        for t, w in zip(tiled, whole):
            np.testing.assert_allclose(t, w, rtol=1e-13, atol=0)


def test_small_tiles(monkeypatch):
    """A budget that makes every tile one pair still gives the same numbers."""
    net = ntkdsl.compile(ARCHS[1])
    x = _images(5, 3)
    want = net.kernels(x)
    monkeypatch.setattr(spatial, "_tile_size", lambda *a: (1, 1))
    got = net.kernels(x)
    for g, w in zip(got, want):
        np.testing.assert_allclose(g, w, rtol=1e-14, atol=0)



def test_strip_tiles_set_the_ufunc_buffer_to_their_run_and_keep_the_numbers(monkeypatch):
    """Strips (one image x against many x'): the pair function runs with NumPy's buffer no
    longer than an array's run per first position (the second positions times the
    columns), and its numbers are bit for bit those with the default buffer, and the whole
    arrays' (the standalone driver, default buffer)."""
    net = ntkdsl.compile(ARCHS[1])
    x1, x2 = _images(2, 4), _images(150, 5)  # 625 position pairs: 104 columns per strip
    sizes = []
    real = spatial._ufunc_buffer

    def spy(*args):
        sizes.append(real(*args))
        return sizes[-1]

    monkeypatch.setattr(spatial, "_ufunc_buffer", spy)
    got = net.kernels(x1, x2, threads=1)
    assert 25 * 104 - 25 * 104 % 16 in sizes  # strips of 104 columns, 25 second positions
    assert np.getbufsize() == 8192  # the setting ends with the tile
    monkeypatch.setattr(spatial, "_ufunc_buffer", lambda *args: None)
    default = net.kernels(x1, x2, threads=1)
    whole = _whole(net, x1, x2)
    for g, d, w in zip(got, default, whole):
        assert np.array_equal(g, d)
        np.testing.assert_allclose(g, w, rtol=1e-13, atol=0)

@pytest.mark.parametrize("arch", ARCHS)
def test_self_kernels_are_exactly_symmetric_with_exact_identical_entries(arch):
    net = ntkdsl.compile(arch)
    x = _images(11, 4)
    x[9] = x[2]
    nngp, ntk = net.kernels(x)
    np.testing.assert_array_equal(nngp, nngp.T)
    np.testing.assert_array_equal(ntk, ntk.T)
    exact = net.diagonal(x)
    for kernel, diagonal in zip((nngp, ntk), exact):
        np.testing.assert_array_equal(np.diag(kernel), diagonal)
        assert kernel[2, 9] == kernel[9, 2] == diagonal[2]
    # the cross kernel of x with a copy of itself has the same exact entries
    cross = net.kernels(x, x.copy())
    for kernel, diagonal in zip(cross, exact):
        np.testing.assert_array_equal(np.diag(kernel), diagonal)
        np.testing.assert_allclose(kernel, kernel.T, rtol=1e-13)


def test_out_arrays_and_memmaps(tmp_path):
    net = ntkdsl.compile(ARCHS[1])
    x1, x2 = _images(7, 5), _images(4, 6)
    want = net.kernels(x1, x2)
    out = np.full((7, 4), np.nan)
    assert net.nngp(x1, x2, out=out) is out
    np.testing.assert_array_equal(out, want[0])
    mapped = np.lib.format.open_memmap(tmp_path / "ntk.npy", mode="w+", dtype=np.float64,
                                       shape=(7, 7))
    net.ntk(x1, out=mapped)
    mapped.flush()
    np.testing.assert_array_equal(np.load(tmp_path / "ntk.npy"), net.ntk(x1))
    nngp_out, ntk_out = np.empty((7, 4)), np.empty((7, 4))
    got = net.kernels(x1, x2, out=(nngp_out, ntk_out))
    assert got[0] is nngp_out and got[1] is ntk_out
    np.testing.assert_array_equal(ntk_out, want[1])


def test_float32():
    net = ntkdsl.compile(ARCHS[0])
    x1, x2 = _images(6, 7), _images(5, 8)
    want = net.kernels(x1, x2)
    got = net.kernels(x1, x2, dtype=np.float32)
    for g, w in zip(got, want):
        assert g.dtype == np.float32
        assert np.abs(g - w).max() <= 1e-5 * np.abs(w).max()


def test_a_kernel_that_cannot_fit_is_refused_before_any_work(monkeypatch):
    import ntkdsl.evaluation.memory as memory
    net = ntkdsl.compile(ARCHS[1])
    tiles = []
    monkeypatch.setattr(spatial._Tiles, "run", lambda self, tile: tiles.append(tile))
    monkeypatch.setattr(memory, "available_memory", lambda: 100_000)
    with pytest.raises(ntkdsl.errors.InputError, match=r"needs .* of memory, but only 0\.1 MB"):
        net.ntk(_images(40, 9, shape=(8, 8, 1)))
    assert not tiles


def test_side_values_are_computed_once_per_image(monkeypatch):
    net = ntkdsl.compile(ARCHS[0])
    x1, x2 = _images(9, 10), _images(4, 11)
    seen = []
    original = spatial.side_values

    def counting(compiled, x, dtype):
        seen.append(len(x))
        return original(compiled, x, dtype)

    monkeypatch.setattr(spatial, "side_values", counting)
    net.kernels(x1, x2)
    assert sorted(seen) == [1, 4, 9]  # a one-image probe for the memory check, then each set
    seen.clear()
    net.kernels(x1)
    assert sorted(seen) == [1, 9]


def test_the_standalone_module_gives_the_library_numbers(tmp_path):
    import importlib.util
    for number, arch in enumerate(ARCHS):
        path = tmp_path / f"conv_{number}.py"
        path.write_text(ntkdsl.codegen(arch), encoding="ascii")
        spec = importlib.util.spec_from_file_location(f"conv_{number}", path)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        x1, x2 = _images(6, 12), _images(3, 13)
        for a, b in ((x1, x2), (x1, None)):
            for got, want in zip(module.kernels(a, b), ntkdsl.compile(arch).kernels(a, b)):
                np.testing.assert_allclose(got, want, rtol=1e-13, atol=0)
        with pytest.raises(ValueError, match="4-D channels-last images"):
            module.ntk(x1.reshape(6, -1))
