"""Large kernel matrices: one pass for both kernels, float32, and a kernel written to disk.

    python examples/large_kernels.py            # N=6000 (a 288 MB NTK on disk), ~10 s
    python examples/large_kernels.py 40000      # a 12.8 GB NTK on disk, resident memory
                                                # stays a few hundred MB (minutes)

ntkdsl evaluates kernels in panels of rows on all cores (a helper thread computes the Gram
slices and mirrors while the calling thread runs the generated program), computes one
triangle of a self-kernel and mirrors it, and writes each panel straight into the output,
which can be an ``np.memmap``: pages already written are released from memory as it goes,
so a kernel larger than RAM goes to disk. Without ``out``, a kernel that does not fit in the available memory
is refused up front with a message saying how much it needs.
"""
import os
import sys
import tempfile
import time

import numpy as np

import ntkdsl

ARCH = "(Dense(512, W_std=1.4, b_std=0.1) > Relu) * 3 > Dense(1, W_std=1.4, b_std=0.1)"


def main(n: int = 6000, d: int = 64) -> None:
    net = ntkdsl.compile(ARCH)
    x = np.random.default_rng(0).standard_normal((n, d))

    # Both kernels from one pass over the layers, for a subset that fits easily in memory.
    m = min(n, 2000)
    t = time.perf_counter()
    _, ntk = net.kernels(x[:m])
    print(f"NNGP and NTK of {m} inputs: {time.perf_counter() - t:.2f} s, "
          f"symmetric: {np.array_equal(ntk, ntk.T)}")

    # float32: half the memory, faster; absolute error ~1e-7 of the largest entry here.
    ntk32 = net.ntk(x[:m], dtype=np.float32)
    err = np.abs(ntk32 - ntk).max() / np.abs(ntk).max()
    print(f"float32 NTK: {ntk32.nbytes / 1e6:.0f} MB instead of {ntk.nbytes / 1e6:.0f} MB, "
          f"max error {err:.1e} of the largest entry")

    # The whole self-NTK straight to disk, panel by panel, with a progress bar on a terminal.
    path = os.path.join(tempfile.mkdtemp(), "ntk.npy")
    out = np.lib.format.open_memmap(path, mode="w+", dtype=np.float64, shape=(n, n))
    t = time.perf_counter()
    net.ntk(x, out=out)
    out.flush()
    print(f"NTK of {n} inputs written to {path} ({out.nbytes / 1e9:.2f} GB) in "
          f"{time.perf_counter() - t:.1f} s")
    del out
    # Read back lazily: the first rows agree with the in-memory kernel above.
    on_disk = np.load(path, mmap_mode="r")
    print("first rows match the in-memory NTK:", np.allclose(on_disk[:5, :m], ntk[:5]))
    del on_disk
    os.remove(path)

    # Asking for more than memory holds fails before doing any work, and says what to do.
    try:
        net.ntk(np.ones((3_000_000, 1)))
    except ntkdsl.errors.InputError as err:
        print("\nwithout out=:", err)


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 6000)
