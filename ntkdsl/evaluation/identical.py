"""Entries whose two input rows are identical, found in O(n) memory (hashes, then exact
comparison of the rows whose hashes repeat): the runtime's search (ntkdsl.runtime.driver),
the one standalone modules run too."""
from __future__ import annotations

from ..runtime.driver import identical_pairs

__all__ = ["identical_pairs"]
