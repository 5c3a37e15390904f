"""The collections one server holds: a directory of collections, opened once each, named safely.

A name is a single path component of letters, digits, `_`, `.` and `-`, starting with a letter or digit, so
no name can reach outside the directory. Collections of the served model share its loaded encoder (BM25
collections wrap it with their own BM25 statistics); others load their recorded model on first use. The
server's image encoder (if any) is what new image collections get and what `/embed` encodes images with;
collections reload their own image encoder.
"""

from __future__ import annotations

import re
import shutil
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from m3search.encoders import BM25Encoder, CompositeEncoder, TextEncoder
from m3search.encoders.base import OutputKind
from m3search.encoders.image import ImageEncoder
from m3search.encoders.registry import find_spec
from m3search.errors import (
    CollectionClosedError,
    CollectionError,
    CollectionExistsError,
    CollectionNotFoundError,
    InvalidInputError,
)
from m3search.store import Collection
from m3search.store.collection import is_collection
from m3search.store.config import CollectionConfig
from m3search.threads import WarmUp

NAME_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.\-]{0,63}")


def check_name(name: str) -> str:
    """`name` if it is a valid collection name, else an error saying what names may be."""
    if not NAME_PATTERN.fullmatch(name):
        raise InvalidInputError(
            f"invalid collection name {name[:80]!r}: use 1-64 letters, digits, '_', '.' or '-', starting "
            "with a "
            "letter or digit"
        )
    return name


class Catalog:
    """Open collections by name under `root`; thread-safe (handlers run in a thread pool)."""

    def __init__(
        self,
        root: Path,
        encoder: TextEncoder | None = None,
        model: str | None = None,
        *,
        image_encoder: str | None = None,
        warm: bool = False,
    ) -> None:
        """`warm`: start `Collection.warm` on each collection when it is opened."""
        self.root = Path(root)
        self.encoder = encoder
        self.model = model
        self.image_source = image_encoder
        self.warm = warm
        self._images: ImageEncoder | None = None
        self._open: dict[str, Collection] = {}
        self._warm_ups: dict[str, WarmUp] = {}
        self._lock = threading.Lock()

    def image_encoder(self) -> ImageEncoder:
        """The server's image encoder, loaded on first use; an error when the server has none."""
        if self.image_source is None:
            raise InvalidInputError(
                "this server has no image encoder: start it with --image-encoder "
                "(an adapter directory or a Visualized-BGE checkpoint)"
            )
        with self._lock:
            if self._images is None:
                from m3search.store.images import resolve_image_encoder

                self._images = resolve_image_encoder(self.image_source, self.model)
            return self._images

    def names(self) -> list[str]:
        """Names of the collections on disk, sorted."""
        if not self.root.is_dir():
            return []
        return sorted(
            p.name for p in self.root.iterdir() if NAME_PATTERN.fullmatch(p.name) and is_collection(p)
        )

    def listing(self) -> tuple[list[tuple[str, dict[str, Any]]], list[tuple[str, str]]]:
        """(name, stats) of every collection on disk, and (name, error) of those that cannot be opened (a
        damaged config or database): one broken collection never hides the others. Collections deleted
        while the list is made are left out."""
        found, broken = [], []
        for name in self.names():
            try:
                found.append((name, self.get(name).stats()))
            except (CollectionNotFoundError, CollectionClosedError):
                continue
            except CollectionError as exc:
                broken.append((name, str(exc)))
        return found, broken

    def get(self, name: str) -> Collection:
        """The open collection `name`; `CollectionNotFoundError` when there is none."""
        path = self.root / check_name(name)
        with self._lock:
            found = self._open.get(name)
            if found is not None:
                return found
            if not is_collection(path):
                raise CollectionNotFoundError(
                    f"collection {name!r} does not exist; create it with POST /collections"
                )
            collection = Collection.open(path)  # a local directory, or a link to a Qdrant collection
            encoder = self._encoder_for(collection.config)
            if encoder is not None:
                collection.use_encoder(encoder)
            self._open[name] = collection
            if self.warm:
                self._warm_ups[name] = collection.warm()
            return collection

    def warm_up(self, name: str) -> dict[str, Any] | None:
        """How far the warm-up of open collection `name` is (`WarmUp.progress`); None when it has none (the
        server runs with --no-warm, or created the collection itself: a new collection's files are fresh)."""
        with self._lock:
            found = self._warm_ups.get(name)
        return None if found is None else found.progress()

    def create(
        self,
        name: str,
        *,
        outputs: Sequence[str] | None = None,
        dense_index: str = "hnsw",
        max_length: int | None = None,
        images: bool = False,
        colbert_dtype: str = "float16",
        colbert_recheck: int = 0,
        colbert_prune: str | None = None,
    ) -> Collection:
        """Create collection `name` for the served model (`max_length`: tokens kept per document; `images`:
        with the server's image encoder; `colbert_*`: the ColBERT storage of `Collection.create`)."""
        path = self.root / check_name(name)
        if self.encoder is None:
            raise InvalidInputError("the model is not loaded yet; retry in a moment")
        image_encoder = self.image_encoder() if images else None
        if max_length is not None and not 3 <= max_length <= self.encoder.max_length:
            raise InvalidInputError(
                f"max_length must be between 3 and {self.encoder.max_length} for "
                f"{self.encoder.name}, got {max_length}"
            )
        with self._lock:
            if is_collection(path):
                raise CollectionExistsError(f"collection {name!r} already exists")
            self.root.mkdir(parents=True, exist_ok=True)
            wants_sparse = outputs is None or "sparse" in outputs
            encoder = (
                self._with_bm25(self.encoder)
                if wants_sparse and "sparse" not in self.encoder.outputs
                else self.encoder
            )
            collection = Collection.create(
                path,
                self.model,
                outputs=outputs,
                encoder=encoder,
                dense_index=dense_index,
                max_length=max_length,
                image_encoder=image_encoder,
                colbert_dtype=colbert_dtype,
                colbert_recheck=colbert_recheck,
                colbert_prune=colbert_prune,
            )
            self._open[name] = collection
            return collection

    def delete(self, name: str) -> None:
        """Close and remove collection `name` with its files. A call using the collection finishes first;
        later calls through it raise `CollectionClosedError` (409), new ones find no collection (404)."""
        path = self.root / check_name(name)
        with self._lock:
            collection = self._open.pop(name, None)
            self._warm_ups.pop(name, None)
            if collection is not None:
                collection.close()
            if not is_collection(path):
                raise CollectionNotFoundError(f"collection {name!r} does not exist")
            # Renamed first, so a crash mid-removal leaves no half collection under the name.
            doomed = path.with_name(f".{name}.deleting")
            shutil.rmtree(doomed, ignore_errors=True)
            path.rename(doomed)
            shutil.rmtree(doomed)

    def close(self) -> None:
        """Close every open collection (releases writer locks)."""
        with self._lock:
            for collection in self._open.values():
                collection.close()
            self._open.clear()
            self._warm_ups.clear()

    # ---- encoders --------------------------------------------------------------------------------------

    def serves(self, config: CollectionConfig) -> bool:
        """Whether the collection was built with the served model (so the loaded encoder fits it)."""
        if self.encoder is None or config.model is None:
            return False
        names = {self.model, self.encoder.name, str(getattr(self.encoder, "path", ""))}
        spec = find_spec(config.model)
        return config.model in names or (spec is not None and spec.name in names)

    def _encoder_for(self, config: CollectionConfig) -> TextEncoder | None:
        """The served encoder shaped for the collection, or None to let it load its own model."""
        if not self.serves(config):
            return None
        assert self.encoder is not None  # served: the model is loaded
        if config.sparse_source == "bm25":
            return self._with_bm25(self.encoder)
        return self.encoder

    @staticmethod
    def _with_bm25(encoder: TextEncoder) -> TextEncoder:
        """`encoder`'s outputs plus BM25 weights over its tokenizer (the collection sets the statistics)."""
        parts: dict[OutputKind, TextEncoder] = {kind: encoder for kind in encoder.outputs if kind != "sparse"}
        parts["sparse"] = BM25Encoder(encoder.tokenizer)  # type: ignore[attr-defined]  # a model encoder's
        return CompositeEncoder(parts)
