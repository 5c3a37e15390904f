"""Persistent collections: documents, durable writes, immutable segments, filters and the embedding cache.

Names load on first use: `Collection` brings the encoders and indexes, `Document` (what the HTTP client
returns too) does not.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from m3search.lazy import lazy_exports

#: Public name -> the module that defines it.
_EXPORTS = {"Collection": "m3search.store.collection", "Document": "m3search.store.documents"}

if TYPE_CHECKING:
    from m3search.store.collection import Collection
    from m3search.store.documents import Document

__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)

__all__ = ["Collection", "Document"]
