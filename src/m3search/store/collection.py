"""`Collection`: a hybrid index of documents — the facade that encodes, validates, plans and fuses searches
over a storage backend (`m3search.store.backends`).

Backends: `local` (the default: the embedded engine, a directory opened in-process, see
`m3search.store.backends.local`), `qdrant` (a Qdrant server or cluster, or qdrant-client's local mode, see
`m3search.store.backends.qdrant`) and `edge` (Qdrant's engine in-process, a directory like a local collection,
see `m3search.store.backends.edge`). Either way a write is prepared here (validated and encoded, outside any
lock: `prepare`) and committed by the backend as one acknowledged write (`write`); a search gets the mode's
candidates with their exact per-mode scores from the backend and ranks them here with one fusion
(`m3search.search.planner.fuse`), so every backend ranks the same candidates identically.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from m3search.encoders.base import OUTPUT_KINDS, OutputKind, TextEncoder
from m3search.encoders.bm25 import BM25Encoder
from m3search.encoders.composite import CompositeEncoder
from m3search.encoders.image.base import ImageEncoder
from m3search.errors import CollectionError, InvalidInputError
from m3search.extras import require
from m3search.index.sparse import SparseRow
from m3search.search.fusion import (
    DEFAULT_NORMALIZE,
    FUSIONS,
    Fusion,
    Normalize,
    Weights,
    mode_weights,
    resolve_normalize,
)
from m3search.search.modes import MODE_KINDS, ONE_STAGE_MODES, Mode, mode_outputs
from m3search.search.planner import RERANK_DEFAULT, Candidates, QueryVectors, default_candidates, fuse
from m3search.search.results import Hit
from m3search.store.backends.base import LINK_FILE, Backend, SearchPlan, is_edge
from m3search.store.backends.local import LocalBackend
from m3search.store.bm25 import as_sparse_row, bm25_part
from m3search.store.config import CONFIG_FILE, CollectionConfig
from m3search.store.database import KIND_FIELD
from m3search.store.documents import (
    DOC_KINDS,
    Document,
    check_colbert,
    check_dense,
    check_sparse,
    normalize_ids,
)
from m3search.store.filters import Filter, parse_filter
from m3search.store.images import (
    check_image_encoder,
    image_query_vector,
    install_image_encoder,
    kinds_filter,
    load_collection_image_encoder,
    query_image,
    resolve_image_encoder,
)
from m3search.store.ingest import (
    CachedEncoding,
    EncodeTexts,
    PreparedBatch,
    check_text_encoder,
    load_text_encoder,
    prepare,
)
from m3search.store.search_defaults import SearchDefaults
from m3search.threads import WarmUp, one_thread, warm_files

#: Storage backends `Collection.create` and `Collection.open` accept.
BACKENDS = ("local", "qdrant", "edge")


def _vector_runtime(encoder: TextEncoder) -> dict[str, str] | None:
    """What `CollectionConfig.runtime` records: the runtime and precision of `encoder`'s model vectors."""
    identity = encoder.runtime_identity()
    return None if identity is None else {k: identity[k] for k in ("runtime", "dtype")}


def _model_source(encoder: TextEncoder) -> str:
    """Where `encoder`'s model can be loaded from again: its directory when it has one, else its name."""
    parts = encoder.parts.values() if isinstance(encoder, CompositeEncoder) else [encoder]
    for part in parts:
        path = getattr(part, "path", None)
        if path is not None:
            return str(path)
    return encoder.name


def is_qdrant_link(path: Path) -> bool:
    """Whether directory `path` links to a Qdrant collection (see `m3search.store.backends.qdrant`)."""
    return (path / LINK_FILE).is_file()


def is_collection(path: Path) -> bool:
    """Whether directory `path` holds a collection: a local or edge one, or a link to a Qdrant one."""
    return (path / CONFIG_FILE).is_file() or is_qdrant_link(path)


def _qdrant() -> Any:
    """The qdrant backend module, or `MissingExtraError` naming the extra that installs qdrant-client."""
    require("qdrant_client", "qdrant", "the qdrant backend")
    from m3search.store.backends import qdrant

    return qdrant


def _edge() -> Any:
    """The edge backend module, or `MissingExtraError` naming the extra that installs qdrant-edge-py."""
    require("qdrant_edge", "edge", "the edge backend")
    from m3search.store.backends import edge

    return edge


def _check_backend(backend: str) -> None:
    if backend not in BACKENDS:
        raise InvalidInputError(f"unknown backend {backend!r}; choose one of {', '.join(BACKENDS)}")


#: How many argument combinations a collection keeps resolved (`Collection.search`); more empty the memo.
MEMO_SIZE = 256
#: Argument types a memo key holds as they are (bool and float are not: 1 == True == 1.0).
_PLAIN = (int, str, type(None))


class _Resolved(NamedTuple):
    """A search's arguments resolved (`Collection._resolve`), kept per argument combination while the stored
    defaults they were resolved with stay the same."""

    stored: SearchDefaults
    mode: Mode
    fusion: Fusion
    weights: dict[OutputKind, float]
    normalize: Any
    rerank: int
    needed: tuple[OutputKind, ...]
    filter: Filter | None
    candidates: int | None
    dense_only: bool


def _memo_key(args: tuple[Any, ...]) -> tuple[Any, ...] | None:
    """`search`'s arguments as a key of resolved searches, or None when one is not plainly hashable (a filter
    object): those are resolved at each search. The last argument is a bool, kept as is."""
    *plain, image_only = args
    key: list[Any] = []
    for value in plain:
        if type(value) in _PLAIN:
            key.append(value)
        elif type(value) in (list, tuple) and all(type(v) in (int, float, str) for v in value):
            key.append(tuple(value))  # weights, kinds
        elif type(value) is dict and all(type(v) in (int, float) for v in value.values()):
            key.append(tuple(value.items()))  # weights by name: pairs, unlike the above
        else:
            return None
    return (*key, image_only)


class Collection:
    """A persistent hybrid index of documents; create with `Collection.create`, open with `Collection.open`."""

    def __init__(
        self,
        path: str | Path | None = None,
        *,
        backend: Backend | None = None,
        encoder: TextEncoder | None = None,
        runtime: str = "auto",
        readonly: bool = False,
        cache: bool | str | Path = True,
        image_encoder: ImageEncoder | None = None,
    ) -> None:
        """Open the collection directory at `path` (local, edge, or a Qdrant link), or wrap an opened `backend`
        (use `Collection.open`)."""
        if backend is None and is_qdrant_link(Path(path)):  # type: ignore[arg-type]
            backend = _qdrant().open_link(Path(path), readonly=readonly)  # type: ignore[arg-type]
        elif backend is None and is_edge(Path(path)):  # type: ignore[arg-type]
            backend = _edge().EdgeBackend(Path(path), readonly=readonly)  # type: ignore[arg-type]
        elif backend is None:
            backend = LocalBackend(Path(path), readonly=readonly, bm25=self._bm25)  # type: ignore[arg-type]
        self.backend = backend
        self.config: CollectionConfig = backend.config
        #: The collection's directory (local and edge collections); None on Qdrant.
        self.path: Path | None = getattr(backend, "path", None)
        self.location = backend.location
        self.readonly = readonly
        self._runtime = runtime
        self._encoder: TextEncoder | None = None
        self._tokenizer_bm25: BM25Encoder | None = None  # BM25 without the model (see `_bm25`)
        self._image_encoder: ImageEncoder | None = None
        self._encoding = CachedEncoding(self.config, cache)
        #: (the backend's `refresh` count they were read at, settings)
        self._search_defaults: tuple[int, SearchDefaults] = (-1, SearchDefaults())
        self._resolved: dict[tuple[Any, ...], _Resolved] = {}  # `search`'s memo of resolved arguments
        try:
            if encoder is not None:
                self._attach_encoder(encoder)
            if image_encoder is not None:
                self._attach_image_encoder(image_encoder)
        except Exception:
            backend.close()
            raise

    # ---- creating and opening --------------------------------------------------------------------------

    @classmethod
    def create(
        cls,
        path: str | Path,
        /,
        model: str | Path | None = None,
        *,
        outputs: Sequence[str] | None = None,
        encoder: TextEncoder | None = None,
        runtime: str = "auto",
        dim: int | None = None,
        colbert_dim: int | None = None,
        dense_index: str = "hnsw",
        colbert_dtype: str = "float16",
        colbert_recheck: int = 0,
        colbert_prune: str | None = None,
        sparse_forward: bool = True,
        max_length: int | None = None,
        hnsw: Mapping[str, Any] | None = None,
        flush_docs: int = 10_000,
        merge_factor: int = 10,
        cache: bool | str | Path = True,
        image_encoder: str | Path | ImageEncoder | None = None,
        backend: str = "local",
        **qdrant: Any,
    ) -> Collection:
        """Create a new, empty collection and open it for writing: a directory at `path` (backend "local", or
        "edge": stored by Qdrant Edge in-process), or a Qdrant collection named `path` (backend "qdrant"; `url=`, `path=`... in `qdrant`, see
        `m3search.store.backends.qdrant.connect`, plus `shards=`, `replicas=`, `quantization=`).

        `model` (hub id, alias or directory) or a ready `encoder` encodes texts; with neither, documents and
        queries must come as vectors and `dim` (and `colbert_dim`) say their sizes. `outputs` defaults to all
        the encoder produces (a model without a sparse head gets BM25 over its tokenizer). `dense_index`:
        "hnsw" (float32 graph), "hnsw-sq8" (8-bit codes, a quarter of the memory) or "flat" (always exact);
        `colbert_dtype`: "float16", "int8", "2bit" or "binary" (see docs/INDEX.md); `colbert_recheck` = M > 0
        also keeps float16 token vectors and re-scores the M best of the compressed MaxSim with them;
        `colbert_prune="punctuation"` drops special and punctuation tokens' vectors of encoded texts.
        `sparse_forward=False` leaves the sparse forward index out of new segments (local backend: ~200 B/doc
        less, slower lexical scores for a large collection's hybrid candidates). `hnsw`
        overrides `HNSWParams` fields (m, ef_construction, ef_search, min_rows...). `cache` is True (the shared
        embedding cache), False, or a cache file path.
        `image_encoder` (an adapter directory from `m3search images train-adapter`, a Visualized-BGE checkpoint,
        or an `ImageEncoder`) lets documents and queries carry images; it must share the text model and `dim`.
        """
        _check_backend(backend)
        if backend != "qdrant" and qdrant:
            raise InvalidInputError(f"options {sorted(qdrant)} are for the qdrant backend")
        if backend != "local" and not sparse_forward:
            raise InvalidInputError("sparse_forward is a setting of the local backend's sparse index")
        kinds: list[OutputKind] | None = None
        if outputs is not None:
            kinds = [k for k in outputs if k in OUTPUT_KINDS]
            unknown = [k for k in outputs if k not in OUTPUT_KINDS]
            if unknown or not kinds:
                raise InvalidInputError(
                    f"outputs must be a non-empty subset of {OUTPUT_KINDS}, got {list(outputs)}"
                )
        if encoder is None and model is not None:
            from m3search.encoders import load_encoder

            wants_sparse = kinds is None or "sparse" in kinds
            encoder = load_encoder(model, runtime=runtime, sparse="auto" if wants_sparse else "none")
        settings: dict[str, Any] = dict(
            dense_index=dense_index,
            colbert_dtype=colbert_dtype,
            colbert_recheck=colbert_recheck,
            colbert_prune=colbert_prune,
            sparse_forward=sparse_forward,
            max_length=max_length,
            flush_docs=flush_docs,
            merge_factor=merge_factor,
        )
        if hnsw:
            settings["hnsw"] = dict(hnsw)
        if encoder is not None:
            kinds = kinds or [k for k in OUTPUT_KINDS if k in encoder.outputs]
            encoder.check_outputs(kinds)
            config = CollectionConfig(
                outputs=kinds,
                dim=encoder.dim if "dense" in kinds else None,
                colbert_dim=encoder.colbert_dim if "colbert" in kinds else None,
                model=str(model) if model is not None else _model_source(encoder),
                sparse_source=None if "sparse" not in kinds else "bm25" if bm25_part(encoder) else "model",
                encoder=encoder.describe(),
                runtime=_vector_runtime(encoder),
                **settings,
            )
        else:
            present = {"dense": dim, "sparse": True, "colbert": colbert_dim}
            kinds = kinds or [k for k in OUTPUT_KINDS if present[k]]
            config = CollectionConfig(
                outputs=kinds,
                dim=dim if "dense" in kinds else None,
                colbert_dim=colbert_dim if "colbert" in kinds else None,
                **settings,
            )
        images = None
        if image_encoder is not None:
            images = resolve_image_encoder(image_encoder, config.model)
            check_image_encoder(images, config, Path(path))
        options = dict(encoder=encoder, runtime=runtime, cache=cache, image_encoder=images)
        if backend == "qdrant":
            if images is not None:
                config.image_encoder = install_image_encoder(image_encoder, images, None)  # type: ignore[arg-type]
            return cls(backend=_qdrant().QdrantBackend.create(str(path), config, **qdrant), **options)  # type: ignore[arg-type]

        def install(directory: Path) -> None:
            config.image_encoder = install_image_encoder(image_encoder, images, directory)  # type: ignore[arg-type]

        maker = _edge().EdgeBackend if backend == "edge" else LocalBackend
        maker.create(Path(path), config, install if images is not None else None)
        return cls(Path(path), **options)  # type: ignore[arg-type]

    @classmethod
    def open(
        cls,
        path: str | Path,
        /,
        *,
        encoder: TextEncoder | None = None,
        runtime: str = "auto",
        readonly: bool = False,
        cache: bool | str | Path = True,
        image_encoder: ImageEncoder | None = None,
        backend: str = "local",
        **qdrant: Any,
    ) -> Collection:
        """Open an existing collection: a directory (backend "local", the writer lock taken at the first write,
        not with `readonly`; an edge collection's directory opens as one, locked for this process while open) or
        a Qdrant collection by name (backend "qdrant", `qdrant` as in `create`).

        The recorded model (and image encoder) is loaded on first need (a text or an image to encode), on
        `runtime`; pass `encoder` / `image_encoder` to reuse loaded ones. Raises `CollectionNotFoundError` when
        there is no such collection.
        """
        _check_backend(backend)
        options = dict(
            encoder=encoder, runtime=runtime, readonly=readonly, cache=cache, image_encoder=image_encoder
        )
        if backend == "qdrant":
            return cls(
                backend=_qdrant().QdrantBackend.open(str(path), readonly=readonly, **qdrant),
                **options,  # type: ignore[arg-type]
            )
        if backend == "edge" and not qdrant:
            return cls(backend=_edge().EdgeBackend(Path(path), readonly=readonly), **options)  # type: ignore[arg-type]
        if qdrant:
            raise InvalidInputError(f"options {sorted(qdrant)} are for the qdrant backend")
        return cls(Path(path), **options)  # type: ignore[arg-type]

    def close(self) -> None:
        """Release the backend (the local writer lock, the database) and the embedding cache."""
        self.backend.close()
        self._encoding.close()

    def __enter__(self) -> Collection:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Collection({self.location!r}, model={self.config.model!r}, outputs={self.config.outputs})"

    # ---- encoder ---------------------------------------------------------------------------------------

    @property
    def encoder(self) -> TextEncoder:
        """The text encoder, loaded from the recorded model on first use."""
        if self._encoder is None:
            self._attach_encoder(
                load_text_encoder(self.config, self.location, self._runtime, self.backend.bm25_stats())
            )
        return self._encoder  # type: ignore[return-value]

    def use_encoder(self, encoder: TextEncoder) -> None:
        """Encode with `encoder` (already loaded elsewhere) instead of loading the recorded model; it must
        make the collection's outputs and sizes."""
        self._attach_encoder(encoder)

    def _bm25(self) -> BM25Encoder | None:
        """The BM25 encoder that weighs the collection's sparse vectors (None unless they are BM25's): the text
        encoder's once loaded, else one over the model's tokenizer alone, so that a writer that encodes nothing
        (the Ray driver committing prepared batches) never loads the model."""
        if self.config.sparse_source != "bm25":
            return None
        if self._encoder is not None or self.config.model is None:
            return bm25_part(self.encoder)
        if self._tokenizer_bm25 is None:
            from m3search.encoders import load_bm25

            self._tokenizer_bm25 = load_bm25(self.config.model, bm25_stats=self.backend.bm25_stats())
        return self._tokenizer_bm25

    def _attach_encoder(self, encoder: TextEncoder) -> None:
        check_text_encoder(encoder, self.config, self.location)
        bm25 = bm25_part(encoder)
        if self.config.sparse_source == "bm25" and bm25 is not None:
            stats = self.backend.bm25_stats()
            if stats is not None:
                bm25.stats = stats  # queries always see the collection's current statistics
        self._encoder = encoder

    @property
    def image_encoder(self) -> ImageEncoder:
        """The image encoder, loaded from what the collection recorded on first use."""
        if self._image_encoder is None:
            self._attach_image_encoder(load_collection_image_encoder(Path(self.location), self.config))
        return self._image_encoder  # type: ignore[return-value]

    @property
    def has_images(self) -> bool:
        """Whether the collection was created with an image encoder (documents and queries may be images)."""
        return bool(self.config.image_encoder)

    def _attach_image_encoder(self, encoder: ImageEncoder) -> None:
        if not self.has_images:
            raise InvalidInputError(
                f"collection {self.location} was created without an image encoder; it holds no images"
            )
        check_image_encoder(encoder, self.config, Path(self.location))
        self._image_encoder = encoder

    # ---- writing ---------------------------------------------------------------------------------------

    def prepare(
        self,
        documents: Iterable[Document | Mapping[str, Any]],
        *,
        batch_size: int = 32,
        show_progress: bool = False,
        encode: EncodeTexts | None = None,
    ) -> PreparedBatch:
        """Validate a batch and encode what it lacks (no lock held); `write` commits it. `encode` replaces the
        collection's own text encoding (the server's micro-batcher)."""
        if self.readonly:
            raise CollectionError(f"collection {self.location} is open read-only")

        def own(texts: list[str], kinds: list[OutputKind]) -> list[dict[str, Any]]:
            return self._encoding.encode(self.encoder, texts, kinds, batch_size, show_progress)

        return prepare(
            documents,
            self.config,
            encode=encode or own,
            image_encoder=lambda: self.image_encoder,
            bm25=self._bm25,
            batch_size=batch_size,
        )

    def write(self, batch: PreparedBatch) -> int:
        """Commit a prepared batch: stored whole or not at all, acknowledged when durable."""
        if not batch.docs:
            return 0
        if batch.bm25 is None and any(
            c is not None for c in batch.counts
        ):  # exported from another collection
            batch.bm25 = self._bm25()
        return self.backend.write(batch)

    def export(self, batch_size: int = 256) -> Iterator[PreparedBatch]:
        """Every document with its stored vectors (and BM25 term counts, thumbnails), in batches that `write`
        commits to another collection of the same outputs and sizes: migration without encoding again."""
        return self.backend.export(batch_size)

    def upsert(
        self,
        documents: Iterable[Document | Mapping[str, Any]],
        *,
        batch_size: int = 32,
        show_progress: bool = False,
    ) -> int:
        """Insert or replace documents by id; returns how many were written, once they are durable.

        Each document needs an `id` and a `text` (encoded here, through the embedding cache), an `image` (a
        path, bytes or base64 text; collections with an image encoder) or its vectors. The batch is validated
        and encoded first and then written in one transaction: it is stored whole or not at all. Duplicate ids
        within a batch, wrong vector sizes and NaN are errors.
        """
        return self.write(self.prepare(documents, batch_size=batch_size, show_progress=show_progress))

    def delete(self, ids: str | int | Iterable[str | int]) -> int:
        """Delete documents by id (unknown ids are ignored); returns how many existed. Durable on return."""
        if self.readonly:
            raise CollectionError(f"collection {self.location} is open read-only")
        return self.backend.delete(normalize_ids(ids))

    def flush(self) -> None:
        """Seal what was written since the last flush into the backend's fast index structures."""
        self.backend.flush()

    def compact(self) -> None:
        """Flush, then reclaim the space of deleted documents (local: merge every segment into one)."""
        self.backend.compact()

    # ---- reading ---------------------------------------------------------------------------------------

    def warm(self, budget: int | None = None) -> WarmUp:
        """Start reading the files searches touch into the page cache in the background, smallest first, within
        `budget` bytes (default: most of the free memory; `m3search.threads.warm_files`). On a large local
        collection the first queries otherwise wait on the disk for each candidate's rows (docs/INDEX.md,
        "Warming"); Qdrant's engines manage their own memory (nothing to read). Returns the thread."""
        return warm_files(self.backend.search_files(), budget)

    def count(self) -> int:
        """Number of documents."""
        return self.backend.count()

    def ids(self) -> list[str]:
        """The id of every document (e.g. to sample documents for pseudo-queries)."""
        return self.backend.ids()

    def get(self, ids: str | int | Iterable[str | int]) -> list[Document | None]:
        """The stored documents (id, kind, text, metadata, thumbnail reference) for `ids`, in order; None where
        an id is unknown."""
        return self.backend.get(normalize_ids(ids))

    def thumbnail(self, reference: str | int) -> bytes | None:
        """JPEG bytes of the thumbnail a document or hit refers to (its `thumbnail`); None when gone."""
        if isinstance(reference, bool) or not isinstance(reference, (str, int)):
            raise InvalidInputError(f"{reference!r} is not a thumbnail reference")
        return self.backend.thumbnail(str(reference))

    def search(
        self,
        query: str | Mapping[str, Any] | QueryVectors | None = None,
        k: int = 10,
        *,
        image: Any = None,
        kinds: Sequence[str] | str | None = None,
        mode: Mode | None = None,
        weights: Sequence[float] | Mapping[str, float] | None = None,
        fusion: Fusion | None = None,
        filter: str | Filter | None = None,
        candidates: int | None = None,
        ef_search: int | None = None,
        normalize: Normalize | None = None,
        rerank: int | None = None,
    ) -> list[Hit]:
        """The `k` best documents for `query` (a text, or its vectors as {"dense", "sparse", "colbert"}) and/or
        an `image` (path, bytes, base64 text or PIL image; collections with an image encoder).

        An image alone is a dense vector (mode dense); an image with a text is one composed (or mean) dense
        vector plus the text's sparse and ColBERT vectors. `kinds` keeps documents of those kinds ("text",
        "image", "image+text"): text->image is a text query with kinds=["image", "image+text"].

        `mode`: dense, sparse, colbert, dense+sparse or all (default: all the collection's outputs allow).
        `fusion`: "weighted" (weighted mean), "rrf" (k=60) or "dbsf" (mean ± 3σ scaling); `weights` =
        (dense, sparse, colbert), default each fusion's (`m3search.search.fusion.FUSION_WEIGHTS`). `filter`
        restricts the documents before any top-k (see `m3search.store.filters`). `candidates`: how many each
        first stage passes to re-scoring in the hybrid modes (default grows with the collection:
        `m3search.search.planner.default_candidates`). `normalize`: "auto" (default) = "signal": min-max
        scaling, each mode weighted by how much signal it has for this query; "minmax" without that; "none"
        the bge-m3 reference formula. `rerank`: how many candidates ColBERT re-scores in modes colbert and all,
        the best by the mode's other scores (default `m3search.search.planner.RERANK_DEFAULT`; at least twice
        `candidates` re-scores every one). Arguments left None take the collection's stored `search_defaults`,
        then the library's. Documents with only a dense vector (images alone) are scored by it alone in the
        hybrid modes.
        """
        # reading them refreshes the backend: BM25 query weights use the statistics of the version searched
        stored = self.search_defaults
        if image is not None and not isinstance(query, (str, type(None))):
            raise InvalidInputError("an image query goes with a text, not with query vectors")
        if query is None and image is None:
            raise InvalidInputError("give a query text, query vectors or an image")
        args = (k, mode, fusion, weights, normalize, candidates, rerank, filter, kinds, query is None)
        key = _memo_key(args)
        how = self._resolved.get(key) if key is not None else None
        if how is None or how.stored is not stored:
            how = self._resolve(stored, *args)
            if key is not None:
                if len(self._resolved) >= MEMO_SIZE:
                    self._resolved.clear()
                self._resolved[key] = how
        picture = query_image(image, self.image_encoder) if image is not None else None
        vectors = self._query_vectors(query, how.needed) if query is not None else QueryVectors()
        if picture is not None:
            text = query if isinstance(query, str) else None  # an image goes with a text only (checked above)
            vectors.dense = image_query_vector(self.image_encoder, picture, text, vectors.dense)
        depth = how.candidates or default_candidates(self.backend.approximate_count())
        plan = SearchPlan(how.mode, k, depth, how.filter, ef_search, how.dense_only)

        def rank(found: Candidates) -> list[tuple[int, float, dict[str, float]]]:
            ceiling = vectors.sparse_ceiling
            # vectors given without it: only fusion needs it
            if ceiling is None and vectors.sparse is not None:
                ceiling = self._sparse_ceiling(vectors.sparse)
            return fuse(
                found,
                how.mode,
                k,
                weights=how.weights,
                fusion=how.fusion,
                normalize=how.normalize,
                sparse_ceiling=ceiling,
                rerank=how.rerank,
            )

        return self.backend.search(vectors, plan, rank)

    def _resolve(
        self,
        stored: SearchDefaults,
        k: Any,
        mode: Any,
        fusion: Any,
        weights: Any,
        normalize: Any,
        candidates: Any,
        rerank: Any,
        filter: Any,
        kinds: Any,
        image_only: bool,
    ) -> _Resolved:
        """`search`'s arguments checked and completed from the stored and the library's defaults (what does
        not depend on the query's vectors), or a clear error."""
        if isinstance(k, bool) or not isinstance(k, int) or k < 1:
            raise InvalidInputError(f"k must be a positive integer, got {k!r}")
        normalize = normalize or stored.normalize or DEFAULT_NORMALIZE
        if rerank is None:
            rerank = stored.rerank or RERANK_DEFAULT
        for name, value in (("candidates", candidates), ("rerank", rerank)):
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
                raise InvalidInputError(f"{name} must be a positive integer, got {value!r}")
        if image_only:
            if mode not in (None, "dense"):
                raise InvalidInputError(
                    f"an image query has only a dense vector; mode {mode!r} needs more "
                    "(add a text to the image, or use mode dense)"
                )
            mode = "dense"
        mode, fusion, default = stored.fusion_for(fusion, mode, self.default_mode)
        assert normalize is not None  # the defaults above
        needed = mode_outputs(mode)
        missing = [kind for kind in needed if kind not in self.config.outputs]
        if missing:
            raise InvalidInputError(
                f"mode {mode!r} needs {', '.join(missing)} vectors; collection {self.location} "
                f"stores {', '.join(self.config.outputs)}"
            )
        scored = MODE_KINDS[mode]
        kind_weights = (
            mode_weights(default if weights is None else weights, fusion, mode)
            if len(scored) > 1
            else {scored[0]: 1.0}
        )
        spec = parse_filter(filter)
        if kinds is not None:
            by_kind = kinds_filter(kinds, DOC_KINDS, KIND_FIELD)
            spec = {"$and": [spec, by_kind]} if spec else by_kind
        return _Resolved(
            stored,
            mode,
            fusion,
            kind_weights,
            resolve_normalize(normalize),
            rerank,
            needed,
            spec,
            # a one-stage mode returns its k: no depth; None: sized by the collection's count at each search
            candidates or stored.candidates or (k if mode in ONE_STAGE_MODES else None),
            self.has_images and len(scored) > 1 and "dense" in scored,
        )

    def fusion_defaults(
        self, fusion: Fusion | None = None, mode: Mode | None = None
    ) -> tuple[Mode, Fusion, Weights | None]:
        """The mode, fusion and (dense, sparse, colbert) weights a search given no weights uses, with `fusion`
        and `mode` left None taking the collection's defaults (`SearchDefaults.fusion_for`)."""
        return self.search_defaults.fusion_for(fusion, mode, self.default_mode)

    @property
    def search_defaults(self) -> SearchDefaults:
        """The fusion settings this collection's searches use unless told otherwise (`search.json`). Reading
        them refreshes the backend; the file is read again when that loads a change (another process's
        `set_search_defaults` commits one: a file edited by hand is seen at the next open or write)."""
        loads = self.backend.refresh()
        # beside the files; Qdrant: the library's
        if self.path is not None and loads != self._search_defaults[0]:
            self._search_defaults = (loads, SearchDefaults.load(self.path))
        return self._search_defaults[1]

    def set_search_defaults(self, defaults: SearchDefaults) -> None:
        """Store `defaults` as this collection's search defaults (e.g. tuned ones; `SearchDefaults()` clears)."""
        missing = (
            [k for k in mode_outputs(defaults.mode) if k not in self.config.outputs] if defaults.mode else []
        )
        if missing:
            raise InvalidInputError(
                f"mode {defaults.mode!r} needs {', '.join(missing)} vectors; collection {self.location} "
                f"stores {', '.join(self.config.outputs)}"
            )
        if self.path is None:
            raise InvalidInputError(
                f"stored search defaults live beside a collection's files; {self.location} is in Qdrant"
            )
        path = self.path
        self.backend.write_beside(lambda: defaults.save(path))
        self._search_defaults = (self.backend.refresh(), SearchDefaults.load(path))

    @functools.cached_property
    def default_mode(self) -> Mode:
        """The richest mode the collection's outputs allow."""
        richest: tuple[Mode, ...] = ("all", "dense+sparse", "dense", "sparse")
        for mode in richest:
            if all(kind in self.config.outputs for kind in mode_outputs(mode)):
                return mode
        return "sparse"

    def encode_query(self, text: str, outputs: Sequence[OutputKind] | None = None) -> QueryVectors:
        """The query vectors `search` would compute for `text` (all stored outputs by default): encode once,
        search many times (weight tuning, several modes)."""
        if not isinstance(text, str) or not text.strip():
            raise InvalidInputError("the query is empty")
        needed = self.config.outputs if outputs is None else outputs
        flags = {f"return_{k}": k in needed for k in OUTPUT_KINDS}
        with one_thread("openmp"):  # torch's CPU kernels
            result = self.encoder.encode_queries([text], **flags)
        sparse = None if result.sparse is None else as_sparse_row(result.sparse[0])
        return QueryVectors(
            None if result.dense is None else result.dense[0],
            sparse,
            None if result.colbert is None else result.colbert[0],
            None if sparse is None else self._sparse_ceiling(sparse, text),
        )

    def _sparse_ceiling(self, sparse: SparseRow, text: str | None = None) -> float:
        """The highest sparse score a document could reach for this query, what fusion measures the sparse
        mode's signal against: BM25's attainable maximum, else the query's self-score (bge-m3's lexical
        score of the query against itself)."""
        bm25 = bm25_part(self._encoder) if self._encoder is not None else None
        if self.config.sparse_source == "bm25" and bm25 is not None:
            if text is not None:
                return bm25.query_ceiling(text)
            return bm25.vector_ceiling(dict(zip(sparse[0].tolist(), sparse[1].tolist())))
        return float(np.dot(sparse[1], sparse[1]))

    def _query_vectors(self, query: Any, needed: Sequence[OutputKind]) -> QueryVectors:
        cfg = self.config
        if isinstance(query, QueryVectors):
            query = {k: getattr(query, k) for k in (*OUTPUT_KINDS, "sparse_ceiling")}
        if isinstance(query, str):
            return self.encode_query(query, needed)
        if type(query) is not dict and not isinstance(query, Mapping):  # dict first: no ABC machinery
            raise InvalidInputError(f"a query is a text or an object of vectors, got {type(query).__name__}")
        absent = [k for k in needed if query.get(k) is None]
        if absent:
            raise InvalidInputError(f"the query lacks {', '.join(absent)} vectors")
        out = QueryVectors()
        if "dense" in needed and cfg.dim is not None:
            out.dense = check_dense(query["dense"], cfg.dim, "query")
        if "sparse" in needed:
            out.sparse = check_sparse(query["sparse"], "query")
            # known when the vectors come from `encode_query`, which saw the query's text; else worked out by
            # `search` if a fusion needs it
            ceiling = query.get("sparse_ceiling")
            out.sparse_ceiling = None if ceiling is None else float(ceiling)
        if "colbert" in needed and cfg.colbert_dim is not None:
            colbert = check_colbert(query["colbert"], cfg.colbert_dim, "query")
            out.colbert = colbert if colbert is not None else np.empty((0, cfg.colbert_dim), np.float32)
        return out

    def verify(self, *, show_progress: bool = False) -> dict[str, Any]:
        """Check the collection: every byte of a local one (`LocalBackend.verify`: database structure, segment
        file checksums); on Qdrant and Qdrant Edge, which check their own storage, that every point reads back
        (and the recorded BM25 statistics, on edge)."""
        return self.backend.verify(show_progress=show_progress)

    def stats(self) -> dict[str, Any]:
        """Counts and sizes: documents, the backend's structures (local: segments, incremental level, disk
        use), and what the collection stores."""
        stored = self.search_defaults
        return {
            **self.backend.stats(),
            "model": self.config.model,
            "image_encoder": self.config.image_encoder,
            "outputs": self.config.outputs,
            "dense_index": self.config.dense_index,
            "colbert_dtype": self.config.colbert_dtype,
            "colbert_recheck": self.config.colbert_recheck,
            "colbert_prune": self.config.colbert_prune,
            "sparse_forward": self.config.sparse_forward,
            "search_mode": stored.fusion_for(None, None, self.default_mode)[0],
            # per fusion ("default": the collection's), the weights a search in that mode fuses with
            "fusion_weights": {
                choice: weights
                for choice, fusion in (("default", None), *zip(FUSIONS, FUSIONS))
                if (weights := stored.fusion_for(fusion, None, self.default_mode)[2]) is not None
            },
        }


__all__ = ["BACKENDS", "Collection", "is_collection", "is_qdrant_link"]
