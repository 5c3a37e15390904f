"""How many rows a hybrid first stage fetches from the SQ8 dense graph: recall@10 and latency of dense+sparse.

A hybrid first stage asks the dense graph for `depth` candidates (`candidates` per stage). Fetched by the int8
codes and re-ranked by the float vectors, they can be made exact for the best `exact_top` of them: the graph
fetches `depth + (refine - 1) · exact_top` rows (`DenseIndex.search`). The library passes the query's k; the
previous rule made the whole depth exact (`exact_top = depth`: depth × refine rows, walked with efSearch of that
size). Both on one collection of calibrated synthetic documents (`index_speed.Corpus`), queries interleaved,
recall@10 against the exact weighted fusion over all documents (`index_speed.exact_truth`).

    PYTHONPATH=src python benchmarks/hybrid_fetch.py --docs 100000 --candidates 100 316

Prints a table, writes benchmarks/results/hybrid_fetch-DOCS.json.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path
from unittest import mock

from index_speed import (
    BATCH,
    TRUTH_SEARCH,
    Corpus,
    bulk_load_segments,
    dense_model,
    exact_truth,
    percentiles,
    recall,
)

from m3search import Collection
from m3search.encoders.runtimes.hardware import cpu_record
from m3search.index.dense import DenseIndex

ROOT = Path(__file__).resolve().parent


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--docs", type=int, default=100_000)
    ap.add_argument("--candidates", type=int, nargs="+", default=[100, 316])
    ap.add_argument("--queries", type=int, default=200)
    ap.add_argument("--ef-search", type=int, default=128)
    ap.add_argument("--workdir", type=Path, default=None)
    args = ap.parse_args()
    geometry = argparse.Namespace(
        data="latent", geometry=ROOT / "results" / "embedding_geometry.json", dim=1024, clusters=2000
    )
    corpus = Corpus(dense_model(geometry), 1024, 30_000, 62)
    work = Path(tempfile.mkdtemp(prefix="m3s-fetch-", dir=args.workdir))
    flush, min_rows = bulk_load_segments(args.docs, BATCH)
    collection = Collection.create(
        work / "c",
        dim=1024,
        colbert_dim=1024,  # index_speed's documents: ColBERT on every 100th (not searched here)
        dense_index="hnsw-sq8",
        hnsw={"m": 16, "ef_construction": 100, "min_rows": min_rows, "ef_search": args.ef_search},
        flush_docs=flush,
        merge_factor=100,
        cache=False,
    )
    try:
        for start in range(0, args.docs, BATCH):
            collection.upsert(corpus.batch(start, min(BATCH, args.docs - start), 100, 128))
        collection.compact()
        seg = next(iter(collection.backend._segments.values()))
        queries = corpus.queries(args.queries, 32)
        truth = exact_truth(seg.dense.vectors, seg.sparse.to_coo(), queries, 30_000, 10)["hybrid"]
        search = DenseIndex.search

        def whole_depth(self, query, k, allowed=None, ef_search=None, exact_top=None):  # the previous rule
            return search(self, query, k, allowed, ef_search, None)

        rules = {"exact_top = k (library)": search, "exact_top = depth (previous)": whole_depth}
        result = {"docs": args.docs, "ef_search": args.ef_search, "machine": cpu_record(), "candidates": {}}
        for depth in args.candidates:
            times: dict[str, list[float]] = {r: [] for r in rules}
            found: dict[str, list[list[int]]] = {r: [] for r in rules}
            for q in queries[:20]:  # warm the page cache
                collection.search(q, k=10, mode="dense+sparse", candidates=depth, **TRUTH_SEARCH)
            for q in queries:
                for name, rule in rules.items():
                    with mock.patch.object(DenseIndex, "search", rule):
                        t = time.perf_counter()
                        hits = collection.search(
                            q,
                            k=10,
                            mode="dense+sparse",
                            candidates=depth,
                            ef_search=args.ef_search,
                            **TRUTH_SEARCH,
                        )
                        times[name].append(1000 * (time.perf_counter() - t))
                    found[name].append([int(h.id) for h in hits])
            result["candidates"][depth] = {
                name: {"recall@10": recall(found[name], truth), **percentiles(times[name])} for name in rules
            }
    finally:
        collection.close()
        shutil.rmtree(work, ignore_errors=True)
    print(f"\n{args.docs:,} documents, dense+sparse, efSearch {args.ef_search}, {args.queries} queries")
    print(f"{'candidates':>10} {'rule':<30} {'recall@10':>9} {'p50 ms':>8} {'p99 ms':>8}")
    for depth, rows in result["candidates"].items():
        for name, r in rows.items():
            print(f"{depth:>10} {name:<30} {r['recall@10']:>9.4f} {r['p50_ms']:>8.2f} {r['p99_ms']:>8.2f}")
    out = ROOT / "results" / f"hybrid_fetch-{args.docs}.json"
    out.write_text(json.dumps(result, indent=2))
    print(f"\nwritten to {out}")


if __name__ == "__main__":
    sys.exit(main())
