"""Fusing the scores of several retrieval modes into one ranking.

`weighted` is the bge-m3 reference formula (`m3search.scoring.hybrid_scores`): the weighted mean of the modes'
raw scores, weights normalized over the modes in use (dense+sparse: (w_d·d + w_s·s)/(w_d + w_s)). `rrf` is
reciprocal rank fusion, Σ_mode w_mode / (60 + rank), which needs no score calibration; its weights are all 1
unless given.
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


def mode_weights(weights: Sequence[float] | Mapping[str, float] | None, fusion: Fusion,
                 kinds: Sequence[OutputKind]) -> dict[OutputKind, float]:
    """Per-kind weights for the kinds a mode scores, from (dense, sparse, colbert) or a {kind: weight} map."""
    if fusion not in FUSIONS:
        raise InvalidInputError(f"unknown fusion {fusion!r}; choose one of {', '.join(FUSIONS)}")
    if weights is None:
        weights = DEFAULT_WEIGHTS if fusion == "weighted" else (1.0, 1.0, 1.0)
    if isinstance(weights, Mapping):
        unknown = set(weights) - set(OUTPUT_KINDS)
        if unknown:
            raise InvalidInputError(f"weights name unknown modes {sorted(unknown)}; use dense, sparse, colbert")
        weights = [weights.get(k, 0.0) for k in OUTPUT_KINDS]
    full = dict(zip(OUTPUT_KINDS, check_weights(list(weights))))
    used = {k: full[k] for k in kinds}
    if sum(used.values()) <= 0:
        raise InvalidInputError(f"the weights of {', '.join(kinds)} are all zero")
    return used


def weighted_fusion(scores: Mapping[OutputKind, np.ndarray], weights: Mapping[OutputKind, float]) -> np.ndarray:
    """Σ w·score / Σ w over the weighted kinds (the reference's combined scores)."""
    total = sum(weights.values())
    return sum(weights[k] * np.asarray(scores[k], np.float64) for k in weights) / total


def rrf_fusion(ranks: Mapping[OutputKind, np.ndarray], weights: Mapping[OutputKind, float],
               k: int = RRF_K) -> np.ndarray:
    """Σ w / (k + rank) over the kinds; `ranks` are 1-based, 0 where a candidate is absent from that list."""
    out = None
    for kind, w in weights.items():
        r = np.asarray(ranks[kind], np.float64)
        part = np.where(r > 0, w / (k + r), 0.0)
        out = part if out is None else out + part
    return out
