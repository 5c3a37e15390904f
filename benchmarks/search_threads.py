"""Searches from several threads at once (a server's workers): latency and throughput of one kept collection's
searches with 1, 2, ... threads each searching its own share of the queries (issue 20: re-scoring a dense
search's candidates woke faiss's OpenMP team, whose barrier waited for a busy core).

Every thread count runs the same queries (each thread a contiguous share), after one untimed pass that warms
the page cache; per search the wall time, and the whole run's queries a second.

    PYTHONPATH=src python benchmarks/index_speed.py --docs 100000 --backend qdrant --ef-search 128 \\
        --graphs 16:100 --keep --workdir DIR
    PYTHONPATH=src:benchmarks python benchmarks/search_threads.py DIR/m3s-bench-*/collection [--threads 1 2 3]

Prints a table and writes benchmarks/results/search_threads-<docs><tag>.json.
"""

from __future__ import annotations

import argparse
import json
import threading
import time
from pathlib import Path

import numpy as np
from host_speed import machine_record
from index_speed import TRUTH_SEARCH, percentiles
from interleave import ROOT, kept_corpus_queries

from m3search import Collection


def run(collection: Collection, queries: list[dict], mode: str, threads: int, ef: int) -> dict:
    """`queries` searched by `threads` threads at once, each its own contiguous share: per-search wall ms
    percentiles and queries a second."""
    shares = np.array_split(np.arange(len(queries)), threads)
    times: list[list[float]] = [[] for _ in shares]
    start_line = threading.Barrier(threads)

    def work(share: np.ndarray, out: list[float]) -> None:
        start_line.wait()
        for i in share:
            began = time.perf_counter()
            collection.search(queries[i], k=10, mode=mode, ef_search=ef, **TRUTH_SEARCH)
            out.append((time.perf_counter() - began) * 1e3)

    pool = [threading.Thread(target=work, args=(share, out)) for share, out in zip(shares, times)]
    began = time.perf_counter()
    for thread in pool:
        thread.start()
    for thread in pool:
        thread.join()
    elapsed = time.perf_counter() - began
    return {**percentiles([t for part in times for t in part]), "qps": len(queries) / elapsed}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("collection", type=Path, help="a collection kept by index_speed.py --keep")
    ap.add_argument("--threads", type=int, nargs="+", default=[1, 2, 3])
    ap.add_argument("--modes", nargs="+", default=["dense", "dense+sparse"])
    ap.add_argument("--queries", type=int, default=400)
    ap.add_argument("--ef-search", type=int, default=128)
    ap.add_argument("--tag", default="", help="appended to the result's name")
    args = ap.parse_args()
    collection = Collection.open(args.collection, readonly=True)
    queries = kept_corpus_queries(args.queries, 32)
    for mode in args.modes:  # warm the page cache and the compiled code
        run(collection, queries, mode, 1, args.ef_search)
    rows = [
        {"mode": mode, "threads": threads, **run(collection, queries, mode, threads, args.ef_search)}
        for mode in args.modes
        for threads in args.threads
    ]
    docs = collection.count()
    collection.close()
    print(f"{'mode':<14} {'threads':>7} {'p50 ms':>8} {'p99 ms':>8} {'queries/s':>10}")
    for row in rows:
        p50, p99 = row["p50_ms"], row["p99_ms"]
        print(f"{row['mode']:<14} {row['threads']:>7} {p50:>8.2f} {p99:>8.2f} {row['qps']:>10.0f}")
    result = {"docs": docs, "ef_search": args.ef_search, "rows": rows, "machine": machine_record()}
    out = ROOT / "results" / f"search_threads-{docs}{args.tag}.json"
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"written to {out}")


if __name__ == "__main__":
    main()
