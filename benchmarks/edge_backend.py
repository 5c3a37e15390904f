"""The same calibrated documents in Qdrant Edge (Qdrant's engine in-process, `qdrant-edge-py`), for
`index_speed.py --backend qdrant`: the mapping of the qdrant backend (dense: cosine HNSW with the same M and
efConstruction, int8 scalar quantization with rescoring for hnsw-sq8; sparse: a sparse vector) and its search
plan (first stages, then the candidates' missing scores computed by the engine over those candidates only,
fused by m3search's own `fuse`). With `documents`, each point carries its document's metadata as payload and a
search returns the hits' payloads, as a local collection's search returns its documents."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import qdrant_edge as qe

from m3search.index.dense import HNSWParams
from m3search.search.fusion import mode_weights
from m3search.search.planner import Candidates, fuse


def build(
    path: Path, batches, dim: int, m: int, ef_construction: int, quantized: bool, documents: bool = True
) -> tuple[qe.EdgeShard, dict]:
    """A shard at `path` holding `batches` (lists of benchmark documents; with `documents`, their metadata as
    payload): ingest, then index (optimize)."""
    quantization = (
        qe.ScalarQuantizationConfig(type=qe.ScalarType.Int8, always_ram=True) if quantized else None
    )
    config = qe.EdgeConfig(
        vectors={
            "dense": qe.EdgeVectorParams(
                size=dim,
                distance=qe.Distance.Cosine,
                quantization_config=quantization,
                hnsw_config=qe.HnswIndexConfig(m=m, ef_construct=ef_construction, full_scan_threshold=10),
            )
        },
        sparse_vectors={"sparse": qe.EdgeSparseVectorParams()},
        optimizers=qe.EdgeOptimizersConfig(default_segment_number=1),
        max_search_threads=1,
    )
    shard = qe.EdgeShard.create(str(path), config)
    wall, cpu = time.perf_counter(), time.process_time()
    n = 0
    for docs in batches:
        points = [
            qe.Point(
                int(d["id"]),
                {
                    "dense": np.asarray(d["dense"], np.float32).tolist(),
                    "sparse": qe.SparseVector(list(d["sparse"].keys()), list(d["sparse"].values())),
                },
                d["metadata"] if documents else None,
            )
            for d in docs
        ]
        shard.update(qe.UpdateOperation.upsert_points(points))
        n += len(docs)
    shard.flush()
    ingest_s, ingest_cpu = time.perf_counter() - wall, time.process_time() - cpu
    wall = time.perf_counter()
    shard.optimize()
    index_s = time.perf_counter() - wall
    return shard, {
        "docs": n,
        "ingest_s": ingest_s,
        "ingest_cpu_s": ingest_cpu,
        "index_s": index_s,
        "total_s": ingest_s + index_s,
        "docs_per_s": n / (ingest_s + index_s),
    }


class EdgeSearch:
    """m3search's search plan over an Edge shard (row ids are the benchmark's document ids)."""

    def __init__(
        self, shard: qe.EdgeShard, quantized: bool, oversampling: float | None = None, documents: bool = True
    ) -> None:
        """`oversampling`: candidates fetched by the int8 codes per result, re-ranked by the float vectors; None:
        as the local graph fetches them (`HNSWParams.fetched`: the stage's depth plus (refine - 1) x k), so both
        engines re-score as many and are compared at the same recall. `documents`: return the hits' payloads
        with them (read into Python dicts, as a local search decodes its hits' metadata), not ids alone."""
        self.shard, self.quantized, self.oversampling = shard, quantized, oversampling
        self.documents = documents

    def _ids(self, points) -> list[int]:
        """The points' ids, their payloads read first when searches return documents."""
        if self.documents:
            for p in points:
                p.payload  # noqa: B018 - the conversion a caller of the engine pays to use its hits
        return [int(p.id) for p in points]

    def _dense(
        self, q: dict, limit: int, ef: int, ids: set[int] | None = None, k: int = 0, payload: bool = False
    ) -> qe.QueryRequest:
        exact = ids is not None
        oversampling = self.oversampling
        if oversampling is None:
            oversampling = HNSWParams().fetched(limit, k or None) / limit
        return qe.QueryRequest(
            limit=limit,
            query=qe.Query.Nearest(np.asarray(q["dense"], np.float32).tolist(), using="dense"),
            filter=qe.Filter(must=[qe.HasIdCondition(ids)]) if exact else None,
            params=qe.SearchParams(
                hnsw_ef=ef,
                exact=exact,
                quantization=(
                    qe.QuantizationSearchParams(
                        ignore=exact, rescore=None if exact else True, oversampling=oversampling
                    )
                    if self.quantized
                    else None
                ),
            ),
            with_payload=payload,
            with_vector=False,
        )

    @staticmethod
    def _sparse(q: dict, limit: int, ids: set[int] | None = None, payload: bool = False) -> qe.QueryRequest:
        return qe.QueryRequest(
            limit=limit,
            query=qe.Query.Nearest(
                qe.SparseVector(list(q["sparse"].keys()), list(q["sparse"].values())), using="sparse"
            ),
            filter=qe.Filter(must=[qe.HasIdCondition(ids)]) if ids is not None else None,
            with_payload=payload,
            with_vector=False,
        )

    def search(
        self,
        q: dict,
        mode: str,
        k: int,
        candidates: int,
        ef: int,
        fusion: str = "weighted",
        weights: dict[str, float] | None = None,
    ) -> list[int]:
        """Ids of the top `k` for `mode` (dense, sparse, dense+sparse) with `fusion` and `weights` (default: the
        fusion's), fused on the raw scores (the reference formula)."""
        if mode == "dense":
            return self._ids(self.shard.query(self._dense(q, k, ef, k=k, payload=self.documents)))
        if mode == "sparse":
            return self._ids(self.shard.query(self._sparse(q, k, payload=self.documents)))
        depth = max(k, candidates)
        dense, sparse = self.shard.query_batch(
            qe.QueryBatchRequest([self._dense(q, depth, ef, k=k), self._sparse(q, depth)])
        )
        ids: list[int] = []
        index: dict[int, int] = {}
        known: dict[str, dict[int, float]] = {"dense": {}, "sparse": {}}
        lists = {}
        for kind, found in (("dense", dense), ("sparse", sparse)):
            order = []
            for p in found:
                i = index.setdefault(int(p.id), len(ids))
                if i == len(ids):
                    ids.append(int(p.id))
                order.append(i)
                known[kind][i] = p.score
            lists[kind] = np.asarray(order, np.int64)
        missing = {kind: {ids[i] for i in range(len(ids)) if i not in known[kind]} for kind in known}
        requests, asked = [], []
        if missing["dense"]:
            requests.append(self._dense(q, len(missing["dense"]), ef, missing["dense"]))
            asked.append("dense")
        if missing["sparse"]:
            requests.append(self._sparse(q, len(missing["sparse"]), missing["sparse"]))
            asked.append("sparse")
        for kind, found in zip(
            asked, self.shard.query_batch(qe.QueryBatchRequest(requests)) if requests else []
        ):
            for p in found:
                known[kind][index[int(p.id)]] = p.score
        scores = {}
        for kind in ("dense", "sparse"):
            column = np.zeros(len(ids), np.float32)
            for i, s in known[kind].items():
                column[i] = s
            scores[kind] = column
        picked = fuse(
            Candidates(np.arange(len(ids)), lists, scores),
            "dense+sparse",
            k,
            weights=mode_weights(weights, fusion, "dense+sparse"),
            fusion=fusion,
        )  # type: ignore[arg-type]
        best = [ids[key] for key, _, _ in picked]
        if self.documents:  # the hits' documents, in a second request (the first stages carry none)
            self._ids(self.shard.retrieve(best, True, False))
        return best
