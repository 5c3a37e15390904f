"""The SQL evaluation of filters that m3search used before its metadata index (json_each over the stored JSON):
the reference the index's results must equal."""

from __future__ import annotations

import sqlite3
from collections.abc import Mapping
from typing import Any

import numpy as np

from m3search.errors import FilterError

Filter = Mapping[str, Any]

_RANGE_OPS = {"$gt": ">", "$gte": ">=", "$lt": "<", "$lte": "<="}
_FIELD_OPS = {"$eq", "$ne", "$in", "$nin", "$exists", *_RANGE_OPS}
_NUMBER_TYPES = "('integer','real')"


def sql_matches(metadata_json: list[str], spec: Filter) -> np.ndarray:
    """Boolean mask over `metadata_json` (JSON texts) of the rows the filter allows, evaluated by SQLite."""
    conn = sqlite3.connect(":memory:")
    conn.execute("CREATE TABLE docs (row INTEGER PRIMARY KEY, metadata TEXT NOT NULL)")
    conn.executemany("INSERT INTO docs VALUES (?, ?)", enumerate(metadata_json))
    where, params = compile_filter(spec)
    out = np.zeros(len(metadata_json), bool)
    out[[r for (r,) in conn.execute(f"SELECT row FROM docs WHERE {where}", params)]] = True
    conn.close()
    return out


def compile_filter(spec: Filter, column: str = "metadata") -> tuple[str, list[Any]]:
    """SQL condition over the JSON `column` and its parameters; raises `FilterError` naming the problem."""
    if not isinstance(spec, Mapping):
        raise FilterError(f"a filter must be a JSON object, got {type(spec).__name__}")
    parts, params = [], []
    for key, value in spec.items():
        if not isinstance(key, str):
            raise FilterError(f"filter keys must be strings, got {key!r}")
        if key in ("$and", "$or"):
            if not isinstance(value, list) or not value:
                raise FilterError(f"{key} takes a non-empty list of filters")
            subs = [compile_filter(v, column) for v in value]
            parts.append("(" + f" {key[1:].upper()} ".join(s for s, _ in subs) + ")")
            params += [p for _, ps in subs for p in ps]
        elif key == "$not":
            sql, ps = compile_filter(value, column)
            parts.append(f"NOT {sql}")
            params += ps
        elif key.startswith("$"):
            raise FilterError(f"unknown filter operator {key!r} at the top level; use $and, $or or $not")
        else:
            sql, ps = _field_condition(column, _json_path(key), key, value)
            parts.append(sql)
            params += ps
    return ("(" + " AND ".join(parts) + ")" if parts else "1"), params


def _json_path(field: str) -> str:
    names = field.split(".")
    if any(not n or '"' in n or "\\" in n for n in names):
        raise FilterError(f"invalid field name {field!r}: dotted names of non-empty parts without quotes")
    return "$" + "".join(f'."{n}"' for n in names)


def _field_condition(column: str, path: str, field: str, value: Any) -> tuple[str, list[Any]]:
    if not isinstance(value, Mapping):
        return _any_element(column, path, [_equals(field, value)])
    if not value:
        raise FilterError(f"field {field!r}: empty condition object")
    parts, params = [], []
    for op, operand in value.items():
        if op not in _FIELD_OPS:
            raise FilterError(
                f"field {field!r}: unknown operator {op!r}; use one of {', '.join(sorted(_FIELD_OPS))}"
            )
        if op == "$eq":
            sql, ps = _any_element(column, path, [_equals(field, operand)])
        elif op == "$ne":
            sql, ps = _any_element(column, path, [_equals(field, operand)])
            sql = f"NOT {sql}"
        elif op in ("$in", "$nin"):
            if not isinstance(operand, list) or not operand:
                raise FilterError(f"field {field!r}: {op} takes a non-empty list of values")
            sql, ps = _any_element(column, path, [_equals(field, v) for v in operand])
            if op == "$nin":
                sql = f"NOT {sql}"
        elif op == "$exists":
            if not isinstance(operand, bool):
                raise FilterError(f"field {field!r}: $exists takes true or false")
            sql, ps = f"(json_type({column}, ?) IS {'NOT ' if operand else ''}NULL)", [path]
        else:
            sql, ps = _any_element(column, path, [_compare(field, op, operand)])
        parts.append(sql)
        params += ps
    return "(" + " AND ".join(parts) + ")", params


def _any_element(column: str, path: str, conditions: list[tuple[str, list[Any]]]) -> tuple[str, list[Any]]:
    """True when the value at `path` (or, for an array, any element of it) meets one of `conditions`."""
    where = " OR ".join(c for c, _ in conditions)
    return (
        f"EXISTS (SELECT 1 FROM json_each({column}, ?) WHERE {where})",
        [path] + [p for _, ps in conditions for p in ps],
    )


def _equals(field: str, value: Any) -> tuple[str, list[Any]]:
    if value is None:
        return "type = 'null'", []
    if isinstance(value, bool):
        return f"type = '{'true' if value else 'false'}'", []
    if isinstance(value, (int, float)):
        _check_number(field, value)
        return f"(type IN {_NUMBER_TYPES} AND value = ?)", [value]
    if isinstance(value, str):
        return "(type = 'text' AND value = ?)", [value]
    raise FilterError(
        f"field {field!r}: cannot compare with {type(value).__name__} {value!r}; use a string, "
        "number, boolean or null"
    )


def _compare(field: str, op: str, value: Any) -> tuple[str, list[Any]]:
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        _check_number(field, value)
        return f"(type IN {_NUMBER_TYPES} AND value {_RANGE_OPS[op]} ?)", [value]
    if isinstance(value, str):
        return f"(type = 'text' AND value {_RANGE_OPS[op]} ?)", [value]
    raise FilterError(f"field {field!r}: {op} takes a number or a string, got {value!r}")


def _check_number(field: str, value: float) -> None:
    if value != value or value in (float("inf"), float("-inf")):
        raise FilterError(f"field {field!r}: NaN and infinity cannot be compared")
