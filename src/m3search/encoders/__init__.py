"""Text encoders behind one interface (`TextEncoder`): bge-m3, generic dense models, BM25, composites."""

from __future__ import annotations

from typing import TYPE_CHECKING

from m3search.lazy import lazy_exports

#: Public name -> the module that defines it (loaded on first use: torch and transformers are heavy).
_EXPORTS = {
    "KNOWN_MODELS": "m3search.encoders.registry",
    "OUTPUT_KINDS": "m3search.encoders.base",
    "BGEM3Encoder": "m3search.encoders.m3",
    "BM25Encoder": "m3search.encoders.bm25",
    "BM25Stats": "m3search.encoders.bm25",
    "CompositeEncoder": "m3search.encoders.composite",
    "EncodeResult": "m3search.encoders.base",
    "ModelSpec": "m3search.encoders.registry",
    "OutputKind": "m3search.encoders.base",
    "SparseVector": "m3search.encoders.base",
    "TextEncoder": "m3search.encoders.base",
    "TransformerEncoder": "m3search.encoders.transformer",
    "find_spec": "m3search.encoders.registry",
    "load_bm25": "m3search.encoders.loader",
    "load_encoder": "m3search.encoders.loader",
    "resolve_model": "m3search.encoders.resolve",
}

if TYPE_CHECKING:
    from m3search.encoders.base import OUTPUT_KINDS, EncodeResult, OutputKind, SparseVector, TextEncoder
    from m3search.encoders.bm25 import BM25Encoder, BM25Stats
    from m3search.encoders.composite import CompositeEncoder
    from m3search.encoders.loader import load_bm25, load_encoder
    from m3search.encoders.m3 import BGEM3Encoder
    from m3search.encoders.registry import KNOWN_MODELS, ModelSpec, find_spec
    from m3search.encoders.resolve import resolve_model
    from m3search.encoders.transformer import TransformerEncoder

__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)

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
    "load_bm25",
    "load_encoder",
    "resolve_model",
]
