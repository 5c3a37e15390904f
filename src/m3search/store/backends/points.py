"""What the backends on Qdrant's engine share (`qdrant`: qdrant-client, `edge`: Qdrant Edge in-process), with
no engine imported: a document as a point (UUID5 id, the id itself and the rest in the payload), BM25 weights
beside the engine's IDF modifier, the schema check, exported batches, and the search plan (first stages, then
the candidates' missing per-mode scores computed by the engine over their ids only, ranked by the facade)."""

from __future__ import annotations

import base64
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from m3search.encoders.base import OutputKind
from m3search.encoders.bm25 import BM25Stats
from m3search.errors import InvalidInputError
from m3search.search.modes import MODE_KINDS, MODE_STAGES
from m3search.search.planner import Candidates, QueryVectors, scored_early, stage_depth
from m3search.search.results import Hit
from m3search.store.backends.base import Ranker, SearchPlan
from m3search.store.bm25 import document_weights, lengths, stats_after
from m3search.store.config import CollectionConfig
from m3search.store.documents import Document
from m3search.store.ingest import PreparedBatch

#: Namespace of the UUID5 point ids derived from document ids.
ID_NAMESPACE = uuid.UUID("6f1e7a52-3f0c-5d8e-9a4b-6d3c2e1f0a9b")
#: The payload key of a non-text document's kind (text documents have none, as in the local index).
KIND_KEY = "m3_kind"
METADATA_KEY = "metadata"
#: The payload of a document as `get` and hits read it (not its thumbnail or BM25 length).
DOC_FIELDS = ["id", "kind", "text", METADATA_KEY, "has_thumbnail"]


def point_id(doc_id: str) -> str:
    """The stable point id of a document id."""
    return str(uuid.uuid5(ID_NAMESPACE, doc_id))


def check_reference(reference: str) -> None:
    """Refuse a thumbnail reference that is not a point id."""
    try:
        uuid.UUID(reference)
    except ValueError:
        raise InvalidInputError(f"{reference!r} is not a thumbnail reference") from None


class ServerIdf(BM25Stats):
    """BM25 statistics for a collection whose IDF the engine applies (the sparse vector's IDF modifier): query
    weights are the query's term counts, and the average document length comes from the collection."""

    class _Every(dict):
        def __contains__(self, token: object) -> bool:
            return True

    def __init__(self, n_docs: int = 0, total_len: int = 0) -> None:
        super().__init__(n_docs, total_len, ServerIdf._Every())

    def idf(self, token: int) -> float:
        """1: the engine multiplies by the IDF."""
        return 1.0


def reweigh(batch: PreparedBatch, stats: BM25Stats, replaced: Sequence[int]) -> BM25Stats:
    """Give the batch's BM25 documents their weights under the statistics after the batch (`replaced`: the
    lengths of the stored documents it replaces), which it returns."""
    after = stats_after(stats, list(replaced), lengths([c for c in batch.counts if c is not None]))
    for doc, counts in zip(batch.docs, batch.counts):
        if counts is not None:
            doc.sparse = document_weights(batch.bm25, counts, after)  # type: ignore[arg-type]
    return after


def point_vectors(
    doc: Document, outputs: Sequence[str], sparse: Callable[[list[int], list[float]], Any]
) -> dict[str, Any]:
    """A document's named vectors as the engine takes them (`sparse(indices, values)`: its sparse vector)."""
    vector: dict[str, Any] = {}
    if doc.dense is not None and "dense" in outputs:
        vector["dense"] = np.asarray(doc.dense, np.float32).tolist()
    if doc.sparse is not None and "sparse" in outputs:
        ids, weights = doc.sparse
        vector["sparse"] = sparse(np.asarray(ids).tolist(), np.asarray(weights).tolist())
    if doc.colbert is not None and len(doc.colbert) and "colbert" in outputs:
        vector["colbert"] = np.asarray(doc.colbert, np.float32).tolist()
    return vector


def query_vector(query: QueryVectors, kind: str, sparse: Callable[[list[int], list[float]], Any]) -> Any:
    """The query's vector of `kind` as the engine takes it (`sparse` as in `point_vectors`)."""
    if kind == "sparse":
        ids, weights = query.sparse  # type: ignore[misc]
        return sparse(np.asarray(ids).tolist(), np.asarray(weights).tolist())
    return np.asarray(query.dense if kind == "dense" else query.colbert, np.float32).tolist()


def point_payload(doc: Document, counts: Mapping[int, int] | None, thumbnail: bytes | None) -> dict[str, Any]:
    """A document's payload: id, kind, text, metadata, thumbnail, and BM25 term counts (the length for the
    average, the counts for a lossless migration)."""
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
    if counts is not None:
        payload["bm25_len"] = int(sum(counts.values()))
        payload["bm25_counts"] = {str(t): int(n) for t, n in counts.items()}
    return payload


def payload_document(payload: Mapping[str, Any], reference: Any) -> Document:
    """The stored document of a point's payload (`reference`: its point id, naming its thumbnail)."""
    return Document(
        payload["id"],
        payload.get("text"),
        payload.get(METADATA_KEY) or {},
        kind=payload.get("kind", "text"),
        thumbnail=str(reference) if payload.get("has_thumbnail") else None,
    )


def payload_length(payload: Mapping[str, Any] | None) -> int | None:
    """The BM25 length a point's payload records, None when it has none."""
    return int(payload["bm25_len"]) if payload and "bm25_len" in payload else None


@dataclass
class Exported:
    """One point as export reads it: its id, payload and vectors (sparse as (indices, values))."""

    reference: Any
    payload: Mapping[str, Any]
    dense: Any = None
    sparse: tuple[Sequence[int], Sequence[float]] | None = None
    colbert: Any = None


def exported_batch(points: Iterable[Exported]) -> PreparedBatch:
    """Points read back as a batch `write` commits elsewhere (migration: nothing is encoded again)."""
    docs, counts, thumbnails = [], [], {}
    for p in points:
        doc = payload_document(p.payload, p.reference)
        doc.thumbnail = None
        if p.dense is not None:
            doc.dense = np.asarray(p.dense, np.float32)
        if p.sparse is not None:
            doc.sparse = (np.asarray(p.sparse[0], np.int64), np.asarray(p.sparse[1], np.float32))
        if p.colbert is not None:
            doc.colbert = np.asarray(p.colbert, np.float32)
        docs.append(doc)
        stored = p.payload.get("bm25_counts")
        counts.append({int(t): int(n) for t, n in stored.items()} if stored is not None else None)
        if p.payload.get("thumbnail"):
            thumbnails[doc.id] = base64.b64decode(p.payload["thumbnail"])
    return PreparedBatch(docs, counts, thumbnails)


def schema_problems(
    config: CollectionConfig, dense: Mapping[str, tuple[int, bool]], sparse: Iterable[str]
) -> list[str]:
    """How the engine's vectors (`dense`: name -> (size, is a multivector); `sparse`: names) differ from what
    `config` says (empty when they match)."""
    problems = []
    for kind, size in (("dense", config.dim), ("colbert", config.colbert_dim)):
        if kind not in config.outputs:
            continue
        found = dense.get(kind)
        if found is None:
            problems.append(f"it has no vector named {kind!r}")
        elif found[0] != size:
            problems.append(f"vector {kind!r} has size {found[0]}, the config says {size}")
        elif (kind == "colbert") != found[1]:
            problems.append(f"vector {kind!r} is {'not ' if kind == 'colbert' else ''}a multivector")
    if "sparse" in config.outputs and "sparse" not in set(sparse):
        problems.append("it has no sparse vector named 'sparse'")
    return problems


@dataclass
class Ask:
    """One nearest-neighbour request of a search: `kind`'s `limit` best under the plan's filter (a first
    stage, whose best `exact_top` must be exactly ordered; None: all), or with `ids`, the exact scores of those
    points only (re-scoring)."""

    kind: OutputKind
    limit: int
    ids: list[Any] | None = None
    exact_top: int | None = None


#: A search's engine settings as keyword arguments: (SearchParams', QuantizationSearchParams' or None).
ParamsSpec = tuple[dict[str, Any], dict[str, Any] | None]


def stage_params(config: CollectionConfig, ask: Ask, ef_search: int | None) -> ParamsSpec | None:
    """How a first stage searches: dense by HNSW (exact for "flat"; for "hnsw-sq8" like the local 8-bit graph,
    `DenseIndex.search`: the limit plus (refine - 1) x `exact_top` fetched by the int8 codes, all re-ranked by
    the float vectors, so a hybrid's depth of candidates costs no threefold re-score); others by default."""
    if ask.kind != "dense":
        return None
    quantized = config.dense_index == "hnsw-sq8"
    fetched = config.hnsw_params.fetched(ask.limit, ask.exact_top)
    return (
        {"hnsw_ef": ef_search or config.hnsw_params.ef_search, "exact": config.dense_index == "flat"},
        {"rescore": True, "oversampling": fetched / ask.limit} if quantized else None,
    )


def exact_params(config: CollectionConfig, kind: str, compressed: bool) -> ParamsSpec | None:
    """How the candidates' scores of `kind` are computed: exactly, except ColBERT stored `compressed`
    (compressed MaxSim, rescored with the float16 vectors when `colbert_recheck` asks)."""
    if kind == "sparse":
        return None
    if kind == "colbert" and compressed:
        return {"exact": True}, {"rescore": config.colbert_recheck > 0}
    return {"exact": True}, {"ignore": True} if config.dense_index == "hnsw-sq8" else None


#: Asks -> each one's (point id, score) list, run by the engine as one batch.
RunAsks = Callable[[list[Ask]], list[list[tuple[Any, float]]]]
#: (point ids, payload keys) -> point id -> those keys of its payload (points that exist).
ReadPayloads = Callable[[list[Any], list[str]], dict[Any, Mapping[str, Any]]]


def _empty(query: QueryVectors, kind: str) -> bool:
    """Whether the query has no vector of `kind` to score with (no terms, no tokens)."""
    if kind == "sparse":
        return query.sparse is None or len(query.sparse[0]) == 0
    return kind == "colbert" and (query.colbert is None or len(query.colbert) == 0)


def search_points(
    query: QueryVectors, plan: SearchPlan, rank: Ranker, run: RunAsks, payloads: ReadPayloads
) -> list[Hit]:
    """The plan on an engine: first stages in one batch, then every candidate's missing per-kind scores in a
    second batch over the candidates' ids only (absent from the answer: no such vector, score 0), and MaxSim
    over the ones `rank` re-ranks (`Candidates.late`); the chosen points' payloads make the hits."""
    kinds = MODE_KINDS[plan.mode]
    depth = stage_depth(plan.mode, plan.k, plan.candidates)
    stages = [s for s in MODE_STAGES[plan.mode] if not (s == "sparse" and _empty(query, s))]
    point_ids: list[Any] = []
    index: dict[Any, int] = {}
    lists: dict[OutputKind, np.ndarray] = {}
    early = scored_early(plan.mode)  # ColBERT: on demand, for the re-rank depth
    known: dict[str, dict[int, float]] = {k: {} for k in early}
    for stage, found in zip(stages, run([Ask(s, depth, exact_top=plan.k) for s in stages]) if stages else []):
        order = []
        for pid, score in found:
            i = index.setdefault(pid, len(point_ids))
            if i == len(point_ids):
                point_ids.append(pid)
            order.append(i)
            if stage in known:
                known[stage][i] = score
        lists[stage] = np.asarray(order, np.int64)
    if not point_ids:
        return []
    asks = []
    for kind in early:
        missing = [point_ids[i] for i in range(len(point_ids)) if i not in known[kind]]
        if missing and not _empty(query, kind):
            asks.append(Ask(kind, len(missing), missing))
    for ask, found in zip(asks, run(asks) if asks else []):
        for pid, score in found:
            known[ask.kind][index[pid]] = score
    scores = {}
    for kind in early:
        column = np.zeros(len(point_ids), np.float32)
        for i, s in known[kind].items():
            column[i] = s
        scores[kind] = column

    def late(at: np.ndarray) -> np.ndarray:
        """The ColBERT scores of the candidates at `at` (bge-m3's mean over query tokens)."""
        column = np.zeros(len(at), np.float32)
        if _empty(query, "colbert"):
            return column
        ids = [point_ids[i] for i in at]
        where = {pid: j for j, pid in enumerate(ids)}
        for pid, score in run([Ask("colbert", len(ids), ids)])[0]:
            column[where[pid]] = score
        return column / len(query.colbert)  # type: ignore[arg-type]  # MaxSim sum -> bge-m3's mean

    dense_only = None
    if plan.dense_only:
        kinds_of = payloads(point_ids, [KIND_KEY])
        dense_only = np.array([kinds_of.get(pid, {}).get(KIND_KEY) == "image" for pid in point_ids])
    picked = rank(
        Candidates(np.arange(len(point_ids)), lists, scores, dense_only, late if "colbert" in kinds else None)
    )
    chosen = [point_ids[key] for key, _, _ in picked]
    docs = payloads(chosen, DOC_FIELDS)
    hits = []
    for pid, (_, score, per_kind) in zip(chosen, picked):
        if pid in docs:
            doc = payload_document(docs[pid], pid)
            hits.append(Hit(doc.id, score, per_kind, doc.text, doc.metadata, doc.kind, doc.thumbnail))
    return hits
