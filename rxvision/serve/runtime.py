"""Process-level settings for a long-running server process.

glibc gives each thread that allocates its own malloc arena (up to 8 per core). In the
service, the event loop, the decode threads and the model thread all allocate and free
image-sized buffers, so memory freed in one arena cannot serve another thread, and the
resident size creeps up in steps of tens of MB. With two arenas, `benchmarks/load.py`
showed a flat RSS after the first few thousand requests (see docs/service.md).
"""

from __future__ import annotations

import ctypes
import os
import sys

M_ARENA_MAX = -8  # glibc's mallopt parameter number (malloc.h)
DEFAULT_MALLOC_ARENAS = 2


def limit_malloc_arenas(count: int = DEFAULT_MALLOC_ARENAS) -> bool:
    """Cap glibc malloc arenas for this process (call before threads start allocating).

    Returns:
        True if the cap was set; False on a C library other than glibc, or when the
        ``MALLOC_ARENA_MAX`` environment variable already decides (the operator's choice).
    """
    if os.environ.get("MALLOC_ARENA_MAX") or not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL("libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # musl and others: no glibc arenas to cap
        return False
    return bool(mallopt(M_ARENA_MAX, int(count)))
