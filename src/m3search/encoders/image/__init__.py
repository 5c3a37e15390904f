"""Image encoders: safe loading, vision towers, Visualized-BGE and trained projections into a text space.

Two designs put images into a text model's dense space:
- `VisualizedBGEEncoder`: bge-m3 itself reads image tokens (Visualized-BGE); also encodes image+text together.
- `AdapterImageEncoder`: a frozen image tower plus a projection trained on image-caption pairs, for any text
  model (`m3search images train-adapter`).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from m3search.encoders.image.base import ImageEncoder
from m3search.encoders.image.validation import (
    DEFAULT_LIMITS,
    ImageLimits,
    ImageSource,
    image_field,
    load_image,
    load_images,
    make_thumbnail,
)
from m3search.errors import ModelNotFoundError
from m3search.lazy import lazy_exports

if TYPE_CHECKING:
    from m3search.encoders.image.adapter import AdapterImageEncoder
    from m3search.encoders.image.visualized_bge import VISUALIZED_REPO, VisualizedBGEEncoder

# The towers import torch: they load on first use.
__getattr__, __dir__ = lazy_exports(
    __name__,
    {
        "AdapterImageEncoder": "m3search.encoders.image.adapter",
        "VisualizedBGEEncoder": "m3search.encoders.image.visualized_bge",
        "VISUALIZED_REPO": "m3search.encoders.image.visualized_bge",
    },
)


def load_image_encoder(
    model: str | Path, *, text_model: str | Path = "BAAI/bge-m3", device: str | None = None
) -> ImageEncoder:
    """An adapter directory (holding `adapter.json`), or a Visualized-BGE checkpoint (`.pth` file, directory
    or the hub repository `BAAI/bge-visualized`, used with `text_model`)."""
    from m3search.encoders.image.adapter import AdapterImageEncoder
    from m3search.encoders.image.visualized_bge import VISUALIZED_REPO, VisualizedBGEEncoder

    local = Path(model).expanduser()
    if (local / "adapter.json").is_file():
        return AdapterImageEncoder.load(local, device=device)
    visualized = (local.is_file() and local.suffix == ".pth") or (
        local.is_dir() and any(local.glob("Visualized_*.pth"))
    )
    if visualized or str(model) == VISUALIZED_REPO:
        return VisualizedBGEEncoder.from_pretrained(model, text_model=text_model, device=device)
    raise ModelNotFoundError(
        f"{model} is neither an image adapter directory (adapter.json) nor a "
        f"Visualized-BGE checkpoint (.pth, or the hub repository {VISUALIZED_REPO})"
    )


__all__ = [
    "DEFAULT_LIMITS",
    "VISUALIZED_REPO",
    "AdapterImageEncoder",
    "ImageEncoder",
    "ImageLimits",
    "ImageSource",
    "VisualizedBGEEncoder",
    "image_field",
    "load_image",
    "load_image_encoder",
    "load_images",
    "make_thumbnail",
]
