"""OpenCLIP image towers (`open_clip:ViT-B-32@laion2b_s34b_b79k`), for machines with open_clip and the hub.

open_clip needs torchvision, which m3search's CPU installs do not have, so it is imported only when such a
tower is asked for. Features are the model's image embeddings (`encode_image`, before normalization);
preprocessing is read from the model (its image size, mean and std) and done by m3search, as for every tower.
"""

from __future__ import annotations

from typing import Any

import torch

from m3search.encoders.image.preprocess import CLIP_MEAN, CLIP_STD, ImagePreprocess
from m3search.encoders.image.towers import VisionTower
from m3search.errors import InvalidInputError, ModelLoadError, ModelNotFoundError

PREFIX = "open_clip:"


def parse_name(name: str) -> tuple[str, str]:
    """`open_clip:MODEL@PRETRAINED` -> (MODEL, PRETRAINED); both are required (no random towers)."""
    spec = name.removeprefix(PREFIX)
    model, _, pretrained = spec.partition("@")
    if not model or not pretrained:
        raise InvalidInputError(
            f"tower {name!r}: expected open_clip:MODEL@PRETRAINED, e.g. open_clip:ViT-B-32@laion2b_s34b_b79k"
        )
    return model, pretrained


class OpenCLIPTower(VisionTower):
    """An OpenCLIP model's image side."""

    def __init__(
        self,
        model: torch.nn.Module,
        name: str,
        feature_dim: int,
        preprocess: ImagePreprocess,
        device: str = "cpu",
    ) -> None:
        self.name = name
        self.feature_dim = feature_dim
        self.preprocess = preprocess
        self.device = torch.device(device)
        self.model: Any = model.eval().to(self.device)

    @classmethod
    def load(cls, name: str, *, device: str = "cpu") -> OpenCLIPTower:
        """Create the model with its pretrained weights (downloaded by open_clip on first use)."""
        model_name, pretrained = parse_name(name)
        try:
            import open_clip
        except ImportError:
            raise ModelNotFoundError(
                f"tower {name!r} needs open_clip: pip install open_clip_torch (it needs torchvision too)"
            ) from None
        try:
            model = open_clip.create_model(model_name, pretrained=pretrained, device=device)
        except (RuntimeError, OSError, ValueError) as exc:
            raise ModelLoadError(f"open_clip cannot create {model_name!r} ({pretrained}): {exc}") from exc
        visual = model.visual
        size = visual.image_size if isinstance(visual.image_size, int) else visual.image_size[0]
        mean = getattr(visual, "image_mean", None) or CLIP_MEAN
        std = getattr(visual, "image_std", None) or CLIP_STD
        preprocess = ImagePreprocess(size=int(size), mean=tuple(mean), std=tuple(std))
        with torch.inference_mode():
            dim = model.encode_image(torch.zeros(1, 3, size, size, device=device)).shape[-1]
        return cls(model, name, int(dim), preprocess, device)

    def features(self, pixels: torch.Tensor) -> torch.Tensor:
        return self.model.encode_image(pixels)


__all__ = ["OpenCLIPTower", "parse_name"]
