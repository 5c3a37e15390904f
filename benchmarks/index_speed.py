"""Index speed and size on synthetic data: build rate, bytes per document, hybrid latency and recall@10.

Documents: clustered unit vectors (uniform random ones are useless for HNSW), ~50-nonzero sparse vectors over
a Zipf vocabulary, ColBERT token vectors for a subset. Queries are drawn from the same clusters; their
encoding is not timed (they arrive as vectors). Every approximate stage is compared with exact search, and
faiss `IndexHNSWFlat` with the same graph settings is built and queried in the same run as the anchor.

    flock /tmp/m3search-heavy.lock python benchmarks/index_speed.py --docs 1000000

Prints a table and writes benchmarks/results/index_speed-<docs>-<dense_index>.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path

import faiss
import numpy as np
import scipy.sparse as sp

from m3search import Collection
from m3search.index.multivector import MultiVectorStore

ROOT = Path(__file__).resolve().parent
BATCH = 10_000


class Corpus:
    """Deterministic synthetic documents and queries, generated batch by batch."""

    def __init__(self, dim: int, colbert_dim: int, clusters: int, vocab: int, nnz: int, seed: int = 0) -> None:
        self.dim, self.colbert_dim, self.vocab, self.nnz, self.seed = dim, colbert_dim, vocab, nnz, seed
        rng = np.random.default_rng(seed)
        centers = rng.standard_normal((clusters, dim)).astype(np.float32)
        self.centers = centers / np.linalg.norm(centers, axis=1, keepdims=True)
        ranks = np.arange(1, vocab + 1, dtype=np.float64)
        self.term_p = (1 / ranks) / (1 / ranks).sum()
        # like learned sparse and BM25 weights, a token's weight shrinks with how common it is (IDF-like)
        doc_freq = 1 - (1 - self.term_p) ** nnz
        idf = np.log(1 + 1 / doc_freq)
        self.term_scale = (idf / idf.max()).astype(np.float32)

    def dense(self, rng: np.random.Generator, n: int) -> np.ndarray:
        x = self.centers[rng.integers(0, len(self.centers), n)]
        x = x + 0.8 * rng.standard_normal((n, self.dim), dtype=np.float32) / np.sqrt(self.dim)
        return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)

    def sparse(self, rng: np.random.Generator, n: int, nnz: int) -> list[dict[int, float]]:
        terms = rng.choice(self.vocab, size=(n, nnz), p=self.term_p)
        weights = (rng.uniform(0.05, 0.4, (n, nnz)) * self.term_scale[terms]).astype(np.float32)
        return [dict(zip(t.tolist(), w.tolist())) for t, w in zip(terms, weights)]  # repeats collapse: ~50 terms

    def colbert(self, rng: np.random.Generator, n: int, tokens: int) -> list[np.ndarray]:
        x = rng.standard_normal((n, tokens, self.colbert_dim), dtype=np.float32)
        return list(x / np.linalg.norm(x, axis=2, keepdims=True))

    def batch(self, start: int, n: int, colbert_every: int, tokens: int) -> list[dict]:
        rng = np.random.default_rng((self.seed, start))
        dense, sparse = self.dense(rng, n), self.sparse(rng, n, self.nnz)
        docs = [{"id": str(start + i), "dense": dense[i], "sparse": sparse[i],
                 "metadata": {"bucket": (start + i) % 100}} for i in range(n)]
        with_colbert = [i for i in range(n) if (start + i) % colbert_every == 0]
        for i, m in zip(with_colbert, self.colbert(rng, len(with_colbert), tokens)):
            docs[i]["colbert"] = m
        return docs

    def queries(self, n: int, q_tokens: int) -> list[dict]:
        rng = np.random.default_rng((self.seed, 10**9))
        dense, sparse = self.dense(rng, n), self.sparse(rng, n, 8)
        colbert = self.colbert(rng, n, q_tokens)
        return [{"dense": dense[i], "sparse": sparse[i], "colbert": colbert[i]} for i in range(n)]


def dir_bytes(path: Path, names: tuple[str, ...] | None = None) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file() and (names is None or f.name in names))


def exact_truth(vectors: np.ndarray, coo: tuple, queries: list[dict], vocab: int, k: int
                ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Exact top-k rows by dense, by sparse (scipy, independent of m3search) and by the weighted hybrid."""
    rows, terms, weights = coo
    doc_terms = sp.csr_matrix((weights, (rows, terms)), shape=(len(vectors), vocab))
    del rows, terms, weights
    truth = np.empty((3, len(queries), k), np.int64)
    step = 20
    for q0 in range(0, len(queries), step):
        chunk = queries[q0:q0 + step]
        dense = np.empty((len(chunk), len(vectors)), np.float32)
        qd = np.stack([q["dense"] for q in chunk])
        for start in range(0, len(vectors), 100_000):
            dense[:, start:start + 100_000] = qd @ np.asarray(vectors[start:start + 100_000]).T
        qs = sp.csr_matrix((np.concatenate([list(q["sparse"].values()) for q in chunk]),
                            (np.repeat(np.arange(len(chunk)), [len(q["sparse"]) for q in chunk]),
                             np.concatenate([list(q["sparse"].keys()) for q in chunk]))), shape=(len(chunk), vocab))
        sparse = (qs @ doc_terms.T).toarray().astype(np.float32)
        for i in range(len(chunk)):
            fused = (0.4 * dense[i] + 0.2 * sparse[i]) / 0.6
            for j, scores in enumerate((dense[i], sparse[i], fused)):
                top = np.argpartition(-scores, k)[:k]
                truth[j, q0 + i] = top[np.argsort(-scores[top])]
    return truth[0], truth[1], truth[2]


def recall(found: list[list[int]], truth: np.ndarray) -> float:
    return float(np.mean([len(set(f) & set(t.tolist())) / len(t) for f, t in zip(found, truth)]))


def percentiles(ms: list[float]) -> dict[str, float]:
    return {"p50_ms": float(np.percentile(ms, 50)), "p99_ms": float(np.percentile(ms, 99)),
            "mean_ms": float(np.mean(ms))}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--docs", type=int, default=200_000)
    ap.add_argument("--dim", type=int, default=1024)
    ap.add_argument("--colbert-dim", type=int, default=1024)
    ap.add_argument("--colbert-every", type=int, default=100, help="every N-th document has ColBERT vectors")
    ap.add_argument("--colbert-tokens", type=int, default=128)
    ap.add_argument("--query-tokens", type=int, default=32)
    ap.add_argument("--clusters", type=int, default=2000)
    ap.add_argument("--vocab", type=int, default=30_000)
    ap.add_argument("--nnz", type=int, default=62, help="terms drawn per document (~50 unique)")
    ap.add_argument("--queries", type=int, default=200)
    ap.add_argument("--dense-index", default="hnsw-sq8", choices=["hnsw", "hnsw-sq8"])
    ap.add_argument("--m", type=int, default=32)
    ap.add_argument("--ef-construction", type=int, default=40)
    ap.add_argument("--ef-search", type=int, nargs="+", default=[64, 128, 256])
    ap.add_argument("--candidates", type=int, default=100)
    ap.add_argument("--workdir", type=Path, default=None, help="where the collection is built (default: a temp dir)")
    ap.add_argument("--keep", action="store_true", help="keep the collection afterwards")
    args = ap.parse_args()
    k = 10
    n = args.docs
    work = Path(tempfile.mkdtemp(prefix="m3s-bench-", dir=args.workdir))
    path = work / "collection"
    corpus = Corpus(args.dim, args.colbert_dim, args.clusters, args.vocab, args.nnz)
    result: dict = {"args": {k_: str(v) if isinstance(v, Path) else v for k_, v in vars(args).items()},
                    "machine": {"cpus": os.cpu_count(), "platform": platform.platform(),
                                "faiss": faiss.__version__, "faiss_threads": faiss.omp_get_max_threads()}}
    # Bulk load: flushed segments stay below the graph threshold (searched exactly), and the final compaction
    # builds the one graph, so no graph is built twice.
    min_rows = min(250_000, n // 2)
    hnsw = {"m": args.m, "ef_construction": args.ef_construction, "ef_search": args.ef_search[0],
            "min_rows": min_rows}
    collection = Collection.create(path, dim=args.dim, colbert_dim=args.colbert_dim, dense_index=args.dense_index,
                                   hnsw=hnsw, flush_docs=min_rows - 1, merge_factor=100, cache=False)
    try:
        # ---- build ------------------------------------------------------------------------------------
        t0 = time.perf_counter()
        gen_s = 0.0
        for start in range(0, n, BATCH):
            g = time.perf_counter()
            docs = corpus.batch(start, min(BATCH, n - start), args.colbert_every, args.colbert_tokens)
            gen_s += time.perf_counter() - g
            collection.upsert(docs)
            print(f"\ringested {start + len(docs):,}/{n:,}", end="", file=sys.stderr, flush=True)
        t_ingest = time.perf_counter() - t0 - gen_s
        print(file=sys.stderr)
        t1 = time.perf_counter()
        collection.compact()
        t_compact = time.perf_counter() - t1
        build_s = t_ingest + t_compact
        seg = next(iter(collection._segments.values()))
        seg_dir = path / "segments" / seg.name
        result["build"] = {"docs": n, "ingest_s": t_ingest, "compact_s": t_compact, "total_s": build_s,
                           "docs_per_s": n / build_s, "ingest_docs_per_s": n / t_ingest}
        sparse_b = dir_bytes(seg_dir, ("sparse_terms.npy", "sparse_indptr.npy", "sparse_rows.npy",
                                       "sparse_weights.npy"))
        ann_b = dir_bytes(seg_dir, ("dense.faiss",))
        colbert_docs = int((np.diff(seg.colbert.offsets) > 0).sum())
        result["bytes_per_doc"] = {
            "dense_index_in_ram": ann_b / n, "sparse_index": sparse_b / n,
            "dense_plus_sparse_in_ram": (ann_b + sparse_b) / n,
            "dense_float32_on_disk": dir_bytes(seg_dir, ("dense.npy",)) / n,
            "colbert_per_doc_with_tokens": dir_bytes(seg_dir, ("colbert.npy", "colbert_scales.npy")) / colbert_docs,
            "sqlite_per_doc": dir_bytes(path, ("store.sqlite",)) / n,
            "disk_total": dir_bytes(path) / n,
        }
        # ---- anchor: faiss IndexHNSWFlat, same graph settings, same vectors ------------------------------
        vectors = seg.dense.vectors
        anchor = faiss.IndexHNSWFlat(args.dim, args.m, faiss.METRIC_INNER_PRODUCT)
        anchor.hnsw.efConstruction = args.ef_construction
        t2 = time.perf_counter()
        for start in range(0, n, 65_536):
            anchor.add(np.ascontiguousarray(vectors[start:start + 65_536]))
        anchor_build = time.perf_counter() - t2
        result["anchor"] = {"build_s": anchor_build, "docs_per_s": n / anchor_build,
                            "bytes_per_doc_in_ram": faiss.serialize_index(anchor).nbytes / n}
        # ---- queries and ground truth ----------------------------------------------------------------------
        queries = corpus.queries(args.queries, args.query_tokens)
        dense_truth, sparse_truth, hybrid_truth = exact_truth(vectors, seg.sparse.to_coo(), queries, args.vocab, k)
        seq_to_row = {int(s): i for i, s in enumerate(seg.seqs)}
        id_to_row = {str(i): i for i in range(n)}  # ids were assigned in seq order

        def rows_of(hits) -> list[int]:
            return [id_to_row[h.id] for h in hits]

        assert len(seq_to_row) == n
        collection.search(queries[0], k=k, mode="dense")  # warm the page cache a little
        stages = []
        for ef in args.ef_search:
            timings: dict[str, list[float]] = {m: [] for m in ("dense", "sparse", "dense+sparse", "all", "anchor")}
            found: dict[str, list[list[int]]] = {m: [] for m in timings}
            params = faiss.SearchParametersHNSW()
            params.efSearch = ef
            for q in queries:  # interleaved, so noise from other processes hits all alike
                for mode in ("dense", "sparse", "dense+sparse", "all"):
                    t = time.perf_counter()
                    hits = collection.search(q, k=k, mode=mode, ef_search=ef, candidates=args.candidates)
                    timings[mode].append(1000 * (time.perf_counter() - t))
                    found[mode].append(rows_of(hits))
                t = time.perf_counter()
                _, idx = anchor.search(q["dense"][None, :], k, params=params)
                timings["anchor"].append(1000 * (time.perf_counter() - t))
                found["anchor"].append(idx[0].tolist())
            stages.append({
                "ef_search": ef,
                "dense": {**percentiles(timings["dense"]), "recall@10": recall(found["dense"], dense_truth)},
                "sparse": {**percentiles(timings["sparse"]), "recall@10": recall(found["sparse"], sparse_truth)},
                "dense+sparse": {**percentiles(timings["dense+sparse"]),
                                 "recall@10": recall(found["dense+sparse"], hybrid_truth)},
                "all": percentiles(timings["all"]),
                "anchor_hnsw_flat": {**percentiles(timings["anchor"]),
                                     "recall@10": recall(found["anchor"], dense_truth)},
            })
        result["search"] = stages
        # ---- filtered hybrid search: the first query of a filter evaluates it, repeats reuse the allowed set --
        for name, spec in (("10%", {"bucket": {"$lt": 10}}), ("1%", {"bucket": 3})):
            first, repeat = [], []
            for i, q in enumerate(queries[:20]):
                t = time.perf_counter()
                collection.search(q, k=k, mode="dense+sparse", filter=spec, candidates=args.candidates)
                (first if i == 0 else repeat).append(1000 * (time.perf_counter() - t))
            result.setdefault("filtered", {})[name] = {"first_ms": first[0], **percentiles(repeat)}
        # ---- ColBERT re-rank cost: candidates that all have token vectors -------------------------------
        colbert_rows = np.flatnonzero(np.diff(seg.colbert.offsets) > 0)
        rng = np.random.default_rng(1)
        for dtype_name, store in (("float16", seg.colbert), ("int8", _int8_copy(seg.colbert, colbert_rows))):
            ms = []
            for q in queries[:50]:
                pick = rng.choice(len(colbert_rows), size=min(2 * args.candidates, len(colbert_rows)), replace=False)
                cand = colbert_rows[pick] if dtype_name == "float16" else pick
                t = time.perf_counter()
                store.maxsim(q["colbert"], cand)
                ms.append(1000 * (time.perf_counter() - t))
            result.setdefault("colbert_rerank", {})[dtype_name] = {
                "candidates": min(2 * args.candidates, len(colbert_rows)), "tokens_per_doc": args.colbert_tokens,
                **percentiles(ms)}
    finally:
        collection.close()
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    report(result)
    out = ROOT / "results" / f"index_speed-{n}-{args.dense_index}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2))
    print(f"\nwritten to {out}")


def _int8_copy(store: MultiVectorStore, rows: np.ndarray) -> MultiVectorStore:
    """The ColBERT rows that have tokens, re-encoded as int8 (to time int8 MaxSim on the same data)."""
    return MultiVectorStore.from_rows([store.row(int(r)) for r in rows], dtype="int8")


def report(result: dict) -> None:
    b, bytes_ = result["build"], result["bytes_per_doc"]
    print(f"\n{b['docs']:,} documents, dense index {result['args']['dense_index']}, "
          f"M={result['args']['m']}, efConstruction={result['args']['ef_construction']}")
    print(f"build: {b['docs_per_s']:.0f} docs/s (ingest {b['ingest_s']:.0f} s, compaction + graph {b['compact_s']:.0f} s)"
          f"; anchor IndexHNSWFlat graph alone: {result['anchor']['docs_per_s']:.0f} docs/s")
    print("bytes/doc: " + ", ".join(f"{k} {v:.0f}" for k, v in bytes_.items())
          + f"; anchor in RAM {result['anchor']['bytes_per_doc_in_ram']:.0f}")
    print(f"\n{'efSearch':>8} {'stage':<18} {'p50 ms':>8} {'p99 ms':>8} {'recall@10':>10}")
    for stage in result["search"]:
        for name in ("dense", "anchor_hnsw_flat", "sparse", "dense+sparse", "all"):
            s = stage[name]
            r = f"{s['recall@10']:.3f}" if "recall@10" in s else "-"
            print(f"{stage['ef_search']:>8} {name:<18} {s['p50_ms']:>8.2f} {s['p99_ms']:>8.2f} {r:>10}")
    for name, s in result["filtered"].items():
        print(f"dense+sparse with a {name} filter: first query {s['first_ms']:.0f} ms (evaluates the filter), "
              f"then p50 {s['p50_ms']:.1f} ms, p99 {s['p99_ms']:.1f} ms")
    for dtype, s in result["colbert_rerank"].items():
        print(f"ColBERT MaxSim re-rank {dtype}: {s['candidates']} candidates x {s['tokens_per_doc']} tokens: "
              f"p50 {s['p50_ms']:.1f} ms, p99 {s['p99_ms']:.1f} ms")


if __name__ == "__main__":
    main()
