"""Image -> normalized pixel tensor, with Pillow and numpy (torchvision is not available on CPU installs).

Two crops cover the towers we use: CLIP's (resize the short side to `size` with bicubic, then center-crop, as
torchvision's `Resize` + `CenterCrop` do on PIL images) and TensorFlow EfficientNet's (center-crop a fraction
of the short side, then resize to `size` with bicubic).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any, Literal

import numpy as np
import torch
from PIL import Image

from m3search.encoders.image.validation import to_rgb
from m3search.errors import InvalidInputError

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


@dataclass(frozen=True)
class ImagePreprocess:
    """How a tower wants its pixels: crop, size, and per-channel mean/std applied to values in [0, 1]."""

    size: int = 224
    crop: Literal["resize_then_crop", "crop_then_resize"] = "resize_then_crop"
    #: For `crop_then_resize`: the center square's side as a fraction of the image's short side.
    crop_fraction: float = 1.0
    mean: tuple[float, float, float] = CLIP_MEAN
    std: tuple[float, float, float] = CLIP_STD

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ImagePreprocess:
        try:
            return cls(
                size=int(data["size"]),
                crop=data["crop"],
                crop_fraction=float(data["crop_fraction"]),
                mean=tuple(data["mean"]),
                std=tuple(data["std"]),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise InvalidInputError(f"invalid image preprocessing description {data!r}: {exc}") from None

    def crop_and_resize(self, image: Image.Image) -> Image.Image:
        """The `size` x `size` RGB image the tower sees."""
        image = to_rgb(image)
        width, height = image.size
        size = self.size
        if self.crop == "resize_then_crop":
            # torchvision's Resize(int): the short side becomes `size`, the long side is truncated.
            if width <= height:
                new = (size, int(size * height / width))
            else:
                new = (int(size * width / height), size)
            if new != image.size:
                image = image.resize(new, Image.Resampling.BICUBIC)
            left = round((new[0] - size) / 2.0)
            top = round((new[1] - size) / 2.0)
            return image.crop((left, top, left + size, top + size))
        side = self.crop_fraction * min(width, height)
        x0, y0 = (width - side) / 2, (height - side) / 2
        return image.resize((size, size), Image.Resampling.BICUBIC, box=(x0, y0, x0 + side, y0 + side))

    def __call__(self, images: Sequence[Image.Image]) -> torch.Tensor:
        """(n, 3, size, size) float32 tensor of normalized pixels."""
        arrays = [np.asarray(self.crop_and_resize(image), dtype=np.float32) for image in images]
        pixels = np.stack(arrays) / np.float32(255.0)
        normalized = (pixels - np.asarray(self.mean, dtype=np.float32)) / np.asarray(
            self.std, dtype=np.float32
        )
        return torch.from_numpy(np.ascontiguousarray(normalized.transpose(0, 3, 1, 2), dtype=np.float32))


#: EVA02-CLIP's evaluation transform (Visualized-BGE).
CLIP_PREPROCESS = ImagePreprocess()

__all__ = ["CLIP_MEAN", "CLIP_PREPROCESS", "CLIP_STD", "ImagePreprocess"]
