"""LlamaIndex (`pip install 'm3search[llamaindex]'`, llama-index-core): a vector store with hybrid query mode
(dense + sparse candidates, ColBERT re-scoring) and metadata filters, and an embedding model, over a local
`Collection` or a server collection (`Client(...).collection(name)`).

    from llama_index.core import StorageContext, VectorStoreIndex
    from m3search.integrations.llamaindex import M3SearchEmbedding, M3SearchVectorStore
    store = M3SearchVectorStore(collection)
    index = VectorStoreIndex.from_documents(docs, storage_context=StorageContext.from_defaults(vector_store=store),
                                            embed_model=M3SearchEmbedding.for_collection(collection))
    index.as_retriever(vector_store_query_mode="hybrid", similarity_top_k=5).retrieve("What is BGE M3?")

The collection encodes node texts and query strings with its own model, so the store ignores the embeddings
LlamaIndex computes (`is_embedding_query` is False: queries are sent as text).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from llama_index.core.base.embeddings.base import BaseEmbedding, Embedding
from llama_index.core.bridge.pydantic import PrivateAttr
from llama_index.core.schema import BaseNode, MetadataMode, TextNode
from llama_index.core.vector_stores.types import (
    BasePydanticVectorStore,
    FilterCondition,
    FilterOperator,
    MetadataFilter,
    MetadataFilters,
    VectorStoreQuery,
    VectorStoreQueryMode,
    VectorStoreQueryResult,
)
from llama_index.core.vector_stores.utils import metadata_dict_to_node, node_to_metadata_dict

from m3search.errors import FilterError, InvalidInputError
from m3search.integrations.common import dense_vectors, matching, vector_source
from m3search.search.results import Hit

#: LlamaIndex operators as m3search filter operators (`ANY` and `CONTAINS` on an array field: any element).
_OPERATORS = {
    FilterOperator.EQ: "$eq",
    FilterOperator.NE: "$ne",
    FilterOperator.GT: "$gt",
    FilterOperator.GTE: "$gte",
    FilterOperator.LT: "$lt",
    FilterOperator.LTE: "$lte",
    FilterOperator.IN: "$in",
    FilterOperator.NIN: "$nin",
    FilterOperator.ANY: "$in",
    FilterOperator.CONTAINS: "$eq",
}


def _condition(item: MetadataFilter) -> dict[str, Any]:
    op = FilterOperator(item.operator)
    if op in _OPERATORS:
        return {item.key: {_OPERATORS[op]: item.value}}
    if op == FilterOperator.ALL:
        values = item.value if isinstance(item.value, list) else [item.value]
        return {"$and": [{item.key: v} for v in values]}
    if op == FilterOperator.IS_EMPTY:
        return {"$not": {item.key: {"$exists": True}}}
    raise FilterError(
        f"filter operator {op.value!r} on {item.key!r} has no m3search equivalent (text matching is not a "
        "metadata filter); use ==, !=, >, >=, <, <=, in, nin, any, all, contains or is_empty"
    )


def to_m3search_filter(filters: MetadataFilters | None) -> dict[str, Any] | None:
    """LlamaIndex metadata filters (nested, with AND / OR / NOT) as an m3search filter."""
    if filters is None or not filters.filters:
        return None
    parts = [
        to_m3search_filter(f) if isinstance(f, MetadataFilters) else _condition(f) for f in filters.filters
    ]
    parts = [p for p in parts if p]
    condition = FilterCondition(filters.condition or FilterCondition.AND)
    if condition == FilterCondition.AND:
        return parts[0] if len(parts) == 1 else {"$and": parts}
    if condition == FilterCondition.OR:
        return {"$or": parts}
    return {"$not": {"$or": parts}}  # NOT: none of them holds, as LlamaIndex's own stores read it


def _node(hit: Hit) -> BaseNode:
    """The node as LlamaIndex stored it, or a text node for documents written without LlamaIndex."""
    if "_node_content" in hit.metadata:
        return metadata_dict_to_node(hit.metadata, text=hit.text)
    return TextNode(id_=hit.id, text=hit.text or "", metadata=dict(hit.metadata))


class M3SearchVectorStore(BasePydanticVectorStore):
    """LlamaIndex vector store over an m3search collection.

    Query modes: default (dense), hybrid (`hybrid_mode`, "all" by default: dense and sparse candidates
    re-scored with ColBERT, fused by `fusion` with `weights`), sparse and text_search (lexical only).
    """

    stores_text: bool = True
    is_embedding_query: bool = False
    hybrid_mode: str = "all"
    weights: Sequence[float] | Mapping[str, float] | None = None
    fusion: str = "weighted"
    candidates: int = 100
    rerank: int | None = None

    _collection: Any = PrivateAttr()

    def __init__(self, collection: Any, **fields: Any) -> None:
        super().__init__(**fields)
        self._collection = collection

    @property
    def client(self) -> Any:
        """The m3search collection (local or server)."""
        return self._collection

    def add(self, nodes: Sequence[BaseNode], **add_kwargs: Any) -> list[str]:
        """Upsert the nodes' texts with their metadata (and LlamaIndex's node record, to rebuild them)."""
        records: list[dict[str, Any]] = []
        for node in nodes:
            text = node.get_content(metadata_mode=MetadataMode.NONE)
            if not text.strip():
                raise InvalidInputError(f"node {node.node_id!r} has no text; m3search indexes texts")
            metadata = node_to_metadata_dict(node, remove_text=True, flat_metadata=False)
            records.append({"id": node.node_id, "text": text, "metadata": metadata})
        if records:
            self._collection.upsert(records)
        return [r["id"] for r in records]

    def delete(self, ref_doc_id: str, **delete_kwargs: Any) -> None:
        """Delete every node of the source document `ref_doc_id`."""
        hits = matching(self._collection, {"ref_doc_id": ref_doc_id})
        if hits:
            self._collection.delete([h.id for h in hits])

    def delete_nodes(
        self,
        node_ids: list[str] | None = None,
        filters: MetadataFilters | None = None,
        **delete_kwargs: Any,
    ) -> None:
        """Delete nodes by id, or those `filters` allow (both: the ids among them)."""
        ids = [n.node_id for n in self.get_nodes(node_ids, filters)]
        if ids:
            self._collection.delete(ids)

    def get_nodes(
        self, node_ids: list[str] | None = None, filters: MetadataFilters | None = None
    ) -> list[BaseNode]:
        """The stored nodes with `node_ids` (unknown ones left out), or those `filters` allow (both: the ids
        among them)."""
        if node_ids is None and filters is None:
            raise InvalidInputError("give node_ids, filters, or both")
        spec = to_m3search_filter(filters)
        if node_ids is None:
            return [_node(h) for h in matching(self._collection, spec)]
        docs = [d for d in self._collection.get(node_ids) if d is not None]
        if spec is not None:
            allowed = {h.id for h in matching(self._collection, spec)}
            docs = [d for d in docs if d.id in allowed]
        return [_node(Hit(d.id, 0.0, text=d.text, metadata=d.metadata)) for d in docs]

    def clear(self) -> None:
        """Delete every document of the collection."""
        hits = matching(self._collection, None)
        if hits:
            self._collection.delete([h.id for h in hits])

    def query(self, query: VectorStoreQuery, **kwargs: Any) -> VectorStoreQueryResult:
        """The best nodes for `query.query_str` in the query's mode, after its metadata filters."""
        if not query.query_str:
            raise InvalidInputError("m3search searches by text: the query needs query_str")
        mode = {
            VectorStoreQueryMode.DEFAULT: "dense",
            VectorStoreQueryMode.HYBRID: self.hybrid_mode,
            VectorStoreQueryMode.SPARSE: "sparse",
            VectorStoreQueryMode.TEXT_SEARCH: "sparse",
        }.get(VectorStoreQueryMode(query.mode))
        if mode is None:
            raise InvalidInputError(
                f"query mode {query.mode!r} is not supported; use default, hybrid, sparse or text_search"
            )
        if query.alpha is not None:
            raise InvalidInputError("alpha is not used: set weights= (dense, sparse, colbert) on the store")
        if query.doc_ids or query.node_ids:
            raise InvalidInputError("doc_ids / node_ids restrictions are not supported: use metadata filters")
        hits = self._collection.search(
            query.query_str,
            query.hybrid_top_k or query.similarity_top_k,
            mode=mode,
            weights=self.weights if mode not in ("dense", "sparse") else None,
            fusion=self.fusion,
            filter=to_m3search_filter(query.filters),
            candidates=query.sparse_top_k or self.candidates,
            rerank=self.rerank,
        )
        return VectorStoreQueryResult(
            nodes=[_node(h) for h in hits],
            similarities=[h.score for h in hits],
            ids=[h.id for h in hits],
        )


class M3SearchEmbedding(BaseEmbedding):
    """LlamaIndex embedding model: dense vectors from a local encoder (`TextEncoder`) or a server
    (`Client`), with the model's query and passage prefixes."""

    _source: Any = PrivateAttr()

    def __init__(self, source: Any, **fields: Any) -> None:
        fields.setdefault("model_name", getattr(source, "name", None) or getattr(source, "url", "m3search"))
        super().__init__(**fields)
        self._source = source

    @classmethod
    def for_collection(cls, collection: Any, **fields: Any) -> M3SearchEmbedding:
        """The embedding model of `collection` (its server's, for a server collection)."""
        return cls(vector_source(collection), **fields)

    @classmethod
    def class_name(cls) -> str:
        return "M3SearchEmbedding"

    def _get_query_embedding(self, query: str) -> Embedding:
        return dense_vectors(self._source, [query], is_query=True)[0]

    async def _aget_query_embedding(self, query: str) -> Embedding:
        return self._get_query_embedding(query)

    def _get_text_embedding(self, text: str) -> Embedding:
        return dense_vectors(self._source, [text], is_query=False)[0]

    def _get_text_embeddings(self, texts: list[str]) -> list[Embedding]:
        return dense_vectors(self._source, texts, is_query=False)
