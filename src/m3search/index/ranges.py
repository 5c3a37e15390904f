"""Index ranges: the numpy idioms the sparse forward index and the ColBERT store read and copy rows with."""

from __future__ import annotations

import numpy as np


def concat_ranges(starts: np.ndarray, ends: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The indices of the ranges `[starts[i], ends[i])`, concatenated, and where each range begins in them (no
    Python loop over ranges: a query reads hundreds)."""
    lengths = ends - starts
    firsts = np.cumsum(lengths) - lengths
    return np.arange(int(lengths.sum())) + np.repeat(starts - firsts, lengths), firsts


def consecutive_runs(groups: np.ndarray, rows: np.ndarray) -> list[tuple[int, int, int]]:
    """(group, first row, end row) of each run of consecutive increasing `rows` within one group, in order: what
    a merge copies at once instead of row by row."""
    if len(rows) == 0:
        return []
    breaks = np.flatnonzero((np.diff(groups) != 0) | (np.diff(rows) != 1)) + 1
    firsts = np.concatenate([[0], breaks])
    lasts = np.concatenate([breaks, [len(rows)]]) - 1
    return list(zip(groups[firsts].tolist(), rows[firsts].tolist(), (rows[lasts] + 1).tolist()))
