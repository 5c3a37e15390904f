"""The incremental level: acknowledged documents not yet sealed into a segment, kept in RAM and searched exactly.

Its durable copy is the `pending` table; this is the in-memory mirror (dense, sparse and the metadata JSON that
filters read; ColBERT vectors are large and are read from the database for the few candidates that need them).
It stays small because the collection seals it into a segment every `flush_docs` documents.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import numpy as np

from m3search.index.dense import DenseIndex
from m3search.index.multivector import MultiVectorStore
from m3search.index.sparse import SparseIndex, SparseRow
from m3search.search.planner import SearchLevel
from m3search.store.metadata import MetadataIndex

#: seqs -> {seq: float16 token matrix} for those that have ColBERT vectors.
ColbertFetch = Callable[[list[int]], dict[int, np.ndarray]]


#: The sparse row of a document without one (an image alone).
_NO_TERMS: SparseRow = (np.empty(0, np.int64), np.empty(0, np.float32))


class StaleReadError(Exception):
    """Rows this (reader's) version holds were sealed or deleted by another process since it loaded."""


class PendingLevel:
    """seq -> (dense, sparse, indexed metadata: JSON as read back, or the object as written) of the unsealed
    documents, in seq order, with a cached searchable view and metadata index."""

    def __init__(self, dim: int | None, fetch_colbert: ColbertFetch | None, *, sparse: bool = True) -> None:
        self.dim = dim
        self.sparse = sparse
        self.fetch_colbert = fetch_colbert
        self._rows: dict[int, tuple[np.ndarray | None, SparseRow | None, str | dict[str, Any]]] = {}
        self._with_colbert: set[int] = set()
        self._view: tuple[np.ndarray, DenseIndex | None, SparseIndex | None] | None = None
        self._metadata: MetadataIndex | None = None

    def __len__(self) -> int:
        return len(self._rows)

    def __contains__(self, seq: int) -> bool:
        return seq in self._rows

    def seqs(self) -> list[int]:
        return list(self._rows)

    def add(
        self, rows: Iterable[tuple[int, np.ndarray | None, SparseRow | None, bool, str | dict[str, Any]]]
    ) -> None:
        """Append documents: (seq, dense, sparse, has ColBERT vectors, metadata JSON or object); seqs larger
        than any present."""
        for seq, dense, sparse, has_colbert, metadata in rows:
            self._rows[int(seq)] = (dense, sparse, metadata)
            if has_colbert:
                self._with_colbert.add(int(seq))
        self._changed()

    def remove(self, seqs: Iterable[int]) -> None:
        """Drop documents that are here (others are ignored)."""
        for seq in seqs:
            self._with_colbert.discard(int(seq))
            if self._rows.pop(int(seq), None) is not None:
                self._changed()

    def clear(self) -> None:
        self._rows.clear()
        self._with_colbert.clear()
        self._changed()

    def _changed(self) -> None:
        self._view = None
        self._metadata = None

    def metadata_index(self) -> MetadataIndex:
        """The metadata index of the rows (in seq order), built on first use after a change."""
        if self._metadata is None:
            self._metadata = MetadataIndex.build(m for _, _, m in self._rows.values())
        return self._metadata

    def level(self, allowed: np.ndarray | None) -> SearchLevel:
        """A searchable view; `allowed` (a mask over the rows in seq order) restricts the rows a query may
        return."""
        if self._view is None:
            seqs = np.fromiter(self._rows, np.int64, len(self._rows))
            rows = list(self._rows.values())
            dense = None
            if self.dim is not None and rows and rows[0][0] is not None:
                dense = DenseIndex(np.stack([d for d, _, _ in rows]).astype(np.float32))  # type: ignore[misc]
            elif self.dim is not None:
                dense = DenseIndex(np.empty((0, self.dim), np.float32))
            sparse = None
            if self.sparse and rows:  # images alone have no sparse vector: an empty row
                sparse = SparseIndex.from_rows([s if s is not None else _NO_TERMS for _, s, _ in rows])
            self._view = (seqs, dense, sparse)
        seqs, dense, sparse = self._view
        return SearchLevel(
            seqs, allowed, dense, sparse, self._colbert_scorer(seqs) if self.fetch_colbert else None
        )

    def _colbert_scorer(self, seqs: np.ndarray) -> Callable[[np.ndarray, np.ndarray], np.ndarray]:
        fetch = self.fetch_colbert
        assert fetch is not None  # a scorer is made only when the level can fetch ColBERT vectors

        def score(query: np.ndarray, rows: np.ndarray) -> np.ndarray:
            wanted = [int(seqs[r]) for r in rows]
            found = fetch(wanted)
            if any(s in self._with_colbert and s not in found for s in wanted):
                raise StaleReadError("pending rows were sealed or deleted by another process")
            store = MultiVectorStore.from_rows([found.get(s) for s in wanted], dim=query.shape[1])
            return store.maxsim(query, np.arange(len(wanted)))

        return score
