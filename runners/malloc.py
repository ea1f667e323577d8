"""Keep freed memory for reuse (glibc): XLA:CPU allocates a compiled call's temporaries afresh at every call.

Under glibc's defaults a temporary of a few MiB or more is mmap'ed and unmapped again at every call, so every
call page-faults its temporaries in anew: a 50-member quadratic_deep population's evaluation (two 18 MB
temporaries) takes ~10,000 page faults and 25 ms per call instead of 0 and 9 ms (measured with
bench/bench_population.py's profile; the mmap threshold glibc adapts by itself flips between the two). Serving
allocations below 32 MiB from the heap and keeping up to 1 GiB of freed heap makes the second call reuse the
first call's pages. Numbers do not change: only where the bytes live.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools

#: mallopt parameters (malloc.h)
M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3
#: allocations below this come from the heap (glibc's upper limit for the threshold on 64-bit: 32 MiB)
MMAP_THRESHOLD = 32 << 20
#: freed heap memory kept for reuse before any is given back to the system
TRIM_THRESHOLD = 1 << 30


@functools.cache
def keep_freed_memory() -> bool:
    """Set the two thresholds for this process (glibc only; elsewhere a no-op). True when both were set. Once
    per process: later calls return the first answer (finding libc runs ``ldconfig``)."""
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False  # not glibc (macOS, musl without mallopt): nothing to tune
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    return bool(mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD)) and bool(mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD))
