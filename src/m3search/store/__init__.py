"""Persistent collections: documents, durable writes, immutable segments, filters and the embedding cache.

`Collection` loads on first use (it brings the encoders and indexes); `Document` is light.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from m3search.lazy import lazy_exports
from m3search.store.documents import Document

if TYPE_CHECKING:
    from m3search.store.collection import Collection

__getattr__, __dir__ = lazy_exports(__name__, {"Collection": "m3search.store.collection"})

__all__ = ["Collection", "Document"]
