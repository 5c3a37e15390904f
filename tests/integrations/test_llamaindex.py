"""LlamaIndex: VectorStoreIndex over the m3search vector store (hybrid, dense and sparse query modes, metadata
filters) and the embedding model, on a local and a server collection of the offline e5 model."""

from __future__ import annotations

import numpy as np
import pytest
from llama_index.core import Document, StorageContext, VectorStoreIndex
from llama_index.core.vector_stores.types import (
    FilterCondition,
    FilterOperator,
    MetadataFilter,
    MetadataFilters,
    VectorStoreQuery,
)

from m3search.errors import FilterError, InvalidInputError
from m3search.integrations.llamaindex import M3SearchEmbedding, M3SearchVectorStore, to_m3search_filter
from tests.conftest import CORPUS

BY_ID = {d["id"]: d for d in CORPUS}


def _index(collection):
    store = M3SearchVectorStore(collection)
    embed = M3SearchEmbedding.for_collection(collection)
    docs = [Document(text=d["text"], metadata=d["metadata"], doc_id=d["id"]) for d in CORPUS]
    context = StorageContext.from_defaults(vector_store=store)
    return VectorStoreIndex.from_documents(docs, storage_context=context, embed_model=embed), store, embed


def _retrieve(index, query, **options):
    return index.as_retriever(**options).retrieve(query)


def test_index_end_to_end(target):
    index, store, embed = _index(target.collection)
    assert target.collection.count() == len(CORPUS)  # one node per short document

    for mode in ("hybrid", "default", "sparse", "text_search"):
        top = _retrieve(index, "Which tower is in Paris?", vector_store_query_mode=mode, similarity_top_k=2)
        assert top[0].node.ref_doc_id == "eiffel", mode
    hit = _retrieve(index, "What is the capital of Germany?", vector_store_query_mode="hybrid")[0]
    assert (
        hit.node.get_content() == BY_ID["berlin"]["text"] and hit.node.metadata == BY_ID["berlin"]["metadata"]
    )
    hybrid = store.query(VectorStoreQuery(query_str="capital", similarity_top_k=3, mode="hybrid"))
    want = target.collection.search("capital", 3, mode="all")
    assert hybrid.ids == [h.id for h in want] and hybrid.similarities == [h.score for h in want]
    assert want and set(want[0].scores) == {"dense", "sparse", "colbert"}  # ColBERT re-scored
    shallow = M3SearchVectorStore(target.collection, candidates=3, rerank=3)  # ColBERT re-scores 3 of up to 6
    query = VectorStoreQuery(query_str="capital", similarity_top_k=3, mode="hybrid")
    want = target.collection.search("capital", 3, mode="all", candidates=3, rerank=3)
    assert shallow.query(query).ids == [h.id for h in want]

    cities = MetadataFilters(filters=[MetadataFilter(key="topic", value="city")])
    found = _retrieve(index, "capital", filters=cities, similarity_top_k=10, vector_store_query_mode="hybrid")
    assert sorted(n.node.ref_doc_id for n in found) == ["berlin", "madrid", "tokyo"]
    old_or_search = MetadataFilters(
        filters=[
            MetadataFilter(key="year", value=1800, operator=FilterOperator.LT),
            MetadataFilter(key="topic", value=["search"], operator=FilterOperator.IN),
        ],
        condition=FilterCondition.OR,
    )
    found = _retrieve(index, "capital", filters=old_or_search, similarity_top_k=10)
    expected = sorted(
        d["id"] for d in CORPUS if d["metadata"]["year"] < 1800 or d["metadata"]["topic"] == "search"
    )
    assert sorted(n.node.ref_doc_id for n in found) == expected

    index.delete_ref_doc("tokyo")
    assert target.collection.count() == len(CORPUS) - 1

    reopened = VectorStoreIndex.from_vector_store(M3SearchVectorStore(target.reopen()), embed_model=embed)
    found = _retrieve(reopened, "東京 首都", similarity_top_k=len(CORPUS), vector_store_query_mode="hybrid")
    assert "tokyo" not in [n.node.ref_doc_id for n in found] and len(found) == len(CORPUS) - 1
    assert _retrieve(reopened, "Which tower is in Paris?")[0].node.ref_doc_id == "eiffel"


def test_nodes_by_id_and_filter(target):
    _, store, _ = _index(target.collection)
    english = MetadataFilters(filters=[MetadataFilter(key="lang", value="en")])
    nodes = store.get_nodes(filters=english)
    assert sorted(n.ref_doc_id for n in nodes) == sorted(
        d["id"] for d in CORPUS if d["metadata"]["lang"] == "en"
    )
    ids = [n.node_id for n in nodes[:2]]
    assert [n.node_id for n in store.get_nodes(node_ids=[*ids, "unknown"])] == ids
    store.delete_nodes(filters=MetadataFilters(filters=[MetadataFilter(key="topic", value="biology")]))
    assert target.collection.count() == len(CORPUS) - 2
    store.clear()
    assert target.collection.count() == 0


def test_filter_mapping_and_refusals(target):
    nested = MetadataFilters(
        filters=[
            MetadataFilter(key="tags", value="embedding", operator=FilterOperator.CONTAINS),
            MetadataFilters(
                filters=[
                    MetadataFilter(key="lang", value="en"),
                    MetadataFilter(key="year", value=2000, operator=">"),
                ],
                condition=FilterCondition.NOT,
            ),
            MetadataFilter(key="missing", value=None, operator=FilterOperator.IS_EMPTY),
        ]
    )
    assert to_m3search_filter(nested) == {
        "$and": [
            {"tags": {"$eq": "embedding"}},
            {"$not": {"$or": [{"lang": {"$eq": "en"}}, {"year": {"$gt": 2000}}]}},
            {"$not": {"missing": {"$exists": True}}},
        ]
    }
    with pytest.raises(FilterError, match="text_match"):
        to_m3search_filter(
            MetadataFilters(filters=[MetadataFilter(key="t", value="x", operator="text_match")])
        )
    store = M3SearchVectorStore(target.collection)
    with pytest.raises(InvalidInputError, match="mmr"):
        store.query(VectorStoreQuery(query_str="x", mode="mmr"))
    with pytest.raises(InvalidInputError, match="query_str"):
        store.query(VectorStoreQuery(query_embedding=[0.1] * 384))


def test_embedding_model(target, e5_encoder):
    embed = M3SearchEmbedding.for_collection(target.collection)
    texts = ["Photosynthesis needs light.", "Die Mitochondrien erzeugen ATP."]
    np.testing.assert_allclose(
        embed.get_text_embedding_batch(texts), e5_encoder.encode(texts, return_dense=True).dense, atol=1e-5
    )
    np.testing.assert_allclose(
        embed.get_query_embedding("ATP"), e5_encoder.encode_queries("ATP").dense[0], atol=1e-5
    )
