"""Convolutional kernels against an independent computation (tests/conv_recursion.py: the plain
recursion of DESIGN §2 per pair of images, every covariance between every two positions,
explicit loops over each window) on tiny images, for what the reference file does not hold:
strided and even filters with 'SAME' padding, 'CIRCULAR' with strides, pooling with 'SAME'
and 'CIRCULAR' padding and strides, LayerNorm in conv stacks (both layouts), Dense on spatial
inputs, the numerical route (Tanh), Sign (variances exactly 1 at every position), W_std=0,
a constant after exact zeros (``Dense(4, W_std=0) > Exp``: ones on the grid of the state's
shape, so the padding of the next 'SAME' conv falls where it should), residual branches
around pooling, the standard parameterisation after a global pool, repeats.

Each case has an image of x2 identical to one of x1 (and the self-kernel its diagonal): the
recursion keeps those pairs' covariances bit for bit equal to the image's own, so its values
there are exact (correlation exactly 1), as ntkdsl's must be.
"""
from __future__ import annotations

import conv_recursion
import numpy as np
import pytest

import ntkdsl
from ntkdsl.program import POSITION_PAIRS, SAME_POSITIONS

CASES = [
    # strided 'SAME' (uneven padding along the strided axis), the cheap path
    ("Conv(4, (3, 3), strides=(2, 1), padding='SAME', W_std=1.3, b_std=0.2) > Relu > Flatten "
     "> Dense(1)", (5, 4, 2)),
    # an even filter with 'SAME': the smaller half of the padding first
    ("Conv(4, (2, 2), padding='SAME', W_std=1.2) > Erf > Flatten > Dense(1, W_std=1.1)", (4, 3, 2)),
    # 1-D, 'CIRCULAR' with a stride, global average pooling
    ("Conv(4, (3,), strides=(2,), padding='CIRCULAR', W_std=1.4, b_std=0.1) > Relu > "
     "GlobalAvgPool > Dense(1)", (7, 2)),
    # pooling with 'SAME' padding and strides, then flattening
    ("Conv(4, (2, 2), padding='CIRCULAR') > Relu > AvgPool((2, 2), strides=(2, 2), "
     "padding='SAME') > Flatten > Dense(1)", (3, 5, 1)),
    # circular sum pooling with strides, a VALID conv after it, global sum pooling, a bias
    ("Conv(4, (3, 3), padding='SAME', b_std=0.1) > Relu > SumPool((3, 3), strides=(2, 2), "
     "padding='CIRCULAR') > Conv(4, (2, 2)) > Relu > GlobalSumPool > Dense(1, b_std=0.1)",
     (4, 4, 1)),
    # LayerNorm over channels at each position, same positions
    ("Conv(4, (3, 3), padding='SAME') > LayerNorm > Relu > Conv(4, (3, 3), padding='SAME') "
     "> LayerNorm > Relu > Flatten > Dense(1)", (3, 3, 2)),
    # LayerNorm on position pairs
    ("Conv(4, (3, 3), padding='SAME', W_std=1.2) > LayerNorm > Relu > AvgPool((2, 2)) > "
     "GlobalAvgPool > Dense(1)", (3, 3, 2)),
    # Dense on spatial inputs (a 1x1 convolution) and the numerical route
    ("Dense(4, W_std=1.5, b_std=0.1) > Relu > Conv(4, (3,), padding='SAME') > Tanh > "
     "GlobalAvgPool > Dense(1)", (4, 2)),
    # residual branches: the last pooling layer in one branch, same positions in the other
    ("Conv(4, (3, 3), padding='SAME') > (Relu > AvgPool((3, 3), padding='SAME') > "
     "Conv(4, (3, 3), padding='SAME') + Conv(4, (1, 1))) > Relu > Flatten > Dense(1)", (3, 3, 1)),
    # the standard parameterisation after a global pool (its width is the channels)
    ("Conv(4, (3, 3), padding='SAME', W_std=1.3, b_std=0.1, parameterization='standard') > Relu "
     "> GlobalAvgPool > Dense(8, b_std=0.2, parameterization='standard') > Relu > "
     "Dense(1, parameterization='standard')", (3, 3, 2)),
    # Sign: variances exactly 1 at every position (a constant on the grid), both layouts
    ("Conv(4, (3, 3), padding='SAME') > Sign > Conv(4, (3, 3), padding='SAME') > Relu > "
     "AvgPool((2, 2)) > Flatten > Dense(1)", (3, 3, 2)),
    # W_std = 0: a branch of the bias alone, the same at every position
    ("(Conv(4, (3, 3), padding='SAME') + Conv(4, (3, 3), padding='SAME', W_std=0, b_std=1)) "
     "> Relu > Conv(4, (3, 3), padding='SAME') > Relu > GlobalAvgPool > Dense(1)", (3, 3, 1)),
    # repeats
    ("(Conv(4, (3, 3), padding='SAME', W_std=1.4, b_std=0.1) > Relu) * 3 > GlobalAvgPool > "
     "Dense(1)", (3, 3, 1)),
    # exact zeros, then a constant (Exp(0) = 1) on the grid: position pairs, then same positions
    ("Conv(4, (3, 3), padding='SAME', W_std=1.3, b_std=0.2) > Relu > Dense(4, W_std=0) > Exp > "
     "Conv(4, (3, 3), padding='SAME', W_std=1.1, b_std=0.1) > Relu > GlobalAvgPool > Dense(1)",
     (4, 3, 2)),
    ("Conv(4, (3,), padding='SAME') > Relu > Dense(4, W_std=0) > Cos > Conv(4, (3,), "
     "padding='SAME', W_std=1.2) > Relu > Flatten > Dense(1)", (5, 2)),
    # ... in a branch beside one that depends on the images
    ("Conv(4, (3, 3), padding='SAME', W_std=1.3, b_std=0.2) > Relu > (Dense(4, W_std=0) > Exp + "
     "Conv(4, (3, 3), padding='SAME', W_std=0.8)) > Conv(4, (3, 3), padding='SAME', W_std=1.1) "
     "> Relu > AvgPool((2, 2)) > Flatten > Dense(1)", (3, 3, 1)),
]


def _images(shape: tuple[int, ...], seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    x1 = rng.standard_normal((3, *shape))
    x2 = rng.standard_normal((2, *shape))
    x2[1] = x1[0]  # an identical pair
    return x1, x2


@pytest.mark.parametrize("arch, shape", CASES, ids=[c[0] for c in CASES])
def test_matches_the_plain_recursion(arch, shape):
    x1, x2 = _images(shape, len(arch))
    net = ntkdsl.compile(arch)
    tolerance = 1e-9 if "Tanh" in arch else 1e-12  # the numerical route's bound
    for a, b in ((x1, x2), (x1, None)):
        want = conv_recursion.kernels(arch, a, b)
        got = net.kernels(a, b)
        for g, w in zip(got, want):
            np.testing.assert_allclose(g, w, rtol=tolerance, atol=1e-300)
    diagonal = net.diagonal(x1)
    for d, w in zip(diagonal, conv_recursion.kernels(arch, x1)):
        np.testing.assert_allclose(d, np.diag(w), rtol=tolerance)


@pytest.mark.parametrize("arch, layout", [
    ("Conv(8, (3, 3), padding='SAME') > Relu > Conv(8, (3, 3)) > Relu > Flatten > Dense(1)",
     SAME_POSITIONS),
    ("Conv(8, (3, 3), padding='SAME') > Relu > GlobalAvgPool > Dense(1)", POSITION_PAIRS),
    ("Conv(8, (3, 3), padding='SAME') > Relu > AvgPool((2, 2)) > Flatten > Dense(1)",
     POSITION_PAIRS),
])
def test_the_cheap_path_is_chosen_when_no_pooling_needs_position_pairs(arch, layout):
    program = ntkdsl.compile(arch).program
    assert program.spatial.layout == layout
    kernels = [t for step in program.steps for t in step.targets if t.role.prefix in ("K", "T")]
    if layout == SAME_POSITIONS:
        assert all(t.layout in (SAME_POSITIONS, None) for t in kernels)
    else:  # position pairs up to the last pooling layer, then same positions
        layouts = [t.layout for t in kernels]
        assert POSITION_PAIRS in layouts
        last_pairs = max(i for i, v in enumerate(layouts) if v == POSITION_PAIRS)
        assert POSITION_PAIRS not in layouts[last_pairs + 1:]


def test_after_the_last_pool_only_same_positions_are_kept():
    program = ntkdsl.compile("Conv(8, (3, 3), padding='SAME') > Relu > AvgPool((2, 2)) > "
                             "Conv(8, (2, 2)) > Relu > Flatten > Dense(1)").program
    labels = [step.label for step in program.steps]
    switch = labels.index("(same positions from here on: no pooling follows)")
    assert labels[switch - 1] == "AvgPool((2, 2))"
    after = {t.layout for step in program.steps[switch:] for t in step.targets}
    assert POSITION_PAIRS not in after


def test_a_constant_after_zeros_whose_shape_changed_is_refused_with_a_caret():
    # The zeros went through a 'VALID' conv: no variable of the new shape to put ones on.
    arch = ("Conv(4, (3, 3), padding='SAME') > Relu > Dense(4, W_std=0) > Conv(4, (2, 2)) > Exp "
            "> Flatten > Dense(1)")
    with pytest.raises(ntkdsl.errors.ArchitectureError,
                       match="constant 1 at every position, after values that were exactly 0") \
            as info:
        ntkdsl.compile(arch)
    assert info.value.column == arch.index("Exp") + 1
    assert "padding='SAME'" in str(info.value)
