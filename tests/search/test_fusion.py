"""Fusion: weighted = the reference's combined scores; RRF = Σ w / (60 + rank)."""

from __future__ import annotations

import numpy as np
import pytest

from m3search.encoders.base import OUTPUT_KINDS
from m3search.errors import InvalidInputError
from m3search.scoring import hybrid_scores
from m3search.search.fusion import (
    FUSION_WEIGHTS,
    FUSIONS,
    dbsf_scale,
    default_weights,
    minmax,
    mode_weights,
    rrf_fusion,
    signal_weights,
    sparse_signal,
    weighted_fusion,
)
from m3search.search.modes import HYBRID_MODES, MODE_KINDS


@pytest.mark.parametrize("weights", [(0.4, 0.2, 0.4), (1, 1, 1), (0.0, 3.0, 1.0)])
def test_weighted_equals_hybrid_scores(weights):
    rng = np.random.default_rng(0)
    d, s, c = rng.random(20), rng.random(20) * 5, rng.random(20)
    both = weighted_fusion({"dense": d, "sparse": s}, mode_weights(weights, "weighted", "dense+sparse"))
    three = weighted_fusion(
        {"dense": d, "sparse": s, "colbert": c},
        mode_weights(weights, "weighted", "all"),
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
    assert mode_weights({"dense": 2.0, "sparse": 1.0}, "weighted", "dense+sparse") == {
        "dense": 2.0,
        "sparse": 1.0,
    }
    with pytest.raises(InvalidInputError):
        mode_weights((1, 1), "weighted", "dense+sparse")
    with pytest.raises(InvalidInputError):
        mode_weights({"bm25": 1.0}, "weighted", "dense+sparse")
    with pytest.raises(InvalidInputError, match="all zero"):
        mode_weights((0, 0, 1), "weighted", "dense+sparse")


def test_each_fusion_has_one_default_per_mode_shared_by_mode_weights():
    for fusion in FUSIONS:
        for mode in HYBRID_MODES:
            weights = FUSION_WEIGHTS[fusion][mode]
            assert default_weights(fusion, mode) == weights
            assert mode_weights(None, fusion, mode) == {
                k: weights[OUTPUT_KINDS.index(k)] for k in MODE_KINDS[mode]
            }
            # a kind the mode does not fuse has no default weight to leak into a tuning start or a label
            assert all(w == 0 for k, w in zip(OUTPUT_KINDS, weights) if k not in MODE_KINDS[mode])
    with pytest.raises(InvalidInputError, match="unknown fusion 'borda'"):
        default_weights("borda", "all")
    with pytest.raises(InvalidInputError, match="fuses nothing"):
        default_weights("weighted", "dense")


def test_dbsf_scale_maps_three_sigmas_to_the_unit_interval():
    rng = np.random.default_rng(3)
    x = rng.normal(5.0, 2.0, 200)
    out = dbsf_scale(x)
    mean, sigma = x.mean(), x.std()
    np.testing.assert_allclose(out, np.clip((x - mean + 3 * sigma) / (6 * sigma), 0, 1))
    assert out.min() >= 0 and out.max() <= 1
    np.testing.assert_allclose(dbsf_scale(10 * x + 7), out)  # scale- and offset-free, like min-max
    np.testing.assert_array_equal(dbsf_scale(np.full(5, 0.3)), np.zeros(5))  # nothing to order
    # one outlier barely moves the others, unlike min-max where it squeezes them toward 0
    spiked = np.append(x, 1000.0)
    assert np.ptp(dbsf_scale(spiked)[:-1]) > np.ptp(minmax(spiked)[:-1])


def test_sparse_signal_is_the_share_of_the_attainable_score():
    scores = np.array([0.0, 3.0, 6.0])
    assert sparse_signal(scores, 24.0) == pytest.approx(0.25)
    assert sparse_signal(scores, 4.0) == 1.0  # capped
    assert sparse_signal(np.zeros(3), 24.0) == 0.0  # nothing matched
    assert sparse_signal(np.empty(0), 24.0) == 0.0
    assert sparse_signal(scores, None) == 1.0  # unknown ceiling: trusted as before


def test_signal_weights_scale_only_sparse():
    weights = {"dense": 0.4, "sparse": 0.2, "colbert": 0.4}
    scores = {"dense": np.array([0.8, 0.7]), "sparse": np.array([2.0, 1.0]), "colbert": np.array([0.6, 0.5])}
    out = signal_weights(weights, scores, 20.0)
    assert out == pytest.approx({"dense": 0.4, "sparse": 0.02, "colbert": 0.4})
    # sparse alone and silent: the mode must still rank, so the others (none here) cannot take over
    alone = signal_weights(
        {"dense": 0.0, "sparse": 1.0}, {"dense": scores["dense"], "sparse": np.zeros(2)}, 5.0
    )
    assert alone == {"dense": 1.0, "sparse": 0.0}


def test_a_silent_mode_leaves_every_fusion_ranking_the_others():
    """Sparse scores that are all zero (no shared token) with signal weights: each fusion ranks exactly as it
    ranks dense and colbert alone."""
    rng = np.random.default_rng(5)
    dense, colbert = rng.random(30), rng.random(30)
    scores = {"dense": dense, "sparse": np.zeros(30), "colbert": colbert}
    ranks = {k: np.argsort(np.argsort(-v, kind="stable"), kind="stable") + 1 for k, v in scores.items()}
    ranks["sparse"] = np.zeros(30, np.int64)  # in no sparse list
    full = {"dense": 0.4, "sparse": 0.2, "colbert": 0.4}
    weights = signal_weights(full, scores, 17.5)
    others = {"dense": 0.4, "colbert": 0.4}
    for normalize in ("signal", "dbsf"):
        fused = weighted_fusion(scores, weights, normalize)
        np.testing.assert_array_equal(
            np.argsort(-fused), np.argsort(-weighted_fusion(scores, others, normalize))
        )
    fused = rrf_fusion(ranks, weights)
    np.testing.assert_array_equal(np.argsort(-fused), np.argsort(-rrf_fusion(ranks, others)))
