"""How fast this host is right now, in three small probes that every latency benchmark records beside its CPU.

Machines here differ between sessions while reporting the same CPU: on 2026-12-02 two hosts that both said
"AMD EPYC", family 25 model 1, ran the same unchanged search stage 2.1x apart (docs/INDEX.md, "`all` at 1M
within 20 ms"). A virtual machine's share of its cores and memory is not visible in /proc/cpuinfo, so the
benchmarks measure it: absolute milliseconds from two sessions compare only after dividing by these.

    PYTHONPATH=src python benchmarks/host_speed.py      # prints the probes
"""

from __future__ import annotations

import json
import os
import platform
import time
from collections.abc import Callable
from typing import Any

import numpy as np
from threadpoolctl import threadpool_limits

from m3search.encoders.runtimes.hardware import cpu_record

#: Each probe's best of this many runs (the best: the host's speed, not its worst interruption).
REPS = 7


def _best_s(run: Callable[[], object], reps: int = REPS) -> float:
    best = float("inf")
    for _ in range(reps):
        start = time.perf_counter()
        run()
        best = min(best, time.perf_counter() - start)
    return best


def host_speed() -> dict[str, float]:
    """Three single-thread probes (about half a second together): float32 matrix products (GFLOP/s: the
    re-scoring and ColBERT arithmetic), random 4-byte reads from a 256 MB array (ns each: graph walks and
    memory-mapped rows), and a loop of Python calls (ns each: the per-search layer)."""
    rng = np.random.default_rng(0)
    a = rng.standard_normal((256, 1024), dtype=np.float32)
    b = rng.standard_normal((1024, 1024), dtype=np.float32)
    table = rng.integers(0, 1 << 30, 64 << 20, dtype=np.int32)  # 256 MB
    where = rng.integers(0, len(table), 1 << 20)
    calls = 200_000

    def python_calls() -> None:
        f = abs
        for i in range(calls):
            f(i)

    with threadpool_limits(1):
        gemm = _best_s(lambda: a @ b)
    reads = _best_s(lambda: table[where].sum(dtype=np.int64))
    return {
        "gemm_fp32_gflops_1thread": 2 * a.shape[0] * a.shape[1] * b.shape[1] / gemm / 1e9,
        "random_read_ns": reads / len(where) * 1e9,
        "python_call_ns": _best_s(python_calls) / calls * 1e9,
    }


def machine_record() -> dict[str, Any]:
    """The CPU (model, flags), core count, RAM, platform and `host_speed()`: what a benchmark's JSON records."""
    return {
        "cpus": os.cpu_count(),
        "ram_gb": os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30,
        "platform": platform.platform(),
        **cpu_record(),
        "host_speed": host_speed(),
    }


if __name__ == "__main__":
    print(json.dumps(host_speed(), indent=2))
