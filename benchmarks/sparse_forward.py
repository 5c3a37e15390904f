"""The sparse forward index (`SparseIndex._lookup`): looking candidate rows up in each row's own postings
against binary searches in the long posting lists.

Builds the forward index of each segment of a kept collection in memory from its inverted lists (`from_coo`,
as a new segment gets it; collections of any format), then
1. times one lookup both ways for the row sets a real query produces: the contenders MaxScore has when it stops
   reading whole lists, and 317 random rows (a hybrid query's dense-only candidates), by row-set size;
2. searches through `Collection` with each segment's sparse index swapped per query between one without the
   forward index and one with it (interleaved, `interleave.py`), and checks both return the same hits.

    PYTHONPATH=src python benchmarks/index_speed.py --docs 1000000 --colbert-every 1 --colbert-tokens 100 \\
        --colbert-dtype binary --batch 10000 --flush-docs 10000 --ef-search 128 --no-anchor --keep --workdir DIR
    PYTHONPATH=src python benchmarks/sparse_forward.py DIR/m3s-bench-*/collection

Prints two tables, writes benchmarks/results/sparse_forward-DOCS.json.
"""

from __future__ import annotations

import argparse
import itertools
import json
import time
from pathlib import Path
from unittest import mock

import numpy as np
from host_speed import machine_record
from index_speed import percentiles
from interleave import interleaved, kept_corpus_queries

from m3search import Collection
from m3search.index import sparse
from m3search.index.sparse import FILES, SparseIndex
from m3search.search.planner import default_candidates
from m3search.store.bm25 import as_sparse_row

ROOT = Path(__file__).resolve().parent
#: Row-set sizes the lookup table groups by.
BUCKETS = (0, 400, 1_000, 3_000, 10_000, 10**9)


def without_forward(index: SparseIndex) -> SparseIndex:
    """The same inverted lists with no forward index: what a segment written before it opens as."""
    return SparseIndex(index.n_rows, **{name: getattr(index, name) for name in FILES})


def lookup_costs(index: SparseIndex, queries: list[dict], depth: int) -> list[dict]:
    """Each lookup a query's `search` and a 317-row `score_rows` make, timed both ways (best of two)."""
    row_sets = []
    finish = SparseIndex._finish

    def record(self, rest, contenders, scores, remaining, threshold, k):
        row_sets.append((rest, contenders[scores[contenders] + remaining >= threshold]))
        return finish(self, rest, contenders, scores, remaining, threshold, k)

    rng = np.random.default_rng(0)
    with mock.patch.object(SparseIndex, "_finish", record):
        for q in queries:
            query = as_sparse_row(q["sparse"])
            index.search(query, depth)
            row_sets.append((index._lists(query), np.sort(rng.choice(index.n_rows, depth, replace=False))))
    probing = without_forward(index)
    costs = []
    # always the forward index when the index has one
    with mock.patch.object(sparse, "FORWARD_POSTINGS_PER_RUN", float("inf")):
        for lists, rows in row_sets:
            ms = {}
            for name, which in (("probe", probing), ("forward", index)) * 2:
                start = time.perf_counter()
                which._lookup(lists, rows, np.zeros(len(rows), np.float32))
                ms[name] = min(ms.get(name, np.inf), 1000 * (time.perf_counter() - start))
            runs = sum(plist[1] - plist[0] for plist in lists)
            costs.append({"rows": len(rows), "runs": runs, **ms})
    return costs


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("collection", type=Path, help="a collection kept by index_speed.py --keep")
    ap.add_argument("--queries", type=int, default=200, help="the first 40 warm the page cache, untimed")
    ap.add_argument("--rerank", type=int, default=200, help="ColBERT depth of mode all")
    args = ap.parse_args()
    queries = kept_corpus_queries(args.queries, 32)
    collection = Collection.open(args.collection, readonly=True, cache=False)
    docs = collection.count()
    depth = default_candidates(docs)
    segments = list(collection.backend._segments.values())  # a benchmark may reach inside: swapped per query
    start = time.perf_counter()
    forward = [SparseIndex.from_coo(len(seg), *seg.sparse.to_coo()) for seg in segments]
    build_s = time.perf_counter() - start
    probing = [without_forward(f) for f in forward]
    costs = lookup_costs(forward[0], queries, depth)

    def use(indexes: list[SparseIndex]):
        return lambda: [setattr(seg, "sparse", ix) for seg, ix in zip(segments, indexes)]

    plans = {"sparse": {"mode": "sparse"}, "dense+sparse": {"mode": "dense+sparse"}}
    plans[f"all, rerank {args.rerank}"] = {"mode": "all", "rerank": args.rerank}
    common = {"k": 10, "ef_search": 128, "candidates": depth}
    ms, same = interleaved(
        collection, queries, plans, {"probe": use(probing), "forward": use(forward)}, **common
    )
    collection.close()
    postings = sum(len(f.weights) for f in forward)
    result = {
        "collection": str(args.collection),
        "docs": docs,
        "postings": postings,
        "forward_bytes": sum(f.fwd_start.nbytes + f.fwd_postings.nbytes for f in forward),
        "forward_build_s": build_s,
        "forward_postings_per_run": sparse.FORWARD_POSTINGS_PER_RUN,
        "same_hits": same,
        "machine": machine_record(),
        "lookups": costs,
        "latency_ms": {name: {v: percentiles(t) for v, t in by.items()} for name, by in ms.items()},
    }
    print(f"{docs:,} documents, {postings / docs:.1f} postings a document, {depth} candidates per stage")
    print(
        f"{'rows looked up':<16} {'lookups':>8} {'runs':>6} {'postings/run':>13} {'probe ms':>9} {'forward ms':>11}"
    )
    table = {key: np.array([c[key] for c in costs], float) for key in ("rows", "runs", "probe", "forward")}
    for lo, hi in itertools.pairwise(BUCKETS):
        m = (table["rows"] >= lo) & (table["rows"] < hi)
        if m.any():
            per_run = (table["rows"][m] * postings / docs / table["runs"][m]).mean()
            print(
                f"{f'{lo:,}-{hi:,}' if hi < 10**9 else f'{lo:,}+':<16} {int(m.sum()):>8} "
                f"{table['runs'][m].mean():>6.0f} {per_run:>13.0f} {table['probe'][m].mean():>9.2f} "
                f"{table['forward'][m].mean():>11.2f}"
            )
    print(f"\n{'search':<18} {'probe p50/p99 ms':>18} {'forward p50/p99 ms':>20} {'p50 ratio':>10}")
    for name, by in result["latency_ms"].items():
        a, b = by["probe"], by["forward"]
        print(
            f"{name:<18} {a['p50_ms']:>8.2f}/{a['p99_ms']:<9.2f} {b['p50_ms']:>9.2f}/{b['p99_ms']:<10.2f} "
            f"{b['p50_ms'] / a['p50_ms']:>10.2f}"
        )
    print(f"same hits both ways: {same}; forward index {result['forward_bytes'] / docs:.0f} B a document")
    out = ROOT / "results" / f"sparse_forward-{docs}.json"
    out.write_text(json.dumps(result, indent=2))
    print(f"written to {out}")


if __name__ == "__main__":
    main()
