"""Keep the host's freed memory for reuse instead of returning it to the kernel.

glibc serves blocks of 32 MiB and more (every full-size channel of a CT) with their own ``mmap`` and unmaps them when
freed, so the next case's same-sized array is faulted in and zeroed page by page again: on a 2-core machine that was
44 % of the case pipeline's CPU time as system time. With ``mmap`` off and trimming off, freed blocks stay in the
heap and the next allocation of the same size reuses them; the process's peak memory does not grow, it is only kept
until the run ends. Only glibc has ``mallopt``; elsewhere this does nothing.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import sys

M_TRIM_THRESHOLD = -1
M_MMAP_MAX = -4
#: Never give freed heap memory back to the kernel during the run (the largest value ``mallopt`` takes).
NEVER_TRIM = 2**31 - 1


def retain_freed_memory(enabled: bool = True) -> bool:
    """Ask glibc to keep freed memory for reuse (``mmap`` off, trimming off); returns whether it took effect."""
    if not enabled or not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # not glibc (musl has no mallopt)
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    return bool(mallopt(M_MMAP_MAX, 0)) and bool(mallopt(M_TRIM_THRESHOLD, NEVER_TRIM))
