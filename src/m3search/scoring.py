"""The bge-m3 relevance scores, with the reference semantics (FlagEmbedding `M3Embedder`).

dense = dot product of normalized vectors; sparse (lexical) = sum over shared token ids of w_q * w_d; ColBERT =
mean over query tokens of the max dot product over document tokens; hybrid = weighted mean of the three.
Hand-written because these formulas are the product's definition of relevance; search re-ranking uses them too.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from m3search.errors import InvalidInputError

#: The model card's weights for (dense, sparse, colbert).
DEFAULT_WEIGHTS: tuple[float, float, float] = (0.4, 0.2, 0.4)


def dense_score(query: np.ndarray, doc: np.ndarray) -> float:
    """Dot product of two normalized dense vectors (their cosine)."""
    return float(np.dot(query, doc))


def lexical_score(query: Mapping[int, float], doc: Mapping[int, float]) -> float:
    """Sum over the token ids both texts share of query weight x document weight."""
    if len(doc) < len(query):
        query, doc = doc, query
    return float(sum(w * doc[t] for t, w in query.items() if t in doc))


def colbert_score(query: np.ndarray, doc: np.ndarray) -> float:
    """Mean over query tokens of the best dot product with any document token (MaxSim / query length)."""
    if len(query) == 0 or len(doc) == 0:
        return 0.0
    return float((query @ doc.T).max(axis=1).sum() / len(query))


#: Largest weight accepted. Weights are relative (a hybrid score is their weighted mean), so this loses
#: nothing, and it keeps Σ w·score finite: 1e308 weights overflowed it to inf and every score to NaN or 0.
MAX_WEIGHT = 1000.0


def check_weights(weights: Sequence[float]) -> tuple[float, float, float]:
    """Validate (dense, sparse, colbert) weights: three numbers in [0, MAX_WEIGHT], not all zero."""
    if len(weights) != 3:
        raise InvalidInputError(f"weights must be (dense, sparse, colbert), got {len(weights)} values")
    w = tuple(float(x) for x in weights)
    if not all(0 <= x <= MAX_WEIGHT for x in w) or sum(w) == 0:  # NaN fails both comparisons
        raise InvalidInputError(
            f"weights must be between 0 and {MAX_WEIGHT:g} and not all zero, got {list(weights)}"
        )
    return w  # type: ignore[return-value]


def hybrid_scores(
    dense: float, sparse: float, colbert: float, weights: Sequence[float] = (1.0, 1.0, 1.0)
) -> dict[str, float]:
    """The reference's combined modes: `sparse+dense` and `colbert+sparse+dense` as weighted means."""
    w0, w1, w2 = check_weights(weights)
    out = {"dense": dense, "sparse": sparse, "colbert": colbert}
    if w0 + w1 > 0:
        out["sparse+dense"] = (w1 * sparse + w0 * dense) / (w0 + w1)
    out["colbert+sparse+dense"] = (w2 * colbert + w1 * sparse + w0 * dense) / (w0 + w1 + w2)
    return out
