"""In-memory and memory-mapped search structures: dense ANN, sparse inverted index, ColBERT token store.

Each structure indexes the rows of one immutable segment (or the in-memory incremental level) and answers for
row numbers; `m3search.store` maps rows to documents and `m3search.search` combines the structures.
"""

from m3search.index.dense import DenseIndex
from m3search.index.multivector import MultiVectorStore, MultiVectorWriter
from m3search.index.sparse import SparseIndex
from m3search.index.topk import top_k

__all__ = ["DenseIndex", "MultiVectorStore", "MultiVectorWriter", "SparseIndex", "top_k"]
