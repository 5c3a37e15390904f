"""The planner's shortcut for one-stage modes against the general path it stands for."""

from __future__ import annotations

import numpy as np
import pytest

from m3search.index.dense import DenseIndex, HNSWParams, build_ann
from m3search.index.sparse import SparseIndex
from m3search.search.modes import ONE_STAGE_MODES
from m3search.search.planner import QueryVectors, SearchLevel, fuse, gather, one_stage

DIM = 16
#: Graphs for small levels, so that one level is searched through HNSW.
PARAMS = HNSWParams(m=8, ef_construction=40, min_rows=100)


def _level(rng: np.random.Generator, n: int, first_seq: int, graph: bool) -> SearchLevel:
    """A level of `n` rows whose dense vectors and sparse rows repeat, so that many scores tie."""
    base = rng.standard_normal((max(2, n // 4), DIM)).astype(np.float32)
    base /= np.linalg.norm(base, axis=1, keepdims=True)
    dense = base[rng.integers(0, len(base), n)]
    ann = build_ann(dense, "hnsw", PARAMS) if graph else None
    rows = [
        (np.array([t, t + 1], np.int64), np.array([1.0, 0.5], np.float32))
        for t in rng.integers(0, 12, n).tolist()
    ]
    allowed = rng.random(n) > 0.3
    return SearchLevel(
        np.arange(first_seq, first_seq + n),
        allowed,
        DenseIndex(dense, ann, PARAMS),
        SparseIndex.from_rows(rows),
        None,
    )


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("mode", ONE_STAGE_MODES)
def test_one_stage_returns_what_fusing_its_candidates_returns(seed: int, mode: str) -> None:
    rng = np.random.default_rng(seed)
    # a flat level, a graph level, one with nothing allowed and one left out (None in the search's view)
    levels = [_level(rng, 300, 0, False), _level(rng, 2000, 300, True), _level(rng, 50, 2300, False)]
    levels[2].allowed = np.zeros(50, bool)
    for _ in range(20):
        query = QueryVectors(
            levels[0].dense.vectors[rng.integers(0, 300)].copy(),  # type: ignore[union-attr]
            (np.array([rng.integers(0, 13)], np.int64), np.array([1.0], np.float32)),
        )
        for k in (1, 10, 400):
            general = fuse(
                gather(levels, query, mode, k, candidates=k, ef_search=64),  # type: ignore[arg-type]
                mode,  # type: ignore[arg-type]
                k,
                weights={mode: 1.0},
                fusion="weighted",
            )
            assert one_stage(levels, query, mode, k, 64) == general  # type: ignore[arg-type]


def test_one_stage_refuses_a_fused_mode() -> None:
    with pytest.raises(ValueError, match="fuses"):
        one_stage([], QueryVectors(), "dense+sparse", 10)
