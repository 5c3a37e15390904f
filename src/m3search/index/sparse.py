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
while the rows are few: each row's postings as positions in the inverted arrays (uint32, ascending, so grouped
by term), 4 bytes a posting. A position tells its term by the list range it falls in, and its weight is the
posting's own, so the lookup is one vectorized gather instead of a binary search per query token and block
(~230 a query at 1M documents). Segments written before it have none; their lookups binary-search the sorted
runs, with the same sums in the same order.

Hand-written on numpy because text search engines (Lucene, Tantivy) quantize or re-derive the weights and
scipy's sparse products have neither an allowed-row mask nor early termination.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from m3search.index.ranges import concat_ranges
from m3search.index.topk import top_k
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

#: Rows per block: a posting stores its row's offset within the block as uint16.
BLOCK_BITS = 16
BLOCK_ROWS = 1 << BLOCK_BITS
#: Before reading a posting list longer than this, check whether the rest can be probed instead.
PRUNE_CHECK_LENGTH = 20_000
#: The prune check first bounds the k-th best score by the rows of the lists read so far, up to this many
#: postings (the shortest lists: the rarest terms, which the best documents usually contain).
SAMPLE_POSTINGS = 4096
#: Look rows up in the forward index while their postings number at most this many per run that binary search
#: would visit. At 1M documents (51 postings a row, 16 blocks) the forward index took 0.75 ms for 317 rows where
#: probing took 2.25, broke even near 1,600 postings a run and was 4x slower at ~19,000 (docs/INDEX.md).
FORWARD_POSTINGS_PER_RUN = 1024

#: A posting list: (first run, end run, query weight, upper bound of its contribution, postings).
_List = tuple[int, int, float, float, int]


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
        # Queries read plain views of the same memory: every slice of an np.memmap runs Python hooks (~2 µs),
        # and a query takes dozens.
        self._terms, self._term_runs, self._run_block, self._run_start = map(
            np.asarray, (terms, term_runs, run_block, run_start)
        )
        self._rows, self._weights, self._term_max = map(np.asarray, (rows, weights, term_max))
        self._forward = (
            None
            if fwd_start is None or fwd_postings is None
            else (np.asarray(fwd_start), np.asarray(fwd_postings))
        )

    def __len__(self) -> int:
        return self.n_rows

    @classmethod
    def from_coo(cls, n_rows: int, rows: np.ndarray, terms: np.ndarray, weights: np.ndarray) -> SparseIndex:
        """Build from (row, token id, weight) triples; (row, token) pairs must be unique."""
        rows = np.asarray(rows, np.int64)
        terms = np.asarray(terms, np.int64)
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
        by_row = np.argsort(rows, kind="stable").astype(np.uint32 if len(rows) < 2**32 else np.int64)
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

    def _lists(self, query: SparseRow) -> list[_List]:
        """(first run, end run, query weight, upper bound, postings) of the query tokens present, shortest list
        first (equal lengths in query order)."""
        ids, qweights = query
        if len(ids) == 0 or len(self._terms) == 0:
            return []
        ids = np.asarray(ids, np.int64)
        qweights = np.asarray(qweights, np.float32)
        pos = np.minimum(np.searchsorted(self._terms, ids), len(self._terms) - 1)
        found = self._terms[pos] == ids
        pos, qweights = pos[found], qweights[found]
        first, end = self._term_runs[pos], self._term_runs[pos + 1]
        lengths = self._run_start[end] - self._run_start[first]
        order = np.argsort(lengths, kind="stable")
        return list(
            zip(
                first[order].tolist(),
                end[order].tolist(),
                qweights[order].tolist(),
                (qweights * self._term_max[pos])[order].tolist(),
                lengths[order].tolist(),
            )
        )

    def _add(self, plist: _List, scores: np.ndarray, matched: np.ndarray | None) -> np.ndarray | None:
        """Add `weight * w_doc` of a whole posting list into `scores`, run by run: a run's uint16 offsets index
        its block's slice (no int64 rows decoded). `matched` marks the rows met so far; None while every
        contribution was positive (then a positive score is the mark). Returns `matched` (made from the scores
        when a contribution is not positive: a product that underflowed to 0)."""
        first_run, end_run, weight = plist[0], plist[1], plist[2]
        starts = self._run_start[first_run : end_run + 1].tolist()
        for block, start, end in zip(self._run_block[first_run:end_run].tolist(), starts, starts[1:]):
            base = block << BLOCK_BITS
            offsets = self._rows[start:end]
            contributions = weight * self._weights[start:end]
            if matched is None and not contributions.min() > 0:
                matched = scores > 0
            np.add.at(scores[base : base + BLOCK_ROWS], offsets, contributions)  # offsets are distinct
            if matched is not None:
                matched[base : base + BLOCK_ROWS][offsets] = True
        return matched

    def _probe(self, plist: _List, blocks: np.ndarray, offsets: np.ndarray, out: np.ndarray) -> None:
        """Add `weight * w_doc` of one posting list to `out` for ascending rows given as their `blocks` and
        uint16 `offsets` (binary search in each block's run)."""
        first_run, end_run, weight = plist[0], plist[1], plist[2]
        run_blocks = self._run_block[first_run:end_run]
        los = np.searchsorted(blocks, run_blocks, "left").tolist()
        his = np.searchsorted(blocks, run_blocks, "right").tolist()
        starts = self._run_start[first_run : end_run + 1].tolist()
        for start, end, lo, hi in zip(starts, starts[1:], los, his):
            if lo == hi:
                continue
            postings = self._rows[start:end]
            want = offsets[lo:hi]
            pos = np.minimum(np.searchsorted(postings, want), len(postings) - 1)
            hit = postings[pos] == want
            out[lo:hi][hit] += weight * self._weights[start + pos[hit]]

    def _forward_for(self, n_rows: int, lists: Sequence[_List]) -> tuple[np.ndarray, np.ndarray] | None:
        """The forward index's arrays when looking `n_rows` rows up in them beats probing `lists` for them (their
        postings are at most `FORWARD_POSTINGS_PER_RUN` per run binary search would visit), else None."""
        if self._forward is None:
            return None
        postings = n_rows * len(self._weights) / max(self.n_rows, 1)
        pays = postings <= FORWARD_POSTINGS_PER_RUN * sum(plist[1] - plist[0] for plist in lists)
        return self._forward if pays else None

    def _lookup(self, lists: Sequence[_List], rows: np.ndarray, out: np.ndarray) -> None:
        """Add the posting lists' contributions to `out` for the given ascending rows: from the forward index
        when it pays (`_forward_for`), else by binary search. Either way each row's float32 sum adds the lists
        in their order, so scores agree to the bit with `search`'s."""
        if not lists or not len(rows):
            return
        forward = self._forward_for(len(rows), lists)
        if forward is None:
            self._probe_all(lists, rows, out)
        else:
            self._forward_add(forward, lists, rows, out)

    def _forward_add(
        self,
        forward: tuple[np.ndarray, np.ndarray],
        lists: Sequence[_List],
        rows: np.ndarray,
        out: np.ndarray,
    ) -> None:
        """`_lookup` through the forward index's arrays `(fwd_start, fwd_postings)`."""
        fwd_start, fwd_postings = forward
        starts, row_ends = fwd_start[rows], fwd_start[rows + 1]
        lengths = row_ends - starts
        positions = fwd_postings[concat_ranges(starts, row_ends)[0]]
        # the lists' posting ranges [start, end) in position order: a position inside range i belongs to it
        firsts = self._run_start[[plist[0] for plist in lists]]
        ends = self._run_start[[plist[1] for plist in lists]]
        by_start = np.argsort(firsts)
        edges = np.stack([firsts[by_start], ends[by_start]], 1).ravel().astype(positions.dtype)
        at = np.searchsorted(edges, positions, "right")
        hit = np.flatnonzero(at & 1)  # odd: at or after a range's start, before its end
        ranks = by_start[at[hit] >> 1]  # the list each hit belongs to, in `lists` order
        positions = positions[hit]
        owners = np.repeat(np.arange(len(rows)), lengths)[hit]
        weights = np.array([plist[2] for plist in lists], np.float32)[ranks] * self._weights[positions]
        in_order = np.argsort(ranks, kind="stable")
        np.add.at(out, owners[in_order], weights[in_order])  # sequential float32 adds, list by list

    def _probe_all(self, lists: Sequence[_List], rows: np.ndarray, out: np.ndarray) -> None:
        """Add the posting lists' contributions to `out` for the given ascending rows (binary searches)."""
        blocks = rows >> BLOCK_BITS
        offsets = (rows & (BLOCK_ROWS - 1)).astype(np.uint16)
        for plist in lists:
            self._probe(plist, blocks, offsets, out)

    def score_rows(self, query: SparseRow, rows: np.ndarray) -> np.ndarray:
        """Exact lexical scores of `query` for the given rows."""
        rows = np.asarray(rows, np.int64)
        order = np.argsort(rows, kind="stable")
        scores = np.zeros(len(rows), np.float32)
        self._lookup(self._lists(query), rows[order], scores)
        out = np.empty_like(scores)
        out[order] = scores
        return out

    def search(
        self, query: SparseRow, k: int, allowed: np.ndarray | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """Exact top-k rows sharing a token with `query` among `allowed`: (rows, scores), best first."""
        lists = self._lists(query)
        scores = np.zeros(self.n_rows, np.float32)
        positive = all(plist[2] > 0 for plist in lists)  # query weights are validated positive
        # the rows met: those scoring above 0 while every contribution is positive (see `_add`)
        matched = None if positive else np.zeros(self.n_rows, bool)
        prunable = k > 0 and positive  # the bounds hold for non-negative weights
        remaining = sum(plist[3] for plist in lists)
        # the rows of each short list read so far (`_sample_bound`), kept only if a prune check lies ahead
        # (lists come shortest first)
        sampling = prunable and bool(lists) and lists[-1][4] > PRUNE_CHECK_LENGTH
        sample: list[np.ndarray] = []
        sampled = 0
        for i, plist in enumerate(lists):
            if prunable and plist[4] > PRUNE_CHECK_LENGTH:
                bound = self._sample_bound(sample, scores, allowed, k)
                if bound is not None and remaining < bound:  # no unseen document can reach the top k any more
                    can = scores + remaining >= bound  # rows never met score 0: below the bound
                    alive = np.flatnonzero(can if allowed is None else can & allowed)
                    return self._finish(lists[i:], alive, scores[alive], remaining, bound, k)
                met = scores > 0 if matched is None else matched
                contenders = np.flatnonzero(met if allowed is None else met & allowed)
                if len(contenders) >= k:
                    threshold = np.partition(scores[contenders], len(contenders) - k)[len(contenders) - k]
                    if remaining < threshold:
                        alive = contenders[scores[contenders] + remaining >= threshold]
                        return self._finish(lists[i:], alive, scores[alive], remaining, threshold, k)
            matched = self._add(plist, scores, matched)
            if sampling and sampled + plist[4] <= SAMPLE_POSTINGS:
                sample.append(self._decode(plist[0], plist[1]))
                sampled += plist[4]
            remaining -= plist[3]
        met = scores > 0 if matched is None else matched
        return top_k(scores, k, met if allowed is None else met & allowed)

    @staticmethod
    def _sample_bound(
        sample: list[np.ndarray], scores: np.ndarray, allowed: np.ndarray | None, k: int
    ) -> float | None:
        """A lower bound of the k-th best partial score over all allowed rows: the best, over the posting lists
        in `sample` (each a list's rows, distinct), of the k-th best score among a list's allowed rows (None
        when no list has k). The rare terms' short lists make it nearly exact, and it spares the prune check a
        partition of every row met (tens of thousands at 100k documents) when it already proves that the rest
        of the lists cannot change the top k."""
        best = None
        for rows in sample:
            if allowed is not None:
                rows = rows[allowed[rows]]
            if len(rows) >= k:
                kth = float(np.partition(scores[rows], len(rows) - k)[len(rows) - k])
                best = kth if best is None else max(best, kth)
        return best

    def _finish(
        self,
        rest: list[_List],
        alive: np.ndarray,
        partial: np.ndarray,
        remaining: float,
        threshold: float,
        k: int,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Complete the scores of the `alive` rows (ascending, with their `partial` scores), the only ones that
        can still make the top k: list by list (probing), the rows whose partial score plus what the lists left
        can add falls below the k-th best partial score drop out; once the survivors are few enough, the
        forward index adds all the lists left at once."""
        for i, plist in enumerate(rest):
            forward = self._forward_for(len(alive), rest[i:])
            if forward is not None:
                self._forward_add(forward, rest[i:], alive, partial)
                break
            self._probe_all([plist], alive, partial)
            remaining -= plist[3]
            if len(alive) > k:  # partial scores only grow: the k-th best of them bounds the final k-th best
                threshold = max(threshold, np.partition(partial, len(alive) - k)[len(alive) - k])
                keep = partial + remaining >= threshold
                alive, partial = alive[keep], partial[keep]
        picked, best = top_k(partial, k)
        return alive[picked], best

    def save(self, directory: Path, forward: bool = True) -> list[Path]:
        """Write the arrays (and the forward index, if built and `forward`) into `directory`; returns the files
        written."""
        paths = []
        files = FILES | FORWARD_FILES if forward and self._forward is not None else FILES
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
