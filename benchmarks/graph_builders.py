"""Which codes to link an HNSW graph over, how, and how to walk it (issue 20): the same graph built over byte
codes compared by integer distance (`ByteCodes`, what `build_ann` uses for unit vectors since 2026-12-04), linked
by the compiled insertion (`graph_build`, what `build_ann` uses since 2026-12-04, night) with base-layer lists
filled up to the headroom (`HNSWParams.fill_base_layer`, the default since 2026-12-04, late) or not, and by
faiss's `add`; base-layer lists kept full as faiss keeps them (`keep_max_size_level0`: pruned lists filled too),
by faiss and by the compiled insertion; float32 and float16 copies, 8-bit codes with one range
(`QT_8bit_uniform`, used 2026-12-03 to 12-04) and SQ8 with per-dimension ranges, each searched as `DenseIndex`
does (candidates re-ranked exactly) over its own codes and kept over SQ8 storage (what `hnsw-sq8` walked until
2026-12-03, late), at each `--ef-search`; also the CPU time of one distance over each graph's codes in an
exhaustive scan (`scan_ns`). Builders alternate (`--rounds` of each, interleaved); recall@10 against exact
search; the two walks of a graph alternate query by query, each query searched once per walk, and their p50 is
of the CPU time a search takes.

Rows: a kept collection's calibrated vectors and `index_speed.py`'s queries, or (`--real`) real text
embeddings: multilingual-e5-small (the offline model) of every sentence of SciFact's abstracts, XQuAD-R's
paragraphs and questions (11 languages) and Flickr8k's captions in `../shared/data` (~50k, encoded once into
`benchmarks/.work/`, ~2 min), 2,000 of them held out as queries.

    PYTHONPATH=src python benchmarks/index_speed.py --docs 100000 --backend qdrant --ef-search 128 \\
        --graphs 16:100 --keep --workdir DIR
    PYTHONPATH=src:benchmarks python benchmarks/graph_builders.py DIR/m3s-bench-*/collection \\
        [--builders bytes bytes_unfilled bytes_faiss_add float32]
    PYTHONPATH=src:benchmarks python benchmarks/graph_builders.py --real --builders bytes bytes_unfilled

Prints a table and writes benchmarks/results/graph_builders-<docs>[-real]<tag>.json.
"""

from __future__ import annotations

import argparse
import json
import re
import time
from pathlib import Path
from typing import Any

import faiss
import numpy as np
from host_speed import machine_record
from interleave import ROOT, kept_corpus_queries
from layer_cost import only_segment

from m3search import Collection
from m3search.encoders.image.captions import load_image_captions
from m3search.eval.datasets import load_beir, squad_languages, squad_task
from m3search.index.dense import ByteCodes, DenseIndex, HNSWParams, _add_blocks, _new_graph

#: name -> (faiss code type, None: `ByteCodes`, as `build_ann` links unit vectors, "float32": faiss's flat
#: storage; whether base-layer lists are kept full as faiss keeps them, `keep_max_size_level0`; whether faiss's
#: own `add` links byte codes instead of the compiled insertion, `graph_build`, which `build_ann` uses; whether
#: the compiled insertion fills base-layer lists up to the headroom, `HNSWParams.fill_base_layer`)
BUILDERS: dict[str, tuple[int | str | None, bool, bool, bool]] = {
    "bytes": (None, False, False, True),
    "bytes_unfilled": (None, False, False, False),
    "bytes_faiss_add": (None, False, True, False),
    "bytes_full_level0": (None, True, False, False),
    "bytes_full_level0_faiss_add": (None, True, True, False),
    "float32": ("float32", False, True, False),
    "float16": (faiss.ScalarQuantizer.QT_fp16, False, True, False),
    "8bit_uniform": (faiss.ScalarQuantizer.QT_8bit_uniform, False, True, False),
    "sq8": (faiss.ScalarQuantizer.QT_8bit, False, True, False),
}
#: Queries whose exhaustive scan of a graph's codes times one distance (`scan_ns`).
SCAN_QUERIES = 8
#: Rows linked per call, as `build_ann` adds them.
BLOCK = 65_536


def build(
    vectors: np.ndarray,
    codes: int | str | None,
    full_level0: bool,
    faiss_add: bool,
    fill: bool,
    params: HNSWParams,
) -> tuple[faiss.Index, float, float]:
    """A graph linked over `codes` (None: `ByteCodes`; "float32": the vectors), over those codes, by faiss's
    `add` or (`faiss_add` false, byte codes only) the compiled insertion (`fill`: base-layer lists filled up to
    the headroom): (index, wall s, CPU s of linking)."""
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
        _add_blocks(builder, vectors, byte_codes, fill)
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


def real_texts(data: Path) -> list[str]:
    """The shared data's sentences as the project's readers give them: SciFact's abstracts split at sentence
    ends, XQuAD-R's annotated sentences and its questions in every language, Flickr8k's captions; each once."""
    texts = [
        s
        for doc in load_beir(data / "scifact").corpus.values()
        for s in re.split(r"(?<=[.!?])\s+", doc.text)
        if len(s) > 20
    ]
    folder = data / "xquad_r"
    for lang in squad_languages(folder):
        task = squad_task(folder / f"{lang}.json", unit="sentence")
        texts += [d.text for d in task.corpus.values() if len(d.text.strip()) > 5]
        texts += list(task.queries.values())
    texts += load_image_captions(
        data / "flickr8k_1k" / "captions.txt", data / "flickr8k_1k" / "images"
    ).captions
    return list(dict.fromkeys(t.strip() for t in texts))


def real_sentences(cache: Path, held_out: int = 2000) -> tuple[np.ndarray, np.ndarray]:
    """multilingual-e5-small vectors of `real_texts` (see the module docstring), encoded once into `cache`:
    (rows, queries), the queries `held_out` random rows not among the rows."""
    if not cache.exists():
        from m3search.encoders.loader import load_encoder

        texts = real_texts(ROOT.parent.parent / "shared" / "data")
        encoder = load_encoder("multilingual-e5-small")
        dense = encoder.encode(texts, batch_size=64, max_length=128, show_progress_bar=True).dense
        cache.parent.mkdir(parents=True, exist_ok=True)
        np.save(cache, np.asarray(dense, np.float32))
    x = np.load(cache)
    picked = np.random.default_rng(0).permutation(len(x))
    return np.ascontiguousarray(x[picked[held_out:]]), x[picked[:held_out]]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument(
        "collection", type=Path, nargs="?", help="a compacted collection kept by index_speed.py --keep"
    )
    ap.add_argument("--real", action="store_true", help="real text embeddings instead (module docstring)")
    ap.add_argument("--rounds", type=int, default=2, help="builds of each, interleaved")
    ap.add_argument("--queries", type=int, default=400)
    ap.add_argument("--m", type=int, default=16)
    ap.add_argument("--ef-construction", type=int, default=100)
    ap.add_argument("--ef-search", type=int, nargs="+", default=[128])
    ap.add_argument("--builders", nargs="+", choices=list(BUILDERS), default=list(BUILDERS))
    ap.add_argument("--tag", default="", help="appended to the result's name")
    args = ap.parse_args()
    if args.real:
        vectors, queries = real_sentences(ROOT / ".work" / "real-sentences-e5-small.npy")
        queries = queries[: args.queries]
    elif args.collection is None:
        ap.error("give a kept collection, or --real")
    else:
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
    result = {"data": "real sentences, e5-small" if args.real else str(args.collection), "docs": len(vectors)}
    result |= {"queries": len(queries), "m": args.m, "ef_construction": args.ef_construction}
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
    out = ROOT / "results" / f"graph_builders-{len(vectors)}{'-real' if args.real else ''}{args.tag}.json"
    out.write_text(json.dumps(result, indent=2))
    print(f"written to {out}")


if __name__ == "__main__":
    main()
