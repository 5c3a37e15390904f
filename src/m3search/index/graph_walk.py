"""A compiled walk of faiss HNSW graphs over byte codes (numba): the same search as faiss's, 0.67-0.85x its time.

faiss's walk computes one distance at a time and reads each neighbour's 1 KiB of codes only when it gets to it,
so a walk waits on memory most of its time; its byte-code distance is AVX2-wide. This walk runs the same
algorithm (greedy descent through the upper layers, then a beam of `ef` candidates in the base layer, stopping
when the nearest unexpanded candidate is farther than the `ef`-th best found) over faiss's own arrays (links,
offsets, codes: no copy), and before computing a node's neighbours' distances it asks the CPU to fetch all their
codes at once (`_prefetch`), so their reads overlap. Distances are integer squared distances between byte codes
(`ByteCodes`), exact, so both walks meet the same nodes; only their order among equal distances may differ.

Hand-written because the walk is the dense search's inner loop (issue 20: a `DenseIndex.search` at 100k, efSearch
128, 0.30 against faiss's 0.37-0.45 CPU ms in two runs; `benchmarks/graph_walk.py`, docs/INDEX.md) and faiss
offers no prefetching walk. The distance is AVX2's `pmaddwd` emitted directly (`_squared_distance`; LLVM
vectorizes the plain loop inside the walk ~4x slower), so the walk is used on x86-64 CPUs with AVX2
(`available`), and faiss's search elsewhere.
"""

from __future__ import annotations

import functools
import threading
from typing import Any

import faiss
import numpy as np
from llvmlite import binding, ir
from numba.core import cgutils, types
from numba.extending import intrinsic

from m3search.index import heap
from m3search.index.heap import jit

#: Dimensions a distance takes per step; graphs of other widths are walked by faiss.
STEP = 32
#: An unfiltered walk's row mask, and the node -> row map of a graph in row order.
_NO_MASK, _NO_ORDER = np.empty(0, np.bool_), np.empty(0, np.int64)


@functools.cache
def available() -> bool:
    """Whether this CPU runs the compiled walk (x86-64 with AVX2); asked of LLVM once per process."""
    return binding.get_process_triple().startswith("x86_64") and bool(
        binding.get_host_cpu_features().get("avx2")
    )


def _squared_distance_ir(typingctx: Any, a: Any, b: Any) -> Any:
    """Squared L2 distance of two uint8 vectors whose length is a multiple of `STEP`, as int32 (AVX2 `pmaddwd`
    over the bytes' 16-bit differences; exact: 1024 x 255² fits)."""
    sig = types.int32(a, b)

    def codegen(context: Any, builder: Any, signature: Any, args: Any) -> Any:
        a_ty, b_ty = signature.args
        first = context.make_array(a_ty)(context, builder, args[0])
        second = context.make_array(b_ty)(context, builder, args[1])
        length = builder.extract_value(first.shape, 0)
        i8, i32, i64 = ir.IntType(8), ir.IntType(32), ir.IntType(64)
        bytes16, words16, sums8 = (
            ir.VectorType(i8, 16),
            ir.VectorType(ir.IntType(16), 16),
            ir.VectorType(i32, 8),
        )
        madd_type = ir.FunctionType(sums8, [words16, words16])
        madd = cgutils.get_or_insert_function(builder.module, madd_type, "llvm.x86.avx2.pmadd.wd")
        sums = [cgutils.alloca_once_value(builder, ir.Constant(sums8, None)) for _ in range(2)]
        a_ptr, b_ptr = (
            builder.bitcast(first.data, i8.as_pointer()),
            builder.bitcast(second.data, i8.as_pointer()),
        )
        with cgutils.for_range_slice(
            builder, ir.Constant(i64, 0), length, ir.Constant(i64, STEP), intp=i64
        ) as (
            i,
            _,
        ):
            for half, acc in enumerate(sums):  # two independent sums: the adds of one step do not wait
                at = builder.add(i, ir.Constant(i64, 16 * half))
                x = builder.load(builder.bitcast(builder.gep(a_ptr, [at]), bytes16.as_pointer()), align=1)
                y = builder.load(builder.bitcast(builder.gep(b_ptr, [at]), bytes16.as_pointer()), align=1)
                diff = builder.sub(builder.zext(x, words16), builder.zext(y, words16))
                builder.store(builder.add(builder.load(acc), builder.call(madd, [diff, diff])), acc)
        total_vec = builder.add(builder.load(sums[0]), builder.load(sums[1]))
        total = builder.extract_element(total_vec, ir.Constant(i32, 0))
        for lane in range(1, 8):
            total = builder.add(total, builder.extract_element(total_vec, ir.Constant(i32, lane)))
        return total

    return sig, codegen


_squared_distance: Any = intrinsic(_squared_distance_ir)


def _prefetch_ir(typingctx: Any, array: Any, index: Any) -> Any:
    """Ask the CPU to bring `array[index]`'s cache line into its caches (LLVM's prefetch: a hint, never a
    fault)."""
    sig = types.void(array, index)

    def codegen(context: Any, builder: Any, signature: Any, args: Any) -> Any:
        array_ty, _ = signature.args
        view = context.make_array(array_ty)(context, builder, args[0])
        pointer = cgutils.get_item_pointer(context, builder, array_ty, view, [args[1]])
        i8_ptr, i32 = ir.IntType(8).as_pointer(), ir.IntType(32)
        hint = cgutils.get_or_insert_function(
            builder.module, ir.FunctionType(ir.VoidType(), [i8_ptr, i32, i32, i32]), "llvm.prefetch.p0i8"
        )
        # read, keep in all cache levels, data
        builder.call(hint, [builder.bitcast(pointer, i8_ptr), i32(0), i32(3), i32(1)])
        return context.get_dummy_value()

    return sig, codegen


_prefetch: Any = intrinsic(_prefetch_ir)


@jit
def prefetch_row(row: np.ndarray) -> None:
    """Ask for every cache line of the byte-code row `row`, so that a node's neighbours' rows are all on their
    way before the first of their distances is computed."""
    for byte in range(0, len(row), 64):
        _prefetch(row, byte)


@jit
def encode_bytes(x: np.ndarray, scale: np.float32, out: np.ndarray) -> None:
    """`ByteCodes.encode` of the float32 vector `x` into the bytes `out`: each value times `scale`, plus 127.5,
    rounded half to even and clamped to [0, 255], in float32 step by step as numpy does it (no fused
    multiply-add), so the bytes are the ones the graph's rows were coded with."""
    half = np.float32(127.5)
    for i in range(len(x)):
        v = np.float32(np.rint(x[i] * scale + half))
        out[i] = np.uint8(min(max(v, np.float32(0.0)), np.float32(255.0)))


@jit
def prefetch_rows(array: np.ndarray, rows: np.ndarray) -> None:
    """Ask for the first cache line of each of `array`'s `rows` (a 2-d C-contiguous array) before a kernel
    reads them one after the other: their address translations and first reads overlap, the CPU's own
    prefetcher streams the rest of each row. A dense search's 30-row re-scoring of 4 KiB float rows that another
    search had evicted took 8 µs less; the call costs 0.3 µs (docs/INDEX.md, "Fixed costs of a short search")."""
    for r in rows:
        _prefetch(array[r], 0)


#: A `_key`'s node (its low 32 bits; the distance is `key >> 32`).
NODE = 0xFFFFFFFF


@jit
def _key(d: int, v: int) -> np.int64:
    """A node's heap entry: its distance, then its number (one int64: ties go to the lower node)."""
    return (np.int64(d) << 32) | v


@jit
def descend(
    codes: np.ndarray,
    links: np.ndarray,
    offsets: np.ndarray,
    per_level: np.ndarray,
    query: np.ndarray,
    node: int,
    top_level: int,
    bottom: int,
) -> tuple[int, int]:
    """Greedy descent from `node` through levels `top_level` down to `bottom` + 1, each time to the nearest
    neighbour until none is nearer (faiss's greedy_update_nearest): the node reached and its distance.

    A node's neighbours' codes are all asked for before the first distance, as in the base layer's walk: the
    upper layers' few thousand nodes are not all cached between two searches. At 100k rows a descent measures
    ~90 distances; read one after the other, right after another engine's search, they took 23-30 µs of a
    walk of ~110 µs at efSearch 32, asked for together 15 µs (docs/INDEX.md, "Fixed costs of a short search")."""
    best_d: int = _squared_distance(codes[node], query)
    for level in range(top_level, bottom, -1):
        moved = True
        while moved:
            moved = False
            start, end = offsets[node] + per_level[level], offsets[node] + per_level[level + 1]
            for j in range(start, end):
                v = links[j]
                if v < 0:
                    end = j
                    break
                prefetch_row(codes[v])
            for j in range(start, end):
                v = links[j]
                d = _squared_distance(codes[v], query)
                if d < best_d:
                    node, best_d, moved = v, d, True
    return node, best_d


@jit
def fresh_neighbours(
    codes: np.ndarray,
    links: np.ndarray,
    start: int,
    width: int,
    visited: np.ndarray,
    mark: int,
    fresh: np.ndarray,
) -> int:
    """A node's links not yet met in this walk (the `width` from `links[start]`, -1 ends them) into `fresh`,
    marked met, all of their codes' cache lines asked for before any distance; returns how many."""
    n_fresh = 0
    for j in range(start, start + width):
        v = links[j]
        if v < 0:
            break
        if visited[v] != mark:
            visited[v] = mark
            fresh[n_fresh] = v
            n_fresh += 1
            prefetch_row(codes[v])
    return n_fresh


@jit
def room(heap_: np.ndarray, size: int, more: int) -> np.ndarray:
    """`heap_`, or a copy twice as long of its first `size` entries when `more` would not fit after them."""
    if size + more <= len(heap_):
        return heap_
    grown = np.empty(2 * len(heap_), heap_.dtype)
    grown[:size] = heap_[:size]
    return grown


@jit
def _walk(
    codes: np.ndarray,
    links: np.ndarray,
    offsets: np.ndarray,
    per_level: np.ndarray,
    entry: int,
    top_level: int,
    query: np.ndarray,
    scale: np.float32,
    ef: int,
    k: int,
    visited: np.ndarray,
    mark: int,
    allowed: np.ndarray,
    order: np.ndarray,
) -> tuple[np.ndarray, np.ndarray]:
    """The `k` nodes nearest the float32 `query` (coded with `scale`, `encode_bytes`) a walk with `ef`
    candidates finds, nearest first: their rows (`order[node]`; the nodes themselves when `order` is empty) and
    squared distances, fewer when the graph has fewer nodes. `visited[v] == mark` marks the nodes met in this
    walk (the caller gives a fresh mark each time). Coding, walk and translation are one compiled call: each
    numpy call a search makes costs 2-9 µs once another engine's work has cooled the caches (docs/INDEX.md,
    "Fewer numpy calls in a short search").

    With a row mask `allowed` (empty: every node), only nodes whose row it allows are returned, the nearest of
    all the base layer's distances as in faiss's filtered search; the walk still goes through the others."""
    filtered, ordered = len(allowed) > 0, len(order) > 0
    query_codes = np.empty(len(query), np.uint8)
    encode_bytes(query, scale, query_codes)
    best, best_d = descend(codes, links, offsets, per_level, query_codes, entry, top_level, 0)
    width = per_level[1] - per_level[0]
    # min-heaps of `_key`s: the nodes to expand; negated, the ef nearest found so far and (filtered) the k
    # nearest allowed
    open_, found, kept = (
        np.empty(4 * ef + width, np.int64),
        np.empty(ef + 1, np.int64),
        np.empty(k + 1, np.int64),
    )
    fresh = np.empty(width, np.int32)
    first = _key(best_d, best)
    heap.push(open_, 0, first)
    heap.push(found, 0, -first)
    n_open, n_found, n_kept = 1, 1, 0
    if filtered and allowed[order[best] if ordered else best]:
        heap.push(kept, 0, -first)
        n_kept = 1
    visited[best] = mark
    while n_open > 0:
        nearest = open_[0]
        if n_found >= ef and nearest > -found[0]:
            break
        heap.pop(open_, n_open)
        n_open -= 1
        if n_open > 0:  # the next node's links, read while this one's neighbours are measured
            _prefetch(links, offsets[open_[0] & NODE])
        n_fresh = fresh_neighbours(codes, links, offsets[nearest & NODE], width, visited, mark, fresh)
        open_ = room(open_, n_open, n_fresh)
        for t in range(n_fresh):
            v = fresh[t]
            key = _key(_squared_distance(codes[v], query_codes), v)
            if filtered and (n_kept < k or key < -kept[0]) and allowed[order[v] if ordered else v]:
                n_kept = heap.push_bounded(kept, n_kept, -key, k)
            if n_found < ef or key < -found[0]:
                heap.push(open_, n_open, key)
                n_open += 1
                n_found = heap.push_bounded(found, n_found, -key, ef)
    if filtered:
        found, n_found = kept, n_kept
    while n_found > k:
        heap.pop(found, n_found)
        n_found -= 1
    rows, dists = np.empty(n_found, np.int64), np.empty(n_found, np.int32)
    while n_found > 0:  # the heap's top is the farthest: fill from the back
        node = -found[0] & NODE
        rows[n_found - 1], dists[n_found - 1] = order[node] if ordered else node, -found[0] >> 32
        heap.pop(found, n_found)
        n_found -= 1
    return rows, dists


class ByteGraphWalk:
    """`_walk` over a faiss `IndexHNSWSQ` with `ByteCodes`, reading the index's own arrays (it keeps the index,
    which must not change while walked). Safe to call from several threads: each has its own visited marks."""

    def __init__(self, index: Any) -> None:
        hnsw, storage = index.hnsw, faiss.downcast_index(index.storage)
        assert isinstance(storage, faiss.IndexScalarQuantizer)  # byte codes: one byte a dimension
        n, dim = int(index.ntotal), int(index.d)
        if dim % STEP:
            raise ValueError(f"a compiled walk needs a width that is a multiple of {STEP}, not {dim}")
        self.index = index  # keeps the arrays below alive
        self.codes = faiss.rev_swig_ptr(storage.codes.data(), n * dim).reshape(n, dim)
        self.links = faiss.rev_swig_ptr(hnsw.neighbors.data(), hnsw.neighbors.size())
        self.offsets = faiss.rev_swig_ptr(hnsw.offsets.data(), n + 1).view(np.int64)
        self.per_level = faiss.vector_to_array(hnsw.cum_nneighbor_per_level).astype(np.int64)
        self.entry, self.top_level = int(hnsw.entry_point), int(hnsw.max_level)
        self._local = threading.local()

    def search(
        self,
        query: np.ndarray,
        scale: np.float32,
        k: int,
        ef: int,
        allowed: np.ndarray | None = None,
        order: np.ndarray | None = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """The `k` nodes nearest the contiguous float32 `query`, coded with `scale` (`ByteCodes.scale`), found
        with `ef` candidates (ef >= k): (their rows, `order[node]` or the node without an `order`, as int64;
        their squared distances, int32), nearest first; only rows the boolean row mask `allowed` allows, when
        given."""
        if self.entry < 0:
            return np.empty(0, np.int64), np.empty(0, np.int32)
        local = self._local
        visited = getattr(local, "visited", None)
        if visited is None:
            visited = local.visited = np.zeros(len(self.codes), np.uint8)
            local.mark = 0
        local.mark = local.mark % 255 + 1
        if local.mark == 1:  # marks wrapped: forget the old ones
            visited[:] = 0
        return _walk(
            self.codes, self.links, self.offsets, self.per_level, self.entry, self.top_level, query, scale,
            max(ef, k), k, visited, local.mark, _NO_MASK if allowed is None else allowed,
            _NO_ORDER if order is None else order,
        )  # fmt: skip
