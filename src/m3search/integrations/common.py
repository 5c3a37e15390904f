"""What the framework integrations share: dense vectors from a local encoder or a server, and listing the
documents a filter allows (document stores must answer without a query)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from m3search.errors import InvalidInputError
from m3search.search.results import Hit

#: The most documents one search may return from a server (`m3search serve`'s default `max_k`).
SERVER_MAX_K = 1000


def is_remote(collection: Any) -> bool:
    """Whether `collection` is a server collection (`RemoteCollection`) rather than a local `Collection`."""
    return hasattr(collection, "client")


def vector_source(collection: Any) -> Any:
    """What encodes for `collection`: its server's client, or its local encoder."""
    return collection.client if is_remote(collection) else collection.encoder


def dense_vectors(source: Any, texts: Sequence[str], *, is_query: bool) -> list[list[float]]:
    """Dense vectors of `texts` from a `Client` (its `embed`) or a local `TextEncoder`, as lists of floats."""
    if hasattr(source, "embed"):
        result = source.embed(list(texts), is_query=is_query)
    else:
        result = source.encode(list(texts), is_query=is_query, return_dense=True)
    return result.dense.tolist()


def matching(collection: Any, filter: Mapping[str, Any] | None) -> list[Hit]:
    """Every document `filter` allows (all without one), found by a dense search as deep as the collection.

    A server answers at most `SERVER_MAX_K` results per search: more matches raise instead of being cut off.
    """
    total = collection.count()
    if total == 0:
        return []
    k = min(total, SERVER_MAX_K) if is_remote(collection) else total
    hits = collection.search("document", k=k, mode="dense", filter=filter)
    if len(hits) == SERVER_MAX_K < total:
        raise InvalidInputError(
            f"more than {SERVER_MAX_K} documents match {dict(filter or {})}; a server search returns at "
            "most that many: narrow the filter"
        )
    return hits
