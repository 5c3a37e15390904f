"""Dense vectors of one segment: exact inner-product search, or faiss HNSW (optionally over 8-bit codes) for large
segments.

The float32 vectors stay the source of truth (a memory-mapped `.npy` for sealed segments): exact search, exact
re-scoring of candidates and rebuilding at compaction read them. The HNSW graph is derived from them and held
in RAM, its nodes stored in the order a walk from its entry point meets them (`walk_order`) and backed by 2 MiB
pages where the kernel allows (`use_huge_pages`): both cut the memory stalls a walk spends most of its time in.
Filters are applied *during* the search: an allowed-row bitmap goes to faiss as an `IDSelectorBitmap`,
and when it lets few rows through the search switches to an exact scan of just those rows (a graph walk over a
sparse allowed set loses recall, a scan of a few thousand rows is both exact and fast).
"""

from __future__ import annotations

import functools
import logging
import queue
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import faiss
import numpy as np
from scipy.sparse import csr_matrix
from scipy.sparse.csgraph import breadth_first_order

from m3search.index import graph_build, graph_walk
from m3search.index.graph_walk import ByteGraphWalk
from m3search.index.topk import best_first, top_k
from m3search.threads import MADVISE, load_array

log = logging.getLogger(__name__)

DenseKind = Literal["flat", "hnsw", "hnsw-sq8"]
DENSE_KINDS: tuple[DenseKind, ...] = ("flat", "hnsw", "hnsw-sq8")

VECTORS_FILE = "dense.npy"
ANN_FILE = "dense.faiss"
#: The graph's node -> row map (`walk_order`); absent in segments sealed before nodes were reordered (identity).
ORDER_FILE = "dense_order.npy"
#: Rows a `BackgroundGraph` links at least per call, so that its merge waits ~0.2 s at most for it to stop.
BACKGROUND_BLOCK = 512
#: How far a `BackgroundGraph`'s code range reaches beyond its first rows', as a fraction of theirs.
BACKGROUND_RANGE_MARGIN = 0.1
_BLOCK = 65_536  # rows read at a time from a (memory-mapped) source


@dataclass(frozen=True)
class HNSWParams:
    """How HNSW graphs are built and searched: `m` links per node, `ef_*` the candidate list lengths."""

    m: int = 32
    ef_construction: int = 64
    ef_search: int = 128
    #: Segments with fewer rows are searched exactly (no graph).
    min_rows: int = 20_000
    #: A filtered search scans the allowed rows exactly when at most this many ...
    exact_max_rows: int = 10_000
    #: ... or at most this fraction of the segment is allowed.
    exact_max_fraction: float = 0.02
    #: Over 8-bit codes, fetch this many times k from the graph and re-rank them exactly.
    refine: int = 3
    #: Fill each base-layer list up to 2·m with the nearest candidates the neighbour heuristic set aside, a
    #: pruned one up to faiss's headroom (`graph_build.add`; where the compiled insertion runs): more recall per
    #: efSearch on text embeddings at the same search time, for ~1.2x the linking time; on near-isotropic rows
    #: (no low-dimensional structure) it costs recall (docs/INDEX.md, "Base-layer lists kept full").
    fill_base_layer: bool = True

    def fetched(self, limit: int, exact_top: int | None = None) -> int:
        """How many candidates a search over 8-bit codes fetches for `limit` results whose best `exact_top`
        (default: all) must be found despite the codes' error: the limit plus (refine - 1) x exact_top."""
        return limit + (self.refine - 1) * min(limit if exact_top is None else exact_top, limit)


def build_ann(
    vectors: np.ndarray,
    kind: DenseKind,
    params: HNSWParams,
    graph: Any | None = None,
    byte_codes: bool = True,
) -> faiss.Index | None:
    """An HNSW index over `vectors` (inner product), or None for `flat` or segments too small for a graph.

    The graph is linked over 8-bit codes with one range for every dimension: such a distance reads a quarter of
    a float32 one's bytes and needs no per-dimension scale. Unit rows (bge-m3's dense vectors) get `ByteCodes`
    (unless not `byte_codes`: collections of formats before 8, whose readers walk with the float query),
    compared by faiss's integer kernel: linked in 0.74-0.78x and walked in 0.78-0.85x the time of `QT_8bit_uniform`
    codes at 100k (docs/INDEX.md), which other rows get, whose distance decodes to float (the build ~0.85x
    float16's time, itself ~0.75x float32's, and linking as well: recall@10 at 100k 0.9985 against 0.9975).
    `hnsw-sq8` keeps those codes to walk the graph (candidates are re-ranked exactly); `hnsw` moves the graph
    onto float32 storage.

    `graph`: one already linked over the first `graph.ntotal` rows (a `BackgroundGraph`'s), which is linked on
    over the rest; its codes are then made again from the range of all the rows, as a new graph's are. A graph
    whose codes do not suit all the rows (byte codes, a row not of unit length) is dropped: the build starts
    over."""
    if kind == "flat" or len(vectors) < params.min_rows:
        return None
    if kind not in DENSE_KINDS:
        raise ValueError(f"unknown dense index kind {kind!r}; choose one of {', '.join(DENSE_KINDS)}")
    dim = vectors.shape[1]
    codes = ByteCodes.fit(vectors) if byte_codes else None
    if graph is not None:
        if graph.d != dim or graph.ntotal > len(vectors):
            raise ValueError(f"a graph over {graph.ntotal} {graph.d}-d rows is no prefix of {vectors.shape}")
        if (ByteCodes.of(graph) is None) != (codes is None):
            graph = None
    if graph is None:
        builder = _new_graph(vectors, params, codes)
        _add_blocks(builder, vectors, codes, params.fill_base_layer)
    else:
        builder = graph
        _add_blocks(builder, vectors[builder.ntotal :], ByteCodes.of(builder), params.fill_base_layer)
        storage: Any = faiss.downcast_index(builder.storage)
        storage.reset()
        if codes is None:
            storage.sq.rangestat_arg = 0.0
            storage.train(_contiguous(vectors))
        else:
            codes.keep_in(builder)
        _add_blocks(storage, vectors, codes)
    if kind == "hnsw-sq8":
        return builder
    index: Any = faiss.IndexHNSWFlat(dim, params.m, faiss.METRIC_INNER_PRODUCT)
    index.hnsw = builder.hnsw  # a copy: the builder's codes go with it
    index.hnsw.is_similarity = True  # linked by squared distance over byte codes, walked by inner product
    del builder
    _add_blocks(index.storage, vectors)
    index.ntotal = len(vectors)
    return index


def _new_graph(vectors: np.ndarray, params: HNSWParams, codes: ByteCodes | None, margin: float = 0.0) -> Any:
    """An empty graph over 8-bit codes with one range for every dimension, trained on `vectors`: `codes`, or
    `QT_8bit_uniform` codes spanning the rows' range widened by `margin` on each side when None."""
    sq: Any = faiss.ScalarQuantizer  # its code types are ints, which faiss's stubs do not say
    if codes is None:
        graph = faiss.IndexHNSWSQ(vectors.shape[1], sq.QT_8bit_uniform, params.m, faiss.METRIC_INNER_PRODUCT)
        storage: Any = faiss.downcast_index(graph.storage)
        storage.sq.rangestat_arg = margin
        graph.train(_contiguous(vectors))
    else:
        graph = faiss.IndexHNSWSQ(vectors.shape[1], sq.QT_8bit_direct, params.m, faiss.METRIC_L2)
        codes.keep_in(graph)
    graph.hnsw.efConstruction = params.ef_construction
    return graph


@dataclass(frozen=True)
class ByteCodes:
    """8-bit codes of unit vectors compared as bytes: a value x in [-top, top] is coded as round((x + top) ·
    127.5 / top), one range for every dimension, and two codes are compared by squared distance (faiss
    `QT_8bit_direct`, METRIC_L2), which ranks unit vectors as inner product does (|q - x|² = 2 - 2 q·x). faiss
    computes that distance with integer SIMD over the bytes, where its other 8-bit codes decode every byte to
    float first.

    `top` is kept in the codes' `rangestat_arg` (a training setting, read by no direct-code routine, and saved
    with the index), so a saved graph carries its range."""

    top: float

    #: How far a row's length may be from 1 for its squared distances to rank as its inner products do.
    UNIT_TOLERANCE = 1e-3

    @classmethod
    def fit(cls, vectors: np.ndarray, margin: float = 0.0) -> ByteCodes | None:
        """Codes spanning the rows' largest magnitude widened by `margin`, or None unless there are rows and
        every one is a unit vector (read in blocks, so a memory-mapped source is not copied whole)."""
        top = 0.0
        for start in range(0, len(vectors), _BLOCK):
            block = _contiguous(vectors[start : start + _BLOCK])
            lengths = np.sqrt(np.einsum("ij,ij->i", block, block))
            if np.abs(lengths - 1).max() > cls.UNIT_TOLERANCE:
                return None
            top = max(top, float(np.abs(block).max()))
        # float32, as the index keeps it: rows are coded with the very range queries later read back
        return None if top == 0.0 else cls(float(np.float32(top * (1 + margin))))

    @classmethod
    def of(cls, index: Any) -> ByteCodes | None:
        """The codes of a graph over byte codes; None for any other index."""
        storage: Any = faiss.downcast_index(index.storage) if isinstance(index, faiss.IndexHNSW) else None
        if not isinstance(storage, faiss.IndexScalarQuantizer):
            return None
        if storage.sq.qtype != faiss.ScalarQuantizer.QT_8bit_direct or index.metric_type != faiss.METRIC_L2:
            return None
        return cls(float(storage.sq.rangestat_arg))

    def keep_in(self, index: Any) -> None:
        """Record the range in `index`'s codes (`of` reads it back, from a saved graph too)."""
        storage: Any = faiss.downcast_index(index.storage)
        storage.sq.rangestat_arg = self.top
        storage.is_trained = index.is_trained = True

    def encode(self, x: np.ndarray) -> np.ndarray:
        """The codes of rows `x` (values outside the range clamped), as the float32 faiss adds or searches."""
        codes = np.asarray(x, np.float32) * self.scale
        codes += np.float32(127.5)
        return np.clip(np.rint(codes, out=codes), 0, 255, out=codes)

    @functools.cached_property
    def scale(self) -> np.float32:
        """What `encode` multiplies values by before adding 127.5, as the compiled walk codes a query
        (`graph_walk.encode_bytes`)."""
        return np.float32(127.5) / np.float32(self.top)


class BackgroundGraph:
    """A graph linked over rows as they arrive, in a thread beside the writer's, for the build that will index
    exactly those rows in that order: a bulk load's segments are linked while later ones are written, and their
    merge only finishes the graph (`take`, then `build_ann(..., graph=)`).

    The thread runs one OpenMP thread (faiss's setting is per thread), so the writer keeps a core; it links
    `BACKGROUND_BLOCK`-row blocks and stops between two. Its codes' range comes from the first rows, widened by
    `BACKGROUND_RANGE_MARGIN` on each side (later values beyond it are clamped while linking; `build_ann` codes
    the rows again from all of them); its kind of codes too (`ByteCodes` for unit rows), so a later part not of
    unit length after byte-coded ones stops it. Nothing of it is stored: a crash loses only work."""

    def __init__(self, params: HNSWParams, byte_codes: bool = True) -> None:
        self.params, self.byte_codes = params, byte_codes
        self._reset()

    def _reset(self) -> None:
        """Empty, with no thread: what `take` leaves for the next parts."""
        #: the keys of the parts offered, in order
        self.keys: list[str] = []
        self._queue: queue.SimpleQueue[np.ndarray | None] = queue.SimpleQueue()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._graph: Any | None = None
        self._failed = False

    def offer(self, key: str, vectors: np.ndarray) -> None:
        """Link `vectors`, the next rows, after those offered before (in the background)."""
        self.keys.append(key)
        self._queue.put(vectors)
        if self._thread is None:
            self._thread = threading.Thread(target=self._link, name="m3search-graph", daemon=True)
            self._thread.start()

    @property
    def linked(self) -> int:
        """How many of the rows offered are in the graph so far: those linked and the block being linked (faiss
        counts a block before linking it; `take` lets that block finish)."""
        graph = self._graph
        return 0 if graph is None else int(graph.ntotal)

    def take(self, keys: Sequence[str]) -> Any | None:
        """Stop linking and start over empty; returns the graph over the rows linked so far (the first
        `graph.ntotal` of those offered) when exactly `keys` were offered, in that order, else None."""
        self._stop.set()
        self._queue.put(None)
        if self._thread is not None:
            self._thread.join()
        graph = self._graph if list(keys) == self.keys and not self._failed else None
        self._reset()
        return graph

    def _link(self) -> None:
        faiss.omp_set_num_threads(1)  # this thread's own setting: the writer's threads keep theirs
        try:
            while (vectors := self._queue.get()) is not None:
                graph, start = self._graph, 0
                fitted = ByteCodes.fit(vectors, BACKGROUND_RANGE_MARGIN) if self.byte_codes else None
                if graph is None:
                    graph = self._graph = _new_graph(vectors, self.params, fitted, BACKGROUND_RANGE_MARGIN)
                codes = ByteCodes.of(graph)
                if codes is not None and fitted is None:  # a row not of unit length: the merge builds anew
                    self._failed = True
                    return
                while start < len(vectors) and not self._stop.is_set():
                    # blocks grow with the graph: each call initializes a lock per node
                    end = start + max(BACKGROUND_BLOCK, graph.ntotal // 500)
                    _add(graph, _contiguous(vectors[start:end]), codes, self.params.fill_base_layer)
                    start = end
        except Exception:  # out of memory, a vanished file: the merge builds its graph itself
            log.exception("linking a graph in the background failed; the merge will build it")
            self._failed = True


def walk_order(index: Any) -> np.ndarray:
    """The graph's nodes in the order a breadth-first walk of its base layer from the entry point meets them
    (nodes it never reaches last, as they were). Stored in this order, the nodes a search visits together lie
    together in memory, so they share pages and cache lines: 10-12% less time per walk at 100k (docs/INDEX.md)."""
    hnsw = index.hnsw
    n = index.ntotal
    width = int(faiss.vector_to_array(hnsw.cum_nneighbor_per_level)[1])  # base-layer links per node
    starts = faiss.vector_to_array(hnsw.offsets)[:n].astype(np.int64)
    links = faiss.vector_to_array(hnsw.neighbors)[starts[:, None] + np.arange(width)]
    present = links >= 0  # a node's unused link slots hold -1
    indptr = np.concatenate([[0], np.cumsum(present.sum(axis=1))])
    graph = csr_matrix((np.ones(int(indptr[-1]), np.int8), links[present], indptr), shape=(n, n))
    reached = breadth_first_order(graph, int(hnsw.entry_point), directed=True, return_predecessors=False)
    seen = np.zeros(n, bool)
    seen[reached] = True
    return np.concatenate([reached, np.flatnonzero(~seen)]).astype(np.int64)


_MADV_HUGEPAGE, _MADV_COLLAPSE = 14, 25  # Linux <sys/mman.h>
_HUGE_PAGE = 1 << 21


def use_huge_pages(index: Any) -> int:
    """Ask Linux to back the graph's links and codes with 2 MiB pages (transparent huge pages, when the system
    allows them: `always` or `madvise`) and to do it now (`MADV_COLLAPSE`, Linux 6.1+; older kernels do it in
    the background). A walk reads ~1,500 scattered nodes; with 4 KiB pages nearly each read also misses the TLB
    (17-20% of a walk's time at 100k, docs/INDEX.md). Returns the bytes collapsed now; only advice, never an
    error."""
    madvise = MADVISE
    if madvise is None:
        return 0
    try:  # faiss's buffers: the storage's codes and the links
        storage: Any = faiss.downcast_index(index.storage)
        buffers = [(storage.codes, 1), (index.hnsw.neighbors, 4)]
        spans = [(int(vector.data()), vector.size() * item) for vector, item in buffers]
    except (AttributeError, TypeError):  # a faiss that keeps them otherwise: nothing to advise
        return 0
    collapsed = 0
    for start, size in spans:
        first = -(-start // _HUGE_PAGE) * _HUGE_PAGE  # whole 2 MiB pages inside the buffer only
        end = (start + size) // _HUGE_PAGE * _HUGE_PAGE
        if end > first and madvise(first, end - first, _MADV_HUGEPAGE) == 0:
            collapsed += (end - first) * (madvise(first, end - first, _MADV_COLLAPSE) == 0)
    return collapsed


def _add_blocks(
    index: faiss.Index, vectors: np.ndarray, codes: ByteCodes | None = None, fill: bool = False
) -> None:
    """Add `vectors` (as `codes`, when given) in blocks, so that a memory-mapped source is not copied whole."""
    for start in range(0, len(vectors), _BLOCK):
        _add(index, _contiguous(vectors[start : start + _BLOCK]), codes, fill)


def _add(index: faiss.Index, block: np.ndarray, codes: ByteCodes | None, fill: bool = False) -> None:
    """Add the rows `block` to `index` (as `codes`, when given): a graph over byte codes is linked by the compiled
    insertion where it runs (`graph_build`: 0.57-0.62x faiss's time at 100k), with faiss's OpenMP thread count,
    its base-layer lists filled if `fill` (`HNSWParams.fill_base_layer`; faiss's `add` elsewhere: not filled)."""
    coded = block if codes is None else codes.encode(block)
    if codes is not None and isinstance(index, faiss.IndexHNSW) and graph_build.available(index.d):
        graph_build.add(index, coded, fill=fill)
    else:
        index.add(coded)


def _contiguous(x: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(x, dtype=np.float32)


def _walk_params(ef: int) -> Any:
    """faiss's search parameters of a graph walk keeping `ef` candidates."""
    params = faiss.SearchParametersHNSW()  # type: ignore[attr-defined]  # missing from faiss' stubs
    params.efSearch = ef
    return params


class DenseIndex:
    """Inner-product search over the rows of `vectors`, through `ann` when there is one (its node i is row
    `order[i]`; None: row i). A graph over byte codes is walked by `graph_walk` where it runs, unless not
    `compiled_walk` (benchmarks compare it with faiss's walk of the same graph)."""

    def __init__(
        self,
        vectors: np.ndarray,
        ann: faiss.Index | None = None,
        params: HNSWParams = HNSWParams(),
        order: np.ndarray | None = None,
        compiled_walk: bool = True,
    ) -> None:
        self.vectors = vectors
        self.ann = ann
        self.params = params
        self.order = order
        self.compiled_walk = compiled_walk
        # (order, the same as a faiss vector) for filtered walks: `_rows`
        self._translation: tuple[np.ndarray, Any] | None = None
        # the rows as a plain contiguous array (the same memory for a memory map, whose subclass indexes in
        # Python), read by faiss directly when candidates are re-scored: `_scores`
        self._base = np.ascontiguousarray(vectors, dtype=np.float32)
        self._walks: dict[int, Any] = {}  # efSearch -> the parameters of an unfiltered walk (made once each)
        # (ann, its byte codes, their compiled walk): `_graph_codes`
        self._codes: tuple[Any, ByteCodes | None, ByteGraphWalk | None] | None = None

    @classmethod
    def build(
        cls,
        vectors: np.ndarray,
        kind: DenseKind,
        params: HNSWParams,
        walk: bool = True,
        graph: Any | None = None,
        byte_codes: bool = True,
    ) -> DenseIndex:
        """The index over `vectors`: a graph (`build_ann`, from `graph` when one is linked over the first rows;
        over `ByteCodes` where they suit and `byte_codes`) with its nodes stored in `walk_order` (in row order
        with `walk` false: what readers of collection formats before 7 expect), or none."""
        ann = build_ann(vectors, kind, params, graph, byte_codes)
        if ann is None or not walk:
            return cls(vectors, ann, params)
        order = walk_order(ann)
        ann.permute_entries(order)
        return cls(vectors, ann, params, order)

    def __len__(self) -> int:
        return len(self.vectors)

    @property
    def dim(self) -> int:
        return self.vectors.shape[1]

    def search(
        self,
        query: np.ndarray,
        k: int,
        allowed: np.ndarray | None = None,
        ef_search: int | None = None,
        exact_top: int | None = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """The `k` allowed rows with the highest inner product with `query`: (rows, scores), best first.

        Over 8-bit codes the graph's candidates are re-ranked with the exact float32 vectors: `k + (refine - 1) ·
        exact_top` are fetched by the codes, so that the best `exact_top` (default: all k) are found despite the
        codes' error. A hybrid first stage asks for its depth (hundreds) with `exact_top` = the query's k: the rest
        of its list only has to hold candidates, which are re-scored exactly afterwards anyway.
        """
        n = len(self.vectors)
        n_allowed = n if allowed is None else int(np.count_nonzero(allowed))
        if k <= 0 or n_allowed == 0:
            return np.empty(0, np.int64), np.empty(0, np.float32)
        filtered = allowed is not None and n_allowed < n
        exact = self.ann is None or (
            filtered
            and (n_allowed <= self.params.exact_max_rows or n_allowed <= self.params.exact_max_fraction * n)
        )
        if exact:
            if allowed is None or n_allowed == n:
                return top_k(self.score_rows(query), k)
            rows = np.flatnonzero(allowed)
            picked, exact_scores = top_k(self.score_rows(query, rows), k)
            return rows[picked], exact_scores
        assert self.ann is not None  # an index without a graph searches exactly above
        ef = max(ef_search or self.params.ef_search, k)
        quantized = isinstance(self.ann, faiss.IndexHNSWSQ)
        fetch = min(self.params.fetched(k, exact_top) if quantized else k, n_allowed)
        if filtered:
            # a walk that may only collect a fraction of the nodes needs a longer candidate list for the same
            # recall
            ef = max(int(min(ef * n / n_allowed, ef * 8)), fetch)
        else:
            ef = max(ef, fetch)
        q = _contiguous(query)
        codes, walk = self._graph_codes()
        scores: np.ndarray | None = None  # (a graph over byte codes is re-ranked below: no scores needed)
        mask = np.ascontiguousarray(allowed, dtype=np.bool_) if filtered else None
        if walk is not None:
            assert codes is not None  # (the compiled walk is only made for byte codes)
            rows = walk.search(q, codes.scale, fetch, ef, mask, self.order)[0]
        else:
            walked = q if codes is None else codes.encode(q)
            params, selector = self._faiss_walk(ef, mask)
            found, labels = self.ann.search(walked[None, :], fetch, params=params)
            del selector  # (it had to live through the search)
            rows, scores = labels[0], found[0]
            if len(rows) and rows[-1] < 0:  # fewer nodes reached than asked for: faiss pads with -1
                rows = rows[rows >= 0]
            if self.order is not None:
                rows = self.order[rows]
        if scores is not None and not quantized:
            return rows, scores[: len(rows)]
        return best_first(rows, self._scores(q, rows), k)  # ties: the walk's order, as `top_k` keeps them

    def _faiss_walk(self, ef: int, allowed: np.ndarray | None) -> tuple[Any, Any]:
        """faiss's search parameters for a walk with `ef` candidates, collecting only the rows `allowed` allows
        (all when None; unfiltered ones are made once per ef), and what their selector reads, which must live
        as long as they are used."""
        if allowed is None:
            return self._walks.get(ef) or self._walks.setdefault(ef, _walk_params(ef)), None
        params = _walk_params(ef)
        bits = np.packbits(allowed, bitorder="little")
        bitmap = faiss.IDSelectorBitmap(len(allowed), faiss.swig_ptr(bits))
        # nodes in walk order: each visited node's row is looked up in the bitmap (a gather of the whole mask
        # into node order would cost ~1.6 ms a search at 1M rows)
        params.sel = bitmap if self.order is None else faiss.IDSelectorTranslated(self._rows(), bitmap)
        return params, (bits, bitmap, params.sel)

    def _graph_codes(self) -> tuple[ByteCodes | None, ByteGraphWalk | None]:
        """The graph's byte codes, if it is over `ByteCodes`, and then its compiled walk where this CPU runs one
        (`graph_walk.available`), the width suits it and `compiled_walk` allows; found once per graph
        (benchmarks swap graphs into a loaded segment)."""
        if self._codes is None or self._codes[0] is not self.ann:
            codes = ByteCodes.of(self.ann)
            compiled = (
                self.compiled_walk
                and codes is not None
                and graph_walk.available()
                and self.dim % graph_walk.STEP == 0
            )
            self._codes = (self.ann, codes, ByteGraphWalk(self.ann) if compiled else None)
        return self._codes[1], self._codes[2]

    def _rows(self) -> Any:
        """The node -> row map as a faiss vector, made on the first filtered search and kept while `order` is
        the same array (benchmarks swap graphs and their orders into a loaded segment)."""
        order = self.order
        assert order is not None  # only graphs in walk order translate
        if self._translation is None or self._translation[0] is not order:
            vector = faiss.Int64Vector()
            faiss.copy_array_to_vector(order, vector)
            self._translation = (order, vector)
        return self._translation[1]

    def score_rows(self, query: np.ndarray, rows: np.ndarray | None = None) -> np.ndarray:
        """Exact inner products of `query` with the given rows (default: all), float32.

        faiss's SIMD kernel, not a BLAS product: a row's score is the same bits whichever rows it is scored with
        (a BLAS product's rounding depends on its batch), and a query's few rows wake no thread pool (`_scores`).
        A whole scan takes ~1.1-1.3x a one-thread BLAS product (docs/INDEX.md)."""
        vectors = self.vectors
        q = _contiguous(query)
        if q.shape != (vectors.shape[1],):
            raise ValueError(f"a query of shape {q.shape} against {vectors.shape[1]}-d vectors")
        if rows is not None:
            rows = np.ascontiguousarray(rows, dtype=np.int64)
            if len(rows) and not (rows.min() >= 0 and rows.max() < len(vectors)):
                raise IndexError(f"rows outside this index's {len(vectors)}")
            return self._scores(q, rows)
        block = self._base
        scores = np.empty(len(block), np.float32)
        if len(scores):
            ptr = faiss.swig_ptr
            faiss.fvec_inner_products_ny(ptr(scores), ptr(q), ptr(block), q.shape[0], len(scores))  # type: ignore[attr-defined]
        return scores

    def _scores(self, q: np.ndarray, rows: np.ndarray) -> np.ndarray:
        """`score_rows` of contiguous rows of this index (int64, in range: not checked), read where they lie by
        the same faiss kernel (no gathered copy; each row's score the same bits as in a whole scan).

        faiss runs that kernel in an OpenMP team even for one query, so it is called with this thread's team
        limited to itself: otherwise every re-scoring wakes the team and waits at its barrier for a thread
        whose core may be busy (30 rows: 33 us alone, 7 ms beside another process using the other core of two;
        docs/INDEX.md)."""
        scores = np.empty(len(rows), np.float32)
        if len(rows):
            base, ptr = self._base, faiss.swig_ptr
            graph_walk.prefetch_rows(base, rows)
            by_idx = faiss.fvec_inner_products_by_idx  # type: ignore[attr-defined]  # missing from faiss' stubs
            team = faiss.omp_get_max_threads()
            faiss.omp_set_num_threads(1)  # this thread's setting only
            try:
                by_idx(ptr(scores), ptr(q), ptr(base), ptr(rows), base.shape[1], 1, len(rows))
            finally:
                faiss.omp_set_num_threads(team)
        return scores

    def save(self, directory: Path, vectors: bool = True) -> list[Path]:
        """Write the vectors (unless not `vectors`: the caller wrote them) and the graph and its node order, if
        any, into `directory`; returns the files written."""
        paths = [directory / VECTORS_FILE] if vectors else []
        if vectors:
            np.save(paths[0], _contiguous(self.vectors))
        if self.ann is not None:
            paths.append(directory / ANN_FILE)
            faiss.write_index(self.ann, str(paths[-1]))
        if self.order is not None:
            paths.append(directory / ORDER_FILE)
            np.save(paths[-1], self.order)
        return paths

    @classmethod
    def load(cls, directory: Path, params: HNSWParams = HNSWParams()) -> DenseIndex:
        """Open a saved index: vectors memory-mapped, graph read into RAM (on huge pages where allowed)."""
        vectors = load_array(directory / VECTORS_FILE, mmap=True)
        ann_path, order_path = directory / ANN_FILE, directory / ORDER_FILE
        ann = faiss.read_index(str(ann_path)) if ann_path.exists() else None
        if ann is not None:
            use_huge_pages(ann)
        order = load_array(order_path) if order_path.exists() else None
        return cls(vectors, ann, params, order)
