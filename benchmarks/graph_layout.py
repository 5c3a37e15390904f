"""The dense graph's memory layout (issue 20): the same HNSW graph searched through `Collection` with its nodes
in row order on 4 KiB pages (how segments were sealed before 2026-12-03), on 2 MiB pages (`use_huge_pages`),
and in walk order on 2 MiB pages (`walk_order`, as segments are sealed now), beside the Qdrant Edge shard
holding the same documents.

The three layouts are made from the compacted collection's one graph (same links, renumbered; copies in this
process, so the first does not get the huge pages the loaded graph has) and swapped into the segment per query.
Every query runs every mode (dense, sparse, both hybrids) on the collection and on the shard, alternating which
goes first, as `index_speed.py` does; the layout rotates from query to query, so each layout's searches see the
same interleaving. Every query runs untimed first under every layout (a freshly opened shard faults its files in
on first touch). Checks that the three layouts return the same hits.

    PYTHONPATH=src python benchmarks/index_speed.py --docs 100000 --backend qdrant --ef-search 128 \\
        --graphs 16:100 --no-anchor --keep
    PYTHONPATH=src:benchmarks python benchmarks/graph_layout.py DIR [--queries 900]   # DIR: the kept m3s-bench-*

Prints a table and writes benchmarks/results/graph_layout-<docs>.json.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import faiss
import numpy as np
from edge_backend import EdgeSearch
from host_speed import machine_record
from index_speed import TRUTH_SEARCH, TRUTH_WEIGHTS
from interleave import ROOT, kept_corpus_queries
from layer_cost import only_segment, open_kept

from m3search.index.dense import use_huge_pages, walk_order

K, EF, CANDIDATES = 10, 128, 100
THP_MODE = Path("/sys/kernel/mm/transparent_hugepage/enabled")
MODES = (("dense", "weighted"), ("sparse", "weighted"), ("dense+sparse", "weighted"), ("dense+sparse", "rrf"))


def layouts(graph, order: np.ndarray | None) -> dict[str, tuple]:
    """(graph, node -> row order) per layout, all three from `graph` (whose node i is row `order[i]`)."""
    in_rows = faiss.clone_index(graph)
    if order is not None:  # back to row order: new node r is the old node holding row r
        in_rows.permute_entries(np.argsort(order))
    huge = faiss.clone_index(in_rows)
    use_huge_pages(huge)
    walked = faiss.clone_index(in_rows)
    walk = walk_order(walked)
    walked.permute_entries(walk)
    use_huge_pages(walked)
    return {
        "row order, 4 KiB pages": (in_rows, None),
        "row order, 2 MiB pages": (huge, None),
        "walk order, 2 MiB pages": (walked, walk),
    }


def main() -> None:
    args, collection, shard = open_kept(__doc__, 900)
    edge = EdgeSearch(shard, collection.config.dense_index == "hnsw-sq8")
    seg = only_segment(collection)
    ways = layouts(seg.dense.ann, seg.dense.order)
    names = list(ways)
    queries = kept_corpus_queries(args.queries, args.query_tokens)

    def local(q: dict, mode: str, fusion: str) -> list[tuple[str, float]]:
        hits = collection.search(
            q, k=K, mode=mode, fusion=fusion, ef_search=EF, candidates=CANDIDATES, **TRUTH_SEARCH
        )
        return [(h.id, h.score) for h in hits]

    def use(name: str) -> None:
        seg.dense.ann, seg.dense.order = ways[name]

    same = 0
    for q in queries:  # untimed: every query under every layout, and on the shard
        found = []
        for name in names:
            use(name)
            found.append([local(q, mode, fusion) for mode, fusion in MODES])
        same += all(f == found[0] for f in found)
        for mode, fusion in MODES:
            edge.search(q, mode, K, CANDIDATES, EF, fusion, TRUTH_WEIGHTS)
    wall: dict[str, dict[str, list[float]]] = {f"{m} {f}": {} for m, f in MODES}
    for i, q in enumerate(queries):
        name = names[i % len(names)]
        use(name)
        for mode, fusion in MODES:
            pair = [name, "Qdrant Edge"]
            for who in pair if (i // len(names)) % 2 == 0 else pair[::-1]:
                t = time.perf_counter()
                if who == name:
                    local(q, mode, fusion)
                else:
                    edge.search(q, mode, K, CANDIDATES, EF, fusion, TRUTH_WEIGHTS)
                wall[f"{mode} {fusion}"].setdefault(who, []).append(1e3 * (time.perf_counter() - t))
    shard.close()
    collection.close()
    result = {
        "machine": machine_record(),
        "docs": len(seg),
        "queries": len(queries),
        "same_hits_all_layouts": same / len(queries),
        # with "always", the first layout's copy may be on huge pages too
        "transparent_hugepages": THP_MODE.read_text().strip() if THP_MODE.exists() else None,
        "p50_ms": {
            stage: {who: float(np.median(ms)) for who, ms in by.items()} for stage, by in wall.items()
        },
    }
    print(
        f"{result['docs']:,} documents, {len(queries)} queries, {result['machine'].get('model name', 'CPU')}"
    )
    print(
        f"{'stage':24s}"
        + "".join(f"{n:>26s}" for n in [*names, "Qdrant Edge"])
        + f"{'Edge / walk order':>19s}"
    )
    for stage, by in result["p50_ms"].items():
        ratio = by["Qdrant Edge"] / by[names[-1]]
        print(f"{stage:24s}" + "".join(f"{by[n]:26.3f}" for n in [*names, "Qdrant Edge"]) + f"{ratio:19.2f}")
    print(
        f"(p50 ms; every layout returned the same hits for {result['same_hits_all_layouts']:.1%} of the queries)"
    )
    out = ROOT / "results" / f"graph_layout-{result['docs']}.json"
    out.write_text(json.dumps(result, indent=2))
    print(f"written to {out}")


if __name__ == "__main__":
    main()
