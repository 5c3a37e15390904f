"""Exact sparse (lexical) search: an inverted index over token ids with float32 impact weights.

The index is a compressed sparse column matrix (rows = documents, columns = the token ids that occur): a query
gathers the posting list of each of its tokens and adds `w_query * w_doc` into a score array, which is the
bge-m3 lexical score (and the BM25 score when the weights are BM25's) with no approximation. Columns hold only
the tokens present, so a 250k-token vocabulary costs nothing for small segments. Arrays are plain `.npy` files,
memory-mapped when loaded.

Top-k stays exact but skips work the MaxScore way: posting lists are read shortest (rarest token) first, and
once the upper bound of what the remaining lists can add to an unseen document (Σ w_query · max w_doc) falls
below the current k-th best score, the long lists of common tokens are only probed for the documents already
in contention (binary search in the sorted list) instead of being gathered whole.

Hand-written on numpy because text search engines (Lucene, Tantivy) quantize or re-derive the weights and
scipy's sparse products have neither an allowed-row mask nor early termination.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from m3search.index.topk import top_k

#: One sparse vector: (token ids int64, weights float32), ids unique.
SparseRow = tuple[np.ndarray, np.ndarray]

FILES = {"terms": "sparse_terms.npy", "indptr": "sparse_indptr.npy", "rows": "sparse_rows.npy",
         "weights": "sparse_weights.npy", "term_max": "sparse_term_max.npy"}

#: Before reading a posting list longer than this, check whether the rest can be probed instead.
PRUNE_CHECK_LENGTH = 20_000


class SparseIndex:
    """Posting lists: for `terms[j]`, rows `rows[indptr[j]:indptr[j+1]]` (ascending) with `weights[...]`;
    `term_max[j]` is the largest weight in list j."""

    def __init__(self, n_rows: int, terms: np.ndarray, indptr: np.ndarray, rows: np.ndarray,
                 weights: np.ndarray, term_max: np.ndarray) -> None:
        self.n_rows = n_rows
        self.terms, self.indptr, self.rows, self.weights, self.term_max = terms, indptr, rows, weights, term_max

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
        term_max = np.maximum.reduceat(weights, starts) if len(starts) else np.empty(0, np.float32)
        return cls(n_rows, uniq.astype(np.int64), indptr, rows.astype(np.int32), weights,
                   term_max.astype(np.float32))

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

    def _lists(self, query: SparseRow) -> list[tuple[int, int, float, float]]:
        """(start, end, query weight, upper bound) of the query tokens present, shortest list first."""
        ids, qweights = query
        if len(ids) == 0 or len(self.terms) == 0:
            return []
        ids = np.asarray(ids, np.int64)
        qweights = np.asarray(qweights, np.float32)
        pos = np.minimum(np.searchsorted(self.terms, ids), len(self.terms) - 1)
        found = self.terms[pos] == ids
        lists = [(int(self.indptr[p]), int(self.indptr[p + 1]), float(w), float(w * self.term_max[p]))
                 for p, w in zip(pos[found], qweights[found])]
        return sorted(lists, key=lambda t: t[1] - t[0])

    def _probe(self, start: int, end: int, weight: float, rows: np.ndarray, out: np.ndarray) -> None:
        """Add `weight * w_doc` of one posting list to `out` for the given rows (binary search)."""
        plist = self.rows[start:end]
        pos = np.minimum(np.searchsorted(plist, rows), len(plist) - 1)
        hit = plist[pos] == rows
        out[hit] += weight * self.weights[start + pos[hit]]

    def score_rows(self, query: SparseRow, rows: np.ndarray) -> np.ndarray:
        """Exact lexical scores of `query` for the given rows."""
        rows = np.asarray(rows, np.int64)
        out = np.zeros(len(rows), np.float32)
        for start, end, weight, _ in self._lists(query):
            self._probe(start, end, weight, rows, out)
        return out

    def search(self, query: SparseRow, k: int, allowed: np.ndarray | None = None
               ) -> tuple[np.ndarray, np.ndarray]:
        """Exact top-k rows sharing a token with `query` among `allowed`: (rows, scores), best first."""
        lists = self._lists(query)
        scores = np.zeros(self.n_rows, np.float32)
        matched = np.zeros(self.n_rows, bool)
        prunable = all(w > 0 for _, _, w, _ in lists)  # bounds hold for non-negative weights (validated)
        remaining = sum(u for *_, u in lists)
        for i, (start, end, weight, upper) in enumerate(lists):
            if prunable and end - start > PRUNE_CHECK_LENGTH and k > 0:
                contenders = np.flatnonzero(matched if allowed is None else matched & allowed)
                if len(contenders) >= k:
                    threshold = np.partition(scores[contenders], len(contenders) - k)[len(contenders) - k]
                    if remaining < threshold:  # no unseen document can reach the top k any more
                        return self._finish(lists[i:], contenders, scores, remaining, threshold, k)
            hit = self.rows[start:end]
            scores[hit] += weight * self.weights[start:end]
            matched[hit] = True
            remaining -= upper
        return top_k(scores, k, matched if allowed is None else matched & allowed)

    def _finish(self, rest: list[tuple[int, int, float, float]], contenders: np.ndarray, scores: np.ndarray,
                remaining: float, threshold: float, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Complete the scores of the documents that can still make the top k by probing the remaining lists."""
        alive = contenders[scores[contenders] + remaining >= threshold]
        partial = scores[alive]
        for start, end, weight, _ in rest:
            self._probe(start, end, weight, alive, partial)
        picked, best = top_k(partial, k)
        return alive[picked], best

    def save(self, directory: Path) -> list[Path]:
        """Write the arrays into `directory`; returns the files written."""
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
