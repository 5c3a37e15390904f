"""Visualized-BGE (FlagEmbedding `research/visual_bge`, VISTA): images, texts and image+text in bge's space.

An EVA02-CLIP vision tower turns the image into patch tokens; a linear projection maps them to the text
model's width; they get bge's position embeddings for positions 1..N and its embedding LayerNorm, and enter
the unchanged bge encoder between the CLS token (position 0) and the text tokens (positions N+1...). The CLS
output, normalized, is the embedding. Text alone takes bge's plain path, so text vectors are exactly bge-m3's
dense vectors. Weights come from one checkpoint (`Visualized_m3.pth`) holding both towers; the text model's
snapshot gives its config and tokenizer.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from m3search.encoders.base import validate_texts
from m3search.encoders.image.base import ImageEncoder, as_list, batched
from m3search.encoders.image.eva import EVAVisionConfig, EVAVisionTower
from m3search.encoders.image.preprocess import CLIP_PREPROCESS, ImagePreprocess
from m3search.encoders.image.validation import ImageSource, load_images
from m3search.encoders.model import EncoderModel
from m3search.encoders.resolve import resolve_model
from m3search.encoders.runtimes import TorchRuntime
from m3search.encoders.transformer import TransformerEncoder, load_tokenizer
from m3search.errors import InvalidInputError, ModelLoadError, ModelNotFoundError

#: Hub repository of the checkpoints, and the checkpoint that fits each text model.
VISUALIZED_REPO = "BAAI/bge-visualized"
VISUALIZED_CHECKPOINTS = {
    "BAAI/bge-m3": "Visualized_m3.pth",
    "BAAI/bge-base-en-v1.5": "Visualized_base_en_v1.5.pth",
}

#: Checkpoint entries this model does not use: bge's pooler, the CLIP logit scale, the tower's final norm and
#: CLIP head (Visualized-BGE takes the last block's tokens), and position/token-type buffers of older
#: transformers versions.
_UNUSED_PREFIXES = (
    "bge_pooler.",
    "model_visual.logit_scale",
    "model_visual.visual.norm.",
    "model_visual.visual.head.",
)
_UNUSED_BUFFERS = ("bge_embeddings.position_ids", "bge_embeddings.token_type_ids")
_PARTS = {
    "bge_embeddings.": "backbone.embeddings.",
    "bge_encoder.": "backbone.encoder.",
    "model_visual.visual.": "visual.",
    "visual_proj.": "visual_proj.",
}


class VisualizedBGE(nn.Module):
    """The torch module: a bge backbone (no pooler), the EVA02 tower and the patch-token projection."""

    def __init__(self, backbone: Any, vision: EVAVisionConfig) -> None:
        super().__init__()
        hidden = backbone.config.hidden_size
        self.backbone: Any = backbone  # a transformers XLMRobertaModel
        self.visual = EVAVisionTower(vision)
        self.visual_proj = nn.Linear(vision.width, hidden)

    @property
    def num_image_tokens(self) -> int:
        return self.visual.config.num_patches

    def image_tokens(self, pixels: torch.Tensor) -> torch.Tensor:
        """(B, N, hidden): projected patch tokens (the tower's CLS dropped) + positions 1..N, layer-normed."""
        emb = self.backbone.embeddings
        tokens = self.visual_proj(self.visual(pixels)[:, 1:])
        positions = torch.arange(1, tokens.shape[1] + 1, device=tokens.device)
        return emb.LayerNorm(tokens + emb.position_embeddings(positions))

    def composed(
        self, pixels: torch.Tensor, input_ids: torch.Tensor, attention_mask: torch.Tensor
    ) -> torch.Tensor:
        """(B, hidden) normalized CLS output of [CLS, image tokens, text tokens after CLS]."""
        image = self.image_tokens(pixels)
        batch, length = input_ids.shape
        n = image.shape[1]
        device = input_ids.device
        positions = torch.cat(
            [torch.zeros(1, dtype=torch.long, device=device), torch.arange(n + 1, n + length, device=device)]
        )
        text = self.backbone.embeddings(
            input_ids=input_ids,
            position_ids=positions.expand(batch, -1),
            token_type_ids=torch.zeros_like(input_ids),
        )
        sequence = torch.cat([text[:, :1], image, text[:, 1:]], dim=1)
        image_mask = torch.ones(batch, n, dtype=attention_mask.dtype, device=device)
        mask = torch.cat([attention_mask[:, :1], image_mask, attention_mask[:, 1:]], dim=1)
        additive = (1.0 - mask[:, None, None, :].to(sequence.dtype)) * torch.finfo(sequence.dtype).min
        hidden = self.backbone.encoder(sequence, attention_mask=additive).last_hidden_state
        return F.normalize(hidden[:, 0], dim=-1)


def _split_checkpoint(state: dict[str, torch.Tensor], path: Path) -> dict[str, torch.Tensor]:
    """Rename checkpoint keys to `VisualizedBGE`'s; refuse keys that belong to neither tower."""
    out: dict[str, torch.Tensor] = {}
    unknown = []
    for key, value in state.items():
        if key.startswith(_UNUSED_PREFIXES) or key in _UNUSED_BUFFERS:
            continue
        prefix = next((p for p in _PARTS if key.startswith(p)), None)
        if prefix is None:
            unknown.append(key)
            continue
        out[_PARTS[prefix] + key[len(prefix) :]] = value.float()
    if unknown:
        raise ModelLoadError(f"{path} is not a Visualized-BGE checkpoint: unexpected entries {unknown[:5]}")
    return out


def resolve_checkpoint(checkpoint: str | Path, text_model: str, cache_dir: str | Path | None = None) -> Path:
    """The `.pth` file: a path, a directory holding the one that fits `text_model`, or the hub repository."""
    filename = VISUALIZED_CHECKPOINTS.get(text_model, "Visualized_m3.pth")
    local = Path(checkpoint).expanduser()
    if local.is_file():
        return local
    if local.is_dir():
        if (local / filename).is_file():
            return local / filename
        raise ModelNotFoundError(f"{local} has no {filename}")
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError

    repo = str(checkpoint)
    try:
        return Path(hf_hub_download(repo, filename, cache_dir=cache_dir, local_files_only=True))
    except (LocalEntryNotFoundError, OSError, ValueError):
        pass
    if os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes"):
        raise ModelNotFoundError(
            f"{filename} of {repo} is not in the Hugging Face cache and HF_HUB_OFFLINE is set"
        )
    try:
        return Path(hf_hub_download(repo, filename, cache_dir=cache_dir))
    except (HfHubHTTPError, LocalEntryNotFoundError, OSError, ValueError) as exc:
        reason = str(exc).splitlines()[0][:200]
        raise ModelNotFoundError(f"cannot download {filename} from {repo}: {reason}") from exc


def load_visualized_bge(checkpoint: Path, text_path: Path) -> VisualizedBGE:
    """Build the module from the text model's config and load both towers from the checkpoint, strictly."""
    from transformers import AutoConfig, AutoModel

    try:
        state = torch.load(checkpoint, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many types for corrupt or non-tensor pickles
        raise ModelLoadError(f"cannot read the Visualized-BGE checkpoint {checkpoint}: {exc}") from exc
    if not isinstance(state, dict):
        raise ModelLoadError(f"{checkpoint} does not hold a state dict")
    weights = _split_checkpoint(state, checkpoint)
    vision = EVAVisionConfig.from_state_dict(weights, prefix="visual.")
    try:
        config = AutoConfig.from_pretrained(str(text_path))
        backbone = AutoModel.from_config(config, add_pooling_layer=False)
    except (OSError, ValueError, TypeError) as exc:
        raise ModelLoadError(f"cannot build the text model from {text_path}: {exc}") from exc
    model = VisualizedBGE(backbone, vision)
    try:
        model.load_state_dict(weights, strict=True)
    except RuntimeError as exc:
        raise ModelLoadError(f"{checkpoint} does not fit the text model at {text_path}: {exc}") from exc
    return model.eval()


class VisualizedBGEEncoder(ImageEncoder):
    """Images, texts and image+text pairs into one dense space (1024-d for bge-m3), L2-normalized.

    `encode(images=..., texts=...)`: images only, texts only (identical to the text model's dense vectors), or
    pairs (composed queries such as "this dress, in red"). Its authors recommend it for composed image+text
    retrieval more than for plain text->image search.
    """

    def __init__(
        self,
        model: VisualizedBGE,
        text_encoder: TransformerEncoder,
        *,
        name: str,
        preprocess: ImagePreprocess = CLIP_PREPROCESS,
        device: str = "cpu",
    ) -> None:
        self.model = model.to(device)
        self.device = torch.device(device)
        self.text_encoder = text_encoder
        self.tokenizer = text_encoder.tokenizer
        self.preprocess = replace(preprocess, size=model.visual.config.image_size)
        self.name = name
        self.text_model = text_encoder.name
        self.dim = model.backbone.config.hidden_size
        max_positions = int(getattr(model.backbone.config, "max_position_embeddings", 512))
        #: Longest text (special tokens included) that fits after the image tokens in the position table.
        self.max_composed_length = max_positions - model.num_image_tokens - 2

    @classmethod
    def from_pretrained(
        cls,
        checkpoint: str | Path = VISUALIZED_REPO,
        *,
        text_model: str | Path = "BAAI/bge-m3",
        device: str | None = None,
        cache_dir: str | Path | None = None,
    ) -> VisualizedBGEEncoder:
        """Load a checkpoint (file, directory or hub repo) with its text model (hub id or directory)."""
        text_path, spec = resolve_model(text_model, cache_dir=cache_dir)
        path = resolve_checkpoint(checkpoint, spec.name, cache_dir)
        model = load_visualized_bge(path, text_path)
        spec = replace(spec, family="dense", pooling="cls")
        runtime = TorchRuntime(EncoderModel(model.backbone, "cls"), device=device or "cpu")
        text_encoder = TransformerEncoder(spec, text_path, runtime, load_tokenizer(text_path))
        return cls(model, text_encoder, name=str(checkpoint), device=device or "cpu")

    @property
    def supports_composed(self) -> bool:
        return True

    def encode(
        self,
        images: ImageSource | Sequence[ImageSource] | None = None,
        texts: str | Sequence[str] | None = None,
        *,
        batch_size: int = 16,
        max_length: int | None = None,
        show_progress_bar: bool = False,
    ) -> np.ndarray:
        """Image only, text only, or image+text pairs (equal counts) -> (n, dim) normalized float32."""
        if images is None:
            if texts is None:
                raise InvalidInputError("give images, texts, or both")
            return self.text_encoder.encode(
                texts, batch_size=batch_size, max_length=max_length, show_progress_bar=show_progress_bar
            ).need("dense")
        if texts is None:
            return self.encode_images(images, batch_size=batch_size, show_progress_bar=show_progress_bar)
        texts = [texts] if isinstance(texts, str) else list(texts)
        return self.encode_composed(
            as_list(images),
            texts,
            batch_size=batch_size,
            max_length=max_length,
            show_progress_bar=show_progress_bar,
        )

    def encode_images(
        self,
        images: ImageSource | Sequence[ImageSource],
        *,
        batch_size: int = 16,
        show_progress_bar: bool = False,
    ) -> np.ndarray:
        images = as_list(images)
        return self.encode_composed(
            images, [""] * len(images), batch_size=batch_size, show_progress_bar=show_progress_bar
        )

    def encode_composed(
        self,
        images: Sequence[ImageSource],
        texts: Sequence[str],
        *,
        batch_size: int = 16,
        max_length: int | None = None,
        show_progress_bar: bool = False,
    ) -> np.ndarray:
        texts = validate_texts(texts)
        if len(images) != len(texts):
            raise InvalidInputError(
                f"got {len(images)} images and {len(texts)} texts; pairs need equal counts"
            )
        limit = self.max_composed_length if max_length is None else int(max_length)
        if not 2 <= limit <= self.max_composed_length:
            raise InvalidInputError(
                f"max_length must be between 2 and {self.max_composed_length} for "
                f"image+text with {self.name}, got {limit}"
            )
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        pairs = list(range(len(texts)))
        with tqdm(total=len(pairs), unit="img", disable=not show_progress_bar, desc="encode images") as bar:
            for batch in batched(pairs, batch_size):
                pil = load_images([images[i] for i in batch], limits=self.limits, first_index=batch[0])
                ids, mask = self._tokenize([texts[i] for i in batch], limit)
                with torch.inference_mode():
                    vectors = self.model.composed(
                        self.preprocess(pil).to(self.device), ids.to(self.device), mask.to(self.device)
                    )
                out[batch[0] : batch[-1] + 1] = vectors.float().cpu().numpy()
                bar.update(len(batch))
        return out

    def _tokenize(self, texts: list[str], max_length: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Padded (ids, mask) of [CLS] text [EOS], cut to `max_length`, with the text encoder's own tokenizer
        state (calling the HF tokenizer with padding options would change that shared state)."""
        tok = self.tokenizer
        contents = [c[: max_length - 2] for c in self.text_encoder._content_ids(texts)]
        width = max(len(c) for c in contents) + 2
        ids = torch.full((len(texts), width), tok.pad_token_id, dtype=torch.long)
        mask = torch.zeros((len(texts), width), dtype=torch.long)
        for row, content in enumerate(contents):
            wrapped = [tok.cls_token_id, *content.tolist(), tok.sep_token_id]
            ids[row, : len(wrapped)] = torch.tensor(wrapped)
            mask[row, : len(content) + 2] = 1
        return ids, mask

    def describe(self) -> dict[str, Any]:
        info = super().describe()
        info.update(vision=self.model.visual.config.to_dict(), image_tokens=self.model.num_image_tokens)
        return info


__all__ = [
    "VISUALIZED_CHECKPOINTS",
    "VISUALIZED_REPO",
    "VisualizedBGE",
    "VisualizedBGEEncoder",
    "load_visualized_bge",
    "resolve_checkpoint",
]
