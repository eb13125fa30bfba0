"""Keep freed image buffers in the process instead of handing them back to the kernel after every page."""

from __future__ import annotations

import ctypes
import ctypes.util

M_TRIM_THRESHOLD = -1  # glibc's mallopt parameters (malloc.h)
M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD = 64 << 20
TRIM_THRESHOLD = 256 << 20


def keep_image_buffers() -> bool:
    """Serve allocations below 64 MiB from the heap and keep up to 256 MiB of free heap.

    By default glibc gives each multi-megabyte buffer its own mapping and unmaps it when freed, so
    every page decoded touches fresh memory: ~3,000 page faults and ~9 ms of a 12 MP JPEG's 50 ms
    here (`bench/preprocess.py`). Reusing the heap costs resident memory that stays at its
    high-water mark, bounded by the pages in flight. False where the C library is not glibc."""
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    return bool(mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD)) and bool(mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD))


def give_back() -> bool:
    """Hand the free heap of every arena back to the kernel (glibc's malloc_trim). Called when the work
    runs out, so a burst's high-water mark does not stay resident while the daemon waits for files."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        trim = libc.malloc_trim
    except (OSError, AttributeError):
        return False
    trim.argtypes, trim.restype = [ctypes.c_size_t], ctypes.c_int
    return bool(trim(0))
