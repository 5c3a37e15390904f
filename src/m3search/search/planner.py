"""The hybrid search plan: which first stages retrieve candidates for a mode, and how they are re-scored.

Modes (the bge-m3 paper's names): `dense`, `sparse` — one exact/ANN top-k; `colbert` — ColBERT re-ranks the
dense top-N (the paper's multi-vector protocol); `dense+sparse` — candidates are dense top-N ∪ sparse top-N,
each scored exactly in both and fused; `all` — the same candidates, scored in all three and fused. ColBERT, the
costly kind, is a cascade's last step: with a re-rank depth R it scores only the R best candidates by the
mode's other kinds (`RERANK_PRIOR`: the exact dense score in `colbert`), and the mode ranks those R. A search
runs over *levels* (the immutable segments and the incremental level), each answering in its own rows under
its allowed-row mask (live documents passing the filter), and merges their lists.

Documents that have only a dense vector (images without text) score nothing in sparse and ColBERT; a hybrid
mode would rank them below every text for lack of those parts. A level can mark such rows (`dense_only`): they
are fused from their dense score alone, as if the mode were dense, so images and texts compete on one scale.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from m3search.encoders.base import OutputKind
from m3search.errors import InvalidInputError
from m3search.index.dense import DenseIndex
from m3search.index.sparse import SparseIndex, SparseRow
from m3search.index.topk import top_k
from m3search.search.fusion import Fusion, Scaling, rrf_fusion, signal_weights, weighted_fusion
from m3search.search.modes import MODE_KINDS, MODE_STAGES, ONE_STAGE_MODES, RERANK_PRIOR, Mode

#: Candidates per first stage up to `CANDIDATES_BASE_DOCS` documents; `default_candidates` grows it beyond.
CANDIDATES_BASE = 100
CANDIDATES_BASE_DOCS = 100_000
CANDIDATES_MAX = 1000


def default_candidates(count: int) -> int:
    """Candidates per first stage for a collection of `count` documents: 100 up to 100,000 documents, then
    100·√(count / 100,000), at most 1,000 (317 at 1M). Measured dense+sparse recall@10 against exhaustive
    search (docs/INDEX.md): 0.994 at 100k with 100; at 1M 0.923 with 100 and 0.963 with 300."""
    if count < 0:
        raise InvalidInputError(f"a document count is not negative, got {count}")
    grown = math.ceil(CANDIDATES_BASE * math.sqrt(count / CANDIDATES_BASE_DOCS))
    return min(CANDIDATES_MAX, max(CANDIDATES_BASE, grown))


def stage_depth(mode: Mode, k: int, candidates: int) -> int:
    """How deep each first stage of `mode` searches: k where its one stage is the answer, else `candidates`
    (at least k)."""
    return k if mode in ONE_STAGE_MODES else max(k, candidates)


#: How many candidates ColBERT re-scores by default in modes colbert and all (`Collection.search`'s `rerank`).
RERANK_DEFAULT = 200


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
    #: (query token vectors, rows) -> exact ColBERT scores from kept float16 copies, and how many of the search's
    #: best candidates by the compressed score get them (`colbert_recheck`); None/0 without re-check.
    colbert_exact: Callable[[np.ndarray, np.ndarray], np.ndarray] | None = None
    colbert_recheck: int = 0


@dataclass
class QueryVectors:
    """An encoded query: the outputs a mode needs."""

    dense: np.ndarray | None = None
    sparse: SparseRow | None = None
    colbert: np.ndarray | None = None
    #: The highest sparse score a document could reach for this query (`m3search.search.fusion`); None: unknown.
    sparse_ceiling: float | None = None


@dataclass
class Candidates:
    """A mode's candidates before fusion, from any storage: one key per candidate, the first-stage lists that
    found them (keys, best first), each kind's exact scores, and which candidates have only a dense vector."""

    keys: np.ndarray
    lists: dict[OutputKind, np.ndarray]
    scores: dict[OutputKind, np.ndarray]
    dense_only: np.ndarray | None = None
    #: candidate positions -> their ColBERT scores, asked by `fuse` for the ones the re-rank depth keeps (then
    #: `scores` lacks "colbert"); None when the mode has no ColBERT.
    late: Callable[[np.ndarray], np.ndarray] | None = None


#: A level's candidate key is `level << 40 | row`.
ROW_MASK = (1 << 40) - 1


def gather(
    levels: Sequence[SearchLevel],
    query: QueryVectors,
    mode: Mode,
    k: int,
    *,
    candidates: int,
    ef_search: int | None = None,
) -> Candidates:
    """`mode`'s candidates over `levels` (keys `level << 40 | row`) with their exact scores (ColBERT's on demand:
    `Candidates.late`)."""
    kinds, stages = MODE_KINDS[mode], MODE_STAGES[mode]
    depth = stage_depth(mode, k, candidates)
    lists: dict[OutputKind, tuple[np.ndarray, np.ndarray, np.ndarray]] = {}
    for stage in stages:
        lists[stage] = _merged(_level_lists(levels, query, stage, depth, ef_search, k), depth)
    stage_keys = {s: lists[s][0] << 40 | lists[s][1] for s in stages}
    if len(stages) == 1:  # one list: its keys are distinct already
        (level_ids, rows, _), keys = lists[stages[0]], stage_keys[stages[0]]
    else:  # the union of the stage lists, first-seen order
        level_ids = np.concatenate([lists[s][0] for s in stages])
        rows = np.concatenate([lists[s][1] for s in stages])
        keys = np.concatenate([stage_keys[s] for s in stages])
        _, first = np.unique(keys, return_index=True)
        first.sort()
        level_ids, rows, keys = level_ids[first], rows[first], keys[first]
    if len(rows) == 0:
        return Candidates(keys, {}, {})
    scores: dict[OutputKind, np.ndarray] = {}
    for kind in scored_early(mode):  # ColBERT's on demand, below
        if kind in lists and len(stages) == 1:  # the one list's exact scores, which ordered it
            scores[kind] = lists[kind][2]
        elif kind == "sparse" and kind in lists:
            # the sparse first stage's scores are the sums `score_rows` adds, in the same order: only the
            # candidates it did not return are scored (dense ones are all re-scored: a graph without 8-bit codes
            # returns faiss's walk distances, whose rounding may differ from `DenseIndex.score_rows`'s)
            scores[kind] = _score_known(
                levels, query, kind, level_ids, rows, keys, stage_keys[kind], lists[kind][2]
            )
        else:
            scores[kind] = _score(levels, query, kind, level_ids, rows)
    return Candidates(
        keys,
        stage_keys,
        scores,
        _dense_only(levels, level_ids, rows) if len(kinds) > 1 and "dense" in kinds else None,
        (lambda at: _score(levels, query, "colbert", level_ids[at], rows[at]))
        if "colbert" in kinds
        else None,
    )


def one_stage(
    levels: Sequence[SearchLevel],
    query: QueryVectors,
    mode: Mode,
    k: int,
    ef_search: int | None = None,
) -> list[tuple[int, float, dict[str, float]]]:
    """What `fuse(gather(...))` returns for a one-stage mode, without the candidate bookkeeping: the stage's
    top k, best first, is already the ranking (fusing a single kind keeps its exact scores and their order).
    One-stage searches are the cheapest, so the layer's fixed cost is a large share of them (docs/INDEX.md)."""
    if mode not in ONE_STAGE_MODES:
        raise ValueError(f"mode {mode!r} fuses several stages")
    (stage,) = MODE_STAGES[mode]
    found = _level_lists(levels, query, stage, k, ef_search, k)
    # one level's keys made without numpy calls (docs/INDEX.md, "Fewer numpy calls in a short search")
    if len(found) == 1:
        li, rows, scores = found[0]
        keys = [li << 40 | row for row in rows.tolist()]
    else:
        level_ids, rows, scores = _merged(found, k)
        keys = (level_ids << 40 | rows).tolist()
    return [(key, score, {stage: score}) for key, score in zip(keys, scores.tolist())]


def scored_early(mode: Mode) -> tuple[OutputKind, ...]:
    """The kinds every candidate of `mode` is scored in before fusion: its own and its cascade's prior, all
    but ColBERT (scored on demand: `Candidates.late`)."""
    return tuple(k for k in dict.fromkeys((*RERANK_PRIOR.get(mode, ()), *MODE_KINDS[mode])) if k != "colbert")


def fuse(
    found: Candidates,
    mode: Mode,
    k: int,
    *,
    weights: Mapping[OutputKind, float],
    fusion: Fusion,
    normalize: Scaling = "none",
    sparse_ceiling: float | None = None,
    rerank: int | None = None,
) -> list[tuple[int, float, dict[str, float]]]:
    """The `k` best candidates by `mode`'s fused score: (key, fused score, per-kind scores), best first.
    Storage-independent: every backend's candidates are ranked by this one function. `sparse_ceiling`: the
    query's best attainable sparse score, which `signal` normalization weighs the sparse mode by. `rerank`:
    how many candidates ColBERT scores, at least `k` (the module docstring's cascade; None: all)."""
    kinds = MODE_KINDS[mode]
    if len(found.keys) == 0:
        return []
    if found.late is not None:
        depth = None if rerank is None else max(rerank, k)  # never fewer results than asked for
        found = _rerank(found, mode, depth, weights, fusion, normalize, sparse_ceiling)
    fused = _fused(found, kinds, weights, fusion, normalize, sparse_ceiling)
    picked, _ = top_k(fused, k)
    return [
        (int(found.keys[i]), float(fused[i]), {kind: float(found.scores[kind][i]) for kind in kinds})
        for i in picked
    ]


def _rerank(
    found: Candidates,
    mode: Mode,
    rerank: int | None,
    weights: Mapping[OutputKind, float],
    fusion: Fusion,
    normalize: Scaling,
    sparse_ceiling: float | None,
) -> Candidates:
    """The candidates ColBERT scores, with those scores: the `rerank` best by the fusion of the mode's prior
    kinds (`RERANK_PRIOR`: dense in mode colbert), or all of them."""
    n = len(found.keys)
    if rerank is None or rerank >= n:
        at = np.arange(n)
    else:
        before = RERANK_PRIOR[mode]
        shares = {kind: weights.get(kind, 0.0) for kind in before}
        if sum(shares.values()) <= 0:  # ColBERT alone weighted: the prior kinds choose its candidates equally
            shares = dict.fromkeys(before, 1.0)
        prior = _fused(found, before, shares, fusion, normalize, sparse_ceiling)
        at = np.sort(top_k(prior, rerank)[0])
    assert found.late is not None
    scores = {kind: column[at] for kind, column in found.scores.items()}
    scores["colbert"] = found.late(at)
    only = None if found.dense_only is None else found.dense_only[at]
    return Candidates(found.keys[at], found.lists, scores, only)


def _fused(
    found: Candidates,
    kinds: Sequence[OutputKind],
    weights: Mapping[OutputKind, float],
    fusion: Fusion,
    normalize: Scaling,
    sparse_ceiling: float | None,
) -> np.ndarray:
    """Every candidate's fused score over `kinds` (a single kind's: its own score)."""
    scores = found.scores
    if len(kinds) == 1:
        return scores[kinds[0]].astype(np.float64)
    if normalize == "signal" and "sparse" in kinds:
        weights = signal_weights(weights, scores, sparse_ceiling)
    fused = _fuse(scores, weights, fusion, normalize, lambda kind: _ranks(kind, found))
    only = found.dense_only
    if only is not None and only.any():  # scored by dense alone, with the whole weight
        alone = _fuse(
            {"dense": scores["dense"]},
            {"dense": sum(weights.values())},
            fusion,
            normalize,
            lambda kind: _ranks(kind, found),
        )
        fused = np.where(only, alone, fused)
    return fused


def _fuse(
    scores: Mapping[OutputKind, np.ndarray],
    weights: Mapping[OutputKind, float],
    fusion: Fusion,
    normalize: Scaling,
    ranks: Callable[[OutputKind], np.ndarray],
) -> np.ndarray:
    """The fused scores of the candidates under `fusion`; `ranks(kind)` gives a kind's 1-based ranks for RRF."""
    if fusion == "rrf":
        return rrf_fusion({kind: ranks(kind) for kind in weights}, weights)
    return weighted_fusion(scores, weights, "dbsf" if fusion == "dbsf" else normalize)


def _level_lists(
    levels: Sequence[SearchLevel],
    query: QueryVectors,
    stage: OutputKind,
    depth: int,
    ef_search: int | None,
    k: int,
) -> list[tuple[int, np.ndarray, np.ndarray]]:
    """Each level's best `depth` rows by `stage`, best first: (level, rows, exact scores) for the levels that
    found any; the dense graph orders the best `k` exactly, the rest of the depth are candidates."""
    found = []
    for li, level in enumerate(levels):
        if not len(level.seqs) or (level.allowed is not None and not level.allowed.any()):
            continue  # (nothing to call: an empty incremental level, or no row allowed)
        if stage == "dense" and level.dense is not None and query.dense is not None:
            rows, scores = level.dense.search(query.dense, depth, level.allowed, ef_search, exact_top=k)
        elif stage == "sparse" and level.sparse is not None and query.sparse is not None:
            rows, scores = level.sparse.search(query.sparse, depth, level.allowed)
        else:
            continue
        if len(rows):
            found.append((li, rows, scores))
    return found


def _merged(
    found: list[tuple[int, np.ndarray, np.ndarray]], depth: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The best `depth` of the levels' lists (`_level_lists`), best first: (levels, rows, scores)."""
    if not found:
        return np.empty(0, np.int64), np.empty(0, np.int64), np.empty(0, np.float32)
    level_ids = [np.full(len(rows), li, np.int64) for li, rows, _ in found]
    if len(found) == 1:  # one level's list, best first by these very scores
        return level_ids[0], found[0][1], found[0][2]
    best, scores = top_k(np.concatenate([scores for _, _, scores in found]), depth)
    return np.concatenate(level_ids)[best], np.concatenate([rows for _, rows, _ in found])[best], scores


def _score(
    levels: Sequence[SearchLevel],
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
    return _recheck(levels, query, level_ids, rows, out) if kind == "colbert" else out


def _score_known(
    levels: Sequence[SearchLevel],
    query: QueryVectors,
    kind: OutputKind,
    level_ids: np.ndarray,
    rows: np.ndarray,
    keys: np.ndarray,
    known_keys: np.ndarray,
    known_scores: np.ndarray,
) -> np.ndarray:
    """Exact `kind` scores of the candidates (`keys`), taken from `known_scores` where `known_keys` has them."""
    out = np.empty(len(keys), np.float32)
    at, found = _positions(known_keys, keys)
    out[found] = known_scores[at[found]]
    missing = ~found
    if missing.any():
        out[missing] = _score(levels, query, kind, level_ids[missing], rows[missing])
    return out


def _recheck(
    levels: Sequence[SearchLevel],
    query: QueryVectors,
    level_ids: np.ndarray,
    rows: np.ndarray,
    scores: np.ndarray,
) -> np.ndarray:
    """The search's M best candidates by the compressed ColBERT score get their exact score: M over all levels
    together, so that a ranking does not depend on how the rows happen to be split into segments."""
    m = max((lv.colbert_recheck for lv in levels if lv.colbert_exact is not None), default=0)
    if m == 0 or query.colbert is None:
        return scores
    top = np.argsort(-scores, kind="stable")[:m]
    for li in np.unique(level_ids[top]):
        exact = levels[li].colbert_exact
        if exact is not None:
            sel = top[level_ids[top] == li]
            scores[sel] = exact(query.colbert, rows[sel])
    return scores


def _dense_only(levels: Sequence[SearchLevel], level_ids: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """Which candidates have only a dense vector."""
    out = np.zeros(len(rows), bool)
    for li in np.unique(level_ids):
        mask = levels[li].dense_only
        if mask is not None and len(mask):
            sel = level_ids == li
            out[sel] = mask[rows[sel]]
    return out


def _positions(listed: np.ndarray, keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Where each of `keys` sits in `listed` (distinct keys), and whether it is there at all (positions of
    absent keys are meaningless)."""
    if len(listed) == 0:
        return np.zeros(len(keys), np.int64), np.zeros(len(keys), bool)
    order = np.argsort(listed)
    at = order[np.minimum(np.searchsorted(listed, keys, sorter=order), len(order) - 1)]
    return at, listed[at] == keys


def _ranks(kind: OutputKind, found: Candidates) -> np.ndarray:
    """1-based rank of each candidate in `kind`'s first-stage list (0 when absent); re-rankers rank them all."""
    if kind in found.lists:
        at, listed = _positions(found.lists[kind], found.keys)
        return np.where(listed, at + 1, 0).astype(np.int64)
    order = np.argsort(-found.scores[kind], kind="stable")
    ranks = np.empty(len(found.keys), np.int64)
    ranks[order] = np.arange(1, len(found.keys) + 1)
    return ranks
