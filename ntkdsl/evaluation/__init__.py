"""Tiled, threaded, bounded-memory evaluation of a compiled kernel program.

The generated ``pair(K, d, *side values)`` function is elementwise in the entries of the
kernel matrix, so the matrix can be computed piece by piece: each piece needs its own slice
of the Gram matrix ``x1 @ x2.T / d`` and its rows' and columns' slices of the side values —
what the program computes of one input alone (variances and their roots), which
``side(q1, q2, d)`` computes once per evaluation from all squared norms. This module
cuts the output into panels of rows. A panel's Gram slice is one BLAS call written straight
into the output, where the elementwise program then reads it chunk by chunk (chunks small
enough to stay in the CPU cache) and overwrites it with the kernels. A self-kernel computes
each row from the diagonal on and mirrors the rest, so it is exactly symmetric.

On more than one core, a helper thread computes the Gram slices a panel or two ahead and
does the mirroring (long calls that release the GIL) while the calling thread runs the
elementwise program (many short NumPy calls, each of which needs the GIL back): the two
kinds of work overlap instead of queueing for the GIL. Entries whose two inputs are
identical are finally overwritten with the diagonal program's exact values (correlation
exactly 1, where ``arccos`` near 1 would lose digits).

Results go straight into the output arrays, which may be ``np.memmap`` files: then the pages
already written are released from this process's resident memory as the evaluation goes,
so a kernel larger than RAM can be written to disk.

The package is split by concern, in the order an evaluation meets them:

- ``inputs``: kernel names, real dtypes, sparse data, the input matrices and their norms;
- ``identical``: the entries whose two inputs are identical (O(n) memory);
- ``memory``: memory limits and the check before an allocation, heap tuning, page release;
- ``outputs``: the output dtype, checks of ``out``, allocation of the missing outputs;
- ``plan``: panel, chunk and thread sizes within a working-memory budget;
- ``program_text``: what is read from the generated source (temporaries, the numerical
  engine, the layer where a recursion stops being finite);
- ``blas``: every loaded BLAS held to one thread meanwhile;
- ``checks``: a kernel that is not finite is a NumericalError naming the layer;
- ``panels``: the panel pipeline and the entry points ``evaluate`` and ``diagonal_values``;
- ``spatial``: convolutional networks on images (tiles of pairs, the values of each
  image alone computed once).

Process-wide state (madvise, glibc's heap tuning, thread pools, the scan of loaded BLAS
libraries) is made on first use by ``functools.cache``d functions.
"""

from __future__ import annotations

from .checks import check_finite
from .diagnosis import nonfinite_layer
from .identical import identical_pairs
from .inputs import (
    DTYPES,
    KINDS,
    as_real_array,
    check_input_rank,
    check_inputs,
    densified,
    example_shape,
    kernel_name,
    refuse_complex,
    squared_norms,
)
from .memory import (
    available_memory,
    cgroup_headroom,
    is_shared_file_map,
    memory_limits,
    release_pages,
    require_memory,
)
from .outputs import allocate_outputs, check_out, resolve_dtype
from .panels import diagonal_values, evaluate
from .plan import Plan, default_threads, make_plan
from .spatial import diagonal_of_images, evaluate_images

# The tuning constants (PANEL_ROWS, MIN_CHUNK, ...) are not re-exported: they are read in
# their own module (``plan``, ``panels``), so that is where a test must change them.
__all__ = [
    "DTYPES",
    "KINDS",
    "Plan",
    "allocate_outputs",
    "as_real_array",
    "available_memory",
    "cgroup_headroom",
    "check_finite",
    "check_input_rank",
    "check_inputs",
    "check_out",
    "default_threads",
    "densified",
    "diagonal_of_images",
    "diagonal_values",
    "evaluate",
    "evaluate_images",
    "example_shape",
    "identical_pairs",
    "is_shared_file_map",
    "kernel_name",
    "make_plan",
    "memory_limits",
    "nonfinite_layer",
    "refuse_complex",
    "release_pages",
    "require_memory",
    "resolve_dtype",
    "squared_norms",
]
