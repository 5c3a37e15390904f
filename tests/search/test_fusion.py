"""Fusion: weighted = the reference's combined scores; RRF = Σ w / (60 + rank)."""

from __future__ import annotations

import numpy as np
import pytest

from m3search.errors import InvalidInputError
from m3search.scoring import hybrid_scores
from m3search.search.fusion import mode_weights, rrf_fusion, weighted_fusion


@pytest.mark.parametrize("weights", [(0.4, 0.2, 0.4), (1, 1, 1), (0.0, 3.0, 1.0)])
def test_weighted_equals_hybrid_scores(weights):
    rng = np.random.default_rng(0)
    d, s, c = rng.random(20), rng.random(20) * 5, rng.random(20)
    both = weighted_fusion({"dense": d, "sparse": s}, mode_weights(weights, "weighted", ["dense", "sparse"]))
    three = weighted_fusion(
        {"dense": d, "sparse": s, "colbert": c},
        mode_weights(weights, "weighted", ["dense", "sparse", "colbert"]),
    )
    for i in range(20):
        ref = hybrid_scores(d[i], s[i], c[i], weights)
        assert three[i] == pytest.approx(ref["colbert+sparse+dense"])
        if weights[0] + weights[1] > 0:
            assert both[i] == pytest.approx(ref["sparse+dense"])


def test_rrf():
    ranks = {"dense": np.array([1, 2, 0]), "sparse": np.array([0, 1, 2])}
    out = rrf_fusion(ranks, {"dense": 1.0, "sparse": 1.0})
    np.testing.assert_allclose(out, [1 / 61, 1 / 62 + 1 / 61, 1 / 62])


def test_weight_validation():
    assert mode_weights({"dense": 2.0, "sparse": 1.0}, "weighted", ["dense", "sparse"]) == {
        "dense": 2.0,
        "sparse": 1.0,
    }
    assert mode_weights(None, "rrf", ["dense", "sparse"]) == {"dense": 1.0, "sparse": 1.0}
    with pytest.raises(InvalidInputError):
        mode_weights((1, 1), "weighted", ["dense"])
    with pytest.raises(InvalidInputError):
        mode_weights({"bm25": 1.0}, "weighted", ["dense"])
    with pytest.raises(InvalidInputError, match="all zero"):
        mode_weights((0, 0, 1), "weighted", ["dense", "sparse"])
