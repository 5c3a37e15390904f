"""Images in a collection: the image encoder stored with it, and the vectors and thumbnails of image documents.

A collection with images records its image encoder in `config.json`; an adapter (a small directory) is copied
into the collection (`image_encoder/`) so the collection reopens anywhere, while a Visualized-BGE checkpoint
(gigabytes) is referenced by its path or hub name. Image documents get their dense vector from the image
encoder; an image+text document gets the encoder's composed vector when it has one (Visualized-BGE), otherwise
the normalized mean of its image and text vectors — both are unit vectors in the text model's space, so their
mean points between them and keeps what either matches (the text's sparse and ColBERT vectors are kept too).
"""

from __future__ import annotations

import shutil
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from m3search.encoders.image.base import ImageEncoder
from m3search.encoders.image.validation import (
    DEFAULT_LIMITS,
    ImageLimits,
    ImageSource,
    image_field,
    load_image,
    make_thumbnail,
)
from m3search.errors import InvalidInputError, ModelLoadError
from m3search.store.config import CollectionConfig
from m3search.store.documents import Document

#: Where a collection keeps its copy of an adapter.
IMAGE_ENCODER_DIR = "image_encoder"


def resolve_image_encoder(source: str | Path | ImageEncoder, text_model: str | None) -> ImageEncoder:
    """An image encoder object from an adapter directory or a Visualized-BGE checkpoint (or the object)."""
    if isinstance(source, ImageEncoder):
        return source
    from m3search.encoders.image import load_image_encoder

    return load_image_encoder(source, text_model=text_model or "BAAI/bge-m3")


def _same_model(a: str, b: str) -> bool:
    if a == b:
        return True
    pa, pb = Path(a).expanduser(), Path(b).expanduser()
    return pa.exists() and pb.exists() and pa.resolve() == pb.resolve()


def _encoder_names(description: Mapping[str, Any]) -> list[str]:
    """The model names in a text encoder's description (a composite's parts too: e5 + BM25 is e5)."""
    names = [description["name"]] if description.get("name") else []
    for part in (description.get("parts") or {}).values():
        names += _encoder_names(part)
    return names


def check_image_encoder(encoder: ImageEncoder, config: CollectionConfig, where: Path) -> None:
    """The image encoder must write into the collection's dense space: same text model (by name or directory;
    one recorded at creation also counts), same dimension."""
    if "dense" not in config.outputs:
        raise InvalidInputError(f"collection {where} stores no dense vectors, which image documents need")
    if encoder.dim != config.dim:
        raise InvalidInputError(
            f"image encoder {encoder.name!r} makes {encoder.dim}-d vectors; collection {where} "
            f"holds {config.dim}-d ones"
        )
    names = [
        n
        for n in (
            config.model,
            *_encoder_names(config.encoder),
            (config.image_encoder or {}).get("text_model"),
        )
        if n
    ]
    if names and not any(_same_model(encoder.text_model, n) for n in names):
        raise InvalidInputError(
            f"image encoder {encoder.name!r} maps images into the space of text model "
            f"{encoder.text_model!r}; collection {where} uses {names[0]!r}: train an adapter "
            "for this collection's model"
        )


def install_image_encoder(
    source: str | Path | ImageEncoder, encoder: ImageEncoder, directory: Path | None
) -> dict[str, Any]:
    """Store what reloads `encoder` into the new collection `directory` (None: a collection without a
    directory, which records where the adapter is); returns its config entry."""
    # imported here, like every model module: opening a collection to search vectors must not import torch
    from m3search.encoders.image.adapter import CONFIG_FILE as ADAPTER_FILE
    from m3search.encoders.image.adapter import AdapterImageEncoder

    entry = encoder.describe()
    if isinstance(encoder, AdapterImageEncoder) and directory is None:
        if not (isinstance(source, (str, Path)) and (Path(source) / ADAPTER_FILE).is_file()):
            raise InvalidInputError(
                "a collection without a directory records its image adapter by path: give image_encoder as "
                "the adapter's directory"
            )
        entry["source"] = str(Path(source).resolve())
    elif isinstance(encoder, AdapterImageEncoder):
        assert directory is not None  # the case above
        target = directory / IMAGE_ENCODER_DIR
        if isinstance(source, (str, Path)) and (Path(source) / ADAPTER_FILE).is_file():
            shutil.copytree(Path(source), target)
        else:
            encoder.save(target)
        entry["source"] = IMAGE_ENCODER_DIR
    else:
        checkpoint = str(source) if isinstance(source, (str, Path)) else encoder.name
        entry["source"] = str(Path(checkpoint).resolve()) if Path(checkpoint).exists() else checkpoint
    return entry


def load_collection_image_encoder(path: Path, config: CollectionConfig) -> ImageEncoder:
    """Reload the image encoder a collection recorded (its adapter copy, or the checkpoint it names)."""
    entry = config.image_encoder
    if not entry:
        raise InvalidInputError(
            f"collection {path} holds no images (it has no image encoder); create it with "
            "image_encoder= to index images"
        )
    source = entry.get("source")
    if source == IMAGE_ENCODER_DIR:
        from m3search.encoders.image.adapter import AdapterImageEncoder

        return AdapterImageEncoder.load(path / IMAGE_ENCODER_DIR)
    if not source:
        raise ModelLoadError(
            f"collection {path} records no source for its image encoder; open it with image_encoder="
        )
    return resolve_image_encoder(source, config.model)


def normalized_mean(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """The unit vector halfway between unit vectors `a` and `b` (rows)."""
    total = np.asarray(a, np.float32) + np.asarray(b, np.float32)
    norms = np.linalg.norm(total, axis=-1, keepdims=True)
    return total / np.maximum(norms, 1e-12)


class ImageBatch:
    """The images of one upsert batch, decoded and checked once: their thumbnails, and their vectors once
    `encode` ran (image-only and composed ones set on the documents; `blend` finishes the mean ones)."""

    def __init__(self, docs: Sequence[Document], limits: ImageLimits = DEFAULT_LIMITS) -> None:
        self.docs = [d for d in docs if d.image is not None]
        self.pictures = [
            load_image(d.image, limits=limits, label=f"document {d.id!r}: image") for d in self.docs
        ]
        self.thumbnails = {d.id: make_thumbnail(p) for d, p in zip(self.docs, self.pictures)}
        self._to_blend: list[tuple[Document, np.ndarray]] = []

    def encode(self, encoder: ImageEncoder, batch_size: int) -> None:
        """Dense vectors of the documents with images that lack one."""
        todo = [i for i, d in enumerate(self.docs) if d.dense is None]
        alone = [i for i in todo if self.docs[i].text is None]
        paired = [i for i in todo if self.docs[i].text is not None]
        composed = encoder.supports_composed
        if alone:
            vectors = encoder.encode_images([self.pictures[i] for i in alone], batch_size=batch_size)
            for i, v in zip(alone, vectors):
                self.docs[i].dense = v
        if paired and composed:
            vectors = encoder.encode_composed(
                [self.pictures[i] for i in paired],
                [self.docs[i].text or "" for i in paired],  # paired: each has a text
                batch_size=batch_size,
            )
            for i, v in zip(paired, vectors):
                self.docs[i].dense = v
        elif paired:
            vectors = encoder.encode_images([self.pictures[i] for i in paired], batch_size=batch_size)
            self._to_blend = [(self.docs[i], v) for i, v in zip(paired, vectors)]

    def blend(self) -> None:
        """After the texts were encoded: dense = normalized mean of image and text vectors."""
        for doc, vector in self._to_blend:
            assert doc.dense is not None  # the text's vector, encoded before blending
            doc.dense = normalized_mean(doc.dense, vector)


def query_image(image: Any, encoder: ImageEncoder) -> ImageSource:
    """A query image, decoded and checked (errors say it is the query's image)."""
    return load_image(image_field(image, "query"), limits=encoder.limits, label="query image")


def image_query_vector(
    encoder: ImageEncoder, image: ImageSource, text: str | None, text_dense: np.ndarray | None
) -> np.ndarray:
    """The dense vector of an image query, alone or with a text (composed, or the mean with `text_dense`)."""
    if text is None:
        return encoder.encode_images([image])[0]
    if encoder.supports_composed:
        return encoder.encode_composed([image], [text])[0]
    if text_dense is None:
        raise InvalidInputError("an image+text query needs the text's dense vector")
    return normalized_mean(text_dense, encoder.encode_images([image])[0])


def kinds_filter(kinds: Sequence[str] | str, known: Sequence[str], field: str) -> Mapping[str, Any]:
    """The filter allowing documents of `kinds` (text documents index no kind field)."""
    kinds = [kinds] if isinstance(kinds, str) else list(kinds)
    unknown = [k for k in kinds if k not in known]
    if unknown or not kinds:
        raise InvalidInputError(f"kinds must be a non-empty list of {', '.join(known)}, got {kinds}")
    others = [k for k in kinds if k != "text"]
    parts: list[dict[str, Any]] = []
    if "text" in kinds:
        parts.append({field: {"$exists": False}})
    if others:
        parts.append({field: {"$in": others}})
    return parts[0] if len(parts) == 1 else {"$or": parts}


__all__ = [
    "IMAGE_ENCODER_DIR",
    "ImageBatch",
    "check_image_encoder",
    "image_query_vector",
    "install_image_encoder",
    "kinds_filter",
    "load_collection_image_encoder",
    "normalized_mean",
    "query_image",
    "resolve_image_encoder",
]
