"""Mistakes with convolutional networks: ntkdsl's own errors, the place marked (a caret under
the layer that fixes what was wrong) and what is valid, never a NumPy traceback.

At compile time: a convolution or pooling after Flatten or a global pool, filters with
different numbers of spatial axes, a network that ends with spatial axes, an activation right
after Flatten. At evaluation: images of the wrong rank for the architecture (it fixes the
number of spatial axes, not the channels), a flat (n, d) array given to a convolutional
network, images given to a fully-connected one, x1 and x2 with different channels or spatial
shapes, a 'VALID' filter or window larger than its input, branches that end with different
spatial shapes, empty or non-finite images.
"""
from __future__ import annotations

import numpy as np
import pytest

import ntkdsl
from ntkdsl.errors import ArchitectureError, InputError, LayerValueError, ShapeError

GAP = "Conv(8, (3, 3), padding='SAME') > Relu > GlobalAvgPool > Dense(1)"
IMAGES = np.random.default_rng(0).standard_normal((3, 4, 4, 2))


def _caret_under(err: Exception, text: str) -> None:
    """The error's excerpt has carets under exactly ``text`` of the architecture."""
    lines = str(err).split("\n")
    row = next(i for i in range(1, len(lines)) if set(lines[i].strip()) == {"^"})
    start, width = lines[row].index("^"), lines[row].count("^")
    assert lines[row - 1][start:start + width] == text, str(err)


@pytest.mark.parametrize("arch, error, marked, says", [
    ("Conv(8, (3, 3)) > Flatten > Conv(8, (3, 3)) > Dense(1)", ArchitectureError,
     "Conv(8, (3, 3))", "follows Flatten, which leaves no spatial axes"),
    ("Conv(8, (3, 3)) > GlobalAvgPool > AvgPool((2, 2)) > Dense(1)", ArchitectureError,
     "AvgPool((2, 2))", "follows GlobalAvgPool"),
    ("Dense(8) > Relu > GlobalSumPool > Flatten > Dense(1)", ArchitectureError, "Flatten",
     "follows GlobalSumPool"),
    ("Conv(8, (3, 3)) > Relu > Conv(8, (3,)) > Flatten > Dense(1)", ArchitectureError,
     "Conv(8, (3,))", "has 1 spatial axis but Conv(8, (3, 3)) has 2"),
    ("Conv(8, (3, 3)) > Relu > SumPool((2, 2, 2)) > Flatten > Dense(1)", ArchitectureError,
     "SumPool((2, 2, 2))", "3 spatial axes"),
    ("Conv(8, (3, 3)) > Relu", ArchitectureError, "Conv(8, (3, 3)) > Relu",
     "ends with spatial axes"),
    ("Conv(8, (3, 3)) > Flatten > Relu > Dense(1)", ArchitectureError, "Relu",
     "not Gaussian"),
    ("Conv(8, (0, 3)) > Flatten > Dense(1)", LayerValueError, "(0, 3)", "sizes >= 1"),
    ("Conv(8, (3, 3), strides=(0, 1)) > Flatten > Dense(1)", LayerValueError,
     "strides=(0, 1)", "sizes >= 1"),
    ("Conv(8, (3, 3)) > AvgPool((2, 0)) > Flatten > Dense(1)", LayerValueError, "(2, 0)",
     "sizes >= 1"),
])
def test_compile_time_errors(arch, error, marked, says):
    with pytest.raises(error) as caught:
        ntkdsl.compile(arch)
    assert says in str(caught.value)
    _caret_under(caught.value, marked)


@pytest.mark.parametrize("x1, x2, says, marked", [
    (IMAGES[..., 0], None, "(3, 4, 4) (3-D) but this network, whose filters have 2 spatial "
     "axes, takes 4-D channels-last images (n, H, W, C)", "Conv(8, (3, 3), padding='SAME')"),
    (IMAGES.reshape(3, -1), None, "(3, 32) (2-D)", "Conv(8, (3, 3), padding='SAME')"),
    (IMAGES[:, :, :, :, None], None, "5-D", "Conv(8, (3, 3), padding='SAME')"),
    (IMAGES, IMAGES.reshape(3, -1), "x2 has shape (3, 32)", "Conv(8, (3, 3), padding='SAME')"),
    (IMAGES, IMAGES[..., :1], "x1 has 2 channels but x2 has 1", None),
    (IMAGES, IMAGES[:, :3], "x1 holds images of (4, 4) positions but x2 of (3, 4)", None),
    (np.zeros((0, 4, 4, 2)), None, "x1 is empty", "Conv(8, (3, 3), padding='SAME')"),
])
def test_images_of_the_wrong_shape(x1, x2, says, marked):
    with pytest.raises(ShapeError) as caught:
        ntkdsl.compile(GAP).ntk(x1, x2)
    assert says in str(caught.value)
    if marked is not None:
        _caret_under(caught.value, marked)


def test_non_finite_and_complex_images():
    bad = IMAGES.copy()
    bad[1, 2, 3, 1] = np.inf
    with pytest.raises(InputError, match=r"non-finite value inf at index \(1, 2, 3, 1\)"):
        ntkdsl.compile(GAP).nngp(bad)
    with pytest.raises(InputError, match="Complex data not supported"):
        ntkdsl.compile(GAP).nngp(IMAGES + 1j)


def test_images_given_to_a_fully_connected_network():
    with pytest.raises(ShapeError) as caught:
        ntkdsl.compile("Dense(8) > Relu > Dense(1)").ntk(IMAGES)
    message = str(caught.value)
    assert "(3, 4, 4, 2), but this network is fully connected" in message
    assert "x.reshape(len(x), -1)" in message


def test_a_network_without_filters_takes_any_number_of_spatial_axes_but_not_flat_arrays():
    net = ntkdsl.compile("Dense(8) > Relu > GlobalAvgPool > Dense(1)")
    assert net.ntk(IMAGES[:, 0]).shape == (3, 3)        # 1-D images
    assert net.ntk(IMAGES[..., None]).shape == (3, 3)   # 3-D images
    with pytest.raises(ShapeError, match="takes at least 3-D channels-last images"):
        net.ntk(IMAGES.reshape(3, -1))


def test_a_valid_filter_larger_than_its_input():
    arch = "Conv(8, (3, 3)) > Relu > Conv(8, (3, 3)) > Relu > Flatten > Dense(1)"
    net = ntkdsl.compile(arch)
    assert net.ntk(np.ones((2, 5, 5, 1))).shape == (2, 2)
    with pytest.raises(ShapeError) as caught:  # the second filter meets 2 x 2 positions
        net.ntk(np.ones((2, 4, 4, 1)))
    message = str(caught.value)
    assert "a window of 3 x 3 positions with padding 'VALID', larger than its input here, " \
           "2 x 2 (the inputs are 4 x 4)" in message
    assert "padding='SAME'" in message
    marked = message.split("\n")[2].index("^") - 4  # the excerpt is indented by 4
    assert marked == arch.index("Conv(8, (3, 3)) > Relu > Flatten")  # the second Conv
    _caret_under(caught.value, "Conv(8, (3, 3))")
    pool = "Conv(8, (2, 2), padding='SAME') > Relu > AvgPool((5, 5)) > Flatten > Dense(1)"
    with pytest.raises(ShapeError) as caught:
        ntkdsl.compile(pool).ntk(np.ones((2, 4, 4, 1)))
    _caret_under(caught.value, "AvgPool((5, 5))")
    with pytest.raises(ShapeError):
        ntkdsl.compile(pool).diagonal(np.ones((2, 4, 4, 1)))


def test_branches_that_end_with_different_spatial_shapes():
    arch = ("Conv(8, (3, 3)) > (Relu > Conv(8, (3, 3), strides=(2, 2)) + Conv(8, (1, 1))) > "
            "Relu > Flatten > Dense(1)")
    with pytest.raises(ShapeError) as caught:
        ntkdsl.compile(arch).ntk(np.ones((2, 7, 7, 1)))
    assert "different spatial shapes for inputs of 7 x 7: 2 x 2, 5 x 5" in str(caught.value)
    _caret_under(caught.value, "Relu > Conv(8, (3, 3), strides=(2, 2)) + Conv(8, (1, 1))")
    same = arch.replace("strides=(2, 2)", "padding='SAME'")
    assert ntkdsl.compile(same).ntk(np.ones((2, 7, 7, 1))).shape == (2, 2)


def test_out_arrays_are_checked_as_for_dense_networks():
    net = ntkdsl.compile(GAP)
    with pytest.raises(ShapeError, match="has shape"):
        net.ntk(IMAGES, out=np.empty((3, 2)))
    with pytest.raises(InputError, match="read-only"):
        out = np.empty((3, 3))
        out.flags.writeable = False
        net.ntk(IMAGES, out=out)


# ------------------------------------------------------------ every entry point, one list
# Issue 14's "Bad input" list through the kernels, the estimators, finite networks,
# ``verify`` and the command line: the same kind of error, the layer at fault marked, what
# is valid said. (Finite networks word a layer's misplacement their own way: ``says`` is a
# regular expression that both wordings match.)

CONV = "Conv(4, (3, 3), padding='SAME') > Relu > Flatten > Dense(1)"
DENSE = "Dense(8) > Relu > Dense(1)"
BAD_INPUTS = {
    "wrong rank": (CONV, (5, 1), ShapeError, "Conv(4, (3, 3), padding='SAME')",
                   r"takes 4-D channels-last images \(n, H, W, C\)"),
    "VALID filter larger than the input": (
        "Conv(4, (7, 7)) > Relu > Flatten > Dense(1)", (5, 5, 1), ShapeError,
        "Conv(4, (7, 7))", r"(?s)larger than its input.*padding='SAME'"),
    "stride 0": ("Conv(4, (3, 3), strides=(0, 1)) > Relu > Flatten > Dense(1)", (5, 5, 1),
                 LayerValueError, "strides=(0, 1)", "sizes >= 1"),
    "window 0": ("Conv(4, (3, 3), padding='SAME') > AvgPool((0, 2)) > Flatten > Dense(1)",
                 (5, 5, 1), LayerValueError, "(0, 2)", "sizes >= 1"),
    "conv after Flatten": (
        "Conv(4, (3, 3), padding='SAME') > Flatten > Conv(4, (3, 3)) > Flatten > Dense(1)",
        (5, 5, 1), ArchitectureError, "Conv(4, (3, 3))",
        "follows Flatten|Flatten or global pool before it"),
    "pool after a global pool": (
        "Conv(4, (3, 3), padding='SAME') > GlobalAvgPool > AvgPool((2, 2)) > Dense(1)",
        (5, 5, 1), ArchitectureError, "AvgPool((2, 2))",
        "follows GlobalAvgPool|Flatten or global pool before it"),
    "images to a fully-connected network": (DENSE, (5, 5, 1), ShapeError, None,
                                            r"(?s)fully connected.*x\.reshape\(len\(x\), -1\)"),
}


def _entry_point(name: str, arch: str, shape: tuple[int, ...]) -> None:
    from ntkdsl.estimators import NTKClassifier
    from ntkdsl.finite import empirical_ntk
    from ntkdsl.verify import verify

    x = np.random.default_rng(1).standard_normal((4, *shape))
    if name == "kernels":
        ntkdsl.compile(arch).nngp(x)
    elif name == "estimator":
        NTKClassifier(arch).fit(x, [0, 1, 0, 1])
    elif name == "finite":
        empirical_ntk(arch, x, width=4)
    else:
        verify(arch, (4, 8), input_shape=shape, samples=2, steps=2, n_train=4, n_test=2)


@pytest.mark.parametrize("entry", ["kernels", "estimator", "finite", "verify"])
@pytest.mark.parametrize("case", list(BAD_INPUTS))
def test_every_bad_input_through_every_entry_point(case, entry):
    arch, shape, error, marked, says = BAD_INPUTS[case]
    with pytest.raises(error, match=says) as caught:
        _entry_point(entry, arch, shape)
    if marked is not None:
        _caret_under(caught.value, marked)


@pytest.mark.parametrize("command", ["fit", "verify"])
@pytest.mark.parametrize("arch, marked", [
    ("Conv(4, (3,), padding='SAME') > Relu > Flatten > Dense(1)", "Conv(4, (3,), padding='SAME')"),
    ("Conv(4, (9, 9)) > Relu > Flatten > Dense(1)", "Conv(4, (9, 9))"),
    ("Conv(4, (3, 3)) > Flatten > Conv(4, (3, 3)) > Flatten > Dense(1)", "Conv(4, (3, 3))"),
])
def test_the_command_line_marks_the_layer(command, arch, marked, capsys):
    from ntkdsl.cli import main

    args = (["--dataset", "digits", "--times", "1"] if command == "fit" else
            ["--widths", "4,8", "--samples", "2", "--steps", "2", "--train", "4", "--test", "2",
             "--shape", "8,8,1"])
    assert main([command, arch, *args]) == 1
    err = capsys.readouterr().err
    assert "Traceback" not in err and f"ntkdsl {command}: error: line 1" in err
    excerpt = err[err.index("line 1"):]
    _caret_under(excerpt, marked)


def test_images_with_other_channels_or_features_than_fitted():
    from ntkdsl.estimators import NTKClassifier
    from ntkdsl.finite import empirical_ntk

    rng = np.random.default_rng(2)
    x, other = rng.standard_normal((4, 5, 5, 1)), rng.standard_normal((3, 5, 5, 2))
    with pytest.raises(ShapeError, match="x1 has 1 channels but x2 has 2"):
        ntkdsl.compile(CONV).nngp(x, other)
    with pytest.raises(ShapeError, match="same shape per example"):
        empirical_ntk(CONV, x, other, width=4)
    with pytest.raises(InputError, match=r"examples of shape \(5, 5, 2\), but the estimator was "
                                         r"fitted on examples of shape \(5, 5, 1\)"):
        NTKClassifier(CONV).fit(x, [0, 1, 0, 1]).predict(other)
    rows, fewer = rng.standard_normal((4, 25)), rng.standard_normal((3, 24))
    with pytest.raises(ShapeError, match="x1 has 25 features but x2 has 24"):
        ntkdsl.compile(DENSE).nngp(rows, fewer)
    with pytest.raises(InputError, match="X has 24 features, but NTKClassifier is expecting 25"):
        NTKClassifier(DENSE).fit(rows, [0, 1, 0, 1]).predict(fewer)


@pytest.mark.parametrize("arch, shape, error", [
    ("Conv(4, (3, 3)) > Relu > Conv(4, (4, 2)) > Flatten > Dense(1)", (5, 5, 2), ShapeError),
    ("Conv(4, (3, 3)) > AvgPool((5, 5)) > Flatten > Dense(1)", (6, 6, 1), ShapeError),
    ("Conv(4, (3, 3)) > Flatten > Conv(4, (2, 2)) > Flatten > Dense(1)", (5, 5, 1),
     ArchitectureError),
    ("Conv(4, (3, 3)) > GlobalAvgPool > AvgPool((2, 2)) > Dense(1)", (5, 5, 1),
     ArchitectureError),
])
def test_the_kernels_and_finite_networks_refuse_a_misplaced_or_oversized_window_alike(
        arch, shape, error):
    # One check each (ntkdsl.spatial), so the analytic kernels and a finite network of the
    # same architecture give the very same message, caret and hint.
    from ntkdsl.finite import FiniteNetwork
    with pytest.raises(error) as kernels:
        ntkdsl.compile(arch).ntk(np.ones((2, *shape)))
    with pytest.raises(error) as finite:
        FiniteNetwork(arch, shape)
    assert str(kernels.value) == str(finite.value)
    assert "VALID" in str(kernels.value) or "which leaves no spatial axes" in str(kernels.value)
