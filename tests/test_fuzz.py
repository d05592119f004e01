"""The fuzzer of tests/fuzzing.py in CI (issue 12): every input gives a kernel of finite
numbers or one of ntkdsl's own errors, within 3 s of CPU time and 2 GB of address space in
a child process (fuzzing.CPU_SECONDS, fuzzing.MEMORY_BYTES).

Two blocks: 5,000 inputs of a fixed seed, which CI runs (a regression is caught the same way
every run, and only a regression fails it: no clock decides), and a block of a seed that
changes every run (from the clock; NTKDSL_FUZZ_SEED repeats one), on request only
(NTKDSL_FUZZ_FRESH=1), to explore new inputs without letting the clock decide whether CI
passes. The seed and the counts are printed (``pytest -s`` shows them) and head every
failure, which lists each failing input with the command that replays it.
"""
from __future__ import annotations

import os
import time

import fuzzing
import pytest

# 5,000 inputs: 200 s at load 1, 930 s at load 6-9 (two child processes).
FIXED_SEED, FIXED_COUNT = 20261201, 5000
FRESH_COUNT = 3000
# At least this share of inputs must be valid architectures that gave kernels: otherwise
# the generators would exercise only the parser. (About half do.)
MIN_KERNELS = 0.3


def fresh_seed() -> int:
    """NTKDSL_FUZZ_SEED if set, else one from the clock."""
    return int(os.environ.get("NTKDSL_FUZZ_SEED") or time.time_ns() % 2 ** 31)


def _fuzz(seed: int, count: int) -> None:
    started = time.monotonic()
    counts, findings = fuzzing.run(fuzzing.inputs(count, seed), workers=2)
    took = time.monotonic() - started
    header = (f"fuzz seed {seed}: {count} inputs in {took:.0f} s, {dict(counts)}\n"
              f"the whole block again: python tests/fuzzing.py --seed {seed} --count {count}\n")
    print(header, end="")
    if findings:
        pytest.fail(header + fuzzing.report(findings, seed, count), pytrace=False)
    if counts["ok"] < MIN_KERNELS * count:
        pytest.fail(header + "too few inputs were valid architectures that gave kernels: the "
                    "generators exercise only the parser", pytrace=False)


def test_fuzz_fixed_seed():
    _fuzz(FIXED_SEED, FIXED_COUNT)


# The fresh block runs on request only, so that CI fails for a regression, not for the luck of
# the clock; what fresh seeds find becomes a test of its own (tests/test_fuzz_findings.py).
@pytest.mark.skipif(not (os.environ.get("NTKDSL_FUZZ_SEED") or os.environ.get("NTKDSL_FUZZ_FRESH")),
                    reason="fresh-seed fuzzing on request: NTKDSL_FUZZ_FRESH=1 (clock seed) or "
                           "NTKDSL_FUZZ_SEED=N")
def test_fuzz_fresh_seed():
    _fuzz(fresh_seed(), FRESH_COUNT)
