"""Filters over the metadata index give exactly the rows the former SQL (json_each) evaluation gave, on random
metadata (nested objects, arrays of mixed types, null, booleans, unicode strings) and random filters."""

from __future__ import annotations

import json

import numpy as np
import pytest

from m3search.errors import FilterError
from m3search.store.filters import compile_filter, parse_filter
from m3search.store.metadata import MetadataIndex
from tests.store.sql_filter_reference import sql_matches

WORDS = ["en", "de", "fr", "", "Zürich", "zebra", "2021-03-04", "2024-01-01", "ä", "1"]


def random_value(rng: np.random.Generator, depth: int = 0):
    kind = rng.integers(0, 9 if depth < 2 else 6)
    if kind == 0:
        return None
    if kind == 1:
        return bool(rng.integers(0, 2))
    if kind == 2:
        return int(rng.integers(-3, 6))
    if kind == 3:
        return float(rng.choice([0.5, 1.0, 2.5, -1.0, 3.0]))
    if kind in (4, 5):
        return str(rng.choice(WORDS))
    if kind in (6, 7):
        return [random_value(rng, depth + 1) for _ in range(int(rng.integers(0, 4)))]
    return random_metadata(rng, depth + 1)


def random_metadata(rng: np.random.Generator, depth: int = 0) -> dict:
    keys = ["a", "b", "c", "n"]
    return {
        str(k): random_value(rng, depth) for k in rng.choice(keys, int(rng.integers(0, 4)), replace=False)
    }


def random_operand(rng: np.random.Generator):
    return [None, True, False, 0, 1, 2.5, -1, 3, "en", "fr", "zebra", "Zürich", "", "1", "2022"][
        int(rng.integers(0, 15))
    ]


def random_field(rng: np.random.Generator) -> str:
    return str(rng.choice(["a", "b", "c", "n", "a.a", "a.b", "n.c", "b.n.a", "missing"]))


def random_filter(rng: np.random.Generator, depth: int = 0) -> dict:
    kind = int(rng.integers(0, 10 if depth < 2 else 7))
    field = random_field(rng)
    if kind <= 1:
        return {field: random_operand(rng)}
    if kind <= 4:
        op = str(rng.choice(["$eq", "$ne", "$gt", "$gte", "$lt", "$lte", "$exists", "$in", "$nin"]))
        if op == "$exists":
            return {field: {op: bool(rng.integers(0, 2))}}
        if op in ("$in", "$nin"):
            return {field: {op: [random_operand(rng) for _ in range(int(rng.integers(1, 4)))]}}
        operand = random_operand(rng)
        if op in ("$gt", "$gte", "$lt", "$lte") and (operand is None or isinstance(operand, bool)):
            operand = 1
        return {field: {op: operand, **({"$lt": 4} if rng.integers(0, 3) == 0 and op != "$lt" else {})}}
    if kind <= 6:
        return {field: random_operand(rng), random_field(rng): {"$exists": True}}
    if kind == 7:
        return {"$not": random_filter(rng, depth + 1)}
    return {
        str(rng.choice(["$and", "$or"])): [
            random_filter(rng, depth + 1) for _ in range(int(rng.integers(1, 4)))
        ]
    }


def test_random_filters_match_the_sql_evaluation(tmp_path):
    rng = np.random.default_rng(0)
    metadata = [random_metadata(rng) for _ in range(400)]
    texts = [json.dumps(m, ensure_ascii=False) for m in metadata]
    index = MetadataIndex.build(texts)
    index.save(tmp_path)
    loaded = MetadataIndex.load(tmp_path, len(texts))
    matched = 0
    for _ in range(400):
        spec = random_filter(rng)
        expected = sql_matches(texts, spec)
        predicate = compile_filter(spec)
        np.testing.assert_array_equal(predicate(index), expected, err_msg=json.dumps(spec))
        np.testing.assert_array_equal(predicate(loaded), expected, err_msg=json.dumps(spec))
        matched += 0 < expected.sum() < len(texts)
    assert matched > 150  # most filters select a proper subset: the comparison is not vacuous


@pytest.mark.parametrize(
    "spec",
    [
        {"tags": "x"},
        {"tags": {"$nin": ["x"]}},
        {"o": 1},
        {"o.k": 1},
        {"o": {"$exists": True}},
        {"e": {"$exists": True}},
        {"l": {"$gte": "b"}},
        {"l": {"$lt": "b"}},
        {"v": None},
        {"v": False},
        {"v": 0},
        {"arr.k": 1},
        {"s": {"$gt": "Zürich"}},
        {"s": {"$lte": "zz"}},
        {"n": {"$gt": 1, "$lt": 3}},
    ],
)
def test_edge_cases_match_the_sql_evaluation(spec):
    """Arrays (any element), objects (json_each yields their members), empty containers, null vs false vs 0,
    string ranges, several conditions on one field."""
    metadata = [
        {"tags": ["x", "y"], "o": {"k": 1}, "e": [], "l": "a", "v": None, "arr": [{"k": 1}], "n": [0, 5]},
        {"tags": "x", "o": {}, "e": {}, "l": "b", "v": False, "s": "Zürich", "n": 2},
        {"tags": [["x"]], "o": [1], "l": ["c", "a"], "v": 0, "s": "zebra", "n": [2.0]},
        {},
    ]
    texts = [json.dumps(m, ensure_ascii=False) for m in metadata]
    np.testing.assert_array_equal(compile_filter(spec)(MetadataIndex.build(texts)), sql_matches(texts, spec))


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_merging_indexes_gives_the_index_built_from_the_merged_rows(tmp_path, seed):
    """A merge renumbers its sources' entries (rows dropped, sources interleaved) and re-ranks their strings: the
    result is, array for array, the index `build` makes from the surviving rows' metadata in their new order."""
    rng = np.random.default_rng(seed)
    sources = [[random_metadata(rng) for _ in range(int(rng.integers(0, 120)))] for _ in range(3)]
    parts, survivors = [], []
    for i, metadata in enumerate(sources):
        index = MetadataIndex.build([json.dumps(m, ensure_ascii=False) for m in metadata])
        (tmp_path / str(i)).mkdir()
        index.save(tmp_path / str(i))  # merges read saved, memory-mapped indexes
        alive = np.flatnonzero(rng.random(len(metadata)) < 0.8)
        parts.append(MetadataIndex.load(tmp_path / str(i), len(metadata)))
        survivors += [(i, r) for r in alive.tolist()]
    order = rng.permutation(len(survivors))  # the merged row of survivor j is where it lands in this order
    new_rows = [np.full(len(m), -1, np.int64) for m in sources]
    for new, j in enumerate(order.tolist()):
        i, r = survivors[j]
        new_rows[i][r] = new
    merged = MetadataIndex.merge(list(zip(parts, new_rows)), len(order))
    built = MetadataIndex.build([sources[survivors[j][0]][survivors[j][1]] for j in order.tolist()])
    assert merged.n_rows == built.n_rows == len(order)
    assert merged.paths == built.paths and len(built.paths) > 3
    for name in ("entry_ptr", "rows", "kinds", "values", "strings", "string_offsets"):
        got, want = getattr(merged, name), getattr(built, name)
        assert got.dtype == want.dtype, name
        np.testing.assert_array_equal(got, want, err_msg=name)


def test_empty_index_and_empty_filter():
    index = MetadataIndex.build([])
    assert compile_filter({"a": 1})(index).shape == (0,)
    assert compile_filter({})(MetadataIndex.build(["{}", '{"a": 1}'])).tolist() == [True, True]
    assert parse_filter({}) is None and parse_filter('{"a": 1}') == {"a": 1}


@pytest.mark.parametrize(
    "bad",
    [
        {"x": {"$regex": 1}},
        {"$xor": []},
        {"x": {"$in": []}},
        {"x": {"$gt": None}},
        {"x": [1]},
        {"a..b": 1},
        {"x": {"$gt": float("inf")}},
        [1],
    ],
)
def test_bad_filters_raise(bad):
    with pytest.raises(FilterError):
        parse_filter(bad)
