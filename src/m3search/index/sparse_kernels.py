"""The sparse index's query path compiled (numba): a whole top-k search, or the scores of given rows, in one call.

The numpy version made ~60 array calls a search at 100k documents, each a few µs with cold caches: more than
the arithmetic (docs/INDEX.md, issue 20). These run the same algorithm (`sparse.py`'s docstring) with the same
float32 products and sums in the same order, so the same bits, and release the GIL.

`index` is `SparseIndex`'s arrays as one tuple: (terms, term_runs, run_block, run_start, rows, weights,
term_max, fwd_start, fwd_postings, n_rows), the forward index's two arrays empty when the segment has none. A
posting list is given by its first and end run.

Pruning compares in float64 with a margin for float32 rounding (`_margin`): a row is dropped only when even its
largest possible *computed* score stays below the k-th best, so rounding can never drop a row that would tie.
"""

from __future__ import annotations

import numpy as np

from m3search.index.heap import jit, sift_down

#: Rows per block: a posting stores its row's offset within the block as uint16 (`SparseIndex`'s layout).
BLOCK_BITS = 16
BLOCK_ROWS = 1 << BLOCK_BITS
#: A float32 product or sum rounds up by at most this factor (round to nearest: 2^-24 relative).
_ROUND_UP = 2.0**-24
_NEVER = -np.inf


@jit
def _margin(n_lists):
    """What a computed score can exceed its exact value by, as a factor: one product and one sum per list."""
    return 1.0 + 2.0 * (n_lists + 1) * _ROUND_UP


@jit
def query_lists(index, ids, qweights):
    """The query tokens present as posting lists, shortest first (equal lengths in query order): first runs,
    end runs, query weights, upper bounds of their contributions (float64 of the float32 products), lengths."""
    terms, term_runs, run_start, term_max = index[0], index[1], index[3], index[6]
    m = len(ids)
    firsts = np.empty(m, np.int64)
    ends = np.empty(m, np.int64)
    weights = np.empty(m, np.float32)
    bounds = np.empty(m, np.float64)
    lengths = np.empty(m, np.int64)
    n = 0
    for i in range(m):
        j = np.searchsorted(terms, ids[i]) if len(terms) else 0
        if j < len(terms) and terms[j] == ids[i]:
            firsts[n], ends[n] = term_runs[j], term_runs[j + 1]
            lengths[n] = run_start[ends[n]] - run_start[firsts[n]]
            weights[n] = qweights[i]
            bounds[n] = np.float32(qweights[i] * term_max[j])
            n += 1
    order = np.argsort(lengths[:n], kind="mergesort")
    return firsts[order], ends[order], weights[order], bounds[order], lengths[order]


@jit
def _kth(values, k):
    """The k-th largest of `values` (needs len >= k >= 1): a min-heap of the k largest in one pass, where most
    values fail a single comparison with its root (a partition when k is a large part of the values)."""
    n = len(values)
    if k * 8 > n:
        return np.partition(values, n - k)[n - k]
    heap = values[:k].copy()
    for i in range(k // 2 - 1, -1, -1):
        sift_down(heap, i, k)
    for i in range(k, n):
        if values[i] > heap[0]:
            heap[0] = values[i]
            sift_down(heap, 0, k)
    return heap[0]


@jit
def best(rows, scores, k):
    """The `k` best (rows, scores), best first, ties lower row first."""
    n = len(rows)
    k = min(k, n)
    if k <= 0:
        return np.empty(0, np.int64), np.empty(0, np.float32)
    if k < n:
        kth = _kth(scores, k)
        above = scores > kth
        ties = np.sort(rows[scores == kth])[: k - above.sum()]
        picked = np.concatenate((rows[above], ties))
        values = np.concatenate((scores[above], np.full(len(ties), kth, np.float32)))
    else:
        picked, values = rows.copy(), scores.copy()
    by_row = np.argsort(picked, kind="mergesort")
    order = by_row[np.argsort(-values[by_row], kind="mergesort")]
    return picked[order].astype(np.int64), values[order]


@jit
def _lower_bound(values, lo, hi, value):
    """The first position in `values[lo:hi]` (ascending) whose value is >= `value`, or `hi`."""
    while lo < hi:
        mid = (lo + hi) >> 1
        if values[mid] < value:
            lo = mid + 1
        else:
            hi = mid
    return lo


@jit
def _gallop(values, lo, hi, value):
    """`_lower_bound` for a `value` likely near `lo`: steps of 1, 2, 4, ... first, so that a walk through
    ascending values reads a few nearby entries each instead of halving the whole rest."""
    step = 1
    while lo + step < hi and values[lo + step] < value:
        lo += step
        step <<= 1
    return _lower_bound(values, lo, min(lo + step + 1, hi), value)


@jit
def _probe(index, first, end, qweight, alive, out):
    """Add one posting list's `qweight * w_doc` to `out` for the ascending rows `alive` (a galloping search in
    each block's run, each starting where the last left off)."""
    run_block, run_start, rows, weights = index[2], index[3], index[4], index[5]
    for run in range(first, end):
        base = np.int64(run_block[run]) << BLOCK_BITS
        lo = _lower_bound(alive, 0, len(alive), base)
        hi = _lower_bound(alive, lo, len(alive), base + BLOCK_ROWS)
        at, stop = run_start[run], run_start[run + 1]
        for a in range(lo, hi):
            offset = alive[a] - base
            at = _gallop(rows, at, stop, offset)
            if at == stop:
                break
            if rows[at] == offset:
                out[a] += qweight * weights[at]


@jit
def _forward_add(index, firsts, ends, qweights, alive, out):
    """Add every given list's contributions to `out` for the rows `alive` from each row's own postings (the
    forward index: positions ascending); a row adds its lists in their given order."""
    run_start, weights, fwd_start, fwd_postings = index[3], index[5], index[7], index[8]
    starts = np.empty(len(firsts), np.int64)
    for j in range(len(firsts)):
        starts[j] = run_start[firsts[j]]
    by_start = np.argsort(starts)
    sorted_starts = starts[by_start]
    ranks = np.empty(len(firsts), np.int64)
    values = np.empty(len(firsts), np.float32)
    for a in range(len(alive)):
        row = alive[a]
        hits = 0
        for at in range(fwd_start[row], fwd_start[row + 1]):
            position = np.int64(fwd_postings[at])
            q = np.searchsorted(sorted_starts, position, side="right") - 1
            if q < 0:
                continue
            j = by_start[q]
            if position < run_start[ends[j]]:
                h = hits  # insertion by list rank: at most one posting per list
                while h > 0 and ranks[h - 1] > j:
                    ranks[h], values[h] = ranks[h - 1], values[h - 1]
                    h -= 1
                ranks[h], values[h] = j, qweights[j] * weights[position]
                hits += 1
        for h in range(hits):
            out[a] += values[h]


@jit
def _forward_pays(index, firsts, ends, n_alive, forward_per_run):
    """Whether looking `n_alive` rows up in the forward index beats probing the lists: their postings number at
    most `forward_per_run` per run a galloping search would visit."""
    weights, fwd_start, n_rows = index[5], index[7], index[9]
    if len(fwd_start) == 0:
        return False
    runs = 0
    for j in range(len(firsts)):
        runs += ends[j] - firsts[j]
    return n_alive * len(weights) / max(n_rows, 1) <= forward_per_run * runs


@jit
def lookup(index, firsts, ends, qweights, alive, out, forward_per_run):
    """Add the lists' contributions to `out` for the ascending rows `alive`, list by list in order (the forward
    index when it pays, else galloping searches): the same sums as a search's."""
    if len(alive) == 0 or len(firsts) == 0:
        return
    if _forward_pays(index, firsts, ends, len(alive), forward_per_run):
        _forward_add(index, firsts, ends, qweights, alive, out)
    else:
        for j in range(len(firsts)):
            _probe(index, firsts[j], ends[j], qweights[j], alive, out)


@jit
def _finish(index, lists, alive, partial, remaining, threshold, k, margin, forward_per_run):
    """Complete the scores of the ascending rows `alive` (their `partial` scores), the only ones that can still
    make the top k, from the `lists` left (firsts, ends, query weights, bounds): list by list, the rows whose
    partial score plus what the lists left can add falls below the k-th best partial score drop out; once few
    enough, the forward index adds all the rest at once."""
    firsts, ends, qweights, bounds = lists
    for i in range(len(firsts)):
        if _forward_pays(index, firsts[i:], ends[i:], len(alive), forward_per_run):
            _forward_add(index, firsts[i:], ends[i:], qweights[i:], alive, partial)
            break
        _probe(index, firsts[i], ends[i], qweights[i], alive, partial)
        remaining -= bounds[i]
        if len(alive) > k:  # partial scores only grow: the k-th best of them bounds the final k-th best
            threshold = max(threshold, np.float64(_kth(partial, k)))
            keep = (partial + remaining) * margin >= threshold
            alive, partial = alive[keep], partial[keep]
    return best(alive, partial, k)


@jit
def sample_bound(index, scores, firsts, ends, allowed, k):
    """A lower bound of the k-th best partial score over all allowed rows (`allowed` empty: all): the best,
    over the given posting lists (already added), of the k-th best score among one list's allowed rows (its
    rows are distinct); -inf when no list has k. The rare terms' short lists make it nearly exact, at the
    price of a few thousand postings instead of a selection over every row met."""
    run_block, run_start, rows = index[2], index[3], index[4]
    bound = _NEVER
    for j in range(len(firsts)):
        values = np.empty(run_start[ends[j]] - run_start[firsts[j]], np.float32)
        n = 0
        for run in range(firsts[j], ends[j]):
            base = np.int64(run_block[run]) << BLOCK_BITS
            for at in range(run_start[run], run_start[run + 1]):
                row = base + rows[at]
                if len(allowed) == 0 or allowed[row]:
                    values[n] = scores[row]
                    n += 1
        if n >= k:
            bound = max(bound, np.float64(_kth(values[:n], k)))
    return bound


@jit
def _add(index, first, end, qweight, scores, touched, met):
    """Add a whole posting list's `qweight * w_doc` into `scores`, appending the rows met for the first time to
    `touched[met:]`: while every contribution is positive, those whose score was 0. Without a branch on it
    (one mispredicted half the time cost more than the addition). Stops at the first contribution that is not
    positive (a product that underflowed to 0): returns the new `met` and that posting's run and position, or
    `end` when the list is done."""
    run_block, run_start, rows, weights = index[2], index[3], index[4], index[5]
    for run in range(first, end):
        base = np.int64(run_block[run]) << BLOCK_BITS
        for at in range(run_start[run], run_start[run + 1]):
            row = base + rows[at]
            c = qweight * weights[at]
            if not c > 0:
                return met, run, at
            score = scores[row]
            touched[met] = row  # kept only if new: `touched` has room for one more
            met += score == 0
            scores[row] = score + c
    return met, end, 0


@jit
def _add_seen(index, first, end, first_at, qweight, scores, touched, met, seen):
    """`_add` once rows are marked in `seen`, from position `first_at` of run `first` (-1: its start)."""
    run_block, run_start, rows, weights = index[2], index[3], index[4], index[5]
    for run in range(first, end):
        base = np.int64(run_block[run]) << BLOCK_BITS
        for at in range(first_at if run == first and first_at >= 0 else run_start[run], run_start[run + 1]):
            row = base + rows[at]
            if not seen[row]:
                seen[row] = True
                touched[met] = row
                met += 1
            scores[row] += qweight * weights[at]
    return met


@jit
def _contenders(scores, touched, allowed, remaining, threshold, margin):
    """The rows met (`touched`) that are allowed and whose score plus `remaining` can reach `threshold`,
    ascending."""
    alive = np.empty(len(touched), np.int64)
    n = 0
    for row in touched:
        if (len(allowed) == 0 or allowed[row]) and (scores[row] + remaining) * margin >= threshold:
            alive[n] = row
            n += 1
    return np.sort(alive[:n])


@jit
def search(index, ids, qweights, k, allowed, prune_length, sample_postings, forward_per_run, scores):
    """Exact top-k rows sharing a token with the query among `allowed` (empty: all rows), best first.

    Posting lists are added whole, shortest first; before each list longer than `prune_length`, when the k-th
    best partial score (bounded first by the lists of up to `sample_postings` postings read so far) exceeds
    what the lists left can add to an unseen row, the rest is only looked up for the rows still in contention.
    `scores` is `n_rows` zeros to add into, left zeros again (a caller's buffer: allocating it per search cost
    a page fault for every 4 KiB of it that the search touched)."""
    n_rows = index[9]
    firsts, ends, qws, bounds, lengths = query_lists(index, ids, qweights)
    n_lists = len(firsts)
    margin = _margin(n_lists)
    touched = np.empty(min(n_rows, lengths.sum()) + 1, np.int64)  # the rows met, in the order met
    met = 0
    seen = np.zeros(0, np.bool_)  # made at the first contribution that is not positive (`_add`)
    prunable = k > 0
    for i in range(n_lists):
        prunable &= qws[i] > 0
    remaining = bounds.sum()
    sampled = 0  # lists [0, sampled) are the prune check's sample
    sampled_postings = 0
    for i in range(n_lists):
        if prunable and lengths[i] > prune_length:
            threshold = sample_bound(index, scores, firsts[:sampled], ends[:sampled], allowed, k)
            if not remaining * margin < threshold:  # bound by every allowed row met
                met_rows = touched[:met]
                values = scores[met_rows[allowed[met_rows]] if len(allowed) else met_rows]
                if len(values) >= k:
                    threshold = max(threshold, np.float64(_kth(values, k)))
            if remaining * margin < threshold:  # no unseen row can reach the top k any more
                alive = _contenders(scores, touched[:met], allowed, remaining, threshold, margin)
                rest = (firsts[i:], ends[i:], qws[i:], bounds[i:])
                found = _finish(
                    index, rest, alive, scores[alive], remaining, threshold, k, margin, forward_per_run
                )
                scores[touched[:met]] = 0
                return found
        if len(seen):
            met = _add_seen(index, firsts[i], ends[i], -1, qws[i], scores, touched, met, seen)
        else:
            met, run, at = _add(index, firsts[i], ends[i], qws[i], scores, touched, met)
            if run < ends[i]:  # a contribution that is not positive: from here on, rows met are marked
                seen = np.zeros(n_rows, np.bool_)
                seen[touched[:met]] = True
                met = _add_seen(index, run, ends[i], at, qws[i], scores, touched, met, seen)
        remaining -= bounds[i]
        if sampled == i and sampled_postings + lengths[i] <= sample_postings:
            sampled += 1
            sampled_postings += lengths[i]
    candidates = touched[:met]
    if len(allowed):
        candidates = candidates[allowed[candidates]]
    found = best(candidates, scores[candidates], k)
    scores[touched[:met]] = 0
    return found


@jit
def score_rows(index, ids, qweights, wanted, forward_per_run):
    """Exact lexical scores of the query for the rows `wanted` (any order), summed as a search sums them."""
    firsts, ends, qws, _, _ = query_lists(index, ids, qweights)
    order = np.argsort(wanted, kind="mergesort")
    scores = np.zeros(len(wanted), np.float32)
    lookup(index, firsts, ends, qws, wanted[order], scores, forward_per_run)
    out = np.empty_like(scores)
    out[order] = scores
    return out
