"""Dense index: HNSW (float32 and SQ8) against exact search on clustered vectors, filters during the search."""

from __future__ import annotations

import faiss
import numpy as np
import pytest

from m3search.index.dense import DenseIndex, HNSWParams, build_ann
from m3search.index.topk import top_k

DIM = 32


def clustered(n: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centers = rng.standard_normal((20, DIM))
    x = centers[rng.integers(0, 20, n)] + 0.5 * rng.standard_normal((n, DIM))
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


@pytest.fixture(scope="module")
def data():
    return clustered(3000, 0), clustered(30, 1)


@pytest.mark.parametrize("kind", ["hnsw", "hnsw-sq8"])
def test_hnsw_recall_against_exact(data, kind):
    vectors, queries = data
    params = HNSWParams(min_rows=100)
    index = DenseIndex(vectors, build_ann(vectors, kind, params), params)
    assert index.ann is not None
    exact = DenseIndex(vectors)
    hits = 0
    for q in queries:
        rows, scores = index.search(q, 10)
        truth, _ = exact.search(q, 10)
        hits += len(set(rows) & set(truth))
        np.testing.assert_allclose(scores, vectors[rows] @ q, atol=1e-5 if kind == "hnsw" else 1e-6)
        assert np.all(np.diff(scores) <= 1e-6)
    assert hits / (10 * len(queries)) >= 0.95


def test_a_deep_sq8_search_orders_its_best_rows_exactly_and_fetches_fewer(data, monkeypatch):
    """A hybrid first stage asks for its depth with `exact_top` = the query's k: the SQ8 graph fetches depth +
    (refine - 1) · k rows by the codes instead of depth · refine, re-ranked by the float vectors; the list is
    still the depth's best by exact score, best first, and its top k at least as good as a k-deep search's (the
    same graph walk, more of its list re-ranked)."""
    vectors, queries = data
    params = HNSWParams(min_rows=100, refine=3)
    index = DenseIndex(vectors, build_ann(vectors, "hnsw-sq8", params), params)
    fetched = []
    search = type(index.ann).search
    monkeypatch.setattr(
        type(index.ann), "search", lambda self, x, n, **kw: fetched.append(n) or search(self, x, n, **kw)
    )
    for q in queries[:10]:
        rows, scores = index.search(q, 100, exact_top=10)
        assert fetched[-1] == 100 + 2 * 10 and len(rows) == 100
        np.testing.assert_allclose(scores, vectors[rows] @ q, atol=1e-6)
        assert np.all(np.diff(scores) <= 1e-6)
        _, top = index.search(q, 10)
        assert fetched[-1] == 30
        assert np.all(scores[:10] >= top - 1e-6)


def test_small_sets_get_no_graph(data):
    assert build_ann(data[0][:50], "hnsw", HNSWParams(min_rows=100)) is None
    assert build_ann(data[0], "flat", HNSWParams(min_rows=1)) is None


@pytest.mark.parametrize("fraction", [0.5, 0.05, 0.001])
def test_filtered_search_returns_the_exact_allowed_top_k(data, fraction):
    vectors, queries = data
    params = HNSWParams(min_rows=100, exact_max_rows=20, exact_max_fraction=0.002)
    index = DenseIndex(vectors, build_ann(vectors, "hnsw", params), params)
    rng = np.random.default_rng(2)
    allowed = rng.random(len(vectors)) < fraction
    allowed[:2] = True
    found = 0
    for q in queries:
        rows, _ = index.search(q, 10, allowed)
        assert allowed[rows].all() and len(rows) == min(10, allowed.sum())
        truth, _ = top_k(vectors @ q, 10, allowed)
        found += len(set(rows) & set(truth)) / len(truth)
    assert found / len(queries) >= 0.95


@pytest.mark.parametrize("kind", ["hnsw", "hnsw-sq8"])
def test_the_graph_built_over_float16_is_kept_over_the_kinds_own_storage(tmp_path, data, kind):
    """The graph is linked over float16 codes (a cheaper build), then searched over the kind's storage: float32
    vectors or SQ8 codes, one per row, which a saved and loaded index keeps."""
    vectors, queries = data
    params = HNSWParams(min_rows=100)
    ann = build_ann(vectors, kind, params)
    storage = faiss.downcast_index(ann.storage)
    assert ann.ntotal == storage.ntotal == len(vectors)
    assert storage.sa_code_size() == (4 * DIM if kind == "hnsw" else DIM)
    assert ann.hnsw.levels.size() == len(vectors) and ann.hnsw.efConstruction == params.ef_construction
    faiss.write_index(ann, str(tmp_path / "graph.faiss"))
    loaded = faiss.read_index(str(tmp_path / "graph.faiss"))
    assert faiss.downcast_index(loaded.storage).sa_code_size() == storage.sa_code_size()
    assert np.array_equal(loaded.search(queries, 10)[1], ann.search(queries, 10)[1])


def test_save_and_load(tmp_path, data):
    vectors = data[0]
    params = HNSWParams(min_rows=100)
    index = DenseIndex(vectors, build_ann(vectors, "hnsw-sq8", params), params)
    index.save(tmp_path)
    loaded = DenseIndex.load(tmp_path, params)
    assert isinstance(loaded.vectors, np.memmap)
    q = data[1][0]
    assert loaded.search(q, 5)[0].tolist() == index.search(q, 5)[0].tolist()


def test_a_row_scores_the_same_bits_whichever_rows_it_is_scored_with(tmp_path, data):
    """Every exact dense score comes from one kernel: a whole scan, a filtered scan and a re-score of a few
    candidates give a row bit-identical scores (a BLAS product's rounding depends on its batch), memory-mapped
    too; a row number past the end is an error, not a read beyond the vectors."""
    vectors, queries = data
    DenseIndex(vectors).save(tmp_path)
    index = DenseIndex.load(tmp_path)
    rng = np.random.default_rng(3)
    for q in queries[:5]:
        whole = index.score_rows(q)
        np.testing.assert_allclose(whole, vectors.astype(np.float64) @ q.astype(np.float64), atol=1e-6)
        rows = rng.choice(len(vectors), 37, replace=False)
        assert np.array_equal(index.score_rows(q, rows), whole[rows])
        assert np.array_equal(index.score_rows(q, rows[:1]), whole[rows[:1]])
        allowed = np.zeros(len(vectors), bool)
        allowed[rows] = True
        found, scores = index.search(q, 10, allowed)
        assert np.array_equal(scores, whole[found])
    with pytest.raises(IndexError):
        index.score_rows(queries[0], np.array([len(vectors)]))
