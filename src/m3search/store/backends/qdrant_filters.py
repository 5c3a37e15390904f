"""m3search's filter language (`m3search.store.filters`) translated to Qdrant payload filters.

Documents keep their metadata under the payload key `metadata`, so `{"a.b": v}` reads `metadata.a.b`; the
reserved kind field (`@kind`, set for non-text documents only) is the payload key `m3_kind`. Semantics are the
local backend's: a field condition holds when any value at the path meets it (Qdrant matches array elements
the same way); `$ne`/`$nin` are negations, so they also hold where the field is missing; values compare by JSON
type (numbers by value, 1 == 1.0, never "1" or true). Range comparisons on strings, which Qdrant cannot
express, are refused with a `FilterError`. One difference remains: where a path's value is an object, the local
backend also matches the object's members; Qdrant needs the member's full path.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from qdrant_client import models

from m3search.errors import FilterError
from m3search.store.database import KIND_FIELD
from m3search.store.filters import Filter, compile_filter

#: The payload key of a non-text document's kind (text documents have none, as in the local index).
KIND_KEY = "m3_kind"
METADATA_KEY = "metadata"
_RANGE_OPS = {"$gt": "gt", "$gte": "gte", "$lt": "lt", "$lte": "lte"}


def to_qdrant(spec: Filter) -> models.Filter:
    """The Qdrant filter of an m3search filter (checked by the local compiler first, for its messages)."""
    compile_filter(spec)
    return _filter(spec)


def _filter(spec: Filter) -> models.Filter:
    must: list[Any] = []
    for key, value in spec.items():
        if key == "$and":
            must.extend(_filter(v) for v in value)
        elif key == "$or":
            must.append(models.Filter(should=[_filter(v) for v in value]))
        elif key == "$not":
            must.append(models.Filter(must_not=[_filter(value)]))
        else:
            must.append(_field(_key(key), key, value))
    return models.Filter(must=must)


def _key(field: str) -> str:
    return KIND_KEY if field == KIND_FIELD else f"{METADATA_KEY}.{field}"


def _field(key: str, field: str, value: Any) -> Any:
    if not isinstance(value, Mapping):
        return _equals(key, field, value)
    parts: list[Any] = []
    for op, operand in value.items():
        if op == "$eq":
            parts.append(_equals(key, field, operand))
        elif op == "$ne":
            parts.append(models.Filter(must_not=[_equals(key, field, operand)]))
        elif op in ("$in", "$nin"):
            anyof = _any_of(key, field, operand)
            parts.append(anyof if op == "$in" else models.Filter(must_not=[anyof]))
        elif op == "$exists":
            exists = models.Filter(
                should=[
                    models.Filter(must_not=[models.IsEmptyCondition(is_empty=models.PayloadField(key=key))]),
                    models.IsNullCondition(is_null=models.PayloadField(key=key)),
                ]
            )
            parts.append(exists if operand else models.Filter(must_not=[exists]))
        else:
            if isinstance(operand, str):
                raise FilterError(
                    f"field {field!r}: {op} on strings is not available on the qdrant backend (Qdrant compares "
                    "only numbers and datetimes by range)"
                )
            parts.append(
                models.FieldCondition(key=key, range=models.Range(**{_RANGE_OPS[op]: float(operand)}))
            )
    return parts[0] if len(parts) == 1 else models.Filter(must=parts)


def _equals(key: str, field: str, value: Any) -> Any:
    if value is None:
        return models.IsNullCondition(is_null=models.PayloadField(key=key))
    if isinstance(value, (bool, str)):
        return models.FieldCondition(key=key, match=models.MatchValue(value=value))
    if isinstance(value, (int, float)):
        return models.FieldCondition(key=key, range=models.Range(gte=float(value), lte=float(value)))
    raise FilterError(f"field {field!r}: cannot compare with {type(value).__name__} {value!r}")


def _any_of(key: str, field: str, values: list[Any]) -> Any:
    if all(isinstance(v, str) for v in values):
        return models.FieldCondition(key=key, match=models.MatchAny(any=list(values)))
    return models.Filter(should=[_equals(key, field, v) for v in values])
