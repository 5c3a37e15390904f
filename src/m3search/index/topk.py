"""Top-k selection over a score array, restricted to allowed rows: what every exact search ends with."""

from __future__ import annotations

import numpy as np

from m3search.index.heap import jit


def top_k(scores: np.ndarray, k: int, allowed: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Rows and scores of the `k` best entries of `scores` (best first), counting only `allowed` rows.

    `allowed` is a boolean mask over rows (None: all rows). Ties keep the lower row first.
    """
    if allowed is not None:
        rows = np.flatnonzero(allowed)
        scores = scores[rows]
    else:
        rows = None
    k = min(k, len(scores))
    if k <= 0:
        return np.empty(0, np.int64), np.empty(0, np.float32)
    if k < len(scores):
        part = np.argpartition(-scores, k - 1)[:k]
    else:
        part = np.arange(len(scores))
    order = part[np.lexsort((part, -scores[part]))]
    picked = order if rows is None else rows[order]
    return picked.astype(np.int64), scores[order].astype(np.float32)


@jit
def best_first(rows: np.ndarray, scores: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """The `k` best of `rows` by their `scores` and those scores, best first; ties keep the list's order
    (`np.argsort(-scores, kind="stable")[:k]`). One compiled call for a short list, where numpy's five calls
    cost ~20 µs once another engine's work has cooled the caches (a graph search's re-scored candidates)."""
    best = np.argsort(-scores, kind="mergesort")[:k]
    return rows[best], scores[best]
