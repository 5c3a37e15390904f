"""Checks on what documents bring: sparse token ids must be plain non-negative integers, metadata plain JSON."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from m3search.errors import InvalidInputError
from m3search.store.documents import check_dense, check_metadata, check_sparse


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
def test_dense_vectors_with_a_value_that_is_not_finite_are_refused(bad):
    vector = np.full(8, 0.25, np.float32)
    vector[5] = bad
    with pytest.raises(InvalidInputError, match="dense vector contains NaN or infinity"):
        check_dense(vector, 8, "query")


def test_dense_vectors_whose_squares_overflow_are_finite_and_kept():
    """The finiteness check sums the squares first: values whose squares overflow float32 are still finite."""
    vector = np.array([3e38, -1e30, 0.5, 0.0], np.float32)
    assert not math.isfinite(vector.dot(vector))
    assert check_dense(vector, 4, "query") is vector
    assert check_dense(vector.tolist(), 4, "query").tolist() == vector.tolist()


@pytest.mark.parametrize("token", ["²", "١٢", "-3", "x", 2**63, str(2**70)])
def test_token_ids_that_are_not_64_bit_non_negative_integers_are_refused(token):
    with pytest.raises(InvalidInputError, match="is not a non-negative 64-bit integer"):
        check_sparse({token: 1.0}, "document 'a'")


def test_numeric_string_token_ids_are_read():
    ids, weights = check_sparse({"12": 0.5, 3: 0.25}, "document 'a'")
    assert sorted(zip(list(ids), list(weights))) == [(3, 0.25), (12, 0.5)]


def test_plain_sparse_vectors_read_as_the_item_by_item_check_reads_them():
    """Int ids with float weights take whole-array checks; numpy scalars take the per-item loop: same arrays,
    zero weights dropped, order kept."""
    rng = np.random.default_rng(7)
    ids = rng.choice(2**40, 300, replace=False)
    weights = rng.random(300) * rng.choice([0.0, 1.0, 1e30], 300)
    plain = {int(i): float(w) for i, w in zip(ids, weights)}
    plain[5] = 2  # an int weight
    numpy_typed = {np.int64(i): np.float64(w) for i, w in plain.items()}
    fast, loop = check_sparse(plain, "q"), check_sparse(numpy_typed, "q")
    assert fast[0].dtype == loop[0].dtype == np.int64 and fast[1].dtype == loop[1].dtype == np.float32
    assert fast[0].tolist() == loop[0].tolist() == [i for i, w in plain.items() if w != 0.0]
    assert fast[1].tobytes() == loop[1].tobytes()
    assert check_sparse({}, "q")[0].tolist() == []


@pytest.mark.parametrize(
    ("vector", "message"),
    [
        ({3: -0.5}, "weight of token 3 is -0.5"),
        ({3: math.nan}, "weight of token 3 is nan"),
        ({3: 10**400}, "weight of token 3 is inf"),
        ({3: 1e39}, "weight of token 3 is 1e[+]39; .* within float32's range"),
        ({-3: 1.0}, "token id -3 is not"),
        ({3: "x"}, "weight of token 3 is not a number"),
    ],
)
def test_invalid_sparse_vectors_are_named_whichever_check_sees_them(vector, message):
    with pytest.raises(InvalidInputError, match=message):
        check_sparse(vector, "document 'a'")


@pytest.mark.parametrize(
    "metadata",
    [
        {"lang": "de", "year": 2001, "score": 0.25, "ok": True, "none": None},
        {"tags": ("a", "b"), "nested": {"x": [1, 2.5]}},
        {},
    ],
)
def test_metadata_reads_as_its_json_round_trip(metadata):
    """A flat object is copied, anything else goes through JSON: either way what JSON would read back."""
    checked = check_metadata(metadata, "document 'a'")
    assert checked == json.loads(json.dumps(metadata)) and checked is not metadata


@pytest.mark.parametrize(
    ("metadata", "message"),
    [
        ({"x": math.inf}, "not valid JSON"),
        ({"x": {"y": math.nan}}, "not valid JSON"),
        ({1: "a"}, "string keys"),
    ],
)
def test_metadata_that_is_not_json_is_refused(metadata, message):
    with pytest.raises(InvalidInputError, match=message):
        check_metadata(metadata, "document 'a'")
