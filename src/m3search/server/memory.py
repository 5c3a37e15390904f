"""Giving freed memory back to the operating system after big model calls.

glibc's malloc keeps what a big call frees (activations of a long batch, token buffers) inside its heaps and
per-thread arenas instead of returning it, so a server's resident memory stays at its high-water mark; the
model threads each have their own arena. `malloc_trim(0)` hands the free pages of every arena back. It is
called after each bulk-lane model call (big calls are where the high-water marks come from); elsewhere than
glibc it is a no-op.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import re
from collections.abc import Callable
from functools import cache
from pathlib import Path


@cache
def _malloc_trim() -> Callable[[int], int] | None:
    name = ctypes.util.find_library("c")
    if name is None:
        return None
    try:
        return ctypes.CDLL(name).malloc_trim
    except (OSError, AttributeError):  # not glibc (musl, macOS)
        return None


def release_free_memory() -> bool:
    """Return the allocator's free pages to the OS; whether anything could be done."""
    trim = _malloc_trim()
    return bool(trim is not None and trim(0))


def rss_mb(pid: int | str = "self") -> float:
    """Resident set size of process `pid` (default: this one) in MB, from `/proc/PID/status` (Linux)."""
    status = Path(f"/proc/{pid}/status").read_text()
    found = re.search(r"^VmRSS:\s+(\d+) kB", status, re.M)
    if found is None:
        raise OSError(f"/proc/{pid}/status has no VmRSS")
    return int(found.group(1)) / 1024
