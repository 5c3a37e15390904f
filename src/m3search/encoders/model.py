"""The torch module behind every transformer encoder: a backbone plus the bge-m3 heads.

One forward pass yields the pooled dense vector, per-token lexical weights and per-token (ColBERT) vectors,
computing only the heads asked for. Torch runtimes run it directly; the ONNX export traces it.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from m3search.encoders.registry import M3_HEAD_FILES, ModelSpec
from m3search.errors import ModelLoadError

log = logging.getLogger(__name__)

WEIGHT_FILES = (
    "model.safetensors",
    "pytorch_model.bin",
    "model.safetensors.index.json",
    "pytorch_model.bin.index.json",
)
TOKENIZER_FILES = ("tokenizer.json", "sentencepiece.bpe.model", "vocab.txt")
POOLER_MODEL_TYPES = ("xlm-roberta", "roberta", "bert", "camembert")


class EncoderModel(nn.Module):
    """Backbone + heads. Dense = pooled and normalized; sparse = relu(linear) per token; ColBERT = per token.

    For the m3 family the ColBERT head is bge-m3's `colbert_linear`; for dense models it is the identity, so
    their raw token vectors serve late interaction.
    """

    def __init__(
        self,
        backbone: nn.Module,
        pooling: str,
        sparse_linear: nn.Linear | None = None,
        colbert_linear: nn.Module | None = None,
    ) -> None:
        super().__init__()
        self.backbone = backbone
        self.pooling = pooling
        self.sparse_linear = sparse_linear
        self.colbert_linear = colbert_linear if colbert_linear is not None else nn.Identity()

    def cast_backbone(self, dtype: torch.dtype, fp32_norms: bool = True) -> EncoderModel:
        """Run the backbone's matrix products in `dtype`; the heads stay fp32, and so do LayerNorm parameters
        unless `fp32_norms` is False.

        Normalization statistics are computed in fp32 by the kernels either way; fp32 LayerNorm weights keep
        the residual stream's rescaling exact, which is where bf16 error would otherwise accumulate. CUDA's
        LayerNorm kernel takes no parameters of another dtype than its input, so GPU runtimes pass False.
        """
        self.backbone.to(dtype)
        if fp32_norms:
            for module in self.backbone.modules():
                if isinstance(module, nn.LayerNorm):
                    module.float()
        return self

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        return_dense: bool = True,
        return_sparse: bool = False,
        return_colbert: bool = False,
        pool_mask: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor | None, torch.Tensor | None, torch.Tensor | None]:
        """Return (dense (b, d), token_weights (b, L), colbert (b, L-1, d')); None for heads not asked for.

        With `pool_mask` (b, L), dense is instead the unnormalized sum of the hidden states it marks (Multiple
        CLS: the encoder adds these sums over a long text's windows, then normalizes). The heads run in fp32
        whatever the backbone's dtype: they are cheap, and it keeps low-precision error to the backbone.
        """
        hidden = self.backbone(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state.float()
        dense = sparse = colbert = None
        if return_dense and pool_mask is not None:
            dense = torch.einsum("bl,bld->bd", pool_mask.to(hidden.dtype), hidden)
        elif return_dense:
            if self.pooling == "cls":
                pooled = hidden[:, 0]
            else:
                mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
                pooled = (hidden * mask).sum(dim=1) / mask.sum(dim=1)
            dense = F.normalize(pooled, dim=-1)
        if return_sparse:
            if self.sparse_linear is None:
                raise ModelLoadError("this model has no sparse head")
            sparse = torch.relu(self.sparse_linear(hidden)).squeeze(-1)
        if return_colbert:
            vecs = self.colbert_linear(hidden[:, 1:])
            vecs = vecs * attention_mask[:, 1:, None].to(vecs.dtype)
            colbert = F.normalize(vecs, dim=-1)
        return dense, sparse, colbert


@contextmanager
def _quiet_transformers() -> Iterator[None]:
    """Silence transformers' load report (the skipped pooler shows as 'unexpected keys') and progress bar."""
    from transformers.utils import logging as hf_logging

    verbosity, bars = hf_logging.get_verbosity(), hf_logging.is_progress_bar_enabled()
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        hf_logging.set_verbosity(verbosity)
        if bars:
            hf_logging.enable_progress_bar()


def check_model_dir(path: Path, spec: ModelSpec) -> None:
    """Raise a `ModelLoadError` naming each file a usable snapshot of `spec` lacks."""
    if not path.is_dir():
        raise ModelLoadError(f"model directory {path} does not exist")
    missing = []
    if not (path / "config.json").is_file():
        missing.append("config.json")
    if not any((path / f).is_file() for f in WEIGHT_FILES):
        missing.append("model weights (model.safetensors or pytorch_model.bin)")
    if not any((path / f).is_file() for f in TOKENIZER_FILES):
        missing.append("tokenizer (tokenizer.json or sentencepiece.bpe.model)")
    if spec.family == "m3":
        # FlagEmbedding silently builds random heads when these are absent; we refuse instead.
        missing += [f for f in M3_HEAD_FILES if not (path / f).is_file()]
    if missing:
        raise ModelLoadError(f"model directory {path} is incomplete: missing {', '.join(missing)}")


def _load_linear(path: Path, in_features: int) -> nn.Linear:
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many types for corrupt pickles
        raise ModelLoadError(f"cannot read {path}: {exc}") from exc
    weight = state.get("weight") if isinstance(state, dict) else None
    if weight is None or weight.ndim != 2 or weight.shape[1] != in_features:
        shape = tuple(weight.shape) if weight is not None else None
        raise ModelLoadError(f"{path} is not a Linear({in_features}, n) state dict (weight shape {shape})")
    linear = nn.Linear(in_features, weight.shape[0], bias="bias" in state)
    try:
        linear.load_state_dict(state)
    except RuntimeError as exc:
        raise ModelLoadError(f"{path} does not fit Linear({in_features}, {weight.shape[0]}): {exc}") from exc
    return linear


def load_torch_model(
    path: Path, spec: ModelSpec, dtype: torch.dtype = torch.float32, fp32_norms: bool = True
) -> EncoderModel:
    """Load backbone and heads from a checked model directory, in `dtype` (see `cast_backbone`), in eval mode."""
    from transformers import AutoConfig, AutoModel

    check_model_dir(path, spec)
    try:
        config = AutoConfig.from_pretrained(str(path))
        # The pooler layer is never used by any head: skip it where the architecture allows.
        extra = {"add_pooling_layer": False} if config.model_type in POOLER_MODEL_TYPES else {}
        # transformers would only warn about weights missing from the checkpoint (and fill them randomly);
        # its report is silenced here and the loading info checked below instead.
        with _quiet_transformers():
            backbone, info = AutoModel.from_pretrained(
                str(path),
                config=config,
                dtype=torch.float32,
                output_loading_info=True,
                ignore_mismatched_sizes=True,
                **extra,
            )
    except (OSError, ValueError, RuntimeError) as exc:
        raise ModelLoadError(f"cannot load the backbone from {path}: {exc}") from exc
    broken = sorted(info["missing_keys"]) + [
        f"{k} (shape {tuple(a)} in the checkpoint, {tuple(b)} expected)"
        for k, a, b in sorted(info["mismatched_keys"])
    ]
    if broken:
        more = f" and {len(broken) - 5} more" if len(broken) > 5 else ""
        raise ModelLoadError(
            f"{path} does not match its config.json; bad or missing weights: {', '.join(broken[:5])}{more}"
        )
    unused = sorted(k for k in info["unexpected_keys"] if not k.startswith("pooler."))
    if unused:
        log.info("%s: %d checkpoint weights are unused (%s, ...)", path, len(unused), unused[0])
    hidden = backbone.config.hidden_size
    sparse_linear = colbert_linear = None
    if spec.family == "m3":
        colbert_linear = _load_linear(path / "colbert_linear.pt", hidden)
        sparse_linear = _load_linear(path / "sparse_linear.pt", hidden)
        if sparse_linear.out_features != 1:
            raise ModelLoadError(
                f"{path / 'sparse_linear.pt'} must map to 1 output, not {sparse_linear.out_features}"
            )
    model = EncoderModel(backbone, spec.pooling, sparse_linear, colbert_linear)
    return model.cast_backbone(dtype, fp32_norms).eval()
