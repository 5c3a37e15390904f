"""Segments in an edge collection: the collection as writes leave it (Qdrant's optimizers keep each segment
below 256 MB of vectors per CPU, so ~10 segments at 1M 1,024-d documents on 2 cores, each with its own HNSW
graph) against a copy of it after `compact` (every segment merged into one), searched through `Collection`
with the queries interleaved (`index_speed.interleaved`): recall@10 against exact search, p50/p99 per mode,
and what compaction costs.

    PYTHONPATH=src python benchmarks/edge_compact.py --docs 1000000 --workdir DIR

The documents and queries are `index_speed.py`'s (same seed and defaults: ColBERT on every 100th document).
Prints a table, writes benchmarks/results/edge_compact-<docs>.json.
"""

from __future__ import annotations

import argparse
import json
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from index_speed import (
    BATCH,
    Corpus,
    add_data_arguments,
    build_edge_collection,
    collections_interleaved,
    dense_model,
    dir_bytes,
    exact_truth,
    in_child,
    peak_rss_gb,
    write_batches,
)

from m3search import Collection
from m3search.encoders.runtimes.hardware import cpu_record
from m3search.search.planner import default_candidates

ROOT = Path(__file__).resolve().parent


def corpus(args: argparse.Namespace) -> Corpus:
    return Corpus(dense_model(args), args.colbert_dim, args.vocab, args.nnz)


def compact(path: Path) -> dict:
    """Compact the collection at `path` (in a child process): seconds, the engine's view after, peak RSS."""
    edge = Collection.open(path, backend="edge", cache=False)
    try:
        t = time.perf_counter()
        edge.compact()
        seconds = time.perf_counter() - t
        engine = edge.stats()["edge"]
    finally:
        edge.close()
    return {"compact_s": seconds, "engine": engine, "peak_rss_gb": peak_rss_gb()}


def truth_data(args: argparse.Namespace) -> tuple[np.ndarray, tuple]:
    """Every document's dense vector and sparse (rows, terms, weights), regenerated from the seed."""
    source = corpus(args)
    vectors = np.empty((args.docs, args.dim), np.float32)
    rows, terms, weights = [], [], []
    for start in range(0, args.docs, args.batch):
        for i, d in enumerate(source.batch(start, min(args.batch, args.docs - start), args.colbert_every, 1)):
            vectors[start + i] = d["dense"]
            rows.append(np.full(len(d["sparse"]), start + i, np.int64))
            terms.append(np.fromiter(d["sparse"].keys(), np.int64))
            weights.append(np.fromiter(d["sparse"].values(), np.float32))
    return vectors, (np.concatenate(rows), np.concatenate(terms), np.concatenate(weights))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--docs", type=int, default=1_000_000)
    ap.add_argument("--queries", type=int, default=200)
    ap.add_argument("--batch", type=int, default=BATCH, help="documents per upsert")
    ap.add_argument("--graphs", nargs=1, default=["16:100"], help="M:efConstruction")
    ap.add_argument("--ef-search", type=int, nargs="+", default=[128])
    ap.add_argument("--workdir", type=Path, default=None, help="where the collections are built (a temp dir)")
    ap.add_argument("--keep", action="store_true", help="keep both collections afterwards")
    add_data_arguments(ap)
    args = ap.parse_args()
    args.candidates = default_candidates(args.docs)
    k = 10
    work = Path(tempfile.mkdtemp(prefix="m3s-edge-", dir=args.workdir))
    written, merged = work / "written", work / "compacted"
    result: dict = {
        "args": {key: str(v) if isinstance(v, Path) else v for key, v in vars(args).items()},
        "machine": {"platform": platform.platform(), "cpu": cpu_record()},
    }
    try:
        batches = write_batches(work / "batches", corpus(args), args)
        t = time.perf_counter()
        result["written"] = in_child(build_edge_collection, written, args, batches, False)
        shutil.rmtree(work / "batches")
        print(f"\nbuilt in {time.perf_counter() - t:.0f} s", file=sys.stderr, flush=True)
        shutil.copytree(written, merged)
        result["compacted"] = in_child(compact, merged)
        for name, path in (("written", written), ("compacted", merged)):
            result[name]["bytes_per_doc"] = dir_bytes(path) / args.docs
        print(f"compacted in {result['compacted']['compact_s']:.0f} s", file=sys.stderr, flush=True)
        vectors, coo = truth_data(args)
        queries = corpus(args).queries(args.queries, args.query_tokens)
        truth = exact_truth(vectors, coo, queries, args.vocab, k)
        del vectors, coo
        id_to_row = {str(i): i for i in range(args.docs)}
        before = Collection.open(written, backend="edge", cache=False)
        after = Collection.open(merged, backend="edge", cache=False)
        try:
            # index_speed's loop names its two sides local and edge: here the written and the compacted
            sweeps = collections_interleaved(before, after, args, queries, truth, id_to_row, k)
        finally:
            before.close()
            after.close()
        result["ef_search"] = [
            {
                "ef_search": s["ef_search"],
                "written": s["local"],
                "compacted": s["edge"],
                "agreement@10": s["agreement@10"],
            }
            for s in sweeps
        ]
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    out = ROOT / "results" / f"edge_compact-{args.docs}.json"
    out.write_text(json.dumps(result, indent=2) + "\n")
    report(result)
    print(f"\nwrote {out}")


def report(result: dict) -> None:
    """Markdown: segments and build, then latency and recall per mode."""
    w, c = result["written"], result["compacted"]
    print("| | segments | indexed vectors | bytes/doc | seconds | peak RSS GB |")
    print("|---|---:|---:|---:|---:|---:|")
    print(
        f"| as written | {w['engine']['segments_count']} | {w['engine']['indexed_vectors_count']:,} | "
        f"{w['bytes_per_doc']:,.0f} | ingest {w['ingest_s']:.0f} | {w['peak_rss_gb']:.1f} |"
    )
    print(
        f"| compacted | {c['engine']['segments_count']} | {c['engine']['indexed_vectors_count']:,} | "
        f"{c['bytes_per_doc']:,.0f} | compact {c['compact_s']:.0f} | {c['peak_rss_gb']:.1f} |"
    )
    for sweep in result["ef_search"]:
        print(f"\nefSearch {sweep['ef_search']}: p50 / p99 ms (recall@10)")
        print("| mode | as written | compacted | p50 ratio | agreement@10 |")
        print("|---|---:|---:|---:|---:|")
        for mode, a in sweep["written"].items():
            b = sweep["compacted"][mode]

            def cell(s: dict) -> str:
                r = f" ({s['recall@10']:.4f})" if "recall@10" in s else ""
                return f"{s['p50_ms']:.2f} / {s['p99_ms']:.2f}{r}"

            ratio = b["p50_ms"] / a["p50_ms"]
            print(f"| {mode} | {cell(a)} | {cell(b)} | {ratio:.2f} | {sweep['agreement@10'][mode]:.3f} |")


if __name__ == "__main__":
    main()
