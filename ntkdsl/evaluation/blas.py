"""Every loaded BLAS held to one thread while an evaluation runs, cheaply re-checked for
libraries loaded meanwhile (the C library's load counter)."""
from __future__ import annotations

import ctypes
import sys
from functools import cache, lru_cache

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


@cache
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


def _loaded_blas():
    """threadpoolctl's controller of every BLAS loaded now, or None without threadpoolctl.
    The libraries are scanned again only when the stamp says some may have appeared."""
    return _blas_controller(_loaded_libraries_stamp())


# One entry: the scan for the latest stamp. A stamp seen again returns the same controller
# object, which ``_BlasLimit.refresh`` takes to mean "nothing new to limit".
@lru_cache(maxsize=1)
def _blas_controller(stamp: int):
    """threadpoolctl's controller of the BLAS libraries loaded at ``stamp``."""
    try:
        from threadpoolctl import ThreadpoolController
    except ImportError:  # pragma: no cover - scikit-learn brings threadpoolctl
        return None
    return ThreadpoolController().select(user_api="blas")


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
