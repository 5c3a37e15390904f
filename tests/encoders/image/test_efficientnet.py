"""The EfficientNet-Lite0 tower is really ImageNet-pretrained and gives stable 1280-d features."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from m3search.encoders.image.towers import load_tower
from m3search.errors import ImageError, InvalidInputError

DOG_CLASSES = range(151, 269)  # ImageNet-1k indices 151-268 are dog breeds


def _dog_photos(flickr_dir: Path, captions: dict[str, list[str]], n: int) -> list[Path]:
    """Photos whose five captions all mention a dog."""
    names = sorted(k for k, v in captions.items() if all(" dog" in c.lower() for c in v))
    return [flickr_dir / "images" / name for name in names[:n]]


def test_dog_photos_get_dog_classes(lite0, flickr_dir: Path, flickr_captions: dict[str, list[str]]) -> None:
    from m3search.encoders.image.validation import load_images

    photos = _dog_photos(flickr_dir, flickr_captions, 20)
    assert len(photos) == 20
    with torch.inference_mode():
        logits = lite0.model(lite0.preprocess(load_images(photos)))
    top5 = logits.topk(5, dim=1).indices
    hits = [any(int(c) in DOG_CLASSES for c in row) for row in top5]
    # Measured on all 237 such photos: 94% have a dog class in the top 5, 81% as the top class.
    assert sum(hits) >= 16, hits
    assert hits[0]  # 1001773457_577c3a7d70.jpg: "A black dog and a spotted dog are fighting"


def test_features_shape_determinism_and_batching(lite0, flickr_images: list[Path]) -> None:
    images = flickr_images[:5]
    features = lite0.encode(images, batch_size=2)
    assert features.shape == (5, 1280) and features.dtype == np.float32
    assert np.all(features >= 0)  # pooled ReLU6 activations
    assert np.allclose(features, lite0.encode(images, batch_size=5), atol=1e-5)
    assert not np.allclose(features[0], features[1], atol=1e-2)


def test_tower_errors(lite0, flickr_images: list[Path], tmp_path: Path) -> None:
    with pytest.raises(InvalidInputError, match="unknown image tower 'resnet9000'"):
        load_tower("resnet9000")
    with pytest.raises(InvalidInputError, match="expected open_clip:MODEL@PRETRAINED"):
        load_tower("open_clip:ViT-B-32")  # no pretrained tag: a random tower is never what users want
    with pytest.raises(ImageError, match=r"image 3 \(.*gone.jpg"):
        lite0.encode([*flickr_images[:3], tmp_path / "gone.jpg"], batch_size=2)
