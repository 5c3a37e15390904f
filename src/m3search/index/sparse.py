"""Exact sparse (lexical) search: an inverted index over token ids with float32 impact weights.

The index is a compressed sparse column matrix (rows = documents, columns = the token ids that occur): a query
gathers the posting list of each of its tokens and adds `w_query * w_doc` into a score array, which is the
bge-m3 lexical score (and the BM25 score when the weights are BM25's) with no approximation. Columns hold only
the tokens present, so a 250k-token vocabulary costs nothing for small segments. Arrays are plain `.npy` files,
memory-mapped when loaded.

A posting is 6 bytes: the float32 weight (exact, never quantized) and the row's low 16 bits (uint16). Rows are
grouped in blocks of 65,536; each posting list is split into *runs*, one per block it touches, and a run
records its block number and where it starts (`run_block`, `run_start`; `term_runs[j]` is term j's first run).
A run costs 12 bytes, and there are at most (tokens × blocks) of them — a few bytes per document — against the
2 bytes saved on every one of the ~50 postings of a document.

Top-k stays exact but skips work the MaxScore way: posting lists are read shortest (rarest token) first, and
once the upper bound of what the remaining lists can add to an unseen document (Σ w_query · max w_doc) falls
below the current k-th best score, the long lists of common tokens are only looked up for the documents
already in contention instead of being gathered whole; after each such list, the contenders that can no longer
reach the k-th best partial score drop out.

Those lookups, and the scores of given rows (a hybrid query's dense-only candidates), read a *forward* index
while the rows are few and scattered: each row's postings as positions in the inverted arrays (uint32,
ascending, so grouped by term), 4 bytes a posting. A position tells its term by the list range it falls in, and
its weight is the posting's own. Otherwise (and in segments written before it, which have none) each list is
searched for the rows in order, galloping from where the last row was found; the sums are the same either way.

Hand-written because text search engines (Lucene, Tantivy) quantize or re-derive the weights and scipy's sparse
products have neither an allowed-row mask nor early termination; the query path is compiled with numba
(`sparse_kernels`), the building and merging here stay numpy.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from m3search.index import sparse_kernels as kernels
from m3search.index.sparse_kernels import BLOCK_BITS, BLOCK_ROWS
from m3search.threads import load_array

#: One sparse vector: (token ids int64, weights float32), ids unique.
SparseRow = tuple[np.ndarray, np.ndarray]

FILES = {
    "terms": "sparse_terms.npy",
    "term_runs": "sparse_term_runs.npy",
    "run_block": "sparse_run_block.npy",
    "run_start": "sparse_run_start.npy",
    "rows": "sparse_rows.npy",
    "weights": "sparse_weights.npy",
    "term_max": "sparse_term_max.npy",
}
#: The forward index (row -> positions of its postings); optional, absent in segments written before it.
FORWARD_FILES = {"fwd_start": "sparse_fwd_start.npy", "fwd_postings": "sparse_fwd_postings.npy"}

#: Before reading a posting list longer than this, check whether the rest can be probed instead. Compiled, a
#: top-10 search took least time with 5,000-10,000 at 100k documents and 10,000-30,000 at 1M (docs/INDEX.md).
PRUNE_CHECK_LENGTH = 10_000
#: The prune check first bounds the k-th best score by the rows of the lists read so far, up to this many
#: postings (the shortest lists: the rarest terms, which the best documents usually contain).
SAMPLE_POSTINGS = 4096
#: Look rows up in the forward index while their postings number at most this many per run that a galloping
#: search would visit. Compiled, at 1M documents (51 postings a row, 16 blocks), 317 random rows took 0.10 ms
#: through the forward index and 0.20 probing; the contenders of a pruned search, denser in each list, were
#: probed fastest (docs/INDEX.md).
FORWARD_POSTINGS_PER_RUN = 256

#: No forward index, no filter: empty arrays, as the compiled query path takes them.
_NO_FORWARD = (np.empty(0, np.int64), np.empty(0, np.uint32))
_NO_MASK = np.empty(0, bool)


_scratch = threading.local()


def _zeros(n: int) -> np.ndarray:
    """`n` float32 zeros to add a search's scores into, this thread's own: the search leaves them zero again,
    so one buffer serves every search instead of a new array whose pages each fault when first written."""
    buffer = getattr(_scratch, "scores", None)
    if buffer is None or len(buffer) < n:
        buffer = _scratch.scores = np.zeros(n, np.float32)
    return buffer[:n]


def compile_query_path() -> None:
    """Compile the sparse query path, or load it from numba's cache (~0.3 s): a search with and without a filter
    and a lookup on a two-row index, with the argument types of every segment's. The first compile after an
    install takes ~20 s; `scripts/install.sh` does it, and a server starts it in the background, so that no
    query waits for it."""
    index = SparseIndex.from_rows(
        [(np.array([1, 2]), np.array([0.5, 0.25], np.float32)), (np.array([2]), np.ones(1, np.float32))]
    )
    query = (np.array([2]), np.ones(1, np.float32))
    index.search(query, 1)
    index.search(query, 1, np.ones(2, bool))
    index.score_rows(query, np.arange(2))


def _plain(array: np.ndarray) -> np.ndarray:
    """A read-only plain ndarray view of `array`."""
    view = np.asarray(array).view()
    view.flags.writeable = False
    return view


def _stable_order(values: np.ndarray, bound: int) -> np.ndarray:
    """`np.argsort(values, kind="stable")` of integers in [0, bound), sorted 16 bits at a time: numpy sorts 16-bit
    keys by radix, so 2 passes at 100k-4G rows take half the time of one merge sort (0.2 s for 5M postings)."""
    order = np.arange(len(values))
    shift = 0
    while shift == 0 or bound > 1 << shift:
        digits = ((values[order] >> shift) & 0xFFFF).astype(np.uint16)
        order = order[np.argsort(digits, kind="stable")]
        shift += 16
    return order


def _query(query: SparseRow) -> tuple[np.ndarray, np.ndarray]:
    """A query's token ids and weights as the compiled query path takes them (own, writable arrays)."""
    ids, qweights = query
    return np.array(ids, np.int64), np.array(qweights, np.float32)


class SparseIndex:
    """Posting lists: term `terms[j]` has runs `term_runs[j]:term_runs[j+1]`; run r holds postings
    `run_start[r]:run_start[r+1]` of block `run_block[r]`, i.e. rows `run_block[r] << 16 | rows[...]`
    (ascending) with `weights[...]`; `term_max[j]` is the largest weight in list j. Forward index: row i's
    postings are at positions `fwd_postings[fwd_start[i]:fwd_start[i+1]]` (ascending) of `rows`/`weights`."""

    def __init__(
        self,
        n_rows: int,
        terms: np.ndarray,
        term_runs: np.ndarray,
        run_block: np.ndarray,
        run_start: np.ndarray,
        rows: np.ndarray,
        weights: np.ndarray,
        term_max: np.ndarray,
        fwd_start: np.ndarray | None = None,
        fwd_postings: np.ndarray | None = None,
    ) -> None:
        self.n_rows = n_rows
        self.terms, self.term_runs, self.run_block, self.run_start = terms, term_runs, run_block, run_start
        self.rows, self.weights, self.term_max = rows, weights, term_max
        self.fwd_start, self.fwd_postings = fwd_start, fwd_postings
        # Queries read plain read-only views of the same memory: the compiled query path then has one version
        # for built and loaded indexes alike, and the numpy code below avoids np.memmap's Python hooks (~2 µs a
        # slice).
        forward = _NO_FORWARD if fwd_start is None or fwd_postings is None else (fwd_start, fwd_postings)
        arrays = tuple(
            map(_plain, (terms, term_runs, run_block, run_start, rows, weights, term_max, *forward))
        )
        self._terms, self._term_runs, self._run_block, self._run_start, self._rows, self._weights = arrays[:6]
        self._index = (*arrays, n_rows)

    def __len__(self) -> int:
        return self.n_rows

    @classmethod
    def from_coo(cls, n_rows: int, rows: np.ndarray, terms: np.ndarray, weights: np.ndarray) -> SparseIndex:
        """Build from (row, token id, weight) triples; (row, token) pairs must be unique."""
        rows = np.asarray(rows, np.int64)
        terms = np.asarray(terms, np.int64)
        if len(terms) and terms.min() >= 0 and terms.max() < np.iinfo(np.int64).max // max(n_rows, 1) - 1:
            # one key: a stable sort finds a merge's lists already in order per source and only merges them
            # (~50 ms for 5M postings from 10 segments, where `lexsort` takes ~700)
            order = np.argsort(terms * n_rows + rows, kind="stable")
        else:
            order = np.lexsort((rows, terms))
        rows, terms, weights = rows[order], terms[order], np.asarray(weights, np.float32)[order]
        blocks = rows >> BLOCK_BITS
        new_term = np.r_[True, terms[1:] != terms[:-1]] if len(terms) else np.empty(0, bool)
        new_run = new_term | np.r_[True, blocks[1:] != blocks[:-1]] if len(terms) else new_term
        run_start = np.append(np.flatnonzero(new_run), len(terms)).astype(np.int64)
        term_first = np.flatnonzero(new_term)
        term_runs = np.append(np.cumsum(new_run)[term_first] - 1, int(new_run.sum())).astype(np.int64)
        term_max = np.maximum.reduceat(weights, term_first) if len(term_first) else np.empty(0, np.float32)
        # the forward index: positions by row; a stable sort keeps each row's positions ascending
        by_row = _stable_order(rows, n_rows).astype(np.uint32 if len(rows) < 2**32 else np.int64)
        fwd_start = np.zeros(n_rows + 1, np.int64)
        np.cumsum(np.bincount(rows, minlength=n_rows), out=fwd_start[1:])
        return cls(
            n_rows,
            terms[term_first],
            term_runs,
            blocks[run_start[:-1]].astype(np.int32),
            run_start,
            (rows & (BLOCK_ROWS - 1)).astype(np.uint16),
            weights,
            term_max.astype(np.float32),
            fwd_start,
            by_row,
        )

    @classmethod
    def from_rows(cls, vectors: Sequence[SparseRow]) -> SparseIndex:
        """Build from one (ids, weights) pair per row."""
        lengths = np.fromiter((len(ids) for ids, _ in vectors), np.int64, len(vectors))
        rows = np.repeat(np.arange(len(vectors), dtype=np.int64), lengths)
        if len(vectors):
            terms = np.concatenate([np.asarray(ids, np.int64) for ids, _ in vectors])
            weights = np.concatenate([np.asarray(w, np.float32) for _, w in vectors])
        else:
            terms, weights = np.empty(0, np.int64), np.empty(0, np.float32)
        return cls.from_coo(len(vectors), rows, terms, weights)

    def _decode(self, first_run: int, end_run: int) -> np.ndarray:
        """The rows of runs `first_run:end_run` (contiguous postings) as int64."""
        starts = self._run_start[first_run : end_run + 1]
        base = np.repeat(self._run_block[first_run:end_run].astype(np.int64) << BLOCK_BITS, np.diff(starts))
        return base + self._rows[starts[0] : starts[-1]]

    def to_coo(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """All (row, token id, weight) triples, for merging segments."""
        lengths = np.diff(self._run_start[self._term_runs])
        terms = np.repeat(self._terms.astype(np.int64), lengths)
        return self._decode(0, len(self._run_block)), terms, self._weights.astype(np.float32)

    def score_rows(self, query: SparseRow, rows: np.ndarray) -> np.ndarray:
        """Exact lexical scores of `query` for the given rows (the sums a search adds, in the same order)."""
        ids, qweights = _query(query)
        return kernels.score_rows(
            self._index, ids, qweights, np.array(rows, np.int64), FORWARD_POSTINGS_PER_RUN
        )

    def search(
        self, query: SparseRow, k: int, allowed: np.ndarray | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """Exact top-k rows sharing a token with `query` among `allowed`: (rows, scores), best first."""
        ids, qweights = _query(query)
        mask = _NO_MASK if allowed is None else allowed
        try:
            return kernels.search(
                self._index, ids, qweights, k, mask, PRUNE_CHECK_LENGTH, SAMPLE_POSTINGS,
                FORWARD_POSTINGS_PER_RUN, _zeros(self.n_rows),
            )  # fmt: skip
        except BaseException:  # a search stopped midway (out of memory) may leave scores behind: a new buffer
            _scratch.scores = None
            raise

    def save(self, directory: Path, forward: bool = True) -> list[Path]:
        """Write the arrays (and the forward index, if built and `forward`) into `directory`; returns the files
        written."""
        paths = []
        files = FILES | FORWARD_FILES if forward and self.fwd_start is not None else FILES
        for name, file in files.items():
            paths.append(directory / file)
            np.save(paths[-1], getattr(self, name))
        return paths

    @classmethod
    def load(cls, directory: Path, n_rows: int) -> SparseIndex:
        """Open saved arrays, memory-mapped; a segment written before the forward index opens without it."""
        arrays = {name: load_array(directory / file, mmap=True) for name, file in FILES.items()}
        if all((directory / file).exists() for file in FORWARD_FILES.values()):
            arrays |= {name: load_array(directory / file, mmap=True) for name, file in FORWARD_FILES.items()}
        return cls(n_rows, **arrays)
