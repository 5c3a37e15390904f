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


@pytest.mark.parametrize("kind", ["hnsw", "hnsw-sq8"])
def test_gathered_scores_are_the_exact_scores_whichever_stage_found_them(kind: str) -> None:
    """Every candidate's scores equal `score_rows`'s bit for bit, whichever stage found it (sparse candidates keep
    the stage's sums; dense ones are re-scored, since a float32 graph returns its walk's distances)."""
    rng = np.random.default_rng(3)
    levels = [_level(rng, 300, 0, False), _level(rng, 2000, 300, False)]
    graph = levels[1].dense
    graph.ann = build_ann(np.asarray(graph.vectors), kind, PARAMS)  # type: ignore[union-attr]
    for _ in range(10):
        query = QueryVectors(
            levels[1].dense.vectors[rng.integers(0, 2000)].copy(),  # type: ignore[union-attr]
            (np.array([rng.integers(0, 13)], np.int64), np.array([1.0], np.float32)),
        )
        found = gather(levels, query, "dense+sparse", 10, candidates=50, ef_search=64)
        for name in ("dense", "sparse"):
            for key, score in zip(found.keys.tolist(), found.scores[name].tolist()):
                level = levels[key >> 40]
                index = level.dense if name == "dense" else level.sparse
                row = np.array([key & ((1 << 40) - 1)])
                exact = index.score_rows(query.dense if name == "dense" else query.sparse, row)[0]  # type: ignore[union-attr]
                assert score == exact
