"""A frozen vision tower plus a trained projection into a text model's dense space (the "adapter" design).

The projection is small (linear, or a two-layer MLP) and is trained contrastively on image-caption pairs (see
`training`), so any text model's space can take images without touching either tower. It is saved as a small
directory (`adapter.json` + `projection.safetensors`) that a collection copies and loads beside its text
model.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from m3search.encoders.image.base import ImageEncoder, as_list
from m3search.encoders.image.preprocess import ImagePreprocess
from m3search.encoders.image.towers import VisionTower, load_tower
from m3search.encoders.image.validation import ImageSource
from m3search.errors import DimensionMismatchError, ModelLoadError

ADAPTER_FORMAT = "m3search-image-adapter"
ADAPTER_VERSION = 1
CONFIG_FILE = "adapter.json"
WEIGHTS_FILE = "projection.safetensors"


class Projection(nn.Module):
    """Standardize tower features, then map them to `dim` (linear, or Linear-GELU-Linear); output normalized.

    The standardization statistics come from the training images and are saved with the weights.
    """

    def __init__(self, feature_dim: int, dim: int, hidden_dim: int | None = None) -> None:
        super().__init__()
        self.feature_mean: torch.Tensor
        self.feature_std: torch.Tensor
        self.register_buffer("feature_mean", torch.zeros(feature_dim))
        self.register_buffer("feature_std", torch.ones(feature_dim))
        if hidden_dim:
            self.net: nn.Module = nn.Sequential(
                nn.Linear(feature_dim, hidden_dim), nn.GELU(), nn.Linear(hidden_dim, dim)
            )
        else:
            self.net = nn.Linear(feature_dim, dim)

    def set_statistics(self, features: torch.Tensor) -> None:
        """Standardize with the mean and std of these (training) features."""
        with torch.no_grad():
            self.feature_mean.copy_(features.mean(0))
            self.feature_std.copy_(features.std(0).clamp_min(1e-6))

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.net((features - self.feature_mean) / self.feature_std), dim=-1)


@dataclass
class AdapterConfig:
    """What `adapter.json` holds: enough to rebuild the encoder and to tell what it was trained on."""

    tower: str
    text_model: str
    feature_dim: int
    dim: int
    hidden_dim: int | None = None
    preprocess: dict[str, Any] = field(default_factory=dict)
    #: The learned InfoNCE temperature (as a logit scale); informative only.
    logit_scale: float = math.log(1 / 0.07)
    training: dict[str, Any] = field(default_factory=dict)
    metrics: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {"format": ADAPTER_FORMAT, "version": ADAPTER_VERSION, **asdict(self)}

    @classmethod
    def from_json(cls, data: dict[str, Any], where: Path) -> AdapterConfig:
        if data.get("format") != ADAPTER_FORMAT:
            raise ModelLoadError(f"{where} is not an m3search image adapter (format {data.get('format')!r})")
        if data.get("version") != ADAPTER_VERSION:
            raise ModelLoadError(
                f"{where} has adapter format version {data.get('version')}; this m3search "
                f"reads version {ADAPTER_VERSION}"
            )
        fields = {k: v for k, v in data.items() if k not in ("format", "version")}
        try:
            return cls(**fields)
        except TypeError as exc:
            raise ModelLoadError(f"{where} has an invalid adapter config: {exc}") from None


class AdapterImageEncoder(ImageEncoder):
    """Images -> tower features -> projection: L2-normalized vectors in the text model's dense space."""

    def __init__(
        self, tower: VisionTower, projection: Projection, config: AdapterConfig, *, name: str | None = None
    ) -> None:
        if config.feature_dim != tower.feature_dim:
            raise DimensionMismatchError(
                f"tower {tower.name!r} gives {tower.feature_dim}-d features; the "
                f"adapter expects {config.feature_dim}"
            )
        self.tower = tower
        self.projection = projection.eval().to(tower.device)
        self.config = config
        self.name = name or f"{config.tower}->{config.text_model}"
        self.dim = config.dim
        self.text_model = config.text_model
        if config.preprocess:
            tower.preprocess = ImagePreprocess.from_dict(config.preprocess)

    def project(self, features: np.ndarray) -> np.ndarray:
        """(n, dim) normalized vectors from precomputed (n, feature_dim) tower features."""
        features = np.asarray(features, dtype=np.float32)
        if features.ndim != 2 or features.shape[1] != self.config.feature_dim:
            raise DimensionMismatchError(
                f"expected (n, {self.config.feature_dim}) features, got {features.shape}"
            )
        with torch.inference_mode():
            out = self.projection(torch.from_numpy(features).to(self.tower.device))
        return out.float().cpu().numpy()

    def encode_images(
        self,
        images: ImageSource | Sequence[ImageSource],
        *,
        batch_size: int = 16,
        show_progress_bar: bool = False,
    ) -> np.ndarray:
        features = self.tower.encode(
            as_list(images), batch_size=batch_size, show_progress_bar=show_progress_bar, limits=self.limits
        )
        return self.project(features)

    def save(self, directory: str | Path) -> Path:
        """Write `adapter.json` and `projection.safetensors` into `directory` (created); return it."""
        from safetensors.torch import save_file

        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        state = {k: v.detach().cpu().contiguous() for k, v in self.projection.state_dict().items()}
        save_file(state, str(directory / WEIGHTS_FILE))
        config = json.dumps(self.config.to_json(), indent=2) + "\n"
        (directory / CONFIG_FILE).write_text(config, encoding="utf-8")
        return directory

    @classmethod
    def load(cls, directory: str | Path, *, device: str | None = None) -> AdapterImageEncoder:
        """Rebuild a saved adapter: its tower (by name) and its projection."""
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        directory = Path(directory)
        config_path, weights_path = directory / CONFIG_FILE, directory / WEIGHTS_FILE
        missing = [p.name for p in (config_path, weights_path) if not p.is_file()]
        if missing:
            raise ModelLoadError(f"{directory} is not an image adapter: missing {', '.join(missing)}")
        try:
            data = json.loads(config_path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise ModelLoadError(f"cannot read {config_path}: {exc}") from None
        config = AdapterConfig.from_json(data, config_path)
        projection = Projection(config.feature_dim, config.dim, config.hidden_dim)
        try:
            projection.load_state_dict(load_file(str(weights_path)))
        except (SafetensorError, RuntimeError, OSError) as exc:
            raise ModelLoadError(f"{weights_path} does not fit the adapter in {config_path}: {exc}") from None
        tower = load_tower(config.tower, device=device)
        return cls(tower, projection, config, name=directory.name)

    def describe(self) -> dict[str, Any]:
        info = super().describe()
        info.update(tower=self.config.tower, hidden_dim=self.config.hidden_dim, training=self.config.training)
        return info


__all__ = ["ADAPTER_FORMAT", "AdapterConfig", "AdapterImageEncoder", "Projection"]
