"""The numerical route and the rules against tests/reference/quad_kernels.json (nested
adaptive quadrature, ~1e-13): 1e-9 relative; `loose` entries 1e-7 of the largest entry."""
from __future__ import annotations

import numpy as np
import pytest
from conftest import load_reference

import ntkdsl

CASES = load_reference("quad_kernels.json")["cases"]


@pytest.mark.parametrize("case", CASES, ids=[f"{c['arch'][:50]}-{c['x2'] is None}" for c in CASES])
@pytest.mark.parametrize("kind", ["nngp", "ntk"])
def test_matches_quadrature(case, kind):
    x2 = None if case["x2"] is None else np.array(case["x2"])
    got = getattr(ntkdsl.compile(case["arch"]), kind)(np.array(case["x1"]), x2)
    ref = np.array(case[kind])
    scale = np.abs(ref).max()
    loose = np.zeros(ref.shape, bool)
    for i, j in case["loose"]:
        loose[i, j] = True
    rel = np.abs(got - ref) / np.maximum(np.abs(ref), 1e-12 * scale)
    assert rel[~loose].max() <= 1e-9
    assert (np.abs(got - ref)[loose] <= 1e-7 * scale).all()


def test_fn_reference_goes_through_the_closed_form_route():
    arch = next(c["arch"] for c in CASES if "Fn(" in c["arch"])
    assert "[closed form" in str(ntkdsl.compile(arch).formula("ntk"))
