"""The sparse forward index (`sparse_kernels.lookup`): looking candidate rows up in each row's own postings
against galloping searches in the long posting lists.

Builds the forward index of each segment of a kept collection in memory from its inverted lists (`from_coo`,
as a new segment gets it; collections of any format), then
1. times one lookup of each query's lists both ways for random row sets of 100 to 10,000 rows (317: a hybrid
   query's dense-only candidates; thousands: the contenders of a pruned search), by row-set size;
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

import numpy as np
from host_speed import machine_record
from index_speed import percentiles
from interleave import interleaved, kept_corpus_queries

from m3search import Collection
from m3search.index import sparse
from m3search.index import sparse_kernels as kernels
from m3search.index.sparse import FILES, SparseIndex
from m3search.search.planner import default_candidates
from m3search.store.bm25 import as_sparse_row

ROOT = Path(__file__).resolve().parent
#: Row-set sizes the lookup table groups by, and the random row sets looked up.
BUCKETS = (0, 400, 1_000, 3_000, 10_000, 10**9)
LOOKUP_ROWS = (100, 317, 1_000, 3_000, 10_000)


def without_forward(index: SparseIndex) -> SparseIndex:
    """The same inverted lists with no forward index: what a segment written before it opens as."""
    return SparseIndex(index.n_rows, **{name: getattr(index, name) for name in FILES})


def lookup_costs(index: SparseIndex, queries: list[dict], sizes: tuple[int, ...] = LOOKUP_ROWS) -> list[dict]:
    """One lookup (`sparse_kernels.lookup`, as a pruned search's contenders and `score_rows` make them) of each
    query's lists for random row sets of each size, timed both ways (best of two)."""
    rng = np.random.default_rng(0)
    costs = []
    for q in queries:
        ids, qweights = as_sparse_row(q["sparse"])
        firsts, ends, qws, _, _ = kernels.query_lists(index._index, ids, qweights)
        for size in sizes:
            alive = np.sort(rng.choice(index.n_rows, min(size, index.n_rows), replace=False))
            ms = {}
            for name, per_run in (("probe", 0), ("forward", np.inf)) * 2:
                out = np.zeros(len(alive), np.float32)
                start = time.perf_counter()
                kernels.lookup(index._index, firsts, ends, qws, alive, out, per_run)
                ms[name] = min(ms.get(name, np.inf), 1000 * (time.perf_counter() - start))
            costs.append({"rows": len(alive), "runs": int((ends - firsts).sum()), **ms})
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
    costs = lookup_costs(forward[0], queries)

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
