"""Frozen vision towers: images -> pooled feature vectors, the input of a trained projection (`adapter`).

A tower is named by a string stored with each adapter (`"efficientnet-lite0"`), so a collection can rebuild
it. Towers are described as data in `TOWERS`; each kind of network is one small class.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence

import numpy as np
import torch
from tqdm.auto import tqdm

from m3search.encoders.image.base import as_list, batched
from m3search.encoders.image.preprocess import ImagePreprocess
from m3search.encoders.image.validation import DEFAULT_LIMITS, ImageLimits, ImageSource, load_images
from m3search.errors import InvalidInputError


class VisionTower(ABC):
    """A frozen image network in eval mode; `features` gives one `feature_dim` vector per image."""

    name: str
    feature_dim: int
    preprocess: ImagePreprocess
    device: torch.device

    @abstractmethod
    def features(self, pixels: torch.Tensor) -> torch.Tensor:
        """(B, feature_dim) float32 features of preprocessed pixels (B, 3, size, size)."""

    def encode(
        self,
        images: ImageSource | Sequence[ImageSource],
        *,
        batch_size: int = 32,
        show_progress_bar: bool = False,
        limits: ImageLimits = DEFAULT_LIMITS,
    ) -> np.ndarray:
        """Load, check and preprocess images, then return their (n, feature_dim) float32 features."""
        images = as_list(images)
        out = np.zeros((len(images), self.feature_dim), dtype=np.float32)
        with tqdm(
            total=len(images), unit="img", disable=not show_progress_bar, desc=f"features {self.name}"
        ) as bar:
            for start, batch in zip(range(0, len(images), batch_size), batched(images, batch_size)):
                pixels = self.preprocess(load_images(batch, limits=limits, first_index=start))
                with torch.inference_mode():
                    features = self.features(pixels.to(self.device))
                out[start : start + len(batch)] = features.float().cpu().numpy()
                bar.update(len(batch))
        return out


def _efficientnet_lite0(device: str) -> VisionTower:
    from m3search.encoders.image.efficientnet import EfficientNetLiteTower

    return EfficientNetLiteTower.lite0(device=device)


#: Tower name -> loader. Every entry must work offline from packages m3search can depend on; OpenCLIP
#: towers (`open_clip:MODEL@PRETRAINED`) come on top where open_clip is installed.
TOWERS: dict[str, Callable[[str], VisionTower]] = {"efficientnet-lite0": _efficientnet_lite0}


def load_tower(name: str, *, device: str | None = None) -> VisionTower:
    """Build the named tower on `device` (default cpu)."""
    if name.startswith("open_clip:"):
        from m3search.encoders.image.openclip import OpenCLIPTower

        return OpenCLIPTower.load(name, device=device or "cpu")
    try:
        loader = TOWERS[name]
    except KeyError:
        known = ", ".join(sorted(TOWERS))
        raise InvalidInputError(f"unknown image tower {name!r}; available: {known}") from None
    return loader(device or "cpu")


__all__ = ["TOWERS", "VisionTower", "load_tower"]
