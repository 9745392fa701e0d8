"""Keep freed memory mapped between batches (glibc's malloc).

The forward pass allocates the same large temporaries (a few MiB each) for every
batch.  By default glibc serves such blocks with mmap, or trims them off the heap
when freed, and returns the pages to the kernel; the next batch then takes a page
fault on every 4 KiB page it touches again.  On the Korean model that is ~20,000
faults and ~15% of a steady-state pass.  ``mallopt(M_MMAP_THRESHOLD)`` and
``mallopt(M_TRIM_THRESHOLD)`` make freed blocks stay in the heap for reuse.
"""
from __future__ import annotations

import ctypes

M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3


def keep_freed_memory(limit: int = 1 << 30) -> bool:
    """Serve blocks below ``limit`` bytes from the heap and keep up to ``limit`` freed
    bytes mapped.  Returns False where glibc's ``mallopt`` is not available."""
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    return bool(mallopt(M_MMAP_THRESHOLD, limit)) and bool(mallopt(M_TRIM_THRESHOLD, limit))
