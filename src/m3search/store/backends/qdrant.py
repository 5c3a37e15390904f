"""The `qdrant` backend: a collection stored in Qdrant (a server or cluster by URL, or qdrant-client's local
mode in a directory or in memory), behind the same `Collection` API.

Mapping: one point per document, its id the UUID5 of the document id (the id itself in the payload); dense ->
the named vector `dense` (cosine, HNSW; int8 scalar quantization with rescoring for `dense_index="hnsw-sq8"`,
exact search for "flat"); sparse -> the sparse vector `sparse` (BM25 collections: Qdrant's IDF modifier, so
document frequencies are the engine's, shard-wide and always current; the documents' saturated term
frequencies use the average length kept in the collection's metadata); ColBERT -> the multivector `colbert`
(MAX_SIM, float16, no HNSW: `m=0`, re-rank only); text, kind and metadata -> payload; the m3search config ->
the collection's metadata, so another client opens the collection by name.

ColBERT compression is Qdrant's own multivector quantization, not the local backend's codes
(`COLBERT_QUANTIZATION`): `colbert_dtype` int8 -> scalar (uint8) quantization, 2bit and binary -> binary
quantization with the two-bit or one-bit encoding and 8-bit scalar query encoding (asymmetric, like the local
binary MaxSim; Qdrant's one-bit codes are the raw signs, without the local backend's centering). The float16
vectors are always kept beside the quantized ones (on disk with `on_disk`); `colbert_recheck` > 0 re-scores
with them — Qdrant's `rescore`, which covers every candidate of the re-rank request, not only the best M.

Search: the mode's first stages run on the server in one batch (dense top-N, sparse top-N); the candidates'
missing per-mode scores — and every candidate's MaxSim — are computed by the server, exactly, restricted to
the candidates' ids, in a second batch; `Collection` fuses them with the local backend's formula. No vector
leaves the server.
"""

from __future__ import annotations

import base64
import functools
import json
import os
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any, TypeVar

from qdrant_client import QdrantClient, models
from qdrant_client.http.exceptions import ResponseHandlingException, UnexpectedResponse

from m3search.encoders.bm25 import BM25Stats
from m3search.errors import (
    CollectionError,
    CollectionExistsError,
    CollectionNotFoundError,
    CorruptCollectionError,
    InvalidInputError,
)
from m3search.search.planner import QueryVectors
from m3search.search.results import Hit
from m3search.store.backends.base import LINK_FILE, Ranker, SearchPlan
from m3search.store.backends.points import (
    DOC_FIELDS,
    KIND_KEY,
    Ask,
    Exported,
    ParamsSpec,
    ServerIdf,
    check_reference,
    exact_params,
    exported_batch,
    payload_document,
    payload_length,
    point_id,
    point_payload,
    point_vectors,
    query_vector,
    reweigh,
    schema_problems,
    search_points,
    stage_params,
)
from m3search.store.backends.qdrant_filters import to_qdrant
from m3search.store.bm25 import stats_after
from m3search.store.config import CollectionConfig, atomic_write_text
from m3search.store.documents import Document
from m3search.store.ingest import PreparedBatch

T = TypeVar("T")
#: The collection-metadata key holding the m3search config (and BM25 length statistics).
CONFIG_KEY = "m3search"
#: Points per upsert request.
UPSERT_BATCH = 256


#: What the client raises for an unreachable server, an HTTP error, or (local mode) an unknown collection.
CLIENT_ERRORS = (ResponseHandlingException, UnexpectedResponse, ValueError)


#: Environment variable with the API key for linked collections (keys are never written to the link).
API_KEY_ENV = "QDRANT_API_KEY"


def write_link(directory: Path, name: str, url: str | None = None, path: str | Path | None = None) -> None:
    """Make `directory` (new or empty) a link to Qdrant collection `name` at `url` or local-mode `path`."""
    if directory.exists() and (not directory.is_dir() or any(directory.iterdir())):
        raise CollectionExistsError(f"{directory} exists and is not an empty directory")
    directory.mkdir(parents=True, exist_ok=True)
    where = {"url": url} if url is not None else {"path": str(Path(path).resolve())}  # type: ignore[arg-type]
    atomic_write_text(directory / LINK_FILE, json.dumps({"collection": name, **where}, indent=2))


def open_link(directory: Path, *, readonly: bool = False) -> QdrantBackend:
    """The Qdrant collection a link directory names (API key from $QDRANT_API_KEY for a URL)."""
    try:
        link = json.loads((directory / LINK_FILE).read_text(encoding="utf-8"))
        name = link.pop("collection")
    except (OSError, ValueError, KeyError) as exc:
        raise CollectionError(f"cannot read the Qdrant link {directory / LINK_FILE}: {exc}") from None
    if "url" in link:
        link["api_key"] = os.environ.get(API_KEY_ENV)
    return QdrantBackend.open(name, readonly=readonly, **link)


def _reported(method: Callable[..., T]) -> Callable[..., T]:
    """A backend method whose transport and server errors become a `CollectionError` naming the server."""

    @functools.wraps(method)
    def call(self: QdrantBackend, *args: Any, **kwargs: Any) -> T:
        try:
            return method(self, *args, **kwargs)
        except (ResponseHandlingException, UnexpectedResponse) as exc:
            raise CollectionError(
                f"Qdrant at {self.where} failed on collection {self.name!r}: {exc}"
            ) from None

    return call


def connect(
    url: str | None = None,
    path: str | Path | None = None,
    location: str | None = None,
    api_key: str | None = None,
    timeout: int | None = None,
    client: QdrantClient | None = None,
) -> tuple[QdrantClient, str]:
    """A client for one of `url` (a server or cluster), `path` (local mode in a directory), `location`
    (":memory:") or an open `client` (shared: local mode allows one per directory), checked to answer;
    returns it and where it points, for messages."""
    given = [
        (k, v)
        for k, v in (("url", url), ("path", path), ("location", location), ("client", client))
        if v is not None
    ]
    if len(given) != 1:
        raise InvalidInputError("the qdrant backend needs exactly one of url=, path=, location= or client=")
    kind, where = given[0]
    if kind == "client":
        options = client.init_options  # type: ignore[union-attr]
        where = str(
            options.get("url") or options.get("path") or options.get("location") or options.get("host")
        )
    try:
        if kind == "url":
            client = QdrantClient(url=str(url), api_key=api_key, timeout=timeout)
        elif kind == "path":
            client = QdrantClient(path=str(path))
        elif kind == "location":
            client = QdrantClient(location=str(location))
        client.get_collections()  # type: ignore[union-attr]
    except (*CLIENT_ERRORS, RuntimeError, OSError) as exc:  # RuntimeError: local mode's directory lock
        raise CollectionError(f"cannot reach Qdrant at {where}: {exc}") from None
    return client, str(where)  # type: ignore[return-value]


#: `colbert_dtype` -> the quantization of the `colbert` multivector (float16: none).
COLBERT_QUANTIZATION: dict[str, models.QuantizationConfig] = {
    "int8": models.ScalarQuantization(
        scalar=models.ScalarQuantizationConfig(type=models.ScalarType.INT8, always_ram=True)
    ),
    **{
        dtype: models.BinaryQuantization(
            binary=models.BinaryQuantizationConfig(
                always_ram=True,
                encoding=encoding,
                query_encoding=models.BinaryQuantizationQueryEncoding.SCALAR8BITS,
            )
        )
        for dtype, encoding in (
            ("2bit", models.BinaryQuantizationEncoding.TWO_BITS),
            ("binary", models.BinaryQuantizationEncoding.ONE_BIT),
        )
    },
}


def _vectors_config(config: CollectionConfig, quantization: bool) -> dict[str, models.VectorParams]:
    vectors = {}
    hnsw = config.hnsw_params
    if "dense" in config.outputs:
        vectors["dense"] = models.VectorParams(
            size=config.dim,
            distance=models.Distance.COSINE,
            hnsw_config=models.HnswConfigDiff(m=hnsw.m, ef_construct=hnsw.ef_construction),
            quantization_config=models.ScalarQuantization(
                scalar=models.ScalarQuantizationConfig(type=models.ScalarType.INT8, always_ram=True)
            )
            if quantization
            else None,
        )
    if "colbert" in config.outputs:
        vectors["colbert"] = models.VectorParams(
            size=config.colbert_dim,
            distance=models.Distance.DOT,
            multivector_config=models.MultiVectorConfig(comparator=models.MultiVectorComparator.MAX_SIM),
            hnsw_config=models.HnswConfigDiff(m=0),
            datatype=models.Datatype.FLOAT16,
            quantization_config=COLBERT_QUANTIZATION.get(config.colbert_dtype),
        )
    return vectors


class QdrantBackend:
    """A collection in Qdrant (see the module docstring)."""

    def __init__(
        self, client: QdrantClient, name: str, where: str, *, readonly: bool = False, owns_client: bool = True
    ) -> None:
        """Wrap the existing collection `name` (use `QdrantBackend.open` / `create`); refuses one that is not
        an m3search collection or whose vectors do not match its config."""
        self.client = client
        self.name = name
        self.where = where
        self.location = f"{where} collection {name!r}"
        self.readonly = readonly
        self._owns_client = owns_client
        try:
            info = client.get_collection(name)
        except CLIENT_ERRORS as exc:
            if not client.collection_exists(name):
                raise CollectionNotFoundError(f"no collection {name!r} in Qdrant at {where}") from None
            raise CollectionError(f"cannot read collection {name!r} from Qdrant at {where}: {exc}") from None
        meta = (info.config.metadata or {}).get(CONFIG_KEY)
        if not isinstance(meta, Mapping) or "config" not in meta:
            raise CollectionError(
                f"Qdrant collection {name!r} at {where} was not created by m3search (its metadata has no "
                f"{CONFIG_KEY!r} config); refusing to use it"
            )
        self.config = CollectionConfig(**meta["config"])
        self._check_schema(info.config.params)
        self._stats = ServerIdf(**meta.get("bm25", {})) if self.config.sparse_source == "bm25" else None
        #: qdrant-client's local mode (a Python engine that always searches exactly), not a server.
        self._local = bool(client.init_options.get("path") or client.init_options.get("location"))

    @classmethod
    def create(
        cls,
        name: str,
        config: CollectionConfig,
        *,
        shards: int | None = None,
        replicas: int | None = None,
        write_consistency: int | None = None,
        on_disk: bool = False,
        **where: Any,
    ) -> QdrantBackend:
        """Create the Qdrant collection `name` for `config` (`where`: `connect`'s arguments). `shards`,
        `replicas` and `write_consistency` are Qdrant's shard_number, replication_factor and
        write_consistency_factor; `on_disk` keeps vectors and payload on disk (memory-mapped)."""
        client, place = connect(**where)
        if client.collection_exists(name):
            raise CollectionExistsError(f"a collection {name!r} already exists in Qdrant at {place}")
        sparse = {
            "sparse": models.SparseVectorParams(
                modifier=models.Modifier.IDF if config.sparse_source == "bm25" else None
            )
        }
        vectors = _vectors_config(config, config.dense_index == "hnsw-sq8")
        if on_disk:
            for params in vectors.values():
                params.on_disk = True
        meta: dict[str, Any] = {"config": asdict(config)}
        if config.sparse_source == "bm25":
            meta["bm25"] = {"n_docs": 0, "total_len": 0}
        client.create_collection(
            name,
            vectors_config=vectors,
            sparse_vectors_config=sparse if "sparse" in config.outputs else None,
            shard_number=shards,
            replication_factor=replicas,
            write_consistency_factor=write_consistency,
            on_disk_payload=on_disk or None,
            metadata={CONFIG_KEY: meta},
        )
        if "dense" in config.outputs and config.image_encoder:
            client.create_payload_index(name, KIND_KEY, models.PayloadSchemaType.KEYWORD, wait=True)
        return cls(client, name, place, owns_client="client" not in where)

    @classmethod
    def open(cls, name: str, *, readonly: bool = False, **where: Any) -> QdrantBackend:
        """Open the m3search collection `name` in Qdrant (`where`: `connect`'s arguments)."""
        client, place = connect(**where)
        return cls(client, name, place, readonly=readonly, owns_client="client" not in where)

    def _check_schema(self, params: models.CollectionParams) -> None:
        """Refuse a collection whose vectors are not what its config says (made or changed by another tool)."""
        problems = []
        vectors = params.vectors if isinstance(params.vectors, Mapping) else {}
        if not isinstance(params.vectors, Mapping) and params.vectors is not None:
            problems.append("it has one unnamed vector; m3search uses named vectors dense and colbert")
        problems += schema_problems(
            self.config,
            {name: (v.size, v.multivector_config is not None) for name, v in vectors.items()},
            params.sparse_vectors or {},
        )
        if problems:
            raise CollectionError(
                f"Qdrant collection {self.name!r} does not match its m3search config: {'; '.join(problems)}"
            )

    def close(self) -> None:
        """Close the client if it was opened here (local mode releases its directory)."""
        if self._owns_client:
            self.client.close()

    def bm25_stats(self) -> BM25Stats | None:
        """The BM25 statistics of the last refresh (IDF applied by the server)."""
        return self._stats

    @_reported
    def refresh(self) -> int:
        """Re-read the average document length other writers may have changed (BM25 collections); 0: nothing
        beside the collection to re-read."""
        if self._stats is not None:
            info = self.client.get_collection(self.name)
            bm25 = (info.config.metadata or {}).get(CONFIG_KEY, {}).get("bm25", {})
            self._stats.n_docs, self._stats.total_len = bm25.get("n_docs", 0), bm25.get("total_len", 0)
        return 0

    def write_beside(self, save: Callable[[], None]) -> None:
        """Run `save` unless opened read-only."""
        self.writable()
        save()

    # ---- writing ---------------------------------------------------------------------------------------

    def writable(self) -> None:
        """Refuse writes to a collection opened read-only."""
        if self.readonly:
            raise CollectionError(f"collection {self.location} is open read-only")

    @_reported
    def write(self, batch: PreparedBatch) -> int:
        """Upsert the batch's points (idempotent: same ids, same points), each request acknowledged by Qdrant
        only once applied (`wait=True`); BM25 weights use the average length after the batch."""
        self.writable()
        docs = batch.docs
        if self._stats is not None:
            self.refresh()
            found = self.client.retrieve(self.name, [point_id(d.id) for d in docs], with_payload=["bm25_len"])
            stats = reweigh(
                batch, self._stats, [n for p in found if (n := payload_length(p.payload)) is not None]
            )
        points = [
            models.PointStruct(
                id=point_id(d.id),
                vector=point_vectors(d, self.config.outputs, self._sparse),
                payload=point_payload(d, c, batch.thumbnails.get(d.id)),
            )
            for d, c in zip(docs, batch.counts)
        ]
        for start in range(0, len(points), UPSERT_BATCH):
            self.client.upsert(self.name, points[start : start + UPSERT_BATCH], wait=True)
        if self._stats is not None:
            self._save_stats(stats)
        return len(docs)

    @staticmethod
    def _sparse(indices: list[int], values: list[float]) -> models.SparseVector:
        return models.SparseVector(indices=indices, values=values)

    def _save_stats(self, stats: BM25Stats) -> None:
        """Record the collection's BM25 document count and total length in its metadata."""
        meta = {"config": asdict(self.config), "bm25": {"n_docs": stats.n_docs, "total_len": stats.total_len}}
        self.client.update_collection(self.name, metadata={CONFIG_KEY: meta})
        self._stats.n_docs, self._stats.total_len = stats.n_docs, stats.total_len  # type: ignore[union-attr]

    @_reported
    def delete(self, ids: Sequence[str]) -> int:
        """Delete the points of `ids` (acknowledged once applied); returns how many existed."""
        self.writable()
        found = self.client.retrieve(
            self.name,
            [point_id(i) for i in ids],
            with_payload=["bm25_len"] if self._stats is not None else False,
        )
        if not found:
            return 0
        self.client.delete(self.name, models.PointIdsList(points=[p.id for p in found]), wait=True)
        if self._stats is not None:
            self.refresh()
            old = [n for p in found if (n := payload_length(p.payload)) is not None]
            self._save_stats(stats_after(self._stats, old, []))
        return len(found)

    def flush(self) -> None:
        """Nothing to do: Qdrant indexes in the background and searches unindexed points exactly meanwhile."""

    def compact(self) -> None:
        """Nothing to do: Qdrant's optimizers vacuum deleted points themselves."""

    # ---- reading ---------------------------------------------------------------------------------------

    @_reported
    def count(self) -> int:
        """Number of points (exact count)."""
        return self.client.count(self.name, exact=True).count

    def search_files(self) -> list[Path]:
        """Nothing: the engine keeps what it searches in its own memory."""
        return []

    @_reported
    def approximate_count(self) -> int:
        """The server's estimate (no pass over the points)."""
        return self.client.count(self.name, exact=False).count

    @_reported
    def ids(self) -> list[str]:
        """Every document id (scrolled from the points' payloads)."""
        out: list[str] = []
        offset = None
        while True:
            points, offset = self.client.scroll(
                self.name, limit=1024, offset=offset, with_payload=["id"], with_vectors=False
            )
            out.extend(str(p.payload["id"]) for p in points if p.payload)
            if offset is None:
                return out

    @_reported
    def get(self, ids: Sequence[str]) -> list[Document | None]:
        """The stored documents for `ids`, in order; None where unknown."""
        found = {
            (p.payload or {}).get("id"): p
            for p in self.client.retrieve(self.name, [point_id(i) for i in ids], with_payload=DOC_FIELDS)
        }
        return [payload_document(found[i].payload or {}, found[i].id) if i in found else None for i in ids]

    @_reported
    def thumbnail(self, reference: str) -> bytes | None:
        """JPEG bytes of a thumbnail by reference (its document's point id)."""
        check_reference(reference)
        found = self.client.retrieve(self.name, [reference], with_payload=["thumbnail"])
        data = found[0].payload.get("thumbnail") if found and found[0].payload else None
        return base64.b64decode(data) if data else None

    def _params(self, spec: ParamsSpec | None) -> models.SearchParams | None:
        """Search parameters from `stage_params`/`exact_params` (none in local mode: it always searches exactly,
        and warns about parameters)."""
        if spec is None or self._local:
            return None
        params, quantization = spec
        return models.SearchParams(
            **params, quantization=models.QuantizationSearchParams(**quantization) if quantization else None
        )

    @_reported
    def search(self, query: QueryVectors, plan: SearchPlan, rank: Ranker) -> list[Hit]:
        """First stages and exact re-scoring on the server (two batched requests), fusion by `rank`."""
        where = to_qdrant(plan.filter) if plan.filter else None

        def run(asks: list[Ask]) -> list[list[tuple[Any, float]]]:
            requests = [
                models.QueryRequest(
                    query=query_vector(query, a.kind, self._sparse),
                    using=a.kind,
                    filter=where
                    if a.ids is None
                    else models.Filter(must=[models.HasIdCondition(has_id=a.ids)]),
                    params=self._params(
                        stage_params(self.config, a, plan.ef_search)
                        if a.ids is None
                        else exact_params(
                            self.config, a.kind, self.config.colbert_dtype in COLBERT_QUANTIZATION
                        )
                    ),
                    limit=a.limit,
                    with_payload=False,
                )
                for a in asks
            ]
            return [
                [(p.id, p.score) for p in r.points]
                for r in self.client.query_batch_points(self.name, requests)
            ]

        return search_points(query, plan, rank, run, self._payloads)

    def _payloads(self, ids: list[Any], keys: list[str]) -> dict[Any, Mapping[str, Any]]:
        return {p.id: p.payload or {} for p in self.client.retrieve(self.name, ids, with_payload=keys)}

    def export(self, batch_size: int) -> Iterator[PreparedBatch]:
        """Every document with its stored vectors, BM25 term counts and thumbnail, `batch_size` at a time,
        in point id order (scroll pages; migration: nothing is encoded again)."""
        offset = None
        while True:
            points, offset = self.client.scroll(
                self.name, limit=batch_size, offset=offset, with_payload=True, with_vectors=True
            )
            batch = exported_batch(self._exported(p) for p in points)
            if batch.docs:
                yield batch
            if offset is None:
                return

    @staticmethod
    def _exported(point: Any) -> Exported:
        vectors = point.vector if isinstance(point.vector, Mapping) else {}
        sparse = vectors.get("sparse")
        return Exported(
            point.id,
            point.payload or {},
            vectors.get("dense"),
            None if sparse is None else (sparse.indices, sparse.values),
            vectors.get("colbert"),
        )

    @_reported
    def verify(self, *, show_progress: bool = False) -> dict[str, Any]:
        """What a client can check (Qdrant checks its own storage): the collection opened and matches its
        config (done on open), and every counted point reads back with its document id."""
        count, read = self.count(), len(self.ids())
        problems = []
        if read != count:
            problems.append(
                CorruptCollectionError(f"Qdrant counts {count} points but {read} read back with an id")
            )
        return {
            "problems": problems,
            "segments": 0,
            "bytes": 0,
            "unchecked": [],
            "checked": f"{read} points read back",
        }

    @_reported
    def stats(self) -> dict[str, Any]:
        """Counts and Qdrant's view of the collection (status, segments, indexed vectors)."""
        info = self.client.get_collection(self.name)
        return {
            "backend": "qdrant",
            "path": self.location,
            "count": self.count(),
            "pending": 0,
            "tombstones": 0,
            "segments": [],
            "disk_bytes": 0,
            "qdrant": {
                "status": str(info.status.value if hasattr(info.status, "value") else info.status),
                "segments_count": info.segments_count,
                "indexed_vectors_count": info.indexed_vectors_count,
                "points_count": info.points_count,
                "shards": info.config.params.shard_number,
                "replicas": info.config.params.replication_factor,
            },
        }


__all__ = ["LINK_FILE", "QdrantBackend", "connect", "open_link", "point_id", "write_link"]
