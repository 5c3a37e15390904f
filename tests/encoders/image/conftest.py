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
