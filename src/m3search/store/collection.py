"""`Collection`: the embedded hybrid index, a directory opened in-process (no server).

Layout of a collection directory:

    config.json      what it stores and how (written once, atomically)
    store.sqlite     documents, the incremental level's vectors, tombstones, the segment list, BM25 statistics,
                     image thumbnails
    image_encoder/   the image adapter, for collections that hold images (see `m3search.store.images`)
    segments/NAME/   immutable segments: seqs, dense vectors (+ HNSW graph), sparse postings, ColBERT tokens
    write.lock       the writer lock

Writes (`upsert`, `delete`) are one SQLite transaction each and durable when they return; new documents land
in the incremental level, which `flush` seals into a segment every `flush_docs` documents, and segments of a
similar size are merged (`compact` merges everything). One process writes at a time; any number read, each
seeing whole versions.
"""

from __future__ import annotations

import copy
import json
import logging
import math
import os
import re
import shutil
import sys
import threading
from collections import OrderedDict
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from m3search.encoders.base import OUTPUT_KINDS, OutputKind, TextEncoder
from m3search.encoders.bm25 import BM25Encoder, BM25Stats
from m3search.encoders.composite import CompositeEncoder
from m3search.encoders.image.base import ImageEncoder
from m3search.errors import (
    CollectionClosedError,
    CollectionError,
    CollectionExistsError,
    CollectionNotFoundError,
    CorruptCollectionError,
    InvalidInputError,
)
from m3search.index.multivector import encode_tokens
from m3search.index.sparse import SparseIndex, SparseRow
from m3search.search.fusion import Fusion, Normalize, mode_weights, resolve_normalize
from m3search.search.modes import MODE_KINDS, Mode, mode_outputs
from m3search.search.planner import QueryVectors, SearchLevel, execute
from m3search.search.results import Hit
from m3search.store import integrity
from m3search.store.cache import EmbeddingCache, default_cache_path
from m3search.store.config import CONFIG_FILE, CollectionConfig, fsync_path
from m3search.store.database import DB_FILE, KIND_FIELD, Database, indexed_metadata, pack_counts, pack_sparse
from m3search.store.documents import (
    DOC_KINDS,
    Document,
    as_documents,
    check_colbert,
    check_dense,
    check_sparse,
    normalize_ids,
)
from m3search.store.filters import Filter, Predicate, compile_filter, parse_filter
from m3search.store.images import (
    ImageBatch,
    check_image_encoder,
    image_query_vector,
    install_image_encoder,
    kinds_filter,
    load_collection_image_encoder,
    query_image,
    resolve_image_encoder,
)
from m3search.store.lock import WriterLock
from m3search.store.metadata import MetadataIndex
from m3search.store.pending import PendingLevel, StaleReadError
from m3search.store.segments import SEGMENTS_DIR, Segment, SegmentData, write_segment
from m3search.threads import one_thread

log = logging.getLogger(__name__)

#: Rows of ColBERT vectors read from the database at a time while sealing the incremental level.
COLBERT_READ_BATCH = 256
#: Filters whose compiled form and segment masks are kept between searches.
FILTER_CACHE_SIZE = 16
#: Times a reader re-runs a search that raced with another process's flush or delete.
STALE_RETRIES = 5
#: The filter selecting documents that have only a dense vector (images without text); hybrid modes score
#: them by that vector alone.
DENSE_ONLY: Filter = {KIND_FIELD: "image"}


def _bm25_part(encoder: TextEncoder) -> BM25Encoder | None:
    """The BM25 encoder providing `encoder`'s sparse output, if that is where it comes from."""
    if isinstance(encoder, BM25Encoder):
        return encoder
    if isinstance(encoder, CompositeEncoder) and isinstance(encoder.parts.get("sparse"), BM25Encoder):
        return encoder.parts["sparse"]  # type: ignore[return-value]
    return None


def _vector_runtime(encoder: TextEncoder) -> dict[str, str] | None:
    """What `CollectionConfig.runtime` records: the runtime and precision of `encoder`'s model vectors."""
    identity = encoder.runtime_identity()
    return None if identity is None else {k: identity[k] for k in ("runtime", "dtype")}


def _model_source(encoder: TextEncoder) -> str:
    """Where `encoder`'s model can be loaded from again: its directory when it has one, else its name."""
    parts = encoder.parts.values() if isinstance(encoder, CompositeEncoder) else [encoder]
    for part in parts:
        if getattr(part, "path", None) is not None:
            return str(part.path)
    return encoder.name


def _as_sparse_row(vector: Mapping[int, float]) -> SparseRow:
    return (
        np.fromiter(vector.keys(), np.int64, len(vector)),
        np.fromiter(vector.values(), np.float32, len(vector)),
    )


class Collection:
    """A persistent hybrid index of documents; create with `Collection.create`, open with `Collection.open`."""

    def __init__(
        self,
        path: Path,
        *,
        encoder: TextEncoder | None = None,
        runtime: str = "auto",
        readonly: bool = False,
        cache: bool | str | Path = True,
        image_encoder: ImageEncoder | None = None,
    ) -> None:
        """Open the collection at `path` (use `Collection.open`)."""
        self.path = Path(path)
        if not (self.path / CONFIG_FILE).is_file():
            if (self.path / DB_FILE).is_file():
                raise integrity.damaged(
                    self.path.name,
                    CONFIG_FILE,
                    f"is missing while {DB_FILE} is there (it holds the settings needed to read it)",
                )
            raise CollectionNotFoundError(f"no collection at {self.path} (no {CONFIG_FILE}); create it first")
        self.config = CollectionConfig.load(self.path)
        self.readonly = readonly
        self._runtime = runtime
        self._mutex = threading.RLock()
        self._closed = False
        integrity.check_database_file(self.path)
        self._db = Database(self.path / DB_FILE)
        self._lock = WriterLock(self.path)
        self._segments_dir = self.path / SEGMENTS_DIR
        self._segments: dict[str, Segment] = {}
        #: listed segments whose files are damaged: searches (which need every segment) raise their error
        self._damaged: dict[str, CorruptCollectionError] = {}
        self._dead: dict[str, np.ndarray] = {}
        self._tombstones = np.empty(0, np.int64)
        self._bm25_stats = BM25Stats() if self.config.sparse_source == "bm25" else None
        colbert_fetch = None
        if "colbert" in self.config.outputs:

            def colbert_fetch(seqs: list[int]) -> dict[int, np.ndarray]:
                return self._db.pending_colbert(seqs, self.config.colbert_dim or 0)

        self._pending = PendingLevel(
            self.config.dim if "dense" in self.config.outputs else None,
            colbert_fetch,
            sparse="sparse" in self.config.outputs,
        )
        self._count = 0
        self._version = -1
        #: filter -> (its predicate, segment name -> row mask)
        self._filter_cache: OrderedDict[str, tuple[Predicate, dict[str, np.ndarray]]] = OrderedDict()
        self._encoder: TextEncoder | None = None
        if encoder is not None:
            self._attach_encoder(encoder)
        self._image_encoder: ImageEncoder | None = None
        if image_encoder is not None:
            self._attach_image_encoder(image_encoder)
        self._cache_setting = cache
        self._cache: EmbeddingCache | None = None  # opened when a text is first encoded
        try:
            self._reload()
        except BaseException:
            self._db.close()
            raise

    # ---- creating and opening --------------------------------------------------------------------------

    @classmethod
    def create(
        cls,
        path: str | Path,
        model: str | Path | None = None,
        *,
        outputs: Sequence[OutputKind] | None = None,
        encoder: TextEncoder | None = None,
        runtime: str = "auto",
        dim: int | None = None,
        colbert_dim: int | None = None,
        dense_index: str = "hnsw",
        colbert_dtype: str = "float16",
        max_length: int | None = None,
        hnsw: Mapping[str, Any] | None = None,
        flush_docs: int = 10_000,
        merge_factor: int = 10,
        cache: bool | str | Path = True,
        image_encoder: str | Path | ImageEncoder | None = None,
    ) -> Collection:
        """Create a new, empty collection at `path` and open it for writing.

        `model` (hub id, alias or directory) or a ready `encoder` encodes texts; with neither, documents and
        queries must come as vectors and `dim` (and `colbert_dim`) say their sizes. `outputs` defaults to all
        the encoder produces (a model without a sparse head gets BM25 over its tokenizer). `dense_index`:
        "hnsw" (float32 graph), "hnsw-sq8" (8-bit codes, a quarter of the memory) or "flat" (always exact);
        `colbert_dtype`: "float16" or "int8". `hnsw` overrides `HNSWParams` fields (m, ef_construction,
        ef_search, min_rows...). `cache` is True (the shared embedding cache), False, or a cache file path.
        `image_encoder` (an adapter directory from `m3search images train-adapter`, a Visualized-BGE checkpoint,
        or an `ImageEncoder`) lets documents and queries carry images; it must share the text model and `dim`.
        """
        path = Path(path)
        if (path / CONFIG_FILE).exists():
            raise CollectionExistsError(f"a collection already exists at {path}")
        if path.exists() and (not path.is_dir() or any(path.iterdir())):
            raise CollectionExistsError(f"{path} exists and is not an empty directory")
        if outputs is not None:
            outputs = list(outputs)
            unknown = [k for k in outputs if k not in OUTPUT_KINDS]
            if unknown or not outputs:
                raise InvalidInputError(
                    f"outputs must be a non-empty subset of {OUTPUT_KINDS}, got {outputs}"
                )
        if encoder is None and model is not None:
            from m3search.encoders import load_encoder

            wants_sparse = outputs is None or "sparse" in outputs
            encoder = load_encoder(model, runtime=runtime, sparse="auto" if wants_sparse else "none")
        settings: dict[str, Any] = dict(
            dense_index=dense_index,
            colbert_dtype=colbert_dtype,
            max_length=max_length,
            flush_docs=flush_docs,
            merge_factor=merge_factor,
        )
        if hnsw:
            settings["hnsw"] = dict(hnsw)
        if encoder is not None:
            outputs = outputs or [k for k in OUTPUT_KINDS if k in encoder.outputs]
            encoder.check_outputs(outputs)
            bm25 = _bm25_part(encoder)
            config = CollectionConfig(
                outputs=outputs,
                dim=encoder.dim if "dense" in outputs else None,
                colbert_dim=encoder.colbert_dim if "colbert" in outputs else None,
                model=str(model) if model is not None else _model_source(encoder),
                sparse_source=None if "sparse" not in outputs else "bm25" if bm25 else "model",
                encoder=encoder.describe(),
                runtime=_vector_runtime(encoder),
                **settings,
            )
        else:
            outputs = outputs or [
                k for k, on in (("dense", dim), ("sparse", True), ("colbert", colbert_dim)) if on
            ]
            config = CollectionConfig(
                outputs=outputs,
                dim=dim if "dense" in outputs else None,
                colbert_dim=colbert_dim if "colbert" in outputs else None,
                **settings,
            )
        images = None
        if image_encoder is not None:
            images = resolve_image_encoder(image_encoder, config.model)
            check_image_encoder(images, config, path)
        tmp = path.parent / f".{path.name}.creating-{os.getpid()}"
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        (tmp / SEGMENTS_DIR).mkdir()
        if images is not None:
            config.image_encoder = install_image_encoder(image_encoder, images, tmp)  # type: ignore[arg-type]
        config.save(tmp)
        Database(tmp / DB_FILE, create=True).close()
        fsync_path(tmp / DB_FILE)
        fsync_path(tmp)
        os.rename(tmp, path)
        fsync_path(path.parent)
        return cls(path, encoder=encoder, runtime=runtime, cache=cache, image_encoder=images)

    @classmethod
    def open(
        cls,
        path: str | Path,
        *,
        encoder: TextEncoder | None = None,
        runtime: str = "auto",
        readonly: bool = False,
        cache: bool | str | Path = True,
        image_encoder: ImageEncoder | None = None,
    ) -> Collection:
        """Open an existing collection. The writer lock is taken at the first write (not with `readonly`).

        The recorded model (and image encoder) is loaded on first need (a text or an image to encode), on
        `runtime`; pass `encoder` / `image_encoder` to reuse loaded ones. Raises `CollectionNotFoundError` when
        `path` holds no collection.
        """
        return cls(
            Path(path),
            encoder=encoder,
            runtime=runtime,
            readonly=readonly,
            cache=cache,
            image_encoder=image_encoder,
        )

    def close(self) -> None:
        """Release the writer lock and the database; later calls raise `CollectionClosedError`."""
        with self._mutex:  # waits for a call in progress (a write, a search) to finish
            self._closed = True
            self._lock.release()
            self._db.close()
            if self._cache is not None:
                self._cache.close()

    def __enter__(self) -> Collection:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Collection({str(self.path)!r}, model={self.config.model!r}, outputs={self.config.outputs})"

    # ---- encoder ---------------------------------------------------------------------------------------

    @property
    def encoder(self) -> TextEncoder:
        """The text encoder, loaded from the recorded model on first use."""
        if self._encoder is None:
            if self.config.model is None:
                raise InvalidInputError(
                    f"collection {self.path} has no model: give documents and queries as vectors, or open it with "
                    "encoder="
                )
            from m3search.encoders import load_encoder

            source = self.config.sparse_source
            sparse = "bm25" if source == "bm25" else "model" if source == "model" else "none"
            self._attach_encoder(
                load_encoder(
                    self.config.model, runtime=self._runtime, sparse=sparse, bm25_stats=self._bm25_stats
                )
            )
        return self._encoder  # type: ignore[return-value]

    def _attach_encoder(self, encoder: TextEncoder) -> None:
        cfg = self.config
        encoder.check_outputs(cfg.outputs)
        if "dense" in cfg.outputs and encoder.dim != cfg.dim:
            raise InvalidInputError(
                f"encoder {encoder.name!r} makes {encoder.dim}-d vectors; collection {self.path} "
                f"holds {cfg.dim}-d ones"
            )
        if "colbert" in cfg.outputs and encoder.colbert_dim != cfg.colbert_dim:
            raise InvalidInputError(
                f"encoder {encoder.name!r} makes {encoder.colbert_dim}-d token vectors; "
                f"collection {self.path} holds {cfg.colbert_dim}-d ones"
            )
        bm25 = _bm25_part(encoder)
        if cfg.sparse_source == "bm25":
            if bm25 is None:
                raise InvalidInputError(
                    f"collection {self.path} uses BM25 sparse weights; the encoder has none"
                )
            bm25.stats = self._bm25_stats  # queries always see the collection's current statistics
        elif cfg.sparse_source == "model" and bm25 is not None:
            raise InvalidInputError(
                f"collection {self.path} uses the model's sparse head; the encoder gives BM25"
            )
        self._encoder = encoder

    @property
    def image_encoder(self) -> ImageEncoder:
        """The image encoder, loaded from what the collection recorded on first use."""
        if self._image_encoder is None:
            self._attach_image_encoder(load_collection_image_encoder(self.path, self.config))
        return self._image_encoder  # type: ignore[return-value]

    @property
    def has_images(self) -> bool:
        """Whether the collection was created with an image encoder (documents and queries may be images)."""
        return bool(self.config.image_encoder)

    def _attach_image_encoder(self, encoder: ImageEncoder) -> None:
        if not self.has_images:
            raise InvalidInputError(
                f"collection {self.path} was created without an image encoder; it holds no images"
            )
        check_image_encoder(encoder, self.config, self.path)
        self._image_encoder = encoder

    # ---- state -----------------------------------------------------------------------------------------

    def _reload(self) -> None:
        """Load the committed state (segment list, tombstones, incremental level) as one version."""
        for attempt in range(20):
            version = self._db.data_version()
            with self._db.read():
                names = self._db.segment_names()
                files = self._db.segment_files()
                next_segment = int(self._db.get_meta("next_segment", 0))
                tombstones = self._db.tombstones()
                pending = self._db.load_pending()
                count = self._db.count_docs()
                stats = self._db.load_bm25() if self._bm25_stats is not None else None
            try:
                segments, damaged = self._open_segments(names, files)
            except FileNotFoundError:  # merged away by the writer since we read the list: read it again
                if self._db.data_version() == version:  # ... unless nothing was committed since: it is gone
                    gone = next((n for n in names if not (self._segments_dir / n).is_dir()), "")
                    raise integrity.damaged(
                        self.path.name, f"{SEGMENTS_DIR}/{gone}", "is listed in the manifest but missing"
                    ) from None
                log.debug("segment vanished while loading (attempt %d); reloading", attempt)
                continue
            unaccounted = integrity.newer_segments(self.path, next_segment)
            if unaccounted and self._db.data_version() == version:  # no commit since: not a writer's new one
                raise integrity.damaged(
                    self.path.name,
                    f"{SEGMENTS_DIR}/{unaccounted[0]}",
                    f"is newer than every segment {DB_FILE} knows (next segment {next_segment}): the database "
                    "was replaced or restored from an older copy",
                )
            break
        else:
            raise CollectionError(f"collection {self.path} keeps changing under this reader; try again")
        self._segments, self._damaged = segments, damaged
        self._tombstones = tombstones
        self._dead = {n: s.rows_of(tombstones) for n, s in segments.items()} if len(tombstones) else {}
        self._pending.clear()
        self._pending.add((p.seq, p.dense, p.sparse, p.has_colbert, p.metadata) for p in pending)
        self._count = count
        if stats is not None:
            self._bm25_stats.n_docs, self._bm25_stats.total_len = stats.n_docs, stats.total_len
            self._bm25_stats.df = stats.df
        self._version = version

    def _open_segments(
        self, names: list[str], files: dict[str, list[integrity.FileRecord]]
    ) -> tuple[dict[str, Segment], dict[str, CorruptCollectionError]]:
        """The listed segments, opened (kept from the last load) or found damaged. `FileNotFoundError`: one's
        directory is gone (merged away under this reader, or lost)."""
        segments, damaged = {}, {}
        for name in names:
            if name in self._segments:
                segments[name] = self._segments[name]
                continue
            directory = self._segments_dir / name
            try:
                segments[name] = integrity.open_segment(
                    self.path.name, directory, self.config, files.get(name, [])
                )
            except CorruptCollectionError as exc:
                log.error("%s", exc)
                damaged[name] = exc
        return segments, damaged

    def _check_open(self) -> None:
        if self._closed:
            raise CollectionClosedError(
                f"collection {self.path.name!r} is closed (it was closed or deleted while in use)"
            )

    def _check_whole(self) -> None:
        """Raise the first damage found in a listed segment (work that needs every segment cannot proceed)."""
        if self._damaged:
            raise next(iter(self._damaged.values()))

    def _refresh(self) -> None:
        """Reload when another process committed since the last load."""
        self._check_open()
        if self._db.data_version() != self._version:
            self._reload()

    def _writable(self) -> None:
        """Take the writer lock on first write, clean up what a crashed writer left, start from fresh state."""
        self._check_open()
        if self.readonly:
            raise CollectionError(f"collection {self.path} is open read-only")
        if not self._lock.held:
            self._lock.acquire()
            try:
                self._reload()
                self._remove_leftovers()
            except BaseException:
                self._lock.release()
                raise

    def _remove_leftovers(self) -> None:
        """Under the writer lock: delete segment directories the manifest provably no longer needs."""
        removed = integrity.remove_leftovers(
            self.path.name,
            self.path,
            [*self._segments, *self._damaged],
            int(self._db.get_meta("next_segment", 0)),
            int(self._db.get_meta("next_seq", 0)),
            known_good=not self._damaged,
        )
        if removed:
            log.info("removed %d unlisted segment directories: %s", len(removed), removed)

    def _forget(
        self,
        seqs: list[int],
        sealed: Iterable[int],
        removed_counts: list[dict[int, int]],
        added_counts: list[dict[int, int]],
    ) -> None:
        """Apply a committed write to the in-memory state: drop pending rows, tombstone sealed ones, count
        documents and BM25 statistics (new documents are added to the incremental level by the caller)."""
        self._count -= len(seqs)
        if self._bm25_stats is not None:
            for c in removed_counts:
                self._bm25_stats.remove(c)
            for c in added_counts:
                self._bm25_stats.add(c)
        self._pending.remove(seqs)
        sealed = np.asarray(sorted(sealed), np.int64)
        if len(sealed):
            self._tombstones = np.union1d(self._tombstones, sealed)
            for name, seg in self._segments.items():
                hit = seg.rows_of(sealed)
                if hit.any():
                    self._dead[name] = self._dead.get(name, np.zeros(len(seg), bool)) | hit

    # ---- writing ---------------------------------------------------------------------------------------

    def upsert(
        self,
        documents: Iterable[Document | Mapping[str, Any]],
        *,
        batch_size: int = 32,
        show_progress: bool = False,
    ) -> int:
        """Insert or replace documents by id; returns how many were written, once they are durable.

        Each document needs an `id` and a `text` (encoded here, through the embedding cache), an `image` (a
        path, bytes or base64 text; collections with an image encoder) or its vectors. The batch is validated and encoded first and then written in one transaction: it is stored
        whole or not at all. Duplicate ids within a batch, wrong vector sizes and NaN are errors.
        """
        with self._mutex:
            self._writable()
            cfg = self.config
            docs = as_documents(documents, cfg.dim, cfg.colbert_dim)
            if not docs:
                return 0
            images = None
            if any(d.image is not None for d in docs):
                encoder = self.image_encoder
                images = ImageBatch(docs, encoder.limits)
                images.encode(encoder, batch_size)
            self._fill_vectors(docs, batch_size, show_progress)
            if images is not None:
                images.blend()
            counts = self._term_counts(docs)
            ids = [d.id for d in docs]
            new_counts = [c for c in counts if c is not None]
            with self._db.write():
                old_seqs, old_counts, sealed = self._remove(ids)
                stats = self._bm25_after(old_counts, new_counts)
                if stats is not None:
                    for doc, c in zip(docs, counts):
                        if c is not None:
                            doc.sparse = self._bm25_weights(c, stats)
                seqs = self._db.allocate_seqs(len(docs))
                metadata = [json.dumps(d.metadata, ensure_ascii=False) for d in docs]
                if images is not None:
                    self._db.insert_thumbnails(
                        (int(s), images.thumbnails[d.id])
                        for d, s in zip(docs, seqs)
                        if d.id in images.thumbnails
                    )
                self._db.insert_docs(
                    (d.id, int(s), d.kind, d.text, m, pack_counts(c) if c is not None else None)
                    for d, s, m, c in zip(docs, seqs, metadata, counts)
                )
                self._db.insert_pending(
                    (
                        int(s),
                        None if d.dense is None else np.asarray(d.dense, np.float32).tobytes(),
                        None if d.sparse is None else pack_sparse(d.sparse),
                        None if d.colbert is None else np.asarray(d.colbert, np.float16).tobytes(),
                    )
                    for d, s in zip(docs, seqs)
                )
                if stats is not None:
                    self._db.update_bm25(
                        stats.n_docs, stats.total_len, self._df_delta(old_counts, new_counts)
                    )
            self._forget(old_seqs, sealed, old_counts, new_counts)
            self._pending.add(
                (int(s), d.dense, d.sparse, d.colbert is not None, indexed_metadata(m, d.kind))
                for d, s, m in zip(docs, seqs, metadata)
            )
            self._count += len(docs)
            if len(self._pending) >= cfg.flush_docs:
                self.flush()
            return len(docs)

    def delete(self, ids: str | int | Iterable[str | int]) -> int:
        """Delete documents by id (unknown ids are ignored); returns how many existed. Durable on return."""
        with self._mutex:
            self._writable()
            wanted = normalize_ids(ids)
            with self._db.write():
                old_seqs, old_counts, sealed = self._remove(wanted)
                stats = self._bm25_after(old_counts, [])
                if stats is not None:
                    self._db.update_bm25(stats.n_docs, stats.total_len, self._df_delta(old_counts, []))
            self._forget(old_seqs, sealed, old_counts, [])
            return len(old_seqs)

    def _remove(self, ids: Sequence[str]) -> tuple[list[int], list[dict[int, int]], list[int]]:
        """Inside a write transaction: remove the stored versions of `ids` (pending rows go, sealed rows get
        tombstones). Returns their seqs, their BM25 term counts and the sealed seqs."""
        old_seqs = list(self._db.seqs_of(ids).values())
        old_counts = list(self._db.term_counts(old_seqs).values()) if self._bm25_stats is not None else []
        was_pending = self._db.delete_pending(old_seqs)
        sealed = [s for s in old_seqs if s not in was_pending]
        self._db.add_tombstones(sealed)
        self._db.delete_thumbnails(old_seqs)
        self._db.delete_docs(ids)
        return old_seqs, old_counts, sealed

    def _fill_vectors(self, docs: list[Document], batch_size: int, show_progress: bool) -> None:
        """Encode the outputs documents lack from their text (through the cache); error if there is no text."""
        cfg = self.config
        model_kinds = self._model_kinds()
        todo: list[Document] = []
        for doc in docs:
            if doc.kind == "image":  # an image alone: its dense vector is all it has
                if doc.dense is None and "dense" in cfg.outputs:
                    raise InvalidInputError(
                        f"document {doc.id!r} is of kind image but has no image or dense vector"
                    )
                continue
            missing = [
                k
                for k in model_kinds
                if getattr(doc, k) is None and not (k == "colbert" and doc.text is None)
            ]
            if cfg.sparse_source == "bm25" and doc.sparse is None and doc.text is None:
                missing.append("sparse")
            if not missing:
                continue
            if doc.text is None:
                raise InvalidInputError(
                    f"document {doc.id!r} has no text and lacks {', '.join(missing)} vectors"
                )
            todo.append(doc)
        if not todo:
            return
        encoded = self._encode_texts([d.text for d in todo], model_kinds, batch_size, show_progress)
        for doc, vectors in zip(todo, encoded):
            for kind in model_kinds:
                if getattr(doc, kind) is None:
                    setattr(doc, kind, vectors[kind])

    def _model_kinds(self) -> list[OutputKind]:
        """The outputs the model computes (all stored ones but BM25 sparse weights, which the writer computes)."""
        cfg = self.config
        return [k for k in cfg.outputs if not (k == "sparse" and cfg.sparse_source == "bm25")]

    def document_vectors(self, texts: Sequence[str], *, batch_size: int = 32) -> list[dict[str, Any]]:
        """The model vectors (`dense`, `sparse`, `colbert`; None where not stored) `upsert` computes for text
        documents, for encoders running apart from the writer (`m3search.distributed`); BM25 weights excluded."""
        self._check_open()
        return self._encode_texts(list(texts), self._model_kinds(), batch_size, False)

    def _encode_texts(
        self, texts: list[str], kinds: list[OutputKind], batch_size: int, show_progress: bool
    ) -> list[dict[str, Any]]:
        """Model outputs for `texts`, from the cache where present, encoding (and caching) the rest."""
        encoder = self.encoder
        key_base = json.dumps(
            {
                "model": self.config.encoder.get("name", self.config.model),
                "kinds": kinds,
                "max_length": self.config.max_length,
            },
            sort_keys=True,
        )
        if self._cache is None and self._cache_setting:
            setting = self._cache_setting
            self._cache = EmbeddingCache(default_cache_path() if setting is True else Path(setting))
        found = self._cache.get(key_base, texts) if self._cache is not None else {}
        missing = [i for i in range(len(texts)) if i not in found]
        if missing:
            flags = {f"return_{k}": k in kinds for k in OUTPUT_KINDS}
            result = encoder.encode_documents(
                [texts[i] for i in missing],
                batch_size=batch_size,
                max_length=self.config.max_length,
                show_progress_bar=show_progress,
                **flags,
            )
            fresh = {}
            for j, i in enumerate(missing):
                fresh[i] = {
                    "dense": None if result.dense is None else result.dense[j],
                    "sparse": None if result.sparse is None else _as_sparse_row(result.sparse[j]),
                    "colbert": None if result.colbert is None else np.asarray(result.colbert[j], np.float16),
                }
            if self._cache is not None:
                self._cache.put(key_base, {texts[i]: v for i, v in fresh.items()})
            found.update(fresh)
        return [found[i] for i in range(len(texts))]

    def _term_counts(self, docs: list[Document]) -> list[dict[int, int] | None]:
        """BM25 term counts of documents whose sparse weights BM25 computes (None for the others)."""
        if self._bm25_stats is None:
            return [None] * len(docs)
        bm25 = _bm25_part(self.encoder)
        counts: list[dict[int, int] | None] = [None] * len(docs)
        todo = [i for i, d in enumerate(docs) if d.sparse is None and d.text is not None]
        if todo:
            for i, c in zip(todo, bm25.term_counts([docs[i].text for i in todo])):
                counts[i] = c
        return counts

    def _bm25_after(self, removed: list[dict[int, int]], added: list[dict[int, int]]) -> BM25Stats | None:
        """Document count and total length after a write (what the new documents' weights use)."""
        if self._bm25_stats is None:
            return None
        return BM25Stats(
            self._bm25_stats.n_docs - len(removed) + len(added),
            self._bm25_stats.total_len
            - sum(sum(c.values()) for c in removed)
            + sum(sum(c.values()) for c in added),
        )

    @staticmethod
    def _df_delta(removed: list[dict[int, int]], added: list[dict[int, int]]) -> dict[int, int]:
        delta: dict[int, int] = {}
        for sign, group in ((-1, removed), (1, added)):
            for counts in group:
                for token in counts:
                    delta[token] = delta.get(token, 0) + sign
        return delta

    def _bm25_weights(self, counts: dict[int, int], stats: BM25Stats) -> SparseRow:
        """BM25 document weights of `counts` under `stats`' average length."""
        scorer = copy.copy(_bm25_part(self.encoder))
        scorer.stats = stats
        return _as_sparse_row(scorer.document_weights(counts))

    # ---- sealing and merging ---------------------------------------------------------------------------

    def flush(self) -> None:
        """Seal the incremental level into a new immutable segment (also done every `flush_docs` documents)."""
        with self._mutex:
            self._writable()
            seqs = np.asarray(self._pending.seqs(), np.int64)
            if len(seqs) == 0:
                return
            level = self._pending.level(None)
            dense = None if level.dense is None else np.asarray(level.dense.vectors)
            self._seal(
                SegmentData(
                    seqs,
                    dense,
                    self._sealed_sparse(seqs, level.sparse),
                    *self._pending_colbert(seqs),
                    self._pending.metadata_index(),
                ),
                from_pending=True,
            )
            self._maybe_merge()

    def compact(self) -> None:
        """Flush, then merge every segment into one, dropping deleted rows and re-weighting BM25."""
        with self._mutex:
            self.flush()
            self._check_whole()
            if len(self._segments) > 1 or len(self._tombstones):
                self._merge(list(self._segments))

    def _pending_colbert(self, seqs: np.ndarray) -> tuple[np.ndarray | None, Iterator | None]:
        if "colbert" not in self.config.outputs:
            return None, None
        dim, dtype = self.config.colbert_dim or 0, self.config.colbert_dtype
        lengths = np.zeros(len(seqs), np.int64)
        for start in range(0, len(seqs), COLBERT_READ_BATCH):
            chunk = seqs[start : start + COLBERT_READ_BATCH]
            found = self._db.pending_colbert(chunk.tolist(), dim)
            lengths[start : start + len(chunk)] = [len(found[s]) if s in found else 0 for s in chunk.tolist()]

        def rows() -> Iterator[tuple[np.ndarray, np.ndarray | None]]:
            for start in range(0, len(seqs), COLBERT_READ_BATCH):
                chunk = seqs[start : start + COLBERT_READ_BATCH].tolist()
                found = self._db.pending_colbert(chunk, dim)
                for s in chunk:
                    yield encode_tokens(found.get(s, np.empty((0, dim), np.float16)), dtype)  # type: ignore[arg-type]

        return lengths, rows()

    def _sealed_sparse(self, seqs: np.ndarray, sparse: SparseIndex | None) -> SparseIndex | None:
        """The sparse index a new segment gets: as stored, or BM25 re-weighted under today's statistics."""
        if sparse is None or self._bm25_stats is None:
            return sparse
        counts = self._db.term_counts(seqs.tolist())
        if not counts:
            return sparse
        rows, terms, weights = sparse.to_coo()
        keep = ~np.isin(seqs[rows], np.fromiter(counts, np.int64, len(counts)))
        parts = [(rows[keep], terms[keep], weights[keep])]
        position = {int(s): i for i, s in enumerate(seqs.tolist())}
        bm25 = _bm25_part(self.encoder)
        for seq, c in counts.items():
            ids, w = _as_sparse_row(bm25.document_weights(c))
            parts.append((np.full(len(ids), position[seq], np.int64), ids, w))
        return SparseIndex.from_coo(len(seqs), *(np.concatenate(p) for p in zip(*parts)))

    def _seal(self, data: SegmentData, *, replaced: Sequence[str] = (), from_pending: bool = False) -> None:
        """Write a segment from `data`, then register it and drop what it replaces in one transaction.

        `replaced`: segments merged into it (their tombstones go too); `from_pending`: it seals the
        incremental level, whose rows leave the database's pending table.
        """
        number = int(self._db.get_meta("next_segment", 0))
        name = f"seg-{number:08d}"
        log.info(
            "writing segment %s (%d rows) to replace %s",
            name,
            len(data.seqs),
            ", ".join(replaced) or "the incremental level",
        )
        files = []
        if len(data.seqs):
            files = integrity.record_files(write_segment(self._segments_dir, name, data, self.config))
        replaced_seqs = [self._segments[n].seqs for n in replaced]
        with self._db.write():
            self._db.set_meta("next_segment", number + 1)
            if len(data.seqs):
                self._db.add_segment(name, len(data.seqs), int(data.seqs.min()), int(data.seqs.max()))
                self._db.add_segment_files(name, files)
            self._db.remove_segments(replaced)
            for seqs in replaced_seqs:
                self._db.remove_tombstones(seqs[np.isin(seqs, self._tombstones)].tolist())
            if from_pending:
                self._db.delete_pending(data.seqs.tolist())
        log.info("registered segment %s", name)
        self._db.reclaim_space()
        self._reload()
        self._remove_leftovers()

    def _merge(self, names: list[str]) -> None:
        """Merge segments `names` into one, dropping their deleted rows; every byte they hold is checked first,
        so a damaged file is reported instead of being copied into the merged segment."""
        files = self._db.segment_files()
        for n in names:
            integrity.check_files(self.path.name, self._segments_dir / n, files.get(n, []), full=True)
        segs = [self._segments[n] for n in names]
        keep = [np.flatnonzero(~self._dead.get(n, np.zeros(len(s), bool))) for n, s in zip(names, segs)]
        seqs = np.concatenate([s.seqs[k] for s, k in zip(segs, keep)])
        order = np.argsort(seqs, kind="stable")
        in_order = bool(np.all(order == np.arange(len(order))))  # the usual case: no copy to reorder
        seqs = seqs[order]
        dense = None
        if "dense" in self.config.outputs:
            dense = np.concatenate([np.asarray(s.dense.vectors[k], np.float32) for s, k in zip(segs, keep)])
            dense = dense if in_order else dense[order]
        sparse = None
        if "sparse" in self.config.outputs:
            inverse = np.empty(len(order), np.int64)
            inverse[order] = np.arange(len(order))
            parts, offset = [], 0
            for s, k in zip(segs, keep):
                rows, terms, weights = s.sparse.to_coo()
                new_row = np.full(len(s), -1, np.int64)
                new_row[k] = np.arange(len(k)) + offset
                alive = new_row[rows] >= 0
                parts.append((inverse[new_row[rows[alive]]], terms[alive], weights[alive]))
                offset += len(k)
            sparse = self._sealed_sparse(
                seqs, SparseIndex.from_coo(len(seqs), *map(np.concatenate, zip(*parts)))
            )
        lengths, colbert_rows = None, None
        if "colbert" in self.config.outputs:
            source = [(s, r) for s, k in zip(segs, keep) for r in k.tolist()]
            lengths = np.concatenate([s.colbert.token_counts(k) for s, k in zip(segs, keep)])
            if not in_order:
                source, lengths = [source[i] for i in order.tolist()], lengths[order]
            colbert_rows = (s.colbert.encoded(r) for s, r in source)
        metadata = MetadataIndex.build(self._db.metadata_of(seqs.tolist()))
        self._seal(SegmentData(seqs, dense, sparse, lengths, colbert_rows, metadata), replaced=names)

    def _maybe_merge(self) -> None:
        """Tiered merging: once `merge_factor` segments share a size class, merge them into one."""
        base, factor = self.config.flush_docs, self.config.merge_factor
        while True:
            classes: dict[int, list[str]] = {}
            for name, seg in self._segments.items():
                size = max(len(seg), 1)
                classes.setdefault(max(0, int(math.log(max(size / base, 1.0), factor))), []).append(name)
            full = [names for names in classes.values() if len(names) >= factor]
            if not full:
                return
            self._merge(full[0])

    # ---- reading ---------------------------------------------------------------------------------------

    def count(self) -> int:
        """Number of documents."""
        with self._mutex:
            self._refresh()
            return self._count

    def get(self, ids: str | int | Iterable[str | int]) -> list[Document | None]:
        """The stored documents (id, kind, text, metadata, thumbnail reference) for `ids`, in order; None where
        an id is unknown."""
        with self._mutex:
            self._check_open()
            wanted = normalize_ids(ids)
            rows = self._db.docs_by_id(wanted)
            return [
                Document(
                    r.id,
                    r.text,
                    json.loads(r.metadata),
                    kind=r.kind,
                    thumbnail=str(r.seq) if r.has_thumbnail else None,
                )
                if (r := rows.get(i))
                else None
                for i in wanted
            ]

    def thumbnail(self, reference: str | int) -> bytes | None:
        """JPEG bytes of the thumbnail a document or hit refers to (its `thumbnail`); None when gone."""
        # ASCII digits within SQLite's 64-bit integers (`isdigit` alone accepts "²" and 5,000-digit numbers).
        if isinstance(reference, bool) or not re.fullmatch(r"[0-9]{1,18}", str(reference)):
            raise InvalidInputError(f"{str(reference)[:40]!r} is not a thumbnail reference")
        with self._mutex:
            self._check_open()
            return self._db.thumbnail(int(reference))

    def search(
        self,
        query: str | Mapping[str, Any] | QueryVectors | None = None,
        k: int = 10,
        *,
        image: Any = None,
        kinds: Sequence[str] | str | None = None,
        mode: Mode | None = None,
        weights: Sequence[float] | Mapping[str, float] | None = None,
        fusion: Fusion = "weighted",
        filter: str | Filter | None = None,
        candidates: int = 100,
        ef_search: int | None = None,
        normalize: Normalize = "auto",
    ) -> list[Hit]:
        """The `k` best documents for `query` (a text, or its vectors as {"dense", "sparse", "colbert"}) and/or
        an `image` (path, bytes, base64 text or PIL image; collections with an image encoder).

        An image alone is a dense vector (mode dense); an image with a text is one composed (or mean) dense
        vector plus the text's sparse and ColBERT vectors. `kinds` keeps documents of those kinds ("text",
        "image", "image+text"): text->image is a text query with kinds=["image", "image+text"].

        `mode`: dense, sparse, colbert, dense+sparse or all (default: all the collection's outputs allow).
        `fusion`: "weighted" (the reference formula; `weights` = (dense, sparse, colbert), default 0.4/0.2/0.4)
        or "rrf" (k=60). `filter` restricts the documents before any top-k (see `m3search.store.filters`).
        `candidates`: how many each first stage passes to re-scoring in the hybrid modes. `normalize`: "minmax"
        rescales each mode's scores over the candidates to [0, 1] before the weighted mean, "none" keeps the
        reference formula, "auto" (default) is "minmax" for BM25 sparse weights and "none" otherwise.
        Documents with only a dense vector (images alone) are scored by it alone in the hybrid modes.
        """
        if isinstance(k, bool) or not isinstance(k, int) or k < 1:
            raise InvalidInputError(f"k must be a positive integer, got {k!r}")
        if isinstance(candidates, bool) or not isinstance(candidates, int) or candidates < 1:
            raise InvalidInputError(f"candidates must be a positive integer, got {candidates!r}")
        if image is not None and not isinstance(query, (str, type(None))):
            raise InvalidInputError("an image query goes with a text, not with query vectors")
        if query is None and image is None:
            raise InvalidInputError("give a query text, query vectors or an image")
        if image is not None and query is None:
            if mode not in (None, "dense"):
                raise InvalidInputError(
                    f"an image query has only a dense vector; mode {mode!r} needs more "
                    "(add a text to the image, or use mode dense)"
                )
            mode = "dense"
        mode = mode or self.default_mode
        needed = mode_outputs(mode)
        missing = [kind for kind in needed if kind not in self.config.outputs]
        if missing:
            raise InvalidInputError(
                f"mode {mode!r} needs {', '.join(missing)} vectors; collection {self.path} "
                f"stores {', '.join(self.config.outputs)}"
            )
        scored = MODE_KINDS[mode]
        kind_weights = mode_weights(weights, fusion, scored) if len(scored) > 1 else {scored[0]: 1.0}
        scaling = resolve_normalize(normalize, self.config.sparse_source)
        spec = parse_filter(filter)
        if kinds is not None:
            by_kind = kinds_filter(kinds, DOC_KINDS, KIND_FIELD)
            spec = {"$and": [spec, by_kind]} if spec else by_kind
        dense_only = self.has_images and len(scored) > 1 and "dense" in scored
        with self._mutex:
            self._refresh()  # BM25 query weights use the statistics of the version searched
        picture = query_image(image, self.image_encoder) if image is not None else None
        vectors = self._query_vectors(query, needed) if query is not None else QueryVectors()
        if picture is not None:
            vectors.dense = image_query_vector(self.image_encoder, picture, query, vectors.dense)
        with self._mutex:
            self._refresh()
            self._check_whole()
            for _attempt in range(STALE_RETRIES):
                allowed, masks = self._allowed(spec) if spec else (None, {})
                levels = self._levels(allowed, masks, self._allowed(DENSE_ONLY) if dense_only else None)
                try:
                    found = execute(
                        levels,
                        vectors,
                        mode,
                        k,
                        candidates=candidates,
                        weights=kind_weights,
                        fusion=fusion,
                        ef_search=ef_search,
                        normalize=scaling,
                    )
                except StaleReadError:
                    found = None
                rows = self._db.docs_by_seq([f.seq for f in found]) if found is not None else {}
                if found is not None and len(rows) == len(found):
                    break
                self._reload()  # another process changed what this version points to: search the new one
            else:
                raise CollectionError(f"collection {self.path} keeps changing under this reader; try again")
        return [
            Hit(
                r.id,
                f.score,
                f.scores,
                r.text,
                json.loads(r.metadata),
                r.kind,
                str(r.seq) if r.has_thumbnail else None,
            )
            for f in found
            if (r := rows.get(f.seq)) is not None
        ]

    @property
    def default_mode(self) -> Mode:
        """The richest mode the collection's outputs allow."""
        for mode in ("all", "dense+sparse", "dense", "sparse"):
            if all(kind in self.config.outputs for kind in mode_outputs(mode)):
                return mode  # type: ignore[return-value]
        return "sparse"

    def _allowed(self, spec: Filter) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        """The row masks a filter allows: the incremental level's, and each segment's — evaluated on their
        metadata indexes; a segment's mask is kept (segments never change; facets repeat)."""
        key = json.dumps(spec, sort_keys=True)
        entry = self._filter_cache.get(key)
        if entry is None:
            entry = self._filter_cache[key] = (compile_filter(spec), {})
            if len(self._filter_cache) > FILTER_CACHE_SIZE:
                self._filter_cache.popitem(last=False)
        self._filter_cache.move_to_end(key)
        predicate, cached = entry
        masks = {
            name: cached[name] if name in cached else predicate(seg.metadata)
            for name, seg in self._segments.items()
        }
        cached.clear()
        cached.update(masks)  # merged-away segments are dropped
        return predicate(self._pending.metadata_index()), masks

    def _levels(
        self,
        pending_allowed: np.ndarray | None,
        masks: Mapping[str, np.ndarray],
        dense_only: tuple[np.ndarray, dict[str, np.ndarray]] | None = None,
    ) -> list[SearchLevel]:
        """What a search runs over; `pending_allowed` is None without a filter; `dense_only`: the masks of the
        rows that have only a dense vector (pending, per segment), when the search should know them."""
        levels = []
        for name, seg in self._segments.items():
            mask = None if pending_allowed is None else masks[name]
            dead = self._dead.get(name)
            if dead is not None:
                mask = ~dead if mask is None else mask & ~dead
            levels.append(
                SearchLevel(
                    seg.seqs,
                    mask,
                    seg.dense,
                    seg.sparse,
                    seg.colbert.maxsim if seg.colbert is not None else None,
                    dense_only[1][name] if dense_only is not None else None,
                )
            )
        pending = self._pending.level(pending_allowed)
        if dense_only is not None:
            pending.dense_only = dense_only[0]
        levels.append(pending)
        return levels

    def encode_query(self, text: str, outputs: Sequence[OutputKind] | None = None) -> QueryVectors:
        """The query vectors `search` would compute for `text` (all stored outputs by default): encode once,
        search many times (weight tuning, several modes)."""
        if not isinstance(text, str) or not text.strip():
            raise InvalidInputError("the query is empty")
        needed = self.config.outputs if outputs is None else outputs
        flags = {f"return_{k}": k in needed for k in OUTPUT_KINDS}
        with one_thread("openmp"):  # torch's CPU kernels
            result = self.encoder.encode_queries([text], **flags)
        return QueryVectors(
            None if result.dense is None else result.dense[0],
            None if result.sparse is None else _as_sparse_row(result.sparse[0]),
            None if result.colbert is None else result.colbert[0],
        )

    def _query_vectors(self, query: Any, needed: Sequence[OutputKind]) -> QueryVectors:
        cfg = self.config
        if isinstance(query, QueryVectors):
            query = {k: getattr(query, k) for k in OUTPUT_KINDS}
        if isinstance(query, str):
            return self.encode_query(query, needed)
        if not isinstance(query, Mapping):
            raise InvalidInputError(f"a query is a text or an object of vectors, got {type(query).__name__}")
        absent = [k for k in needed if query.get(k) is None]
        if absent:
            raise InvalidInputError(f"the query lacks {', '.join(absent)} vectors")
        out = QueryVectors()
        if "dense" in needed:
            out.dense = check_dense(query["dense"], cfg.dim, "query")
        if "sparse" in needed:
            out.sparse = check_sparse(query["sparse"], "query")
        if "colbert" in needed:
            colbert = check_colbert(query["colbert"], cfg.colbert_dim, "query")
            out.colbert = colbert if colbert is not None else np.empty((0, cfg.colbert_dim), np.float32)
        return out

    def stats(self) -> dict[str, Any]:
        """Counts and sizes: documents, segments (rows, deleted rows, bytes), incremental level, disk use."""
        with self._mutex:
            self._refresh()
            segments = []
            for name, seg in self._segments.items():
                directory = self._segments_dir / name
                segments.append(
                    {
                        "name": name,
                        "rows": len(seg),
                        "deleted": int(self._dead[name].sum()) if name in self._dead else 0,
                        "hnsw": seg.dense is not None and seg.dense.ann is not None,
                        "bytes": {f.name: f.stat().st_size for f in sorted(directory.iterdir())},
                    }
                )
            disk = sum(f.stat().st_size for f in self.path.rglob("*") if f.is_file())
            return {
                "path": str(self.path),
                "count": self._count,
                "model": self.config.model,
                "image_encoder": self.config.image_encoder,
                "outputs": self.config.outputs,
                "dense_index": self.config.dense_index,
                "colbert_dtype": self.config.colbert_dtype,
                "pending": len(self._pending),
                "tombstones": len(self._tombstones),
                "segments": segments,
                "damaged": {name: str(exc) for name, exc in self._damaged.items()},
                "disk_bytes": disk,
            }

    def verify(self, *, show_progress: bool = False) -> dict[str, Any]:
        """Check every byte: SQLite's structural check of the database, and every file of every listed segment
        against its recorded size and checksum (`m3search index verify`). Returns `problems` (one
        `CorruptCollectionError` per damaged file), `segments`, `bytes` checksummed, and `unchecked`: segments
        sealed before checksums were recorded (checked for structure only)."""
        with self._mutex:
            self._refresh()
            with self._db.read():
                names = self._db.segment_names()
                files = self._db.segment_files()
            total = integrity.segment_bytes(names, files)
            with tqdm(
                total=total,
                unit="B",
                unit_scale=True,
                desc="verify",
                disable=not show_progress,
                file=sys.stderr,
            ) as bar:
                problems = integrity.verify_collection(
                    self.path.name, self.path, names, files, self.config, self._db.check(), bar.update
                )
            return {
                "problems": problems,
                "segments": len(names),
                "bytes": total,
                "unchecked": [n for n in names if n not in files],
            }


__all__ = ["Collection"]
