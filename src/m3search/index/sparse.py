"""Exact sparse (lexical) search: an inverted index over token ids with float32 impact weights.

The index is a compressed sparse column matrix (rows = documents, columns = the token ids that occur): a query
gathers the posting list of each of its tokens and adds `w_query * w_doc` into a score array, which is the
bge-m3 lexical score (and the BM25 score when the weights are BM25's) with no approximation. Columns hold only
the tokens present, so a 250k-token vocabulary costs nothing for small segments. Arrays are plain `.npy` files,
memory-mapped when loaded. Hand-written on numpy because text search engines (Lucene, Tantivy) quantize or
re-derive the weights and scipy's sparse products have no allowed-row mask.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from m3search.index.topk import top_k

#: One sparse vector: (token ids int64, weights float32), ids unique.
SparseRow = tuple[np.ndarray, np.ndarray]

FILES = {"terms": "sparse_terms.npy", "indptr": "sparse_indptr.npy", "rows": "sparse_rows.npy",
         "weights": "sparse_weights.npy"}


class SparseIndex:
    """Posting lists: for `terms[j]`, rows `rows[indptr[j]:indptr[j+1]]` with weights `weights[...]`."""

    def __init__(self, n_rows: int, terms: np.ndarray, indptr: np.ndarray, rows: np.ndarray,
                 weights: np.ndarray) -> None:
        self.n_rows = n_rows
        self.terms, self.indptr, self.rows, self.weights = terms, indptr, rows, weights

    def __len__(self) -> int:
        return self.n_rows

    @classmethod
    def from_coo(cls, n_rows: int, rows: np.ndarray, terms: np.ndarray, weights: np.ndarray) -> "SparseIndex":
        """Build from (row, token id, weight) triples; (row, token) pairs must be unique."""
        rows = np.asarray(rows, np.int64)
        terms = np.asarray(terms, np.int64)
        order = np.lexsort((rows, terms))
        rows, terms, weights = rows[order], terms[order], np.asarray(weights, np.float32)[order]
        uniq, starts = np.unique(terms, return_index=True)
        indptr = np.append(starts, len(terms)).astype(np.int64)
        return cls(n_rows, uniq.astype(np.int64), indptr, rows.astype(np.int32), weights)

    @classmethod
    def from_rows(cls, vectors: Sequence[SparseRow]) -> "SparseIndex":
        """Build from one (ids, weights) pair per row."""
        lengths = np.fromiter((len(ids) for ids, _ in vectors), np.int64, len(vectors))
        rows = np.repeat(np.arange(len(vectors), dtype=np.int64), lengths)
        if len(vectors):
            terms = np.concatenate([np.asarray(ids, np.int64) for ids, _ in vectors])
            weights = np.concatenate([np.asarray(w, np.float32) for _, w in vectors])
        else:
            terms, weights = np.empty(0, np.int64), np.empty(0, np.float32)
        return cls.from_coo(len(vectors), rows, terms, weights)

    def to_coo(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """All (row, token id, weight) triples, for merging segments."""
        lengths = np.diff(self.indptr)
        terms = np.repeat(self.terms, lengths)
        return np.asarray(self.rows, np.int64), terms, np.asarray(self.weights, np.float32)

    def scores(self, query: SparseRow) -> tuple[np.ndarray, np.ndarray]:
        """(scores, matched): the lexical score of every row and whether it shares a token with `query`."""
        ids, qweights = query
        scores = np.zeros(self.n_rows, np.float32)
        matched = np.zeros(self.n_rows, bool)
        if len(ids) == 0 or len(self.terms) == 0:
            return scores, matched
        ids = np.asarray(ids, np.int64)
        pos = np.minimum(np.searchsorted(self.terms, ids), len(self.terms) - 1)
        found = self.terms[pos] == ids
        for p, w in zip(pos[found], np.asarray(qweights, np.float32)[found]):
            start, end = self.indptr[p], self.indptr[p + 1]
            hit = self.rows[start:end]
            scores[hit] += w * self.weights[start:end]
            matched[hit] = True
        return scores, matched

    def search(self, query: SparseRow, k: int, allowed: np.ndarray | None = None
               ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Exact top-k rows sharing a token with `query` among `allowed`: (rows, scores, all row scores)."""
        scores, matched = self.scores(query)
        mask = matched if allowed is None else matched & allowed
        rows, top = top_k(scores, k, mask)
        return rows, top, scores

    def save(self, directory: Path) -> list[Path]:
        """Write the four arrays into `directory`; returns the files written."""
        paths = []
        for name, file in FILES.items():
            paths.append(directory / file)
            np.save(paths[-1], getattr(self, name))
        return paths

    @classmethod
    def load(cls, directory: Path, n_rows: int) -> "SparseIndex":
        """Open saved arrays, memory-mapped."""
        arrays = {name: np.load(directory / file, mmap_mode="r") for name, file in FILES.items()}
        return cls(n_rows, **arrays)
