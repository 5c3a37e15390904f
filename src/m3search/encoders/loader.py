"""`load_encoder`: any supported text model by name or path, with its sparse weights from its head or BM25;
`load_bm25`: BM25 over a model's tokenizer alone."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from m3search.encoders.base import OutputKind, TextEncoder
from m3search.encoders.bm25 import BM25Encoder, BM25Stats
from m3search.encoders.composite import CompositeEncoder
from m3search.encoders.resolve import resolve_model
from m3search.encoders.transformer import TransformerEncoder, load_tokenizer


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


def load_bm25(
    model: str | Path, *, bm25_stats: BM25Stats | None = None, cache_dir: str | Path | None = None
) -> BM25Encoder:
    """The BM25 encoder `load_encoder(model, sparse="bm25")` includes, from the model's tokenizer alone (its
    weights are not loaded): what a writer that encodes nothing needs to weigh BM25 term counts."""
    path, _ = resolve_model(model, cache_dir=cache_dir)
    return BM25Encoder(load_tokenizer(path), stats=bm25_stats)
