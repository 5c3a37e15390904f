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
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
from qdrant_client import QdrantClient, models
from qdrant_client.http.exceptions import ResponseHandlingException, UnexpectedResponse

from m3search.encoders.base import OutputKind
from m3search.encoders.bm25 import BM25Stats
from m3search.errors import CollectionError, CollectionExistsError, CollectionNotFoundError, InvalidInputError
from m3search.search.modes import MODE_KINDS, MODE_STAGES
from m3search.search.planner import Candidates, QueryVectors
from m3search.search.results import Hit
from m3search.store.backends.base import LINK_FILE, Ranker, SearchPlan
from m3search.store.backends.qdrant_filters import KIND_KEY, METADATA_KEY, to_qdrant
from m3search.store.bm25 import document_weights, lengths, stats_after
from m3search.store.config import CollectionConfig, atomic_write_text
from m3search.store.documents import Document
from m3search.store.ingest import PreparedBatch

T = TypeVar("T")
#: Namespace of the UUID5 point ids derived from document ids.
ID_NAMESPACE = uuid.UUID("6f1e7a52-3f0c-5d8e-9a4b-6d3c2e1f0a9b")
#: The collection-metadata key holding the m3search config (and BM25 length statistics).
CONFIG_KEY = "m3search"
#: Points per upsert request.
UPSERT_BATCH = 256
#: The payload of a document as `get` and hits read it (not its thumbnail or BM25 length).
DOC_FIELDS = ["id", "kind", "text", METADATA_KEY, "has_thumbnail"]


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


def point_id(doc_id: str) -> str:
    """The stable Qdrant point id of a document id."""
    return str(uuid.uuid5(ID_NAMESPACE, doc_id))


class ServerIdf(BM25Stats):
    """BM25 statistics for a collection whose IDF Qdrant applies (the sparse vector's IDF modifier): query
    weights are the query's term counts, and the average document length comes from the collection."""

    class _Every(dict):
        def __contains__(self, token: object) -> bool:
            return True

    def __init__(self, n_docs: int = 0, total_len: int = 0) -> None:
        super().__init__(n_docs, total_len, ServerIdf._Every())

    def idf(self, token: int) -> float:
        """1: the server multiplies by the IDF."""
        return 1.0


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
        self._quantized = self.config.dense_index == "hnsw-sq8"
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
        cfg, problems = self.config, []
        vectors = params.vectors if isinstance(params.vectors, Mapping) else {}
        if not isinstance(params.vectors, Mapping) and params.vectors is not None:
            problems.append("it has one unnamed vector; m3search uses named vectors dense and colbert")
        for kind, size in (("dense", cfg.dim), ("colbert", cfg.colbert_dim)):
            if kind not in cfg.outputs:
                continue
            found = vectors.get(kind)
            if found is None:
                problems.append(f"it has no vector named {kind!r}")
            elif found.size != size:
                problems.append(f"vector {kind!r} has size {found.size}, the config says {size}")
            elif (kind == "colbert") != (found.multivector_config is not None):
                problems.append(f"vector {kind!r} is {'not ' if kind == 'colbert' else ''}a multivector")
        if "sparse" in cfg.outputs and "sparse" not in (params.sparse_vectors or {}):
            problems.append("it has no sparse vector named 'sparse'")
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
    def refresh(self) -> None:
        """Re-read the average document length other writers may have changed (BM25 collections)."""
        if self._stats is not None:
            info = self.client.get_collection(self.name)
            bm25 = (info.config.metadata or {}).get(CONFIG_KEY, {}).get("bm25", {})
            self._stats.n_docs, self._stats.total_len = bm25.get("n_docs", 0), bm25.get("total_len", 0)

    # ---- writing ---------------------------------------------------------------------------------------

    def _writable(self) -> None:
        if self.readonly:
            raise CollectionError(f"collection {self.location} is open read-only")

    @_reported
    def write(self, batch: PreparedBatch) -> int:
        """Upsert the batch's points (idempotent: same ids, same points), each request acknowledged by Qdrant
        only once applied (`wait=True`); BM25 weights use the average length after the batch."""
        self._writable()
        docs = batch.docs
        if self._stats is not None:
            self.refresh()
            ids = [point_id(d.id) for d in docs]
            old = [
                int(p.payload["bm25_len"])
                for p in self.client.retrieve(self.name, ids, with_payload=["bm25_len"])
                if p.payload and "bm25_len" in p.payload
            ]
            stats = stats_after(self._stats, old, lengths([c for c in batch.counts if c is not None]))
            for doc, counts in zip(docs, batch.counts):
                if counts is not None:
                    doc.sparse = document_weights(batch.bm25, counts, stats)  # type: ignore[arg-type]
        points = [self._point(d, c, batch.thumbnails.get(d.id)) for d, c in zip(docs, batch.counts)]
        for start in range(0, len(points), UPSERT_BATCH):
            self.client.upsert(self.name, points[start : start + UPSERT_BATCH], wait=True)
        if self._stats is not None:
            self._save_stats(stats)
        return len(docs)

    def _point(
        self, doc: Document, counts: Mapping[int, int] | None, thumbnail: bytes | None
    ) -> models.PointStruct:
        vector: dict[str, Any] = {}
        if doc.dense is not None and "dense" in self.config.outputs:
            vector["dense"] = np.asarray(doc.dense, np.float32).tolist()
        if doc.sparse is not None and "sparse" in self.config.outputs:
            ids, weights = doc.sparse
            vector["sparse"] = models.SparseVector(indices=ids.tolist(), values=weights.tolist())
        if doc.colbert is not None and len(doc.colbert) and "colbert" in self.config.outputs:
            vector["colbert"] = np.asarray(doc.colbert, np.float32).tolist()
        payload: dict[str, Any] = {
            "id": doc.id,
            "kind": doc.kind,
            "text": doc.text,
            METADATA_KEY: doc.metadata,
            "has_thumbnail": thumbnail is not None,
        }
        if doc.kind != "text":
            payload[KIND_KEY] = doc.kind
        if thumbnail is not None:
            payload["thumbnail"] = base64.b64encode(thumbnail).decode("ascii")
        if counts is not None:  # the length for the average, the counts for a lossless migration
            payload["bm25_len"] = int(sum(counts.values()))
            payload["bm25_counts"] = {str(t): int(n) for t, n in counts.items()}
        return models.PointStruct(id=point_id(doc.id), vector=vector, payload=payload)

    def _save_stats(self, stats: BM25Stats) -> None:
        """Record the collection's BM25 document count and total length in its metadata."""
        meta = {"config": asdict(self.config), "bm25": {"n_docs": stats.n_docs, "total_len": stats.total_len}}
        self.client.update_collection(self.name, metadata={CONFIG_KEY: meta})
        self._stats.n_docs, self._stats.total_len = stats.n_docs, stats.total_len  # type: ignore[union-attr]

    @_reported
    def delete(self, ids: Sequence[str]) -> int:
        """Delete the points of `ids` (acknowledged once applied); returns how many existed."""
        self._writable()
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
            old = [int(p.payload["bm25_len"]) for p in found if p.payload and "bm25_len" in p.payload]
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
        return [self._document(found[i]) if i in found else None for i in ids]

    @staticmethod
    def _document(point: Any) -> Document:
        p = point.payload
        return Document(
            p["id"],
            p.get("text"),
            p.get(METADATA_KEY) or {},
            kind=p.get("kind", "text"),
            thumbnail=str(point.id) if p.get("has_thumbnail") else None,
        )

    @_reported
    def thumbnail(self, reference: str) -> bytes | None:
        """JPEG bytes of a thumbnail by reference (its document's point id)."""
        try:
            uuid.UUID(reference)
        except ValueError:
            raise InvalidInputError(f"{reference!r} is not a thumbnail reference") from None
        found = self.client.retrieve(self.name, [reference], with_payload=["thumbnail"])
        data = found[0].payload.get("thumbnail") if found and found[0].payload else None
        return base64.b64decode(data) if data else None

    def _params(self, kind: str, ef_search: int | None) -> models.SearchParams | None:
        if kind != "dense" or self._local:  # local mode always searches exactly (and warns about params)
            return None
        return models.SearchParams(
            hnsw_ef=ef_search or self.config.hnsw_params.ef_search,
            exact=self.config.dense_index == "flat",
            # like the local SQ8 graph: fetch `refine` x k by the int8 codes, re-rank them by the float vectors
            quantization=models.QuantizationSearchParams(
                rescore=True, oversampling=float(self.config.hnsw_params.refine)
            )
            if self._quantized
            else None,
        )

    def _exact(self, kind: str) -> models.SearchParams | None:
        """How the candidates' scores are computed: exactly, except ColBERT stored quantized (compressed MaxSim,
        rescored with the float16 vectors when `colbert_recheck` asks)."""
        if kind == "sparse" or self._local:
            return None
        if kind == "colbert" and self.config.colbert_dtype in COLBERT_QUANTIZATION:
            return models.SearchParams(
                exact=True,
                quantization=models.QuantizationSearchParams(rescore=self.config.colbert_recheck > 0),
            )
        return models.SearchParams(
            exact=True, quantization=models.QuantizationSearchParams(ignore=True) if self._quantized else None
        )

    @staticmethod
    def _query(query: QueryVectors, kind: str) -> Any:
        if kind == "dense":
            return np.asarray(query.dense, np.float32).tolist()
        if kind == "sparse":
            ids, weights = query.sparse  # type: ignore[misc]
            return models.SparseVector(indices=np.asarray(ids).tolist(), values=np.asarray(weights).tolist())
        return np.asarray(query.colbert, np.float32).tolist()

    @_reported
    def search(self, query: QueryVectors, plan: SearchPlan, rank: Ranker) -> list[Hit]:
        """First stages and exact re-scoring on the server (two batched requests), fusion by `rank`."""
        where = to_qdrant(plan.filter) if plan.filter else None
        kinds = MODE_KINDS[plan.mode]
        depth = plan.k if plan.mode in ("dense", "sparse") else max(plan.k, plan.candidates)
        no_terms = query.sparse is None or len(query.sparse[0]) == 0
        stages = [s for s in MODE_STAGES[plan.mode] if not (s == "sparse" and no_terms)]
        requests = [
            models.QueryRequest(
                query=self._query(query, s),
                using=s,
                filter=where,
                params=self._params(s, plan.ef_search),
                limit=depth,
                with_payload=False,
            )
            for s in stages
        ]
        results = self.client.query_batch_points(self.name, requests) if requests else []
        point_ids: list[Any] = []
        index: dict[Any, int] = {}
        lists: dict[OutputKind, np.ndarray] = {}
        known: dict[str, dict[int, float]] = {k: {} for k in kinds}
        for stage, result in zip(stages, results):
            order = []
            for p in result.points:
                i = index.setdefault(p.id, len(point_ids))
                if i == len(point_ids):
                    point_ids.append(p.id)
                order.append(i)
                if stage in known:
                    known[stage][i] = p.score
            lists[stage] = np.asarray(order, np.int64)
        if not point_ids:
            return []
        scores = self._rescore(query, kinds, point_ids, known)
        dense_only = None
        if plan.dense_only:
            kinds_of = {
                p.id: (p.payload or {}).get(KIND_KEY)
                for p in self.client.retrieve(self.name, point_ids, with_payload=[KIND_KEY])
            }
            dense_only = np.array([kinds_of.get(pid) == "image" for pid in point_ids])
        picked = rank(Candidates(np.arange(len(point_ids)), lists, scores, dense_only))
        chosen = [point_ids[key] for key, _, _ in picked]
        docs = {p.id: p for p in self.client.retrieve(self.name, chosen, with_payload=DOC_FIELDS)}
        hits = []
        for pid, (_, score, per_kind) in zip(chosen, picked):
            if pid in docs:
                doc = self._document(docs[pid])
                hits.append(Hit(doc.id, score, per_kind, doc.text, doc.metadata, doc.kind, doc.thumbnail))
        return hits

    def _rescore(
        self,
        query: QueryVectors,
        kinds: Sequence[OutputKind],
        point_ids: list[Any],
        known: dict[str, dict[int, float]],
    ) -> dict[OutputKind, np.ndarray]:
        """Each kind's exact score of every candidate: the first stages' where they found it, the rest computed
        by the server over those candidates only (absent from the answer: no such vector, score 0)."""
        requests, asked = [], []
        for kind in kinds:
            missing = [point_ids[i] for i in range(len(point_ids)) if i not in known[kind]]
            empty = (kind == "sparse" and (query.sparse is None or len(query.sparse[0]) == 0)) or (
                kind == "colbert" and (query.colbert is None or len(query.colbert) == 0)
            )
            if missing and not empty:
                requests.append(
                    models.QueryRequest(
                        query=self._query(query, kind),
                        using=kind,
                        filter=models.Filter(must=[models.HasIdCondition(has_id=missing)]),
                        params=self._exact(kind),
                        limit=len(missing),
                        with_payload=False,
                    )
                )
                asked.append(kind)
        results = self.client.query_batch_points(self.name, requests) if requests else []
        position = {pid: i for i, pid in enumerate(point_ids)}
        for kind, result in zip(asked, results):
            for p in result.points:
                known[kind][position[p.id]] = p.score
        scores = {}
        for kind in kinds:
            column = np.zeros(len(point_ids), np.float32)
            for i, s in known[kind].items():
                column[i] = s
            if kind == "colbert" and len(query.colbert):  # type: ignore[arg-type]
                column /= len(query.colbert)  # type: ignore[arg-type]  # MaxSim sum -> bge-m3's mean
            scores[kind] = column
        return scores

    def export(self, batch_size: int) -> Iterator[PreparedBatch]:
        """Every document with its stored vectors, BM25 term counts and thumbnail, `batch_size` at a time,
        in point id order (scroll pages; migration: nothing is encoded again)."""
        offset = None
        while True:
            points, offset = self.client.scroll(
                self.name, limit=batch_size, offset=offset, with_payload=True, with_vectors=True
            )
            docs, counts, thumbnails = [], [], {}
            for p in points:
                doc = self._document(p)
                vectors = p.vector if isinstance(p.vector, Mapping) else {}
                if "dense" in vectors:
                    doc.dense = np.asarray(vectors["dense"], np.float32)
                if "sparse" in vectors:
                    sparse = vectors["sparse"]
                    assert isinstance(sparse, models.SparseVector)
                    doc.sparse = (np.asarray(sparse.indices, np.int64), np.asarray(sparse.values, np.float32))
                if "colbert" in vectors:
                    doc.colbert = np.asarray(vectors["colbert"], np.float32)
                doc.thumbnail = None
                docs.append(doc)
                payload = p.payload or {}
                stored = payload.get("bm25_counts")
                counts.append({int(t): int(n) for t, n in stored.items()} if stored is not None else None)
                if payload.get("thumbnail"):
                    thumbnails[doc.id] = base64.b64decode(payload["thumbnail"])
            if docs:
                yield PreparedBatch(docs, counts, thumbnails)
            if offset is None:
                return

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
