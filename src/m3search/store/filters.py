"""Metadata filters: a small JSON syntax compiled to a predicate over a `MetadataIndex` (one mask per segment).

    {"lang": "en"}                                  equality (on an array field: any element equals)
    {"year": {"$gte": 2020, "$lt": 2024}}           range on numbers (or on strings, e.g. ISO dates)
    {"tag": {"$in": ["a", "b"]}}                    membership; also $nin, $ne, $eq
    {"source": {"$exists": true}}                   presence
    {"$or": [{...}, {...}]}, {"$and": [...]}, {"$not": {...}}
    {"meta.author": "x"}                            dotted names reach into nested objects

Several keys in one object must all hold. Values compare by JSON type: 1 never equals "1" or true. A field
condition holds when any value at the path meets it — the value itself, an element of an array, a member of an
object (SQLite's `json_each`, on which these semantics were first defined); `$ne` and `$nin` are the negations,
so they also hold where the field is missing. The result is the set of allowed rows, computed before any top-k
so that a filter never shortens a result list.
"""

from __future__ import annotations

import json
import operator
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

from m3search.errors import FilterError
from m3search.store.metadata import FALSE, NULL, NUMBER, TEXT, TRUE, MetadataIndex

Filter = Mapping[str, Any]
#: A compiled filter: the boolean mask of the rows of a metadata index that it allows.
Predicate = Callable[[MetadataIndex], np.ndarray]
#: Which entries (kinds, values) of one path meet a condition.
_Matcher = Callable[[MetadataIndex, np.ndarray, np.ndarray], np.ndarray]

_RANGE_OPS = {"$gt": operator.gt, "$gte": operator.ge, "$lt": operator.lt, "$lte": operator.le}
#: Strings compare by rank r among the sorted distinct strings: r's string > v exactly when r >= bisect_right(v),
#: >= v when r >= bisect_left(v), < v when r < bisect_left(v), <= v when r < bisect_right(v).
_RANK_OPS = {
    "$gt": (operator.ge, "right"),
    "$gte": (operator.ge, "left"),
    "$lt": (operator.lt, "left"),
    "$lte": (operator.lt, "right"),
}
_FIELD_OPS = {"$eq", "$ne", "$in", "$nin", "$exists", *_RANGE_OPS}


def parse_filter(spec: str | Filter | None) -> Filter | None:
    """A filter from JSON text or a mapping (None or {} for no filter); checked by compiling it."""
    if spec is None:
        return None
    if isinstance(spec, str):
        try:
            spec = json.loads(spec)
        except json.JSONDecodeError as exc:
            raise FilterError(f"filter is not valid JSON: {exc.msg} at character {exc.pos}") from None
    if not isinstance(spec, Mapping):
        raise FilterError(f"a filter must be a JSON object, got {type(spec).__name__}")
    compile_filter(spec)
    return spec or None


def compile_filter(spec: Filter) -> Predicate:
    """The predicate of a filter; raises `FilterError` naming the problem."""
    if not isinstance(spec, Mapping):
        raise FilterError(f"a filter must be a JSON object, got {type(spec).__name__}")
    parts: list[Predicate] = []
    for key, value in spec.items():
        if not isinstance(key, str):
            raise FilterError(f"filter keys must be strings, got {key!r}")
        if key in ("$and", "$or"):
            if not isinstance(value, list) or not value:
                raise FilterError(f"{key} takes a non-empty list of filters")
            parts.append(
                _combine(
                    [compile_filter(v) for v in value], np.logical_and if key == "$and" else np.logical_or
                )
            )
        elif key == "$not":
            parts.append(_negate(compile_filter(value)))
        elif key.startswith("$"):
            raise FilterError(f"unknown filter operator {key!r} at the top level; use $and, $or or $not")
        else:
            parts.append(_field_condition(_field_path(key), key, value))
    if not parts:
        return lambda index: np.ones(index.n_rows, bool)
    return _combine(parts, np.logical_and)


def _combine(parts: list[Predicate], how: np.ufunc) -> Predicate:
    def evaluate(index: MetadataIndex) -> np.ndarray:
        out = parts[0](index)
        for part in parts[1:]:
            out = how(out, part(index))
        return out

    return evaluate if len(parts) > 1 else parts[0]


def _negate(predicate: Predicate) -> Predicate:
    return lambda index: ~predicate(index)


def _field_path(field: str) -> tuple[str, ...]:
    names = tuple(field.split("."))
    if any(not n or '"' in n or "\\" in n for n in names):
        raise FilterError(f"invalid field name {field!r}: dotted names of non-empty parts without quotes")
    return names


def _field_condition(path: tuple[str, ...], field: str, value: Any) -> Predicate:
    if not isinstance(value, Mapping):
        return _any_value(path, [_equals(field, value)])
    if not value:
        raise FilterError(f"field {field!r}: empty condition object")
    parts: list[Predicate] = []
    for op, operand in value.items():
        if op not in _FIELD_OPS:
            raise FilterError(
                f"field {field!r}: unknown operator {op!r}; use one of {', '.join(sorted(_FIELD_OPS))}"
            )
        if op in ("$eq", "$ne"):
            part = _any_value(path, [_equals(field, operand)])
        elif op in ("$in", "$nin"):
            if not isinstance(operand, list) or not operand:
                raise FilterError(f"field {field!r}: {op} takes a non-empty list of values")
            part = _any_value(path, [_equals(field, v) for v in operand])
        elif op == "$exists":
            if not isinstance(operand, bool):
                raise FilterError(f"field {field!r}: $exists takes true or false")
            part = _any_value(path, [])
            if not operand:
                part = _negate(part)
        else:
            part = _any_value(path, [_compare(field, op, operand)])
        parts.append(_negate(part) if op in ("$ne", "$nin") else part)
    return _combine(parts, np.logical_and)


def _any_value(path: tuple[str, ...], matchers: list[_Matcher]) -> Predicate:
    """Rows where some entry of `path` meets one of `matchers`; with no matchers, rows that have the path."""

    def evaluate(index: MetadataIndex) -> np.ndarray:
        rows, kinds, values = index.entries(path)
        out = np.zeros(index.n_rows, bool)
        if matchers:
            hit = matchers[0](index, kinds, values)
            for matcher in matchers[1:]:
                hit |= matcher(index, kinds, values)
            rows = rows[hit]
        out[rows] = True
        return out

    return evaluate


def _equals(field: str, value: Any) -> _Matcher:
    if value is None or isinstance(value, bool):
        kind = NULL if value is None else TRUE if value else FALSE
        return lambda index, kinds, values: kinds == kind
    if isinstance(value, (int, float)):
        number = _check_number(field, value)
        return lambda index, kinds, values: (kinds == NUMBER) & (values == number)
    if isinstance(value, str):

        def matcher(index: MetadataIndex, kinds: np.ndarray, values: np.ndarray) -> np.ndarray:
            rank = index.string_rank(value)
            if rank == index.string_rank(value, "right"):  # not among the index's strings
                return np.zeros(len(kinds), bool)
            return (kinds == TEXT) & (values == rank)

        return matcher
    raise FilterError(
        f"field {field!r}: cannot compare with {type(value).__name__} {value!r}; use a string, "
        "number, boolean or null"
    )


def _compare(field: str, op: str, value: Any) -> _Matcher:
    compare = _RANGE_OPS[op]
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        number = _check_number(field, value)
        return lambda index, kinds, values: (kinds == NUMBER) & compare(values, number)
    if isinstance(value, str):
        rank_compare, side = _RANK_OPS[op]
        return lambda index, kinds, values: (
            (kinds == TEXT) & rank_compare(values, index.string_rank(value, side))
        )
    raise FilterError(f"field {field!r}: {op} takes a number or a string, got {value!r}")


def _check_number(field: str, value: float) -> float:
    """`value` as a float; NaN, infinity and integers beyond the float range are refused."""
    try:
        number = float(value)
    except OverflowError:
        raise FilterError(f"field {field!r}: a number beyond the float range cannot be compared") from None
    if number != number or number in (float("inf"), float("-inf")):
        raise FilterError(f"field {field!r}: NaN and infinity cannot be compared")
    return number
