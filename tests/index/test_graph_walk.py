"""The compiled walk of byte-code graphs: its distance is exact, it finds what faiss's walk of the same graph
finds, from several threads and across the wrap of its visited marks, and `DenseIndex` uses it where it can."""

from __future__ import annotations

import threading

import faiss
import numba
import numpy as np
import pytest

from m3search.index import graph_build, graph_walk
from m3search.index.dense import ByteCodes, DenseIndex, HNSWParams, build_ann
from m3search.index.graph_walk import ByteGraphWalk

DIM = 64
PARAMS = HNSWParams(m=16, ef_construction=64, min_rows=100)


def unit_rows(n: int, seed: int, dim: int = DIM) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centers = rng.standard_normal((16, dim))
    x = centers[rng.integers(0, 16, n)] + 0.6 * rng.standard_normal((n, dim))
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


@pytest.fixture(scope="module")
def graph() -> tuple[faiss.Index, ByteCodes, np.ndarray]:
    """A byte-code graph over 6,000 rows, its codes and 60 queries."""
    index = build_ann(unit_rows(6_000, 1), "hnsw-sq8", PARAMS)
    codes = ByteCodes.of(index)
    assert codes is not None
    return index, codes, unit_rows(60, 2)


@numba.njit
def _distances(codes: np.ndarray, query: np.ndarray) -> np.ndarray:
    out = np.empty(len(codes), np.int32)
    for i in range(len(codes)):
        out[i] = graph_walk._squared_distance(codes[i], query)
    return out


needs_avx2 = pytest.mark.skipif(not graph_walk.available(), reason="the compiled walk needs x86-64 with AVX2")


@needs_avx2
@pytest.mark.parametrize("dim", [32, 1024])
def test_the_distance_is_the_exact_squared_distance_of_the_bytes(dim: int) -> None:
    rng = np.random.default_rng(dim)
    codes = rng.integers(0, 256, (50, dim), dtype=np.uint8)
    codes[0] = 255  # the largest distance a width allows
    query = np.zeros(dim, np.uint8)
    expected = ((codes.astype(np.int64) - query.astype(np.int64)) ** 2).sum(axis=1)
    np.testing.assert_array_equal(_distances(codes, query), expected)


@needs_avx2
def test_the_walk_finds_what_faiss_finds_in_the_same_graph(graph) -> None:
    """From a float query, coded by the walk as faiss codes it: the same distances as faiss's walk, exact."""
    index, codes, queries = graph
    walk = ByteGraphWalk(index)
    coded = codes.encode(queries)
    for ef in (16, 64):
        params = faiss.SearchParametersHNSW()
        params.efSearch = ef
        found, _ = index.search(coded, 10, params=params)
        same = 0
        for q, q_codes, faiss_dist in zip(queries, coded, found):
            nodes, dists = walk.search(q, codes.scale, 10, ef)
            assert np.all(np.diff(dists) >= 0), "nearest first"
            # the same distances: only nodes at equal distance may be met in another order
            same += np.array_equal(dists, faiss_dist.astype(np.int32))
            exact = ((walk.codes[nodes].astype(np.int64) - q_codes.astype(np.int64)) ** 2).sum(axis=1)
            np.testing.assert_array_equal(dists, exact)
        assert same >= 0.95 * len(queries), f"efSearch {ef}: {same} of {len(queries)} walks as faiss's"


@needs_avx2
def test_the_walk_returns_rows_through_the_node_order(graph) -> None:
    """With a node -> row `order`, the walk returns the rows of the nodes it returns without one, and a row
    mask is read through the same order."""
    index, codes, queries = graph
    walk = ByteGraphWalk(index)
    order = np.random.default_rng(3).permutation(index.ntotal).astype(np.int64)
    allowed = np.random.default_rng(4).random(index.ntotal) < 0.5
    for q in queries[:20]:
        nodes, dists = walk.search(q, codes.scale, 10, 32)
        rows, row_dists = walk.search(q, codes.scale, 10, 32, order=order)
        np.testing.assert_array_equal(rows, order[nodes])
        np.testing.assert_array_equal(row_dists, dists)
        kept, _ = walk.search(q, codes.scale, 10, 32, allowed, order)
        assert allowed[kept].all() and len(kept) == 10
        assert allowed[order[walk.search(q, codes.scale, 10, 32, allowed[order])[0]]].all()


@needs_avx2
def test_walks_from_several_threads_and_past_the_marks_wrap_agree(graph) -> None:
    index, codes, queries = graph
    walk = ByteGraphWalk(index)
    first = [walk.search(q, codes.scale, 10, 32)[0] for q in queries]
    for _ in range(5):  # 300 walks: the 255 visited marks wrap
        for q, nodes in zip(queries, first):
            np.testing.assert_array_equal(walk.search(q, codes.scale, 10, 32)[0], nodes)
    results: dict[int, list[np.ndarray]] = {}

    def run(t: int) -> None:
        results[t] = [walk.search(q, codes.scale, 10, 32)[0] for q in queries for _ in range(3)][::3]

    threads = [threading.Thread(target=run, args=(t,)) for t in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for t in range(3):
        for nodes, expected in zip(results[t], first):
            np.testing.assert_array_equal(nodes, expected)


@needs_avx2
def test_a_walk_may_return_fewer_nodes_than_asked_for() -> None:
    index = build_ann(unit_rows(120, 3), "hnsw-sq8", PARAMS)
    nodes, dists = ByteGraphWalk(index).search(unit_rows(1, 4)[0], ByteCodes.of(index).scale, 200, 200)
    assert sorted(nodes.tolist()) == list(range(120)) and len(dists) == 120


def test_dense_index_walks_compiled_where_it_can_and_faiss_elsewhere() -> None:
    """Byte-code graphs of a width the kernel takes are walked compiled (on CPUs that run it), with the same
    hits as faiss's walk; other widths and float graphs by faiss."""
    vectors = unit_rows(3_000, 5)
    queries = unit_rows(40, 6)
    index = DenseIndex.build(vectors, "hnsw-sq8", PARAMS)
    assert (index._graph_codes()[1] is not None) == graph_walk.available()
    by_faiss = DenseIndex(index.vectors, index.ann, index.params, index.order, compiled_walk=False)
    assert by_faiss._graph_codes() == (ByteCodes.of(index.ann), None)
    agree = 0
    for q in queries:
        rows, scores = index.search(q, 10)
        np.testing.assert_array_equal(scores, index.score_rows(q, rows))
        agree += np.array_equal(rows, by_faiss.search(q, 10)[0])
    assert agree >= 0.95 * len(queries)
    odd = DenseIndex.build(unit_rows(3_000, 7, dim=48), "hnsw-sq8", PARAMS)
    assert odd._graph_codes() == (ByteCodes.of(odd.ann), None)
    floats = DenseIndex.build(vectors, "hnsw", PARAMS)
    assert floats._graph_codes() == (None, None)
    found, found_by_codes = (
        sum(len(set(walked.search(q, 10)[0]) & set(np.argsort(-vectors @ q)[:10])) for q in queries)
        for walked in (floats, index)
    )
    assert found >= found_by_codes - 0.02 * 10 * len(queries) and found >= 0.9 * 10 * len(queries)


@needs_avx2
def test_the_graph_compiled_ahead_serves_builds_and_loaded_graphs_without_compiling_again(tmp_path) -> None:
    """`compile_graph` (run at install and at server start) compiles the signatures a segment's build links
    with and a saved, reloaded segment's walk uses: neither compiles anything."""
    graph_build.compile_graph()
    compiled = len(graph_walk._walk.signatures), len(graph_build._insert_nodes.signatures)
    built = DenseIndex.build(unit_rows(1_000, 8), "hnsw-sq8", PARAMS)
    built.save(tmp_path)
    loaded = DenseIndex.load(tmp_path, PARAMS)
    rows, _ = loaded.search(unit_rows(1, 9)[0], 10)
    assert len(rows) == 10 and loaded._graph_codes()[1] is not None
    assert (len(graph_walk._walk.signatures), len(graph_build._insert_nodes.signatures)) == compiled


@pytest.mark.parametrize("walk_order", [True, False], ids=["walk order", "row order"])
def test_filtered_walks_keep_only_allowed_rows_as_faiss_does(walk_order: bool) -> None:
    """A filter is applied during the walk (the walk still goes through rows it excludes), the same way by the
    compiled walk and faiss's, with nodes stored in walk order or in row order."""
    params = HNSWParams(m=16, ef_construction=64, min_rows=100, exact_max_rows=0, exact_max_fraction=0.0)
    vectors = unit_rows(4_000, 10)
    index = DenseIndex.build(vectors, "hnsw-sq8", params, walk=walk_order)
    assert (index.order is not None) == walk_order
    by_faiss = DenseIndex(index.vectors, index.ann, index.params, index.order, compiled_walk=False)
    assert by_faiss._graph_codes() == (ByteCodes.of(index.ann), None)
    allowed = np.random.default_rng(11).random(len(vectors)) < 0.3
    queries = unit_rows(40, 12)
    agree = found = 0
    for q in queries:
        rows, scores = index.search(q, 10, allowed)
        assert allowed[rows].all() and len(rows) == 10
        np.testing.assert_array_equal(scores, index.score_rows(q, rows))
        agree += np.array_equal(rows, by_faiss.search(q, 10, allowed)[0])
        exact = np.flatnonzero(allowed)[np.argsort(-(vectors[allowed] @ q))[:10]]
        found += len(set(rows) & set(exact))
    assert agree >= 0.95 * len(queries)
    assert found >= 0.95 * 10 * len(queries)
