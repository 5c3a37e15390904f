"""Persistent collections: documents, durable writes, immutable segments, filters and the embedding cache."""

from m3search.store.collection import Collection
from m3search.store.documents import Document

__all__ = ["Collection", "Document"]
