"""Keep freed image buffers in the process instead of handing them back to the kernel after every page."""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import os

M_TRIM_THRESHOLD = -1  # glibc's mallopt parameters (malloc.h)
M_MMAP_THRESHOLD = -3
M_ARENA_MAX = -8
MMAP_THRESHOLD = 16 << 20
TRIM_THRESHOLD = 32 << 20


@functools.cache
def _libc() -> ctypes.CDLL:
    """Looked up once: find_library runs `ldconfig -p`, and give_back() is called after every burst."""
    return ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")


def keep_image_buffers() -> bool:
    """Serve allocations below 16 MiB from the heap, keep up to 32 MiB of free heap, and use one
    malloc arena per core.

    By default glibc gives each multi-megabyte buffer its own mapping and unmaps it when freed, so
    every page decoded touches fresh memory: ~3,000 page faults and ~9 ms of a 12 MP JPEG's 50 ms
    here (`bench/preprocess.py`). A 12 MP JPEG decoded at 3/8 scale (5 MB) now reuses the heap; a
    full-size HEIC (36 MB) still gets its own mapping, handed back as soon as it is freed, so it does
    not raise the heap's high-water mark for good. By default glibc also makes up to 8 arenas per
    core, and with a worker per request slot plus the prefetch (40 threads at 32 slots) the free
    memory kept in each of them added up: in a 300-photo 12 MP burst at 32 slots the peak RSS was
    430–470 MB with those defaults and 310–320 MB with one arena per core (`bench/throughput.py`).
    False where the C library is not glibc."""
    try:
        mallopt = _libc().mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    arenas = max(2, os.cpu_count() or 1)
    return (
        bool(mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD))
        and bool(mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD))
        and bool(mallopt(M_ARENA_MAX, arenas))
    )


def give_back() -> bool:
    """Hand the free heap of every arena back to the kernel (glibc's malloc_trim). Called when the work
    runs out, so a burst's high-water mark does not stay resident while the daemon waits for files."""
    try:
        trim = _libc().malloc_trim
    except (OSError, AttributeError):
        return False
    trim.argtypes, trim.restype = [ctypes.c_size_t], ctypes.c_int
    return bool(trim(0))
