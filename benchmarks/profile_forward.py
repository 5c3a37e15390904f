"""Where one forward pass of bge-m3 spends its time, per torch runtime (torch.profiler, operator self time).

Loads the full-size random bge-m3 of `encode_speed.py` once in fp32, runs one padded batch (the last row a
tenth padding, as the encoder's batches are) with all three heads, then casts the same weights to bf16 and
runs it again; the ratio of the two is free of load-time and batching effects.

    flock /tmp/m3search-heavy.lock python benchmarks/profile_forward.py --batch 8 --length 512

Writes benchmarks/results/profile_forward-<time>.json and prints a Markdown table.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

from encode_speed import WORK, full_size_model, write_report  # noqa: E402

TOP = 8


def profile_forward(runtime: Any, ids: Any, mask: Any) -> dict[str, Any]:
    """Wall time of one untraced forward, then the operators' self CPU time in one traced forward."""
    from torch.profiler import ProfilerActivity, profile

    t0 = time.perf_counter()
    runtime.forward(ids, mask, dense=True, sparse=True, colbert=True)
    seconds = time.perf_counter() - t0
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        runtime.forward(ids, mask, dense=True, sparse=True, colbert=True)
    ops = sorted(prof.key_averages(), key=lambda e: e.self_cpu_time_total, reverse=True)
    total = sum(e.self_cpu_time_total for e in ops)
    return {
        "seconds": seconds,
        "load_average": os.getloadavg()[0],
        "ops": {
            e.key: {
                "self_s": e.self_cpu_time_total / 1e6,
                "share": e.self_cpu_time_total / total,
                "calls": e.count,
            }
            for e in ops[:TOP]
        },
    }


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--length", type=int, default=512)
    parser.add_argument("--model-dir", type=Path, default=WORK / "bge-m3-random-full")
    args = parser.parse_args(argv)

    import numpy as np
    import torch

    from m3search.encoders.registry import spec_for_directory
    from m3search.encoders.runtimes.hardware import detect_hardware
    from m3search.encoders.runtimes.torch_runtime import TorchRuntime

    path = full_size_model(args.model_dir)
    rng = np.random.default_rng(0)
    ids = rng.integers(5, 200_000, size=(args.batch, args.length))
    ids[:, 0], ids[:, -1] = 0, 2
    mask = np.ones_like(ids)
    pad = args.length // 10
    ids[-1, -pad:], mask[-1, -pad:] = 1, 0
    runtime = TorchRuntime.load(path, spec_for_directory(path), name="torch-fp32")
    results = {}
    for name in ("torch-fp32", "torch-bf16"):
        if name != runtime.name:
            runtime.cast(name)
        runtime.forward(ids[:1, :32], mask[:1, :32], dense=True, sparse=True, colbert=True)  # warm-up
        results[name] = profile_forward(runtime, ids, mask)
        print(f"{name}: {results[name]['seconds']:.2f}s", file=sys.stderr)
    tokens = int(mask.sum())
    report = {
        "benchmark": "profile_forward",
        "when": time.strftime("%Y-%m-%dT%H:%M:%S"),
        "machine": {
            "cpus": os.cpu_count(),
            "threads": torch.get_num_threads(),
            **detect_hardware().describe(),
            "torch": torch.__version__,
        },
        "batch": {"rows": args.batch, "length": args.length, "tokens": tokens},
        "results": results,
        "bf16_speedup": results["torch-fp32"]["seconds"] / results["torch-bf16"]["seconds"],
    }
    out = write_report("profile_forward", report)
    lines = [
        "| runtime | seconds | tokens/s | load | top operators (share of self CPU time) |",
        "|---|---|---|---|---|",
    ]
    for name, r in results.items():
        top = ", ".join(f"{k.removeprefix('aten::')} {v['share']:.0%}" for k, v in list(r["ops"].items())[:5])
        lines.append(
            f"| {name} | {r['seconds']:.2f} | {tokens / r['seconds']:.0f} | {r['load_average']:.1f} | {top} |"
        )
    print("\n".join(lines) + f"\n\nbf16 / fp32 speed-up: {report['bf16_speedup']:.2f}\nwrote {out}")
    return report


if __name__ == "__main__":
    main()
