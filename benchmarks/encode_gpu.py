"""Encode speed of bge-m3 on a CUDA GPU, against FlagEmbedding's BGEM3FlagModel in fp16 (its GPU setting).

The workload and worker processes of encode_speed.py (full-size bge-m3 with random weights and the real
tokenizer, SciFact abstracts, dense + sparse + ColBERT, repetitions interleaved round-robin), measured the
GPU's way: wall time (every encode returns host arrays, so the device's queue is drained), peak device memory,
and a ceiling from this GPU's own matrix-product speed in each runtime's precision. Deviations are against
m3search's torch-fp32 on the same GPU; `flagembedding-fp32` against it is the parity check on the GPU.
`cuda-bf16+serial` is m3search's encoder waiting for each batch before starting the next: the A/B of its
one-batch-in-flight pipeline. One 8192-token document is then encoded by every runtime.

    python benchmarks/encode_gpu.py --docs 1024 --reps 3 --batch-size 64

Writes benchmarks/results/encode_gpu-<time>.json and prints Markdown tables.
"""

from __future__ import annotations

import argparse
import os
import platform
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
from encode_speed import (
    ANCHOR,
    LONG_TOKENS,
    SCIFACT,
    WORK,
    _deviations,
    _fmt,
    _run,
    _start,
    _stop,
    cpu_info,
    long_document,
    workload,
    workload_record,
    write_report,
)

REFERENCE = "torch-fp32"
DEFAULT_RUNTIMES = (ANCHOR, f"{ANCHOR}-fp32", REFERENCE, "cuda-fp16", "cuda-bf16", "cuda-bf16+serial", "auto")
#: The precision of each worker's matrix products (`auto` is looked up by the runtime it chose).
PRECISION = {
    ANCHOR: "fp16",
    f"{ANCHOR}-fp32": "fp32",
    "torch-fp32": "fp32",
    "cuda-fp16": "fp16",
    "cuda-bf16": "bf16",
}
PRECISIONS = ("fp32", "fp16", "bf16")


def gpu_gemm(m: int = 16384, k: int = 1024, n: int = 4096, reps: int = 20) -> dict[str, Any]:
    """TFLOP/s of an (m x k) @ (k x n) product (the feed-forward shape of a full batch) per precision, timed
    with CUDA events over `reps` products after warm-up; fp32 at torch's default (no TF32), as the runtimes."""
    import torch

    out: dict[str, Any] = {"shape": [m, k, n]}
    for name in PRECISIONS:
        dtype = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}[name]
        a = torch.randn(m, k, device="cuda", dtype=dtype)
        b = torch.randn(k, n, device="cuda", dtype=dtype)
        for _ in range(3):
            a @ b
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        for _ in range(reps):
            a @ b
        end.record()
        end.synchronize()
        out[name] = {"tflops": 2 * m * k * n * reps / (start.elapsed_time(end) / 1e3) / 1e12}
    return out


def gpu_info() -> dict[str, Any]:
    """The GPU, its driver and the torch/CUDA build."""
    import torch

    props = torch.cuda.get_device_properties(0)
    info = {
        "name": props.name,
        "multiprocessors": props.multi_processor_count,
        "memory_gb": props.total_memory / 1e9,
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
    }
    try:
        info["driver"] = subprocess.run(
            ["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
            capture_output=True,
            check=False,
            text=True,
            timeout=30,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        info["driver"] = None
    return info


def max_abs_diff(reference: Any, candidate: Any) -> dict[str, float]:
    """Largest absolute difference per output (sparse over the union of token ids): the parity measure."""
    sparse = max(
        (
            abs(r.get(t, 0.0) - c.get(t, 0.0))
            for r, c in zip(reference.sparse, candidate.sparse)
            for t in r | c
        ),
        default=0.0,
    )
    colbert = max(float(np.abs(r - c).max(initial=0.0)) for r, c in zip(reference.colbert, candidate.colbert))
    return {
        "dense": float(np.abs(reference.dense - candidate.dense).max()),
        "sparse": sparse,
        "colbert": colbert,
    }


def _parity(names: list[str], tag: str) -> dict[str, dict[str, float]]:
    """Max absolute differences: FlagEmbedding fp32 against torch-fp32, and each serial variant against its
    pipelined runtime (the pipeline must not change a number)."""
    import pickle

    def load(name: str) -> Any:
        with open(WORK / "outputs" / f"{tag}-{name}.pkl", "rb") as f:
            return pickle.load(f)

    pairs = [(REFERENCE, f"{ANCHOR}-fp32")] + [(n.partition("+")[0], n) for n in names if "+" in n]
    return {f"{b} vs {a}": max_abs_diff(load(a), load(b)) for a, b in pairs if a in names and b in names}


def _profile(runtime: str, path: Path, texts: list[str], args: argparse.Namespace) -> dict[str, str]:
    """Where one warm encode on `runtime` spends its time: the host's Python functions by own time (cProfile),
    then the device's kernels by own GPU time (torch.profiler, a second encode)."""
    import cProfile
    import io
    import pstats

    import torch

    from m3search.encoders import BGEM3Encoder

    encoder = BGEM3Encoder(path, runtime=runtime, device=args.device)
    options = {"batch_size": args.batch_size, "max_length": args.max_length, "return_sparse": True}
    encoder.encode(texts[:64], return_colbert=True, **options)
    profiler = cProfile.Profile()
    profiler.runcall(encoder.encode, texts, return_colbert=True, **options)
    host = io.StringIO()
    pstats.Stats(profiler, stream=host).sort_stats("tottime").print_stats(25)
    activities = [torch.profiler.ProfilerActivity.CPU]
    if torch.cuda.is_available():
        activities.append(torch.profiler.ProfilerActivity.CUDA)
    with torch.profiler.profile(activities=activities) as kernels:
        encoder.encode(texts, return_colbert=True, **options)
    by = "self_cuda_time_total" if torch.cuda.is_available() else "self_cpu_time_total"
    device = kernels.key_averages().table(sort_by=by, row_limit=20)
    print(host.getvalue(), device, sep="\n", file=sys.stderr)
    return {"host": host.getvalue(), "kernels": device}


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--docs", type=int, default=1024, help="SciFact abstracts per repetition")
    parser.add_argument("--reps", type=int, default=3, help="interleaved repetitions")
    parser.add_argument("--runtimes", default=",".join(DEFAULT_RUNTIMES), help="comma-separated worker names")
    parser.add_argument("--device", default="cuda")
    parser.add_argument(
        "--batch-size", type=int, default=64, help="batch size of every runtime, FlagEmbedding's too"
    )
    parser.add_argument("--max-length", type=int, default=512)
    parser.add_argument("--long", dest="long_doc", action=argparse.BooleanOptionalAction, default=True)
    parser.add_argument("--model-dir", type=Path, default=WORK / "bge-m3-random-full")
    parser.add_argument("--corpus", type=Path, default=SCIFACT, help="BEIR corpus.jsonl to draw texts from")
    parser.add_argument(
        "--profile",
        metavar="RUNTIME",
        help="finally, profile encodes on RUNTIME in-process (host functions, GPU kernels)",
    )
    args = parser.parse_args(argv)

    os.environ.setdefault("M3SEARCH_HOME", str(WORK / "home"))
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    import torch

    if not torch.cuda.is_available():
        sys.exit("encode_gpu.py needs a CUDA GPU (benchmarks/encode_speed.py measures CPUs)")
    gpu = gpu_info()
    gemm = gpu_gemm()
    print(
        f"{gpu['name']}: " + ", ".join(f"{p} {gemm[p]['tflops']:.0f} TFLOP/s" for p in PRECISIONS),
        file=sys.stderr,
    )
    path, tokenizer, texts, lengths, parts = workload(args)
    tokens, flops = sum(lengths), sum(parts.values())
    names = [n.strip() for n in args.runtimes.split(",") if n.strip()]

    threads = torch.get_num_threads()
    workers = _start(names, path, args.device, threads, (args.batch_size, args.batch_size))
    long_timings: dict[str, list] = {}
    try:
        timings = _run(workers, texts, args.max_length, args.reps, "scifact")
        if args.long_doc:
            long_timings = _run(
                workers, [long_document(tokenizer, corpus=args.corpus)], LONG_TOKENS, 1, "long"
            )
    finally:
        _stop(workers)
    deviations = _deviations(list(workers), "scifact", REFERENCE) if REFERENCE in workers else {}
    parity = _parity(list(workers), "scifact")

    anchor_best = min(t["seconds"] for t in timings[ANCHOR]) if ANCHOR in timings else None
    rows = {}
    for name in workers:
        best = min(t["seconds"] for t in timings[name])
        base = name.partition("+")[0]
        chosen = workers[name]["describe"].get("runtime", base) if base == "auto" else base
        precision = PRECISION.get(chosen, "fp32")
        ceiling = tokens / (flops / (gemm[precision]["tflops"] * 1e12))
        long = long_timings.get(name)
        rows[name] = {
            "runtime": workers[name]["describe"],
            "precision": precision,
            "seconds_per_rep": [round(t["seconds"], 3) for t in timings[name]],
            "tokens_per_s": tokens / best,
            "docs_per_s": len(texts) / best,
            "speedup_vs_anchor": anchor_best / best if anchor_best else None,
            "ceiling_tokens_per_s": ceiling,
            "pct_ceiling": 100 * tokens / best / ceiling,
            "gpu_peak_gb": max(t["gpu_peak"] for t in timings[name]) / 1e9,
            "load_seconds": workers[name]["load_seconds"],
            "deviation": deviations.get(name),
            "long_doc": {"seconds": long[0]["seconds"], "gpu_peak_gb": long[0]["gpu_peak"] / 1e9}
            if long
            else None,
        }
    report = {
        "benchmark": "encode_gpu",
        "profile": _profile(args.profile, path, texts, args) if args.profile else None,
        "command": " ".join([Path(sys.argv[0]).name] + (argv if argv is not None else sys.argv[1:])),
        "when": time.strftime("%Y-%m-%dT%H:%M:%S"),
        "machine": {"gpu": gpu, "platform": platform.platform(), "cpus": os.cpu_count(), "cpu": cpu_info()},
        **workload_record(args, path, len(texts), tokens),
        "anchor": ANCHOR,
        "reference": REFERENCE,
        "gemm": gemm,
        "workload_tflop": flops / 1e12,
        "parity_max_abs_diff": parity,
        "results": rows,
    }
    print(_table(report))
    print(f"\nwrote {write_report('encode_gpu', report)}")
    return report


def _table(report: dict[str, Any]) -> str:
    gpu, gemm, data = report["machine"]["gpu"], report["gemm"], report["data"]
    lines = [
        f"GPU: {gpu['name']} (driver {gpu['driver']}, torch {gpu['torch']}, CUDA {gpu['cuda']}); "
        f"{data['docs']} docs, {data['tokens']} tokens, batch {data['batch_size']}",
        "GEMM "
        + "x".join(map(str, gemm["shape"]))
        + ": "
        + ", ".join(f"{p} {gemm[p]['tflops']:.0f} TFLOP/s" for p in PRECISIONS),
        "",
        "| runtime | precision | tokens/s | × FlagEmbedding fp16 | % ceiling | GPU peak GB | dense cos min "
        "| sparse Δ max | ColBERT cos min | 8192-tok s | 8192-tok GPU GB |",
        "|" + "---|" * 11,
    ]
    for name, r in report["results"].items():
        dev, long = r["deviation"] or {}, r["long_doc"] or {}
        label = name if name != "auto" else f"auto ({r['runtime'].get('runtime')})"
        lines.append(
            f"| {label} | {r['precision']} | {r['tokens_per_s']:.0f} | {_fmt(r['speedup_vs_anchor'], '.2f')} "
            f"| {r['pct_ceiling']:.0f}% | {r['gpu_peak_gb']:.2f} | {_fmt(dev.get('dense_cosine_min'), '.5f')} "
            f"| {_fmt(dev.get('sparse_rel_diff_max'), '.4f')} | {_fmt(dev.get('colbert_cosine_min'), '.5f')} "
            f"| {_fmt(long.get('seconds'), '.2f')} | {_fmt(long.get('gpu_peak_gb'), '.2f')} |"
        )
    lines += ["", "| parity (max abs diff) | dense | sparse | ColBERT |", "|---|---|---|---|"]
    for pair, d in report["parity_max_abs_diff"].items():
        lines.append(f"| {pair} | {d['dense']:.2e} | {d['sparse']:.2e} | {d['colbert']:.2e} |")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
