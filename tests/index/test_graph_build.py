"""The compiled HNSW insertion: one thread links the graph faiss's `add` links, several threads a sound graph
that finds what faiss's does, across many calls as a background build makes them, and `build_ann` uses it."""

from __future__ import annotations

from dataclasses import replace

import faiss
import numpy as np
import pytest
from scipy.sparse import csr_matrix
from scipy.sparse.csgraph import breadth_first_order

from m3search.index import graph_build
from m3search.index.dense import ByteCodes, HNSWParams, _new_graph, build_ann
from m3search.index.graph_walk import ByteGraphWalk
from tests.index.test_graph_walk import unit_rows

PARAMS = HNSWParams(m=16, ef_construction=64, min_rows=100)

pytestmark = pytest.mark.skipif(
    not graph_build.available(64), reason="the compiled insertion needs x86-64 AVX2"
)


def empty_graph(vectors: np.ndarray) -> tuple[faiss.Index, ByteCodes]:
    codes = ByteCodes.fit(vectors)
    assert codes is not None
    return _new_graph(vectors, PARAMS, codes), codes


def link_lists(index: faiss.Index) -> list[list[list[int]]]:
    """Each node's neighbour list on each of its levels (order kept)."""
    hnsw = index.hnsw
    offsets, links = (
        faiss.vector_to_array(hnsw.offsets).astype(np.int64),
        faiss.vector_to_array(hnsw.neighbors),
    )
    per_level = faiss.vector_to_array(hnsw.cum_nneighbor_per_level)
    levels = faiss.vector_to_array(hnsw.levels)
    return [
        [[int(v) for v in links[offsets[i] + per_level[at] : offsets[i] + per_level[at + 1]] if v >= 0] for at in range(levels[i])]
        for i in range(index.ntotal)
    ]  # fmt: skip


def reachable(index: faiss.Index) -> int:
    """How many nodes a walk of the base layer from the entry point can reach."""
    base = [per_level[0] for per_level in link_lists(index)]
    indptr = np.cumsum([0] + [len(linked) for linked in base])
    adjacency = csr_matrix((np.ones(indptr[-1]), np.concatenate(base), indptr), shape=(len(base),) * 2)
    return len(breadth_first_order(adjacency, index.hnsw.entry_point, return_predecessors=False))


def recall(index: faiss.Index, codes: ByteCodes, vectors: np.ndarray, queries: np.ndarray, ef: int) -> float:
    truth = np.argsort(-(queries @ vectors.T), axis=1)[:, :10]
    walk = ByteGraphWalk(index)
    found = [walk.search(q, codes.scale, 10, ef)[0] for q in queries]
    return float(np.mean([len(set(f) & set(t)) / 10 for f, t in zip(found, truth)]))


@pytest.mark.parametrize("full", [True, False], ids=["full lists", "headroom"])
def test_one_thread_links_the_graph_faiss_links(full):
    """Row by row with one thread each, the compiled insertion and faiss's `add` build the same graph: the
    same levels and entry point, and the same neighbours for all but the few nodes where equal distances were
    ordered otherwise; with base-layer lists kept full (`keep_max_size_level0`) and without (a pruned list
    then keeps faiss's headroom)."""
    vectors = unit_rows(1500, 0)
    ours, codes = empty_graph(vectors)
    theirs, _ = empty_graph(vectors)
    ours.keep_max_size_level0 = theirs.keep_max_size_level0 = full
    threads = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(1)
    try:
        for i in range(len(vectors)):
            row = codes.encode(vectors[i : i + 1])
            graph_build.add(ours, row, threads=1)
            theirs.add(row)
    finally:
        faiss.omp_set_num_threads(threads)
    assert (ours.hnsw.entry_point, ours.hnsw.max_level) == (theirs.hnsw.entry_point, theirs.hnsw.max_level)
    assert np.array_equal(faiss.vector_to_array(ours.hnsw.levels), faiss.vector_to_array(theirs.hnsw.levels))
    same = [
        sorted(map(sorted, a)) == sorted(map(sorted, b)) for a, b in zip(link_lists(ours), link_lists(theirs))
    ]
    assert np.mean(same) >= 0.99


def test_faiss_order_puts_higher_levels_first_and_shuffles_each_level():
    levels = np.array([0, 1, 0, 0, 2, 1, 0, 0, 0, 0] * 20, np.int32)
    order = graph_build._faiss_order(levels, 100)
    assert sorted(order.tolist()) == list(range(100, 300))
    assert np.all(np.diff(levels[order - 100]) <= 0)  # highest level first
    base = order[levels[order - 100] == 0]
    assert not np.all(np.diff(base) > 0)  # a level's nodes in a shuffled order, not as they arrived


@pytest.mark.parametrize("threads", [1, 2, 4])
def test_threads_build_a_sound_graph_that_finds_what_faiss_finds(threads):
    """Linked by several threads at once in blocks (as a background build makes its calls), every list holds
    distinct nodes other than its own, of that level, nodes are reachable from the entry point (which is on the
    top level) as in faiss's graph, and the walk finds the true neighbours as well as in faiss's graph of the same rows."""
    vectors, queries = unit_rows(6000, 1), unit_rows(200, 2)
    ours, codes = empty_graph(vectors)
    theirs, _ = empty_graph(vectors)
    for start in range(0, len(vectors), 700):
        block = codes.encode(vectors[start : start + 700])
        graph_build.add(ours, block, threads=threads)
        theirs.add(block)
    assert ours.ntotal == len(vectors)
    levels = faiss.vector_to_array(ours.hnsw.levels)
    assert levels[ours.hnsw.entry_point] == ours.hnsw.max_level + 1 == levels.max()
    lists = link_lists(ours)
    for node, per_level in enumerate(lists):
        for at, linked in enumerate(per_level):
            assert node not in linked and len(set(linked)) == len(linked)
            assert all(levels[v] > at for v in linked)
    # pruning a full list may orphan a node in either builder (faiss's graph here: 8 of 6,000)
    assert reachable(ours) >= max(0.995 * len(vectors), reachable(theirs) - 6)
    for ef in (16, 64):
        assert recall(ours, codes, vectors, queries, ef) >= recall(theirs, codes, vectors, queries, ef) - 0.01


def test_build_ann_links_byte_codes_with_the_compiled_insertion(monkeypatch):
    """`build_ann` links byte-code graphs here (not with faiss's `add`), and the graph answers."""
    calls = []
    add = graph_build.add
    monkeypatch.setattr(graph_build, "add", lambda *a, **k: calls.append(len(a[1])) or add(*a, **k))
    vectors, queries = unit_rows(3000, 3), unit_rows(50, 4)
    index = build_ann(vectors, "hnsw-sq8", PARAMS)
    assert sum(calls) == len(vectors) == index.ntotal
    codes = ByteCodes.of(index)
    assert codes is not None and recall(index, codes, vectors, queries, 256) >= 0.93  # the codes allow 0.96


def structured_rows(n: int, seed: int, dim: int = 64, intrinsic: int = 16) -> np.ndarray:
    """Unit rows near a `intrinsic`-dimensional subspace, as text embeddings lie (unlike `unit_rows`' clusters
    of isotropic noise)."""
    rng = np.random.default_rng(seed)
    basis = np.random.default_rng(99).standard_normal((intrinsic, dim))
    x = rng.standard_normal((n, intrinsic)) @ basis + 0.2 * rng.standard_normal((n, dim))
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def test_full_base_layer_lists_hold_more_links():
    """With faiss's `keep_max_size_level0` the compiled insertion fills base-layer lists with the nearest
    candidates the heuristic rejected, as faiss's `add` does, and so does `fill` (a pruned list up to the
    headroom): more links per node. `build_ann` fills them unless `HNSWParams.fill_base_layer` is off."""
    vectors = unit_rows(6000, 5)
    degrees = []
    for faiss_full, fill in ((False, False), (True, False), (False, True)):
        graph, codes = empty_graph(vectors)
        graph.keep_max_size_level0 = faiss_full
        graph_build.add(graph, codes.encode(vectors), threads=2, fill=fill)
        degrees.append(np.mean([len(lists[0]) for lists in link_lists(graph)]))
    assert degrees[1] >= 0.9 * 2 * PARAMS.m and degrees[2] >= 0.75 * 2 * PARAMS.m > degrees[0]
    for fill in (True, False):
        degree = np.mean(
            [
                len(lists[0])
                for lists in link_lists(build_ann(vectors, "hnsw-sq8", replace(PARAMS, fill_base_layer=fill)))
            ]
        )
        assert (degree >= 0.75 * 2 * PARAMS.m) == fill


@pytest.mark.parametrize("threads", [1, 2])
def test_filled_lists_find_more_on_rows_like_embeddings(threads):
    """On rows near a low-dimensional subspace, filled base-layer lists give the walk more recall@10 at a short
    candidate list than the heuristic's lists alone (real text embeddings: docs/INDEX.md), and the graph is
    sound."""
    vectors, queries = structured_rows(6000, 0), structured_rows(300, 1)
    found = []
    for fill in (False, True):
        graph, codes = empty_graph(vectors)
        for start in range(0, len(vectors), 2000):
            graph_build.add(graph, codes.encode(vectors[start : start + 2000]), threads=threads, fill=fill)
        assert reachable(graph) >= 0.995 * len(vectors)
        for node, per_level in enumerate(link_lists(graph)):
            assert node not in per_level[0] and len(set(per_level[0])) == len(per_level[0])
        found.append(recall(graph, codes, vectors, queries, 16))
    assert found[1] >= found[0] + 0.01  # +0.017-0.03 over seeds and threads
