"""Threads: pool control for latency-bound work (one query's small products and its encoding run on one
thread; a large query's long pieces on two), a numpy loader that concurrent readers and writers can share, and
read-ahead for the scattered rows a query is about to read from a memory map."""

from __future__ import annotations

import mmap
import os
import sys
import threading
from pathlib import Path
from typing import Any, Literal

import numpy as np
from threadpoolctl import ThreadpoolController

#: (modules imported when built, the controller of the thread pools loaded then)
_threadpools: tuple[int, ThreadpoolController] | None = None


def one_thread(user_api: Literal["blas", "openmp"] = "blas") -> Any:
    """A context that runs one query's work on one thread of `user_api` (BLAS products; OpenMP, which torch's
    CPU kernels use — limited for the calling thread only). A query's pieces are small: splitting them costs
    more than it saves, and on a busy machine each hand-off to a second thread can wait a whole scheduler slice
    (a 0.4 ms product took ~80 ms; encoding one e5-small query took ~1 s instead of ~50 ms on 2 busy cores)."""
    return thread_limit(1, user_api)


def thread_limit(threads: int, user_api: Literal["blas", "openmp"] = "blas") -> Any:
    """A context that runs the work inside on at most `threads` threads of `user_api` (see `one_thread`)."""
    global _threadpools  # noqa: PLW0603 - one process-wide cache
    if _threadpools is None or _threadpools[0] != len(
        sys.modules
    ):  # rescan after imports (torch loads later)
        _threadpools = (len(sys.modules), ThreadpoolController())
    return _threadpools[1].limit(limits=threads, user_api=user_api)


#: Environment variable: the threads one large query may use (default: 2, or 1 where the process has one CPU).
QUERY_THREADS_ENV = "M3SEARCH_QUERY_THREADS"


def query_threads() -> int:
    """Threads a large query's pieces may run on (`M3SEARCH_QUERY_THREADS`; default min(2, the CPUs this
    process may use)): the exception to `one_thread` for pieces of many milliseconds (a deep ColBERT re-rank
    over packed codes), where a second core shortens the wait and the hand-off costs little."""
    raw = os.environ.get(QUERY_THREADS_ENV, "")
    if raw.strip():
        try:
            threads = int(raw)
        except ValueError:
            raise ValueError(f"{QUERY_THREADS_ENV} must be a whole number of threads, got {raw!r}") from None
        if threads < 1:
            raise ValueError(f"{QUERY_THREADS_ENV} must be at least 1, got {threads}")
        return threads
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    return min(2, cpus)


_LOAD_LOCK = threading.Lock()


def load_array(path: Path, mmap: bool = False) -> np.ndarray:
    """`np.load` of a `.npy` file, one thread at a time. numpy parses each header with `ast.literal_eval`, and
    CPython 3.11's AST conversion keeps its recursion depth in shared state: two threads loading at once (a
    reader refreshing while the writer seals a segment) can fail with "SystemError: AST constructor recursion
    depth mismatch" (CPython gh-106905). Memory-mapped loads only parse the header, so the lock is held briefly."""
    with _LOAD_LOCK:
        return np.load(path, mmap_mode="r" if mmap else None)


def prefetch_rows(array: np.ndarray, starts: np.ndarray, ends: np.ndarray) -> None:
    """Ask the kernel to read rows `[starts[i], ends[i])` of a memory-mapped `.npy` array now, all at once
    (`posix_fadvise(WILLNEED)`), so that the reads that follow wait for one round of parallel I/O instead of one
    page fault after another (200 cold rows of a 1M-document binary ColBERT store: 71 -> 27 ms; docs/INDEX.md).
    Only advice: nothing happens for arrays in RAM, views, or where the call does not exist."""
    if not (
        isinstance(array, np.memmap) and isinstance(array.base, mmap.mmap) and hasattr(os, "posix_fadvise")
    ):
        return
    row = array.strides[0]
    fd = os.open(array.filename, os.O_RDONLY)
    try:
        for start, end in zip(starts.tolist(), ends.tolist()):
            if end > start:
                os.posix_fadvise(fd, array.offset + start * row, (end - start) * row, os.POSIX_FADV_WILLNEED)
    finally:
        os.close(fd)
