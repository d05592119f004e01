"""Every architecture of nt_kernels.json (neural-tangents 0.6.5, float64) to 1e-10."""
import numpy as np
import pytest
from conftest import assert_matches_reference, case_id, load_reference

import ntkdsl

CASES = load_reference("nt_kernels.json")["cases"]


@pytest.mark.parametrize("case", CASES, ids=[case_id(c) for c in CASES])
@pytest.mark.parametrize("kind", ["nngp", "ntk"])
def test_matches_neural_tangents(case, kind):
    net = ntkdsl.compile(case["arch"])
    x2 = None if case["x2"] is None else np.array(case["x2"])
    got = getattr(net, kind)(np.array(case["x1"]), x2)
    assert got.dtype == np.float64
    assert_matches_reference(got, case, kind, rtol=1e-10)


def test_identical_pairs_are_exact():
    """The reference's identical-input entries are 40-digit values: we hit them to 1e-14."""
    worst = 0.0
    for case in CASES:
        x1 = np.array(case["x1"])
        x2 = x1 if case["x2"] is None else np.array(case["x2"])
        net = ntkdsl.compile(case["arch"])
        for kind in ("nngp", "ntk"):
            got = getattr(net, kind)(x1, None if case["x2"] is None else x2)
            ref = np.array(case[kind])
            same = (x1[:, None, :] == x2[None, :, :]).all(-1)
            rel = np.abs(got - ref)[same] / np.abs(ref)[same]
            worst = max(worst, rel.max(initial=0))
    assert worst < 1e-14
