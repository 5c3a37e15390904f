"""Compiled HNSW insertion into faiss graphs over byte codes (numba): faiss's `add`, with the walk's prefetching.

Linking the graph is most of a bulk load's CPU time (issue 20: ~47 CPU-s of a 100k build's ~57, against ~31 for
Qdrant's index). faiss's insertion measures one neighbour (or four) at a time and reads each one's codes only
then, so it waits on memory as its walk does; `graph_walk` showed that asking for all of a node's neighbours'
codes at once saves a quarter to a third of a walk. This module inserts rows the way faiss's `IndexHNSW.add`
does (faiss's own levels, offsets and links: the result is an ordinary faiss graph, saved and searched as
before): greedy descent through the upper levels, a beam of `efConstruction` candidates on each of the node's
levels, faiss's neighbour-selection heuristic, reverse links pruned with faiss's headroom (`prune_headroom`), the
nodes in faiss's order: with one thread, the graph faiss builds (up to ties between equal distances).

Several threads insert at once (`add`'s `threads`), as faiss's OpenMP loop does: reads are unlocked, each
write to a node's list holds that node's spin lock (`_lock`: an atomic compare-and-swap; faiss also holds a
node's lock while the node searches, which only makes others wait), and the threads take nodes from a shared
counter (`_take`).
"""

from __future__ import annotations

import threading
from typing import Any

import faiss
import numpy as np
from llvmlite import ir
from numba.core import cgutils, types
from numba.extending import intrinsic

from m3search.index import graph_walk, heap
from m3search.index.graph_walk import (
    NODE,
    _key,
    _prefetch,
    _squared_distance,
    descend,
    fresh_neighbours,
    prefetch_row,
    room,
)
from m3search.index.heap import jit


def _element_pointer(context: Any, builder: Any, array_ty: Any, array: Any, index: Any) -> Any:
    view = context.make_array(array_ty)(context, builder, array)
    return cgutils.get_item_pointer(context, builder, array_ty, view, [index])


def _compare_and_swap_ir(typingctx: Any, array: Any, index: Any, expected: Any, new: Any) -> Any:
    """Atomically set int32 `array[index]` to `new` if it holds `expected`; whether it did (sequentially
    consistent: a full barrier, so what one thread wrote under a lock is seen by the next holder)."""
    sig = types.boolean(array, index, expected, new)

    def codegen(context: Any, builder: Any, signature: Any, args: Any) -> Any:
        pointer = _element_pointer(context, builder, signature.args[0], args[0], args[1])
        old, new_ = (context.cast(builder, args[i], signature.args[i], types.int32) for i in (2, 3))
        return builder.extract_value(builder.cmpxchg(pointer, old, new_, "seq_cst", "seq_cst"), 1)

    return sig, codegen


_compare_and_swap: Any = intrinsic(_compare_and_swap_ir)


def _take_ir(typingctx: Any, counter: Any) -> Any:
    """Atomically add 1 to int64 `counter[0]`; returns the value before: the next item a thread works on."""
    sig = types.int64(counter)

    def codegen(context: Any, builder: Any, signature: Any, args: Any) -> Any:
        pointer = _element_pointer(
            context, builder, signature.args[0], args[0], context.get_constant(types.intp, 0)
        )
        return builder.atomic_rmw("add", pointer, ir.Constant(ir.IntType(64), 1), "seq_cst")

    return sig, codegen


_take: Any = intrinsic(_take_ir)


@jit
def _lock(locks: np.ndarray, node: int) -> None:
    """Spin until this thread holds `node`'s lock (held for one list's write: microseconds)."""
    while not _compare_and_swap(locks, node, 0, 1):
        pass


@jit
def _unlock(locks: np.ndarray, node: int) -> None:
    _compare_and_swap(locks, node, 1, 0)


@jit
def _search_level(
    codes: np.ndarray,
    links: np.ndarray,
    offsets: np.ndarray,
    level_start: int,
    width: int,
    query: np.ndarray,
    entry: int,
    entry_d: int,
    ef: int,
    visited: np.ndarray,
    mark: int,
    found: np.ndarray,
) -> int:
    """The `ef` nodes nearest `query` a beam search of one level finds from `entry` (faiss's
    `search_neighbors_to_add`): their `_key`s sorted nearest first in `found`; returns how many. Node v's links
    on the level are the `width` from `links[offsets[v] + level_start]` (-1 ends them); `visited[v] == mark` marks the
    nodes met (the caller may mark some beforehand to keep them out)."""
    open_ = np.empty(4 * ef + width, np.int64)  # min-heap: the nodes to expand
    best = np.empty(ef + 1, np.int64)  # min-heap of negated keys: the ef nearest so far
    fresh = np.empty(width, np.int32)
    first = _key(entry_d, entry)
    heap.push(open_, 0, first)
    heap.push(best, 0, -first)
    n_open, n_best = 1, 1
    visited[entry] = mark
    while n_open > 0:
        nearest = open_[0]
        if nearest > -best[0]:
            break
        heap.pop(open_, n_open)
        n_open -= 1
        if n_open > 0:
            _prefetch(links, offsets[open_[0] & NODE] + level_start)
        start = offsets[nearest & NODE] + level_start
        n_fresh = fresh_neighbours(codes, links, start, width, visited, mark, fresh)
        open_ = room(open_, n_open, n_fresh)
        for t in range(n_fresh):
            v = fresh[t]
            key = _key(_squared_distance(codes[v], query), v)
            if n_best < ef or key < -best[0]:
                heap.push(open_, n_open, key)
                n_open += 1
                n_best = heap.push_bounded(best, n_best, -key, ef)
    for i in range(n_best):
        found[i] = -best[i]
    found[:n_best].sort()
    return n_best


@jit
def _select(codes: np.ndarray, keys: np.ndarray, n: int, size: int, out: np.ndarray, full: bool) -> int:
    """faiss's neighbour heuristic over the `n` candidates `keys` (nearest first): keep a candidate unless one
    already kept is nearer to it than the node is, up to `size`; all of them when fewer than `size`. `full`:
    then fill up to `size` with the nearest of those it rejected (faiss's `keep_max_size_level0`). Returns how
    many were kept into `out`."""
    if n < size:
        for i in range(n):
            out[i] = keys[i] & NODE
        return n
    kept, n_rejected = 0, 0
    rejected = np.empty(n if full else 0, np.int64)
    for i in range(n):
        v, d = keys[i] & NODE, keys[i] >> 32
        row = codes[v]
        good = True
        for j in range(kept):
            if _squared_distance(codes[out[j]], row) < d:
                good = False
                break
        if good:
            out[kept] = v
            kept += 1
            if kept >= size:
                return kept
        elif full:
            rejected[n_rejected] = v
            n_rejected += 1
    for i in range(min(n_rejected, size - kept)):
        out[kept] = rejected[i]
        kept += 1
    return kept


@jit
def _add_link(
    codes: np.ndarray,
    links: np.ndarray,
    begin: int,
    width: int,
    pruned: int,
    source: int,
    target: int,
    keys: np.ndarray,
    kept: np.ndarray,
    full: bool,
) -> None:
    """Link `source` to `target` in the list `links[begin : begin + width]` (faiss's `add_link`): into its first
    free slot, or, when full, the list and the target compete under the heuristic (`full`: and its fill) for
    `pruned` slots (the rest left free: faiss's headroom, so the next links do not prune again at once). The
    caller holds `source`'s lock."""
    end = begin + width
    for j in range(begin, end):
        if links[j] == target:
            return
    if links[end - 1] < 0:
        i = end
        while i > begin and links[i - 1] < 0:
            i -= 1
        links[i] = target
        return
    row = codes[source]
    for t in range(width):  # all of the list's codes on their way before the first distance
        prefetch_row(codes[links[begin + t]])
    keys[0] = _key(_squared_distance(codes[target], row), target)
    for t in range(width):
        v = links[begin + t]
        keys[t + 1] = _key(_squared_distance(codes[v], row), v)
    keys[: width + 1].sort()
    count = _select(codes, keys, width + 1, pruned, kept, full)
    for t in range(width):
        links[begin + t] = kept[t] if t < count else -1


@jit
def _insert_nodes(
    codes: np.ndarray,
    links: np.ndarray,
    offsets: np.ndarray,
    per_level: np.ndarray,
    levels: np.ndarray,
    nodes: np.ndarray,
    counter: np.ndarray,
    entry: int,
    top_level: int,
    ef: int,
    headroom: float,
    full_base: bool,
    full_headroom: float,
    locks: np.ndarray,
    visited: np.ndarray,
) -> None:
    """Insert the nodes of `nodes` that this thread takes from `counter` (faiss's `add_with_locks` each): their
    codes are in `codes` and their empty lists allocated; `entry` on `top_level` is the graph's entry point.
    `levels[v]` is the number of levels node v is on (faiss's). `full_base`: base-layer lists are filled up to
    their width with candidates the heuristic rejected, a pruned one up to its headroom `full_headroom`."""
    width0 = per_level[1] - per_level[0]
    found = np.empty(max(ef, 1), np.int64)
    keys = np.empty(width0 + 1, np.int64)
    chosen, kept = np.empty(width0, np.int32), np.empty(width0, np.int32)
    mark = 0
    while True:
        i = _take(counter)
        if i >= len(nodes):
            break
        node = nodes[i]
        query = codes[node]
        level = levels[node] - 1
        nearest, nearest_d = descend(codes, links, offsets, per_level, query, entry, top_level, level)
        for at in range(min(level, top_level), -1, -1):
            level_start, width = per_level[at], per_level[at + 1] - per_level[at]
            mark += 1
            visited[node] = mark  # never a candidate of itself
            n = _search_level(
                codes, links, offsets, level_start, width, query, nearest, nearest_d, ef, visited, mark, found
            )
            full = full_base and at == 0
            count = _select(codes, found, n, width, chosen, full)
            pruned = max(1, int(width - width * (full_headroom if full else headroom)))
            _lock(locks, node)
            for t in range(count):
                _add_link(
                    codes,
                    links,
                    offsets[node] + level_start,
                    width,
                    pruned,
                    node,
                    chosen[t],
                    keys,
                    kept,
                    full,
                )
            _unlock(locks, node)
            for t in range(count):
                other = chosen[t]
                _lock(locks, other)
                _add_link(
                    codes, links, offsets[other] + level_start, width, pruned, other, node, keys, kept, full
                )
                _unlock(locks, other)


@jit
def _shuffle_levels(order: np.ndarray, counts: np.ndarray, draws: np.ndarray) -> np.ndarray:
    """`order` (nodes by level, lowest first) regrouped highest level first, each level's nodes shuffled by
    faiss's swaps (`draws`: its generator's outputs, one a node, the highest level's first)."""
    out = np.empty_like(order)
    end, at, taken = len(order), 0, 0
    for level in range(len(counts) - 1, -1, -1):
        begin = end - counts[level]
        for j in range(begin, end):
            pick = j + np.int64(draws[taken] % np.uint32(end - j))
            taken += 1
            order[j], order[pick] = order[pick], order[j]
        out[at : at + end - begin] = order[begin:end]
        at += end - begin
        end = begin
    return out


def _faiss_order(levels: np.ndarray, first: int) -> np.ndarray:
    """The order faiss's `add` links new nodes `first`, `first + 1`, ... (on `levels`, 0 the base) in: highest
    level first, each level in a random order (faiss's permutation: its Mersenne Twister seeded 789, which
    numpy's legacy generator reproduces), so that rows arriving grouped are not linked group after group, and
    one thread builds the very graph faiss builds."""
    order = first + np.argsort(levels, kind="stable").astype(np.int64)
    draws = np.random.RandomState(789).randint(0, 2**32, size=len(levels), dtype=np.uint32)
    return _shuffle_levels(order, np.bincount(levels).astype(np.int64), draws)


def available(dim: int) -> bool:
    """Whether graphs of `dim`-d byte codes are linked here (where `graph_walk` runs), not by faiss."""
    return graph_walk.available() and dim % graph_walk.STEP == 0


def add(index: Any, codes: np.ndarray, threads: int | None = None, fill: bool = False) -> None:
    """Add rows given as byte codes (float32 values 0-255, as `ByteCodes.encode` gives them) to the faiss
    `IndexHNSWSQ` over byte codes `index` and link them, with `threads` threads (default: faiss's OpenMP setting
    for this thread). Nodes are linked from the highest level down, as faiss does; one that rises above the
    graph's top level is linked alone and becomes the entry point.

    `fill`: base-layer lists are filled up to their width with the nearest candidates the neighbour heuristic
    set aside, and a pruned list up to faiss's headroom (`prune_headroom`), so that the links that follow do not
    prune it again at once. faiss's `keep_max_size_level0` on `index` fills as faiss does: pruned lists too are
    filled to their width, and so pruned again by every later link (~2.4x the linking time; docs/INDEX.md)."""
    n = len(codes)
    if n == 0:
        return
    hnsw, storage = index.hnsw, faiss.downcast_index(index.storage)
    assert isinstance(storage, faiss.IndexScalarQuantizer)  # byte codes: one byte a dimension
    first = int(index.ntotal)
    storage.add(np.ascontiguousarray(codes, dtype=np.float32))
    index.ntotal = storage.ntotal
    hnsw.prepare_level_tab(n, False)
    total, dim = int(index.ntotal), int(index.d)
    arrays = (
        faiss.rev_swig_ptr(storage.codes.data(), total * dim).reshape(total, dim),
        faiss.rev_swig_ptr(hnsw.neighbors.data(), hnsw.neighbors.size()),
        faiss.rev_swig_ptr(hnsw.offsets.data(), total + 1).view(np.int64),
        faiss.vector_to_array(hnsw.cum_nneighbor_per_level).astype(np.int64),
        faiss.rev_swig_ptr(hnsw.levels.data(), total),
    )
    levels = arrays[4]
    order = _faiss_order(levels[first:] - 1, first)
    entry, top = int(hnsw.entry_point), int(hnsw.max_level)
    locks = np.zeros(total, np.int32)
    headroom = float(np.clip(hnsw.prune_headroom, 0.0, 0.5))
    faiss_full = bool(index.keep_max_size_level0)
    settings = (
        int(hnsw.efConstruction),
        headroom,
        fill or faiss_full,
        0.0 if faiss_full else headroom,
        locks,
    )

    def insert(nodes: np.ndarray, workers: int) -> None:
        counter = np.zeros(1, np.int64)
        run = lambda: _insert_nodes(  # noqa: E731
            *arrays, nodes, counter, entry, top, *settings, np.zeros(total, np.int32)
        )
        if workers <= 1 or len(nodes) < 2:
            run()
            return
        pool = [threading.Thread(target=run, name="m3search-link") for _ in range(workers)]
        for thread in pool:
            thread.start()
        for thread in pool:
            thread.join()

    done = 0
    if entry < 0:
        entry, top, done = int(order[0]), int(levels[order[0]]) - 1, 1
    while done < n and levels[order[done]] - 1 > top:  # rises above the top: the new entry point
        insert(order[done : done + 1], 1)
        entry, top, done = int(order[done]), int(levels[order[done]]) - 1, done + 1
    insert(order[done:], faiss.omp_get_max_threads() if threads is None else threads)
    hnsw.entry_point, hnsw.max_level = entry, top


def compile_graph() -> None:
    """Compile the insertion and the walk (`graph_walk`), or load them from numba's cache (~0.5 s), with the
    argument types of every graph's: the first compile after an install takes ~10 s; `scripts/install.sh` does
    it, and a server starts it in the background, so that no query or write waits for it. Nothing to do where
    they are not used (`available`)."""
    if not available(graph_walk.STEP):
        return
    rows = np.random.default_rng(0).integers(0, 256, (64, graph_walk.STEP)).astype(np.float32)
    sq: Any = faiss.ScalarQuantizer  # its code types are ints, which faiss's stubs do not say
    index = faiss.IndexHNSWSQ(graph_walk.STEP, sq.QT_8bit_direct, 4, faiss.METRIC_L2)
    index.train(rows)
    add(index, rows, threads=1)
    graph_walk.ByteGraphWalk(index).search(rows[0], np.float32(1), 1, 4)
