"""Fusion through a collection: min-max scaling (BM25 scores are tens, cosines below 1), the sparse mode's
per-query signal (`auto` = `signal`), the reference formula (`none`), and a sparse mode with nothing to say.

With e5 dense cosines (a narrow band below 1) and BM25 scores (tens), the reference weighted mean ranks nearly
like BM25 alone whatever the weights; normalized, a 0.9/0.1 dense/sparse weighting ranks mostly by dense.
"""

from __future__ import annotations

import numpy as np
import pytest
from scipy.stats import spearmanr

from m3search import Collection
from m3search.encoders import BM25Encoder, CompositeEncoder
from m3search.eval.datasets import load_beir, slice_task
from m3search.scoring import hybrid_scores
from m3search.search.fusion import FUSION_WEIGHTS, FUSIONS, minmax

QUERIES = 5


@pytest.fixture(scope="module")
def scifact_sample(shared_data):
    """5 SciFact test queries and 40 abstracts (their judged ones and others)."""
    return slice_task(load_beir(shared_data / "scifact", "test"), max_queries=QUERIES, max_docs=40)


@pytest.fixture(scope="module")
def bm25_collection(tmp_path_factory, e5_encoder, scifact_sample):
    encoder = CompositeEncoder({"dense": e5_encoder, "sparse": BM25Encoder(e5_encoder.tokenizer)})
    collection = Collection.create(tmp_path_factory.mktemp("e5-bm25") / "c", encoder=encoder, cache=False)
    collection.upsert([{"id": d.id, "text": d.full_text} for d in scifact_sample.corpus.values()])
    collection.compact()
    yield collection
    collection.close()


def _ranked(hits):
    return [h.id for h in hits]


def _agreement(hits, kind):
    """Spearman correlation of the fused scores with one mode's scores."""
    return spearmanr([h.score for h in hits], [h.scores[kind] for h in hits]).statistic


def test_bm25_sparse_no_longer_swamps_dense(bm25_collection, scifact_sample):
    assert bm25_collection.config.sparse_source == "bm25"
    n = len(scifact_sample.corpus)  # every document is a dense candidate, so min-max runs over all of them
    differs = 0
    for query in scifact_sample.queries.values():
        options = {"mode": "dense+sparse", "weights": (0.9, 0.1, 0.0)}
        raw = bm25_collection.search(query, n, normalize="none", **options)
        auto = bm25_collection.search(query, n, normalize="minmax", **options)
        assert len(raw) == len(auto) == n
        # none: the reference formula on raw scores, which orders nearly as BM25 alone
        for hit in raw:
            reference = 0.9 * hit.scores["dense"] + 0.1 * hit.scores["sparse"]
            assert hit.score == pytest.approx(reference, rel=1e-5)
        assert _agreement(raw, "sparse") > 0.95  # whatever the weights: BM25 alone, nearly
        # minmax: each mode rescaled over the candidates, then the weighted mean
        dense = minmax(np.array([h.scores["dense"] for h in auto]))
        sparse = minmax(np.array([h.scores["sparse"] for h in auto]))
        np.testing.assert_allclose([h.score for h in auto], 0.9 * dense + 0.1 * sparse, rtol=1e-5, atol=1e-6)
        assert _agreement(auto, "dense") > 0.9 > _agreement(auto, "sparse")
        differs += _ranked(auto)[:10] != _ranked(raw)[:10]
    assert differs == QUERIES  # no query's top 10 is the raw mean's any more


def test_signal_scales_the_sparse_weight_by_its_share_of_the_ceiling(bm25_collection, scifact_sample):
    n = len(scifact_sample.corpus)
    for query in scifact_sample.queries.values():
        vectors = bm25_collection.encode_query(query)
        ceiling = vectors.sparse_ceiling
        assert ceiling == pytest.approx(bm25_collection.encoder.parts["sparse"].query_ceiling(query))
        hits = bm25_collection.search(vectors, n, mode="dense+sparse", weights=(0.6, 0.4, 0.0))
        assert _ranked(hits) == _ranked(
            bm25_collection.search(query, n, mode="dense+sparse", weights=(0.6, 0.4, 0))
        )
        sparse = np.array([h.scores["sparse"] for h in hits])
        signal = min(1.0, sparse.max() / ceiling)
        assert 0 < signal < 1  # SciFact claims share words with their abstracts, never all of them
        dense = minmax(np.array([h.scores["dense"] for h in hits]))
        expected = (0.6 * dense + 0.4 * signal * minmax(sparse)) / (0.6 + 0.4 * signal)
        np.testing.assert_allclose([h.score for h in hits], expected, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("fusion", FUSIONS)
def test_a_query_sharing_no_token_leaves_the_other_modes_ranking(bm25_collection, scifact_sample, fusion):
    """A query whose tokens no abstract holds has no sparse signal: every fusion ranks the candidates as it
    ranks dense alone (sparse weight 0)."""
    query = "기린코끼리"  # XLM-R pieces ▁기 린 코 끼리: none is in an English abstract
    assert bm25_collection.search(query, 10, mode="sparse") == []
    n = len(scifact_sample.corpus)
    hits = bm25_collection.search(query, n, mode="dense+sparse", fusion=fusion)
    alone = bm25_collection.search(query, n, mode="dense+sparse", fusion=fusion, weights=(1.0, 0.0, 0.0))
    assert len(hits) == n and _ranked(hits) == _ranked(alone)


@pytest.mark.parametrize("fusion", FUSIONS)
def test_a_weak_lexical_match_does_not_reorder_under_signal(bm25_collection, scifact_sample, fusion):
    """A query sharing only one common token with the abstracts, the rest in another script: min-max would
    stretch those near-equal BM25 scores to [0, 1]; its signal is tiny, so the others keep their order."""
    query = "the ゾウとキリンの体重はどれくらい違うのか"
    n = len(scifact_sample.corpus)
    matched = bm25_collection.search(query, n, mode="sparse")
    assert len(matched) > 10  # the common token is in many abstracts
    options = {"mode": "dense+sparse", "fusion": fusion}
    signal = bm25_collection.search(query, 10, **options)
    alone = bm25_collection.search(query, 10, weights=(1.0, 0.0, 0.0), **options)
    assert _ranked(signal) == _ranked(alone)
    if fusion == "weighted":  # the previous default: the weak match moves the top 10
        assert _ranked(bm25_collection.search(query, 10, normalize="minmax", **options)) != _ranked(alone)


def test_learned_sparse_none_is_the_reference_formula(tmp_path, tiny_m3):
    with Collection.create(tmp_path / "m3", encoder=tiny_m3, cache=False) as collection:
        assert collection.config.sparse_source == "model"
        texts = ["the cat sat on the mat", "dogs bark at night", "a cat and a dog", "bread needs flour"]
        collection.upsert([{"id": i, "text": t} for i, t in enumerate(texts)])
        hits = collection.search("a cat on a mat", 4, mode="all", normalize="none")
        for hit in hits:
            s = hit.scores
            reference = hybrid_scores(
                s["dense"], s["sparse"], s["colbert"], FUSION_WEIGHTS["weighted"]["all"]
            )
            assert hit.score == pytest.approx(reference["colbert+sparse+dense"], rel=1e-6)
        # the query's ceiling is its self-score, the lexical score of the query against itself
        vectors = collection.encode_query("a cat on a mat")
        assert vectors.sparse_ceiling == pytest.approx(float(np.dot(vectors.sparse[1], vectors.sparse[1])))
