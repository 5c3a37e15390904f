"""Fusing the scores of several retrieval modes into one ranking.

Three fusions, each with its default weights per hybrid mode defined once here (`FUSION_WEIGHTS`) and
shared by `Collection.search`, the CLI, the server, the web UI and the evaluation harness:

- `weighted`: the weighted mean of the modes' scores, Σ w·score / Σ w over the modes in use — with
  `normalize="none"` exactly the bge-m3 reference formula (`m3search.scoring.hybrid_scores`).
- `rrf`: reciprocal rank fusion, Σ w / (60 + rank), which needs no score calibration.
- `dbsf`: distribution-based score fusion (as Qdrant ships it): each mode's scores mapped from
  [mean − 3σ, mean + 3σ] over the candidates onto [0, 1], then the weighted mean.

A mode can have nothing to say about a query: BM25 (or a learned lexical head) matches only tokens the query
and a document share, so across languages and scripts its ranking of the candidates is near random, yet min-max
scaling stretches it to the full [0, 1] and RRF gives it a full vote. With `normalize="signal"` (what `auto`
means) each mode's weight is scaled per query by its *signal*, how much of the evidence the query could produce
that mode actually found: for sparse, the best candidate's score over the query's own attainable maximum (its
`sparse_ceiling`: BM25's (k1 + 1)·Σ idf over all the query's tokens, a learned head's self-score); dense and
ColBERT always have a signal of 1. The weighted fusion then min-max scales the scores as before; RRF and DBSF use
the same per-query weights. A query that shares no token with any document gets sparse weight 0, so the other
modes rank exactly as without it. `minmax` is the previous default (Bruch et al. 2022's convex combination,
Weaviate's relativeScore), `none` the reference formula.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Literal

import numpy as np

from m3search.encoders.base import OUTPUT_KINDS, OutputKind
from m3search.errors import InvalidInputError
from m3search.scoring import DEFAULT_WEIGHTS, check_weights
from m3search.search.modes import HYBRID_MODES, MODE_KINDS

Fusion = Literal["weighted", "rrf", "dbsf"]
FUSIONS: tuple[Fusion, ...] = ("weighted", "rrf", "dbsf")
DEFAULT_FUSION: Fusion = "weighted"
Weights = tuple[float, float, float]
"""(dense, sparse, colbert)."""
#: Each fusion's default (dense, sparse, colbert) weights per hybrid mode: the one definition every caller
#: shares (0 for a kind the mode does not fuse). `weighted`: chosen per mode on held-out data (XQuAD-R
#: en→ru,th,tr,vi,zh and SciFact train; docs/RESULTS.md, "Default weights chosen on held-out data"): among the
#: settings within 0.2 point nDCG@10 of the best single mode the mode fuses on every task, the best mean margin
#: over it. One setting for both modes would not do: `all`'s with ColBERT's dropped give BM25 four times dense's
#: weight, which costs `dense+sparse` up to 2 points across languages. RRF and DBSF keep the model card's.
FUSION_WEIGHTS: dict[str, dict[str, Weights]] = {
    "weighted": {"dense+sparse": (0.55, 0.45, 0.0), "all": (0.05, 0.2, 0.75)},
    "rrf": {"dense+sparse": (*DEFAULT_WEIGHTS[:2], 0.0), "all": DEFAULT_WEIGHTS},
    "dbsf": {"dense+sparse": (*DEFAULT_WEIGHTS[:2], 0.0), "all": DEFAULT_WEIGHTS},
}
RRF_K = 60
#: DBSF maps [mean − 3σ, mean + 3σ] onto [0, 1].
DBSF_SIGMAS = 3.0
Normalize = Literal["auto", "none", "minmax", "signal"]
NORMALIZATIONS: tuple[Normalize, ...] = ("auto", "none", "minmax", "signal")
DEFAULT_NORMALIZE: Normalize = "auto"
Scaling = Literal["none", "minmax", "signal"]
"""What `auto` resolves to."""


def default_weights(fusion: str, mode: str) -> Weights:
    """The default (dense, sparse, colbert) weights of `fusion` in the hybrid `mode`."""
    if fusion not in FUSIONS:
        raise InvalidInputError(f"unknown fusion {fusion!r}; choose one of {', '.join(FUSIONS)}")
    if mode not in HYBRID_MODES:
        raise InvalidInputError(
            f"mode {mode!r} fuses nothing; the hybrid modes are {', '.join(HYBRID_MODES)}"
        )
    return FUSION_WEIGHTS[fusion][mode]


def describe_defaults(sep: str = "/") -> str:
    """The default weights of every fusion and hybrid mode, for help texts (`sep` between the weights)."""
    return "; ".join(
        f"{fusion} " + ", ".join(f"{mode} {sep.join(f'{w:g}' for w in ws)}" for mode, ws in modes.items())
        for fusion, modes in FUSION_WEIGHTS.items()
    )


def resolve_normalize(normalize: str) -> Scaling:
    """The normalization a search applies: `auto` is `signal` for every model."""
    if normalize not in NORMALIZATIONS:
        raise InvalidInputError(
            f"unknown score normalization {normalize!r}; choose one of {', '.join(NORMALIZATIONS)}"
        )
    return "signal" if normalize == "auto" else normalize


def minmax(scores: np.ndarray) -> np.ndarray:
    """`scores` rescaled to [0, 1] over the candidates; all zeros when they are all equal (nothing to order)."""
    scores = np.asarray(scores, np.float64)
    if len(scores) == 0:
        return scores
    low, span = scores.min(), np.ptp(scores)
    return (scores - low) / span if span > 0 else np.zeros_like(scores)


def dbsf_scale(scores: np.ndarray) -> np.ndarray:
    """`scores` mapped from [mean − 3σ, mean + 3σ] over the candidates onto [0, 1] (clipped); all zeros when
    they are all equal."""
    scores = np.asarray(scores, np.float64)
    if len(scores) == 0:
        return scores
    mean, sigma = scores.mean(), scores.std()
    if sigma <= 0:
        return np.zeros_like(scores)
    low = mean - DBSF_SIGMAS * sigma
    return np.clip((scores - low) / (2 * DBSF_SIGMAS * sigma), 0.0, 1.0)


def sparse_signal(scores: np.ndarray, ceiling: float | None) -> float:
    """How much of the query's attainable sparse score its best candidate reaches, in [0, 1]; 0 when nothing
    matches, 1 when the ceiling is unknown (the mode is then trusted as before)."""
    if ceiling is None:
        return 1.0
    best = float(np.max(scores)) if len(scores) else 0.0
    if ceiling <= 0 or best <= 0:
        return 0.0
    return min(1.0, best / ceiling)


def mode_weights(
    weights: Sequence[float] | Mapping[str, float] | None, fusion: Fusion, mode: str
) -> dict[OutputKind, float]:
    """Per-kind weights for the kinds the hybrid `mode` scores, from (dense, sparse, colbert) or a
    {kind: weight} map; None: the fusion's default for the mode."""
    kinds = MODE_KINDS[mode]
    if weights is None:
        weights = default_weights(fusion, mode)
    elif fusion not in FUSIONS:
        raise InvalidInputError(f"unknown fusion {fusion!r}; choose one of {', '.join(FUSIONS)}")
    if isinstance(weights, Mapping):
        unknown = set(weights) - set(OUTPUT_KINDS)
        if unknown:
            raise InvalidInputError(
                f"weights name unknown modes {sorted(unknown)}; use dense, sparse, colbert"
            )
        weights = [weights.get(k, 0.0) for k in OUTPUT_KINDS]
    full = dict(zip(OUTPUT_KINDS, check_weights(list(weights))))
    used = {k: full[k] for k in kinds}
    if sum(used.values()) <= 0:
        raise InvalidInputError(f"the weights of {', '.join(kinds)} are all zero")
    return used


def signal_weights(
    weights: Mapping[OutputKind, float],
    scores: Mapping[OutputKind, np.ndarray],
    sparse_ceiling: float | None,
) -> dict[OutputKind, float]:
    """`weights` with sparse's scaled by its per-query `sparse_signal`; when that leaves none, the others
    equally (a mode must still rank)."""
    out = {
        k: w * sparse_signal(scores[k], sparse_ceiling) if k == "sparse" else w for k, w in weights.items()
    }
    if sum(out.values()) <= 0:
        out = {k: 0.0 if k == "sparse" else 1.0 for k in weights}
    return out


def weighted_fusion(
    scores: Mapping[OutputKind, np.ndarray], weights: Mapping[OutputKind, float], normalize: str = "none"
) -> np.ndarray:
    """Σ w·score / Σ w over the weighted kinds (the reference's combined scores), each kind's scores first
    rescaled over the candidates by `minmax` (normalize `minmax` or `signal`) or `dbsf_scale` (`dbsf`)."""
    scalers = {
        "none": lambda s: np.asarray(s, np.float64),
        "minmax": minmax,
        "signal": minmax,
        "dbsf": dbsf_scale,
    }
    if normalize not in scalers:
        raise InvalidInputError(
            f"weighted fusion normalizes with none, minmax, signal or dbsf, got {normalize!r}"
        )
    total = sum(weights.values())
    if total <= 0:
        raise InvalidInputError("the fusion weights are all zero")
    out = np.zeros(len(scores[next(iter(weights))]), np.float64)
    for k, w in weights.items():
        if w > 0:
            out += (w / total) * scalers[normalize](scores[k])
    return out


def rrf_fusion(
    ranks: Mapping[OutputKind, np.ndarray], weights: Mapping[OutputKind, float], k: int = RRF_K
) -> np.ndarray:
    """Σ w / (k + rank) over the kinds; `ranks` are 1-based, 0 where a candidate is absent from that list."""
    parts = []
    for kind, w in weights.items():
        r = np.asarray(ranks[kind], np.float64)
        parts.append(np.where(r > 0, w / (k + r), 0.0))
    return np.sum(parts, axis=0)
