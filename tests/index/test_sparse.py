"""Sparse inverted index: exact lexical scores (the reference `lexical_score`), exact masked top-k with and
without MaxScore pruning."""

from __future__ import annotations

import numpy as np
import pytest

from m3search.index import sparse as sparse_module
from m3search.index.sparse import SparseIndex
from m3search.scoring import lexical_score


def random_rows(n: int, seed: int, vocab: int = 300, zipf: bool = False) -> list[dict[int, float]]:
    rng = np.random.default_rng(seed)
    p = None
    if zipf:
        p = 1 / np.arange(1, vocab + 1)
        p /= p.sum()
    out = []
    for _ in range(n):
        tokens = np.unique(rng.choice(vocab, int(rng.integers(1, 15)), p=p))
        out.append({int(t): float(rng.uniform(0.01, 1)) for t in tokens})
    return out


def as_row(d: dict[int, float]):
    return np.array(list(d), np.int64), np.array(list(d.values()), np.float32)


def brute(query, docs, k, allowed=None):
    ids = [i for i in range(len(docs)) if set(query) & set(docs[i]) and (allowed is None or allowed[i])]
    return sorted(ids, key=lambda i: (-lexical_score(query, docs[i]), i))[:k]


def test_scores_equal_the_reference_and_survive_save_load(tmp_path):
    docs = random_rows(400, 0)
    index = SparseIndex.from_rows([as_row(d) for d in docs])
    index.save(tmp_path)
    loaded = SparseIndex.load(tmp_path, len(docs))
    rows = np.arange(len(docs))
    for query in random_rows(20, 1):
        expected = np.array([lexical_score(query, d) for d in docs])
        np.testing.assert_allclose(loaded.score_rows(as_row(query), rows), expected, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("prune_at", [10**9, 0])  # never prune / check before every list
@pytest.mark.parametrize("masked", [False, True])
def test_top_k_is_exact(monkeypatch, prune_at, masked):
    monkeypatch.setattr(sparse_module, "PRUNE_CHECK_LENGTH", prune_at)
    docs = random_rows(2000, 2, vocab=500, zipf=True)
    index = SparseIndex.from_rows([as_row(d) for d in docs])
    allowed = (np.arange(len(docs)) % 3 == 0) if masked else None
    for query in random_rows(30, 3, vocab=500, zipf=True):
        rows, scores = index.search(as_row(query), 10, allowed)
        expected = brute(query, docs, 10, allowed)
        assert len(rows) == len(expected)
        np.testing.assert_allclose(scores, [lexical_score(query, docs[i]) for i in expected], rtol=1e-5)
        np.testing.assert_allclose(scores, [lexical_score(query, docs[i]) for i in rows], rtol=1e-5)


def test_unknown_tokens_match_nothing():
    index = SparseIndex.from_rows([as_row(d) for d in random_rows(50, 4)])
    assert index.search(as_row({10_000: 1.0}), 5)[0].size == 0


def test_coo_round_trip():
    docs = random_rows(50, 4)
    index = SparseIndex.from_rows([as_row(d) for d in docs])
    again = SparseIndex.from_coo(50, *index.to_coo())
    for name in ("terms", "indptr", "rows", "weights", "term_max"):
        np.testing.assert_array_equal(getattr(index, name), getattr(again, name))
