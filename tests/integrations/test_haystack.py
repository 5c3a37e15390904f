"""Haystack 2: the document store and the retriever component in a pipeline, over a local and a server
collection of the offline e5 model — write policies, filters, retrieve, delete, reopen, serialization."""

from __future__ import annotations

import pytest
from haystack import Document, Pipeline
from haystack.document_stores.errors import DuplicateDocumentError
from haystack.document_stores.types import DuplicatePolicy

from m3search.errors import FilterError
from m3search.integrations.haystack import M3SearchDocumentStore, M3SearchRetriever
from tests.conftest import CORPUS, E5_SERVER_KEY

DOCS = [Document(id=d["id"], content=d["text"], meta=d["metadata"]) for d in CORPUS]


def test_store_and_pipeline_end_to_end(target, monkeypatch):
    store = M3SearchDocumentStore(target.collection)
    assert store.write_documents(DOCS) == len(DOCS)
    assert store.count_documents() == len(DOCS)
    with pytest.raises(DuplicateDocumentError, match="berlin"):
        store.write_documents([DOCS[1]], policy=DuplicatePolicy.FAIL)
    assert store.write_documents(DOCS[:2], policy=DuplicatePolicy.SKIP) == 0
    changed = Document(id="berlin", content=DOCS[1].content, meta={**DOCS[1].meta, "checked": True})
    assert store.write_documents([changed], policy=DuplicatePolicy.OVERWRITE) == 1

    filters = {
        "operator": "AND",
        "conditions": [
            {"field": "meta.topic", "operator": "in", "value": ["city", "landmark"]},
            {"operator": "NOT", "conditions": [{"field": "meta.year", "operator": "<", "value": 1500}]},
        ],
    }
    found = store.filter_documents(filters)
    assert sorted(d.id for d in found) == sorted(
        d["id"]
        for d in CORPUS
        if d["metadata"]["topic"] in ("city", "landmark") and d["metadata"]["year"] >= 1500
    )
    assert {
        d.id: d.meta
        for d in store.filter_documents({"field": "meta.checked", "operator": "==", "value": True})
    } == {"berlin": changed.meta}
    assert len(store.filter_documents()) == len(DOCS)

    pipeline = Pipeline()
    pipeline.add_component(
        "retriever", M3SearchRetriever(store, top_k=2, mode="all", weights=(0.5, 0.2, 0.3))
    )
    answer = pipeline.run({"retriever": {"query": "What is the capital of Germany?"}})["retriever"][
        "documents"
    ]
    want = target.collection.search("What is the capital of Germany?", 2, mode="all", weights=(0.5, 0.2, 0.3))
    assert [(d.id, d.score) for d in answer] == [(h.id, h.score) for h in want]
    assert answer[0].id == "berlin" and answer[0].content == DOCS[1].content
    shallow = M3SearchRetriever(store, top_k=2, mode="all", candidates=3, rerank=2)  # ColBERT: 2 of up to 6
    got = shallow.run("What is the capital of Germany?")["documents"]
    want = target.collection.search("What is the capital of Germany?", 2, mode="all", candidates=3, rerank=2)
    assert [(d.id, d.score) for d in got] == [(h.id, h.score) for h in want]
    assert M3SearchRetriever.from_dict(shallow.to_dict()).options["rerank"] == 2
    english = {"field": "meta.lang", "operator": "==", "value": "en"}
    answer = pipeline.run({"retriever": {"query": "Hauptstadt", "filters": english, "top_k": 8}})
    assert {d.meta["lang"] for d in answer["retriever"]["documents"]} == {"en"}

    store.delete_documents(["tokyo", "unknown"])
    assert store.count_documents() == len(DOCS) - 1
    reopened = M3SearchDocumentStore(target.reopen())
    assert reopened.count_documents() == len(DOCS) - 1
    assert "tokyo" not in [d.id for d in reopened.filter_documents()]
    assert reopened.search("Which tower is in Paris?", 1)[0].id == "eiffel"

    # serialization: the pipeline comes back pointing at the same collection
    monkeypatch.setenv("M3SEARCH_API_KEY", E5_SERVER_KEY)
    restored = Pipeline.loads(pipeline.dumps(), allowed_modules=["m3search.integrations.haystack"])
    assert restored.get_component("retriever").document_store.count_documents() == len(DOCS) - 1


def test_filter_errors(target):
    store = M3SearchDocumentStore(target.collection)
    for bad, message in [
        ({"field": "content", "operator": "==", "value": "x"}, "metadata fields"),
        ({"field": "meta.a", "operator": "~", "value": "x"}, "not one of"),
        ({"operator": "XOR", "conditions": []}, "AND, OR or NOT"),
        ({"field": "meta.a", "value": 1}, "lacks operator"),
    ]:
        with pytest.raises(FilterError, match=message):
            store.filter_documents(bad)
