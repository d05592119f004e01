"""Shared test helpers: the reference numbers shipped in tests/reference/ and their tolerances.

The JSON files are copies of the project's reference data (neural-tangents 0.6.5 and nested
quadrature), kept in the repository so that a plain clone can run every test."""
import json
import os
from pathlib import Path

# scikit-learn's estimator checks exercise the array-API input path only when SciPy's array-API
# mode is on, which must be set before SciPy is first imported; numpy inputs are unaffected.
os.environ.setdefault("SCIPY_ARRAY_API", "1")

import numpy as np

REFERENCE = Path(__file__).resolve().parent / "reference"


def load_reference(name: str) -> dict:
    return json.loads((REFERENCE / name).read_text())


def case_id(case: dict) -> str:
    return f"{case['arch']} | {'x1,x2' if case['x2'] is not None else 'x1'}"


def assert_matches_reference(got: np.ndarray, case: dict, kind: str, rtol: float) -> None:
    """DESIGN §5: relative error against max(|ref|, 1e-12 max|ref|), except `loose` entries
    (|got − ref| ≤ 1e-7 max|ref|)."""
    ref = np.asarray(case[kind], dtype=float)
    assert got.shape == ref.shape
    scale = np.abs(ref).max()
    err = np.abs(got - ref) / np.maximum(np.abs(ref), 1e-12 * scale)
    loose = np.zeros(ref.shape, bool)
    for i, j in case.get("loose", []):
        loose[i, j] = True
    assert err[~loose].max(initial=0) <= rtol, (kind, err[~loose].max())
    assert (np.abs(got - ref)[loose] <= 1e-7 * scale).all()
