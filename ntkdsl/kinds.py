"""The two kernels ntkdsl computes, named once, in the one order every stage uses: a kernel
program's outputs, the evaluation's results, ``Network.kernels()`` and the solvers' and
estimators' ``kernel=`` names."""
from __future__ import annotations

KINDS: tuple[str, str] = ("nngp", "ntk")
