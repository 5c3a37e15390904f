"""m3search's filter language (`m3search.store.filters`) as Qdrant payload conditions, for both engines' filter
classes (qdrant-client's models, Qdrant Edge's): one tree walk over a `ConditionBuilder` per engine.

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
from typing import Any, Protocol

from m3search.errors import FilterError
from m3search.store.backends.points import KIND_KEY, METADATA_KEY
from m3search.store.database import KIND_FIELD
from m3search.store.filters import Filter, compile_filter

_RANGE_OPS = {"$gt": "gt", "$gte": "gte", "$lt": "lt", "$lte": "lte"}


class ConditionBuilder(Protocol):
    """An engine's filter classes: what the walk assembles conditions from."""

    #: The backend's name, for the refusal of string ranges.
    backend: str

    def all_of(self, must: list[Any] | None = None, must_not: list[Any] | None = None) -> Any:
        """A filter that holds when every `must` holds and no `must_not` does."""

    def any_of(self, should: list[Any]) -> Any:
        """A filter that holds when one of `should` holds."""

    def match(self, key: str, value: bool | str) -> Any:
        """`key` has the keyword or boolean `value`."""

    def match_any(self, key: str, values: list[str]) -> Any:
        """`key` has one of the keywords `values`."""

    def range(self, key: str, **bounds: float) -> Any:
        """`key` has a number within `bounds` (gt, gte, lt, lte)."""

    def is_empty(self, key: str) -> Any:
        """`key` is missing, empty or null."""

    def is_null(self, key: str) -> Any:
        """`key` is null."""


def translate(spec: Filter, build: ConditionBuilder) -> Any:
    """The engine filter of an m3search filter (checked by the local compiler first, for its messages)."""
    compile_filter(spec)
    return _Walk(build).filter(spec)


class _Walk:
    def __init__(self, build: ConditionBuilder) -> None:
        self.b = build

    def filter(self, spec: Filter) -> Any:
        must: list[Any] = []
        for key, value in spec.items():
            if key == "$and":
                must.extend(self.filter(v) for v in value)
            elif key == "$or":
                must.append(self.b.any_of([self.filter(v) for v in value]))
            elif key == "$not":
                must.append(self.b.all_of(must_not=[self.filter(value)]))
            else:
                must.append(
                    self.field(KIND_KEY if key == KIND_FIELD else f"{METADATA_KEY}.{key}", key, value)
                )
        return self.b.all_of(must=must)

    def field(self, key: str, field: str, value: Any) -> Any:
        if not isinstance(value, Mapping):
            return self.equals(key, field, value)
        parts: list[Any] = []
        for op, operand in value.items():
            if op == "$eq":
                parts.append(self.equals(key, field, operand))
            elif op == "$ne":
                parts.append(self.b.all_of(must_not=[self.equals(key, field, operand)]))
            elif op in ("$in", "$nin"):
                anyof = self.one_of(key, field, operand)
                parts.append(anyof if op == "$in" else self.b.all_of(must_not=[anyof]))
            elif op == "$exists":
                exists = self.b.any_of([self.b.all_of(must_not=[self.b.is_empty(key)]), self.b.is_null(key)])
                parts.append(exists if operand else self.b.all_of(must_not=[exists]))
            else:
                if isinstance(operand, str):
                    raise FilterError(
                        f"field {field!r}: {op} on strings is not available on the {self.b.backend} backend "
                        "(Qdrant compares only numbers and datetimes by range)"
                    )
                parts.append(self.b.range(key, **{_RANGE_OPS[op]: float(operand)}))
        return parts[0] if len(parts) == 1 else self.b.all_of(must=parts)

    def equals(self, key: str, field: str, value: Any) -> Any:
        if value is None:
            return self.b.is_null(key)
        if isinstance(value, (bool, str)):
            return self.b.match(key, value)
        if isinstance(value, (int, float)):
            return self.b.range(key, gte=float(value), lte=float(value))
        raise FilterError(f"field {field!r}: cannot compare with {type(value).__name__} {value!r}")

    def one_of(self, key: str, field: str, values: list[Any]) -> Any:
        if all(isinstance(v, str) for v in values):
            return self.b.match_any(key, list(values))
        return self.b.any_of([self.equals(key, field, v) for v in values])
