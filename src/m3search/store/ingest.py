"""Preparing a write: validate a batch and encode what it lacks, outside any writer lock; the storage backend
then commits the prepared batch in one transaction.

The encoding rules live here once: which outputs the model encodes (`model_kinds`: not BM25's sparse weights,
which need the collection's statistics at commit), which documents need their text encoded
(`needs_text_encoding`), images first (an image+text document's dense vector is composed from both). The
embedded `Collection` encodes through its encoder and the embedding cache; the server passes its
micro-batcher as `encode`; a `DetachedPreparer` prepares for a collection in another process (the Ray workers
of `m3search.distributed`), from its config alone.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np

from m3search.encoders.base import OUTPUT_KINDS, EncodeResult, OutputKind, TextEncoder
from m3search.encoders.bm25 import BM25Encoder, BM25Stats, TermCounts
from m3search.encoders.image.base import ImageEncoder
from m3search.errors import InvalidInputError
from m3search.store.bm25 import as_sparse_row, bm25_part
from m3search.store.cache import EmbeddingCache, default_cache_path
from m3search.store.config import CollectionConfig
from m3search.store.documents import Document, as_documents
from m3search.store.images import ImageBatch, check_image_encoder, load_collection_image_encoder

#: (texts, kinds) -> per text {kind: vector} (dense array, sparse (ids, weights), ColBERT float16 matrix).
EncodeTexts = Callable[[list[str], list[OutputKind]], list[dict[str, Any]]]


@dataclass
class PreparedBatch:
    """A validated, encoded batch ready to commit: its documents (vectors set, except BM25 weights), their
    BM25 term counts (None where the sparse weights are given or not BM25's), and image thumbnails by id."""

    docs: list[Document]
    counts: list[TermCounts | None]
    thumbnails: dict[str, bytes] = field(default_factory=dict)
    #: The BM25 encoder that weighs `counts` at commit, under the statistics of that moment.
    bm25: BM25Encoder | None = None


def model_kinds(config: CollectionConfig) -> list[OutputKind]:
    """The outputs the text model encodes for this collection (BM25 sparse weights are the collection's)."""
    return [k for k in config.outputs if not (k == "sparse" and config.sparse_source == "bm25")]


def load_text_encoder(
    config: CollectionConfig, location: str, runtime: str = "auto", bm25_stats: BM25Stats | None = None
) -> TextEncoder:
    """The text model a collection records, on `runtime`, with the sparse weights it stores (the model's head,
    or BM25 under `bm25_stats`)."""
    if config.model is None:
        raise InvalidInputError(
            f"collection {location} has no model: give documents and queries as vectors, or open it with encoder="
        )
    from m3search.encoders import load_encoder

    source = config.sparse_source
    sparse: Literal["bm25", "model", "none"] = (
        "bm25" if source == "bm25" else "model" if source == "model" else "none"
    )
    return load_encoder(config.model, runtime=runtime, sparse=sparse, bm25_stats=bm25_stats)


def check_text_encoder(encoder: TextEncoder, config: CollectionConfig, location: str) -> None:
    """An error unless `encoder` makes the collection's outputs, sizes and kind of sparse weights."""
    encoder.check_outputs(config.outputs)
    if "dense" in config.outputs and encoder.dim != config.dim:
        raise InvalidInputError(
            f"encoder {encoder.name!r} makes {encoder.dim}-d vectors; collection {location} "
            f"holds {config.dim}-d ones"
        )
    if "colbert" in config.outputs and encoder.colbert_dim != config.colbert_dim:
        raise InvalidInputError(
            f"encoder {encoder.name!r} makes {encoder.colbert_dim}-d token vectors; "
            f"collection {location} holds {config.colbert_dim}-d ones"
        )
    bm25 = bm25_part(encoder)
    if config.sparse_source == "bm25" and bm25 is None:
        raise InvalidInputError(f"collection {location} uses BM25 sparse weights; the encoder has none")
    if config.sparse_source == "model" and bm25 is not None:
        raise InvalidInputError(f"collection {location} uses the model's sparse head; the encoder gives BM25")


#: Token ids -> mask of those whose ColBERT vectors index-time pruning drops (`TextEncoder.prunable_tokens`).
Pruner = Callable[[np.ndarray], np.ndarray]


def colbert_pruner(config: CollectionConfig, encoder: TextEncoder) -> Pruner | None:
    """What drops the tokens `config.colbert_prune` names from `encoder`'s ColBERT output, or None."""
    return encoder.prunable_tokens if config.colbert_prune == "punctuation" else None


def encoded_rows(
    result: EncodeResult, kinds: Sequence[OutputKind], prune: Pruner | None = None
) -> list[dict[str, Any]]:
    """An encoder's output as one {kind: vector} per text, in the form documents store (float16 ColBERT
    vectors, without the tokens `prune` marks)."""
    n = len(result.dense) if result.dense is not None else len(result.sparse or result.colbert or [])
    if prune is not None and result.colbert is not None and result.colbert_ids is None:
        raise InvalidInputError(
            "colbert_prune needs the token id of each ColBERT vector, which this encoder does not give"
        )

    def colbert(i: int) -> np.ndarray:
        vectors = np.asarray(result.colbert[i], np.float16)  # type: ignore[index]
        return vectors if prune is None else vectors[~prune(result.colbert_ids[i])]  # type: ignore[index]

    return [
        {
            "dense": None if result.dense is None or "dense" not in kinds else result.dense[i],
            "sparse": None
            if result.sparse is None or "sparse" not in kinds
            else as_sparse_row(result.sparse[i]),
            "colbert": None if result.colbert is None or "colbert" not in kinds else colbert(i),
        }
        for i in range(n)
    ]


def needs_text_encoding(config: CollectionConfig, docs: Sequence[Document]) -> list[Document]:
    """The documents whose text the model must encode (they lack model outputs); an error for a document
    that lacks vectors and has no text to make them from."""
    kinds = model_kinds(config)
    todo: list[Document] = []
    for doc in docs:
        if doc.kind == "image":  # an image alone: its dense vector is all it has
            if doc.dense is None and "dense" in config.outputs:
                raise InvalidInputError(
                    f"document {doc.id!r} is of kind image but has no image or dense vector"
                )
            continue
        missing = [k for k in kinds if getattr(doc, k) is None and not (k == "colbert" and doc.text is None)]
        if config.sparse_source == "bm25" and doc.sparse is None and doc.text is None:
            missing.append("sparse")
        if not missing:
            continue
        if doc.text is None:
            raise InvalidInputError(f"document {doc.id!r} has no text and lacks {', '.join(missing)} vectors")
        todo.append(doc)
    return todo


def prepare(
    documents: Iterable[Document | Mapping[str, Any]],
    config: CollectionConfig,
    *,
    encode: EncodeTexts,
    image_encoder: Callable[[], ImageEncoder],
    bm25: Callable[[], BM25Encoder | None],
    batch_size: int = 32,
) -> PreparedBatch:
    """Validate `documents` and fill in the vectors they lack: images through `image_encoder()`, texts
    through `encode`, BM25 term counts through `bm25()` (weighted at commit)."""
    docs = as_documents(documents, config.dim, config.colbert_dim)
    images = None
    if any(d.image is not None for d in docs):
        images = ImageBatch(docs, image_encoder().limits)
        images.encode(image_encoder(), batch_size)
    todo = needs_text_encoding(config, docs)
    kinds = model_kinds(config)
    if todo and kinds:
        for doc, vectors in zip(todo, encode([d.text for d in todo], kinds)):  # type: ignore[misc]
            for kind in kinds:
                if getattr(doc, kind) is None:
                    setattr(doc, kind, vectors[kind])
    if images is not None:
        images.blend()
    counts: list[TermCounts | None] = [None] * len(docs)
    scorer = bm25() if config.sparse_source == "bm25" else None
    if scorer is not None:
        pick = [i for i, d in enumerate(docs) if d.sparse is None and d.text is not None]
        for i, c in zip(pick, scorer.term_counts([docs[i].text for i in pick])):  # type: ignore[misc]
            counts[i] = c
    return PreparedBatch(docs, counts, images.thumbnails if images is not None else {}, scorer)


class DetachedPreparer:
    """Prepares batches for a collection from its config alone, in a process that does not open its storage
    (a Ray worker): the recorded model loaded once on `runtime`, no embedding cache. The batches it returns
    carry BM25 term counts but no BM25 encoder: the writer (`Collection.write`) weighs them under the
    collection's statistics at commit."""

    def __init__(self, config: CollectionConfig, location: str, runtime: str = "auto") -> None:
        self.config = config
        self.location = location
        self.encoder = load_text_encoder(config, location, runtime)
        check_text_encoder(self.encoder, config, location)
        self._encoding = CachedEncoding(config, False)
        self._image_encoder: ImageEncoder | None = None

    def image_encoder(self) -> ImageEncoder:
        """The collection's image encoder, loaded on first use (its adapter copy needs the collection's
        directory, readable here)."""
        if self._image_encoder is None:
            encoder = load_collection_image_encoder(Path(self.location), self.config)
            check_image_encoder(encoder, self.config, Path(self.location))
            self._image_encoder = encoder
        return self._image_encoder

    def prepare(
        self, documents: Iterable[Document | Mapping[str, Any]], batch_size: int = 32
    ) -> PreparedBatch:
        """Validate and encode `documents` as `Collection.prepare` would (images dropped once encoded: their
        thumbnails travel instead)."""

        def encode(texts: list[str], kinds: list[OutputKind]) -> list[dict[str, Any]]:
            return self._encoding.encode(self.encoder, texts, kinds, batch_size, False)

        batch = prepare(
            documents,
            self.config,
            encode=encode,
            image_encoder=self.image_encoder,
            bm25=lambda: bm25_part(self.encoder),
            batch_size=batch_size,
        )
        for doc in batch.docs:
            doc.image = None
        batch.bm25 = None
        return batch


class CachedEncoding:
    """Encodes document texts with a collection's encoder through the embedding cache (opened on first use)."""

    def __init__(self, config: CollectionConfig, cache: bool | str | Path) -> None:
        self.config = config
        self._setting = cache
        self._cache: EmbeddingCache | None = None

    def encode(
        self, encoder: TextEncoder, texts: list[str], kinds: list[OutputKind], batch_size: int, progress: bool
    ) -> list[dict[str, Any]]:
        """Model outputs for `texts`, from the cache where present, encoding (and caching) the rest."""
        key_base = json.dumps(
            {
                "model": self.config.encoder.get("name", self.config.model),
                "kinds": kinds,
                "max_length": self.config.max_length,
                **({"colbert_prune": self.config.colbert_prune} if self.config.colbert_prune else {}),
            },
            sort_keys=True,
        )
        if self._cache is None and self._setting:
            self._cache = EmbeddingCache(
                default_cache_path() if self._setting is True else Path(self._setting)
            )
        found = self._cache.get(key_base, texts) if self._cache is not None else {}
        missing = [i for i in range(len(texts)) if i not in found]
        if missing:
            flags = {f"return_{k}": k in kinds for k in OUTPUT_KINDS}
            result = encoder.encode_documents(
                [texts[i] for i in missing],
                batch_size=batch_size,
                max_length=self.config.max_length,
                show_progress_bar=progress,
                **flags,
            )
            fresh = dict(zip(missing, encoded_rows(result, kinds, colbert_pruner(self.config, encoder))))
            if self._cache is not None:
                self._cache.put(key_base, {texts[i]: v for i, v in fresh.items()})
            found.update(fresh)
        return [found[i] for i in range(len(texts))]

    def close(self) -> None:
        """Close the cache if it was opened."""
        if self._cache is not None:
            self._cache.close()
