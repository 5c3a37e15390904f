"""In-memory and memory-mapped search structures: dense ANN, sparse inverted index, ColBERT token store.

Each structure indexes the rows of one immutable segment (or the in-memory incremental level) and answers for
row numbers; `m3search.store` maps rows to documents and `m3search.search` combines the structures. Names load
on first use (the dense index brings faiss).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from m3search.lazy import lazy_exports

#: Public name -> the module that defines it.
_EXPORTS = {
    "DenseIndex": "m3search.index.dense",
    "MultiVectorStore": "m3search.index.multivector",
    "MultiVectorWriter": "m3search.index.multivector",
    "SparseIndex": "m3search.index.sparse",
    "top_k": "m3search.index.topk",
}

if TYPE_CHECKING:
    from m3search.index.dense import DenseIndex
    from m3search.index.multivector import MultiVectorStore, MultiVectorWriter
    from m3search.index.sparse import SparseIndex
    from m3search.index.topk import top_k

__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)

__all__ = ["DenseIndex", "MultiVectorStore", "MultiVectorWriter", "SparseIndex", "top_k"]
