"""The same behaviour over every storage backend: `local` (the embedded engine), `qdrant` (qdrant-client's local
mode, in memory and in a directory) and `edge` (Qdrant Edge in-process, in a directory): every mode and fusion
against the reference scores and against the local backend's ranking of the same candidates, filters,
upsert/delete/get, reopening, BM25, images, refusals."""

from __future__ import annotations

import itertools
import json
import os

import numpy as np
import pytest
import qdrant_edge as qe
from qdrant_client import QdrantClient, models

from m3search import Collection
from m3search.errors import (
    CollectionError,
    CollectionExistsError,
    CollectionLockedError,
    CollectionNotFoundError,
    FilterError,
)
from m3search.scoring import hybrid_scores
from m3search.search.planner import default_candidates
from m3search.store.backends import edge
from m3search.store.backends.base import EDGE_DIR
from m3search.store.backends.edge import BM25_FILE
from m3search.store.backends.points import Ask, point_id, stage_params
from m3search.store.config import CollectionConfig
from m3search.store.database import DB_FILE
from m3search.store.search_defaults import SEARCH_DEFAULTS_FILE, SearchDefaults
from tests.store.conftest import COLBERT_DIM, DIM, as_query, make_docs
from tests.store.test_collection import brute_force, reference_scores

BACKENDS = ["local", "qdrant", "edge"]
#: The backends on Qdrant's engine, compared with the local one.
REMOTES = ["qdrant", "edge"]
MODES = ["dense", "sparse", "colbert", "dense+sparse", "all"]


def create(
    backend: str, directory, shared: list, name: str = "c", own: bool = False, **options
) -> Collection:
    """A new vector-only collection `name` under `directory`: local (small segments), edge (the directory
    edge-NAME; indexed, HNSW and quantization, from 40 rows like the local segments), or qdrant (on the
    local-mode client in `shared`, made in memory on first use, or with `own=True` its own client on
    directory/qdrant, so it can be closed and reopened by name)."""
    settings = dict(dim=DIM, colbert_dim=COLBERT_DIM, cache=False)
    settings.update(options)
    if backend == "local":
        settings.update(flush_docs=50, merge_factor=3, hnsw={"min_rows": 40})
        return Collection.create(directory / name, **settings)
    if backend == "edge":
        settings.update(hnsw={"min_rows": 40})
        return Collection.create(directory / f"edge-{name}", backend="edge", **settings)
    if own:
        return Collection.create(name, backend="qdrant", path=directory / "qdrant", **settings)
    if not shared:
        shared.append(QdrantClient(location=":memory:"))
    return Collection.create(name, backend="qdrant", client=shared[0], **settings)


@pytest.fixture
def open_backend(tmp_path):
    """Factory: (backend, name, own, options) -> `create` under tmp_path; closed afterwards."""
    made: list[Collection] = []
    shared: list[QdrantClient] = []

    def factory(backend: str, name: str = "c", own: bool = False, **options) -> Collection:
        made.append(create(backend, tmp_path, shared, name, own, **options))
        return made[-1]

    yield factory
    for collection in made:
        collection.close()
    for client in shared:
        client.close()


@pytest.fixture(params=BACKENDS)
def filled(request, open_backend, docs):
    collection = open_backend(request.param)
    collection.upsert(docs[:60])
    collection.upsert(docs[60:])
    return collection


def fill_pair(local: Collection, remote: Collection, docs: list[dict]) -> tuple[Collection, Collection]:
    for collection in (local, remote):
        collection.upsert(docs[:70])
        collection.upsert(docs[70:])
    return local, remote


@pytest.fixture(params=REMOTES)
def pair(request, open_backend, docs):
    """The same documents in a local collection and one on Qdrant's engine (qdrant, edge)."""
    return fill_pair(open_backend("local"), open_backend(request.param), docs)


@pytest.fixture(scope="module", params=REMOTES)
def read_pair(request, tmp_path_factory):
    """`pair` built once per module, for tests that only search it."""
    shared: list[QdrantClient] = []
    directory = tmp_path_factory.mktemp("pair")
    both = fill_pair(
        create("local", directory, shared), create(request.param, directory, shared), make_docs(120)
    )
    yield both
    for collection in both:
        collection.close()
    for client in shared:
        client.close()


@pytest.mark.parametrize("mode", ["dense", "sparse", "colbert"])
def test_single_modes_match_the_reference(filled, docs, mode):
    query = as_query(make_docs(1, seed=99)[0])
    hits = filled.search(query, k=10, mode=mode, candidates=120, rerank=120)
    assert [h.id for h in hits] == brute_force(docs, query, lambda s: s[mode])[:10]
    by_id = {d["id"]: d for d in docs}
    for hit in hits:
        assert hit.score == pytest.approx(reference_scores(query, by_id[hit.id])[mode], abs=2e-3)


@pytest.mark.parametrize("dense_index", ["hnsw-sq8", "flat"])
def test_edge_sq8_and_flat_dense_match_the_reference(open_backend, docs, dense_index):
    """Edge's int8 codes fetch `refine` x k candidates re-scored by the float vectors (exact scores); flat
    searches exactly."""
    collection = open_backend("edge", dense_index=dense_index)
    collection.upsert(docs[:60])
    collection.upsert(docs[60:])
    assert collection.stats()["edge"]["indexed_vectors_count"] > 0
    query = as_query(make_docs(1, seed=99)[0])
    hits = collection.search(query, k=10, mode="dense")
    assert [h.id for h in hits] == brute_force(docs, query, lambda s: s["dense"])[:10]
    by_id = {d["id"]: d for d in docs}
    assert [h.score for h in hits] == pytest.approx(
        [reference_scores(query, by_id[h.id])["dense"] for h in hits], abs=1e-5
    )


def test_searches_do_not_count_exactly(filled, monkeypatch):
    """An exact count visits every point in Qdrant's engine (9 ms at 100,000): the hybrid modes size their
    default depth by the backend's cheap count, and dense and sparse, which return their k, count nothing."""
    query = as_query(make_docs(1, seed=5)[0])
    depth = default_candidates(filled.count())
    expected = {m: [h.id for h in filled.search(query, k=10, mode=m, candidates=depth)] for m in MODES}

    def refuse() -> int:
        raise AssertionError("a search counted")

    monkeypatch.setattr(filled.backend, "count", refuse)
    assert {m: [h.id for h in filled.search(query, k=10, mode=m)] for m in MODES} == expected
    monkeypatch.setattr(filled.backend, "approximate_count", refuse)
    for mode in ("dense", "sparse"):
        assert [h.id for h in filled.search(query, k=10, mode=mode)] == expected[mode]


def test_warming_reads_the_files_local_searches_map(filled):
    """`Collection.warm` reads what searches touch at random: the database and the segments' memory-mapped
    files, not those a segment reads whole at open (the graph, the row ids); Qdrant's engines keep their own."""
    files = filled.backend.search_files()
    warm = filled.warm(budget=1 << 40)
    warm.join(30)
    if filled.backend.__class__.__name__ != "LocalBackend":
        assert files == [] and warm.read == []
        return
    names = {f.name for f in files}
    assert DB_FILE in names and {"dense.npy", "sparse_rows.npy", "colbert.npy"} <= names
    assert not names & {"dense.faiss", "seqs.npy"}
    assert sorted(warm.read) == sorted((f, f.stat().st_size) for f in files)


def test_a_hybrid_dense_stage_rescores_like_the_local_graph():
    """On SQ8 codes a first stage fetches its limit plus (refine - 1) x the query's k by the codes, like
    `DenseIndex.search`: a hybrid's 100 candidates for k = 10 re-score 120 vectors, not 300."""
    config = CollectionConfig(["dense", "sparse"], DIM, None, dense_index="hnsw-sq8", hnsw={"refine": 3})
    _, hybrid = stage_params(config, Ask("dense", 100, exact_top=10), None)  # type: ignore[misc]
    _, alone = stage_params(config, Ask("dense", 10, exact_top=10), None)  # type: ignore[misc]
    assert (hybrid["oversampling"], alone["oversampling"]) == (1.2, 3.0)  # type: ignore[index]
    assert stage_params(config, Ask("sparse", 100, exact_top=10), 64) is None


@pytest.mark.parametrize("mode,combined", [("dense+sparse", "sparse+dense"), ("all", "colbert+sparse+dense")])
def test_weighted_fusion_is_the_reference_formula(filled, docs, mode, combined):
    query = as_query(make_docs(1, seed=7)[0])
    w = (0.1, 0.7, 0.2)
    hits = filled.search(query, k=5, mode=mode, weights=w, candidates=120, rerank=120)
    expected = brute_force(
        docs, query, lambda s: hybrid_scores(s["dense"], s["sparse"], s["colbert"], w)[combined]
    )
    assert [h.id for h in hits] == expected[:5]


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("fusion", ["weighted", "rrf"])
@pytest.mark.parametrize("candidates,rerank", [(5, None), (30, None), (30, 12)])
def test_qdrant_engines_rank_the_same_candidates_as_local(read_pair, mode, fusion, candidates, rerank):
    """Every mode and fusion, and the ColBERT cascade (`rerank` below the candidates: 12 of up to 60)."""
    local, remote = read_pair
    for seed in (1, 2, 3):
        query = as_query(make_docs(1, seed=seed)[0])
        a = local.search(query, k=10, mode=mode, fusion=fusion, candidates=candidates, rerank=rerank)
        b = remote.search(query, k=10, mode=mode, fusion=fusion, candidates=candidates, rerank=rerank)
        assert [h.id for h in b] == [h.id for h in a]
        for x, y in zip(a, b):
            assert y.score == pytest.approx(x.score, abs=1e-3)
            assert y.scores == pytest.approx(x.scores, abs=1e-3)
            assert (y.text, y.metadata) == (x.text, x.metadata)


@pytest.mark.parametrize(
    "spec",
    [
        {"lang": "de"},
        {"i": {"$gte": 10, "$lt": 20}},
        {"i": 7.0},
        {"lang": {"$in": ["en", "fr"]}},
        {"lang": {"$nin": ["en"]}, "i": {"$lte": 50}},
        {"tags": "t1"},
        {"tags": {"$ne": "t1"}},
        {"nested.year": {"$gt": 2025}},
        {"$or": [{"i": 3}, {"i": 111}]},
        {"$and": [{"tags": {"$in": ["u1", "u2"]}}, {"$not": {"lang": "en"}}]},
        {"$not": {"lang": "en"}},
        {"missing": {"$exists": False}, "i": {"$ne": 0}},
        {"nested.year": {"$exists": True}},
        {"lang": 1},
        {"flag": True},
        {"flag": {"$in": [False, None]}},
        {"note": None},
        {"note": {"$exists": True}},
    ],
)
def test_filters_select_the_same_documents(open_backend, spec):
    docs = make_docs(60)
    for i, doc in enumerate(docs):
        extra = {
            0: {"flag": True},
            1: {"flag": False},
            2: {"note": None},
            3: {"note": "x"},
            4: {"flag": [None]},
        }
        doc["metadata"].update(extra.get(i % 6, {}))
    local, *remotes = [open_backend(b) for b in BACKENDS]
    for collection in (local, *remotes):
        collection.upsert(docs)
    query = as_query(make_docs(1, seed=3)[0])
    a = local.search(query, k=60, mode="dense", filter=spec)
    for remote in remotes:
        b = remote.search(query, k=60, mode="dense", filter=spec)
        assert [h.id for h in b] == [h.id for h in a], remote.backend


def test_string_ranges_are_refused_on_qdrant(filled):
    spec = {"lang": {"$gte": "de"}}
    if filled.backend.__class__.__name__ == "LocalBackend":
        assert filled.search(as_query(make_docs(1)[0]), k=3, mode="dense", filter=spec)
    else:
        with pytest.raises(FilterError, match="strings"):
            filled.search(as_query(make_docs(1)[0]), k=3, mode="dense", filter=spec)


def test_upsert_replaces_delete_removes_get_reads(filled, docs):
    moved = make_docs(1, seed=42)[0]
    filled.upsert([{**moved, "id": "d0", "text": "replaced", "metadata": {"v": 2}}])
    filled.upsert([{**moved, "id": "d0", "text": "replaced", "metadata": {"v": 2}}])  # idempotent
    assert filled.count() == 120
    hit = filled.search(as_query(moved), k=1, mode="dense")[0]
    assert (hit.id, hit.text, hit.metadata) == ("d0", "replaced", {"v": 2})
    assert filled.backend.approximate_count() == filled.count() == 120
    assert filled.delete(["d0", "d5", "nope"]) == 2
    assert filled.backend.approximate_count() == filled.count() == 118
    got = filled.get(["d0", "d1", "d5"])
    assert got[0] is None and got[2] is None and got[1].text == docs[1]["text"]
    assert got[1].metadata == docs[1]["metadata"]
    for mode in MODES:
        found = [h.id for h in filled.search(as_query(moved), k=120, mode=mode, candidates=120, rerank=120)]
        assert "d0" not in found and "d5" not in found


@pytest.mark.parametrize("backend", BACKENDS)
def test_reopen_keeps_everything(tmp_path, open_backend, docs, backend):
    collection = open_backend(backend, own=True)
    collection.upsert(docs)
    collection.delete(["d4"])
    query = as_query(make_docs(1, seed=11)[0])
    before = [(h.id, round(h.score, 5)) for h in collection.search(query, k=10)]
    config = collection.config
    collection.close()
    if backend == "local":
        reopened = Collection.open(tmp_path / "c", cache=False)
    elif backend == "edge":  # found by its directory's contents
        reopened = Collection.open(tmp_path / "edge-c", cache=False)
    else:
        reopened = Collection.open("c", backend="qdrant", path=tmp_path / "qdrant", cache=False)
    with reopened:
        assert reopened.config == config and reopened.count() == 119
        assert [(h.id, round(h.score, 5)) for h in reopened.search(query, k=10)] == before


def test_qdrant_points_have_uuid5_ids_and_the_id_in_the_payload(tmp_path, open_backend, docs):
    collection = open_backend("qdrant", own=True)
    collection.upsert(docs[:3])
    collection.close()
    client = QdrantClient(path=str(tmp_path / "qdrant"))
    point = client.retrieve("c", [point_id("d1")], with_payload=True, with_vectors=True)[0]
    assert point.payload["id"] == "d1" and point.payload["metadata"] == docs[1]["metadata"]
    assert set(point.vector) == {"dense", "sparse", "colbert"}
    info = client.get_collection("c")
    assert info.config.params.vectors["colbert"].hnsw_config.m == 0
    assert (
        info.config.params.vectors["colbert"].multivector_config.comparator
        == models.MultiVectorComparator.MAX_SIM
    )
    client.close()


@pytest.mark.parametrize(
    "dtype,quantization",
    [
        ("int8", models.ScalarType.INT8),
        ("2bit", models.BinaryQuantizationEncoding.TWO_BITS),
        ("binary", models.BinaryQuantizationEncoding.ONE_BIT),
    ],
)
def test_qdrant_compresses_colbert_with_multivector_quantization(
    tmp_path, open_backend, docs, dtype, quantization
):
    """Compressed `colbert_dtype`s become Qdrant's quantization of the `colbert` multivector (binary ones with
    8-bit query encoding, the asymmetric MaxSim), beside its float16 originals; the collection reopens with
    it and ranks (local mode scores exactly) like the reference."""
    collection = open_backend("qdrant", own=True, colbert_dtype=dtype, colbert_recheck=20)
    collection.upsert(docs)
    collection.close()
    client = QdrantClient(path=str(tmp_path / "qdrant"))
    params = client.get_collection("c").config.params.vectors["colbert"]
    client.close()
    assert params.datatype == models.Datatype.FLOAT16
    found = params.quantization_config
    if dtype == "int8":
        assert found.scalar.type == quantization
    else:
        assert found.binary.encoding == quantization
        assert found.binary.query_encoding == models.BinaryQuantizationQueryEncoding.SCALAR8BITS
    query = as_query(make_docs(1, seed=98)[0])
    with Collection.open("c", backend="qdrant", path=tmp_path / "qdrant", cache=False) as reopened:
        assert (reopened.config.colbert_dtype, reopened.config.colbert_recheck) == (dtype, 20)
        hits = reopened.search(query, k=10, mode="colbert", candidates=120, rerank=120)
    assert [h.id for h in hits] == brute_force(docs, query, lambda s: s["colbert"])[:10]


def test_qdrant_create_and_open_errors(tmp_path, open_backend):
    open_backend("qdrant", "taken")
    with pytest.raises(CollectionExistsError, match="taken"):
        open_backend("qdrant", "taken")
    with pytest.raises(CollectionNotFoundError, match="nope"):
        Collection.open("nope", backend="qdrant", location=":memory:")
    with pytest.raises(CollectionError, match="http://127.0.0.1:9"):
        Collection.open("c", backend="qdrant", url="http://127.0.0.1:9", timeout=2)


def test_collections_made_by_other_tools_are_refused(tmp_path):
    client = QdrantClient(path=str(tmp_path / "other"))
    client.create_collection(
        "plain", vectors_config=models.VectorParams(size=DIM, distance=models.Distance.COSINE)
    )
    client.close()
    with pytest.raises(CollectionError, match="not created by m3search"):
        Collection.open("plain", backend="qdrant", path=tmp_path / "other")
    made = Collection.create(
        "m3", backend="qdrant", path=tmp_path / "other", dim=DIM, colbert_dim=COLBERT_DIM
    )
    config = made.backend.client.get_collection("m3").config.metadata
    made.close()
    client = QdrantClient(path=str(tmp_path / "other"))
    client.delete_collection("m3")
    client.create_collection(
        "m3",
        vectors_config={"dense": models.VectorParams(size=DIM + 1, distance=models.Distance.COSINE)},
        metadata=config,
    )
    client.close()
    with pytest.raises(CollectionError, match=r"'dense' has size 17.*no vector named 'colbert'.*no sparse"):
        Collection.open("m3", backend="qdrant", path=tmp_path / "other")


def test_readonly_qdrant_refuses_writes(tmp_path, open_backend, docs):
    open_backend("qdrant", own=True).close()
    with Collection.open("c", backend="qdrant", path=tmp_path / "qdrant", readonly=True) as reader:
        with pytest.raises(CollectionError, match="read-only"):
            reader.upsert(docs[:1])
        with pytest.raises(CollectionError, match="read-only"):
            reader.delete(["d1"])


def test_edge_points_have_uuid5_ids_and_qdrant_vectors(tmp_path, open_backend, docs):
    """The edge shard holds what a Qdrant collection would: UUID5 point ids with the document id in the
    payload, cosine `dense`, `sparse`, and the float16 MaxSim multivector `colbert` without HNSW."""
    collection = open_backend("edge")
    collection.upsert(docs[:3])
    collection.close()
    config = json.loads((tmp_path / "edge-c" / EDGE_DIR / "edge_config.json").read_text())
    shard = qe.EdgeShard.load(str(tmp_path / "edge-c" / EDGE_DIR))
    point = shard.retrieve([point_id("d1")], True, True)[0]
    shard.close()
    assert point.payload["id"] == "d1" and point.payload["metadata"] == docs[1]["metadata"]
    assert set(point.vector) == {"dense", "sparse", "colbert"}
    assert config["vectors"]["dense"]["distance"] == "Cosine"
    colbert = config["vectors"]["colbert"]
    assert colbert["hnsw_config"]["m"] == 0 and colbert["datatype"] == "float16"
    assert colbert["multivector_config"]["comparator"] == "max_sim"


@pytest.mark.parametrize(
    "dtype,quantization",
    [
        ("int8", {"scalar": {"type": "int8"}}),
        ("2bit", {"binary": {"encoding": "two_bits", "query_encoding": "scalar8bits"}}),
        ("binary", {"binary": {"encoding": "one_bit", "query_encoding": "scalar8bits"}}),
    ],
)
def test_edge_compresses_colbert_like_qdrant(tmp_path, open_backend, docs, dtype, quantization):
    """Compressed `colbert_dtype`s become the same multivector quantization as on the qdrant backend; the
    collection reopens with it and ranks (small segments are scored exactly) like the reference."""
    collection = open_backend("edge", colbert_dtype=dtype, colbert_recheck=20)
    collection.upsert(docs)
    collection.close()
    config = json.loads((tmp_path / "edge-c" / EDGE_DIR / "edge_config.json").read_text())
    found = config["vectors"]["colbert"]["quantization_config"]
    for kind, fields in quantization.items():
        assert {k: found[kind][k] for k in fields} == fields
    query = as_query(make_docs(1, seed=98)[0])
    with Collection.open(tmp_path / "edge-c", cache=False) as reopened:
        assert (reopened.config.colbert_dtype, reopened.config.colbert_recheck) == (dtype, 20)
        hits = reopened.search(query, k=10, mode="colbert", candidates=120, rerank=120)
    assert [h.id for h in hits] == brute_force(docs, query, lambda s: s["colbert"])[:10]


def test_edge_compact_merges_segments_and_writes_segment_again(tmp_path, open_backend, docs, monkeypatch):
    """Writes leave segments below the engine's size limit (made tiny here); `compact` merges them into one
    indexed segment with the same hits and scores, deleted points gone, and puts the writing optimizers back
    (on disk too), so later writes do not rebuild the merged segment."""
    monkeypatch.setattr(edge, "WRITE_SEGMENT_KB", 4)
    collection = open_backend("edge")
    for start in range(0, len(docs), 20):
        collection.upsert(docs[start : start + 20])
    collection.delete(["d3", "d4"])
    written = collection.stats()["edge"]
    assert written["segments_count"] > 3
    queries = [as_query(d) for d in make_docs(5, seed=97)]
    plans = [("dense", "weighted"), ("sparse", "weighted"), ("dense+sparse", "rrf"), ("all", "weighted")]

    def results() -> list:
        return [
            [(h.id, round(h.score, 4)) for h in collection.search(q, k=10, mode=m, fusion=f, candidates=120)]
            for q in queries
            for m, f in plans
        ]

    before = results()
    collection.compact()
    merged = collection.stats()["edge"]
    # one segment holds every point; the engine keeps an empty appendable one beside it for writes
    assert merged["segments_count"] <= 2 and merged["points_count"] == len(docs) - 2
    assert merged["indexed_vectors_count"] >= merged["points_count"]
    assert results() == before
    optimizers = json.loads((tmp_path / "edge-c" / EDGE_DIR / "edge_config.json").read_text())["optimizers"]
    assert optimizers["max_segment_size"] == 4 and optimizers["default_segment_number"] is None
    collection.upsert(make_docs(len(docs) + 40)[len(docs) :])
    assert 2 < collection.stats()["edge"]["segments_count"] < written["segments_count"]
    assert collection.count() == len(docs) + 38


def test_edge_opens_in_one_process_and_read_only_refuses_writes(tmp_path, open_backend, docs):
    """Qdrant Edge admits one open shard per directory: a second open is refused with the holder named (a
    read-only one too); a read-only open searches and refuses writes."""
    collection = open_backend("edge")
    collection.upsert(docs[:5])
    for readonly in (False, True):
        with pytest.raises(CollectionLockedError, match=rf"process {os.getpid()}.*one process"):
            Collection.open(tmp_path / "edge-c", readonly=readonly)
    collection.close()
    with Collection.open(tmp_path / "edge-c", readonly=True, cache=False) as reader:
        assert reader.search(as_query(docs[2]), k=1, mode="dense")[0].id == "d2"
        with pytest.raises(CollectionError, match="read-only"):
            reader.upsert(docs[:1])
        with pytest.raises(CollectionError, match="read-only"):
            reader.delete(["d1"])
    with pytest.raises(CollectionNotFoundError, match="no edge collection"):
        Collection.open(tmp_path / "c-nope", backend="edge")


def test_edge_keeps_search_defaults_beside_its_files(tmp_path, open_backend, docs):
    """Stored search defaults (`index tune`) live in an edge collection's directory as in a local one; a
    read-only open uses them and refuses to change them."""
    collection = open_backend("edge")
    collection.upsert(docs)
    query = as_query(make_docs(1, seed=5)[0])
    collection.set_search_defaults(SearchDefaults(mode="dense"))
    assert (tmp_path / "edge-c" / SEARCH_DEFAULTS_FILE).is_file()
    assert collection.search(query, k=3) == collection.search(query, k=3, mode="dense")
    collection.close()
    with Collection.open(tmp_path / "edge-c", readonly=True, cache=False) as reader:
        assert reader.search_defaults.mode == "dense"
        with pytest.raises(CollectionError, match="read-only"):
            reader.set_search_defaults(SearchDefaults())


def test_edge_refuses_a_shard_that_does_not_match_its_config(tmp_path, open_backend):
    open_backend("edge").close()
    config = json.loads((tmp_path / "edge-c" / "config.json").read_text())
    config.update(dim=DIM + 1, outputs=["dense", "sparse"])
    (tmp_path / "edge-c" / "config.json").write_text(json.dumps(config))
    with pytest.raises(CollectionError, match=r"'dense' has size 16, the config says 17"):
        Collection.open(tmp_path / "edge-c")


def test_documents_without_colbert_or_sparse_match_across_backends(pair):
    local, remote = pair
    bare = make_docs(3, seed=5, start=500)
    for doc in bare:
        doc.pop("colbert")
        doc["text"] = None
        doc["sparse"] = {}
    for collection in (local, remote):
        collection.upsert(bare)
    query = as_query(make_docs(1, seed=5, start=500)[0])
    for mode in ("all", "dense+sparse"):
        for spec in (None, {"i": {"$gte": 500}}):
            a = local.search(query, k=5, mode=mode, filter=spec)
            b = remote.search(query, k=5, mode=mode, filter=spec)
            assert [h.id for h in a] == [h.id for h in b]
            assert np.allclose([h.score for h in a], [h.score for h in b], atol=1e-3)
        assert b[0].id == "d500" and b[0].scores["sparse"] == 0.0


TEXTS = [
    "The cat sat on the warm mat near the fire.",
    "Quantum chromodynamics describes the strong interaction.",
    "A recipe for bread needs flour, water, salt and yeast.",
    "The cat and the dog sleep near the fire.",
    "The stock market fell sharply on Monday morning.",
]


@pytest.fixture
def text_pair(tmp_path, tiny_m3):
    """The same texts (tiny bge-m3, or BM25 beside its dense head) in a local, a qdrant and an edge
    collection."""
    from m3search.encoders import BM25Encoder, CompositeEncoder

    made = []

    def make(bm25: bool) -> list[Collection]:
        def encoder():  # one per collection: a BM25 part holds its collection's statistics
            return (
                CompositeEncoder({"dense": tiny_m3, "sparse": BM25Encoder(tiny_m3.tokenizer)})
                if bm25
                else tiny_m3
            )

        these = [
            Collection.create(tmp_path / f"local{bm25}", encoder=encoder(), cache=False),
            Collection.create(
                f"q{bm25}", backend="qdrant", location=":memory:", encoder=encoder(), cache=False
            ),
            Collection.create(tmp_path / f"edge{bm25}", backend="edge", encoder=encoder(), cache=False),
        ]
        made.extend(these)
        for collection in these:
            collection.upsert([{"id": str(i), "text": t} for i, t in enumerate(TEXTS[:3])])
            collection.upsert([{"id": str(i), "text": t} for i, t in enumerate(TEXTS) if i >= 2])
            collection.delete(["1"])
        return these

    yield make
    for collection in made:
        collection.close()


@pytest.mark.parametrize("bm25", [False, True])
def test_text_collections_rank_alike_including_bm25(text_pair, bm25):
    local, *remotes = text_pair(bm25)
    for remote in remotes:
        assert remote.config.sparse_source == ("bm25" if bm25 else "model")
        assert remote.count() == local.count() == 4
    for remote, mode in itertools.product(remotes, ("sparse", "dense+sparse", *(() if bm25 else ("all",)))):
        for fusion in ("weighted", "rrf"):
            for normalize in ("minmax", "auto"):
                a = local.search("the cat near the fire", k=4, mode=mode, fusion=fusion, normalize=normalize)
                b = remote.search("the cat near the fire", k=4, mode=mode, fusion=fusion, normalize=normalize)
                assert [h.id for h in b] == [h.id for h in a], remote.backend
                for x, y in zip(a, b):
                    assert y.scores == pytest.approx(x.scores, abs=1e-4)
                    # `auto` (signal) weighs BM25 by the query's attainable maximum, which needs the
                    # collection's document frequencies: Qdrant keeps those server-side (IDF modifier), so
                    # with BM25 the fused scores are compared where they do not depend on them.
                    if not (bm25 and normalize == "auto"):
                        # min-max rescaling over the tiny model's near-equal cosines magnifies float noise
                        assert y.score == pytest.approx(x.score, abs=2e-3)


def test_edge_counts_bm25_lengths_again_after_a_crash_mid_write(text_pair):
    """A crash between an edge write and its BM25 statistics leaves them marked dirty: the next open counts
    the lengths again from the points; numbers that disagree with the points are what `verify` reports."""
    local, _, edge = text_pair(True)
    path, expected = edge.path, local.backend.bm25_stats()
    edge.close()
    (path / BM25_FILE).write_text(json.dumps({"n_docs": 1, "total_len": 2, "dirty": True}))
    with Collection.open(path, cache=False) as reopened:
        stats = reopened.backend.bm25_stats()
        assert (stats.n_docs, stats.total_len) == (expected.n_docs, expected.total_len)
        assert reopened.verify()["problems"] == []
    assert not json.loads((path / BM25_FILE).read_text())["dirty"]
    (path / BM25_FILE).write_text(json.dumps({"n_docs": 1, "total_len": 2, "dirty": False}))
    with Collection.open(path, readonly=True, cache=False) as reopened:
        [problem] = reopened.verify()["problems"]
    assert problem.file == BM25_FILE and f"the points {expected.n_docs} of {expected.total_len}" in str(
        problem
    )


def test_images_on_every_backend(tmp_path, tiny_m3, tiny_adapter_dir, flickr_images):
    made = [
        Collection.create(tmp_path / "mixed", encoder=tiny_m3, image_encoder=tiny_adapter_dir, cache=False),
        Collection.create(
            "mixed",
            backend="qdrant",
            location=":memory:",
            encoder=tiny_m3,
            image_encoder=tiny_adapter_dir,
            cache=False,
        ),
        Collection.create(
            tmp_path / "edge", backend="edge", encoder=tiny_m3, image_encoder=tiny_adapter_dir, cache=False
        ),
    ]
    for collection in made:
        collection.upsert([{"id": f"t{i}", "text": t, "metadata": {"n": i}} for i, t in enumerate(TEXTS)])
        collection.upsert(
            [
                {"id": "img0", "image": str(flickr_images[0]), "metadata": {"n": 0}},
                {"id": "img1", "image": flickr_images[1].read_bytes(), "metadata": {"n": 1}},
                {
                    "id": "both",
                    "image": str(flickr_images[3]),
                    "text": "A dog jumps over a fence",
                    "metadata": {"n": 3},
                },
            ]
        )
    local, *remotes = made
    searches = [
        dict(query="a dog", kinds=["image"], mode="dense"),
        dict(image=flickr_images[0], kinds="text"),
        dict(image=flickr_images[1].read_bytes()),
        dict(query="a dog on the grass", mode="all"),
        dict(query="a dog on the grass", mode="dense+sparse", fusion="rrf"),
        dict(image=str(flickr_images[3]), kinds=["image", "image+text"], filter={"n": {"$gte": 1}}),
    ]
    for remote, options in itertools.product(remotes, searches):
        a, b = local.search(k=10, **options), remote.search(k=10, **options)
        assert [(h.id, h.kind) for h in b] == [(h.id, h.kind) for h in a], (remote.backend, options)
        assert [h.score for h in b] == pytest.approx([h.score for h in a], abs=1e-4)
    for remote in remotes:
        doc = remote.get(["img1"])[0]
        assert remote.thumbnail(doc.thumbnail) == local.thumbnail(local.get(["img1"])[0].thumbnail)
        assert remote.delete(["img1"]) == 1 and remote.thumbnail(doc.thumbnail) is None
    for collection in made:
        collection.close()
