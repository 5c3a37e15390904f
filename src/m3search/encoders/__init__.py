"""Text encoders behind one interface (`TextEncoder`): bge-m3, generic dense models, BM25, composites.

The model-backed encoders load on first use (they import torch); the interface and result types do not.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Literal

from m3search.encoders.base import OUTPUT_KINDS, EncodeResult, OutputKind, SparseVector, TextEncoder
from m3search.encoders.bm25 import BM25Encoder, BM25Stats
from m3search.encoders.composite import CompositeEncoder
from m3search.encoders.registry import KNOWN_MODELS, ModelSpec, find_spec
from m3search.encoders.resolve import resolve_model
from m3search.lazy import lazy_exports

if TYPE_CHECKING:
    from m3search.encoders.m3 import BGEM3Encoder
    from m3search.encoders.transformer import TransformerEncoder

__getattr__, __dir__ = lazy_exports(
    __name__,
    {"BGEM3Encoder": "m3search.encoders.m3", "TransformerEncoder": "m3search.encoders.transformer"},
)


def load_encoder(
    model: str | Path,
    *,
    runtime: str = "auto",
    device: str | None = None,
    sparse: Literal["auto", "model", "bm25", "none"] = "auto",
    bm25_stats: BM25Stats | None = None,
    cache_dir: str | Path | None = None,
) -> TextEncoder:
    """Load any supported text model; `sparse` picks the lexical weights: the model's head or BM25.

    `auto` uses the model's sparse head when it has one (bge-m3) and BM25 over its tokenizer otherwise.
    """
    from m3search.encoders.transformer import TransformerEncoder

    path, spec = resolve_model(model, cache_dir=cache_dir)
    tokenizer, rt = TransformerEncoder._load_parts(path, spec, runtime, device)
    encoder = TransformerEncoder(spec, path, rt, tokenizer)
    use_bm25 = sparse == "bm25" or (sparse == "auto" and "sparse" not in encoder.outputs)
    if sparse == "model":
        encoder.check_outputs(["sparse"])
    if not use_bm25:
        return encoder
    parts: dict[OutputKind, TextEncoder] = {k: encoder for k in encoder.outputs if k != "sparse"}
    parts["sparse"] = BM25Encoder(encoder.tokenizer, stats=bm25_stats)
    return CompositeEncoder(parts)


__all__ = [
    "KNOWN_MODELS",
    "OUTPUT_KINDS",
    "BGEM3Encoder",
    "BM25Encoder",
    "BM25Stats",
    "CompositeEncoder",
    "EncodeResult",
    "ModelSpec",
    "OutputKind",
    "SparseVector",
    "TextEncoder",
    "TransformerEncoder",
    "find_spec",
    "load_encoder",
    "resolve_model",
]
