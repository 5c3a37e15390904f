"""Paired image-caption data (images with several captions each) and Recall@k both ways: what adapter training
learns from and reports on its held-out images, and what `m3search eval images` measures.

Protocol (the one CLIP-style papers use on Flickr and COCO): every caption of the evaluated images is a text
query, and it hits at k when its own image is among the k nearest images (text->image recall is averaged over
captions); every image is a query over all captions of the evaluated images, and it hits at k when any of its
own captions is among the k nearest (image->text recall is averaged over images). This "any of its captions"
hit is not trec_eval's recall (the fraction of relevant items found) in `metrics`, hence its own function.
"""

from __future__ import annotations

import csv
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from m3search.errors import InvalidInputError

DEFAULT_KS = (1, 5, 10)


@dataclass
class ImageCaptionSet:
    """Images (paths) and their captions; `caption_image[j]` is the index of caption j's image."""

    images: list[Path]
    captions: list[str]
    caption_image: np.ndarray

    def __len__(self) -> int:
        return len(self.images)

    def subset(self, start: int, stop: int | None = None) -> ImageCaptionSet:
        """Images start..stop (in order) with their captions, re-indexed."""
        stop = len(self.images) if stop is None else stop
        keep = (self.caption_image >= start) & (self.caption_image < stop)
        return ImageCaptionSet(
            self.images[start:stop],
            [c for c, k in zip(self.captions, keep) if k],
            self.caption_image[keep] - start,
        )

    def split(self, n_first: int) -> tuple[ImageCaptionSet, ImageCaptionSet]:
        """The first `n_first` images and the rest (for train / held-out)."""
        if not 0 < n_first <= len(self.images):
            raise InvalidInputError(f"cannot take {n_first} of {len(self.images)} images for training")
        return self.subset(0, n_first), self.subset(n_first)


def load_image_captions(
    pairs_csv: str | Path,
    images_dir: str | Path,
    *,
    image_column: str = "image",
    caption_column: str = "caption",
) -> ImageCaptionSet:
    """Read a CSV of (image file name, caption) rows, images sorted by name; a missing image is an error."""
    pairs_csv, images_dir = Path(pairs_csv), Path(images_dir)
    by_image: dict[str, list[str]] = {}
    try:
        with pairs_csv.open(encoding="utf-8", newline="") as f:
            reader = csv.DictReader(f)
            if not reader.fieldnames or not {image_column, caption_column} <= set(reader.fieldnames):
                raise InvalidInputError(
                    f"{pairs_csv} needs the columns {image_column!r} and "
                    f"{caption_column!r}; it has {reader.fieldnames}"
                )
            for line, row in enumerate(reader, 2):
                name, caption = (row[image_column] or "").strip(), (row[caption_column] or "").strip()
                if not name or not caption:
                    raise InvalidInputError(f"{pairs_csv} line {line}: empty image name or caption")
                by_image.setdefault(name, []).append(caption)
    except OSError as exc:
        raise InvalidInputError(f"cannot read {pairs_csv}: {exc.strerror or exc}") from None
    except UnicodeDecodeError as exc:
        raise InvalidInputError(f"{pairs_csv} is not UTF-8: {exc.reason} at byte {exc.start}") from None
    if not by_image:
        raise InvalidInputError(f"{pairs_csv} has no image-caption rows")
    names = sorted(by_image)
    missing = [n for n in names if not (images_dir / n).is_file()]
    if missing:
        raise InvalidInputError(
            f"{len(missing)} images named in {pairs_csv} are not in {images_dir}, e.g. {missing[0]!r}"
        )
    captions = [c for n in names for c in by_image[n]]
    owner = np.array([i for i, n in enumerate(names) for _ in by_image[n]], dtype=np.int64)
    return ImageCaptionSet([images_dir / n for n in names], captions, owner)


def _hits_at(ranks: np.ndarray, ks: Sequence[int]) -> dict[str, float]:
    return {f"recall@{k}": float(np.mean(ranks < k)) for k in ks}


def image_text_recall(
    image_vectors: np.ndarray,
    caption_vectors: np.ndarray,
    caption_image: np.ndarray,
    *,
    query_caption_vectors: np.ndarray | None = None,
    ks: Sequence[int] = DEFAULT_KS,
) -> dict[str, dict[str, float]]:
    """Recall@k for text->image and image->text by cosine (rows are expected normalized).

    `caption_vectors` are the captions as documents (image->text candidates); `query_caption_vectors`, when
    given, are the same captions encoded as queries (text->image), for models with query/passage prefixes.
    """
    image_vectors = np.asarray(image_vectors, dtype=np.float32)
    caption_vectors = np.asarray(caption_vectors, dtype=np.float32)
    queries = caption_vectors
    if query_caption_vectors is not None:
        queries = np.asarray(query_caption_vectors, dtype=np.float32)
    caption_image = np.asarray(caption_image)
    if len(caption_vectors) != len(caption_image) or len(queries) != len(caption_image):
        raise InvalidInputError("one caption vector per caption is needed")
    if image_vectors.shape[1] != caption_vectors.shape[1]:
        raise InvalidInputError(
            f"image vectors are {image_vectors.shape[1]}-d, captions {caption_vectors.shape[1]}-d"
        )
    # text -> image: rank of the right image = number of images scoring strictly higher
    t2i = queries @ image_vectors.T
    own = t2i[np.arange(len(queries)), caption_image]
    t2i_rank = (t2i > own[:, None]).sum(1)
    # image -> text: rank of the best-scoring own caption
    i2t = image_vectors @ caption_vectors.T
    is_own = caption_image[None, :] == np.arange(len(image_vectors))[:, None]
    best_own = np.where(is_own, i2t, -np.inf).max(1)
    i2t_rank = (np.where(is_own, -np.inf, i2t) > best_own[:, None]).sum(1)
    return {"text_to_image": _hits_at(t2i_rank, ks), "image_to_text": _hits_at(i2t_rank, ks)}


__all__ = ["DEFAULT_KS", "ImageCaptionSet", "image_text_recall", "load_image_captions"]
