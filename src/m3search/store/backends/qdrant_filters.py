"""m3search filters as qdrant-client payload filters (the walk and its semantics: `payload_filters`)."""

from __future__ import annotations

from typing import Any

from qdrant_client import models

from m3search.store.backends.payload_filters import translate
from m3search.store.filters import Filter


class _Models:
    """qdrant-client's filter models for `payload_filters.translate`."""

    backend = "qdrant"

    def all_of(self, must: list[Any] | None = None, must_not: list[Any] | None = None) -> Any:
        return models.Filter(must=must, must_not=must_not)

    def any_of(self, should: list[Any]) -> Any:
        return models.Filter(should=should)

    def match(self, key: str, value: bool | str) -> Any:
        return models.FieldCondition(key=key, match=models.MatchValue(value=value))

    def match_any(self, key: str, values: list[str]) -> Any:
        return models.FieldCondition(key=key, match=models.MatchAny(any=values))

    def range(self, key: str, **bounds: float) -> Any:
        return models.FieldCondition(key=key, range=models.Range(**bounds))

    def is_empty(self, key: str) -> Any:
        return models.IsEmptyCondition(is_empty=models.PayloadField(key=key))

    def is_null(self, key: str) -> Any:
        return models.IsNullCondition(is_null=models.PayloadField(key=key))


def to_qdrant(spec: Filter) -> models.Filter:
    """The qdrant-client filter of an m3search filter."""
    return translate(spec, _Models())
