"""The compiled graph walk (`m3search.index.graph_walk`) against faiss's walk of the same graph (issue 20): a kept
collection's segment searched as `DenseIndex.search` does (graph walk, candidates re-ranked exactly), once
walked by the compiled walk and once by faiss, the two alternating query by query, at each `--ef-search`;
recall@10 against exact search and the p50 CPU ms of a search. Both walk the same graph with the same algorithm,
so their recall should be equal: the time is the difference. Also each walk alone (no re-rank) at the first
efSearch, unfiltered and with a filter allowing `--allowed` of the rows.

    PYTHONPATH=src python benchmarks/index_speed.py --docs 100000 --backend qdrant --ef-search 128 \\
        --graphs 16:100 --keep --workdir DIR
    PYTHONPATH=src:benchmarks python benchmarks/graph_walk.py DIR/m3s-bench-*/collection --ef-search 64 128 192

Prints a table and writes benchmarks/results/graph_walk-<docs><tag>.json.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
from graph_builders import walks
from host_speed import machine_record
from interleave import ROOT, kept_corpus_queries
from layer_cost import only_segment

from m3search import Collection
from m3search.index import graph_walk
from m3search.index.dense import DenseIndex


def filtered(indexes: dict[str, DenseIndex], queries: np.ndarray, allowed: np.ndarray, ef: int) -> dict:
    """Each index's filtered searches (alternating query by query): p50 CPU ms, and how many of the compiled
    walk's hits faiss's walk returns too."""
    cpu: dict[str, list[float]] = {name: [] for name in indexes}
    hits: dict[str, list[set[int]]] = {name: [] for name in indexes}
    for i, q in enumerate(queries):
        names = list(indexes) if i % 2 else list(indexes)[::-1]
        for name in names:
            start = time.process_time()
            rows = indexes[name].search(q, 10, allowed, ef_search=ef)[0]
            cpu[name].append(time.process_time() - start)
            hits[name].append(set(rows.tolist()))
    same = np.mean([len(a & b) / max(len(a), 1) for a, b in zip(hits["compiled"], hits["faiss"])])
    return {"p50_cpu_ms": {n: float(np.median(t) * 1e3) for n, t in cpu.items()}, "same_hits": float(same)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("collection", type=Path, help="a compacted collection kept by index_speed.py --keep")
    ap.add_argument("--queries", type=int, default=400)
    ap.add_argument("--ef-search", type=int, nargs="+", default=[64, 128, 192])
    ap.add_argument("--allowed", type=float, default=0.3, help="share of rows a filtered search allows")
    ap.add_argument("--tag", default="", help="appended to the result's name")
    args = ap.parse_args()
    if not graph_walk.available():
        raise SystemExit("the compiled walk does not run on this CPU (x86-64 with AVX2 needed)")
    collection = Collection.open(args.collection, readonly=True)
    dense = only_segment(collection).dense
    if dense is None or dense._graph_codes()[1] is None:
        raise SystemExit("the collection's segment has no graph over byte codes (format 8+, hnsw-sq8)")
    indexes = {
        "compiled": dense,
        "faiss": DenseIndex(dense.vectors, dense.ann, dense.params, dense.order, compiled_walk=False),
    }
    queries = np.stack([q["dense"] for q in kept_corpus_queries(args.queries, 32)]).astype(np.float32)
    truth = np.stack([np.argsort(-dense.score_rows(q))[:10] for q in queries])
    for q in queries[:20]:  # compile / warm both
        for index in indexes.values():
            index.search(q, 10)
    rows = []
    for ef in args.ef_search:
        walked = walks(indexes, queries, truth, ef)
        rows.append({"ef_search": ef, **walked})
        c, f = walked["compiled"], walked["faiss"]
        print(
            f"efSearch {ef:4d}: compiled {c['p50_cpu_ms']:.3f} ms (recall@10 {c['recall@10']:.4f}), faiss"
            f" {f['p50_cpu_ms']:.3f} ms ({f['recall@10']:.4f}): compiled/faiss"
            f" {c['p50_cpu_ms'] / f['p50_cpu_ms']:.2f}",
            flush=True,
        )
    allowed = np.random.default_rng(0).random(len(dense)) < args.allowed
    with_filter = filtered(indexes, queries, allowed, args.ef_search[0])
    times = with_filter["p50_cpu_ms"]
    print(
        f"filter allowing {allowed.mean():.0%}, efSearch {args.ef_search[0]}: compiled {times['compiled']:.3f} ms,"
        f" faiss {times['faiss']:.3f} ms (compiled/faiss {times['compiled'] / times['faiss']:.2f}), same hits"
        f" {with_filter['same_hits']:.4f}"
    )
    collection.close()
    result = {
        "docs": len(dense),
        "queries": len(queries),
        "walks": rows,
        "filtered": {"allowed": float(allowed.mean()), "ef_search": args.ef_search[0], **with_filter},
        "machine": machine_record(),
    }
    out = ROOT / "results" / f"graph_walk-{len(dense)}{args.tag}.json"
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"written to {out}")


if __name__ == "__main__":
    main()
