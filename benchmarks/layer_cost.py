"""Where a one-stage search's time goes: `Collection.search` against its segment's index alone and against the
Qdrant Edge shard holding the same documents (issue 20).

Arms, per mode (dense, sparse): `collection` (the product: planning, the index, the hits' documents from the
segment's records), `collection, hits from SQLite` (the same search with the segment's records hidden, as for a
segment sealed before records existed: what the records save), `one call` (the same hits by the shortest path:
the index, the records, the `Hit` objects; what the collection's one-stage path still adds to it is the rest
of the layer), `index` (the one segment's
`DenseIndex.search` / `SparseIndex.search`, as the collection calls it), `edge` (the shard's request through
`edge_backend.EdgeSearch`, hits with their payloads: documents, as the collection returns) and `edge ids` (the
same request returning ids and scores, as the index arm does). Every arm gets a different query at each step
(arm j runs query i + j·n/arms): an arm run right after another on the same query would find the graph nodes
that query walks still in the CPU caches, which made the index look 40% faster than it is when this was a
one-off script. The arms' order rotates from one query to the next: in a fixed order the collection always ran
right after an Edge request, whose memory traffic evicts the local engine's, and the index right after the
one-call arm, which had left the same code and structures warm (0.1-0.3 ms a search on a 2-core VM). Before
timing, every query runs once through every arm: a freshly opened shard or collection reads its memory-mapped
files on first touch, and the comparison is of warm engines. The collection's layer is
collection − index. Then the hits' documents, each way in its own loop over the queries (warm code, so smaller
than in the interleaved arms): the segment's records, and the database's rows with their metadata parsed (what
searches read before the records).

Needs a compacted collection and a shard of the same data, as `index_speed.py --backend qdrant --keep` leaves
them (DIR/collection, DIR/edge):

    PYTHONPATH=src python benchmarks/layer_cost.py DIR [--queries 500] [--cold] [--ef-search 128]

Prints a table and writes benchmarks/results/layer_cost-<docs>[-ef<efSearch>][-cold].json (the efSearch is named
when it is not the default 128).
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import qdrant_edge as qe
from edge_backend import EdgeSearch
from host_speed import machine_record
from index_speed import TRUTH_SEARCH
from interleave import ROOT, kept_corpus_queries

from m3search import Collection
from m3search.search.results import Hit

K, EF = 10, 128  # EF: the default efSearch (--ef-search)


def only_segment(collection: Collection):
    """The collection's one segment; exits unless the collection is compacted (one segment, nothing pending)."""
    segments = list(collection.backend._segments.values())
    if len(segments) != 1 or collection.backend.stats()["pending"]:
        raise SystemExit("layer_cost.py needs a compacted collection (one segment, nothing pending)")
    if segments[0].documents is None:
        raise SystemExit(
            "layer_cost.py needs a segment with document records (sealed by m3search 2026-12-03+)"
        )
    return segments[0]


def arms(collection: Collection, shard: qe.EdgeShard, mode: str, ef: int = EF) -> dict:
    """The six ways to answer `mode` for a query, dense ones walking `ef` candidates: callables of a benchmark
    query."""
    seg = only_segment(collection)
    quantized = collection.config.dense_index == "hnsw-sq8"
    edge, edge_ids = EdgeSearch(shard, quantized), EdgeSearch(shard, quantized, documents=False)

    def index(q: dict):
        if mode == "dense":
            return seg.dense.search(np.asarray(q["dense"], np.float32), K, None, ef, exact_top=K)
        terms = np.fromiter(q["sparse"], np.int64, len(q["sparse"]))
        return seg.sparse.search((terms, np.fromiter(q["sparse"].values(), np.float32, len(terms))), K)

    def one_call(q: dict) -> list[Hit]:
        rows, scores = index(q)
        records = seg.documents.read(rows.tolist())
        return [
            Hit(doc_id, s, {mode: s}, text, metadata, kind, str(seq) if thumbnail else None)
            for (doc_id, kind, text, thumbnail, metadata), s, seq in zip(
                records, scores.tolist(), seg.seqs[rows].tolist()
            )
        ]

    def search(q: dict) -> list[Hit]:
        return collection.search(q, k=K, mode=mode, ef_search=ef, **TRUTH_SEARCH)

    def database_hits(q: dict) -> list[Hit]:
        """The search as on a segment sealed without records: its hits' documents from SQLite."""
        records, seg.documents = seg.documents, None
        try:
            return search(q)
        finally:
            seg.documents = records

    return {
        "collection": search,
        "collection, hits from SQLite": database_hits,
        "one call": one_call,
        "index": index,
        "edge": lambda q: edge.search(q, mode, K, K, ef),
        "edge ids": lambda q: edge_ids.search(q, mode, K, K, ef),
    }


def tight(fn, items: list) -> float:
    """CPU µs per call of `fn` over `items` in one loop (best of two passes)."""
    best = float("inf")
    for _ in range(2):
        c = time.thread_time()
        for x in items:
            fn(x)
        best = min(best, (time.thread_time() - c) / len(items) * 1e6)
    return best


def pieces(collection: Collection, ways: dict, timed: list[dict]) -> dict[str, float]:
    """The search, its index and the hits' documents read both ways (the segment's records, as searches do,
    and the database's rows with their metadata parsed), each timed in a loop of its own."""
    db, seg = collection.backend._db, only_segment(collection)
    hit_rows = [ways["index"](q)[0].tolist() for q in timed]
    hit_seqs = [seg.seqs[r].tolist() for r in hit_rows]
    return {
        "collection_us": tight(ways["collection"], timed),
        "index_us": tight(ways["index"], timed),
        "hit_records_us": tight(seg.documents.read, hit_rows),
        "hit_rows_sqlite_us": tight(
            lambda s: [json.loads(r.metadata) for r in db.docs_by_seq(s).values()], hit_seqs
        ),
    }


def open_kept(
    description: str, queries: int, more: Callable[[argparse.ArgumentParser], object] | None = None
) -> tuple[argparse.Namespace, Collection, qe.EdgeShard]:
    """The command line of a script over what `index_speed.py --backend qdrant --keep` left (DIR/collection,
    DIR/edge; `--queries`, `--query-tokens`, and what `more` adds), and the collection (read-only) and shard it
    names, opened."""
    ap = argparse.ArgumentParser(
        description=description, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("work", type=Path, help="the directory index_speed.py --keep left (collection/, edge/)")
    ap.add_argument("--queries", type=int, default=queries)
    ap.add_argument("--query-tokens", type=int, default=32)
    if more is not None:
        more(ap)
    args = ap.parse_args()
    collection = Collection.open(args.work / "collection", readonly=True, cache=False)
    return args, collection, qe.EdgeShard.load(str(args.work / "edge"))


def add_options(ap: argparse.ArgumentParser) -> None:
    """This script's options beside `open_kept`'s."""
    ap.add_argument(
        "--cold",
        action="store_true",
        help="every timed arm right after an Edge request on another query (untimed): each search finds the "
        "caches as the other engine left them, as in index_speed.py's interleaving",
    )
    ap.add_argument(
        "--ef-search",
        type=int,
        default=EF,
        help="the dense walks' candidate list (short ones show the fixed costs best)",
    )


def main() -> None:
    args, collection, shard = open_kept(__doc__, 500, add_options)
    timed = kept_corpus_queries(args.queries, args.query_tokens)
    result: dict = {
        "machine": machine_record(),
        "docs": collection.count(),
        "queries": len(timed),
        "cold": args.cold,
        "ef_search": args.ef_search,
        "modes": {},
    }
    try:
        for mode in ("dense", "sparse"):
            ways = arms(collection, shard, mode, args.ef_search)
            same = 0
            for q in timed:
                found = {name: run(q) for name, run in ways.items()}
                hits = found["collection"]  # the same documents, scores and all, three ways
                same += hits == found["one call"] == found["collection, hits from SQLite"]
            wall: dict[str, list[float]] = {a: [] for a in ways}
            cpu: dict[str, list[float]] = {a: [] for a in ways}
            stride = len(timed) // len(ways)
            order = list(ways.items())
            for i in range(len(timed)):
                for shift in range(len(order)):
                    j = (i + shift) % len(order)  # rotated: no arm always runs right after the same one
                    name, run = order[j]
                    q = timed[(i + j * stride) % len(timed)]
                    if args.cold:
                        ways["edge ids"](timed[(i + j * stride + stride // 2) % len(timed)])
                    t, c = time.perf_counter(), time.thread_time()
                    run(q)
                    cpu[name].append(time.thread_time() - c)
                    wall[name].append(time.perf_counter() - t)
            result["modes"][mode] = {
                a: {"p50_ms": 1e3 * float(np.median(wall[a])), "cpu_mean_ms": 1e3 * float(np.mean(cpu[a]))}
                for a in ways
            }
            result["modes"][mode]["tight_loop"] = pieces(collection, ways, timed)
            result["modes"][mode]["one_call_same_hits"] = same / len(timed)
    finally:
        shard.close()
        collection.close()
    print(
        f"{result['docs']:,} documents, {len(timed)} queries per arm, efSearch {args.ef_search}, "
        f"{result['machine'].get('model name', 'CPU')}"
    )
    print(
        f"{'mode':7s} {'collection':>11s} {'hits SQLite':>12s} {'one call':>9s} {'index':>8s} {'layer':>8s} "
        f"{'edge':>8s} {'edge ids':>9s} {'edge/coll':>10s} {'edge ids/index':>15s}"
    )
    for mode, by in result["modes"].items():
        c, d, o, i, e, ei = (
            by[a]["cpu_mean_ms"]
            for a in ("collection", "collection, hits from SQLite", "one call", "index", "edge", "edge ids")
        )
        by["layer_cpu_ms"] = c - i
        print(
            f"{mode:7s} {c:11.3f} {d:12.3f} {o:9.3f} {i:8.3f} {c - i:8.3f} {e:8.3f} {ei:9.3f} {e / c:10.2f} "
            f"{ei / i:15.2f}"
        )
    print("(CPU ms per search, mean; p50 wall in the JSON)")
    for mode, by in result["modes"].items():
        print(
            f"{mode}: one call and the SQLite hits equal the collection's hits for {by['one_call_same_hits']:.1%} "
            "of the queries"
        )
    for mode, by in result["modes"].items():
        print(
            f"{mode} in tight loops, CPU µs: "
            + ", ".join(f"{k[:-3]} {v:.0f}" for k, v in by["tight_loop"].items())
        )
    ef = f"-ef{args.ef_search}" if args.ef_search != EF else ""
    out = ROOT / "results" / f"layer_cost-{result['docs']}{ef}{'-cold' if args.cold else ''}.json"
    out.write_text(json.dumps(result, indent=2))
    print(f"written to {out}")


if __name__ == "__main__":
    main()
