"""The `edge` backend: a collection stored in Qdrant Edge (`qdrant-edge-py`), Qdrant's engine in-process as a
library: no server, a directory like a local collection.

Layout of an edge collection directory:

    config.json      what it stores and how (the m3search config, as a local collection's)
    edge/            the Edge shard (its own config, write-ahead log and segments)
    bm25.json        BM25 collections: the document count and total length behind the average length
    image_encoder/   the image adapter, for collections that hold images
    write.lock       the process lock

The mapping and the search plan are the qdrant backend's (`m3search.store.backends.points`): one point per
document, its id the UUID5 of the document id (the id itself in the payload); dense -> the named vector `dense`
(cosine, HNSW; int8 scalar quantization with rescoring for "hnsw-sq8", exact search for "flat"); sparse -> the
sparse vector `sparse` (BM25 collections: the engine's IDF modifier, document frequencies always current);
ColBERT -> the multivector `colbert` (MAX_SIM, float16, no HNSW: re-rank only; `colbert_dtype` -> multivector
quantization as on Qdrant); kind, text, metadata, thumbnail -> payload. Search: first stages in one batch, the
candidates' missing scores and MaxSim computed by the engine over their ids only, fused by `Collection`.

Writes: a batch is one update (one write-ahead-log entry: applied whole or not at all), flushed to disk before
`write` returns; then the engine's optimizers run (indexing full segments, vacuuming deleted points), as a
Qdrant server does in the background. They keep segments below Qdrant's size limit (256 MB of vectors per CPU:
~10 segments at 1M 1024-d documents on 2 cores, each with its own HNSW graph that every dense query walks);
`compact` merges them all into one, as a local collection's compaction does. Qdrant Edge lets one process open
a shard at a time, readers included: the lock is taken when the collection is opened, read-only or not.
"""

from __future__ import annotations

import base64
import json
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import qdrant_edge as qe

from m3search.encoders.bm25 import BM25Stats
from m3search.errors import (
    CollectionClosedError,
    CollectionError,
    CollectionLockedError,
    CollectionNotFoundError,
    CorruptCollectionError,
)
from m3search.search.planner import QueryVectors
from m3search.search.results import Hit
from m3search.store.backends.base import EDGE_DIR, Ranker, SearchPlan, is_edge
from m3search.store.backends.payload_filters import translate
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
from m3search.store.bm25 import stats_after
from m3search.store.config import CONFIG_FILE, CollectionConfig, atomic_write_text, new_directory
from m3search.store.documents import Document
from m3search.store.filters import Filter
from m3search.store.ingest import PreparedBatch
from m3search.store.lock import WriterLock

#: BM25 statistics beside the shard: {"n_docs", "total_len", "dirty"}; dirty while a write is under way (a
#: crash there leaves it so, and the next open counts the lengths again from the points).
BM25_FILE = "bm25.json"
#: Points per scroll page when reading ids and lengths.
SCROLL_PAGE = 1024
#: What a refused open suggests: the engine admits one process per shard.
ONE_PROCESS = "Qdrant Edge opens a shard in one process at a time, readers included: close it there first"

#: The largest segment the optimizers build while writing (KB of vectors; None: Qdrant's default, 256 MB per
#: CPU). `compact` lifts it to merge every segment into one.
WRITE_SEGMENT_KB: int | None = None
#: The size limit while compacting: more than any shard holds.
MERGE_ALL_KB = 1 << 40

#: `colbert_dtype` -> the quantization of the `colbert` multivector (float16: none), as on the qdrant backend.
COLBERT_QUANTIZATION: dict[str, Any] = {
    "int8": qe.ScalarQuantizationConfig(type=qe.ScalarType.Int8, always_ram=True),
    **{
        dtype: qe.BinaryQuantizationConfig(
            always_ram=True,
            encoding=encoding,
            query_encoding=qe.BinaryQuantizationQueryEncoding.Scalar8Bits,
        )
        for dtype, encoding in (
            ("2bit", qe.BinaryQuantizationEncoding.TwoBits),
            ("binary", qe.BinaryQuantizationEncoding.OneBit),
        )
    },
}


def _shard_config(config: CollectionConfig, *, merge_all: bool = False) -> qe.EdgeConfig:
    """The Edge shard's vectors and optimizers for `config` (see the module docstring). Segments get their HNSW
    graph from `hnsw.min_rows` dense vectors, as local segments do (the engine counts kilobytes of vectors);
    `merge_all`: the optimizers merge every segment into one (`compact`)."""
    hnsw = config.hnsw_params
    threshold_kb = max(1, hnsw.min_rows * (config.dim or 0) * 4 // 1024)
    vectors = {}
    if "dense" in config.outputs:
        vectors["dense"] = qe.EdgeVectorParams(
            size=config.dim,  # type: ignore[arg-type]
            distance=qe.Distance.Cosine,
            hnsw_config=qe.HnswIndexConfig(
                m=hnsw.m, ef_construct=hnsw.ef_construction, full_scan_threshold=threshold_kb
            ),
            quantization_config=qe.ScalarQuantizationConfig(type=qe.ScalarType.Int8, always_ram=True)
            if config.dense_index == "hnsw-sq8"
            else None,
        )
    if "colbert" in config.outputs:
        vectors["colbert"] = qe.EdgeVectorParams(
            size=config.colbert_dim,  # type: ignore[arg-type]
            distance=qe.Distance.Dot,
            multivector_config=qe.MultiVectorConfig(qe.MultiVectorComparator.MaxSim),
            datatype=qe.VectorStorageDatatype.Float16,
            hnsw_config=qe.HnswIndexConfig(
                m=0, ef_construct=hnsw.ef_construction, full_scan_threshold=threshold_kb
            ),
            quantization_config=COLBERT_QUANTIZATION.get(config.colbert_dtype),
        )
    sparse = None
    if "sparse" in config.outputs:
        idf = qe.Modifier.Idf if config.sparse_source == "bm25" else None
        sparse = {"sparse": qe.EdgeSparseVectorParams(modifier=idf)}
    return qe.EdgeConfig(
        vectors=vectors or None,
        sparse_vectors=sparse,
        optimizers=qe.EdgeOptimizersConfig(
            indexing_threshold=threshold_kb,
            default_segment_number=1 if merge_all else None,
            max_segment_size=MERGE_ALL_KB if merge_all else WRITE_SEGMENT_KB,
        ),
    )


class _Conditions:
    """Qdrant Edge's filter classes for `payload_filters.translate`."""

    backend = "edge"

    def all_of(self, must: list[Any] | None = None, must_not: list[Any] | None = None) -> Any:
        return qe.Filter(must=must, must_not=must_not)

    def any_of(self, should: list[Any]) -> Any:
        return qe.Filter(should=should)

    def match(self, key: str, value: bool | str) -> Any:
        # the bindings read a Python bool as the integer 0 or 1 (bool is an int); numpy's bool stays a bool
        exact: Any = np.bool_(value) if isinstance(value, bool) else value
        return qe.FieldCondition(key=key, match=qe.MatchValue(exact))

    def match_any(self, key: str, values: list[str]) -> Any:
        return qe.FieldCondition(key=key, match=qe.MatchAny(values))

    def range(self, key: str, **bounds: float) -> Any:
        return qe.FieldCondition(key=key, range=qe.RangeFloat(**bounds))

    def is_empty(self, key: str) -> Any:
        return qe.IsEmptyCondition(key)

    def is_null(self, key: str) -> Any:
        return qe.IsNullCondition(key)


def to_edge(spec: Filter) -> qe.Filter:
    """The Qdrant Edge filter of an m3search filter."""
    return translate(spec, _Conditions())


def _sparse(indices: list[int], values: list[float]) -> qe.SparseVector:
    return qe.SparseVector(indices, values)


def _params(spec: ParamsSpec | None, live_idf: bool) -> qe.SearchParams | None:
    """Search parameters from `stage_params`/`exact_params`; `live_idf`: BM25's IDF over the points that
    exist (the engine's default statistics still count deleted points until their segment is vacuumed)."""
    if live_idf:
        return qe.SearchParams(idf=qe.IdfParams(corpus=qe.Filter(must=[])))
    if spec is None:
        return None
    params, quantization = spec
    return qe.SearchParams(
        **params, quantization=qe.QuantizationSearchParams(**quantization) if quantization else None
    )


class EdgeBackend:
    """A collection in a Qdrant Edge shard (see the module docstring)."""

    def __init__(self, path: Path, *, readonly: bool = False) -> None:
        """Open the edge collection directory at `path` (taking the process lock); refuses a shard whose
        vectors do not match the config."""
        self.path = Path(path)
        if not is_edge(self.path):
            raise CollectionNotFoundError(
                f"no edge collection at {self.path} (no {CONFIG_FILE} and {EDGE_DIR}/)"
            )
        self.config = CollectionConfig.load(self.path)
        self.location = str(self.path)
        self.readonly = readonly
        self._mutex = threading.RLock()
        self._closed = False
        self._lock = WriterLock(self.path, ONE_PROCESS)
        self._lock.acquire()
        try:
            self._check_schema()
            self._shard = self._load()
        except BaseException:
            self._lock.release()
            raise
        try:
            self._stats = self._load_stats() if self.config.sparse_source == "bm25" else None
        except BaseException:
            self.close()
            raise

    @staticmethod
    def create(path: Path, config: CollectionConfig, install: Callable[[Path], None] | None = None) -> None:
        """Make an empty edge collection directory at `path`, whole or not at all; `install(tmp)` adds files
        (the image encoder) before it appears."""

        def fill(directory: Path) -> None:
            if install is not None:
                install(directory)
            config.save(directory)
            shard = qe.EdgeShard.create(str(directory / EDGE_DIR), _shard_config(config))
            if "dense" in config.outputs and config.image_encoder:  # image searches filter by kind
                shard.update(qe.UpdateOperation.create_field_index(KIND_KEY, qe.PayloadSchemaType.Keyword))
            shard.close()
            if config.sparse_source == "bm25":
                _save_stats(directory, BM25Stats(), dirty=False)

        new_directory(path, fill)

    def _load(self, *, merge_all: bool = False) -> qe.EdgeShard:
        """Open the shard; a writer also sets its optimizers (for writing, or `merge_all` for `compact`), which
        restores the writing ones after a crash mid-compaction."""
        config = None if self.readonly else _shard_config(self.config, merge_all=merge_all)
        try:
            return qe.EdgeShard.load(str(self.path / EDGE_DIR), config)
        except Exception as exc:  # noqa: BLE001 - the bindings raise plain exceptions
            if "WouldBlock" in str(exc):
                raise CollectionLockedError(
                    f"collection {self.path} is open elsewhere; {ONE_PROCESS}"
                ) from None
            raise CollectionError(f"cannot open the Qdrant Edge shard of {self.path}: {exc}") from None

    def _check_schema(self) -> None:
        """Refuse a shard whose vectors are not what the config says (changed by another tool)."""
        where = self.path / EDGE_DIR / "edge_config.json"
        try:
            stored = json.loads(where.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise CorruptCollectionError(
                f"collection {self.path.name!r} is damaged: {EDGE_DIR}/edge_config.json cannot be read ({exc})",
                f"{EDGE_DIR}/edge_config.json",
            ) from None
        dense = {
            name: (int(v.get("size", 0)), v.get("multivector_config") is not None)
            for name, v in (stored.get("vectors") or {}).items()
        }
        problems = schema_problems(self.config, dense, stored.get("sparse_vectors") or {})
        if problems:
            raise CollectionError(
                f"the Qdrant Edge shard of {self.path} does not match its m3search config: {'; '.join(problems)}"
            )

    def close(self) -> None:
        """Close the shard (flushing it) and release the process lock; later calls raise
        `CollectionClosedError`."""
        with self._mutex:
            if not self._closed:
                self._closed = True
                self._shard.close()
                self._lock.release()

    def _open(self) -> qe.EdgeShard:
        if self._closed:
            raise CollectionClosedError(f"collection {self.path} is closed")
        return self._shard

    # ---- BM25 statistics --------------------------------------------------------------------------------

    def _load_stats(self) -> ServerIdf:
        """The recorded statistics, or, after a crash mid-write, the lengths counted again from the points."""
        try:
            data = json.loads((self.path / BM25_FILE).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            data = {"dirty": True}
        if not data.get("dirty"):
            return ServerIdf(int(data["n_docs"]), int(data["total_len"]))
        found = [n for p in self._scroll(["bm25_len"]) if (n := payload_length(p.payload)) is not None]
        stats = ServerIdf(len(found), sum(found))
        if not self.readonly:
            _save_stats(self.path, stats, dirty=False)
        return stats

    def bm25_stats(self) -> BM25Stats | None:
        """The BM25 statistics (IDF applied by the engine)."""
        return self._stats

    def _settle(self, stats: BM25Stats | None) -> None:
        """Record the statistics after a write (clean)."""
        if stats is not None and self._stats is not None:
            _save_stats(self.path, stats, dirty=False)
            self._stats.n_docs, self._stats.total_len = stats.n_docs, stats.total_len

    # ---- writing ---------------------------------------------------------------------------------------

    def writable(self) -> None:
        """Refuse writes to a collection opened read-only (or closed)."""
        self._open()
        if self.readonly:
            raise CollectionError(f"collection {self.path} is open read-only")

    def _lengths(self, ids: list[Any]) -> tuple[list[Any], list[int]]:
        """The stored points among `ids` (point ids) and their BM25 lengths."""
        found = self._shard.retrieve(ids, ["bm25_len"], False)
        return [p.id for p in found], [n for p in found if (n := payload_length(p.payload)) is not None]

    def _update(self, operation: qe.UpdateOperation) -> None:
        """Apply one update durably (in the flushed write-ahead log) and let the optimizers run."""
        if self._stats is not None:
            _save_stats(self.path, self._stats, dirty=True)
        self._shard.update(operation)
        self._shard.flush()
        self._shard.optimize()

    def write(self, batch: PreparedBatch) -> int:
        """Upsert the batch's points as one update (idempotent: same ids, same points), durable on return;
        BM25 weights use the average length after the batch."""
        with self._mutex:
            self.writable()
            docs = batch.docs
            stats = None
            if self._stats is not None:
                stats = reweigh(batch, self._stats, self._lengths([point_id(d.id) for d in docs])[1])
            points = [
                qe.Point(
                    point_id(d.id),
                    point_vectors(d, self.config.outputs, _sparse),
                    point_payload(d, c, batch.thumbnails.get(d.id)),
                )
                for d, c in zip(docs, batch.counts)
            ]
            self._update(qe.UpdateOperation.upsert_points(points))
            self._settle(stats)
            return len(docs)

    def delete(self, ids: Sequence[str]) -> int:
        """Delete the points of `ids` (durable on return); returns how many existed."""
        with self._mutex:
            self.writable()
            found, old = self._lengths([point_id(i) for i in ids])
            if not found:
                return 0
            self._update(qe.UpdateOperation.delete_points(found))
            self._settle(None if self._stats is None else stats_after(self._stats, old, []))
            return len(found)

    def flush(self) -> None:
        """Run the engine's optimizers (index full segments); writes do it too."""
        with self._mutex:
            self.writable()
            self._shard.optimize()

    def compact(self) -> None:
        """Merge every segment into one (one HNSW graph for a dense query to walk, deleted points dropped), then
        reopen the shard with the writing optimizers, so later writes make small segments again."""
        with self._mutex:
            self.writable()
            if self._shard.info().segments_count <= 1:
                self._shard.optimize()
                return
            self._shard.close()  # the merging optimizers index and vacuum too: no optimize before them
            merging = None
            try:
                merging = self._load(merge_all=True)
                merging.optimize()
            finally:
                if merging is not None:
                    merging.close()
                self._shard = self._load()

    def refresh(self) -> int:
        """Nothing to do: no other process has the shard open."""
        return 0

    def write_beside(self, save: Callable[[], None]) -> None:
        """Run `save` unless opened read-only (no other process has the collection open to see it)."""
        self.writable()
        save()

    # ---- reading ---------------------------------------------------------------------------------------

    def count(self) -> int:
        """Number of points (exact count)."""
        with self._mutex:
            return int(self._open().count(qe.CountRequest(exact=True)))

    def search_files(self) -> list[Path]:
        """Nothing: the engine keeps what it searches in its own memory."""
        return []

    def approximate_count(self) -> int:
        """The shard's own tally of its segments' points (microseconds; exact while no optimizer is moving
        points between segments, which only writes run here)."""
        with self._mutex:
            return int(self._open().info().points_count)

    def _scroll(
        self, payload: list[str] | bool, vectors: bool = False, page: int = SCROLL_PAGE
    ) -> Iterator[Any]:
        """Every point (records with `payload` keys and optionally vectors), one page at a time."""
        offset = None
        while True:
            with self._mutex:
                records, offset = self._open().scroll(
                    qe.ScrollRequest(offset=offset, limit=page, with_payload=payload, with_vector=vectors)
                )
            yield from records
            if offset is None:
                return

    def ids(self) -> list[str]:
        """Every document id (scrolled from the points' payloads)."""
        return [str(p.payload["id"]) for p in self._scroll(["id"]) if p.payload]

    def get(self, ids: Sequence[str]) -> list[Document | None]:
        """The stored documents for `ids`, in order; None where unknown."""
        with self._mutex:
            found = {
                (p.payload or {}).get("id"): p
                for p in self._open().retrieve([point_id(i) for i in ids], DOC_FIELDS, False)
            }
        return [payload_document(found[i].payload or {}, found[i].id) if i in found else None for i in ids]

    def thumbnail(self, reference: str) -> bytes | None:
        """JPEG bytes of a thumbnail by reference (its document's point id)."""
        check_reference(reference)
        with self._mutex:
            found = self._open().retrieve([reference], ["thumbnail"], False)
        data = found[0].payload.get("thumbnail") if found and found[0].payload else None
        return base64.b64decode(data) if data else None

    def _payloads(self, ids: list[Any], keys: list[str]) -> dict[Any, Mapping[str, Any]]:
        return {p.id: p.payload or {} for p in self._shard.retrieve(ids, keys, False)}

    def search(self, query: QueryVectors, plan: SearchPlan, rank: Ranker) -> list[Hit]:
        """First stages and exact re-scoring by the engine (two batches), fusion by `rank`."""
        where = to_edge(plan.filter) if plan.filter else None
        compressed = self.config.colbert_dtype in COLBERT_QUANTIZATION

        def run(asks: list[Ask]) -> list[list[tuple[Any, float]]]:
            requests = [
                qe.QueryRequest(
                    limit=a.limit,
                    query=qe.Query.Nearest(query_vector(query, a.kind, _sparse), using=a.kind),
                    filter=where if a.ids is None else qe.Filter(must=[qe.HasIdCondition(set(a.ids))]),
                    params=_params(
                        stage_params(self.config, a, plan.ef_search)
                        if a.ids is None
                        else exact_params(self.config, a.kind, compressed),
                        a.kind == "sparse" and self._stats is not None,
                    ),
                    with_payload=False,
                    with_vector=False,
                )
                for a in asks
            ]
            return [
                [(p.id, p.score) for p in found]
                for found in self._shard.query_batch(qe.QueryBatchRequest(requests))
            ]

        with self._mutex:
            self._open()
            return search_points(query, plan, rank, run, self._payloads)

    def export(self, batch_size: int) -> Iterator[PreparedBatch]:
        """Every document with its stored vectors, BM25 term counts and thumbnail, `batch_size` at a time, in
        point id order (migration: nothing is encoded again)."""
        page: list[Exported] = []
        for p in self._scroll(True, vectors=True, page=batch_size):
            vectors = p.vector if isinstance(p.vector, Mapping) else {}
            sparse = vectors.get("sparse")
            page.append(
                Exported(
                    p.id,
                    p.payload or {},
                    vectors.get("dense"),
                    None if sparse is None else (sparse.indices, sparse.values),
                    vectors.get("colbert"),
                )
            )
            if len(page) == batch_size:
                yield exported_batch(page)
                page = []
        if page:
            yield exported_batch(page)

    def stats(self) -> dict[str, Any]:
        """Counts, disk use and the engine's view of the shard (segments, indexed vectors)."""
        with self._mutex:
            info = self._open().info()
            return {
                "backend": "edge",
                "path": str(self.path),
                "count": self.count(),
                "pending": 0,
                "tombstones": 0,
                "segments": [],
                # allocated, not apparent, sizes: the engine preallocates its files sparsely (32 MiB each)
                "disk_bytes": sum(f.stat().st_blocks * 512 for f in self.path.rglob("*") if f.is_file()),
                "edge": {
                    "segments_count": info.segments_count,
                    "indexed_vectors_count": info.indexed_vectors_count,
                    "points_count": info.points_count,
                },
            }

    def verify(self, *, show_progress: bool = False) -> dict[str, Any]:
        """What can be checked from outside the engine (`m3search index verify`): the config and shard opened
        and agree (done on open), every point is read back with its document id, and the BM25 statistics
        equal the lengths the points record."""
        problems = []
        with self._mutex:
            count = self.count()
        read = 0
        lengths = []
        for p in self._scroll(["id", "bm25_len"]):
            read += bool(p.payload and "id" in p.payload)
            if (n := payload_length(p.payload)) is not None:
                lengths.append(n)
        if read != count:
            problems.append(
                CorruptCollectionError(
                    f"the shard counts {count} points but {read} read back with an id", EDGE_DIR
                )
            )
        if self._stats is not None and (self._stats.n_docs, self._stats.total_len) != (
            len(lengths),
            sum(lengths),
        ):
            problems.append(
                CorruptCollectionError(
                    f"{BM25_FILE} records {self._stats.n_docs} documents of {self._stats.total_len} tokens, the "
                    f"points {len(lengths)} of {sum(lengths)}",
                    BM25_FILE,
                )
            )
        return {
            "problems": problems,
            "segments": self._shard.info().segments_count,
            "bytes": 0,
            "unchecked": [],
            "checked": f"{count} points read back, config and vectors agree",
        }


def _save_stats(directory: Path, stats: BM25Stats, *, dirty: bool) -> None:
    atomic_write_text(
        directory / BM25_FILE,
        json.dumps({"n_docs": stats.n_docs, "total_len": stats.total_len, "dirty": dirty}),
    )


__all__ = ["EdgeBackend", "to_edge"]
