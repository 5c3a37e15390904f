"""Index speed and size on synthetic data: build rate, bytes per document, hybrid latency and recall@10.

Documents: 1,024-d unit vectors from `synthetic.LatentMixture` (calibrated on real e5 embeddings by
`embedding_geometry.py`; `--data near-tie` for the old isotropic clusters, a stress case), ~50-nonzero sparse
vectors over a Zipf vocabulary, ColBERT token vectors for a subset, metadata for filters. Queries are drawn
from the same distribution; their encoding is not timed (they arrive as vectors). The documents are generated
once, before any build, into one file per upsert batch (`write_batches`); every build reads them inside its
timing, alike for every engine. Every approximate stage is
compared with exact search, and faiss `IndexHNSWFlat` with the same graph settings is built and queried in the
same run as the anchor. `--graphs M:EFC ...` builds further HNSW graphs over the same vectors (swapped into the
collection's segment in turn) to sweep M and efConstruction; `--ef-search` sweeps at query time.

    flock /tmp/m3search-heavy.lock env PYTHONPATH=src python benchmarks/index_speed.py --docs 1000000
    # --backend edge: also the same documents in an m3search edge collection, searched interleaved with local

Prints a table and writes benchmarks/results/index_speed-<docs>-<data>-<dense_index>.json.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import pickle
import shutil
import sys
import tempfile
import time
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import faiss
import numpy as np
import scipy.sparse as sp
from host_speed import machine_record
from synthetic import LatentMixture, NearTieClusters
from threadpoolctl import threadpool_limits

from m3search import Collection
from m3search.index.dense import DenseIndex, HNSWParams
from m3search.index.multivector import COLBERT_DTYPES, MultiVectorStore
from m3search.index.sparse import FILES as sparse_files
from m3search.index.sparse import FORWARD_FILES
from m3search.scoring import colbert_score
from m3search.search.planner import RERANK_DEFAULT, default_candidates

ROOT = Path(__file__).resolve().parent
BATCH = 10_000
#: Token types and noise vectors the synthetic ColBERT tokens are made of (`Corpus.colbert_tokens`).
TOKEN_TYPES = 8192
NOISE_BANK = 16_384
DOC_TOKENS = 3  # the random stream of documents' tokens (queries': the next)


LANGS = ("en", "de", "fr", "es", "zh", "ja", "ar")


class Corpus:
    """Deterministic synthetic documents and queries, generated batch by batch."""

    def __init__(self, dense_model, colbert_dim: int, vocab: int, nnz: int, seed: int = 0) -> None:
        self.dense_model, self.colbert_dim, self.vocab, self.nnz, self.seed = (
            dense_model,
            colbert_dim,
            vocab,
            nnz,
            seed,
        )
        ranks = np.arange(1, vocab + 1, dtype=np.float64)
        self.term_p = (1 / ranks) / (1 / ranks).sum()
        # like learned sparse and BM25 weights, a token's weight shrinks with how common it is (IDF-like)
        doc_freq = 1 - (1 - self.term_p) ** nnz
        idf = np.log(1 + 1 / doc_freq)
        self.term_scale = (idf / idf.max()).astype(np.float32)

    def sparse(self, rng: np.random.Generator, n: int, nnz: int) -> list[dict[int, float]]:
        terms = rng.choice(self.vocab, size=(n, nnz), p=self.term_p)
        weights = (rng.uniform(0.05, 0.4, (n, nnz)) * self.term_scale[terms]).astype(np.float32)
        return [
            dict(zip(t.tolist(), w.tolist())) for t, w in zip(terms, weights)
        ]  # repeats collapse: ~50 terms

    def _token_parts(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """The shared parts of every token vector (made once): a common direction, token types with Zipf
        frequencies (their cumulative distribution), and a bank of noise vectors."""
        if not hasattr(self, "_parts"):
            rng = np.random.default_rng((self.seed, 2))

            def unit(*shape: int) -> np.ndarray:
                x = rng.standard_normal((*shape, self.colbert_dim), dtype=np.float32)
                return x / np.linalg.norm(x, axis=-1, keepdims=True)

            ranks = np.arange(1, TOKEN_TYPES + 1, dtype=np.float64)
            self._parts = (
                unit(),
                unit(TOKEN_TYPES),
                np.cumsum(1 / ranks) / (1 / ranks).sum(),
                unit(NOISE_BANK),
            )
        return self._parts

    def colbert_tokens(self, stream: int, keys: np.ndarray, topics: np.ndarray, tokens: int) -> np.ndarray:
        """Token vectors of each row of `topics` (dense vectors, the document's or query's topic), seeded by
        (`stream`, that row's key): a token is the unit sum of a common direction, a Zipf-drawn token type, the topic and
        noise, so tokens share a mean (what the binary center removes) and a document's tokens lean towards
        its dense vector, as real ColBERT vectors do. Reproducible per document (stream `DOC_TOKENS`, key =
        its id), which lets the benchmark recompute any candidate's full-precision tokens."""
        common, types, cdf, bank = self._token_parts()
        if len(keys) == 0:
            return np.empty((0, tokens, self.colbert_dim), np.float32)
        picks = []
        for key in keys:
            rng = np.random.default_rng((self.seed, stream, int(key)))
            picks.append((np.searchsorted(cdf, rng.random(tokens)), rng.integers(0, NOISE_BANK, tokens)))
        kinds = np.stack([p[0] for p in picks]).clip(max=TOKEN_TYPES - 1)
        noise = np.stack([p[1] for p in picks])
        topic = np.asarray(topics, np.float32)[:, : self.colbert_dim]
        topic = topic / np.linalg.norm(topic, axis=1, keepdims=True)
        x = types[kinds]
        x += bank[noise]
        x *= 0.55
        x += (0.45 * (common + topic))[:, None, :]
        x /= np.linalg.norm(x, axis=2, keepdims=True)
        return x

    @staticmethod
    def metadata(i: int) -> dict:
        return {"bucket": i % 100, "lang": LANGS[i % len(LANGS)], "year": 1990 + (i * 7) % 35}

    def batch(self, start: int, n: int, colbert_every: int, tokens: int) -> list[dict]:
        rng = np.random.default_rng((self.seed, start))
        dense, sparse = self.dense_model.sample(rng, n), self.sparse(rng, n, self.nnz)
        docs = [
            {
                "id": str(start + i),
                "dense": dense[i],
                "sparse": sparse[i],
                "metadata": self.metadata(start + i),
            }
            for i in range(n)
        ]
        with_colbert = [i for i in range(n) if (start + i) % colbert_every == 0]
        rows = np.asarray(with_colbert, np.int64)
        for i, m in zip(with_colbert, self.colbert_tokens(DOC_TOKENS, start + rows, dense[rows], tokens)):
            docs[i]["colbert"] = m
        return docs

    def queries(self, n: int, q_tokens: int) -> list[dict]:
        rng = np.random.default_rng((self.seed, 10**9))
        dense, sparse = self.dense_model.sample(rng, n), self.sparse(rng, n, 8)
        colbert = self.colbert_tokens(DOC_TOKENS + 1, np.arange(n), dense, q_tokens)
        return [{"dense": dense[i], "sparse": sparse[i], "colbert": colbert[i]} for i in range(n)]


def dense_model(args: argparse.Namespace):
    """The dense generator: the calibrated latent mixture (parameters from `--geometry`) or the near-tie case."""
    if args.data == "near-tie":
        return NearTieClusters(dim=args.dim, clusters=args.clusters)
    params = {}
    if args.geometry.is_file():
        params = json.loads(args.geometry.read_text())["latent_mixture"]["params"]
    params.update(dim=args.dim, clusters=args.clusters)
    return LatentMixture(**params)


def dir_bytes(path: Path, names: tuple[str, ...] | None = None) -> int:
    return sum(
        f.stat().st_size for f in path.rglob("*") if f.is_file() and (names is None or f.name in names)
    )


#: The weighted hybrid the ground truth ranks by and every timed hybrid search asks for: the bge-m3 reference
#: formula (raw scores, `normalize="none"`) with the model card's dense/sparse weights, so recall is against the
#: exact ranking whatever the library's default fusion is.
TRUTH_WEIGHTS = {"dense": 0.4, "sparse": 0.2, "colbert": 0.4}
TRUTH_SEARCH = {"weights": TRUTH_WEIGHTS, "normalize": "none"}


def exact_truth(
    vectors: np.ndarray, coo: tuple, queries: list[dict], vocab: int, k: int
) -> dict[str, np.ndarray]:
    """Exact top-k rows by dense, by sparse (scipy, independent of m3search) and by the weighted hybrid."""
    rows, terms, weights = coo
    doc_terms = sp.csr_matrix((weights, (rows, terms)), shape=(len(vectors), vocab))
    del rows, terms, weights
    truth = np.empty((3, len(queries), k), np.int64)
    step = 20
    for q0 in range(0, len(queries), step):
        chunk = queries[q0 : q0 + step]
        dense = np.empty((len(chunk), len(vectors)), np.float32)
        qd = np.stack([q["dense"] for q in chunk])
        for start in range(0, len(vectors), 100_000):
            dense[:, start : start + 100_000] = qd @ np.asarray(vectors[start : start + 100_000]).T
        qs = sp.csr_matrix(
            (
                np.concatenate([list(q["sparse"].values()) for q in chunk]),
                (
                    np.repeat(np.arange(len(chunk)), [len(q["sparse"]) for q in chunk]),
                    np.concatenate([list(q["sparse"].keys()) for q in chunk]),
                ),
            ),
            shape=(len(chunk), vocab),
        )
        sparse = (qs @ doc_terms.T).toarray().astype(np.float32)
        for i in range(len(chunk)):
            w_d, w_s = TRUTH_WEIGHTS["dense"], TRUTH_WEIGHTS["sparse"]
            fused = (w_d * dense[i] + w_s * sparse[i]) / (w_d + w_s)
            for j, scores in enumerate((dense[i], sparse[i], fused)):
                top = np.argpartition(-scores, k)[:k]
                truth[j, q0 + i] = top[np.argsort(-scores[top])]
    return {"dense": truth[0], "sparse": truth[1], "hybrid": truth[2]}


def recall(found: list[list[int]], truth: np.ndarray) -> float:
    return float(np.mean([len(set(f) & set(t.tolist())) / len(t) for f, t in zip(found, truth)]))


def percentiles(ms: list[float]) -> dict[str, float]:
    return {
        "p50_ms": float(np.percentile(ms, 50)),
        "p99_ms": float(np.percentile(ms, 99)),
        "mean_ms": float(np.mean(ms)),
    }


#: Segment files by where they live once the segment is open: read into RAM, or memory-mapped from disk.
IN_RAM = ("dense.faiss", "seqs.npy", "colbert_offsets.npy", "colbert_scales.npy")
SPARSE_FILES = tuple(sparse_files.values())
#: Filters timed at 1M: (name, field it introduces, filter); each field's first query is its first ever.
FILTERS = (
    ("bucket < 10 (10%)", {"bucket": {"$lt": 10}}),
    ("bucket = 3 (1%)", {"bucket": 3}),
    ("lang = de (14%)", {"lang": "de"}),
    ("year in [2000, 2005) (14%)", {"year": {"$gte": 2000, "$lt": 2005}}),
    ("lang in [ja, ar] and bucket >= 50", {"lang": {"$in": ["ja", "ar"]}, "bucket": {"$gte": 50}}),
)


def parse_graph(spec: str) -> tuple[int, int]:
    m, ef_construction = spec.split(":")
    return int(m), int(ef_construction)


def add_data_arguments(ap: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """The arguments that define the generated documents and queries, with their defaults (the calibrated
    latent mixture): shared by the benchmarks that build or search the same data."""
    ap.add_argument("--data", default="latent", choices=["latent", "near-tie"])
    ap.add_argument(
        "--geometry",
        type=Path,
        default=ROOT / "results" / "embedding_geometry.json",
        help="calibrated LatentMixture parameters (embedding_geometry.py)",
    )
    ap.add_argument("--dim", type=int, default=1024)
    ap.add_argument("--colbert-dim", type=int, default=1024)
    ap.add_argument("--colbert-every", type=int, default=100, help="every N-th document has ColBERT vectors")
    ap.add_argument("--colbert-tokens", type=int, default=128)
    ap.add_argument(
        "--colbert-dtype",
        default="float16",
        choices=COLBERT_DTYPES,
        help="the collection's; every dtype's re-rank recall is against MaxSim on the documents' full-precision "
        "tokens (regenerated)",
    )
    ap.add_argument("--query-tokens", type=int, default=32)
    ap.add_argument("--clusters", type=int, default=2000)
    ap.add_argument("--vocab", type=int, default=30_000)
    ap.add_argument("--nnz", type=int, default=62, help="terms drawn per document (~50 unique)")
    ap.add_argument("--dense-index", default="hnsw-sq8", choices=["hnsw", "hnsw-sq8"])
    return ap


def data_defaults() -> argparse.Namespace:
    """The data arguments at their defaults."""
    return add_data_arguments(argparse.ArgumentParser()).parse_args([])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--docs", type=int, default=200_000)
    add_data_arguments(ap)
    ap.add_argument("--queries", type=int, default=200)
    ap.add_argument(
        "--graphs",
        nargs="+",
        default=["16:100"],
        help="M:efConstruction of each graph; the first is the collection's own, with the anchor",
    )
    ap.add_argument("--ef-search", type=int, nargs="+", default=[32, 64, 128, 256])
    ap.add_argument(
        "--block",
        type=int,
        default=1,
        help="queries each engine answers in a row before the other takes over (local against Qdrant Edge; "
        "1: they alternate query by query, each finding its caches refilled by the other)",
    )
    ap.add_argument(
        "--candidates", type=int, default=None, help="per first stage (default: the library's for --docs)"
    )
    ap.add_argument(
        "--rerank",
        type=int,
        nargs="+",
        default=[0],
        help="ColBERT re-rank depths `all` is measured at against full-precision MaxSim (0: the library's)",
    )
    ap.add_argument("--batch", type=int, default=BATCH, help="documents per upsert")
    ap.add_argument(
        "--flush-docs",
        type=int,
        default=None,
        help="pending documents per flushed segment (default: --batch, so each upsert becomes a segment "
        "directly; segments stay under the graph threshold and compaction builds the one graph)",
    )
    ap.add_argument(
        "--workdir", type=Path, default=None, help="where the collection is built (default: a temp dir)"
    )
    ap.add_argument("--keep", action="store_true", help="keep the collection afterwards")
    ap.add_argument(
        "--reuse",
        type=Path,
        default=None,
        help="search a collection an earlier run kept (--keep; same data arguments) instead of building one: "
        "query-side changes re-measured without the build (no build numbers then)",
    )
    ap.add_argument(
        "--no-anchor",
        dest="anchor",
        action="store_false",
        help="skip the IndexHNSWFlat anchor (7 min to build at 1M) when the run is not about the dense graph",
    )
    ap.add_argument(
        "--backend",
        nargs="+",
        default=["local"],
        choices=["local", "qdrant", "edge"],
        help="qdrant: also build the same documents in a hand-built Qdrant Edge shard (edge_backend.py); edge: "
        "in an m3search edge collection (the product's edge backend, through Collection); both: one after the "
        "other against the same local collection; either way both "
        "backends' searches are timed interleaved in this run",
    )
    ap.add_argument(
        "--edge-oversampling",
        type=float,
        default=None,
        help="Qdrant Edge SQ8 oversampling of the hand-built shard (default: as many re-scored as the local graph "
        "re-scores, the stage's depth plus 2 x k, for equal recall; 1: none, as in the runs before 2026-12-02d)",
    )
    ap.add_argument(
        "--edge-documents",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="the hand-built shard stores each document's metadata as payload and its searches return the hits' "
        "payloads, as the local collection returns documents (default); --no-edge-documents: ids only, as in "
        "the runs before 2026-12-02e",
    )
    args = ap.parse_args()
    k = 10
    n = args.docs
    if args.candidates is None:
        args.candidates = default_candidates(n)
    graphs = [parse_graph(g) for g in args.graphs]
    work = Path(tempfile.mkdtemp(prefix="m3s-bench-", dir=args.workdir))
    path = work / "collection"
    model = dense_model(args)
    corpus = Corpus(model, args.colbert_dim, args.vocab, args.nnz)
    result: dict = {
        "args": {k_: str(v) if isinstance(v, Path) else v for k_, v in vars(args).items()},
        "dense_model": {"kind": type(model).__name__, **model.params()},
        "machine": {
            **machine_record(),
            "faiss": faiss.__version__,
            "faiss_threads": faiss.omp_get_max_threads(),
        },
    }
    flush_docs, min_rows = bulk_load_segments(n, args.batch, args.flush_docs)
    started = time.perf_counter()
    batches = write_batches(work / "batches", corpus, args)
    result["data_generation_s"] = time.perf_counter() - started
    m, ef_construction = graphs[0]
    hnsw = {"m": m, "ef_construction": ef_construction, "ef_search": args.ef_search[0], "min_rows": min_rows}
    if args.reuse:
        path = args.reuse
        collection = Collection.open(path, readonly=True, cache=False)
    else:
        collection = Collection.create(
            path,
            dim=args.dim,
            colbert_dim=args.colbert_dim,
            colbert_dtype=args.colbert_dtype,
            dense_index=args.dense_index,
            hnsw=hnsw,
            flush_docs=flush_docs,
            merge_factor=100,
            cache=False,
        )
    try:
        # ---- build ------------------------------------------------------------------------------------
        if args.reuse:
            t_compact = None
            result["build"] = {"docs": n, "reused": str(path)}
        else:
            t_ingest, t_compact = bulk_load(collection, batches, "")
            build_s = t_ingest + t_compact
            result["build"] = {
                "docs": n,
                "ingest_s": t_ingest,
                "compact_s": t_compact,
                "total_s": build_s,
                "docs_per_s": n / build_s,
                "ingest_docs_per_s": n / t_ingest,
                # the process so far: imports, data generation and the build (nothing else has run yet)
                "peak_rss_gb": peak_rss_gb(),
            }
        seg = next(iter(collection.backend._segments.values()))
        seg_dir = path / "segments" / seg.name
        result["bytes_per_doc"] = bytes_per_doc(path, seg_dir, seg, n, args.dim)
        # ---- anchor: faiss IndexHNSWFlat, same graph settings, same vectors ------------------------------
        vectors = seg.dense.vectors
        anchor = None
        if args.anchor:
            anchor = faiss.IndexHNSWFlat(args.dim, m, faiss.METRIC_INNER_PRODUCT)
            anchor.hnsw.efConstruction = ef_construction
            t2 = time.perf_counter()
            for start in range(0, n, 65_536):
                anchor.add(np.ascontiguousarray(vectors[start : start + 65_536]))
            anchor_build = time.perf_counter() - t2
            result["anchor"] = {
                "build_s": anchor_build,
                "docs_per_s": n / anchor_build,
                "bytes_per_doc_in_ram": faiss.serialize_index(anchor).nbytes / n,
            }
        # ---- queries and ground truth ----------------------------------------------------------------------
        queries = corpus.queries(args.queries, args.query_tokens)
        truth = exact_truth(vectors, seg.sparse.to_coo(), queries, args.vocab, k)
        id_to_row = {str(i): i for i in range(n)}  # ids were assigned in seq order
        collection.search(queries[0], k=k, mode="dense")  # warm the page cache a little
        sweeps = []
        own_graph = seg.dense.ann, seg.dense.order
        for gi, (gm, gef) in enumerate(graphs):
            if gi == 0:
                graph, graph_build_s = own_graph[0], t_compact
            else:  # same vectors, other settings: swapped into the segment so every mode runs through it
                t3 = time.perf_counter()
                other = DenseIndex.build(vectors, args.dense_index, HNSWParams(m=gm, ef_construction=gef))
                graph_build_s = time.perf_counter() - t3
                graph, seg.dense.order = other.ann, other.order
            seg.dense.ann = graph
            sweep = {
                "m": gm,
                "ef_construction": gef,
                "build_s": graph_build_s,
                "graph_bytes_per_doc_in_ram": faiss.serialize_index(graph).nbytes / n,
                "ef_search": [
                    search_stages(
                        collection,
                        queries,
                        truth,
                        id_to_row,
                        ef,
                        k,
                        args.candidates,
                        anchor if gi == 0 else None,
                    )
                    for ef in args.ef_search
                ],
            }
            sweeps.append(sweep)
            del graph
            print(f"graph M={gm} efConstruction={gef} measured", file=sys.stderr, flush=True)
        seg.dense.ann, seg.dense.order = own_graph
        del anchor
        result["graphs"] = sweeps
        if "qdrant" in args.backend:
            result["qdrant_edge"] = compare_edge(
                collection, args, queries, truth, id_to_row, k, work, batches
            )
            if not args.keep:  # its disk (14 KB a document) before the edge collection is built
                shutil.rmtree(work / "edge", ignore_errors=True)
        if "edge" in args.backend:
            result["edge"] = compare_edge_collection(
                collection, args, queries, truth, id_to_row, k, work, batches
            )
        # ---- filtered hybrid search: the first query of each filter, then repeats -------------------------------
        for name, spec in FILTERS:
            first, repeat = [], []
            for i, q in enumerate(queries[:20]):
                t = time.perf_counter()
                collection.search(q, k=k, mode="dense+sparse", filter=spec, candidates=args.candidates)
                (first if i == 0 else repeat).append(1000 * (time.perf_counter() - t))
            result.setdefault("filtered", {})[name] = {"first_ms": first[0], **percentiles(repeat)}
        # ---- `all` (the library's default fusion) at each ColBERT re-rank depth, against full-precision MaxSim -
        # over the same candidates: at the same depth (what compression costs) and re-scoring every candidate
        # (what the cascade and compression cost together). Depths interleaved per query.
        stored = seg.colbert
        exact_colbert = ExactColbert(corpus, stored, vectors, args.colbert_tokens)
        if stored is not None:
            every = 2 * args.candidates  # the union of the two stages holds at most this many

            def all_mode(q, rerank: int, colbert) -> tuple[list[int], float]:
                seg.colbert = colbert
                try:
                    t = time.perf_counter()
                    hits = collection.search(
                        q,
                        k=k,
                        mode="all",
                        ef_search=args.ef_search[0],
                        candidates=args.candidates,
                        rerank=rerank,
                    )
                    return [id_to_row[h.id] for h in hits], 1000 * (time.perf_counter() - t)
                finally:
                    seg.colbert = stored

            depths = [d or RERANK_DEFAULT for d in args.rerank]
            found: dict[int, list] = {d: [] for d in depths}
            same_depth: dict[int, list] = {d: [] for d in depths}
            ms: dict[int, list[float]] = {d: [] for d in depths}
            every_exact = []
            for q in queries[:50]:
                every_exact.append(all_mode(q, every, exact_colbert)[0])
                for d in depths:
                    ids, took = all_mode(q, d, stored)
                    found[d].append(ids)
                    ms[d].append(took)
                    same_depth[d].append(all_mode(q, d, exact_colbert)[0])
            result["all_vs_exact_colbert"] = {
                str(d): {
                    "queries": len(ms[d]),
                    "candidates": args.candidates,
                    "rerank": d,
                    "colbert_dtype": stored.dtype,
                    "recall@10": recall(found[d], np.asarray(same_depth[d])),
                    "recall@10_vs_every_candidate_exact": recall(found[d], np.asarray(every_exact)),
                    **percentiles(ms[d]),
                }
                for d in depths
            }
        # ---- ColBERT re-rank cost: candidates that all have token vectors -------------------------------
        # One BLAS thread, as query execution runs it; the anchor is the bare float32 product over the same
        # candidates' tokens at full precision (the floor: what decoding, gathering and reducing add on top).
        # Other dtypes are timed on copies of a pool of rows; the reference is the corpus's own tokens.
        rng = np.random.default_rng(1)
        colbert_rows = np.flatnonzero(np.diff(seg.colbert.offsets) > 0)
        pool = np.sort(rng.choice(colbert_rows, size=min(len(colbert_rows), RERANK_POOL), replace=False))
        pool_tokens = list(exact_colbert.tokens(pool))
        copies = {
            d: MultiVectorStore.from_rows(pool_tokens, dtype=d)  # type: ignore[arg-type]
            for d in COLBERT_DTYPES
            if d != seg.colbert.dtype
        }
        del pool_tokens
        n_cand = min(2 * args.candidates, len(pool))
        times: dict[str, list[float]] = {d: [] for d in (seg.colbert.dtype, *copies, "float32_product_floor")}
        overlap: dict[str, list[float]] = {d: [] for d in (seg.colbert.dtype, *copies)}
        with threadpool_limits(1, "blas"):
            for q in queries[:50]:  # interleaved
                pick = np.sort(rng.choice(len(pool), size=n_cand, replace=False))
                full = exact_colbert.tokens(pool[pick])
                exact_top = set(np.argsort([-colbert_score(q["colbert"], d) for d in full])[:10].tolist())
                for name, store, cand in (
                    (seg.colbert.dtype, seg.colbert, pool[pick]),
                    *((d, c, pick) for d, c in copies.items()),
                ):
                    t = time.perf_counter()
                    scores = store.maxsim(q["colbert"], cand)
                    times[name].append(1000 * (time.perf_counter() - t))
                    overlap[name].append(len(exact_top & set(np.argsort(-scores)[:10].tolist())) / 10)
                full = np.concatenate(full)
                t = time.perf_counter()
                full @ q["colbert"].T
                times["float32_product_floor"].append(1000 * (time.perf_counter() - t))
        result["colbert_rerank"] = {
            name: {
                "candidates": n_cand,
                "tokens_per_doc": args.colbert_tokens,
                "query_tokens": args.query_tokens,
                "recall@10_vs_full_precision_maxsim": float(np.mean(overlap[name]))
                if name in overlap
                else None,
                **percentiles(ms),
            }
            for name, ms in times.items()
        }
    finally:
        collection.close()
        shutil.rmtree(work / "batches", ignore_errors=True)
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    result["peak_rss_gb"] = peak_rss_gb()
    report(result)
    suffix = "".join(f"-vs-{b}" for b in ("qdrant-edge", "edge") if b.split("-")[0] in args.backend)
    out = ROOT / "results" / f"index_speed-{n}-{args.data}-{args.dense_index}{suffix}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2))
    print(f"\nwritten to {out}")


def bulk_load_segments(n: int, batch: int, flush_docs: int | None = None) -> tuple[int, int]:
    """(flush_docs, HNSW min_rows) for a bulk load of `n` documents in upserts of `batch`. By default
    `flush_docs` is the batch, so that every upsert takes the library's large-write path (a batch of at least
    `flush_docs` becomes a segment directly, as with the defaults: `flush_docs` 10,000) instead of waiting in
    SQLite's pending rows; until 2026-12-02 it was n / 2 (at most 250,000), which sent every vector through the
    database and doubled the ingest time at 100k (22 against 11 s). Segments stay below the graph threshold
    (searched exactly), and the final compaction builds the one graph, so no graph is built twice: a flush seals
    the level once it holds `flush_docs` rows, so a segment holds up to `flush_docs + batch - 1`."""
    flush_docs = flush_docs or batch
    return flush_docs, min(flush_docs + batch, n)


def write_batches(directory: Path, corpus: Corpus, args: argparse.Namespace) -> list[Path]:
    """Generate the corpus's upsert batches once, before any build is timed: one pickle a batch in `directory`.

    Builds read them back inside their timing (`read_batches`), alike for every engine. Generated inside the
    builds (until 2026-12-04), data generation (~0.54 s a batch of 10,000) was counted in Qdrant Edge's ingest
    (~40% of it at 100k) and left out of local's, whose background graph thread linked meanwhile: 3.3 s of
    a 26 s build at 100k done off the clock."""
    directory.mkdir(parents=True, exist_ok=True)
    paths = []
    for start in range(0, args.docs, args.batch):
        docs = corpus.batch(
            start, min(args.batch, args.docs - start), args.colbert_every, args.colbert_tokens
        )
        paths.append(directory / f"{start:010d}.pkl")
        with paths[-1].open("wb") as f:
            pickle.dump(docs, f, protocol=pickle.HIGHEST_PROTOCOL)
        print(f"\rgenerated {start + len(docs):,}/{args.docs:,}", end="", file=sys.stderr, flush=True)
    print(file=sys.stderr)
    return paths


def read_batches(paths: list[Path]) -> Iterator[list[dict]]:
    """The batches `write_batches` wrote, in order."""
    for path in paths:
        with path.open("rb") as f:
            yield pickle.load(f)


def bulk_load(collection, batches: list[Path], label: str, compact: bool = True) -> tuple[float, float]:
    """Upsert the batches (read from their files inside the timing), then compact (unless not `compact`):
    (ingest seconds, compaction s)."""
    t0, done = time.perf_counter(), 0
    for docs in read_batches(batches):
        collection.upsert(docs)
        done += len(docs)
        print(f"\r{label}ingested {done:,}", end="", file=sys.stderr, flush=True)
    t_ingest = time.perf_counter() - t0
    print(file=sys.stderr)
    t1 = time.perf_counter()
    if compact:
        collection.compact()
    return t_ingest, time.perf_counter() - t1


def compare_edge(
    collection, args, queries, truth, id_to_row, k: int, work: Path, batches: list[Path]
) -> dict:
    """The same documents in Qdrant Edge (benchmarks/edge_backend.py): build time and size, then every
    hybrid mode on both backends, queries interleaved (local, Edge, next mode...) at each efSearch."""
    import qdrant_edge as qe
    from edge_backend import EdgeSearch

    # Built in a child process: the engine's optimizer peak and this process's local collection do not add up
    # (at 1M both in one process were OOM-killed on a 24 GB machine); the parent opens the finished shard.
    quantized = args.dense_index == "hnsw-sq8"
    built = in_child(build_edge_shard, work / "edge", args, batches)
    built["bytes_per_doc"] = dir_bytes(work / "edge") / args.docs
    print(f"Qdrant Edge built in {built['total_s']:.0f} s", file=sys.stderr, flush=True)
    shard = qe.EdgeShard.load(str(work / "edge"))
    edge = EdgeSearch(shard, quantized, args.edge_oversampling, args.edge_documents)
    try:
        sweeps = interleaved(
            collection,
            lambda q, mode, fusion, ef: edge.search(q, mode, k, args.candidates, ef, fusion, TRUTH_WEIGHTS),
            args,
            queries,
            truth,
            id_to_row,
            k,
        )
    finally:
        shard.close()
    oversampling = args.edge_oversampling or "as the local graph: depth + 2 x k"
    return {
        "build": built,
        "oversampling": oversampling if quantized else None,
        "documents": args.edge_documents,
        "ef_search": sweeps,
        "equal_recall": at_equal_recall(sweeps),
    }


def build_edge_shard(path: Path, args: argparse.Namespace, batches: list[Path]) -> dict:
    """Build the Qdrant Edge shard of the batches at `path` (read inside the timing, as local's) and close it:
    the build record, with this process's peak RSS."""
    from edge_backend import build

    m, ef_construction = parse_graph(args.graphs[0])
    shard, built = build(
        path,
        read_batches(batches),
        args.dim,
        m,
        ef_construction,
        args.dense_index == "hnsw-sq8",
        args.edge_documents,
    )
    shard.close()
    return {**built, "build_peak_rss_gb": peak_rss_gb()}


def peak_rss_gb() -> float:
    """This process's peak resident set (Linux's VmHWM). Not `ru_maxrss`: a spawned child's starts at its
    parent's resident set (the fork before the exec shares its pages), so a child would report the parent's."""
    return _status_gb("VmHWM")


def compare_edge_collection(
    collection, args, queries, truth, id_to_row, k: int, work: Path, batches: list[Path]
) -> dict:
    """The same documents in an m3search edge collection (`Collection.create(..., backend="edge")`, the
    product's edge backend): build time (upserts of `--batch` documents, each durable, then `compact`), size and
    peak RSS, built in a child process; the memory of a process that opens each collection and runs the
    queries; then every mode, ColBERT re-rank included, on both collections, queries interleaved at each
    efSearch."""
    path = work / "edge-collection"
    built = in_child(build_edge_collection, path, args, batches)
    print(f"edge collection built in {built['total_s']:.0f} s", file=sys.stderr, flush=True)
    # one backend per fresh process (Edge lets one process open a collection at a time: before the parent does)
    rss = {
        name: in_child(search_rss, p, name, args)
        for name, p in (("local", collection.path), ("edge", path))  # collection.path: also a --reuse one
    }
    edge = Collection.open(path, backend="edge", cache=False)
    try:
        sweeps = collections_interleaved(collection, edge, args, queries, truth, id_to_row, k)
    finally:
        edge.close()
    return {"build": built, "search_rss_gb": rss, "ef_search": sweeps}


def collections_interleaved(collection, other, args, queries, truth, id_to_row, k: int) -> list[dict]:
    """`interleaved` over every mode of `COLLECTION_MODES` between two collections (`other` on the edge side)."""

    def search(q: dict, mode: str, fusion: str, ef: int) -> list[int]:
        hits = other.search(
            q, k=k, mode=mode, fusion=fusion, ef_search=ef, candidates=args.candidates, **TRUTH_SEARCH
        )
        return [id_to_row[h.id] for h in hits]

    return interleaved(collection, search, args, queries, truth, id_to_row, k, COLLECTION_MODES)


def in_child(fn, *args):
    """`fn(*args)` in a fresh process (spawned): its memory is its own."""
    with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as pool:
        return pool.submit(fn, *args).result()


def build_edge_collection(
    path: Path, args: argparse.Namespace, batches: list[Path], compact: bool = True
) -> dict:
    """Build the edge collection of the batches at `path` (read inside the timing, as local's; compacted
    unless not `compact`) and close it: the build record, with this process's peak RSS (imports, the build)."""
    n, (m, ef_construction) = args.docs, parse_graph(args.graphs[0])
    edge = Collection.create(
        path,
        backend="edge",
        dim=args.dim,
        colbert_dim=args.colbert_dim,
        colbert_dtype=args.colbert_dtype,
        dense_index=args.dense_index,
        hnsw={"m": m, "ef_construction": ef_construction, "ef_search": args.ef_search[0]},
        cache=False,
    )
    try:
        t_ingest, t_compact = bulk_load(edge, batches, "edge: ", compact)
        stats = edge.stats()
    finally:
        edge.close()
    return {
        "docs": n,
        "ingest_s": t_ingest,
        "compact_s": t_compact,
        "total_s": t_ingest + t_compact,
        "docs_per_s": n / (t_ingest + t_compact),
        "bytes_per_doc": stats["disk_bytes"] / n,
        "engine": stats["edge"],
        "peak_rss_gb": peak_rss_gb(),
    }


def search_rss(path: Path, backend: str, args: argparse.Namespace) -> dict[str, float]:
    """Resident memory of this (fresh) process around opening the collection at `path` and running every
    query in every compared mode once: before opening (imports and query vectors), after opening, after the
    queries (and how much of that is mapped file pages), and the peak."""
    corpus = Corpus(dense_model(args), args.colbert_dim, args.vocab, args.nnz)
    queries = corpus.queries(args.queries, args.query_tokens)
    out = {"before_open": rss_gb()}
    collection = Collection.open(path, backend=backend, readonly=True, cache=False)
    try:
        out["opened"] = rss_gb()
        for q in queries:
            for mode, fusion in COLLECTION_MODES:
                collection.search(
                    q,
                    k=10,
                    mode=mode,
                    fusion=fusion,
                    ef_search=args.ef_search[0],
                    candidates=args.candidates,
                    **TRUTH_SEARCH,
                )
        out["after_queries"] = rss_gb()
        out["after_queries_file_pages"] = file_rss_gb()
    finally:
        collection.close()
    return {**out, "peak": peak_rss_gb()}


def rss_gb() -> float:
    """This process's resident set now (Linux)."""
    return _status_gb("VmRSS")


def file_rss_gb() -> float:
    """The part of the resident set that is mapped file pages (memory-mapped segment or engine files: the page
    cache, shared and reclaimable, against the process's own anonymous memory)."""
    return _status_gb("RssFile")


def _status_gb(field: str) -> float:
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith(f"{field}:")) / 2**20


#: The modes timed on both backends: (mode, fusion). The hand-built Qdrant Edge shard (`--backend qdrant`)
#: answers these; the edge collection also `all` (see COLLECTION_MODES).
ENGINE_MODES = (
    ("dense", "weighted"),
    ("sparse", "weighted"),
    ("dense+sparse", "weighted"),
    ("dense+sparse", "rrf"),
)
#: Through `Collection`, also `all`: the dense+sparse candidates re-ranked with ColBERT (the edge backend runs
#: MaxSim in the engine). No exhaustive ground truth for it: its `agreement@10` (shared share of the two
#: backends' top 10) is recorded, as for every mode.
COLLECTION_MODES = (*ENGINE_MODES, ("all", "weighted"))


def interleaved(collection, other, args, queries, truth, id_to_row, k: int, modes=ENGINE_MODES) -> list[dict]:
    """Latency percentiles and recall@10 of `modes` ((mode, fusion) pairs) on the local `collection` and on
    `other` ((query, mode, fusion, efSearch) -> row ids) at each efSearch, interleaved in blocks of `args.block`
    queries (each mode: a block on one engine, then on the other; which goes first alternates); `agreement@10`
    is the share of the top 10 both return. Every query runs once on both untimed first: the engine built last
    has its files in the page cache, the other may not (at 1M the Edge build's 19 GB peak evicted the local
    collection's pages, and local's first p50s were 1.1-1.5x its later ones).
    """
    for q in queries:
        for mode, fusion in modes:
            collection.search(q, k=k, mode=mode, fusion=fusion, candidates=args.candidates, **TRUTH_SEARCH)
            other(q, mode, fusion, args.ef_search[0])

    def local(q: dict, mode: str, fusion: str, ef: int) -> list[int]:
        hits = collection.search(
            q, k=k, mode=mode, fusion=fusion, ef_search=ef, candidates=args.candidates, **TRUTH_SEARCH
        )
        return [id_to_row[h.id] for h in hits]

    engines = {"local": local, "edge": other}
    sweeps = []
    for ef in args.ef_search:
        times: dict[tuple[str, str, str], list[float]] = {
            (b, mo, f): [] for b in ("local", "edge") for mo, f in modes
        }
        found: dict[tuple[str, str, str], list[list[int]]] = {key: [] for key in times}
        for n, start in enumerate(range(0, len(queries), args.block)):
            block = queries[start : start + args.block]
            for mode, fusion in modes:
                for backend in ("local", "edge") if n % 2 == 0 else ("edge", "local"):  # ABBA
                    for q in block:
                        t = time.perf_counter()
                        ids = engines[backend](q, mode, fusion, ef)
                        times[(backend, mode, fusion)].append(1000 * (time.perf_counter() - t))
                        found[(backend, mode, fusion)].append(ids)
        stage: dict = {"ef_search": ef}
        for (backend, mode, fusion), ms in times.items():
            name = mode if mode != "dense+sparse" else f"dense+sparse {fusion}"
            target = {"dense": "dense", "sparse": "sparse"}.get(
                mode, "hybrid" if mode == "dense+sparse" and fusion == "weighted" else None
            )
            stage.setdefault(backend, {})[name] = {
                **percentiles(ms),
                **({"recall@10": recall(found[(backend, mode, fusion)], truth[target])} if target else {}),
            }
            if backend == "edge":
                mine = found[("local", mode, fusion)]
                stage.setdefault("agreement@10", {})[name] = float(
                    np.mean([len(set(a) & set(b)) / k for a, b in zip(mine, found[(backend, mode, fusion)])])
                )
        sweeps.append(stage)
    return sweeps


def at_equal_recall(sweeps: list[dict]) -> dict[str, list[dict]]:
    """For each stage with a recall@10 and each engine's efSearch: the other engine's fastest p50 among its
    efSearch values that reach at least that recall (None where none does), so QPS is compared at equal recall
    whichever engine's graph walks further at one efSearch. `edge/local p50` > 1: local is faster. `shortest`
    names the engine answering with the sweep's shortest list while over-delivering (its recall above the
    target): it has no cheaper setting here, so its time is an upper bound of what that recall costs it."""

    def point(stage: dict | None, engine: str, name: str) -> dict | None:
        if stage is None:
            return None
        got = stage[engine][name]
        return {"ef_search": stage["ef_search"], "p50_ms": got["p50_ms"], "recall@10": got["recall@10"]}

    out: dict[str, list[dict]] = {}
    shortest = min(s["ef_search"] for s in sweeps)
    for name, first in sweeps[0]["local"].items():
        if "recall@10" not in first:
            continue
        for given, other in (("edge", "local"), ("local", "edge")):
            for stage in sweeps:
                target = stage[given][name]["recall@10"]
                reaching = [s for s in sweeps if s[other][name]["recall@10"] >= target]
                best = min(reaching, key=lambda s: s[other][name]["p50_ms"], default=None)
                row = {
                    "at": given,
                    "recall@10": target,
                    given: point(stage, given, name),
                    other: point(best, other, name),
                }
                row["edge/local p50"] = best and row["edge"]["p50_ms"] / row["local"]["p50_ms"]
                over = best is not None and best[other][name]["recall@10"] > target
                row["shortest"] = other if over and best["ef_search"] == shortest else None
                out.setdefault(name, []).append(row)
    return out


def bytes_per_doc(path: Path, seg_dir: Path, seg, n: int, dim: int) -> dict[str, float]:
    """Bytes per document of the one segment by structure, and by where they live (RAM / memory-mapped)."""
    files = {f.name: f.stat().st_size for f in seg_dir.iterdir()}
    ann = files.get("dense.faiss", 0)
    sparse = sum(files[f] for f in SPARSE_FILES)
    forward = sum(files.get(f, 0) for f in FORWARD_FILES.values())  # format 6, unless sparse_forward=False
    out = {
        "dense_sq8_codes": float(dim) if ann else 0.0,
        "dense_hnsw_graph": (ann - dim * n) / n if ann else 0.0,
        "sparse_postings": (files["sparse_rows.npy"] + files["sparse_weights.npy"]) / n,
        "sparse_runs_and_terms": (sparse - files["sparse_rows.npy"] - files["sparse_weights.npy"]) / n,
        "sparse_forward_index": forward / n,
        "dense_plus_sparse": (ann + sparse + forward) / n,
        "in_ram": sum(v for f, v in files.items() if f in IN_RAM) / n,
        "memory_mapped": sum(v for f, v in files.items() if f not in IN_RAM) / n,
        "memory_mapped_dense_float32": files["dense.npy"] / n,
        "memory_mapped_metadata_index": sum(v for f, v in files.items() if f.startswith("meta_")) / n,
        "seqs_in_ram": files["seqs.npy"] / n,
        "sqlite_per_doc": dir_bytes(path, ("store.sqlite",)) / n,
        "disk_total": dir_bytes(path) / n,
    }
    colbert_docs = int((np.diff(seg.colbert.offsets) > 0).sum())
    out["colbert_per_doc_with_tokens"] = (
        files["colbert.npy"] + files.get("colbert_scales.npy", 0) + files.get("colbert_center.npy", 0)
    ) / colbert_docs
    return out


def search_stages(
    collection,
    queries: list[dict],
    truth: dict[str, np.ndarray],
    id_to_row: dict[str, int],
    ef: int,
    k: int,
    candidates: int,
    anchor,
) -> dict:
    """Latency and recall@10 of every stage at one efSearch, queries interleaved across stages."""
    modes = ("dense", "sparse", "dense+sparse", "all")
    timings: dict[str, list[float]] = {m: [] for m in (*modes, "anchor")}
    found: dict[str, list[list[int]]] = {m: [] for m in timings}
    params = faiss.SearchParametersHNSW()
    params.efSearch = ef
    for q in queries:  # interleaved, so noise from other processes hits all alike
        for mode in modes:
            t = time.perf_counter()
            hits = collection.search(q, k=k, mode=mode, ef_search=ef, candidates=candidates, **TRUTH_SEARCH)
            timings[mode].append(1000 * (time.perf_counter() - t))
            found[mode].append([id_to_row[h.id] for h in hits])
        if anchor is not None:
            t = time.perf_counter()
            _, idx = anchor.search(q["dense"][None, :], k, params=params)
            timings["anchor"].append(1000 * (time.perf_counter() - t))
            found["anchor"].append(idx[0].tolist())
    out: dict = {"ef_search": ef}
    for mode, truth_key in (
        ("dense", "dense"),
        ("sparse", "sparse"),
        ("dense+sparse", "hybrid"),
        ("all", None),
        ("anchor", "dense"),
    ):
        if timings[mode]:
            out[mode] = {
                **percentiles(timings[mode]),
                **({"recall@10": recall(found[mode], truth[truth_key])} if truth_key else {}),
            }
    return out


class ExactColbert:
    """Stands in for a segment's ColBERT store in a search: MaxSim on the corpus's full-precision tokens,
    regenerated per document (rows are document ids), for rows the stored one has tokens for."""

    exact = None
    recheck = 0

    def __init__(self, corpus: Corpus, stored: MultiVectorStore, vectors: np.ndarray, tokens: int) -> None:
        self.corpus, self.stored, self.vectors, self.n_tokens = corpus, stored, vectors, tokens

    def tokens(self, rows: np.ndarray) -> np.ndarray:
        """(rows, tokens, dim) full-precision token vectors of `rows` (all of which have tokens)."""
        topics = np.asarray(self.vectors[np.asarray(rows, np.int64)], np.float32)
        return self.corpus.colbert_tokens(DOC_TOKENS, rows, topics, self.n_tokens)

    def maxsim(self, query: np.ndarray, rows: np.ndarray, recheck: int = 0) -> np.ndarray:
        rows = np.asarray(rows, np.int64)
        out = np.zeros(len(rows), np.float32)
        has = np.flatnonzero(self.stored.token_counts(rows) > 0)
        for i, doc in zip(has, self.tokens(rows[has])):
            out[i] = colbert_score(query, doc)
        return out


RERANK_POOL = 5000  # rows the per-dtype re-rank timing draws its candidates from (copied into each dtype)


def report(result: dict) -> None:
    b, bytes_ = result["build"], result["bytes_per_doc"]
    print(
        f"\n{b['docs']:,} documents, data {result['dense_model']['kind']}, dense index "
        f"{result['args']['dense_index']}"
    )
    print(
        (
            f"build: reused {b['reused']}"
            if "reused" in b
            else f"build: {b['docs_per_s']:.0f} docs/s (ingest {b['ingest_s']:.0f} s, compaction + graph "
            f"{b['compact_s']:.0f} s)"
        )
        + (
            f"; anchor IndexHNSWFlat graph alone: {result['anchor']['docs_per_s']:.0f} docs/s"
            if "anchor" in result
            else ""
        )
    )
    print(
        "bytes/doc: "
        + ", ".join(f"{k} {v:.1f}" for k, v in bytes_.items())
        + (f"; anchor in RAM {result['anchor']['bytes_per_doc_in_ram']:.0f}" if "anchor" in result else "")
    )
    print(
        f"\n{'M':>3} {'efC':>4} {'efSearch':>8} {'stage':<13} {'p50 ms':>8} {'p99 ms':>8} {'recall@10':>10}"
    )
    for graph in result["graphs"]:
        for stage in graph["ef_search"]:
            for name in ("dense", "anchor", "sparse", "dense+sparse", "all"):
                if name not in stage:
                    continue
                s = stage[name]
                r = f"{s['recall@10']:.3f}" if "recall@10" in s else "-"
                print(
                    f"{graph['m']:>3} {graph['ef_construction']:>4} {stage['ef_search']:>8} {name:<13} "
                    f"{s['p50_ms']:>8.2f} {s['p99_ms']:>8.2f} {r:>10}"
                )
        built = "reused" if graph["build_s"] is None else f"{graph['build_s']:.0f} s"
        print(f"    graph build {built}, {graph['graph_bytes_per_doc_in_ram']:.0f} B/doc in RAM")
    for name, s in result["filtered"].items():
        print(
            f"dense+sparse, filter {name}: first query {s['first_ms']:.1f} ms, then p50 {s['p50_ms']:.1f} ms, "
            f"p99 {s['p99_ms']:.1f} ms"
        )
    for key, label in (("qdrant_edge", "Qdrant Edge shard"), ("edge", "edge collection")):
        if key not in result:
            continue
        e, build = result[key], result[key]["build"]
        index_s = build.get("index_s", build.get("compact_s", 0.0))
        print(
            f"\n{label} build: {build['docs_per_s']:.0f} docs/s (ingest {build['ingest_s']:.0f} s, "
            f"index {index_s:.0f} s), {build['bytes_per_doc']:.0f} bytes/doc on disk"
        )
        if "documents" in e:
            print(f"{label} searches return {'their hits with payload' if e['documents'] else 'ids only'}")
        peak = build.get("peak_rss_gb", build.get("build_peak_rss_gb"))
        if peak is not None:
            local = f"local {b['peak_rss_gb']:.2f} GiB, " if "peak_rss_gb" in b else ""  # none when reused
            print(f"peak RSS building: {local}{label} {peak:.2f} GiB (own processes)")
        for backend, r in e.get("search_rss_gb", {}).items():
            print(
                f"RSS of a process searching {backend}: {r['before_open']:.2f} GiB before opening, {r['opened']:.2f} "
                f"opened, {r['after_queries']:.2f} after the queries ({r['after_queries_file_pages']:.2f} of it mapped "
                f"file pages), peak {r['peak']:.2f}"
            )
        print(
            f"{'efSearch':>8} {'stage':<22} {'local p50/p99 ms':>18} {'recall':>7} {'Edge p50/p99 ms':>18} "
            f"{'recall':>7} {'Edge/local p50':>14} {'agree@10':>8}"
        )
        for stage in e["ef_search"]:
            for name, mine in stage["local"].items():
                theirs = stage["edge"][name]
                r1 = f"{mine['recall@10']:.4f}" if "recall@10" in mine else "-"
                r2 = f"{theirs['recall@10']:.4f}" if "recall@10" in theirs else "-"
                print(
                    f"{stage['ef_search']:>8} {name:<22} {mine['p50_ms']:>8.2f}/{mine['p99_ms']:<8.2f} {r1:>7} "
                    f"{theirs['p50_ms']:>8.2f}/{theirs['p99_ms']:<8.2f} {r2:>7} "
                    f"{theirs['p50_ms'] / mine['p50_ms']:>14.2f} {stage['agreement@10'][name]:>8.3f}"
                )
        for name, rows in e.get("equal_recall", {}).items():
            for row in rows:
                mine, theirs = row["local"], row["edge"]
                if mine is None or theirs is None:
                    print(
                        f"{name:<22} no {'local' if mine is None else 'Edge'} efSearch reaches recall@10 "
                        f"{row['recall@10']:.4f} ({row['at']}'s)"
                    )
                    continue
                print(
                    f"{name:<22} at {row['at']}'s recall@10 {row['recall@10']:.4f}: local efSearch "
                    f"{mine['ef_search']} {mine['p50_ms']:.2f} ms ({mine['recall@10']:.4f}), Edge efSearch "
                    f"{theirs['ef_search']} {theirs['p50_ms']:.2f} ms ({theirs['recall@10']:.4f}): Edge/local p50 "
                    f"{row['edge/local p50']:.2f}"
                    + (
                        f" ({row['shortest']}'s shortest list in the sweep: no cheaper setting)"
                        if row.get("shortest")
                        else ""
                    )
                )
    for a in result.get("all_vs_exact_colbert", {}).values():
        print(
            f"all (library default fusion), {a['candidates']} candidates per stage, ColBERT {a['colbert_dtype']} "
            f"re-ranking {a['rerank']}: p50 {a['p50_ms']:.1f} ms, p99 {a['p99_ms']:.1f} ms, recall@10 vs "
            f"full-precision MaxSim at the same depth {a['recall@10']:.3f}, re-scoring every candidate "
            f"{a['recall@10_vs_every_candidate_exact']:.3f}"
        )
    for dtype, s in result["colbert_rerank"].items():
        print(
            f"ColBERT MaxSim re-rank {dtype}: {s['candidates']} candidates x {s['tokens_per_doc']} tokens x "
            f"{s['query_tokens']} query tokens: p50 {s['p50_ms']:.1f} ms, p99 {s['p99_ms']:.1f} ms"
            + (
                f", recall@10 vs full precision {s['recall@10_vs_full_precision_maxsim']:.3f}"
                if s["recall@10_vs_full_precision_maxsim"] is not None
                else ""
            )
        )


if __name__ == "__main__":
    main()
