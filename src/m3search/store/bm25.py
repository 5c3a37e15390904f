"""BM25 statistics of a collection: which encoder part provides them, how a write changes them, and the
document weights a write stores under them (pure functions shared by the storage backends)."""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence

import numpy as np

from m3search.encoders.base import TextEncoder
from m3search.encoders.bm25 import BM25Encoder, BM25Stats, TermCounts
from m3search.encoders.composite import CompositeEncoder
from m3search.index.sparse import SparseRow


def bm25_part(encoder: TextEncoder) -> BM25Encoder | None:
    """The BM25 encoder providing `encoder`'s sparse output, if that is where it comes from."""
    if isinstance(encoder, BM25Encoder):
        return encoder
    if isinstance(encoder, CompositeEncoder) and isinstance(encoder.parts.get("sparse"), BM25Encoder):
        return encoder.parts["sparse"]  # type: ignore[return-value]
    return None


def as_sparse_row(vector: Mapping[int, float]) -> SparseRow:
    """A {token: weight} map as (token ids, weights) arrays."""
    return (
        np.fromiter(vector.keys(), np.int64, len(vector)),
        np.fromiter(vector.values(), np.float32, len(vector)),
    )


def stats_after(stats: BM25Stats, removed: Sequence[int], added: Sequence[int]) -> BM25Stats:
    """Document count and total length after a write that removes and adds documents of these lengths (what
    the new documents' weights use; document frequencies are not copied)."""
    return BM25Stats(stats.n_docs - len(removed) + len(added), stats.total_len - sum(removed) + sum(added))


def lengths(counts: Sequence[TermCounts]) -> list[int]:
    """Documents' lengths in tokens from their term counts."""
    return [sum(c.values()) for c in counts]


def df_delta(removed: list[TermCounts], added: list[TermCounts]) -> dict[int, int]:
    """How a write changes each token's document frequency."""
    delta: dict[int, int] = {}
    for sign, group in ((-1, removed), (1, added)):
        for counts in group:
            for token in counts:
                delta[token] = delta.get(token, 0) + sign
    return delta


def document_weights(bm25: BM25Encoder, counts: Mapping[int, int], stats: BM25Stats) -> SparseRow:
    """BM25 document weights (saturated term frequencies) of `counts` under `stats`' average length."""
    scorer = copy.copy(bm25)
    scorer.stats = stats
    return as_sparse_row(scorer.document_weights(counts))
