"""Fusing the scores of several retrieval modes into one ranking.

`weighted` is the bge-m3 reference formula (`m3search.scoring.hybrid_scores`): the weighted mean of the modes'
raw scores, weights normalized over the modes in use (dense+sparse: (w_d·d + w_s·s)/(w_d + w_s)). `rrf` is
reciprocal rank fusion, Σ_mode w_mode / (60 + rank), which needs no score calibration; its weights are all 1
unless given.

The reference mean assumes the modes' scores share a scale, as bge-m3's do. BM25 scores (tens) do not share
one with cosines (< 1) and would swamp them, so weighted fusion can first rescale each mode's scores over the
candidate set to [0, 1] (`minmax`: the convex combination of Bruch et al. 2022, Weaviate's relativeScore,
Elastic's linear min-max). `auto` keeps the exact reference formula when the sparse weights come from the
model and min-max normalizes when they come from BM25.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Literal

import numpy as np

from m3search.encoders.base import OUTPUT_KINDS, OutputKind
from m3search.errors import InvalidInputError
from m3search.scoring import DEFAULT_WEIGHTS, check_weights

Fusion = Literal["weighted", "rrf"]
FUSIONS: tuple[Fusion, ...] = ("weighted", "rrf")
RRF_K = 60
Normalize = Literal["auto", "none", "minmax"]
NORMALIZATIONS: tuple[Normalize, ...] = ("auto", "none", "minmax")
Scaling = Literal["none", "minmax"]
"""What `auto` resolves to for a collection."""


def resolve_normalize(normalize: str, sparse_source: str | None) -> Scaling:
    """The normalization weighted fusion applies: `auto` is min-max for BM25 sparse weights, else none."""
    if normalize not in NORMALIZATIONS:
        raise InvalidInputError(
            f"unknown score normalization {normalize!r}; choose one of {', '.join(NORMALIZATIONS)}"
        )
    if normalize == "auto":
        return "minmax" if sparse_source == "bm25" else "none"
    return normalize  # type: ignore[return-value]


def minmax(scores: np.ndarray) -> np.ndarray:
    """`scores` rescaled to [0, 1] over the candidates; all zeros when they are all equal (nothing to order)."""
    scores = np.asarray(scores, np.float64)
    if len(scores) == 0:
        return scores
    low, span = scores.min(), np.ptp(scores)
    return (scores - low) / span if span > 0 else np.zeros_like(scores)


def mode_weights(
    weights: Sequence[float] | Mapping[str, float] | None, fusion: Fusion, kinds: Sequence[OutputKind]
) -> dict[OutputKind, float]:
    """Per-kind weights for the kinds a mode scores, from (dense, sparse, colbert) or a {kind: weight} map."""
    if fusion not in FUSIONS:
        raise InvalidInputError(f"unknown fusion {fusion!r}; choose one of {', '.join(FUSIONS)}")
    if weights is None:
        weights = DEFAULT_WEIGHTS if fusion == "weighted" else (1.0, 1.0, 1.0)
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


def weighted_fusion(
    scores: Mapping[OutputKind, np.ndarray], weights: Mapping[OutputKind, float], normalize: Scaling = "none"
) -> np.ndarray:
    """Σ w·score / Σ w over the weighted kinds (the reference's combined scores), each kind's scores first
    rescaled by `minmax` over the candidates when `normalize` says so."""
    if normalize not in ("none", "minmax"):
        raise InvalidInputError(f"weighted fusion normalizes with none or minmax, got {normalize!r}")
    scale = minmax if normalize == "minmax" else (lambda s: np.asarray(s, np.float64))
    total = sum(weights.values())
    return sum((weights[k] / total) * scale(scores[k]) for k in weights)


def rrf_fusion(
    ranks: Mapping[OutputKind, np.ndarray], weights: Mapping[OutputKind, float], k: int = RRF_K
) -> np.ndarray:
    """Σ w / (k + rank) over the kinds; `ranks` are 1-based, 0 where a candidate is absent from that list."""
    out = None
    for kind, w in weights.items():
        r = np.asarray(ranks[kind], np.float64)
        part = np.where(r > 0, w / (k + r), 0.0)
        out = part if out is None else out + part
    return out
