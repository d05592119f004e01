"""Bad data gets ntkdsl's own exceptions saying what is valid; good data of any array-like
kind gives float64 (n1, n2) matrices."""
import numpy as np
import pytest

import ntkdsl
from ntkdsl.errors import InputError, NTKDSLError, ShapeError

NET = ntkdsl.compile("Dense(16, b_std=0.1) > Relu > Dense(1)")
X = np.arange(12.0).reshape(4, 3) / 10


def test_shapes_and_dtype():
    assert NET.ntk(X).shape == (4, 4)
    assert NET.nngp(X, X[:2]).shape == (4, 2)
    out = NET.ntk(X.astype(np.float32).tolist())
    assert out.dtype == np.float64
    np.testing.assert_allclose(NET.ntk(X, X), NET.ntk(X), rtol=1e-15)


@pytest.mark.parametrize("x1, x2, cls, fragment", [
    (X, np.ones((2, 4)), ShapeError, "3 features but x2 has 4"),
    (X[0], None, ShapeError, "2-D"),
    (X[None], None, ShapeError, "2-D"),
    (np.empty((0, 3)), None, ShapeError, "empty"),
    (np.where(X > 0.5, np.nan, X), None, InputError, "non-finite value nan at row 2, column 0"),
    (X, np.full((1, 3), np.inf), InputError, "x2 has a non-finite value inf"),
    ([["a", "b", "c"]], None, InputError, "numeric"),
])
def test_bad_inputs(x1, x2, cls, fragment):
    with pytest.raises(cls, match=None) as info:
        NET.ntk(x1, x2)
    assert fragment in str(info.value)
    assert isinstance(info.value, NTKDSLError)


def test_unknown_formula_kind():
    with pytest.raises(InputError, match="'nngp' or 'ntk'"):
        NET.formula("gp")


def test_compile_is_cached():
    assert ntkdsl.compile("Dense(16, b_std=0.1) > Relu > Dense(1)") is NET
