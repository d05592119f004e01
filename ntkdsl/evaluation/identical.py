"""Entries whose two input rows are identical, found in O(n) memory (hashes, then exact
comparison of the rows whose hashes repeat)."""
from __future__ import annotations

import numpy as np

_HASH_ENTRIES = 32768  # per chunk of rows hashed: temporaries of 256 KB


def _row_hashes(x: np.ndarray) -> np.ndarray:
    """A 64-bit hash per row, equal for rows with equal values (-0.0 counts as 0.0).
    Computed in row chunks so the temporaries stay small."""
    mult = np.random.default_rng(0x6E746B).integers(1, 2**63, size=x.shape[1],
                                                     dtype=np.uint64) | np.uint64(1)
    out = np.empty(len(x), dtype=np.uint64)
    step = max(1, _HASH_ENTRIES // x.shape[1])
    for s in range(0, len(x), step):
        bits = (x[s:s + step] + 0.0).view(np.uint64)  # + 0.0 turns -0.0 into 0.0
        bits *= mult  # wraps modulo 2**64
        out[s:s + step] = bits.sum(axis=1)
    return out


def _exact_ids(rows: np.ndarray, offset: int) -> np.ndarray:
    """Group ids (from ``offset`` up) of rows, equal exactly when the rows are equal."""
    if len(rows) == 0:
        return np.empty(0, dtype=np.int64)
    _, inverse = np.unique(rows, axis=0, return_inverse=True)
    return offset + inverse.ravel().astype(np.int64)


def _pairs_from_ids(id1: np.ndarray, id2: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """All (i, j) with id1[i] == id2[j], without forming the n1 x n2 comparison."""
    o1, o2 = np.argsort(id1, kind="stable"), np.argsort(id2, kind="stable")
    u1, start1, count1 = np.unique(id1[o1], return_index=True, return_counts=True)
    u2, start2, count2 = np.unique(id2[o2], return_index=True, return_counts=True)
    _, k1, k2 = np.intersect1d(u1, u2, assume_unique=True, return_indices=True)
    c1, c2, s1, s2 = count1[k1], count2[k2], start1[k1], start2[k2]
    sizes = c1 * c2
    group = np.repeat(np.arange(len(sizes)), sizes)
    within = np.arange(sizes.sum()) - np.repeat(np.cumsum(sizes) - sizes, sizes)
    rows = o1[s1[group] + within // c2[group]]
    cols = o2[s2[group] + within % c2[group]]
    return rows, cols


def identical_pairs(a: np.ndarray, b: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
    """Index arrays (rows, cols) of entries whose two input rows are equal, including the
    whole diagonal of a self-kernel. Memory is O(n): rows are hashed, and only rows whose
    hash repeats are compared exactly."""
    if b is None:
        h = _row_hashes(a)
        _, inverse, counts = np.unique(h, return_inverse=True, return_counts=True)
        candidate = counts[inverse.ravel()] > 1
        if not candidate.any():
            n = np.arange(len(a))
            return n, n
        ids = np.arange(len(a), dtype=np.int64)
        ids[candidate] = _exact_ids(a[candidate], len(a))
        return _pairs_from_ids(ids, ids)
    ha, hb = _row_hashes(a), _row_hashes(b)
    ca, cb = np.isin(ha, hb), np.isin(hb, ha)
    if not ca.any():
        return np.empty(0, dtype=np.intp), np.empty(0, dtype=np.intp)
    n1, n2 = len(a), len(b)
    shared = _exact_ids(np.concatenate([a[ca], b[cb]]), n1 + n2)
    id1 = np.arange(n1, dtype=np.int64)
    id2 = np.arange(n1, n1 + n2, dtype=np.int64)
    id1[ca], id2[cb] = shared[: ca.sum()], shared[ca.sum():]
    return _pairs_from_ids(id1, id2)
