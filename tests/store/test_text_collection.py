"""Collections that encode text: the tiny bge-m3 (all three outputs), BM25 sparse weights, the embedding cache."""

from __future__ import annotations

import math

import numpy as np
import pytest

from m3search import Collection
from m3search.encoders import BM25Encoder, CompositeEncoder
from m3search.errors import InvalidInputError, ModelLoadError
from m3search.scoring import colbert_score, dense_score, lexical_score

TEXTS = [
    "The cat sat on the warm mat near the fire.",
    "Quantum chromodynamics describes the strong interaction.",
    "Der schnelle braune Fuchs springt über den faulen Hund.",
    "東京は日本の首都です。",
    "A recipe for bread needs flour, water, salt and yeast.",
    "Les élections municipales auront lieu en mars.",
    "Photosynthesis converts light energy into chemical energy.",
    "The stock market fell sharply on Monday morning.",
]


class CountingEncoder:
    """Wraps an encoder and counts the texts it encodes as documents."""

    def __init__(self, inner):
        self.inner, self.encoded = inner, 0

    def __getattr__(self, name):
        return getattr(self.inner, name)

    def encode_documents(self, texts, **kwargs):
        self.encoded += len(texts)
        return self.inner.encode_documents(texts, **kwargs)


@pytest.fixture
def m3_collection(tmp_path, tiny_m3):
    collection = Collection.create(tmp_path / "m3", encoder=tiny_m3, cache=tmp_path / "cache.sqlite")
    collection.upsert([{"id": i, "text": t, "metadata": {"n": i}} for i, t in enumerate(TEXTS)])
    yield collection
    collection.close()


def test_config_records_the_model(m3_collection, tiny_m3, tiny_m3_dir):
    cfg = m3_collection.config
    assert cfg.outputs == ["dense", "sparse", "colbert"] and cfg.sparse_source == "model"
    assert cfg.dim == tiny_m3.dim and cfg.model == str(tiny_m3_dir)


def test_config_records_the_runtime_that_made_the_vectors(m3_collection, tiny_m3, tiny_m3_dir):
    """The runtime and its dtype are kept (reopened from disk), and vectors of another runtime are told apart."""
    from m3search.encoders import BGEM3Encoder
    from m3search.store.config import CollectionConfig

    cfg = CollectionConfig.load(m3_collection.path)
    assert cfg.runtime == {"runtime": "torch-fp32", "dtype": "fp32"} == tiny_m3.runtime_identity()
    assert cfg.runtime_mismatch(tiny_m3.runtime_identity()) is None
    bf16 = BGEM3Encoder(tiny_m3_dir, runtime="torch-bf16")
    assert cfg.runtime_mismatch(bf16.runtime_identity()) == (
        "its vectors were made by runtime torch-fp32 (fp32), not torch-bf16 (bf16)"
    )
    assert BM25Encoder(tiny_m3.tokenizer).runtime_identity() is None  # BM25 runs no model
    cfg.runtime = None  # a collection made before the field: its encoder description still names the runtime
    assert cfg.recorded_runtime() == {"runtime": "torch-fp32", "dtype": "fp32"}
    cfg.encoder = {}
    assert (
        cfg.runtime_mismatch(tiny_m3.runtime_identity()) == "its vectors were made by an unrecorded runtime"
    )
    assert CompositeEncoder({"dense": bf16, "sparse": BM25Encoder(tiny_m3.tokenizer)}).runtime_identity() == {
        "runtime": "torch-bf16",
        "dtype": "bf16",
    }


@pytest.mark.parametrize("mode", ["dense", "colbert", "dense+sparse", "all"])
def test_identical_text_is_found_first(m3_collection, mode):
    for i, text in enumerate(TEXTS):
        hits = m3_collection.search(text, k=3, mode=mode)
        assert hits[0].id == str(i) and hits[0].text == text and hits[0].metadata == {"n": i}


def test_scores_equal_the_encoders_reference_scores(m3_collection, tiny_m3):
    query = "warm fire and a cat"
    q = tiny_m3.encode_queries([query], return_dense=True, return_sparse=True, return_colbert=True)
    d = tiny_m3.encode_documents(TEXTS, return_dense=True, return_sparse=True, return_colbert=True)
    for hit in m3_collection.search(query, k=len(TEXTS), mode="all"):
        i = int(hit.id)
        assert hit.scores["dense"] == pytest.approx(dense_score(q.dense[0], d.dense[i]), abs=1e-5)
        assert hit.scores["sparse"] == pytest.approx(lexical_score(q.sparse[0], d.sparse[i]), abs=1e-5)
        # ColBERT vectors are stored as float16
        assert hit.scores["colbert"] == pytest.approx(colbert_score(q.colbert[0], d.colbert[i]), abs=2e-3)


def test_an_encoded_query_searches_like_its_text(m3_collection):
    query = "bread with flour and yeast"
    vectors = m3_collection.encode_query(query)
    assert vectors.dense is not None and vectors.sparse is not None and vectors.colbert is not None
    for mode in ("dense", "sparse", "colbert", "all"):
        by_text = m3_collection.search(query, k=5, mode=mode)
        by_vectors = m3_collection.search(vectors, k=5, mode=mode)
        assert [(h.id, h.score) for h in by_vectors] == [(h.id, h.score) for h in by_text]
    assert m3_collection.encode_query(query, ["dense"]).sparse is None
    with pytest.raises(InvalidInputError, match="the query is empty"):
        m3_collection.encode_query("   ")


def test_text_and_vectors_mix(m3_collection, tiny_m3):
    vec = tiny_m3.encode_documents(["a custom dense vector"], return_dense=True).dense[0]
    m3_collection.upsert([{"id": "v", "text": "some other words", "dense": vec}])
    hit = m3_collection.search({"dense": vec}, k=1, mode="dense")[0]
    assert hit.id == "v" and hit.scores["dense"] == pytest.approx(1.0, abs=1e-5)


def test_reopen_loads_the_recorded_model(tmp_path, m3_collection):
    m3_collection.close()
    with Collection.open(tmp_path / "m3", cache=False) as reopened:
        assert reopened.search(TEXTS[4], k=1)[0].id == "4"


def test_cache_avoids_encoding_again(tmp_path, tiny_m3):
    counting = CountingEncoder(tiny_m3)
    cache = tmp_path / "shared-cache.sqlite"
    docs = [{"id": i, "text": t} for i, t in enumerate(TEXTS)]
    with Collection.create(tmp_path / "a", encoder=counting, cache=cache) as first:
        first.upsert(docs)
        assert counting.encoded == len(TEXTS)
        first.upsert(docs[:3])  # same texts again: no model call
        assert counting.encoded == len(TEXTS)
    with Collection.create(tmp_path / "b", encoder=counting, cache=cache) as second:
        second.upsert(docs + [{"id": "new", "text": "a text never seen"}])
        assert counting.encoded == len(TEXTS) + 1
        assert [second.search(t, k=1)[0].id for t in TEXTS] == [str(i) for i in range(len(TEXTS))]
    with Collection.create(tmp_path / "c", encoder=counting, cache=False) as uncached:
        uncached.upsert(docs[:2])
        assert counting.encoded == len(TEXTS) + 3


@pytest.fixture
def bm25_encoder(tiny_m3):
    return CompositeEncoder({"dense": tiny_m3, "sparse": BM25Encoder(tiny_m3.tokenizer)})


def bm25_reference(query: str, texts: dict[str, str], tokenizer) -> dict[str, float]:
    """BM25 (Lucene IDF, k1=1.2, b=0.75) computed from scratch over `texts`."""
    enc = BM25Encoder(tokenizer)
    counts = dict(zip(texts, enc.term_counts(list(texts.values()))))
    n, avgdl = len(counts), sum(sum(c.values()) for c in counts.values()) / len(counts)
    q = enc.term_counts([query])[0]
    out = {}
    for doc_id, c in counts.items():
        dl, score = sum(c.values()), 0.0
        for t in q:
            if t in c:
                df = sum(1 for other in counts.values() if t in other)
                idf = math.log(1 + (n - df + 0.5) / (df + 0.5))
                # a query term repeated n times counts n times (Lucene, rank_bm25)
                score += q[t] * idf * c[t] * 2.2 / (c[t] + 1.2 * (1 - 0.75 + 0.75 * dl / avgdl))
        out[doc_id] = score
    return out


def test_bm25_sparse_scores_are_exact_after_compaction(tmp_path, bm25_encoder, tiny_m3):
    collection = Collection.create(tmp_path / "bm25", encoder=bm25_encoder, cache=False)
    assert collection.config.sparse_source == "bm25" and collection.config.outputs == ["dense", "sparse"]
    texts = {str(i): t for i, t in enumerate(TEXTS)}
    collection.upsert([{"id": i, "text": t} for i, t in texts.items()])
    collection.delete(["1"])
    collection.upsert([{"id": "2", "text": "the cat and the fire and the mat"}])
    del texts["1"]
    texts["2"] = "the cat and the fire and the mat"
    collection.compact()  # re-weights every document under the final statistics
    query = "the cat near the fire"
    expected = bm25_reference(query, texts, tiny_m3.tokenizer)
    hits = collection.search(query, k=10, mode="sparse")
    assert {h.id: pytest.approx(h.score, abs=1e-4) for h in hits} == {
        i: pytest.approx(s, abs=1e-4) for i, s in expected.items() if s > 0
    }
    collection.close()
    with Collection.open(tmp_path / "bm25", encoder=bm25_encoder, cache=False) as reopened:
        stats = reopened.backend.bm25_stats()
        assert stats.n_docs == len(texts)
        assert [h.id for h in reopened.search(query, k=3, mode="sparse")] == [h.id for h in hits[:3]]


def test_writing_prepared_batches_weighs_bm25_with_the_tokenizer_alone(tmp_path, tiny_m3_dir):
    """A writer that encodes nothing (the Ray driver, committing batches prepared elsewhere) weighs BM25 term
    counts with the model's tokenizer alone: the weights a plain upsert stores, the model's weights unread."""
    from m3search.encoders import BGEM3Encoder
    from m3search.store.ingest import DetachedPreparer

    model = tmp_path / "model"  # the tiny model, file by file, so that its weights can go
    model.mkdir()
    for source in tiny_m3_dir.iterdir():
        (model / source.name).symlink_to(source)
    dense = BGEM3Encoder(model, runtime="torch-fp32")
    docs = [{"id": str(i), "text": t} for i, t in enumerate(TEXTS)]
    for name in ("plain", "written"):
        encoder = CompositeEncoder({"dense": dense, "sparse": BM25Encoder(dense.tokenizer)})
        Collection.create(tmp_path / name, encoder=encoder, cache=False).close()
    with Collection.open(tmp_path / "plain", encoder=encoder, cache=False) as plain:
        plain.upsert(docs)
        expected = {d.id: d for b in plain.export() for d in b.docs}
    config = Collection.open(tmp_path / "written", readonly=True).config
    assert config.sparse_source == "bm25" and config.model == str(model)
    batch = DetachedPreparer(config, str(tmp_path / "written"), "torch-fp32").prepare(docs)
    assert batch.bm25 is None and all(c for c in batch.counts)  # term counts, weighed at commit
    (model / "model.safetensors").unlink()
    with Collection.open(tmp_path / "written", cache=False) as writer:
        assert writer.write(batch) == len(docs)
        with pytest.raises(ModelLoadError, match="model weights"):
            writer.encoder  # noqa: B018 - the model cannot load: the write did without it
        stored = {d.id: d for b in writer.export() for d in b.docs}
    assert sorted(stored) == sorted(expected)
    for doc_id, doc in expected.items():
        np.testing.assert_array_equal(stored[doc_id].sparse[0], doc.sparse[0])
        np.testing.assert_allclose(stored[doc_id].sparse[1], doc.sparse[1], atol=1e-6)


def test_wrong_encoder_is_refused(tmp_path, m3_collection, bm25_encoder):
    m3_collection.close()
    with pytest.raises(Exception, match="sparse"):
        Collection.open(tmp_path / "m3", encoder=bm25_encoder)


def test_ids_are_strings(m3_collection):
    assert m3_collection.get([3, "3"])[0].id == "3"
    assert np.all([d is not None for d in m3_collection.get(range(len(TEXTS)))])
