"""EVA02-CLIP vision transformer (the tower of Visualized-BGE), written here because timm and open_clip need
torchvision, which CPU-only installs of m3search do not have.

Architecture (EVA02, as in Visualized-BGE's checkpoints): 2-D rotary position embedding on the patch tokens of
q and k, SwiGLU MLP with a LayerNorm before its output projection ("sub-LN"), a LayerNorm before the attention
output projection, separate q/k/v projections with q and v biases, pre-norm blocks, LayerNorm eps 1e-6.
Visualized-BGE uses every output token of the last block, before the final norm; that norm and the CLIP head
are therefore not part of this module (the loader skips their weights). Parameter names match the
checkpoint's.
"""

from __future__ import annotations

import math
import re
from dataclasses import asdict, dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from m3search.errors import ModelLoadError


@dataclass(frozen=True)
class EVAVisionConfig:
    """Shape of an EVA02 vision tower; the defaults are EVA02-CLIP-L-14 at 224 px (Visualized-BGE m3)."""

    image_size: int = 224
    patch_size: int = 14
    width: int = 1024
    layers: int = 24
    head_dim: int = 64
    mlp_hidden: int = 2730  # int(1024 * 2.6667)
    #: Grid size the rotary frequencies were pretrained at; positions are rescaled to it ("intp_freq").
    rope_pretrain_grid: int = 16
    eps: float = 1e-6

    @property
    def heads(self) -> int:
        return self.width // self.head_dim

    @property
    def grid(self) -> int:
        return self.image_size // self.patch_size

    @property
    def num_patches(self) -> int:
        return self.grid * self.grid

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_state_dict(cls, state: dict[str, torch.Tensor], prefix: str = "") -> EVAVisionConfig:
        """Read the shape of a tower from its weights (checkpoints carry no config)."""
        try:
            patch = state[f"{prefix}patch_embed.proj.weight"]
            positions = state[f"{prefix}pos_embed"].shape[1] - 1
            rope = state[f"{prefix}rope.freqs_cos"]
            mlp_hidden = state[f"{prefix}blocks.0.mlp.w1.weight"].shape[0]
        except KeyError as exc:
            raise ModelLoadError(f"not an EVA02 vision tower state dict: missing {exc.args[0]}") from None
        block = re.compile(re.escape(prefix) + r"blocks\.(\d+)\.")
        layer_ids = {int(m.group(1)) for k in state if (m := block.match(k))}
        grid = math.isqrt(positions)
        if grid * grid != positions:
            raise ModelLoadError(f"EVA02 position embedding has {positions} patch positions, not a square")
        return cls(
            image_size=grid * patch.shape[-1],
            patch_size=patch.shape[-1],
            width=patch.shape[0],
            layers=len(layer_ids),
            head_dim=rope.shape[-1],
            mlp_hidden=mlp_hidden,
        )


def rotary_tables(config: EVAVisionConfig) -> tuple[torch.Tensor, torch.Tensor]:
    """cos and sin tables, (num_patches, head_dim): the first half of each head turns with the patch row, the
    second half with its column; frequencies come in adjacent equal pairs (the interleaved convention)."""
    quarter = config.head_dim // 4
    inv_freq = 1.0 / (10000 ** (torch.arange(quarter, dtype=torch.float32) * 2 / (config.head_dim // 2)))
    positions = torch.arange(config.grid, dtype=torch.float32) / config.grid * config.rope_pretrain_grid
    angles = torch.repeat_interleave(torch.outer(positions, inv_freq), 2, dim=-1)  # (grid, head_dim / 2)
    rows = angles[:, None, :].expand(-1, config.grid, -1)
    cols = angles[None, :, :].expand(config.grid, -1, -1)
    table = torch.cat([rows, cols], dim=-1).reshape(config.num_patches, config.head_dim)
    return table.cos(), table.sin()


class RotaryEmbedding2D(nn.Module):
    """Rotates adjacent feature pairs of each patch token by angles set by its (row, column) in the grid."""

    def __init__(self, config: EVAVisionConfig) -> None:
        super().__init__()
        cos, sin = rotary_tables(config)
        self.freqs_cos: torch.Tensor
        self.freqs_sin: torch.Tensor
        self.register_buffer("freqs_cos", cos)
        self.register_buffer("freqs_sin", sin)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pairs = x.unflatten(-1, (-1, 2))
        rotated = torch.stack((-pairs[..., 1], pairs[..., 0]), dim=-1).flatten(-2)
        return x * self.freqs_cos + rotated * self.freqs_sin


class Attention(nn.Module):
    """Multi-head self-attention with q/v biases, rotary patch positions and a LayerNorm before `proj`."""

    def __init__(self, config: EVAVisionConfig, rope: RotaryEmbedding2D) -> None:
        super().__init__()
        width = config.width
        self.heads = config.heads
        self.q_proj = nn.Linear(width, width, bias=False)
        self.k_proj = nn.Linear(width, width, bias=False)
        self.v_proj = nn.Linear(width, width, bias=False)
        self.q_bias = nn.Parameter(torch.zeros(width))
        self.v_bias = nn.Parameter(torch.zeros(width))
        self.inner_attn_ln = nn.LayerNorm(width, eps=config.eps)
        self.proj = nn.Linear(width, width)
        self.rope = rope  # shared by all blocks (and stored under each, as in the checkpoint)

    def _with_rope(self, t: torch.Tensor) -> torch.Tensor:
        return torch.cat([t[:, :, :1], self.rope(t[:, :, 1:])], dim=2)  # the CLS token has no position

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, tokens, width = x.shape

        def heads(t: torch.Tensor) -> torch.Tensor:
            return t.reshape(batch, tokens, self.heads, -1).transpose(1, 2)

        q = heads(F.linear(x, self.q_proj.weight, self.q_bias))
        k = heads(self.k_proj(x))
        v = heads(F.linear(x, self.v_proj.weight, self.v_bias))
        out = F.scaled_dot_product_attention(self._with_rope(q), self._with_rope(k), v)
        out = out.transpose(1, 2).reshape(batch, tokens, width)
        return self.proj(self.inner_attn_ln(out))


class SwiGLU(nn.Module):
    """silu(w1 x) * (w2 x), layer-normed, then w3."""

    def __init__(self, config: EVAVisionConfig) -> None:
        super().__init__()
        self.w1 = nn.Linear(config.width, config.mlp_hidden)
        self.w2 = nn.Linear(config.width, config.mlp_hidden)
        self.ffn_ln = nn.LayerNorm(config.mlp_hidden, eps=config.eps)
        self.w3 = nn.Linear(config.mlp_hidden, config.width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.w3(self.ffn_ln(F.silu(self.w1(x)) * self.w2(x)))


class Block(nn.Module):
    """Pre-norm transformer block."""

    def __init__(self, config: EVAVisionConfig, rope: RotaryEmbedding2D) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(config.width, eps=config.eps)
        self.attn = Attention(config, rope)
        self.norm2 = nn.LayerNorm(config.width, eps=config.eps)
        self.mlp = SwiGLU(config)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class PatchEmbed(nn.Module):
    def __init__(self, config: EVAVisionConfig) -> None:
        super().__init__()
        self.proj = nn.Conv2d(3, config.width, kernel_size=config.patch_size, stride=config.patch_size)

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        return self.proj(pixels).flatten(2).transpose(1, 2)


class EVAVisionTower(nn.Module):
    """(B, 3, S, S) normalized pixels -> (B, 1 + patches, width): the CLS token then the patch tokens."""

    def __init__(self, config: EVAVisionConfig) -> None:
        super().__init__()
        self.config = config
        self.patch_embed = PatchEmbed(config)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, config.width))
        self.pos_embed = nn.Parameter(torch.zeros(1, config.num_patches + 1, config.width))
        self.rope = RotaryEmbedding2D(config)
        self.blocks = nn.ModuleList(Block(config, self.rope) for _ in range(config.layers))

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        size = self.config.image_size
        if pixels.shape[-2:] != (size, size):
            raise ValueError(f"EVA02 tower expects {size}x{size} inputs, got {tuple(pixels.shape[-2:])}")
        x = self.patch_embed(pixels)
        x = torch.cat([self.cls_token.expand(x.shape[0], -1, -1), x], dim=1) + self.pos_embed
        for block in self.blocks:
            x = block(x)
        return x


__all__ = ["EVAVisionConfig", "EVAVisionTower", "rotary_tables"]
