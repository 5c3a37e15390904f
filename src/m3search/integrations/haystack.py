"""Haystack 2 (`pip install 'm3search[haystack]'`, haystack-ai): a document store and a hybrid-search
retriever component over a local `Collection` or a server collection (`Client(...).collection(name)`).

    from haystack import Document, Pipeline
    from m3search.integrations.haystack import M3SearchDocumentStore, M3SearchRetriever
    store = M3SearchDocumentStore(collection)
    store.write_documents([Document(content="BGE M3 is an embedding model", meta={"year": 2024})])
    pipeline = Pipeline()
    pipeline.add_component("retriever", M3SearchRetriever(store, top_k=5, mode="all"))
    pipeline.run({"retriever": {"query": "What is BGE M3?"}})

The collection encodes texts with its own model: documents need `content` (their `embedding` is not used).
Haystack filters ({"field": "meta.year", "operator": ">=", "value": 2020}, AND / OR / NOT) become m3search
filters.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from haystack import Document, component, default_from_dict, default_to_dict
from haystack.document_stores.errors import DuplicateDocumentError
from haystack.document_stores.types import DuplicatePolicy

from m3search.errors import FilterError, InvalidInputError
from m3search.integrations.common import is_remote, matching
from m3search.search.results import Hit

_COMPARISONS = {"==": "$eq", "!=": "$ne", ">": "$gt", ">=": "$gte", "<": "$lt", "<=": "$lte", "in": "$in"}


def to_m3search_filter(filters: Mapping[str, Any] | None) -> dict[str, Any] | None:
    """A Haystack 2 filter as an m3search filter (fields are `meta.<key>`; `id` and `content` are not
    metadata and cannot be filtered on)."""
    if not filters:
        return None
    if "conditions" in filters:
        op = str(filters.get("operator", "")).upper()
        parts = [to_m3search_filter(c) for c in filters["conditions"]]
        if op == "AND":
            return {"$and": parts}
        if op == "OR":
            return {"$or": parts}
        if op == "NOT":
            return {"$not": {"$and": parts}}  # Haystack's NOT: not all of them hold
        raise FilterError(f"logical operator {filters.get('operator')!r} is not AND, OR or NOT")
    missing = [k for k in ("field", "operator", "value") if k not in filters]
    if missing:
        raise FilterError(f"filter {dict(filters)} lacks {', '.join(missing)}")
    field, op, value = filters["field"], filters["operator"], filters["value"]
    if not isinstance(field, str) or not field.startswith("meta."):
        raise FilterError(f"filter field {field!r}: only metadata fields (meta.<key>) can be filtered on")
    key = field[len("meta.") :]
    if op == "not in":
        return {key: {"$nin": value}}
    if op not in _COMPARISONS:
        raise FilterError(f"filter operator {op!r} is not one of {', '.join([*_COMPARISONS, 'not in'])}")
    return {key: {_COMPARISONS[op]: value}}


def _document(hit: Hit, score: float | None = None) -> Document:
    return Document(id=hit.id, content=hit.text, meta=dict(hit.metadata), score=score)


class M3SearchDocumentStore:
    """A Haystack document store over an m3search collection (documents are durable when a write returns).

    `filter_documents` lists through a filtered search as deep as the collection (a server answers up to 1,000
    documents per search; more matches raise).
    """

    def __init__(self, collection: Any) -> None:
        self.collection = collection

    def to_dict(self) -> dict[str, Any]:
        """The store's location: a local collection's path, or a server's URL and the collection's name (the
        API key is not serialized: `from_dict` reads `M3SEARCH_API_KEY`)."""
        if is_remote(self.collection):
            where = {"url": self.collection.client.url, "name": self.collection.name}
        else:
            where = {"path": str(self.collection.path)}
        return default_to_dict(self, **where)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> M3SearchDocumentStore:
        """Reopen the collection `to_dict` describes."""
        params = data.get("init_parameters", {})
        collection: Any
        if "path" in params:
            from m3search.store import Collection

            collection = Collection.open(Path(params["path"]))
        else:
            from m3search.client import Client

            client = Client(params["url"], api_key=os.environ.get("M3SEARCH_API_KEY"))
            collection = client.collection(params["name"])
        return default_from_dict(cls, {**data, "init_parameters": {"collection": collection}})

    def count_documents(self) -> int:
        return self.collection.count()

    def filter_documents(self, filters: dict[str, Any] | None = None) -> list[Document]:
        """The documents `filters` allow (Haystack's filter syntax), all without filters."""
        return [_document(h) for h in matching(self.collection, to_m3search_filter(filters))]

    def write_documents(
        self, documents: list[Document], policy: DuplicatePolicy = DuplicatePolicy.NONE
    ) -> int:
        """Write documents by id; with FAIL (and NONE) an id already stored raises `DuplicateDocumentError`,
        SKIP leaves it, OVERWRITE replaces it. Returns how many were written."""
        for doc in documents:
            if not isinstance(doc, Document):
                raise InvalidInputError(f"write_documents takes Haystack Documents, got {type(doc).__name__}")
            if not doc.content or not doc.content.strip():
                raise InvalidInputError(f"document {doc.id!r} has no content; m3search indexes texts")
        ids = [d.id for d in documents]
        if len(set(ids)) != len(ids):
            raise DuplicateDocumentError("the same document id appears more than once in one write")
        if policy != DuplicatePolicy.OVERWRITE and documents:
            stored = {d.id for d in self.collection.get(ids) if d is not None}
            if stored and policy == DuplicatePolicy.SKIP:
                documents = [d for d in documents if d.id not in stored]
            elif stored:
                raise DuplicateDocumentError(f"documents {sorted(stored)} already exist")
        if not documents:
            return 0
        return self.collection.upsert({"id": d.id, "text": d.content, "metadata": d.meta} for d in documents)

    def delete_documents(self, document_ids: list[str]) -> None:
        """Delete documents by id (unknown ids are ignored)."""
        if document_ids:
            self.collection.delete(document_ids)

    def search(
        self,
        query: str,
        top_k: int = 10,
        *,
        filters: dict[str, Any] | None = None,
        mode: str | None = None,
        weights: Sequence[float] | Mapping[str, float] | None = None,
        fusion: str = "weighted",
        candidates: int = 100,
        rerank: int | None = None,
    ) -> list[Document]:
        """Hybrid search: the `top_k` best documents with their fused `score` (`rerank`: how many candidates
        ColBERT re-scores; None: the collection's default)."""
        hits = self.collection.search(
            query,
            top_k,
            mode=mode,
            weights=weights,
            fusion=fusion,
            filter=to_m3search_filter(filters),
            candidates=candidates,
            rerank=rerank,
        )
        return [_document(h, h.score) for h in hits]


@component
class M3SearchRetriever:
    """A Haystack retriever running m3search's hybrid search: `mode`, `weights`, `fusion` and default
    `filters` set here, `query`, `filters` and `top_k` per run."""

    def __init__(
        self,
        document_store: M3SearchDocumentStore,
        *,
        top_k: int = 10,
        filters: dict[str, Any] | None = None,
        mode: str | None = None,
        weights: Sequence[float] | Mapping[str, float] | None = None,
        fusion: str = "weighted",
        candidates: int = 100,
        rerank: int | None = None,
    ) -> None:
        if not isinstance(document_store, M3SearchDocumentStore):
            raise InvalidInputError(
                f"document_store must be an M3SearchDocumentStore, got {type(document_store).__name__}"
            )
        self.document_store = document_store
        self.top_k = top_k
        self.filters = filters
        self.options: dict[str, Any] = {
            "mode": mode,
            "weights": list(weights) if isinstance(weights, Sequence) else weights,
            "fusion": fusion,
            "candidates": candidates,
            "rerank": rerank,
        }

    def to_dict(self) -> dict[str, Any]:
        return default_to_dict(
            self,
            document_store=self.document_store.to_dict(),
            top_k=self.top_k,
            filters=self.filters,
            **self.options,
        )

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> M3SearchRetriever:
        params = dict(data["init_parameters"])
        params["document_store"] = M3SearchDocumentStore.from_dict(params["document_store"])
        return default_from_dict(cls, {**data, "init_parameters": params})

    @component.output_types(documents=list[Document])
    def run(
        self, query: str, filters: dict[str, Any] | None = None, top_k: int | None = None
    ) -> dict[str, list[Document]]:
        """The best documents for `query` (run filters replace the default ones)."""
        documents = self.document_store.search(
            query,
            top_k or self.top_k,
            filters=filters if filters is not None else self.filters,
            **self.options,
        )
        return {"documents": documents}
