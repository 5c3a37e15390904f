"""Threads: pool control for latency-bound work (one query's small products and its encoding run on one
thread; a large query's long pieces on two), a numpy loader that concurrent readers and writers can share,
read-ahead for the scattered rows a query is about to read from a memory map, mapping what of a memory map is
already cached, warming a collection's files into
the page cache in the background, and copying bytes file to file in the kernel."""

from __future__ import annotations

import ctypes
import errno
import mmap
import os
import sys
import threading
import time
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


def load_array(path: Path, mmap: bool = False, map_cached: bool = True) -> np.ndarray:
    """`np.load` of a `.npy` file, one thread at a time. numpy parses each header with `ast.literal_eval`, and
    CPython 3.11's AST conversion keeps its recursion depth in shared state: two threads loading at once (a
    reader refreshing while the writer seals a segment) can fail with "SystemError: AST constructor recursion
    depth mismatch" (CPython gh-106905). Memory-mapped loads only parse the header, so the lock is held briefly;
    what of them is already in the page cache is mapped at once (`map_resident`) unless not `map_cached` (a
    file only copied by the kernel: nothing of it is read here)."""
    with _LOAD_LOCK:
        array = np.load(path, mmap_mode="r" if mmap else None)
    if mmap and map_cached:
        map_resident(array)
    return array


_LIBC = ctypes.CDLL(None, use_errno=True) if sys.platform.startswith("linux") else None
#: madvise(2) and mincore(2), None off Linux
MADVISE: Any = _LIBC.madvise if _LIBC is not None else None
_MINCORE: Any = _LIBC.mincore if _LIBC is not None else None
if _LIBC is not None:
    MADVISE.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
    _MINCORE.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_void_p]
_MADV_POPULATE_READ = 22  # Linux 5.14+
_PAGE = mmap.PAGESIZE
#: Resident runs mapped at most: a file cached in scattered pieces is left to page faults.
_MAX_RUNS = 4096


def map_resident(array: np.ndarray) -> int:
    """Map the pages of a memory-mapped `array` that are already in the page cache into this process now
    (`MADV_POPULATE_READ` over each resident run, found by `mincore`; Linux 5.14+), so that searches do not take
    a page fault for each few rows they read: re-scoring 30 dense rows at 100k took 49 µs with the faults, 15
    without (docs/INDEX.md). Pages not cached are left alone (reading them is `Collection.warm`'s); the page
    cache is shared, so this costs only page tables. Returns the bytes mapped; only advice, never an error."""
    if MADVISE is None or array.nbytes == 0 or not isinstance(array, np.memmap):
        return 0
    start = array.ctypes.data // _PAGE * _PAGE
    pages = -(-(array.ctypes.data + array.nbytes - start) // _PAGE)
    resident = np.zeros(pages, np.uint8)
    if _MINCORE(start, pages * _PAGE, resident.ctypes.data) != 0:
        return 0
    cached = np.diff(np.concatenate([[0], resident & 1, [0]]).astype(np.int8))
    edges = np.flatnonzero(cached)  # each resident run's first page and the page after it
    if len(edges) // 2 > _MAX_RUNS:
        return 0
    mapped = 0
    for first, end in edges.reshape(-1, 2).tolist():
        if MADVISE(start + first * _PAGE, (end - first) * _PAGE, _MADV_POPULATE_READ) == 0:
            mapped += (end - first) * _PAGE
    return mapped


def copy_range(source: int, target: int, offset: int, count: int, target_offset: int | None = None) -> None:
    """Copy `count` bytes of file `source` from `offset` into file `target` at `target_offset` (None: at its
    position, which moves on): in the kernel (`os.copy_file_range`), which at 400 MB takes ~0.1 s where reading
    them in and writing them out takes ~2 s, else through a buffer on file systems that cannot."""
    while count > 0:
        try:
            done = os.copy_file_range(source, target, count, offset, target_offset)
        except OSError as e:
            if e.errno not in (errno.EXDEV, errno.ENOSYS, errno.EOPNOTSUPP, errno.EINVAL):
                raise
            chunk = os.pread(source, min(count, 1 << 24), offset)
            done = (
                os.write(target, chunk) if target_offset is None else os.pwrite(target, chunk, target_offset)
            )
        if done == 0:
            raise OSError(errno.EIO, f"the source file ends {count} bytes early")
        offset += done
        count -= done
        target_offset = None if target_offset is None else target_offset + done


def prefetch_rows(array: np.ndarray, starts: np.ndarray, ends: np.ndarray) -> None:
    """Ask the kernel to read rows `[starts[i], ends[i])` of a memory-mapped `.npy` array now, all at once
    (`posix_fadvise(WILLNEED)`), so that the reads that follow wait for one round of parallel I/O instead of one
    page fault after another (200 cold rows of a 1M-document binary ColBERT store: 71 -> 27 ms; docs/INDEX.md).
    Only advice: nothing happens for arrays in RAM, views, where the call does not exist, or for a file gone
    from its directory (a segment a writer merged away while a reader still maps and searches it)."""
    if not (
        isinstance(array, np.memmap) and isinstance(array.base, mmap.mmap) and hasattr(os, "posix_fadvise")
    ):
        return
    row = array.strides[0]
    try:
        fd = os.open(array.filename, os.O_RDONLY)
    except FileNotFoundError:
        return
    try:
        for start, end in zip(starts.tolist(), ends.tolist()):
            if end > start:
                os.posix_fadvise(fd, array.offset + start * row, (end - start) * row, os.POSIX_FADV_WILLNEED)
    finally:
        os.close(fd)


#: Bytes read per call when warming a file.
WARM_CHUNK = 8 << 20
#: After each read a warm-up waits this many times as long as the read took: reading a quarter of the time,
#: queries that meanwhile wait on the disk are no slower than without a warm-up (docs/INDEX.md, "Warming").
WARM_PAUSE = 3.0
#: Share of the free memory a warm-up may fill (it reads into unused memory only, never evicting what other
#: files have in the page cache, or what an earlier warm-up read).
WARM_SHARE = 0.8
#: One warm-up at a time: each plans against the memory the ones before it left free.
_WARM_LOCK = threading.Lock()


def warm_plan(paths: list[Path], budget: int) -> list[tuple[Path, int]]:
    """(file, bytes to warm) for `paths`, smallest first (the small hot structures before a large store), until
    `budget` bytes; the file that crosses it is warmed up to the budget, the rest not at all."""
    sizes = []
    for path in paths:
        try:
            sizes.append((path.stat().st_size, str(path), path))
        except OSError:  # gone since it was listed (merged away): nothing to warm
            continue
    sizes.sort()
    plan, left = [], budget
    for size, _, path in sizes:
        if left <= 0:
            break
        plan.append((path, min(size, left)))
        left -= size
    return plan


def meminfo_bytes(field: str) -> int:
    """A /proc/meminfo figure in bytes (`MemFree`: memory nothing uses, not even the page cache; `Cached`: the
    page cache); 0 where unknown."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith(f"{field}:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


class WarmUp(threading.Thread):
    """A background warm-up (`warm_files`); `read` lists (file, bytes read) as it goes, `progress()` how far
    it is (so a server can say when its latency reaches the warm figures)."""

    def __init__(self, paths: list[Path], budget: int | None) -> None:
        super().__init__(name="m3search-warm", daemon=True)
        self.paths, self.budget = paths, budget
        self.read: list[tuple[Path, int]] = []
        #: bytes the plan will read (None until it is made: the thread waits for an earlier warm-up first)
        self.planned_bytes: int | None = None
        self.read_bytes = 0

    def progress(self) -> dict[str, int | str | None]:
        """{"state": "waiting" (for an earlier warm-up) | "reading" | "done", "planned_bytes", "read_bytes"}."""
        planned = self.planned_bytes
        state = "done" if not self.is_alive() else "waiting" if planned is None else "reading"
        return {"state": state, "planned_bytes": planned, "read_bytes": self.read_bytes}

    def run(self) -> None:
        with _WARM_LOCK:
            budget = int(WARM_SHARE * meminfo_bytes("MemFree")) if self.budget is None else self.budget
            buffer = bytearray(WARM_CHUNK)
            plan = warm_plan(self.paths, budget)
            self.planned_bytes = sum(length for _, length in plan)
            for path, length in plan:
                done = 0
                try:
                    with open(path, "rb", buffering=0) as f:
                        while done < length:
                            began = time.perf_counter()
                            n = min(f.readinto(buffer), length - done)
                            if not n:
                                break
                            done += n
                            self.read_bytes += n
                            time.sleep(WARM_PAUSE * (time.perf_counter() - began))
                    self.read.append((path, done))
                except OSError:  # replaced or removed since (a merge): nothing to warm
                    pass
                self.planned_bytes -= length - done  # what a file gone or shortened since the plan left out


def warm_files(paths: list[Path], budget: int | None = None) -> WarmUp:
    """Read `paths` into the page cache in a background thread (`warm_plan` order, within `budget` bytes;
    default `WARM_SHARE` of the free memory when the thread starts), so the first queries after opening a large
    collection do not wait on the disk for every row they touch. The files are read, not advised: Linux honours
    `posix_fadvise(WILLNEED)` only up to a few MB a call (64 MB calls cached an eighth of a 12 GB file). Paced
    by `WARM_PAUSE`, so it does not slow the queries it is for; the kernel may drop the pages again under
    memory pressure. Returns the started thread."""
    thread = WarmUp(paths, budget)
    thread.start()
    return thread
