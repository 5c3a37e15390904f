"""`BGEM3Encoder`: BAAI/bge-m3 with its three heads, exact to FlagEmbedding's `M3Embedder`."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from m3search.encoders.resolve import resolve_model
from m3search.encoders.transformer import TransformerEncoder


class BGEM3Encoder(TransformerEncoder):
    """bge-m3: dense (CLS, normalized), sparse (max relu weight per token id) and ColBERT from one pass.

    `model` is a hub id (resolved through the Hugging Face cache or downloaded) or a snapshot directory; the
    directory must hold `colbert_linear.pt` and `sparse_linear.pt` (the reference would silently use random
    heads without them; this class refuses).
    """

    def __init__(
        self,
        model: str | Path = "BAAI/bge-m3",
        *,
        runtime: str = "auto",
        device: str | None = None,
        cache_dir: str | Path | None = None,
    ) -> None:
        path, spec = resolve_model(model, cache_dir=cache_dir)
        if spec.family != "m3":
            spec = replace(spec, family="m3", pooling="cls")
        tokenizer, rt = self._load_parts(path, spec, runtime, device)
        super().__init__(spec, path, rt, tokenizer)

    @classmethod
    def from_pretrained(
        cls,
        model: str | Path = "BAAI/bge-m3",
        *,
        runtime: str = "auto",
        device: str | None = None,
        cache_dir: str | Path | None = None,
    ) -> BGEM3Encoder:
        """Same as the constructor; kept for the familiar call shape."""
        return cls(model, runtime=runtime, device=device, cache_dir=cache_dir)
