"""The interface of image encoders: images (and, for some, image+text) into a text model's dense space.

A collection holds an `ImageEncoder` beside its `TextEncoder`; both write vectors of the same `dim` into one
dense index, so a text query finds images and an image query finds texts. `text_model` names the text model
whose space the image vectors live in: the collection checks it against its own text encoder.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterator, Sequence
from typing import Any, TypeVar

import numpy as np

from m3search.encoders.image.validation import DEFAULT_LIMITS, ImageLimits, ImageSource
from m3search.errors import InvalidInputError

T = TypeVar("T")


def batched(items: Sequence[T], batch_size: int) -> Iterator[Sequence[T]]:
    """Consecutive slices of at most `batch_size` items."""
    if batch_size < 1:
        raise InvalidInputError(f"batch_size must be >= 1, got {batch_size}")
    for start in range(0, len(items), batch_size):
        yield items[start : start + batch_size]


def as_list(images: ImageSource | Sequence[ImageSource]) -> list[ImageSource]:
    """One image or a sequence of them, as a list."""
    if isinstance(images, (list, tuple)):
        return list(images)
    return [images]  # type: ignore[list-item]


class ImageEncoder(ABC):
    """Maps images to L2-normalized float32 vectors in the dense space of the text model `text_model`."""

    #: What users and collections call this encoder (adapter directory name, checkpoint name).
    name: str
    #: Dimension of the vectors (equal to the text model's dense dimension).
    dim: int
    #: The text model (hub id or directory) whose dense space these vectors share.
    text_model: str
    #: Limits every input image is checked against (see `validation.ImageLimits`).
    limits: ImageLimits = DEFAULT_LIMITS

    @abstractmethod
    def encode_images(
        self,
        images: ImageSource | Sequence[ImageSource],
        *,
        batch_size: int = 16,
        show_progress_bar: bool = False,
    ) -> np.ndarray:
        """(n, dim) float32, rows L2-normalized; bad images raise `ImageError` naming their index."""

    @property
    def supports_composed(self) -> bool:
        """Whether `encode_composed` (one vector for an image and a text together) is available."""
        return False

    def encode_composed(
        self,
        images: Sequence[ImageSource],
        texts: Sequence[str],
        *,
        batch_size: int = 16,
        show_progress_bar: bool = False,
    ) -> np.ndarray:
        """(n, dim) vectors of (image, text) pairs: image+text documents and queries ("this, but red")."""
        raise InvalidInputError(
            f"image encoder {self.name!r} cannot encode an image and a text together; "
            "use Visualized-BGE for composed image+text queries"
        )

    def describe(self) -> dict[str, Any]:
        """JSON-able description stored with collections and shown by the server."""
        return {
            "name": self.name,
            "kind": type(self).__name__,
            "dim": self.dim,
            "text_model": self.text_model,
            "composed": self.supports_composed,
        }


__all__ = ["ImageEncoder", "as_list", "batched"]
