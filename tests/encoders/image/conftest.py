"""Fixtures for the image encoders: real Flickr8k photos and tiny random models."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def flickr_dir(shared_data: Path) -> Path:
    """The 1,000-photo Flickr8k subset with 5 captions each."""
    return shared_data / "flickr8k_1k"


@pytest.fixture(scope="session")
def flickr_images(flickr_dir: Path) -> list[Path]:
    """The photos' paths, sorted by name."""
    return sorted((flickr_dir / "images").glob("*.jpg"))


@pytest.fixture(scope="session")
def tiny_visualized_path(tiny_m3_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A random Visualized-BGE checkpoint in the real layout whose text tower is the tiny bge-m3."""
    from m3search.testing import build_random_visualized_bge

    return build_random_visualized_bge(tmp_path_factory.mktemp("visualized"), tiny_m3_dir)


@pytest.fixture(scope="session")
def tiny_visualized(tiny_visualized_path: Path, tiny_m3_dir: Path):
    """The tiny checkpoint loaded as a `VisualizedBGEEncoder`."""
    from m3search.encoders.image.visualized_bge import VisualizedBGEEncoder

    return VisualizedBGEEncoder.from_pretrained(tiny_visualized_path, text_model=tiny_m3_dir)


@pytest.fixture(scope="session")
def flickr_captions(flickr_dir: Path) -> dict[str, list[str]]:
    """Image file name -> its 5 captions."""
    import csv

    captions: dict[str, list[str]] = {}
    with (flickr_dir / "captions.txt").open(encoding="utf-8", newline="") as f:
        for row in csv.DictReader(f):
            captions.setdefault(row["image"], []).append(row["caption"])
    return captions


@pytest.fixture(scope="session")
def lite0():
    """The real ImageNet-pretrained EfficientNet-Lite0 tower."""
    from m3search.encoders.image.towers import load_tower

    return load_tower("efficientnet-lite0")
