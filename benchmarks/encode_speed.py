"""Encode speed of bge-m3 per runtime, against FlagEmbedding's BGEM3FlagModel (fp32 on CPU, fp16 on GPU).

Builds (once, cached under benchmarks/.work/) the full-size bge-m3 architecture with random weights and the
real XLM-R tokenizer, then encodes SciFact abstracts (dense + sparse + ColBERT, max length 512) with each
runtime in its own worker process. Repetitions are interleaved round-robin so that a busy machine slows every
runtime alike; ratios are against the FlagEmbedding anchor of the same run, in wall time and in the worker's
CPU time (all its threads): on a shared machine the CPU-time ratio is the steadier one, since time spent
descheduled while other jobs run does not count. Each worker also reports its peak
RSS while encoding and its outputs' deviation from the fp32 anchor, and finally encodes one 8192-token
document (time and peak RSS).

    flock /tmp/m3search-heavy.lock python benchmarks/encode_speed.py --docs 32 --reps 2

Before the runtimes, it measures the machine's matrix-product speed (fp32, bf16, int8; the feed-forward shape,
in CPU time x threads, i.e. what the threads deliver when not shared) and reports each runtime against its
ceiling: the tokens/s the workload's FLOPs would allow if every product ran at that speed and nothing else
cost anything ("% own" uses the runtime's own arithmetic: fp32, bf16, or int8 with the fp32 feed-forward
down-projections; "% machine" the fastest precision of this CPU).

Writes benchmarks/results/encode_speed-<time>.json and prints Markdown tables.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import pickle
import platform
import random
import resource
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
WORK = ROOT / "benchmarks" / ".work"
RESULTS = ROOT / "benchmarks" / "results"
SCIFACT = ROOT.parent / "shared" / "data" / "scifact" / "corpus.jsonl"
ANCHOR = "flagembedding"
DEFAULT_RUNTIMES = (ANCHOR, "torch-fp32", "torch-bf16", "onnx-fp32", "onnx-int8", "auto")
LONG_TOKENS = 8192


# ---- inputs ---------------------------------------------------------------------------------------------


def full_size_model(dest: Path) -> Path:
    """The random full-size bge-m3 (24 layers, 1024 wide, 16 heads) with the real tokenizer; built once."""
    from m3search.testing import build_random_m3

    if not (dest / "sparse_linear.pt").is_file():
        print(f"building the full-size random bge-m3 in {dest} (once; ~2.3 GB)", file=sys.stderr)
        tmp = dest.with_name(dest.name + ".tmp")
        build_random_m3(tmp, num_layers=24, hidden_size=1024, num_heads=16)
        tmp.rename(dest)
    return dest


def scifact_abstracts(n: int, seed: int = 0, corpus: Path = SCIFACT) -> list[str]:
    """`n` SciFact abstracts (title + text) from `corpus` (BEIR corpus.jsonl) drawn with a fixed seed."""
    with corpus.open(encoding="utf-8") as f:
        docs = [json.loads(line) for line in f]
    random.Random(seed).shuffle(docs)
    return [f"{d['title']} {d['text']}".strip() for d in docs[:n]]


def long_document(tokenizer: Any, tokens: int = LONG_TOKENS, corpus: Path = SCIFACT) -> str:
    """One text of at least `tokens` tokens: SciFact abstracts concatenated."""
    parts, count = [], 0
    for text in scifact_abstracts(400, seed=1, corpus=corpus):
        parts.append(text)
        count += len(tokenizer(text, add_special_tokens=False)["input_ids"])
        if count >= tokens:
            break
    return "\n".join(parts)


def workload(args: argparse.Namespace) -> tuple[Path, Any, list[str], list[int], dict[str, float]]:
    """What the runtimes encode: the model (built once), its tokenizer, `args.docs` abstracts from
    `args.corpus`, their token lengths (at most `args.max_length`) and the FLOPs of encoding them."""
    from m3search.encoders.transformer import load_tokenizer

    path = full_size_model(args.model_dir)
    (WORK / "outputs").mkdir(parents=True, exist_ok=True)
    tokenizer = load_tokenizer(path)
    texts = scifact_abstracts(args.docs, corpus=args.corpus)
    lengths = [min(len(ids), args.max_length) for ids in tokenizer(texts)["input_ids"]]
    return (
        path,
        tokenizer,
        texts,
        lengths,
        workload_flops(json.loads((path / "config.json").read_text()), lengths),
    )


def workload_record(args: argparse.Namespace, path: Path, docs: int, tokens: int) -> dict[str, Any]:
    """The report's "model" and "data" entries for `workload`'s texts."""
    return {
        "model": {"path": str(path), "architecture": "bge-m3 full size (random weights, real tokenizer)"},
        "data": {
            "docs": docs,
            "tokens": tokens,
            "max_length": args.max_length,
            "reps": args.reps,
            "batch_size": args.batch_size,
            "anchor_batch_size": getattr(args, "anchor_batch_size", args.batch_size),
            "outputs": "dense+sparse+colbert",
            "long_doc_tokens": LONG_TOKENS if args.long_doc else None,
        },
    }


# ---- the machine's ceiling ------------------------------------------------------------------------------


def cpu_info() -> dict[str, str]:
    """/proc/cpuinfo's model name and flags (first processor)."""
    out = {"model_name": platform.processor(), "flags": ""}
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            if key.strip() == "model name":
                out["model_name"] = value.strip()
            elif key.strip() == "flags":
                out["flags"] = value.strip()
                break
    except OSError:
        pass
    return out


def gemm_ceilings(threads: int, m: int = 512, k: int = 1024, n: int = 4096, reps: int = 5) -> dict[str, Any]:
    """FLOP/s of an (m x k) @ (k x n) product per precision, best of `reps`, wall and CPU time x threads.

    int8 is the faster of torch's int8 x int8 -> int32 product and fbgemm's dynamically quantized Linear
    (which also quantizes its input, as ONNX Runtime's dynamic int8 does).
    """
    import warnings

    import torch

    torch.set_num_threads(threads)
    a, b = torch.randn(m, k), torch.randn(k, n)
    ai = torch.randint(-127, 127, (m, k), dtype=torch.int8)
    bi = torch.randint(-127, 127, (k, n), dtype=torch.int8)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch.ao's deprecation notes
        qlinear = torch.ao.quantization.quantize_dynamic(
            torch.nn.Sequential(torch.nn.Linear(k, n)), {torch.nn.Linear}, dtype=torch.qint8
        )
    cases = {
        "fp32": lambda: a @ b,
        "bf16": (lambda x, y: lambda: x @ y)(a.bfloat16(), b.bfloat16()),
        "int8 (torch._int_mm)": lambda: torch._int_mm(ai, bi),
        "int8 (fbgemm dynamic Linear)": lambda: qlinear(a),
    }
    flops = 2 * m * k * n
    out: dict[str, Any] = {"shape": [m, k, n], "threads": threads}
    with torch.inference_mode():
        for name, fn in cases.items():
            fn()
            wall, cpu = [], []
            for _ in range(reps):
                t0, c0 = time.perf_counter(), time.process_time()
                fn()
                wall.append(time.perf_counter() - t0)
                cpu.append(time.process_time() - c0)
            out[name] = {
                "gflops_wall": flops / min(wall) / 1e9,
                "gflops_cpu": flops * threads / min(cpu) / 1e9,
            }
    out["int8"] = max(
        (out[key] for key in ("int8 (torch._int_mm)", "int8 (fbgemm dynamic Linear)")),
        key=lambda r: r["gflops_cpu"],
    )
    return out


def workload_flops(config: dict[str, Any], lengths: list[int]) -> dict[str, float]:
    """FLOPs of encoding texts of these token lengths with this XLM-R config, split by where they run:
    the attention/FFN-up weight products, the FFN down-projections, attention itself and the ColBERT head."""
    h, inter, layers = config["hidden_size"], config["intermediate_size"], config["num_hidden_layers"]
    tokens = sum(lengths)
    return {
        "weights": 2.0 * layers * (4 * h * h + h * inter) * tokens,
        "ffn_down": 2.0 * layers * h * inter * tokens,
        "attention": sum(2.0 * layers * 2 * n * n * h for n in lengths),
        "heads": 2.0 * h * (h + 1) * tokens,
    }


#: Which precision each part of the workload runs in, per runtime (the rest at fp32).
_ARITHMETIC = {
    "torch-bf16": {"weights": "bf16", "ffn_down": "bf16", "attention": "bf16"},
    "onnx-int8": {"weights": "int8"},
}


def ceiling_tokens_per_s(
    runtime: str, flops: dict[str, float], tokens: int, rates: dict[str, float]
) -> float:
    """Tokens/s if every part ran at its precision's measured GEMM rate (GFLOP/s) and nothing else cost time."""
    arithmetic = _ARITHMETIC.get(runtime, {})
    seconds = sum(f / (rates[arithmetic.get(part, "fp32")] * 1e9) for part, f in flops.items())
    return tokens / seconds


# ---- worker process -------------------------------------------------------------------------------------


def _reset_peak_rss() -> bool:
    """Reset the kernel's peak-RSS mark (Linux); False where that is not possible."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def _peak_rss_bytes() -> int:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


class _Anchor:
    """FlagEmbedding's BGEM3FlagModel behind the encode call shape the workers use.

    Its `encode` first runs its first (longest) batch once as a memory probe, then encodes everything; a small
    batch size keeps that extra pass a small share of the measured time (its default, 256, would double the
    time of any run under 256 texts). On a GPU it runs fp16 (its recommended setting) unless `fp16=False`.
    """

    def __init__(self, path: Path, device: str, batch_size: int, fp16: bool = True) -> None:
        from FlagEmbedding import BGEM3FlagModel

        self.model = BGEM3FlagModel(str(path), use_fp16=fp16 and device.startswith("cuda"), devices=device)
        self.batch_size = batch_size

    def encode(self, texts: list[str], max_length: int) -> Any:
        from m3search.encoders import EncodeResult

        out = self.model.encode(
            texts,
            batch_size=self.batch_size,
            max_length=max_length,
            return_dense=True,
            return_sparse=True,
            return_colbert_vecs=True,
        )
        return EncodeResult(
            dense=out["dense_vecs"].astype("float32"),
            sparse=[{int(k): float(v) for k, v in w.items()} for w in out["lexical_weights"]],
            colbert=list(out["colbert_vecs"]),
            num_tokens=[0] * len(texts),
        )

    def describe(self) -> dict[str, str]:
        from importlib.metadata import version

        return {"runtime": f"FlagEmbedding {version('FlagEmbedding')} BGEM3FlagModel"}


class _Ours:
    """m3search's encoder on `runtime`; `serial` waits for each batch before starting the next (the A/B of the
    encoder's one-batch-in-flight pipeline)."""

    def __init__(self, path: Path, runtime: str, device: str, batch_size: int, serial: bool = False) -> None:
        from m3search.encoders import BGEM3Encoder

        self.encoder = BGEM3Encoder(path, runtime=runtime, device=device)
        self.batch_size = batch_size
        if serial:
            submit = self.encoder.runtime.submit

            def wait_each(*args: Any, **kwargs: Any) -> Any:
                out = submit(*args, **kwargs)()
                return lambda: out

            self.encoder.runtime.submit = wait_each

    def encode(self, texts: list[str], max_length: int) -> Any:
        return self.encoder.encode(
            texts,
            batch_size=self.batch_size,
            max_length=max_length,
            return_dense=True,
            return_sparse=True,
            return_colbert=True,
        )

    def describe(self) -> dict[str, str]:
        return self.encoder.runtime.describe()


def make_model(name: str, path: Path, device: str, batch_sizes: tuple[int, int]) -> _Anchor | _Ours:
    """The encoder a worker name stands for: `flagembedding[-fp32]`, or an m3search runtime, `+serial` for
    the encoder without its pipeline."""
    if name.startswith(ANCHOR):
        return _Anchor(path, device, batch_sizes[1], fp16=not name.endswith("-fp32"))
    runtime, _, variant = name.partition("+")
    return _Ours(path, runtime, device, batch_sizes[0], serial=variant == "serial")


def worker(name: str, path: str, device: str, threads: int, batch_sizes: tuple[int, int], conn: Any) -> None:
    """Load one runtime, then encode whatever the parent sends until told to stop; errors go to the parent.
    On a GPU each encode also reports the device memory it peaked at."""
    import torch

    torch.set_num_threads(threads)
    cuda = device.startswith("cuda")
    try:
        started = time.perf_counter()
        model = make_model(name, Path(path), device, batch_sizes)
        conn.send(
            {
                "load_seconds": time.perf_counter() - started,
                "rss_after_load": _peak_rss_bytes(),
                "describe": model.describe(),
            }
        )
        while (msg := conn.recv()) is not None:
            texts, max_length, save_to = msg
            _reset_peak_rss()
            if cuda:
                torch.cuda.reset_peak_memory_stats()
            t0, cpu0 = time.perf_counter(), time.process_time()
            result = model.encode(texts, max_length)
            seconds, cpu_seconds = time.perf_counter() - t0, time.process_time() - cpu0
            if save_to:
                with open(save_to, "wb") as f:
                    pickle.dump(result, f)
            conn.send(
                {
                    "seconds": seconds,
                    "cpu_seconds": cpu_seconds,
                    "load_average": os.getloadavg()[0],
                    "peak_rss": _peak_rss_bytes(),
                    "gpu_peak": torch.cuda.max_memory_allocated() if cuda else None,
                }
            )
    except Exception as exc:  # noqa: BLE001  (any failure is reported to the parent, which carries on)
        conn.send({"error": f"{type(exc).__name__}: {exc}"})


# ---- orchestration --------------------------------------------------------------------------------------


def _receive(proc: Any, conn: Any) -> dict[str, Any]:
    """The worker's next message, or an error when it died without one (killed for memory, crashed)."""
    while not conn.poll(5):
        if not proc.is_alive():
            return {"error": f"worker exited with status {proc.exitcode}"}
    return conn.recv()


def _start(
    names: list[str], path: Path, device: str, threads: int, batch_sizes: tuple[int, int]
) -> dict[str, Any]:
    ctx = mp.get_context("spawn")
    workers = {}
    for name in names:
        parent, child = ctx.Pipe()
        proc = ctx.Process(
            target=worker, args=(name, str(path), device, threads, batch_sizes, child), daemon=True
        )
        proc.start()
        hello = _receive(proc, parent)  # load one model at a time: loading peaks are large
        if "error" in hello:
            print(f"skipping {name}: {hello['error']}", file=sys.stderr)
            proc.join()
            continue
        print(f"loaded {name} in {hello['load_seconds']:.1f}s -> {hello['describe']}", file=sys.stderr)
        workers[name] = {"proc": proc, "conn": parent, **hello}
    return workers


def _run(workers: dict[str, Any], texts: list[str], max_length: int, reps: int, tag: str) -> dict[str, list]:
    """Round-robin `reps` repetitions over the workers; the first repetition's outputs are saved."""
    timings: dict[str, list] = {name: [] for name in workers}
    for rep in range(reps):
        for name, w in workers.items():
            save = str(WORK / "outputs" / f"{tag}-{name}.pkl") if rep == 0 else ""
            w["conn"].send((texts, max_length, save))
            got = _receive(w["proc"], w["conn"])
            if "error" in got:
                raise RuntimeError(f"{name} failed on {tag}: {got['error']}")
            timings[name].append(got)
            print(f"{tag} rep {rep + 1}/{reps} {name}: {got['seconds']:.1f}s", file=sys.stderr)
    return timings


def _stop(workers: dict[str, Any]) -> None:
    for w in workers.values():
        if w["proc"].is_alive():
            w["conn"].send(None)
        w["proc"].join(timeout=60)
        if w["proc"].is_alive():
            w["proc"].kill()


def _deviations(names: list[str], tag: str, reference: str) -> dict[str, dict]:
    from m3search.encoders.runtimes.guard import GUARD_BOUNDS, measure_deviation

    def load(name: str) -> Any:
        with open(WORK / "outputs" / f"{tag}-{name}.pkl", "rb") as f:
            return pickle.load(f)

    ref = load(reference)
    out = {}
    for name in names:
        dev = measure_deviation(ref, load(name))
        out[name] = {**dev.to_dict(), "guard_violations": GUARD_BOUNDS.violations(dev)}
    return out


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--docs", type=int, default=32, help="SciFact abstracts per repetition")
    parser.add_argument("--reps", type=int, default=2, help="interleaved repetitions")
    parser.add_argument(
        "--runtimes",
        default=",".join(DEFAULT_RUNTIMES),
        help=f"comma-separated; '{ANCHOR}' is the reference implementation",
    )
    parser.add_argument("--device", default="cpu", help="cpu, or cuda (the anchor then runs fp16)")
    parser.add_argument("--threads", type=int, default=None, help="threads per worker (default: torch's)")
    parser.add_argument("--batch-size", type=int, default=32, help="m3search encode batch size")
    parser.add_argument(
        "--anchor-batch-size",
        type=int,
        default=4,
        help="FlagEmbedding batch size (small: its first batch is run twice, see _Anchor)",
    )
    parser.add_argument("--max-length", type=int, default=512)
    parser.add_argument(
        "--long",
        dest="long_doc",
        action=argparse.BooleanOptionalAction,
        default=True,
        help=f"also encode one {LONG_TOKENS}-token document",
    )
    parser.add_argument("--model-dir", type=Path, default=WORK / "bge-m3-random-full")
    parser.add_argument("--corpus", type=Path, default=SCIFACT, help="BEIR corpus.jsonl to draw texts from")
    args = parser.parse_args(argv)

    os.environ.setdefault("M3SEARCH_HOME", str(WORK / "home"))
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    import torch

    from m3search.encoders.runtimes.hardware import detect_hardware

    threads = args.threads or torch.get_num_threads()
    ceilings = gemm_ceilings(threads)
    rates = {p: ceilings[p]["gflops_cpu"] for p in ("fp32", "bf16", "int8")}
    print(
        "GEMM GFLOP/s (CPU time x threads): " + ", ".join(f"{p} {r:.0f}" for p, r in rates.items()),
        file=sys.stderr,
    )
    path, tokenizer, texts, lengths, flops = workload(args)
    tokens = sum(lengths)
    best_rate = max(rates.values())
    machine_ceiling = tokens / (sum(flops.values()) / (best_rate * 1e9))
    names = [n.strip() for n in args.runtimes.split(",") if n.strip()]
    reference = ANCHOR if ANCHOR in names else names[0]

    batch_sizes = (args.batch_size, args.anchor_batch_size)
    workers = _start(names, path, args.device, threads, batch_sizes)
    try:
        timings = _run(workers, texts, args.max_length, args.reps, "scifact")
    finally:
        _stop(workers)
    deviations = _deviations(list(workers), "scifact", reference) if reference in workers else {}
    long_timings: dict[str, list] = {}
    if args.long_doc:
        # One runtime at a time, each in a fresh process: the peak RSS is that runtime's alone, and a runtime
        # whose attention is quadratic in memory cannot push the others out of memory.
        long_text = long_document(tokenizer, corpus=args.corpus)
        for name in workers:
            single = _start([name], path, args.device, threads, batch_sizes)
            try:
                long_timings.update(_run(single, [long_text], LONG_TOKENS, 1, "long"))
            except RuntimeError as exc:
                print(f"long document: {exc}", file=sys.stderr)
            finally:
                _stop(single)

    rows = {}
    anchor_best = min(t["seconds"] for t in timings[reference]) if reference in timings else None
    anchor_cpu = min(t["cpu_seconds"] for t in timings[reference]) if reference in timings else None
    for name in workers:
        best = min(t["seconds"] for t in timings[name])
        best_cpu = min(t["cpu_seconds"] for t in timings[name])
        arithmetic = workers[name]["describe"].get("runtime", name) if name == "auto" else name
        own_ceiling = ceiling_tokens_per_s(arithmetic, flops, tokens, rates)
        cpu_tokens_per_s = tokens * threads / best_cpu
        rows[name] = {
            "runtime": workers[name]["describe"],
            "seconds_per_rep": [round(t["seconds"], 3) for t in timings[name]],
            "cpu_seconds_per_rep": [round(t["cpu_seconds"], 3) for t in timings[name]],
            "load_average_per_rep": [round(t["load_average"], 2) for t in timings[name]],
            "tokens_per_s": tokens / best,
            "tokens_per_s_cpu": cpu_tokens_per_s,
            "ceiling_tokens_per_s": own_ceiling,
            "pct_own_ceiling": 100 * cpu_tokens_per_s / own_ceiling,
            "pct_machine_ceiling": 100 * cpu_tokens_per_s / machine_ceiling,
            "docs_per_s": len(texts) / best,
            "speedup_vs_anchor": anchor_best / best if anchor_best else None,
            "cpu_speedup_vs_anchor": anchor_cpu / best_cpu if anchor_cpu else None,
            "peak_rss_gb": max(t["peak_rss"] for t in timings[name]) / 1e9,
            "load_seconds": workers[name]["load_seconds"],
            "deviation": deviations.get(name),
            "long_doc": (
                {
                    "seconds": long_timings[name][0]["seconds"],
                    "peak_rss_gb": long_timings[name][0]["peak_rss"] / 1e9,
                }
                if name in long_timings
                else None
            ),
        }
    report = {
        "benchmark": "encode_speed",
        "command": " ".join([Path(sys.argv[0]).name] + (argv if argv is not None else sys.argv[1:])),
        "when": time.strftime("%Y-%m-%dT%H:%M:%S"),
        "machine": {
            "platform": platform.platform(),
            "cpus": os.cpu_count(),
            "threads": threads,
            "load_average": os.getloadavg(),
            **detect_hardware().describe(),
            "cpu": cpu_info(),
            "torch": torch.__version__,
        },
        **workload_record(args, path, len(texts), tokens),
        "anchor": reference,
        "gemm": ceilings,
        "workload_gflop": {k: v / 1e9 for k, v in flops.items()},
        "machine_ceiling_tokens_per_s": machine_ceiling,
        "results": rows,
    }
    print(_table(report))
    print(f"\nwrote {write_report('encode_speed', report)}")
    return report


def write_report(benchmark: str, report: dict[str, Any]) -> Path:
    """Write `report` as benchmarks/results/<benchmark>-<time>.json; return the path."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    out = RESULTS / f"{benchmark}-{time.strftime('%Y%m%d-%H%M%S')}.json"
    out.write_text(json.dumps(report, indent=2))
    return out


def _fmt(value: float | None, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def _table(report: dict[str, Any]) -> str:
    gemm = report["gemm"]
    lines = [
        f"CPU: {report['machine']['cpu']['model_name']}, {report['machine']['threads']} threads; "
        f"GEMM {'x'.join(map(str, gemm['shape']))}",
        "",
        "| precision | GFLOP/s (wall) | GFLOP/s (CPU time x threads) |",
        "|---|---|---|",
    ]
    for precision in ("fp32", "bf16", "int8 (torch._int_mm)", "int8 (fbgemm dynamic Linear)"):
        lines.append(
            f"| {precision} | {gemm[precision]['gflops_wall']:.0f} | {gemm[precision]['gflops_cpu']:.0f} |"
        )
    lines += [
        "",
        f"machine ceiling: {report['machine_ceiling_tokens_per_s']:.0f} tokens/s (every FLOP at the fastest precision)",
        "",
        "| runtime | tokens/s | tokens/s (CPU time) | × anchor | × anchor (CPU time) | % own ceiling | % machine "
        "ceiling | peak RSS GB | dense cos min | sparse Δ max | ColBERT cos min | 8192-tok s | 8192-tok RSS GB |",
        "|" + "---|" * 13,
    ]
    for name, r in report["results"].items():
        dev = r["deviation"] or {}
        long = r["long_doc"] or {}
        label = name if name != "auto" else f"auto ({r['runtime'].get('runtime')})"
        lines.append(
            f"| {label} | {r['tokens_per_s']:.0f} | {r['tokens_per_s_cpu']:.0f} | {_fmt(r['speedup_vs_anchor'], '.2f')} "
            f"| {_fmt(r['cpu_speedup_vs_anchor'], '.2f')} | {r['pct_own_ceiling']:.0f}% | {r['pct_machine_ceiling']:.0f}% "
            f"| {r['peak_rss_gb']:.2f} | {_fmt(dev.get('dense_cosine_min'), '.5f')} "
            f"| {_fmt(dev.get('sparse_rel_diff_max'), '.4f')} | {_fmt(dev.get('colbert_cosine_min'), '.5f')} "
            f"| {_fmt(long.get('seconds'), '.1f')} | {_fmt(long.get('peak_rss_gb'), '.2f')} |"
        )
    return "\n".join(lines)


if __name__ == "__main__":
    main()
