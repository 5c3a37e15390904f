"""Sparse inverted index: exact lexical scores (the reference `lexical_score`) and masked top-k."""

from __future__ import annotations

import numpy as np

from m3search.index.sparse import SparseIndex
from m3search.scoring import lexical_score


def random_rows(n: int, seed: int) -> list[dict[int, float]]:
    rng = np.random.default_rng(seed)
    return [{int(t): float(rng.uniform(0.01, 1)) for t in rng.choice(300, int(rng.integers(0, 12)), replace=False)}
            for _ in range(n)]


def as_row(d: dict[int, float]):
    return np.array(list(d), np.int64), np.array(list(d.values()), np.float32)


def test_scores_equal_the_reference_and_survive_save_load(tmp_path):
    docs = random_rows(400, 0)
    index = SparseIndex.from_rows([as_row(d) for d in docs])
    index.save(tmp_path)
    loaded = SparseIndex.load(tmp_path, len(docs))
    for query in random_rows(20, 1):
        scores, matched = loaded.scores(as_row(query))
        expected = np.array([lexical_score(query, d) for d in docs])
        np.testing.assert_allclose(scores, expected, rtol=1e-5, atol=1e-6)
        assert (matched == np.array([bool(set(query) & set(d)) for d in docs])).all()


def test_masked_top_k_and_unknown_tokens():
    docs = random_rows(300, 2)
    index = SparseIndex.from_rows([as_row(d) for d in docs])
    query = random_rows(1, 3)[0]
    allowed = np.arange(300) % 3 == 0
    rows, scores, _ = index.search(as_row(query), 5, allowed)
    expected = sorted((i for i in range(300) if allowed[i] and set(query) & set(docs[i])),
                      key=lambda i: -lexical_score(query, docs[i]))[:5]
    assert rows.tolist() == expected
    assert index.search(as_row({10_000: 1.0}), 5)[0].size == 0


def test_coo_round_trip():
    docs = random_rows(50, 4)
    index = SparseIndex.from_rows([as_row(d) for d in docs])
    again = SparseIndex.from_coo(50, *index.to_coo())
    for name in ("terms", "indptr", "rows", "weights"):
        np.testing.assert_array_equal(getattr(index, name), getattr(again, name))
