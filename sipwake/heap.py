"""Memory freed after a burst goes back to the operating system.

Python keeps objects over 512 bytes (a finished transaction's response bytes, big
dict tables) in the C library's heap, which keeps pages it freed unless asked. After a
registration storm that was ~13 MB per 20,000 REGISTERs of resident memory holding
nothing (bench/vs_kamailio.py memory test). glibc's malloc_trim(0) hands the free pages
back (2 ms for a 300 MB heap); elsewhere this does nothing.
"""

from __future__ import annotations

import ctypes
import ctypes.util
from collections.abc import Callable


def _trimmer() -> Callable[[], object] | None:
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        trim = libc.malloc_trim
    except (OSError, AttributeError):  # not glibc (musl, macOS): nothing to ask
        return None
    trim.argtypes = [ctypes.c_size_t]
    trim.restype = ctypes.c_int
    return lambda: trim(0)


_TRIM = _trimmer()


def give_back() -> None:
    """Return the C heap's free pages to the OS (a no-op without glibc)."""
    if _TRIM is not None:
        _TRIM()
