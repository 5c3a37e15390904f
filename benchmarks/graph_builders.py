"""Which codes to link an HNSW graph over, and to walk it over (issue 20): the same graph built over byte codes
compared by integer distance (`ByteCodes`, what `build_ann` uses for unit vectors since 2026-12-04), linked by
the compiled insertion (`graph_build`, what `build_ann` uses since 2026-12-04, night) and by faiss's `add`,
float32 and float16 copies, 8-bit codes with one range (`QT_8bit_uniform`, used 2026-12-03 to 12-04) and SQ8 with per-dimension
ranges, each searched as `DenseIndex` does (candidates re-ranked exactly) over its own codes and kept over SQ8
storage (what `hnsw-sq8` walked until 2026-12-03, late), on a kept collection's vectors, at each `--ef-search`;
also byte codes with base-layer lists kept full (faiss's `keep_max_size_level0`, not used by `build_ann`), and
the CPU time of one distance over each graph's codes in an exhaustive scan (`scan_ns`). Builders alternate
(`--rounds` of each, interleaved); recall@10 against exact search; the two walks of a graph alternate query by
query, each query searched once per walk, and their p50 is of the CPU time a search takes.

    PYTHONPATH=src python benchmarks/index_speed.py --docs 100000 --backend qdrant --ef-search 128 \\
        --graphs 16:100 --keep --workdir DIR
    PYTHONPATH=src:benchmarks python benchmarks/graph_builders.py DIR/m3s-bench-*/collection \\
        [--builders bytes bytes_faiss_add float32]

Prints a table and writes benchmarks/results/graph_builders-<docs><tag>.json.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import faiss
import numpy as np
from host_speed import machine_record
from interleave import ROOT, kept_corpus_queries
from layer_cost import only_segment

from m3search import Collection
from m3search.index.dense import ByteCodes, DenseIndex, HNSWParams, _add_blocks, _new_graph

#: name -> (faiss code type, None: `ByteCodes`, as `build_ann` links unit vectors, "float32": faiss's flat
#: storage; whether faiss fills each base-layer list up to 2M with the nearest candidates the neighbour heuristic
#: rejected, `keep_max_size_level0`; whether faiss's own `add` links byte codes instead of the compiled insertion,
#: `graph_build`, which `build_ann` uses)
BUILDERS: dict[str, tuple[int | str | None, bool, bool]] = {
    "bytes": (None, False, False),
    "bytes_faiss_add": (None, False, True),
    "bytes_full_level0": (None, True, False),
    "bytes_full_level0_faiss_add": (None, True, True),
    "float32": ("float32", False, True),
    "float16": (faiss.ScalarQuantizer.QT_fp16, False, True),
    "8bit_uniform": (faiss.ScalarQuantizer.QT_8bit_uniform, False, True),
    "sq8": (faiss.ScalarQuantizer.QT_8bit, False, True),
}
#: Queries whose exhaustive scan of a graph's codes times one distance (`scan_ns`).
SCAN_QUERIES = 8
#: Rows linked per call, as `build_ann` adds them.
BLOCK = 65_536


def build(
    vectors: np.ndarray, codes: int | str | None, full_level0: bool, faiss_add: bool, params: HNSWParams
) -> tuple[faiss.Index, float, float]:
    """A graph linked over `codes` (None: `ByteCodes`; "float32": the vectors), over those codes, by faiss's
    `add` or (`faiss_add` false, byte codes only) the compiled insertion: (index, wall s, CPU s of linking)."""
    byte_codes = ByteCodes.fit(vectors) if codes is None else None
    builder: Any
    if codes is None:
        builder = _new_graph(vectors, params, byte_codes)
    elif codes == "float32":
        builder = faiss.IndexHNSWFlat(vectors.shape[1], params.m, faiss.METRIC_INNER_PRODUCT)
    else:
        builder = faiss.IndexHNSWSQ(vectors.shape[1], codes, params.m, faiss.METRIC_INNER_PRODUCT)
        builder.train(vectors)
    builder.hnsw.efConstruction = params.ef_construction
    builder.keep_max_size_level0 = full_level0
    wall, cpu = time.perf_counter(), time.process_time()
    if byte_codes is not None and faiss_add:
        for start in range(0, len(vectors), BLOCK):
            builder.add(byte_codes.encode(vectors[start : start + BLOCK]))
    else:
        _add_blocks(builder, vectors, byte_codes)
    return builder, time.perf_counter() - wall, time.process_time() - cpu


def scan_ns(graph: faiss.Index, queries: np.ndarray) -> float:
    """CPU ns a distance takes over `graph`'s codes in an exhaustive scan of them, one query at a time (the
    codes read in order: the distance kernel's own cost, without a walk's scattered reads)."""
    storage = faiss.downcast_index(graph.storage)
    codes = ByteCodes.of(graph)
    start = time.process_time()
    for q in queries if codes is None else codes.encode(queries):
        storage.search(q[None, :], 10)
    return (time.process_time() - start) * 1e9 / (len(queries) * storage.ntotal)


def over_sq8(vectors: np.ndarray, graph: faiss.Index, params: HNSWParams) -> faiss.Index:
    """`graph`'s links kept over SQ8 storage of `vectors`."""
    index = faiss.IndexHNSWSQ(
        vectors.shape[1], faiss.ScalarQuantizer.QT_8bit, params.m, faiss.METRIC_INNER_PRODUCT
    )
    index.train(vectors)
    index.hnsw = graph.hnsw
    # a graph linked by squared distance (byte codes) is walked by inner product
    index.hnsw.is_similarity = True
    _add_blocks(index.storage, vectors)
    index.ntotal = len(vectors)
    return index


def walks(indexes: dict[str, DenseIndex], queries: np.ndarray, truth: np.ndarray, ef: int) -> dict[str, dict]:
    """Each index searches every query (efSearch `ef`), the indexes alternating query by query: recall@10 and
    the p50 CPU ms of a search."""
    found: dict[str, list[np.ndarray]] = {name: [] for name in indexes}
    cpu: dict[str, list[float]] = {name: [] for name in indexes}
    for i, q in enumerate(queries):
        names = list(indexes)
        for name in names[i % len(names) :] + names[: i % len(names)]:
            start = time.process_time()
            found[name].append(indexes[name].search(q, 10, ef_search=ef)[0])
            cpu[name].append(time.process_time() - start)
    return {
        name: {
            "recall@10": float(np.mean([len(set(f) & set(t)) / 10 for f, t in zip(found[name], truth)])),
            "p50_cpu_ms": float(np.median(cpu[name]) * 1e3),
        }
        for name in indexes
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("collection", type=Path, help="a compacted collection kept by index_speed.py --keep")
    ap.add_argument("--rounds", type=int, default=2, help="builds of each, interleaved")
    ap.add_argument("--queries", type=int, default=400)
    ap.add_argument("--m", type=int, default=16)
    ap.add_argument("--ef-construction", type=int, default=100)
    ap.add_argument("--ef-search", type=int, nargs="+", default=[128])
    ap.add_argument("--builders", nargs="+", choices=list(BUILDERS), default=list(BUILDERS))
    ap.add_argument("--tag", default="", help="appended to the result's name")
    args = ap.parse_args()
    collection = Collection.open(args.collection, readonly=True, cache=False)
    vectors = np.ascontiguousarray(only_segment(collection).dense.vectors, dtype=np.float32)
    collection.close()
    queries = np.stack([q["dense"] for q in kept_corpus_queries(args.queries, 32)]).astype(np.float32)
    truth = np.argsort(-(queries @ vectors.T), axis=1)[:, :10]
    params = HNSWParams(m=args.m, ef_construction=args.ef_construction)
    runs: dict[str, list[dict]] = {name: [] for name in args.builders}
    for _ in range(args.rounds):
        for name in args.builders:
            graph, wall, cpu = build(vectors, *BUILDERS[name], params)
            scan = scan_ns(graph, queries[:SCAN_QUERIES])
            indexes = {
                "own": DenseIndex(vectors, graph, params),
                "sq8": DenseIndex(vectors, over_sq8(vectors, graph, params), params),
            }
            walked = {str(ef): walks(indexes, queries, truth, ef) for ef in args.ef_search}
            runs[name].append({"build_s": wall, "build_cpu_s": cpu, "scan_ns": scan, "walks": walked})
            print(
                f"{name:<18} build {wall:6.1f} s (CPU {cpu:6.1f} s), scan {scan:5.1f} ns a distance",
                flush=True,
            )
    result = {"docs": len(vectors), "m": args.m, "ef_construction": args.ef_construction}
    result |= {"ef_search": args.ef_search, "machine": machine_record(), "runs": runs}
    print(
        f"\n{'codes':<18} {'build s (each round)':>22} {'efSearch':>8} {'own: recall@10':>15} {'p50 ms':>7} "
        f"{'SQ8: recall@10':>15} {'p50 ms':>7}"
    )
    for name, rounds in runs.items():
        times = " / ".join(f"{r['build_s']:.1f}" for r in rounds)
        for ef in map(str, args.ef_search):
            own, sq8 = (np.median([r["walks"][ef][w]["p50_cpu_ms"] for r in rounds]) for w in ("own", "sq8"))
            recall = rounds[0]["walks"][ef]
            print(
                f"{name:<18} {times:>22} {ef:>8} {recall['own']['recall@10']:>15.4f} {own:>7.3f} "
                f"{recall['sq8']['recall@10']:>15.4f} {sq8:>7.3f}"
            )
            times = ""
    out = ROOT / "results" / f"graph_builders-{len(vectors)}{args.tag}.json"
    out.write_text(json.dumps(result, indent=2))
    print(f"written to {out}")


if __name__ == "__main__":
    main()
