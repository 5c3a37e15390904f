"""Searches as users make them: only the query, k and the mode, every other setting the library's default, on
a local and an edge collection of the same documents.

`index_speed.py` passes every setting (`candidates`, `ef_search`, weights), so a cost that only a default
incurs does not show in its tables: until 591bb58 every default search on an edge collection made an exact count
to size its depth (10 ms at 100k). Here each query runs four ways, interleaved: on each backend with the
defaults, and with the default depth spelled out (`candidates=default_candidates(count)`, the control). The
two must return the same hits, and the difference in time is what working out the defaults costs.

    PYTHONPATH=src python benchmarks/index_speed.py --docs 100000 --ef-search 128 --graphs 16:100 \\
        --backend edge --no-anchor --keep --workdir DIR       # or --reuse a kept local collection
    PYTHONPATH=src python benchmarks/default_search.py DIR/m3s-bench-*/collection DIR/m3s-bench-*/edge-collection

Prints a table, writes benchmarks/results/default_search-DOCS.json.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from host_speed import machine_record
from index_speed import percentiles
from interleave import WARM_QUERIES, kept_corpus_queries

from m3search import Collection
from m3search.search.planner import default_candidates

ROOT = Path(__file__).resolve().parent
MODES = ("dense", "sparse", "dense+sparse", "all")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("local", type=Path, help="a local collection kept by index_speed.py --keep")
    ap.add_argument(
        "edge", type=Path, help="the same documents in an edge collection (index_speed.py --backend edge)"
    )
    ap.add_argument("--queries", type=int, default=240, help=f"the first {WARM_QUERIES} are untimed")
    ap.add_argument("--query-tokens", type=int, default=32)
    args = ap.parse_args()
    queries = kept_corpus_queries(args.queries, args.query_tokens)
    collections = {
        "local": Collection.open(args.local, readonly=True, cache=False),
        "edge": Collection.open(args.edge, backend="edge", readonly=True, cache=False),
    }
    counts = {name: c.count() for name, c in collections.items()}
    if len(set(counts.values())) != 1:
        raise SystemExit(f"the two collections hold different documents: {counts}")
    docs = counts["local"]
    ways = {"defaults": {}, "depth spelled out": {"candidates": default_candidates(docs)}}
    ms: dict[str, list[float]] = {}
    same = dict.fromkeys(MODES, True)
    for i, q in enumerate(queries):
        for mode in MODES:
            hits = {}
            order = list(collections.items()) if i % 2 else list(collections.items())[::-1]
            for backend, collection in order:
                for way, extra in ways.items() if i % 2 else list(ways.items())[::-1]:
                    start = time.perf_counter()
                    found = collection.search(q, k=10, mode=mode, **extra)
                    if i >= WARM_QUERIES:
                        ms.setdefault(f"{backend}|{mode}|{way}", []).append(
                            1000 * (time.perf_counter() - start)
                        )
                    hits[(backend, way)] = [(h.id, round(h.score, 5)) for h in found]
            same[mode] &= hits[("local", "defaults")] == hits[("local", "depth spelled out")]
            same[mode] &= hits[("edge", "defaults")] == hits[("edge", "depth spelled out")]
    for collection in collections.values():
        collection.close()
    table = {key: percentiles(values) for key, values in ms.items()}
    report = {
        "benchmark": "default_search",
        "date": time.strftime("%Y-%m-%d %H:%M:%S"),
        "machine": machine_record(),
        "docs": docs,
        "queries_timed": len(queries) - WARM_QUERIES,
        "query_tokens": args.query_tokens,
        "default_candidates": default_candidates(docs),
        "same_hits_with_depth_spelled_out": same,
        "ms": table,
    }
    out = ROOT / "results" / f"default_search-{docs}.json"
    out.write_text(json.dumps(report, indent=2) + "\n")
    print(
        f"{docs:,} documents, {report['queries_timed']} queries, p50 / p99 ms ({report['machine']['model name']})"
    )
    print(f"{'mode':14s} {'local':>15s} {'local, depth':>15s} {'edge':>15s} {'edge, depth':>15s}  same hits")
    for mode in MODES:
        cells = [
            f"{table[f'{b}|{mode}|{w}']['p50_ms']:6.2f} / {table[f'{b}|{mode}|{w}']['p99_ms']:6.2f}"
            for b in collections
            for w in ways
        ]
        print(f"{mode:14s} " + " ".join(f"{c:>15s}" for c in cells) + f"  {same[mode]}")
    print(f"written to {out}")


if __name__ == "__main__":
    main()
