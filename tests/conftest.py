"""Shared test helpers: the reference numbers of ../shared/reference and their tolerances."""
import json
from pathlib import Path

import numpy as np
import pytest

REFERENCE = Path(__file__).resolve().parents[2] / "shared" / "reference"


def load_reference(name: str) -> dict:
    path = REFERENCE / name
    if not path.exists():
        pytest.skip(f"reference file {path} not found", allow_module_level=True)
    return json.loads(path.read_text())


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
