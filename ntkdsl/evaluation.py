"""Tiled, threaded, bounded-memory evaluation of a compiled kernel program.

The generated ``pair(q1, q2, K, d)`` function is elementwise in the entries of the kernel
matrix, so the matrix can be computed piece by piece: each piece needs its rows' and
columns' squared norms and its own slice of the Gram matrix ``x1 @ x2.T / d``. This module
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
"""
from __future__ import annotations

import ctypes
import mmap
import os
import re
import sys
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import numpy as np

from .errors import InputError, NumericalError, ShapeError
from .kinds import KINDS
from .progress import progress_bar

DTYPES = (np.dtype(np.float64), np.dtype(np.float32))

# Working memory (Gram blocks, program temporaries) is held to this share of the output's
# size, so an evaluation without ``out`` peaks at about output + 10% + inputs.
WORKING_SHARE = 0.06
MIN_WORKING_BYTES = 512 * 1024
MAX_WORKING_BYTES = 48 * 1024 * 1024
# Elementwise chunks: large enough to amortise ~100 ufunc calls (about 100 us of Python per
# call), small enough to stay in cache (measured best: 16k entries, 41 ns per entry).
MIN_CHUNK, MAX_CHUNK = 1024, 16384
# Numerical duals (ntkdsl.numerical) cost ~0.5 ms per call on top of their per-entry work
# (coefficient lookup, truncation choice, entries left to the per-entry path): chunks up
# to this size amortise it (measured on the Tanh NTK at N=4096, where the working memory
# allows 80k entries: 16k 1.28 s, 64k 0.59 s, 80k 0.53 s).
MAX_CHUNK_NUMERICAL = 131072
# Below this many entries per chunk, more than one thread running the elementwise program
# loses more to the GIL than it gains (measured: 2 threads at 2k-entry chunks took 1.5x the
# time of one).
MIN_THREADED_CHUNK = 8192
# Rows per panel: one Gram slice (BLAS call) each, one task for the helper thread.
PANEL_ROWS = 128
# Below this many kernel entries a helper thread costs more in hand-offs than it saves.
MIN_PIPELINED_ENTRIES = 65536
PROGRESS_DELAY_S = 2.0
# Identical-input entries written into a file map between releases of its pages.
IDENTICAL_BATCH = 1024


# ---------------------------------------------------------------------------- inputs --

def kernel_name(kernel: Any) -> str:
    """``'nngp'`` or ``'ntk'`` for any capitalisation of either; InputError for anything else.

    The one rule for kernel names, shared by ``Network.formula``, the solvers, the estimators
    and the command line."""
    if isinstance(kernel, str) and kernel.lower() in KINDS:
        return kernel.lower()
    raise InputError(f"unknown kernel {kernel!r}; valid kernels are 'nngp' or 'ntk' (any case)",
                     hint="'ntk': the neural tangent kernel (every layer trained); 'nngp': the "
                          "NNGP kernel (the network at initialisation: readout-only training, "
                          "the Bayesian posterior)")


def refuse_complex(value: Any, name: str) -> None:
    """InputError if ``value`` (an array or anything array-like) holds complex numbers."""
    dtype = getattr(value, "dtype", None)
    if not isinstance(dtype, np.dtype):  # lists, DataFrames, objects with __array__ only
        try:
            dtype = np.asarray(value).dtype
        except (TypeError, ValueError):
            return  # not an array at all: the float conversion that follows says so
    if dtype.kind == "c":
        # The wording starts as scikit-learn's, which its estimator checks look for.
        raise InputError(f"Complex data not supported: {name} has a complex dtype; kernels and "
                         "solvers take real numbers only",
                         hint=f"pass {name}.real or np.abs({name}) if that is what you mean")


def as_real_array(value: Any, name: str, what: str = "a numeric array") -> np.ndarray:
    """``value`` as a float64 array (a view when it already is one).

    The dtype check every entry point shares: complex data is refused rather than cut to its
    real part (NumPy's float conversion would drop the imaginary part with only a warning),
    and anything that is not numeric raises InputError naming ``name``."""
    refuse_complex(value, name)
    value = densified(value, name)
    try:
        return np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError) as err:
        raise InputError(f"{name} must be {what}: {err}") from None


def densified(value: Any, name: str) -> Any:
    """A scipy.sparse matrix or array as a dense ndarray, anything else as it is.

    Kernels are dense whatever the inputs, so sparse inputs are accepted as scikit-learn's
    kernel methods accept them, and densified once: an (n, d) input costs n * d floats,
    checked against the memory available first."""
    sparse = sys.modules.get("scipy.sparse")  # not imported: nothing can be sparse
    if sparse is None or not sparse.issparse(value):
        return value
    shape = " x ".join(map(str, value.shape))
    copies = 1 if value.dtype == np.float64 else 2  # the dense array, then its float64 copy
    require_memory(copies * 8 * int(np.prod(value.shape, dtype=np.float64)),
                   f"{name} ({shape}, sparse) as a dense array",
                   hint="kernels are dense whatever the inputs; pass fewer rows at a time")
    return value.toarray()


def _as_matrix(x: Any, name: str) -> np.ndarray:
    arr = as_real_array(x, name, "a numeric array of shape (n, d)")
    if arr.ndim != 2:
        raise ShapeError(f"{name} must be 2-D (n samples, d features), got shape {arr.shape}",
                         hint="reshape a single sample with x.reshape(1, -1), "
                              "a single feature with x.reshape(-1, 1)")
    if arr.shape[0] == 0 or arr.shape[1] == 0:
        raise ShapeError(f"{name} is empty (shape {arr.shape}); it needs at least one "
                         "sample and one feature")
    if not np.isfinite(arr).all():
        i, j = np.argwhere(~np.isfinite(arr))[0]
        raise InputError(f"{name} has a non-finite value {arr[i, j]} at row {i}, column {j}",
                         hint="kernels are defined for finite inputs only; drop or impute it")
    return arr


def check_inputs(x1: Any, x2: Any) -> tuple[np.ndarray, np.ndarray | None]:
    """Validated float64 copies (or views) of the inputs."""
    a = _as_matrix(x1, "x1")
    if x2 is None:
        return a, None
    b = _as_matrix(x2, "x2")
    if a.shape[1] != b.shape[1]:
        raise ShapeError(f"x1 has {a.shape[1]} features but x2 has {b.shape[1]}; "
                         "both must have the same number of columns")
    return a, b


def squared_norms(x: np.ndarray) -> np.ndarray:
    """Row-wise x·x / d, the input layer's variances."""
    return np.einsum("ij,ij->i", x, x) / x.shape[1]


# ------------------------------------------------------------------- identical pairs --

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


# --------------------------------------------------------------------------- outputs --

def available_memory() -> int | None:
    """Bytes a new allocation can take: the least headroom of ``memory_limits()`` (free
    memory, the process's address-space and data limits, its cgroup's limit), or None."""
    limits = memory_limits()
    return min(limits.values()) if limits else None


def memory_limits() -> dict[str, int]:
    """Headroom in bytes under every memory limit that applies and can be read, by a name
    that says how to change it. An allocation beyond the smallest fails: numpy's
    MemoryError under ``ulimit -v``, the kernel's OOM killer under a cgroup limit."""
    limits = {}
    free = _free_memory()
    if free is not None:
        limits["free memory"] = free
    status = _process_status()
    for resource_name, field, name in (
            ("RLIMIT_AS", "VmSize", "the address-space limit (ulimit -v)"),
            ("RLIMIT_DATA", "VmData", "the data-segment limit (ulimit -d)")):
        limit = _soft_rlimit(resource_name)
        if limit is not None and field in status:
            limits[name] = max(limit - status[field], 0)
    cgroup = cgroup_headroom()
    if cgroup is not None:
        limits["the cgroup memory limit"] = cgroup
    return limits


def _free_memory() -> int | None:
    """Linux MemAvailable (or the free physical pages elsewhere), in bytes."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


def _process_status() -> dict[str, int]:
    """This process's VmSize and VmData (what RLIMIT_AS and RLIMIT_DATA count), in bytes."""
    found = {}
    try:
        with open("/proc/self/status") as f:
            for line in f:
                key, _, value = line.partition(":")
                if key in ("VmSize", "VmData"):
                    found[key] = int(value.split()[0]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return found


def _soft_rlimit(name: str) -> int | None:
    try:
        import resource
        soft = resource.getrlimit(getattr(resource, name))[0]
    except (ImportError, AttributeError, OSError, ValueError):
        return None
    return None if soft == resource.RLIM_INFINITY or soft < 0 else soft


# cgroup v1 writes "no limit" as the largest page-aligned long; anything this large is none.
_NO_CGROUP_LIMIT = 2**62


def cgroup_headroom(root: str = "/sys/fs/cgroup", membership: str = "/proc/self/cgroup"
                    ) -> int | None:
    """Bytes left under this process's cgroup memory limit (v2 ``memory.max`` or v1
    ``memory.limit_in_bytes``), counting reclaimable page cache (inactive files) as free,
    as the kernel does before it kills; None without a limit. The process's own cgroup and
    the hierarchy's root (a container's own group) are read, the smaller headroom kept."""
    headrooms = [h for h in map(_cgroup_dir_headroom, _cgroup_dirs(root, membership))
                 if h is not None]
    return min(headrooms) if headrooms else None


def _cgroup_dirs(root: str, membership: str) -> list[str]:
    dirs = [root, os.path.join(root, "memory")]
    try:
        with open(membership) as f:
            for line in f:
                _, controllers, path = line.rstrip("\n").split(":", 2)
                if controllers == "":  # v2: one unified hierarchy
                    dirs.append(root + path)
                elif "memory" in controllers.split(","):
                    dirs.append(os.path.join(root, "memory") + path)
    except (OSError, ValueError):
        pass
    return list(dict.fromkeys(os.path.normpath(d) for d in dirs))


def _cgroup_dir_headroom(directory: str) -> int | None:
    for limit_file, usage_file, cache_keys in (
            ("memory.max", "memory.current", ("inactive_file",)),
            ("memory.limit_in_bytes", "memory.usage_in_bytes",
             ("total_inactive_file", "inactive_file"))):
        try:
            with open(os.path.join(directory, limit_file)) as f:
                text = f.read().strip()
            if text == "max" or int(text) >= _NO_CGROUP_LIMIT:
                return None
            with open(os.path.join(directory, usage_file)) as f:
                usage = int(f.read())
        except (OSError, ValueError):
            continue
        return max(int(text) - usage + _cgroup_stat(directory, cache_keys), 0)
    return None


def _cgroup_stat(directory: str, keys: tuple[str, ...]) -> int:
    """The first of ``keys`` found in the group's memory.stat (bytes), else 0."""
    try:
        with open(os.path.join(directory, "memory.stat")) as f:
            stats = dict(line.split() for line in f if line.count(" ") == 1)
    except (OSError, ValueError):
        return 0
    for key in keys:
        if key in stats:
            return int(stats[key])
    return 0


def require_memory(nbytes: float, what: str, hint: str) -> None:
    """InputError before any allocation if ``nbytes`` (for ``what``) exceed the memory
    available under every limit of ``memory_limits()``; the message names the limit."""
    free = available_memory()
    if free is None or nbytes <= free:
        return
    binding = [name for name, value in memory_limits().items() if value == free]
    under = f" under {binding[0]}" if binding and binding[0] != "free memory" else ""
    raise InputError(f"{what} needs {_size(nbytes)} of memory, but only {_size(free)} is "
                     f"available{under}", hint=hint)


def _size(nbytes: float) -> str:
    for unit, scale in (("TB", 1e12), ("GB", 1e9)):
        if nbytes >= scale / 10:
            return f"{nbytes / scale:.2f} {unit}"
    return f"{nbytes / 1e6:.1f} MB"


def resolve_dtype(dtype: Any, outs: Sequence[np.ndarray | None]) -> np.dtype:
    """The evaluation dtype: the one asked for, else that of a given ``out``, else float64."""
    given = [o.dtype for o in outs if isinstance(o, np.ndarray)]
    if dtype is None:
        dtype = given[0] if given else np.float64
    try:
        dt = np.dtype(dtype)
    except TypeError:
        raise InputError(f"dtype {dtype!r} is not a NumPy dtype",
                         hint="valid: numpy.float64 (default) or numpy.float32") from None
    if dt not in DTYPES:
        raise InputError(f"dtype {dt} is not supported",
                         hint="valid: numpy.float64 (default) or numpy.float32")
    return dt


def check_out(out: Any, kind: str, shape: tuple[int, int], dtype: np.dtype,
              inputs: Sequence[np.ndarray]) -> None:
    """Raise before any work if ``out`` cannot receive the ``kind`` kernel."""
    if not isinstance(out, np.ndarray):
        raise InputError(f"out for the {kind.upper()} must be a NumPy array or np.memmap, "
                         f"got {type(out).__name__}")
    if out.shape != shape:
        raise ShapeError(f"out for the {kind.upper()} has shape {out.shape} but the kernel "
                         f"is {shape[0]} x {shape[1]}",
                         hint=f"allocate it with shape {shape}")
    if out.dtype != dtype:
        raise InputError(f"out for the {kind.upper()} has dtype {out.dtype} but the "
                         f"evaluation is in {dtype}",
                         hint=f"allocate out with dtype={dtype.name}, or pass "
                              f"dtype=numpy.{out.dtype.name} if that is supported")
    if not out.flags.writeable:
        raise InputError(f"out for the {kind.upper()} is read-only",
                         hint="pass a writeable array (an np.memmap opened with mode "
                              "'w+' or 'r+')")
    for x in inputs:
        if np.shares_memory(out, x):
            raise InputError(f"out for the {kind.upper()} overlaps an input array",
                             hint="the inputs must stay intact while the kernel is written")


def allocate_outputs(kinds: Sequence[str], outs: Sequence[np.ndarray | None],
                     shape: tuple[int, int], dtype: np.dtype) -> list[np.ndarray]:
    """The given ``out`` arrays, with the missing ones allocated after checking that they
    (and the evaluation's working memory) fit in the memory available."""
    missing = sum(o is None for o in outs)
    need = missing * shape[0] * shape[1] * dtype.itemsize
    if not need:
        return list(outs)
    what = " and ".join(k.upper() for k, o in zip(kinds, outs) if o is None)
    description = f"the {what} ({shape[0]} x {shape[1]}, {dtype.name})"
    hint = ("write it to disk instead: out=numpy.lib.format.open_memmap('kernel.npy', "
            f"mode='w+', dtype=numpy.{dtype.name}, shape={shape}); "
            "or use dtype=numpy.float32 (half the memory), or fewer inputs")
    # The working memory (Gram blocks, temporaries) comes on top: see WORKING_SHARE.
    require_memory(need + min(WORKING_SHARE * need, MAX_WORKING_BYTES), description, hint)
    try:
        return [np.empty(shape, dtype=dtype) if o is None else o for o in outs]
    except MemoryError:  # a limit the check cannot read (or memory taken meanwhile)
        raise InputError(f"{description} needs {_size(need)} of memory, more than this "
                         "process could allocate", hint=hint) from None


# ------------------------------------------------------------------- memory mapping --

def _libc_madvise() -> Callable | None:
    if not sys.platform.startswith("linux") or not hasattr(mmap, "MADV_DONTNEED"):
        return None
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        fn = libc.madvise
    except (OSError, AttributeError):
        return None
    fn.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
    fn.restype = ctypes.c_int
    return fn


_MADVISE = _libc_madvise()


def is_shared_file_map(arr: np.ndarray) -> bool:
    """True for an np.memmap whose writes go to its file (modes 'r+' and 'w+'); a
    copy-on-write map ('c') keeps its writes only in memory, so its pages must stay."""
    return isinstance(arr, np.memmap) and getattr(arr, "mode", None) in ("r+", "w+")


def release_pages(arr: np.ndarray) -> None:
    """Drop the pages of a shared file map from this process's resident memory.

    The data is not lost: in a shared file mapping a written page *is* the page-cache page,
    which the kernel writes back to the file; unmapping only stops it counting towards this
    process. Later access faults the page back in from the cache or the file."""
    if _MADVISE is None or not is_shared_file_map(arr) or arr.size == 0:
        return
    lo, hi = np.lib.array_utils.byte_bounds(arr) if hasattr(np.lib, "array_utils") \
        else np.byte_bounds(arr)
    start = lo - lo % mmap.PAGESIZE  # the map starts on a page boundary, so this is inside
    _MADVISE(start, hi - start, mmap.MADV_DONTNEED)


# -------------------------------------------------------------------------- planning --

@dataclass(frozen=True)
class Plan:
    """How an evaluation is cut up. The rows of the output go in panels; each panel takes
    three steps: its slice of the Gram matrix (one BLAS call), the elementwise program on
    chunks of its rows, and, for a self-kernel, the mirror of what it computed (a panel
    computes only the columns from the diagonal on, and takes the rest of its rows from the
    panels above it).

    With a ``helper`` thread, Gram slices and mirrors (long calls that release the GIL) run
    on it while ``workers`` threads run the elementwise program (many short NumPy calls):
    the two kinds of work overlap instead of competing for the GIL."""

    n1: int
    n2: int
    symmetric: bool
    panel_rows: int
    chunk: int  # entries per call of the elementwise program (at least one row)
    workers: int
    helper: bool
    gram_columns: int  # a float32 panel's Gram slice is made this many columns at a time

    @property
    def threads(self) -> int:
        return self.workers + self.helper

    @property
    def lookahead(self) -> int:
        """Panels whose Gram slice is computed ahead of the elementwise program."""
        return self.workers + 1

    def panels(self) -> list[tuple[int, int]]:
        return [(r0, min(r0 + self.panel_rows, self.n1))
                for r0 in range(0, self.n1, self.panel_rows)]

    def first_column(self, row: int) -> int:
        """A self-kernel computes row ``row`` from the diagonal on; the rest is mirrored."""
        return row if self.symmetric else 0

    def chunks(self, r0: int, r1: int):
        """(s, e): the row chunks of panel r0:r1, each about ``chunk`` entries wide."""
        s = r0
        while s < r1:
            e = min(r1, s + max(1, self.chunk // (self.n2 - self.first_column(s))))
            yield s, e
            s = e

    def entries(self, r0: int = 0, r1: int | None = None) -> int:
        """Kernel entries computed for rows r0:r1 (default all)."""
        r1 = self.n1 if r1 is None else r1
        if not self.symmetric:
            return (r1 - r0) * self.n2
        return (r1 - r0) * self.n2 - (r1 * (r1 - 1) - r0 * (r0 - 1)) // 2


def default_threads() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:
        return max(1, os.cpu_count() or 1)


# Both read the generated source, which is fixed per compiled network: cached, so each
# evaluation does not rescan it.
@lru_cache(maxsize=256)
def chunk_cap(source: str) -> int:
    """The largest chunk worth giving the generated program: larger when it calls the
    numerical engine (whose helpers are named _hd_*), whose calls have a fixed cost."""
    return MAX_CHUNK_NUMERICAL if "def _hd_" in source else MAX_CHUNK


_ASSIGNMENT = re.compile(r"(\w+(?:, \w+)*) = (.*)")
_NAME = re.compile(r"(?<![\w.])[A-Za-z_]\w*")


@lru_cache(maxsize=256)
def temporaries_per_entry(source: str) -> int:
    """How many arrays of the chunk's size the generated ``pair`` holds at once, at most,
    plus a few expression temporaries. An assignment makes a chunk-sized array when its
    right side reads one (K_0 or a name made so), one per target of ``a, b = f(...)``;
    ``A = B`` only names B's array again, and an array lives until its last name is
    ``del``-ed."""
    body = source.split("def pair(", 1)[-1].split("\ndef ", 1)[0]
    arrays: dict[str, object] = {"K_0": 0}  # name -> the array it holds
    most = 1
    for n, line in enumerate(body.splitlines(), start=1):
        line = line.strip()
        if line.startswith("del "):
            for name in line[4:].split(","):
                arrays.pop(name.strip(), None)
        elif (m := _ASSIGNMENT.fullmatch(line)) is not None:
            names, rhs = m.group(1).split(", "), m.group(2)
            if rhs in arrays:
                arrays[names[0]] = arrays[rhs]
            elif any(used in arrays for used in _NAME.findall(rhs)):
                arrays.update({name: (n, i) for i, name in enumerate(names)})
            most = max(most, len(set(arrays.values())))
    return most + 4


_MALLOC_TUNED = False


def _keep_freed_heap() -> None:
    """Once per process: make glibc keep freed chunk temporaries instead of handing them
    back to the OS after every call of the program (which costs page faults: measured 130
    instead of 45 ns per entry). Freeing one block above the mmap threshold is glibc's own
    cue to raise its mmap threshold to that size and its trim threshold to twice it; any
    NumPy program that frees a mid-sized array does the same. Nothing is touched, so no
    memory is used."""
    global _MALLOC_TUNED  # noqa: PLW0603 - a once-per-process flag
    if not _MALLOC_TUNED:
        _MALLOC_TUNED = True
        del_me = np.empty(16 * 2**20, dtype=np.uint8)
        del del_me


def make_plan(n1: int, n2: int, symmetric: bool, dtype: np.dtype, working_bytes: float,
              temporaries: int, threads: int | None, max_chunk: int = MAX_CHUNK) -> Plan:
    """Panel and chunk sizes keeping working memory near ``working_bytes``. ``threads`` is
    the most threads to use (None: all cores): one helper for Gram slices and mirrors and
    the rest for the elementwise program, but only one of those unless chunks are large
    enough to gain from more."""
    if threads is not None and int(threads) < 1:
        raise InputError(f"threads must be at least 1, got {threads}")
    pool = default_threads() if threads is None else int(threads)
    helper = pool > 1 and n1 * n2 >= MIN_PIPELINED_ENTRIES
    workers = pool - 1 if helper else 1
    budget = min(max(working_bytes, MIN_WORKING_BYTES), MAX_WORKING_BYTES)
    # The first output holds each panel's Gram slice until the program overwrites it. A
    # float32 slice is made in float64 column blocks first: a quarter of the budget.
    gram_bytes = 0 if dtype == np.float64 else budget / 4
    gram_columns = n2 if not gram_bytes else max(64, int(gram_bytes / (PANEL_ROWS * 8)))
    while True:
        chunk = (budget - gram_bytes) * 0.75 / (workers * temporaries * dtype.itemsize)
        chunk = min(max(int(chunk), MIN_CHUNK), max_chunk)
        if workers == 1 or chunk >= MIN_THREADED_CHUNK or threads is not None:
            break
        workers = 1  # small chunks: more workers would lose more to the GIL than gain
    return Plan(n1, n2, symmetric, min(PANEL_ROWS, n1), chunk, workers, helper,
                min(gram_columns, n2))


# ------------------------------------------------------------------------ evaluation --

class _Panels:
    """The three steps of a panel, for the outputs of one evaluation. Steps of different
    panels may run at once on different threads: each writes only its own panel's rows,
    and a mirror reads only entries that earlier panels have finished."""

    def __init__(self, pair: Callable, a: np.ndarray, b: np.ndarray, q1: np.ndarray,
                 q2: np.ndarray, keep: Sequence[int], outs: Sequence[np.ndarray],
                 plan: Plan, dtype: np.dtype):
        self.pair, self.a, self.b, self.plan, self.dtype = pair, a, b, plan, dtype
        self.d = a.shape[1]
        # The program runs in the evaluation dtype; norms are rounded to it once.
        self.q1, self.q2 = q1.astype(dtype, copy=False), q2.astype(dtype, copy=False)
        # The output holding the Gram slices is written last in each chunk: the program
        # may return its input (the Gram slice itself) as another kernel.
        self.stores = list(zip(keep, outs))[::-1]
        self.outs = outs

    def gram(self, r0: int, r1: int) -> np.ndarray:
        """The panel's slice x1[r0:r1] @ x2[c0:].T / d (c0 its first column), written
        into the first output, where the elementwise program reads it: no memory of its
        own in float64; in float32, computed in float64 blocks and rounded."""
        c0 = self.plan.first_column(r0)
        dest = self.outs[0][r0:r1, c0:]
        if dest.dtype == np.float64:
            np.matmul(self.a[r0:r1], self.b[c0:].T, out=dest)
            return np.divide(dest, self.d, out=dest)  # a division, as the untiled x1 @ x2.T / d
        step = self.plan.gram_columns
        block = np.empty((r1 - r0, step))
        for c in range(c0, self.plan.n2, step):
            part = block[:, :min(step, self.plan.n2 - c)]
            np.matmul(self.a[r0:r1], self.b[c:c + step].T, out=part)
            np.divide(part, self.d, out=dest[:, c - c0:c - c0 + part.shape[1]])
        return dest

    def elementwise(self, gram: np.ndarray, r0: int, r1: int) -> int:
        """Run the program on the panel's row chunks and store the results; returns the
        number of entries computed."""
        offset = self.plan.first_column(r0)
        for s, e in self.plan.chunks(r0, r1):
            c0 = self.plan.first_column(s)
            k = gram[s - r0:e - r0, c0 - offset:]
            results = self.pair(self.q1[s:e, None], self.q2[None, c0:], k, self.d)
            for i, out in self.stores:
                out[s:e, c0:] = results[i]
        return self.plan.entries(r0, r1)

    def mirror(self, r0: int, r1: int) -> None:
        """Fill the panel's rows left of the diagonal from the transposed entries above it,
        which earlier panels computed: writing along the panel's own rows touches fresh
        output pages in order (measured: first touches scattered down the columns cost
        ten times as much), and square blocks keep the strided read in the cache."""
        n = r1 - r0
        lower = _lower_mask(n)
        for out in self.outs:
            square = out[r0:r1, r0:r1]
            np.copyto(square, square.T, where=lower)
            # Reading a file map maps the pages around each one read (measured ~90 kB a
            # touch): across all rows above, more than the panel itself.
            mapped = is_shared_file_map(out)
            for c0 in range(0, r0, n):
                c1 = min(c0 + n, r0)
                out[r0:r1, c0:c1] = out[c0:c1, r0:r1].T
                if mapped:
                    release_pages(out[c0:c1])


@lru_cache(maxsize=8)
def _lower_mask(n: int) -> np.ndarray:
    return np.tri(n, k=-1, dtype=bool)


# ----------------------------------------------------------------------- BLAS threads --
# Every loaded BLAS is held to one thread while an evaluation runs: the Gram slices run
# beside the elementwise program (or one after the other on one thread), and BLAS threads
# spinning beside it (or beside other work on a loaded machine: measured 10x slower at
# N=1024 with one core busy) would oversubscribe the cores. The numerical route's rank-1
# updates (scipy.linalg.blas.dger) come from SciPy's own OpenBLAS, which is loaded only when
# that route first runs, often in the middle of an evaluation; with it left at two threads
# beside one busy process the Tanh NTK at N=4096 took 5x as long as Erf's instead of 2x.


class _DlPhdrInfo(ctypes.Structure):
    """The head of glibc's (and musl's) struct dl_phdr_info, up to its load counter."""
    _fields_ = [("addr", ctypes.c_void_p), ("name", ctypes.c_char_p),
                ("phdr", ctypes.c_void_p), ("phnum", ctypes.c_uint16),
                ("adds", ctypes.c_ulonglong)]


# The object's address arrives as a plain int: building ctypes objects for the struct
# and casting a data pointer tripled the cost of a call (~3 us against ~1 us).
@ctypes.CFUNCTYPE(ctypes.c_int, ctypes.c_void_p, ctypes.c_size_t, ctypes.c_void_p)
def _load_count(info, size, data):
    """dl_iterate_phdr callback: the number of libraries loaded so far (it counts every
    load, and unloads do not lower it), read from the first object; stops there."""
    if size < ctypes.sizeof(_DlPhdrInfo):
        return -1  # an older C library without the counter
    return min(ctypes.c_ulonglong.from_address(info + _DlPhdrInfo.adds.offset).value,
               2**31 - 1)


@lru_cache(maxsize=1)
def _dl_iterate_phdr():
    """The C library's dl_iterate_phdr, or None (macOS, Windows). Called holding the GIL
    (PyDLL): it holds the loader's lock while the callback runs, and the callback needs
    the GIL, which a thread importing an extension module holds while it waits for that
    lock."""
    try:
        fn = ctypes.PyDLL(None).dl_iterate_phdr
    except (AttributeError, OSError, TypeError):
        return None
    fn.argtypes, fn.restype = [type(_load_count), ctypes.c_void_p], ctypes.c_int
    return fn


def _loaded_libraries_stamp() -> int:
    """A number that changes whenever a shared library has been loaded: the C library's
    load counter (~1 us, where a threadpoolctl scan of the loaded libraries costs ~0.4-1
    ms); without it, minus the number of imported modules, as a BLAS is loaded by
    importing an extension module."""
    iterate = _dl_iterate_phdr()
    count = -1 if iterate is None else iterate(_load_count, None)
    return count if count > 0 else -len(sys.modules)


_BLAS_SCAN: list = [None, None]  # [stamp, threadpoolctl controller of the BLAS loaded then]


def _loaded_blas():
    """threadpoolctl's controller of every BLAS loaded now, or None without threadpoolctl.
    The libraries are scanned again only when the stamp says some may have appeared."""
    stamp = _loaded_libraries_stamp()
    scanned, controller = _BLAS_SCAN
    if scanned != stamp:
        try:
            from threadpoolctl import ThreadpoolController
        except ImportError:  # pragma: no cover - scikit-learn brings threadpoolctl
            return None
        controller = ThreadpoolController().select(user_api="blas")
        _BLAS_SCAN[:] = [stamp, controller]  # one assignment: readers see a matching pair
    return controller


class _BlasLimit:
    """Every loaded BLAS held to one thread from entry to exit; ``refresh()`` limits the
    libraries loaded since (cheap when there are none). Enter, refresh and exit on one
    thread: OpenBLAS's thread count is the process's, and threadpoolctl lets only the
    thread that set it change it until that thread's limits are all undone."""

    def __enter__(self):
        self.limiters: list = []  # threadpoolctl limiters, undone newest first
        self.seen = None  # the controller of the libraries limited so far
        self.refresh()
        return self

    def refresh(self) -> None:
        controller = _loaded_blas()
        if controller is None or controller is self.seen:
            return
        new = controller
        if self.seen is not None:  # rescanned: limit only what was not there before
            limited = {c.filepath for c in self.seen.lib_controllers}
            new = controller.select(filepath=[c.filepath for c in controller.lib_controllers
                                              if c.filepath not in limited])
        self.seen = controller
        if new.lib_controllers:
            self.limiters.append(new.limit(limits=1).__enter__())

    def __exit__(self, *exc) -> None:
        while self.limiters:
            self.limiters.pop().__exit__(None, None, None)


_POOLS: dict[tuple[str, int], ThreadPoolExecutor] = {}
_POOLS_LOCK = threading.Lock()


def _pool(role: str, threads: int) -> ThreadPoolExecutor:
    """A thread pool kept for the process: its threads keep their malloc arenas, stacks and
    BLAS buffers warm between evaluations, instead of touching new memory every call."""
    with _POOLS_LOCK:
        if (role, threads) not in _POOLS:
            _POOLS[role, threads] = ThreadPoolExecutor(
                max_workers=threads, thread_name_prefix=f"ntkdsl-{role}")
        return _POOLS[role, threads]


class _Pipeline:
    """Runs the panels' steps: Gram slices ``plan.lookahead`` panels ahead and mirrors on
    the helper thread (in order of submission), elementwise steps on the calling thread or
    on a pool of workers. Without a helper, everything runs in turn on the calling
    thread."""

    def __init__(self, panels: _Panels, plan: Plan):
        self.steps, self.plan, self.panels = panels, plan, plan.panels()
        self.helper = _pool("helper", 1) if plan.helper else None
        self.lock = threading.Lock()
        self.grams: dict[int, Future] = {}  # every Gram slice started, by panel
        self.submitted: list[tuple[Future, Callable, tuple]] = []
        self.finished: set[int] = set()
        self.mirrored = 0  # panels before this one are mirrored (or queued to be)

    def _on_helper(self, fn: Callable, *args) -> Future:
        if self.helper is None:
            f: Future = Future()
            f.set_result(fn(*args))
            return f
        f = self.helper.submit(fn, *args)
        self.submitted.append((f, fn, args))
        return f

    def _start_gram(self, index: int) -> None:
        """Start panel ``index``'s Gram slice unless it has been started: with several
        workers, a panel may be reached before the one that usually starts it finishes."""
        if index < len(self.panels) and index not in self.grams:
            self.grams[index] = self._on_helper(self.steps.gram, *self.panels[index])

    def panel(self, index: int) -> int:
        """All steps of one panel that are not left to the helper; returns its entries."""
        with self.lock:
            self._start_gram(index)  # without a helper, Gram slices are made when needed
            gram = self.grams[index]
        r0, r1 = self.panels[index]
        entries = self.steps.elementwise(gram.result(), r0, r1)
        with self.lock:
            if self.plan.symmetric:  # a mirror reads what all earlier panels computed
                self.finished.add(index)
                while self.mirrored in self.finished:
                    self._on_helper(self.steps.mirror, *self.panels[self.mirrored])
                    self.mirrored += 1
            if self.helper is not None:
                self._start_gram(index + self.plan.lookahead)
        return entries

    def run(self, done: Callable[[int], None], meanwhile: Callable[[], Any]) -> Any:
        """Run every panel, reporting each one's entries to ``done``; ``meanwhile`` runs on
        the calling thread while the first Gram slices are computed. Returns its result."""
        try:
            if self.helper is not None:
                with self.lock:
                    for i in range(self.plan.lookahead):
                        self._start_gram(i)
            found = meanwhile()
            if self.plan.workers == 1:
                for i in range(len(self.panels)):
                    done(self.panel(i))
            else:
                _run_pool(_pool("workers", self.plan.workers), self.panel,
                          range(len(self.panels)), self.plan.workers, done)
            # The last queued steps (mirrors) need nothing but finished panels: the calling
            # thread takes those the helper has not started, from the end of the queue.
            for f, fn, args in reversed(self.submitted):
                if f.cancel():
                    fn(*args)
            for f, _, _ in self.submitted:
                if not f.cancelled():
                    f.result()
            return found
        finally:
            for f, _, _ in self.submitted:
                f.cancel()
            wait([f for f, _, _ in self.submitted])  # running steps finish before we go


def _run_pool(pool: ThreadPoolExecutor, fn: Callable, items, threads: int,
              done: Callable) -> None:
    """Submit items a few at a time (so an error or Ctrl-C stops early) and report each."""
    pending: set = set()
    todo = iter(items)
    try:
        while True:
            for item in todo:
                pending.add(pool.submit(fn, item))
                if len(pending) >= 2 * threads:
                    break
            if not pending:
                break
            finished, pending = wait(pending, return_when=FIRST_COMPLETED)
            for f in finished:
                done(f.result())
    finally:
        for f in pending:
            f.cancel()
        wait(pending)


def _run(panels: _Panels, plan: Plan, outs: Sequence[np.ndarray], progress: bool | None,
         meanwhile: Callable[[], Any], blas: _BlasLimit) -> Any:
    """Run every panel, releasing memory-mapped pages as they are written; returns the
    result of ``meanwhile``, run while the first Gram slices are computed. ``blas`` is
    refreshed after every panel, on the calling thread."""
    # progress=None: on a terminal, once the evaluation passes PROGRESS_DELAY_S.
    bar = progress_bar(progress, plan.entries(), unit=" entries", unit_scale=True, desc="kernel",
                       delay=PROGRESS_DELAY_S if progress is None else 0)
    mapped = [o for o in outs if is_shared_file_map(o)]

    def done(entries: int) -> None:
        if bar is not None:
            bar.update(entries)
        # After every panel: a mirror touches a page in each row above its panel, so the
        # pages a panel touches are not in proportion to the entries it computes.
        for o in mapped:
            release_pages(o)
        # A BLAS loaded during the panel (the numerical route imports SciPy's on first
        # use) runs unlimited only until here.
        blas.refresh()

    try:
        found = _Pipeline(panels, plan).run(done, meanwhile)
    finally:
        if bar is not None:
            bar.close()
    for o in mapped:
        release_pages(o)
    return found


def evaluate(functions: dict, x1: Any, x2: Any = None, *, kinds: Sequence[str] = KINDS,
             out: Sequence[np.ndarray | None] | None = None, dtype: Any = None,
             progress: bool | None = None, threads: int | None = None) -> list[np.ndarray]:
    """The kernels named in ``kinds`` of x1 against x2 (x2=None: x1 against itself), written
    into ``out`` (one array or None per kind) or into new arrays. Every check happens before
    any work starts."""
    a, b = check_inputs(x1, x2)
    if b is not None and b is a:
        b = None  # the same array object twice: use the symmetric path
    shape = (len(a), len(a) if b is None else len(b))
    outs = [None] * len(kinds) if out is None else list(out)
    dt = resolve_dtype(dtype, outs)
    inputs = [a] if b is None else [a, b]
    for kind, o in zip(kinds, outs):
        if o is not None:
            check_out(o, kind, shape, dt, inputs)
    given = [o for o in outs if o is not None]
    if len(given) == 2 and np.shares_memory(*given):
        raise InputError("the NNGP and NTK outputs overlap",
                         hint="pass two separate arrays (or None for either)")
    outs = allocate_outputs(kinds, outs, shape, dt)
    q1 = squared_norms(a)
    q2 = q1 if b is None else squared_norms(b)
    plan = make_plan(*shape, b is None, dt, WORKING_SHARE * sum(o.nbytes for o in outs),
                     temporaries_per_entry(functions["__source__"]), threads,
                     chunk_cap(functions["__source__"]))
    keep = [KINDS.index(k) for k in kinds]
    _keep_freed_heap()
    panels = _Panels(functions["pair"], a, a if b is None else b, q1, q2, keep, outs, plan,
                     dt)
    try:
        with _BlasLimit() as blas:
            # Identical inputs are found while the first Gram slices are computed.
            rows, cols = _run(panels, plan, outs, progress, lambda: identical_pairs(a, b), blas)
            _exact_identical_pairs(functions["diagonal"], outs, keep, rows, cols, q1,
                                   a.shape[1])
    # Inputs are checked before the program runs: a Python-level conversion of an inf or NaN
    # inside it (int(inf), int(nan)) means the kernel overflowed.
    except (OverflowError, ValueError) as err:
        raise _overflow(functions, q1, q2, a.shape[1], str(err)) from None
    check_finite(functions, kinds, outs, q1, q2, a.shape[1])
    return outs


_OVERFLOW_HINT = ("an overflow past float64's range (about 1.8e308): use smaller weight or "
                  "activation scales (W_std, b_std, b of Exp, ...) or inputs of smaller norm")


def check_finite(functions: dict, kinds: Sequence[str], outs: Sequence[np.ndarray],
                 q1: np.ndarray, q2: np.ndarray, d: int) -> None:
    """NumericalError, naming the first layer whose variance is not finite, if any kernel
    entry is inf or NaN (an overflow such as exp(b² q) for large b² q): never a silent
    inf/NaN. One pass over the outputs, block by block."""
    for kind, out in zip(kinds, outs):
        entry = _first_nonfinite(out)
        if entry is None:
            continue
        i, j = entry
        layer = nonfinite_layer(functions, np.array([q1[i], q2[j]], dtype=np.float64), d)
        where = (f"the variance after {layer} is not finite for these inputs" if layer else
                 "every layer's variance is finite for these inputs, so the kernel formula "
                 "itself failed at this pair")
        raise NumericalError(
            f"the {kind.upper()} is not finite ({out[i, j]}) at entry ({i}, {j}): {where}",
            hint=_OVERFLOW_HINT)


def _overflow(functions: dict, q1: np.ndarray, q2: np.ndarray, d: int, detail: str
              ) -> NumericalError:
    """NumericalError for an overflow that stopped the program, naming the first layer whose
    variance is not finite at the largest input norms (where an overflow starts)."""
    layer = nonfinite_layer(functions, np.array([q1.max(), q2.max()], dtype=np.float64), d)
    where = f"the variance after {layer} is not finite" if layer else "a value overflowed"
    return NumericalError(
        f"the kernel overflowed float64 ({detail}): {where} for the largest inputs",
        hint=_OVERFLOW_HINT)


def _first_nonfinite(out: np.ndarray) -> tuple[int, int] | None:
    step = max(1, (1 << 20) // max(1, out.shape[1]))
    mapped = is_shared_file_map(out)
    for r in range(0, out.shape[0], step):
        bad = ~np.isfinite(out[r:r + step])
        if mapped:
            release_pages(out)
        if bad.any():
            i, j = np.argwhere(bad)[0]
            return r + int(i), int(j)
    return None


_DIAGONAL_STATE = re.compile(r"[qt]_(\d+)")


def nonfinite_layer(functions: dict, q: np.ndarray, d: int) -> str | None:
    """The first layer (``step l: label``, as in the derivation) at which the diagonal
    recursion of squared norms ``q`` stops being finite, or None. Runs the generated
    diagonal function once under a line tracer; only on the error path."""
    bad: list[str] = []

    def trace(frame, event, arg):
        if frame.f_code.co_name != "diagonal":
            return None
        for name, value in frame.f_locals.items():
            if (not bad and _DIAGONAL_STATE.fullmatch(name)
                    and not np.isfinite(np.asarray(value, dtype=np.float64)).all()):
                bad.append(name)
        return trace

    previous = sys.gettrace()
    sys.settrace(trace)
    try:
        with np.errstate(all="ignore"):
            functions["diagonal"](q, d)
    except (ArithmeticError, ValueError):
        pass  # the recursion itself failed: the variables seen so far tell where
    finally:
        sys.settrace(previous)
    return _step_label(functions["__source__"], bad[0]) if bad else None


def _step_label(source: str, variable: str) -> str:
    """``step l: <layer>`` from the comment above the assignment of ``variable`` in the
    generated diagonal function."""
    body = source.split("def diagonal(", 1)[-1]
    label = ""
    for line in body.split("\n"):
        stripped = line.strip()
        if stripped.startswith("# "):
            label = stripped[2:].split("  [", 1)[0]
        elif stripped.startswith(variable + " ="):
            break
    return f"step {variable.split('_')[1]}: {label}"


def diagonal_values(diagonal: Callable, q: np.ndarray, d: int) -> tuple[np.ndarray, ...]:
    """Exact (NNGP, NTK) of inputs with squared norms q against themselves, as arrays.
    Every BLAS is held to one thread meanwhile (the numerical route's coefficients are
    matrix products)."""
    with _BlasLimit():
        values = _diagonal_arrays(diagonal, q, d)
    for kind, value in zip(KINDS, values):
        if not np.isfinite(value).all():
            i = int(np.argmax(~np.isfinite(value)))
            raise NumericalError(f"the {kind.upper()} of input {i} with itself is not finite "
                                 f"({value[i]}): an overflow past float64's range",
                                 hint="use smaller weight or activation scales, or inputs of "
                                      "smaller norm")
    return values


def _diagonal_arrays(diagonal: Callable, q: np.ndarray, d: int) -> tuple[np.ndarray, ...]:
    return tuple(np.array(np.broadcast_to(v, q.shape), dtype=np.float64)
                 for v in diagonal(q, d))


def _exact_identical_pairs(diagonal: Callable, outs: Sequence[np.ndarray],
                           keep: Sequence[int], rows: np.ndarray, cols: np.ndarray,
                           q1: np.ndarray, d: int) -> None:
    """Overwrite the entries (rows, cols), whose two inputs are identical, with the
    diagonal recursion."""
    if rows.size == 0:
        return
    values = _diagonal_arrays(diagonal, q1, d)  # BLAS is limited by the caller
    for i, out in zip(keep, outs):
        # A write into a file map maps the pages around it too (measured: ~90 kB per
        # entry), so a file map is written a batch of entries at a time and released.
        step = IDENTICAL_BATCH if is_shared_file_map(out) else rows.size
        for s in range(0, rows.size, step):
            out[rows[s:s + step], cols[s:s + step]] = values[i][rows[s:s + step]]
            release_pages(out)
