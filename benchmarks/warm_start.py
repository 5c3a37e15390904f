"""Warming a collection's files into the page cache (`Collection.warm`): the first queries after opening a large
collection on a cold page cache, without warming, while warming, and after it.

Each arm starts from an empty page cache (writes /proc/sys/vm/drop_caches, so it needs root), opens the
collection `index_speed.py --keep` built (same data arguments: the queries are regenerated from them) and times
the same queries: `all` at the library's defaults (ColBERT re-ranking 200 candidates) and `dense+sparse`.

    PYTHONPATH=src python benchmarks/index_speed.py --docs 1000000 --colbert-every 1 --colbert-tokens 100 \\
        --colbert-dtype binary --batch 10000 --flush-docs 10000 --ef-search 128 --no-anchor --keep --workdir DIR
    PYTHONPATH=src python benchmarks/warm_start.py DIR/m3s-bench-*/collection

Prints a table, writes benchmarks/results/warm_start-DOCS.json.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

from host_speed import machine_record
from index_speed import in_child, percentiles
from interleave import kept_corpus_queries

from m3search import Collection
from m3search.threads import meminfo_bytes

ROOT = Path(__file__).resolve().parent
ARMS = ("cold", "warming", "warmed")


def drop_caches() -> None:
    """Empty the page cache (root only)."""
    os.sync()
    with open("/proc/sys/vm/drop_caches", "w") as f:
        f.write("1\n")


def run_arm(arm: str, path: Path, queries: list[dict], plans: dict[str, dict]) -> dict:
    """One arm from a dropped page cache: open, warm as the arm says, then every query under every plan."""
    drop_caches()
    before = meminfo_bytes("Cached")
    free = meminfo_bytes("MemFree") / 2**30
    start = time.perf_counter()
    collection = Collection.open(path, readonly=True, cache=False)
    out: dict = {"free_memory_gb": free, "open_s": time.perf_counter() - start}
    thread = collection.warm() if arm != "cold" else None
    if arm == "warmed" and thread is not None:
        thread.join()
        out["warm_s"] = time.perf_counter() - start
    ms: dict[str, list[float]] = {name: [] for name in plans}
    for q in queries:
        for name, plan in plans.items():
            t = time.perf_counter()
            collection.search(q, k=10, **plan)
            ms[name].append(1000 * (time.perf_counter() - t))
    out["cached_gb_after_queries"] = (meminfo_bytes("Cached") - before) / 2**30
    if thread is not None:
        thread.join()  # before the next arm drops the page cache
        out["warm_read_gb"] = sum(n for _, n in thread.read) / 2**30
    collection.close()
    out["latency_ms"] = {
        name: {**percentiles(v), "first_10_mean_ms": sum(v[:10]) / len(v[:10])} for name, v in ms.items()
    }
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("collection", type=Path, help="a collection kept by index_speed.py --keep")
    ap.add_argument("--queries", type=int, default=100)
    ap.add_argument("--query-tokens", type=int, default=32)
    ap.add_argument("--ef-search", type=int, default=128)
    args = ap.parse_args()
    queries = kept_corpus_queries(args.queries, args.query_tokens)
    plans = {"all": {"mode": "all", "ef_search": args.ef_search}}
    plans["dense+sparse"] = {"mode": "dense+sparse", "ef_search": args.ef_search}
    with Collection.open(args.collection, readonly=True, cache=False) as collection:
        docs = collection.count()
        files = collection.backend.search_files()
    result = {
        "collection": str(args.collection),
        "docs": docs,
        "search_files_gb": sum(f.stat().st_size for f in files) / 2**30,
        "args": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
        "machine": machine_record(),
        # each arm in a fresh process: pages an earlier arm mapped would survive its page-cache drop
        "arms": {arm: in_child(run_arm, arm, args.collection, queries, plans) for arm in ARMS},
    }
    print(
        f"{docs:,} documents, {result['search_files_gb']:.1f} GB of search files, "
        f"{result['arms']['cold']['free_memory_gb']:.1f} GB free, {len(queries)} queries from a dropped page cache"
    )
    print(
        f"{'arm':<9} {'search':<13} {'p50 ms':>8} {'p99 ms':>8} {'first 10 ms':>12}  warm-up and page cache"
    )
    for arm, r in result["arms"].items():
        warm = f"read {r['warm_read_gb']:.1f} GB" if "warm_read_gb" in r else "no warm-up"
        warm += f" in {r['warm_s']:.0f} s, then" if "warm_s" in r else ","
        warm += f" {r['cached_gb_after_queries']:.1f} GB cached after the queries"
        for name, lat in r["latency_ms"].items():
            print(
                f"{arm:<9} {name:<13} {lat['p50_ms']:>8.1f} {lat['p99_ms']:>8.1f} {lat['first_10_mean_ms']:>12.1f}  {warm}"
            )
            warm = ""
    out = ROOT / "results" / f"warm_start-{docs}.json"
    out.write_text(json.dumps(result, indent=2))
    print(f"written to {out}")


if __name__ == "__main__":
    main()
