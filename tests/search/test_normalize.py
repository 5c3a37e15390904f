"""Score normalization before weighted fusion: min-max over the candidates, and what `auto` resolves to."""

from __future__ import annotations

import numpy as np
import pytest

from m3search.errors import InvalidInputError
from m3search.scoring import hybrid_scores
from m3search.search.fusion import NORMALIZATIONS, minmax, resolve_normalize, weighted_fusion


def test_minmax_rescales_to_the_unit_interval():
    out = minmax(np.array([12.0, 3.0, 7.5, 3.0], np.float32))
    np.testing.assert_allclose(out, [1.0, 0.0, 0.5, 0.0])
    assert out.dtype == np.float64
    np.testing.assert_array_equal(minmax(np.array([0.8, 0.8, 0.8])), [0.0, 0.0, 0.0])  # nothing to order
    assert minmax(np.array([])).shape == (0,)
    # order-preserving and invariant to the scale and offset of the input
    rng = np.random.default_rng(1)
    x = rng.normal(size=50)
    np.testing.assert_allclose(minmax(37.0 * x + 5.0), minmax(x))
    assert list(np.argsort(minmax(x))) == list(np.argsort(x))


def test_minmax_fusion_is_the_weighted_mean_of_rescaled_scores():
    dense = np.array([0.81, 0.86, 0.79, 0.84])  # cosines of one model: a narrow band below 1
    sparse = np.array([31.0, 2.0, 18.0, 0.0])  # BM25: tens
    weights = {"dense": 0.9, "sparse": 0.1}
    raw = weighted_fusion({"dense": dense, "sparse": sparse}, weights)
    fused = weighted_fusion({"dense": dense, "sparse": sparse}, weights, "minmax")
    d = (dense - 0.79) / (0.86 - 0.79)
    s = sparse / 31.0
    np.testing.assert_allclose(fused, 0.9 * d + 0.1 * s)
    # raw BM25 swamps a 0.9 dense weight: the reference mean ranks exactly as sparse alone
    assert list(np.argsort(-raw)) == list(np.argsort(-sparse))
    # rescaled, the weights mean what they say: dense decides
    assert list(np.argsort(-fused)) == list(np.argsort(-dense))
    with pytest.raises(InvalidInputError, match="none, minmax, signal or dbsf"):
        weighted_fusion({"dense": dense}, {"dense": 1.0}, "auto")


def test_none_is_the_reference_formula():
    rng = np.random.default_rng(0)
    d, s, c = rng.random(10), rng.random(10) * 5, rng.random(10)
    weights = {"dense": 0.4, "sparse": 0.2, "colbert": 0.4}
    fused = weighted_fusion({"dense": d, "sparse": s, "colbert": c}, weights, "none")
    for i in range(10):
        reference = hybrid_scores(d[i], s[i], c[i], (0.4, 0.2, 0.4))["colbert+sparse+dense"]
        assert fused[i] == pytest.approx(reference)


def test_auto_is_signal_for_every_model():
    assert resolve_normalize("auto") == "signal"
    for name in ("none", "minmax", "signal"):
        assert resolve_normalize(name) == name
    with pytest.raises(InvalidInputError, match="unknown score normalization 'zscore'"):
        resolve_normalize("zscore")


def test_cli_offers_exactly_these_normalizations():
    from m3search.cli.options import normalize_option

    @normalize_option
    def command(normalize):
        pass

    (param,) = command.__click_params__
    assert tuple(param.type.choices) == NORMALIZATIONS
