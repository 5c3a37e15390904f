"""LangChain (`pip install 'm3search[langchain]'`, langchain-core): a hybrid-search retriever, dense
embeddings, and a vector store over a local `Collection` or a server collection (`Client(...).collection(name)`).

    from m3search.integrations.langchain import M3SearchRetriever, M3SearchVectorStore
    store = M3SearchVectorStore(collection)
    store.add_texts(["BGE M3 is an embedding model"], metadatas=[{"year": 2024}])
    store.as_retriever(search_kwargs={"k": 5, "filter": {"year": {"$gte": 2020}}}).invoke("What is BGE M3?")
    M3SearchRetriever(collection=collection, mode="all", fusion="rrf", k=5).invoke("What is BGE M3?")

The collection encodes texts with its own model (dense, sparse and ColBERT, or BM25): documents and queries
are never embedded by another model, so `embedding` arguments must be m3search's own (`M3SearchEmbeddings`).
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from langchain_core.callbacks import CallbackManagerForRetrieverRun
from langchain_core.documents import Document
from langchain_core.embeddings import Embeddings
from langchain_core.retrievers import BaseRetriever
from langchain_core.vectorstores import VectorStore
from pydantic import ConfigDict

from m3search.errors import InvalidInputError
from m3search.integrations.common import dense_vectors, vector_source
from m3search.search.results import Hit


def _document(hit: Hit) -> Document:
    """A LangChain document: the stored text, its metadata as stored, the m3search id."""
    return Document(page_content=hit.text or "", metadata=dict(hit.metadata), id=hit.id)


class M3SearchEmbeddings(Embeddings):
    """Dense vectors from a local encoder (`TextEncoder`) or a server (`Client`): queries with the model's
    query prefix, documents with its passage prefix."""

    def __init__(self, source: Any) -> None:
        self.source = source

    @classmethod
    def for_collection(cls, collection: Any) -> M3SearchEmbeddings:
        """The embeddings of `collection`'s model (its server's, for a server collection)."""
        return cls(vector_source(collection))

    def embed_documents(self, texts: list[str]) -> list[list[float]]:
        return dense_vectors(self.source, texts, is_query=False) if texts else []

    def embed_query(self, text: str) -> list[float]:
        return dense_vectors(self.source, [text], is_query=True)[0]


class M3SearchRetriever(BaseRetriever):
    """Hybrid search as a LangChain retriever: `mode`, `weights`, `fusion`, `filter` and `k` as fields."""

    model_config = ConfigDict(arbitrary_types_allowed=True)

    collection: Any
    """A `Collection` or a server collection (`RemoteCollection`)."""
    k: int = 4
    mode: str | None = None
    """dense, sparse, colbert, dense+sparse or all; None: the richest the collection allows."""
    weights: Sequence[float] | Mapping[str, float] | None = None
    fusion: str = "weighted"
    filter: dict[str, Any] | None = None
    candidates: int = 100
    rerank: int | None = None
    """How many candidates ColBERT re-scores (modes colbert and all); None: the collection's default."""

    def _get_relevant_documents(
        self, query: str, *, run_manager: CallbackManagerForRetrieverRun
    ) -> list[Document]:
        hits = self.collection.search(
            query,
            self.k,
            mode=self.mode,
            weights=self.weights,
            fusion=self.fusion,
            filter=self.filter,
            candidates=self.candidates,
            rerank=self.rerank,
        )
        return [_document(hit) for hit in hits]


class M3SearchVectorStore(VectorStore):
    """A LangChain vector store over an m3search collection; searches run in `mode` (default: the richest the
    collection allows), fused by `fusion` with `weights`, unless a call passes its own."""

    def __init__(
        self,
        collection: Any,
        *,
        mode: str | None = None,
        weights: Sequence[float] | Mapping[str, float] | None = None,
        fusion: str = "weighted",
        candidates: int = 100,
        rerank: int | None = None,
    ) -> None:
        self.collection = collection
        self.search_options: dict[str, Any] = {
            "mode": mode,
            "weights": weights,
            "fusion": fusion,
            "candidates": candidates,
            "rerank": rerank,
        }

    @property
    def embeddings(self) -> Embeddings:
        """The dense embeddings of the collection's model."""
        return M3SearchEmbeddings.for_collection(self.collection)

    def add_texts(
        self,
        texts: Iterable[str],
        metadatas: list[dict] | None = None,
        *,
        ids: list[str] | None = None,
        **kwargs: Any,
    ) -> list[str]:
        """Upsert texts with their metadata (ids default to new UUIDs, also for None entries, which
        `add_documents` passes for documents without one); returns the ids, durable on return."""
        texts = list(texts)
        if metadatas is not None and len(metadatas) != len(texts):
            raise InvalidInputError(f"{len(metadatas)} metadatas for {len(texts)} texts")
        if ids is not None and len(ids) != len(texts):
            raise InvalidInputError(f"{len(ids)} ids for {len(texts)} texts")
        if kwargs:
            raise InvalidInputError(f"add_texts takes no options {sorted(kwargs)}")
        given: list[str | None] = list(ids) if ids is not None else [None] * len(texts)
        ids_out = [str(i) if i is not None else str(uuid.uuid4()) for i in given]
        self.collection.upsert(
            {"id": doc_id, "text": text, "metadata": (metadatas or [{}] * len(texts))[i] or {}}
            for i, (doc_id, text) in enumerate(zip(ids_out, texts))
        )
        return ids_out

    def delete(self, ids: list[str] | None = None, **kwargs: Any) -> bool | None:
        """Delete documents by id; True when all of them existed."""
        if not ids:
            raise InvalidInputError("give the ids of the documents to delete")
        return self.collection.delete(ids) == len(set(ids))

    def get_by_ids(self, ids: Sequence[str], /) -> list[Document]:
        """The stored documents among `ids` (unknown ids are left out, as LangChain expects)."""
        return [
            Document(page_content=d.text or "", metadata=dict(d.metadata), id=d.id)
            for d in self.collection.get(list(ids))
            if d is not None
        ]

    def similarity_search_with_score(
        self, query: str, k: int = 4, filter: dict[str, Any] | None = None, **kwargs: Any
    ) -> list[tuple[Document, float]]:
        """The `k` best documents and their fused scores; `kwargs` override mode, weights, fusion, candidates,
        rerank."""
        unknown = set(kwargs) - set(self.search_options)
        if unknown:
            raise InvalidInputError(
                f"unknown search options {sorted(unknown)}; use {', '.join(self.search_options)} or filter"
            )
        hits = self.collection.search(query, k, filter=filter, **{**self.search_options, **kwargs})
        return [(_document(hit), hit.score) for hit in hits]

    def similarity_search(
        self, query: str, k: int = 4, filter: dict[str, Any] | None = None, **kwargs: Any
    ) -> list[Document]:
        """The `k` best documents for `query` (hybrid search), after `filter` (m3search's filter syntax)."""
        return [doc for doc, _ in self.similarity_search_with_score(query, k, filter, **kwargs)]

    @classmethod
    def from_texts(
        cls,
        texts: list[str],
        embedding: Embeddings | None = None,
        metadatas: list[dict] | None = None,
        *,
        collection: Any = None,
        ids: list[str] | None = None,
        **kwargs: Any,
    ) -> M3SearchVectorStore:
        """A store over `collection` (required) holding `texts`; `kwargs` are the store's search options.

        `embedding` may only be m3search's own: the collection encodes with its model.
        """
        if collection is None:
            raise InvalidInputError("from_texts needs collection= (a Collection or a server collection)")
        if embedding is not None and not isinstance(embedding, M3SearchEmbeddings):
            raise InvalidInputError(
                f"{type(embedding).__name__} cannot embed for an m3search collection: it encodes texts with "
                "its own model (pass embedding=None)"
            )
        store = cls(collection, **kwargs)
        store.add_texts(texts, metadatas, ids=ids)
        return store
