"""Top-k selection over a score array, restricted to allowed rows: what every exact search ends with."""

from __future__ import annotations

import numpy as np


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
