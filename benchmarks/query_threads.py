"""Query threads (`M3SEARCH_QUERY_THREADS`): latency of hybrid searches with one and with two query threads.

Searches a collection that `index_speed.py --keep` built (same data arguments: the queries are regenerated
from them), switching the setting per query (interleaved, alternating which goes first), so both columns see
the same page cache and machine load. Only a deep packed ColBERT re-rank uses the second thread
(`multivector.PARALLEL_TOKENS`); `dense+sparse` is the control, which no setting changes.

    PYTHONPATH=src python benchmarks/index_speed.py --docs 1000000 --colbert-every 1 --colbert-tokens 100 \\
        --colbert-dtype binary --batch 10000 --flush-docs 10000 --ef-search 128 --no-anchor --keep --workdir DIR
    PYTHONPATH=src python benchmarks/query_threads.py DIR/m3s-bench-*/collection --rerank 200 100 [--profile]

Prints a table, writes benchmarks/results/query_threads-DOCS.json.
"""

from __future__ import annotations

import argparse
import cProfile
import json
import os
import pstats
from collections.abc import Callable
from pathlib import Path

from host_speed import machine_record
from index_speed import percentiles
from interleave import WARM_QUERIES, interleaved, kept_corpus_queries

from m3search import Collection
from m3search.search.planner import default_candidates
from m3search.threads import QUERY_THREADS_ENV

ROOT = Path(__file__).resolve().parent


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("collection", type=Path, help="a collection kept by index_speed.py --keep")
    ap.add_argument("--rerank", type=int, nargs="+", default=[200], help="ColBERT depths of mode all")
    ap.add_argument("--queries", type=int, default=200, help="the first 40 warm the page cache, untimed")
    ap.add_argument("--ef-search", type=int, default=128)
    ap.add_argument("--query-tokens", type=int, default=32)
    ap.add_argument("--threads", type=int, nargs=2, default=[1, 2])
    ap.add_argument(
        "--profile",
        action="store_true",
        help="afterwards, cProfile 100 searches of `all` at the first --rerank on one thread (where the time goes)",
    )
    args = ap.parse_args()
    queries = kept_corpus_queries(args.queries, args.query_tokens)
    collection = Collection.open(args.collection, readonly=True, cache=False)
    docs = collection.count()
    plans = {"dense+sparse": {"mode": "dense+sparse"}}
    plans.update({f"all, rerank {d}": {"mode": "all", "rerank": d} for d in args.rerank})
    common = {"k": 10, "ef_search": args.ef_search, "candidates": default_candidates(docs)}

    def use(threads: int) -> Callable[[], None]:
        return lambda: os.environ.__setitem__(QUERY_THREADS_ENV, str(threads))

    timed, _ = interleaved(collection, queries, plans, {str(t): use(t) for t in args.threads}, **common)
    ms = {name: {int(t): v for t, v in by.items()} for name, by in timed.items()}
    if args.profile:
        os.environ[QUERY_THREADS_ENV] = "1"
        plan = plans[f"all, rerank {args.rerank[0]}"]
        with cProfile.Profile() as profile:
            for q in queries[WARM_QUERIES : WARM_QUERIES + 100]:
                collection.search(q, **common, **plan)
        pstats.Stats(profile).sort_stats("cumulative").print_stats(30)
    collection.close()
    result = {
        "collection": str(args.collection),
        "docs": docs,
        "args": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
        "machine": machine_record(),
        "latency_ms": {name: {str(t): percentiles(v) for t, v in by.items()} for name, by in ms.items()},
    }
    one, two = args.threads
    print(
        f"{docs:,} documents, {common['candidates']} candidates per stage, {len(queries) - WARM_QUERIES} queries"
    )
    print(
        f"{'search':<18} {f'{one} thread p50/p99 ms':>22} {f'{two} threads p50/p99 ms':>23} {'p50 ratio':>10}"
    )
    for name, by in result["latency_ms"].items():
        a, b = by[str(one)], by[str(two)]
        print(
            f"{name:<18} {a['p50_ms']:>11.2f}/{a['p99_ms']:<10.2f} {b['p50_ms']:>11.2f}/{b['p99_ms']:<11.2f} "
            f"{b['p50_ms'] / a['p50_ms']:>10.2f}"
        )
    out = ROOT / "results" / f"query_threads-{docs}.json"
    out.write_text(json.dumps(result, indent=2))
    print(f"written to {out}")


if __name__ == "__main__":
    main()
