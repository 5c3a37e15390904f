"""BM25 over the model's tokenizer, against an independent BM25 computation on real SciFact abstracts; the
statistics' bookkeeping; and the e5 + BM25 composite that `load_encoder(..., sparse="auto")` builds."""

from __future__ import annotations

import json
import math
from collections import Counter

import numpy as np
import pytest

from m3search.encoders import BM25Encoder, BM25Stats, CompositeEncoder, TransformerEncoder, load_encoder
from m3search.errors import InvalidInputError
from m3search.scoring import lexical_score
from tests.encoders.texts import scifact_abstracts, scifact_docs

K1, B = 1.2, 0.75


@pytest.fixture(scope="module")
def corpus(shared_data) -> list[str]:
    return scifact_abstracts(shared_data, 50)


@pytest.fixture(scope="module")
def queries(shared_data) -> list[str]:
    with (shared_data / "scifact" / "queries.jsonl").open(encoding="utf-8") as f:
        texts = [json.loads(line)["text"] for _, line in zip(range(10), f)]
    return texts + ["cancer cells and cancer risk"]  # a repeated query term


@pytest.fixture(scope="module")
def indexed(e5_encoder, corpus) -> BM25Encoder:
    bm25 = BM25Encoder(e5_encoder.tokenizer)
    for counts in bm25.term_counts(corpus):
        bm25.stats.add(counts)
    return bm25


def _reference_scores(tokenizer, query: str, docs: list[str]) -> np.ndarray:
    """Okapi BM25 with Lucene's IDF, summed over the query's tokens (repeats included), from token lists."""
    ids = [tokenizer(d.lower(), add_special_tokens=False)["input_ids"] for d in docs]
    n, avgdl = len(ids), sum(map(len, ids)) / len(ids)
    df = Counter(t for doc in ids for t in set(doc))
    scores = np.zeros(n)
    for i, doc in enumerate(ids):
        tf = Counter(doc)
        for t in tokenizer(query.lower(), add_special_tokens=False)["input_ids"]:
            if t in tf:
                idf = math.log(1 + (n - df[t] + 0.5) / (df[t] + 0.5))
                scores[i] += idf * tf[t] * (K1 + 1) / (tf[t] + K1 * (1 - B + B * len(doc) / avgdl))
    return scores


def test_scores_equal_an_independent_bm25(indexed, corpus, queries, e5_encoder):
    docs = indexed.encode_documents(corpus)
    assert docs.dense is None and docs.colbert is None and all(w > 0 for d in docs.sparse for w in d.values())
    for query in queries:
        q = indexed.encode_queries(query).sparse[0]
        ours = np.array([lexical_score(q, d) for d in docs.sparse])
        expected = _reference_scores(e5_encoder.tokenizer, query, corpus)
        assert expected.max() > 0
        np.testing.assert_allclose(ours, expected, rtol=1e-9, err_msg=query)


def test_weights_exclude_special_tokens_and_read_whole_texts(indexed, corpus):
    special = set(indexed.tokenizer.all_special_ids)
    long_text = " ".join(corpus[:8])
    counts = indexed.term_counts(long_text)[0]
    assert sum(counts.values()) > 2000 and not special & set(counts)
    assert indexed.encode_documents(long_text).num_tokens == [sum(counts.values())]
    assert indexed.encode_queries("zzqx unseenword").sparse[0].keys() <= set(indexed.stats.df)


def test_a_document_holding_the_query_terms_ranks_first(indexed, corpus, shared_data):
    docs = indexed.encode_documents(corpus).sparse
    titles = [row["title"] for row in scifact_docs(shared_data, len(corpus))]
    for i in range(0, len(corpus), 5):
        q = indexed.encode_queries(titles[i]).sparse[0]
        scores = [lexical_score(q, d) for d in docs]
        assert int(np.argmax(scores)) == i, titles[i]


def test_stats_add_remove_round_trip(e5_encoder, corpus):
    bm25 = BM25Encoder(e5_encoder.tokenizer)
    counts = bm25.term_counts(corpus)
    for c in counts[:45]:
        bm25.stats.add(c)
    snapshot = bm25.stats.to_dict()
    for c in counts[45:]:
        bm25.stats.add(c)
    assert bm25.stats.n_docs == 50
    for c in counts[45:]:
        bm25.stats.remove(c)
    assert bm25.stats.to_dict() == snapshot
    assert BM25Stats.from_dict(json.loads(json.dumps(snapshot))) == bm25.stats
    assert bm25.stats.avgdl == pytest.approx(sum(sum(c.values()) for c in counts[:45]) / 45)

    with pytest.raises(InvalidInputError, match="not added"):
        bm25.stats.remove({10**6: 1})  # a token no added document had
    assert bm25.stats.to_dict() == snapshot  # refused without changing anything
    for c in counts[:45]:
        bm25.stats.remove(c)
    assert bm25.stats == BM25Stats() and bm25.stats.avgdl == 1.0
    with pytest.raises(InvalidInputError, match="not added"):
        bm25.stats.remove(counts[0])


def test_e5_with_bm25_is_one_composite_encoder(e5_encoder, indexed, corpus, queries):
    composite = load_encoder(
        "intfloat/multilingual-e5-small", sparse="auto", runtime="torch-fp32", bm25_stats=indexed.stats
    )
    assert isinstance(composite, CompositeEncoder)
    assert composite.outputs == {"dense", "sparse", "colbert"} and composite.dim == 384
    assert (
        isinstance(composite.parts["dense"], TransformerEncoder)
        and composite.parts["dense"] is composite.parts["colbert"]
    )
    assert (
        isinstance(composite.parts["sparse"], BM25Encoder)
        and composite.parts["sparse"].stats is indexed.stats
    )
    assert composite.describe()["parts"]["sparse"]["k1"] == K1

    for encode, reference in (
        (composite.encode_queries, indexed.encode_queries),
        (composite.encode_documents, indexed.encode_documents),
    ):
        got = encode(corpus[:3] + queries[:2], return_sparse=True, return_colbert=True)
        e5 = e5_encoder.encode(
            corpus[:3] + queries[:2], return_colbert=True, is_query=encode == composite.encode_queries
        )
        np.testing.assert_allclose(got.dense, e5.dense, atol=1e-6)
        assert [c.shape for c in got.colbert] == [c.shape for c in e5.colbert]
        assert got.sparse == reference(corpus[:3] + queries[:2]).sparse
        assert got.num_tokens == e5.num_tokens  # the model's token counts, not BM25's

    scores = composite.compute_score(
        [(queries[0], corpus[0]), (queries[1], corpus[1])], weights=(0.4, 0.2, 0.4)
    )
    assert set(scores) == {"dense", "sparse", "colbert", "sparse+dense", "colbert+sparse+dense"}
