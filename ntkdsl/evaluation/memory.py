"""Memory: the headroom under every limit that applies (free memory, rlimits, cgroups),
the check before an allocation, the heap tuning of glibc, and the release of written pages
of a file map from resident memory."""
from __future__ import annotations

import ctypes
import mmap
import os
import sys
from collections.abc import Callable
from functools import cache

import numpy as np

from ..errors import InputError


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


@cache
def _madvise() -> Callable | None:
    """The C library's madvise (Linux), looked up once per process; None elsewhere."""
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


def is_shared_file_map(arr: np.ndarray) -> bool:
    """True for an np.memmap whose writes go to its file (modes 'r+' and 'w+'); a
    copy-on-write map ('c') keeps its writes only in memory, so its pages must stay."""
    return isinstance(arr, np.memmap) and getattr(arr, "mode", None) in ("r+", "w+")


def release_pages(arr: np.ndarray) -> None:
    """Drop the pages of a shared file map from this process's resident memory.

    The data is not lost: in a shared file mapping a written page *is* the page-cache page,
    which the kernel writes back to the file; unmapping only stops it counting towards this
    process. Later access faults the page back in from the cache or the file."""
    madvise = _madvise()
    if madvise is None or not is_shared_file_map(arr) or arr.size == 0:
        return
    lo, hi = np.lib.array_utils.byte_bounds(arr) if hasattr(np.lib, "array_utils") \
        else np.byte_bounds(arr)
    start = lo - lo % mmap.PAGESIZE  # the map starts on a page boundary, so this is inside
    madvise(start, hi - start, mmap.MADV_DONTNEED)


@cache
def _keep_freed_heap() -> None:
    """Once per process: make glibc keep freed chunk temporaries instead of handing them
    back to the OS after every call of the program (which costs page faults: measured 130
    instead of 45 ns per entry). Freeing one block above the mmap threshold is glibc's own
    cue to raise its mmap threshold to that size and its trim threshold to twice it; any
    NumPy program that frees a mid-sized array does the same. Nothing is touched, so no
    memory is used.

    A MALLOC_TRIM_THRESHOLD_ (or MALLOC_MMAP_THRESHOLD_) in the environment switches that
    adjustment off: Dask's nanny sets a 64 kB trim threshold for its workers, where a
    kernel block then ran at 105 instead of 36 ns per entry. Then the thresholds are set
    to what the adjustment would reach."""
    del_me = np.empty(16 * 2**20, dtype=np.uint8)
    del del_me
    if "MALLOC_TRIM_THRESHOLD_" in os.environ or "MALLOC_MMAP_THRESHOLD_" in os.environ:
        _set_heap_thresholds(mmap_bytes=16 * 2**20, trim_bytes=32 * 2**20)


# glibc's mallopt parameters (malloc.h)
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3


def _set_heap_thresholds(mmap_bytes: int, trim_bytes: int) -> None:
    """glibc's mmap and trim thresholds by mallopt; nothing elsewhere (no glibc)."""
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    mallopt(_M_MMAP_THRESHOLD, mmap_bytes)
    mallopt(_M_TRIM_THRESHOLD, trim_bytes)
