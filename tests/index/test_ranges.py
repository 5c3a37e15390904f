"""Index ranges: the runs a merge copies at once."""

from __future__ import annotations

import numpy as np

from m3search.index.ranges import consecutive_runs


def test_consecutive_runs_split_at_a_new_group_or_a_gap_and_keep_the_order():
    groups = np.array([0, 0, 0, 1, 1, 0, 0, 2])
    rows = np.array([3, 4, 6, 0, 1, 7, 8, 5])
    assert consecutive_runs(groups, rows) == [(0, 3, 5), (0, 6, 7), (1, 0, 2), (0, 7, 9), (2, 5, 6)]
    runs = consecutive_runs(groups, rows)
    assert [
        r for _, first, end in runs for r in range(first, end)
    ] == rows.tolist()  # every row, once, in order
    assert consecutive_runs(np.array([], np.int64), np.array([], np.int64)) == []
