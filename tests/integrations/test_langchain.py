"""LangChain: the vector store, retriever and embeddings over a local and a server collection of the offline
e5 model — retrieve, filter, delete, reopen."""

from __future__ import annotations

import numpy as np
import pytest
from langchain_core.documents import Document

from m3search.errors import InvalidInputError
from m3search.integrations.langchain import M3SearchEmbeddings, M3SearchRetriever, M3SearchVectorStore
from tests.conftest import CORPUS

BY_ID = {d["id"]: d for d in CORPUS}


def _fill(store: M3SearchVectorStore) -> list[str]:
    return store.add_texts(
        [d["text"] for d in CORPUS], [d["metadata"] for d in CORPUS], ids=[d["id"] for d in CORPUS]
    )


def test_vector_store_end_to_end(target):
    store = M3SearchVectorStore(target.collection)
    assert _fill(store) == [d["id"] for d in CORPUS]

    top = store.similarity_search("What is the capital of Germany?", k=2)
    assert top[0].id == "berlin"
    assert (top[0].page_content, top[0].metadata) == (BY_ID["berlin"]["text"], BY_ID["berlin"]["metadata"])

    scored = store.similarity_search_with_score("capital", k=3, filter={"topic": "city"}, fusion="rrf")
    want = target.collection.search("capital", 3, filter={"topic": "city"}, fusion="rrf")
    assert [(d.id, s) for d, s in scored] == [(h.id, h.score) for h in want]
    assert {d.metadata["topic"] for d, _ in scored} == {"city"}

    retriever = store.as_retriever(search_kwargs={"k": 1, "filter": {"lang": "en"}, "mode": "dense"})
    assert [d.id for d in retriever.invoke("Which tower is in Paris?")] == ["eiffel"]
    assert [d.id for d in retriever.invoke("Hauptstadt von Deutschland")] != ["berlin"]  # berlin is German

    # add_documents keeps LangChain's ids; nested metadata and lists come back as stored
    meta = {"lang": "en", "topic": "search", "nested": {"a": [1, 2]}}
    store.add_documents(
        [Document(page_content="Reciprocal rank fusion merges rankings.", metadata=meta, id="rrf")]
    )
    assert store.get_by_ids(["rrf", "unknown"]) == [
        Document(page_content="Reciprocal rank fusion merges rankings.", metadata=meta, id="rrf")
    ]

    assert store.delete(["tokyo"]) is True
    assert store.delete(["tokyo"]) is False
    reopened = M3SearchVectorStore(target.reopen())
    assert reopened.collection.count() == len(CORPUS)  # -tokyo +rrf
    assert "tokyo" not in [d.id for d in reopened.similarity_search("東京 首都", k=len(CORPUS))]
    assert reopened.similarity_search("How do plants make energy from light?", k=1)[0].id == "photosynthesis"


def test_retriever_fields(target):
    _fill(M3SearchVectorStore(target.collection))
    for fields in [
        {"k": 3},
        {"k": 2, "mode": "dense+sparse", "weights": (0.6, 0.4, 0.0)},
        {"k": 4, "mode": "all", "fusion": "rrf", "filter": {"year": {"$gte": 1800}}},
        {"k": 2, "mode": "sparse", "filter": {"tags": "multilingual"}},
        {"k": 2, "mode": "all", "candidates": 3, "rerank": 2},  # ColBERT re-scores 2 of up to 6
    ]:
        retriever = M3SearchRetriever(collection=target.collection, **fields)
        got = retriever.invoke("multilingual embedding model for search")
        search_options = {k: v for k, v in fields.items() if k != "k"}
        want = target.collection.search(
            "multilingual embedding model for search", fields["k"], **search_options
        )
        assert [d.id for d in got] == [h.id for h in want], fields
        assert [d.metadata for d in got] == [BY_ID[h.id]["metadata"] for h in want]
    assert (
        M3SearchRetriever(collection=target.collection, k=1).invoke("ATP in the cell")[0].id == "mitochondria"
    )


def test_embeddings_are_the_collection_models(target, e5_encoder):
    embeddings = M3SearchEmbeddings.for_collection(target.collection)
    texts = ["BGE M3 is an embedding model", "Der Eiffelturm steht in Paris."]
    np.testing.assert_allclose(
        embeddings.embed_documents(texts), e5_encoder.encode(texts, return_dense=True).dense, atol=1e-5
    )
    np.testing.assert_allclose(
        embeddings.embed_query(texts[1]), e5_encoder.encode_queries(texts[1]).dense[0], atol=1e-5
    )
    assert embeddings.embed_documents([]) == []


def test_refuses_what_it_cannot_honour(target):
    store = M3SearchVectorStore(target.collection)

    class Foreign(M3SearchEmbeddings.__base__):  # another model's embeddings
        def embed_documents(self, texts):
            return [[0.0]] * len(texts)

        def embed_query(self, text):
            return [0.0]

    with pytest.raises(InvalidInputError, match="own model"):
        M3SearchVectorStore.from_texts(["x"], Foreign(), collection=target.collection)
    with pytest.raises(InvalidInputError, match="unknown search options"):
        store.similarity_search("x", k=1, ef=3)
    with pytest.raises(InvalidInputError, match="metadatas"):
        store.add_texts(["a", "b"], [{}])
    assert target.collection.count() == 0
    built = M3SearchVectorStore.from_texts(["BM25 ranks documents"], collection=target.collection, ids=["b"])
    assert [d.id for d in built.similarity_search("ranking", k=1)] == ["b"]
