"""`CompositeEncoder`: one `TextEncoder` whose outputs come from several, e.g. e5 dense + BM25 sparse."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from m3search.encoders.base import (
    EncodeResult,
    OutputKind,
    TextEncoder,
    requested_outputs,
    validate_texts,
)


class CompositeEncoder(TextEncoder):
    """Routes each output kind to the encoder that provides it; each part runs once per call."""

    def __init__(self, parts: Mapping[OutputKind, TextEncoder]) -> None:
        for kind, encoder in parts.items():
            encoder.check_outputs([kind])
        self.parts = dict(parts)
        names = list(dict.fromkeys(e.name for e in self.parts.values()))
        self.name = "+".join(names)
        dense = self.parts.get("dense")
        colbert = self.parts.get("colbert")
        self.dim = dense.dim if dense else 0
        self.colbert_dim = colbert.colbert_dim if colbert else None
        self.outputs = frozenset(self.parts)
        self.max_length = min(e.max_length for e in self.parts.values())
        self.default_max_length = min(e.default_max_length for e in self.parts.values())

    def encode(
        self,
        texts: str | Sequence[str],
        *,
        return_dense: bool = True,
        return_sparse: bool = False,
        return_colbert: bool = False,
        **kwargs: Any,
    ) -> EncodeResult:
        """Encode with each part for the outputs it owns and merge the results."""
        wanted = requested_outputs(return_dense, return_sparse, return_colbert)
        self.check_outputs(wanted)
        texts = validate_texts(texts)
        by_encoder: dict[int, list[OutputKind]] = {}
        for kind in wanted:
            by_encoder.setdefault(id(self.parts[kind]), []).append(kind)
        result = EncodeResult()
        for kinds in by_encoder.values():
            encoder = self.parts[kinds[0]]
            part = encoder.encode(
                texts,
                return_dense="dense" in kinds,
                return_sparse="sparse" in kinds,
                return_colbert="colbert" in kinds,
                **kwargs,
            )
            for kind in kinds:
                setattr(result, kind, getattr(part, kind))
            if "colbert" in kinds:
                result.colbert_ids = part.colbert_ids
            # Token counts and truncation are reported by the model that reads the most tokens.
            if not result.num_tokens or encoder is self.parts.get("dense"):
                result.num_tokens, result.truncated = part.num_tokens, part.truncated
        return result

    def token_strings(self, token_ids: Any) -> list[str]:
        """Token strings from the sparse part (whose ids are the ones shown for matches)."""
        part = self.parts.get("sparse") or next(iter(self.parts.values()))
        return part.token_strings(token_ids)

    def runtime_identity(self) -> dict[str, str] | None:
        """The runtime of the parts that run a model (they share one: a collection's encoder loads once)."""
        identities = [i for i in (e.runtime_identity() for e in self.parts.values()) if i is not None]
        return identities[0] if identities else None

    def prunable_tokens(self, token_ids: Any) -> np.ndarray:
        """The ColBERT part's special and punctuation token ids."""
        return self.parts["colbert"].prunable_tokens(token_ids)

    def describe(self) -> dict[str, Any]:
        info = super().describe()
        info["parts"] = {kind: enc.describe() for kind, enc in self.parts.items()}
        return info
