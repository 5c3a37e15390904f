"""Index ranges: the one numpy idiom both the sparse forward index and the ColBERT store read rows with."""

from __future__ import annotations

import numpy as np


def concat_ranges(starts: np.ndarray, ends: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The indices of the ranges `[starts[i], ends[i])`, concatenated, and where each range begins in them (no
    Python loop over ranges: a query reads hundreds)."""
    lengths = ends - starts
    firsts = np.cumsum(lengths) - lengths
    return np.arange(int(lengths.sum())) + np.repeat(starts - firsts, lengths), firsts
