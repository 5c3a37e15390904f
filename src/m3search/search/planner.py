"""The hybrid search plan: which first stages retrieve candidates for a mode, and how they are re-scored.

Modes (the bge-m3 paper's names): `dense`, `sparse` — one exact/ANN top-k; `colbert` — ColBERT re-ranks the
dense top-N (the paper's multi-vector protocol); `dense+sparse` — candidates are dense top-N ∪ sparse top-N,
each scored exactly in both and fused; `all` — the same candidates, scored in all three and fused. A search
runs over *levels* (the immutable segments and the incremental level), each answering in its own rows under
its allowed-row mask (live documents passing the filter), and merges their lists.

Documents that have only a dense vector (images without text) score nothing in sparse and ColBERT; a hybrid
mode would rank them below every text for lack of those parts. A level can mark such rows (`dense_only`): they
are fused from their dense score alone, as if the mode were dense, so images and texts compete on one scale.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from m3search.encoders.base import OutputKind
from m3search.index.dense import DenseIndex
from m3search.index.sparse import SparseIndex, SparseRow
from m3search.index.topk import top_k
from m3search.search.fusion import Fusion, Scaling, rrf_fusion, weighted_fusion
from m3search.search.modes import MODE_KINDS, MODE_STAGES, Mode
from m3search.threads import one_thread


@dataclass
class SearchLevel:
    """One searchable unit: row -> seq, the rows a query may return, and the structures it has."""

    seqs: np.ndarray
    allowed: np.ndarray | None
    dense: DenseIndex | None
    sparse: SparseIndex | None
    #: (query token vectors, rows) -> ColBERT scores, or None when the level stores none.
    colbert: Callable[[np.ndarray, np.ndarray], np.ndarray] | None
    #: Rows with only a dense vector (see the module docstring); None when there are none to tell apart.
    dense_only: np.ndarray | None = None


@dataclass
class QueryVectors:
    """An encoded query: the outputs a mode needs."""

    dense: np.ndarray | None = None
    sparse: SparseRow | None = None
    colbert: np.ndarray | None = None


@dataclass
class Scored:
    """A result before documents are looked up: its seq, fused score and per-kind scores."""

    seq: int
    score: float
    scores: dict[str, float] = field(default_factory=dict)


def execute(
    levels: Sequence[SearchLevel],
    query: QueryVectors,
    mode: Mode,
    k: int,
    *,
    candidates: int,
    weights: Mapping[OutputKind, float],
    fusion: Fusion,
    ef_search: int | None = None,
    normalize: Scaling = "none",
) -> list[Scored]:
    """Run `mode` over `levels`; returns at most `k` results, best first. `normalize`: how weighted fusion
    rescales each kind's scores over the candidates (`m3search.search.fusion`)."""
    with one_thread():
        return _execute(levels, query, mode, k, candidates, weights, fusion, ef_search, normalize)


def _execute(
    levels: Sequence[SearchLevel],
    query: QueryVectors,
    mode: Mode,
    k: int,
    candidates: int,
    weights: Mapping[OutputKind, float],
    fusion: Fusion,
    ef_search: int | None,
    normalize: Scaling,
) -> list[Scored]:
    kinds, stages = MODE_KINDS[mode], MODE_STAGES[mode]
    depth = k if mode in ("dense", "sparse") else max(k, candidates)
    levels = [lv if lv.allowed is None or lv.allowed.any() else None for lv in levels]
    lists: dict[OutputKind, tuple[np.ndarray, np.ndarray]] = {}
    for stage in stages:
        lists[stage] = _first_stage(levels, query, stage, depth, ef_search)
    # candidates: the union of the stage lists, first-seen order
    level_ids = np.concatenate([lists[s][0] for s in stages])
    rows = np.concatenate([lists[s][1] for s in stages])
    keys = level_ids.astype(np.int64) << 40 | rows
    _, first = np.unique(keys, return_index=True)
    first.sort()
    level_ids, rows, keys = level_ids[first], rows[first], keys[first]
    if len(rows) == 0:
        return []
    scores = {kind: _score(levels, query, kind, level_ids, rows) for kind in kinds}
    if len(kinds) == 1:
        fused = scores[kinds[0]].astype(np.float64)
    elif fusion == "weighted":
        fused = weighted_fusion(scores, weights, normalize)
    else:
        fused = rrf_fusion({kind: _ranks(kind, lists, keys, scores) for kind in kinds}, weights)
    if len(kinds) > 1 and "dense" in kinds:
        only = _dense_only(levels, level_ids, rows)
        if only.any():
            alone = (
                weighted_fusion({"dense": scores["dense"]}, {"dense": 1.0}, normalize)
                if fusion == "weighted"
                else rrf_fusion(
                    {"dense": _ranks("dense", lists, keys, scores)}, {"dense": sum(weights.values())}
                )
            )
            fused = np.where(only, alone, fused)
    picked, _ = top_k(fused, k)
    seqs = [int(levels[li].seqs[r]) for li, r in zip(level_ids[picked], rows[picked])]
    return [
        Scored(seq, float(fused[i]), {kind: float(scores[kind][i]) for kind in kinds})
        for seq, i in zip(seqs, picked)
    ]


def _first_stage(
    levels: Sequence[SearchLevel | None],
    query: QueryVectors,
    stage: OutputKind,
    depth: int,
    ef_search: int | None,
) -> tuple[np.ndarray, np.ndarray]:
    """The best `depth` (level, row) pairs over all levels by `stage`, best first, with exact scores."""
    found_levels, found_rows, found_scores = [], [], []
    for li, level in enumerate(levels):
        if level is None:
            continue
        if stage == "dense" and level.dense is not None:
            rows, _ = level.dense.search(query.dense, depth, level.allowed, ef_search)
            scores = level.dense.score_rows(query.dense, rows)
        elif stage == "sparse" and level.sparse is not None:
            rows, scores = level.sparse.search(query.sparse, depth, level.allowed)
        else:
            continue
        found_levels.append(np.full(len(rows), li, np.int64))
        found_rows.append(rows)
        found_scores.append(scores)
    if not found_rows:
        return np.empty(0, np.int64), np.empty(0, np.int64)
    all_scores = np.concatenate(found_scores)
    best, _ = top_k(all_scores, depth)
    return np.concatenate(found_levels)[best], np.concatenate(found_rows)[best]


def _score(
    levels: Sequence[SearchLevel | None],
    query: QueryVectors,
    kind: OutputKind,
    level_ids: np.ndarray,
    rows: np.ndarray,
) -> np.ndarray:
    """Exact `kind` scores of the candidates, level by level."""
    out = np.zeros(len(rows), np.float32)
    for li in np.unique(level_ids):
        level = levels[li]
        sel = level_ids == li
        if kind == "dense" and level.dense is not None:
            out[sel] = level.dense.score_rows(query.dense, rows[sel])
        elif kind == "sparse" and level.sparse is not None:
            out[sel] = level.sparse.score_rows(query.sparse, rows[sel])
        elif kind == "colbert" and level.colbert is not None:
            out[sel] = level.colbert(query.colbert, rows[sel])
    return out


def _dense_only(levels: Sequence[SearchLevel | None], level_ids: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """Which candidates have only a dense vector."""
    out = np.zeros(len(rows), bool)
    for li in np.unique(level_ids):
        mask = levels[li].dense_only
        if mask is not None and len(mask):
            sel = level_ids == li
            out[sel] = mask[rows[sel]]
    return out


def _ranks(
    kind: OutputKind,
    lists: Mapping[OutputKind, tuple[np.ndarray, np.ndarray]],
    keys: np.ndarray,
    scores: Mapping[OutputKind, np.ndarray],
) -> np.ndarray:
    """1-based rank of each candidate in `kind`'s first-stage list (0 when absent); re-rankers rank them all."""
    if kind in lists:
        stage_keys = lists[kind][0].astype(np.int64) << 40 | lists[kind][1]
        position = {int(key): i + 1 for i, key in enumerate(stage_keys)}
        return np.array([position.get(int(key), 0) for key in keys], np.int64)
    order = np.argsort(-scores[kind], kind="stable")
    ranks = np.empty(len(keys), np.int64)
    ranks[order] = np.arange(1, len(keys) + 1)
    return ranks
