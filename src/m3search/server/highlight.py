"""Which query tokens matched a result, and where they are in its text, from the query's sparse weights.

A query token (an id with weight in the query's sparse vector) matches a document when the document's text
holds that token id, i.e. when the document side of the sparse dot product can be non-zero. The document is
tokenized by the same tokenizer as the collection's sparse output (lowercased first for BM25), and the
tokenizer's character offsets give the spans the UI highlights.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from m3search.encoders import BM25Encoder, CompositeEncoder, SparseVector, TextEncoder


@dataclass
class TokenMatch:
    """One query token found in a document: its string, query weight and character spans in the text."""

    token: str
    token_id: int
    weight: float
    spans: list[tuple[int, int]] = field(default_factory=list)


def _sparse_tokenizer(encoder: TextEncoder) -> tuple[Any, bool]:
    """The tokenizer behind `encoder`'s sparse ids and whether texts are lowercased before it."""
    part = encoder.parts.get("sparse", encoder) if isinstance(encoder, CompositeEncoder) else encoder
    if isinstance(part, BM25Encoder):
        return part.tokenizer, part.lowercase
    return part.tokenizer, False  # type: ignore[attr-defined]  # a model encoder's tokenizer


def matched_tokens(
    encoder: TextEncoder, query: SparseVector, texts: list[str | None]
) -> list[list[TokenMatch]]:
    """Per text, the query tokens it holds, heaviest first, with their spans (none if offsets are unsure)."""
    weights = {int(t): float(w) for t, w in query.items() if w > 0}
    if not weights:
        return [[] for _ in texts]
    tokenizer, lowercase = _sparse_tokenizer(encoder)
    names = dict(zip(weights, encoder.token_strings(list(weights))))
    present = [t or "" for t in texts]
    folded = [t.lower() for t in present] if lowercase else present
    encodings = tokenizer.backend_tokenizer.encode_batch(folded, add_special_tokens=False)
    out: list[list[TokenMatch]] = []
    for original, seen, enc in zip(present, folded, encodings):
        # Lowercasing can change a text's length (rare letters); then offsets do not map back and are dropped.
        offsets_valid = len(seen) == len(original)
        found: dict[int, TokenMatch] = {}
        for token_id, (start, end) in zip(enc.ids, enc.offsets):
            if token_id not in weights:
                continue
            match = found.setdefault(token_id, TokenMatch(names[token_id], token_id, weights[token_id]))
            if offsets_valid and end > start:
                match.spans.append((start, end))
        out.append(sorted(found.values(), key=lambda m: -m.weight))
    return out
