"""Latency of one short query on one thread: the encoder alone, its forward pass alone, and `Collection.search`.

Loads the offline multilingual-e5-small on the given runtime with one torch thread, builds a small collection of
SciFact abstracts (dense + ColBERT, BM25 sparse), then times `--reps` single queries of about ten tokens
each way, interleaved. Reports p50/p90 of wall time and of the calling thread's CPU time (steadier on a busy
machine), and the share of the encode call outside the model's forward pass.

    python benchmarks/query_latency.py --runtime torch-fp32 --reps 50

Writes benchmarks/results/query_latency-<time>.json and prints a Markdown table.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

from encode_speed import cpu_info, scifact_abstracts, write_report  # noqa: E402

MODEL = "intfloat/multilingual-e5-small"
QUERIES = (
    "what causes high blood pressure in adults",
    "vitamin D deficiency and bone fractures",
    "does smoking increase lung cancer risk",
    "gene expression in breast cancer cells",
    "antibiotic resistance in hospital infections",
)


def _timed(fn: Any) -> tuple[float, float]:
    t0, c0 = time.perf_counter(), time.thread_time()
    fn()
    return time.perf_counter() - t0, time.thread_time() - c0


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runtime", default="torch-fp32")
    parser.add_argument("--reps", type=int, default=50)
    parser.add_argument("--docs", type=int, default=60, help="SciFact abstracts in the collection")
    args = parser.parse_args(argv)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    import torch

    from m3search.encoders import load_encoder
    from m3search.store.collection import Collection

    torch.set_num_threads(1)
    encoder = load_encoder(MODEL, runtime=args.runtime)
    dense_encoder = getattr(encoder, "parts", {}).get("dense", encoder)
    tokens = dense_encoder.count_tokens(list(QUERIES), is_query=True)
    with tempfile.TemporaryDirectory() as tmp:
        collection = Collection.create(Path(tmp) / "c", encoder=encoder, max_length=128, cache=False)
        texts = scifact_abstracts(args.docs)
        collection.upsert([{"id": str(i), "text": t} for i, t in enumerate(texts)])
        runtime = getattr(dense_encoder, "runtime", None)
        cases = {
            "encode_queries (dense + ColBERT)": lambda q: encoder.encode_queries(
                q, return_dense=True, return_colbert="colbert" in encoder.outputs
            ),
            "Collection.search (all modes)": lambda q: collection.search(q, k=10),
        }
        if runtime is not None:
            enc = dense_encoder._content_ids([dense_encoder.spec.query_prefix + QUERIES[0]])[0]
            ids = dense_encoder._wrap(enc)[None]
            mask = np.ones_like(ids)
            cases["runtime.forward only"] = lambda q: runtime.forward(
                ids, mask, dense=True, sparse=False, colbert=True
            )
        for fn in cases.values():  # warm-up
            fn(QUERIES[0])
        times: dict[str, list[tuple[float, float]]] = {name: [] for name in cases}
        for rep in range(args.reps):
            q = QUERIES[rep % len(QUERIES)]
            for name, fn in cases.items():
                times[name].append(_timed(lambda fn=fn, q=q: fn(q)))
        collection.close()
    rows = {}
    for name, values in times.items():
        wall = np.array([v[0] for v in values]) * 1e3
        cpu = np.array([v[1] for v in values]) * 1e3
        rows[name] = {
            "wall_ms_p50": float(np.median(wall)),
            "wall_ms_p90": float(np.percentile(wall, 90)),
            "cpu_ms_p50": float(np.median(cpu)),
            "cpu_ms_p90": float(np.percentile(cpu, 90)),
        }
    report = {
        "benchmark": "query_latency",
        "command": " ".join([Path(sys.argv[0]).name] + (argv if argv is not None else sys.argv[1:])),
        "when": time.strftime("%Y-%m-%dT%H:%M:%S"),
        "model": MODEL,
        "runtime": encoder.describe().get("runtime", args.runtime),
        "query_tokens": tokens,
        "threads": 1,
        "load_average": os.getloadavg(),
        "machine": {"cpu": cpu_info(), "cpus": os.cpu_count()},
        "results": rows,
    }
    out = write_report("query_latency", report)
    print(
        f"{MODEL} on {report['runtime']}, 1 thread, query tokens {tokens}, load {report['load_average'][0]:.1f}"
    )
    print("| path | wall p50 ms | wall p90 ms | CPU p50 ms | CPU p90 ms |\n|---|---|---|---|---|")
    for name, r in rows.items():
        print(
            f"| {name} | {r['wall_ms_p50']:.1f} | {r['wall_ms_p90']:.1f} | {r['cpu_ms_p50']:.1f} "
            f"| {r['cpu_ms_p90']:.1f} |"
        )
    print(f"\nwrote {out}")
    return report


if __name__ == "__main__":
    main()
