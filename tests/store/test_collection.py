"""Collection API on synthetic vectors: every mode and fusion against the reference scores, filters,
upsert/delete/reopen, compaction, locking and bad input."""

from __future__ import annotations

import numpy as np
import pytest

from m3search import Collection
from m3search.errors import (
    CollectionExistsError,
    CollectionLockedError,
    CollectionNotFoundError,
    DimensionMismatchError,
    FilterError,
    InvalidInputError,
)
from m3search.scoring import colbert_score, dense_score, hybrid_scores, lexical_score
from m3search.search.fusion import default_weights
from tests.conftest import linked_some
from tests.store.conftest import DIM, as_query, make_docs


def reference_scores(query: dict, doc: dict) -> dict[str, float]:
    return {
        "dense": dense_score(query["dense"], doc["dense"]),
        "sparse": lexical_score(query["sparse"], doc["sparse"]),
        "colbert": colbert_score(query["colbert"], doc["colbert"]),
    }


def brute_force(docs: list[dict], query: dict, key) -> list[str]:
    """Ids of `docs` ranked by key(reference scores), best first."""
    return [d["id"] for d in sorted(docs, key=lambda d: -key(reference_scores(query, d)))]


@pytest.fixture
def filled(new_collection, docs):
    """120 documents over two segments (with HNSW graphs) and the incremental level."""
    collection = new_collection()
    collection.upsert(docs[:60])
    collection.upsert(docs[60:110])
    collection.upsert(docs[110:])
    return collection


def test_layout_has_segments_and_pending(filled):
    stats = filled.stats()
    assert stats["count"] == 120
    assert sum(s["rows"] for s in stats["segments"]) + stats["pending"] == 120
    assert stats["pending"] > 0 and any(s["hnsw"] for s in stats["segments"])


def _every_mode(collection: Collection, queries: list[dict]) -> list:
    """Each query's ranking and scores in every mode (every document a candidate)."""
    return [
        [
            (h.id, h.score, h.scores, h.metadata)
            for h in collection.search(q, 10, mode=m, candidates=200, rerank=400)
        ]
        for q in queries
        for m in ("dense", "sparse", "colbert", "dense+sparse", "all")
    ]


@pytest.mark.parametrize("colbert_dtype", ["float16", "binary"])
def test_a_large_batch_becomes_the_segment_the_incremental_level_would_seal(
    new_collection, docs, colbert_dtype
):
    """A batch of at least `flush_docs` documents is written as a segment directly, never as pending rows, and
    holds what sealing the same batch from the incremental level holds (binary: the same fitted center), also
    when it replaces documents already sealed or pending."""
    direct = new_collection("direct", colbert_dtype=colbert_dtype, flush_docs=60, merge_factor=100)
    pended = new_collection("pended", colbert_dtype=colbert_dtype, flush_docs=1000, merge_factor=100)
    newer = [{**d, "metadata": {"v": 2}} for d in make_docs(20, seed=5)]  # d0..d19 again, other vectors
    batches = [docs[:70], docs[70:75], [*newer, *docs[75:115]]]
    for batch in batches:
        direct.upsert(batch)
        for i in range(0, len(batch), 10):
            pended.upsert(batch[i : i + 10])
        pended.flush()
    stats = direct.stats()
    assert stats["pending"] == 0 and [s["rows"] for s in stats["segments"]] == [70, 5, 60]
    assert [s["rows"] for s in pended.stats()["segments"]] == [70, 5, 60]
    assert direct.count() == pended.count() == 115
    queries = [as_query(d) for d in (*make_docs(3, seed=31), newer[0], docs[80])]
    assert _every_mode(direct, queries) == _every_mode(pended, queries)
    assert direct.search(as_query(newer[0]), 1, mode="dense")[0].metadata == {"v": 2}


def test_without_the_sparse_forward_index_segments_lack_it_and_search_alike(new_collection, docs):
    """`sparse_forward=False`: sealed and merged segments hold no forward index, and every mode ranks and
    scores as with it (lookups probe instead); the setting is the local backend's and a boolean."""
    from m3search.index.sparse import FORWARD_FILES

    plain = new_collection("plain")
    lean = new_collection("lean", sparse_forward=False)
    for c in (plain, lean):
        c.upsert(docs[:60])
        c.upsert(docs[60:])
        c.compact()
    assert (plain.stats()["sparse_forward"], lean.stats()["sparse_forward"]) == (True, False)
    for c, present in ((plain, True), (lean, False)):
        for segment in (c.path / "segments").iterdir():
            assert all((segment / f).is_file() == present for f in FORWARD_FILES.values())
    queries = [as_query(d) for d in (*make_docs(3, seed=41), docs[7], docs[90])]
    assert _every_mode(plain, queries) == _every_mode(lean, queries)
    with pytest.raises(InvalidInputError, match="sparse_forward"):
        new_collection("edge", backend="edge", sparse_forward=False)
    with pytest.raises(InvalidInputError, match="sparse_forward"):
        new_collection("bad", sparse_forward="no")


@pytest.mark.parametrize("dense_index", ["hnsw", "hnsw-sq8"])
@pytest.mark.parametrize("older_format", [6, 7])
def test_graphs_are_stored_as_the_readers_of_the_collections_format_expect(
    new_collection, docs, older_format, dense_index
):
    """A new collection (format 8) links its graphs over byte codes (an `hnsw-sq8` graph keeps walking them) and
    seals them with their nodes in walk order (`dense_order.npy`). A collection of format 7, whose readers walk
    with the float query, keeps `QT_8bit_uniform` codes; one of format 6, whose readers would take node numbers
    for rows, also keeps row order; both keep their format. All rank and score alike in every mode, filtered
    dense searches included."""
    import json

    import faiss

    from m3search.index.dense import ANN_FILE, ORDER_FILE, ByteCodes
    from m3search.store.config import CONFIG_FILE, FORMAT_VERSION

    assert FORMAT_VERSION == 8
    made, older = (
        new_collection("made", dense_index=dense_index),
        new_collection("older", dense_index=dense_index),
    )
    older.close()
    config = json.loads((older.path / CONFIG_FILE).read_text())
    (older.path / CONFIG_FILE).write_text(json.dumps({**config, "format": older_format}))
    older = Collection.open(older.path, cache=False)
    try:
        for c in (made, older):
            c.upsert(docs[:60])
            c.upsert(docs[60:])
            c.compact()
        for c, walked, byte_codes in ((made, True, True), (older, older_format >= 7, False)):
            (segment,) = (c.path / "segments").iterdir()
            assert (segment / ORDER_FILE).is_file() == walked
            graph = faiss.read_index(str(segment / ANN_FILE))
            assert (ByteCodes.of(graph) is not None) == (byte_codes and dense_index == "hnsw-sq8")
        assert json.loads((older.path / CONFIG_FILE).read_text())["format"] == older_format
        queries = [as_query(d) for d in (*make_docs(3, seed=43), docs[7], docs[90])]
        assert _every_mode(made, queries) == _every_mode(older, queries)
        spec = {"lang": "de"}
        for c in (made, older):
            hits = [c.search(q, k=5, mode="dense", filter=spec) for q in queries]
            assert all(h.metadata["lang"] == "de" for found in hits for h in found)
        assert [[h.id for h in made.search(q, k=5, mode="dense", filter=spec)] for q in queries] == [
            [h.id for h in older.search(q, k=5, mode="dense", filter=spec)] for q in queries
        ]
    finally:
        older.close()


def test_a_large_batch_on_bm25_weighs_like_the_incremental_level(tmp_path, tiny_m3):
    from m3search.encoders import BM25Encoder, CompositeEncoder

    texts = [
        f"document {i} about {'cats' if i % 3 else 'dogs'} and {'fire' * (i % 4)} number {i % 7}"
        for i in range(30)
    ]

    def make(name: str, flush_docs: int) -> Collection:
        encoder = CompositeEncoder({"dense": tiny_m3, "sparse": BM25Encoder(tiny_m3.tokenizer)})
        return Collection.create(tmp_path / name, encoder=encoder, flush_docs=flush_docs, cache=False)

    with make("direct", 20) as direct, make("pended", 1000) as pended:
        records = [{"id": str(i), "text": t} for i, t in enumerate(texts)]
        direct.upsert(records[:5])  # pending, sealed first when the large batch comes
        direct.upsert(records[5:])
        pended.upsert(records[:5])
        pended.flush()
        pended.upsert(records[5:])
        pended.flush()
        assert direct.stats()["pending"] == 0
        for mode in ("sparse", "dense+sparse"):
            a = direct.search("cats near the fire", k=10, mode=mode)
            b = pended.search("cats near the fire", k=10, mode=mode)
            assert [(h.id, h.scores) for h in a] == [(h.id, h.scores) for h in b]


@pytest.mark.parametrize("mode", ["dense", "sparse", "colbert"])
def test_single_modes_match_reference_ranking(filled, docs, mode):
    query = as_query(make_docs(1, seed=99)[0])
    hits = filled.search(query, k=10, mode=mode, candidates=120, rerank=120)
    expected = brute_force(docs, query, lambda s: s[mode])
    assert [h.id for h in hits] == expected[:10]
    by_id = {d["id"]: d for d in docs}
    for hit in hits:
        assert set(hit.scores) == {mode}
        assert hit.score == pytest.approx(reference_scores(query, by_id[hit.id])[mode], abs=2e-3)


@pytest.mark.parametrize("rerank", [10, 25])
def test_all_re_ranks_with_colbert_the_best_by_dense_and_sparse(filled, docs, rerank):
    """The cascade: ColBERT scores only the `rerank` best candidates by the dense+sparse fusion (the same
    weights), and `all` ranks those by its own formula."""
    query = as_query(make_docs(1, seed=7)[0])
    w = (0.4, 0.3, 0.3)
    hits = filled.search(query, k=5, mode="all", weights=w, candidates=120, rerank=rerank, normalize="none")
    fused = lambda s: hybrid_scores(s["dense"], s["sparse"], s["colbert"], w)  # noqa: E731
    prior = set(brute_force(docs, query, lambda s: fused(s)["sparse+dense"])[:rerank])
    kept = [d for d in docs if d["id"] in prior]
    assert [h.id for h in hits] == brute_force(kept, query, lambda s: fused(s)["colbert+sparse+dense"])[:5]
    # every candidate re-scored: the reference ranking over all documents again
    everything = filled.search(
        query, k=5, mode="all", weights=w, candidates=120, rerank=120, normalize="none"
    )
    assert [h.id for h in everything] == brute_force(docs, query, lambda s: fused(s)["colbert+sparse+dense"])[
        :5
    ]


def test_colbert_re_ranks_the_dense_top_rerank(filled, docs):
    query = as_query(make_docs(1, seed=5)[0])
    hits = filled.search(query, k=5, mode="colbert", candidates=120, rerank=20)
    top = set(brute_force(docs, query, lambda s: s["dense"])[:20])
    assert [h.id for h in hits] == brute_force(
        [d for d in docs if d["id"] in top], query, lambda s: s["colbert"]
    )[:5]


@pytest.mark.parametrize("mode", ["colbert", "all"])
def test_rerank_below_k_still_returns_k(filled, mode):
    query = as_query(make_docs(1, seed=3)[0])
    few = filled.search(query, k=10, mode=mode, candidates=50, rerank=3)
    assert [h.id for h in few] == [
        h.id for h in filled.search(query, k=10, mode=mode, candidates=50, rerank=10)
    ]
    assert len(few) == 10


@pytest.mark.parametrize("bad", [0, -1, 2.5, True, "10"])
def test_rerank_must_be_a_positive_integer(filled, bad):
    with pytest.raises(InvalidInputError, match="rerank must be a positive integer"):
        filled.search(as_query(make_docs(1, seed=3)[0]), k=5, mode="all", rerank=bad)


@pytest.mark.parametrize("mode,combined", [("dense+sparse", "sparse+dense"), ("all", "colbert+sparse+dense")])
@pytest.mark.parametrize("weights", [None, (1.0, 1.0, 1.0), (0.1, 0.7, 0.2)])
def test_weighted_fusion_is_the_reference_formula(filled, docs, mode, combined, weights):
    query = as_query(make_docs(1, seed=7)[0])
    w = weights or default_weights("weighted", mode)
    hits = filled.search(query, k=5, mode=mode, weights=weights, candidates=120, rerank=120, normalize="none")
    # with every document a candidate, the fused ranking is the exact reference ranking
    expected = brute_force(
        docs, query, lambda s: hybrid_scores(s["dense"], s["sparse"], s["colbert"], w)[combined]
    )
    assert [h.id for h in hits] == expected[:5]
    by_id = {d["id"]: d for d in docs}
    for hit in hits:
        ref = reference_scores(query, by_id[hit.id])
        assert hit.score == pytest.approx(
            hybrid_scores(ref["dense"], ref["sparse"], ref["colbert"], w)[combined], abs=2e-3
        )
        for kind, value in hit.scores.items():
            assert value == pytest.approx(ref[kind], abs=2e-3)


def test_rrf_fusion(filled, docs):
    query = as_query(make_docs(1, seed=5)[0])
    n = 20
    dense_list = brute_force(docs, query, lambda s: s["dense"])[:n]
    matching = [d for d in docs if set(d["sparse"]) & set(query["sparse"])]  # sparse lists only these
    sparse_list = brute_force(matching, query, lambda s: s["sparse"])[:n]
    # the sparse signal: the best sparse score over the query's self-score (its ceiling for given vectors)
    by_id = {d["id"]: d for d in docs}
    best = max(reference_scores(query, by_id[i])["sparse"] for i in set(dense_list) | set(sparse_list))
    signal = min(1.0, best / sum(w * w for w in query["sparse"].values()))
    assert 0 < signal < 1

    for normalize, sparse_weight in (("minmax", 1.0), ("signal", signal)):
        hits = filled.search(
            query,
            k=10,
            mode="dense+sparse",
            fusion="rrf",
            weights=(1, 1, 0),
            candidates=n,
            normalize=normalize,
        )

        def rrf(doc_id, w=sparse_weight):
            lists = ((dense_list, 1.0), (sparse_list, w))
            return sum(wl / (60 + lst.index(doc_id) + 1) for lst, wl in lists if doc_id in lst)

        expected = sorted(set(dense_list) | set(sparse_list), key=lambda i: -rrf(i))[:10]
        assert [round(h.score, 9) for h in hits] == [round(rrf(i), 9) for i in expected]
        assert [round(rrf(h.id), 9) for h in hits] == [round(h.score, 9) for h in hits]


def test_own_vectors_find_the_document(filled, docs):
    # (not sparse: lexical scores are unnormalized, another document can outscore a document's own vector)
    for doc in docs[::17]:
        for mode in ("dense", "colbert", "dense+sparse", "all"):
            assert filled.search(as_query(doc), k=1, mode=mode)[0].id == doc["id"], (mode, doc["id"])


def test_hit_carries_text_and_metadata(filled, docs):
    hit = filled.search(as_query(docs[3]), k=1)[0]
    assert (hit.id, hit.text, hit.metadata) == ("d3", docs[3]["text"], docs[3]["metadata"])
    assert hit.to_dict()["metadata"]["nested"]["year"] == docs[3]["metadata"]["nested"]["year"]


@pytest.mark.parametrize(
    "spec,predicate",
    [
        ({"lang": "de"}, lambda m: m["lang"] == "de"),
        ({"i": {"$gte": 10, "$lt": 20}}, lambda m: 10 <= m["i"] < 20),
        ({"lang": {"$in": ["en", "fr"]}}, lambda m: m["lang"] in ("en", "fr")),
        ({"lang": {"$nin": ["en"]}, "i": {"$lte": 50}}, lambda m: m["lang"] != "en" and m["i"] <= 50),
        ({"tags": "t1"}, lambda m: "t1" in m["tags"]),
        ({"nested.year": {"$gt": 2025}}, lambda m: m["nested"]["year"] > 2025),
        ({"$or": [{"i": 3}, {"i": 111}]}, lambda m: m["i"] in (3, 111)),
        ({"$not": {"lang": "en"}}, lambda m: m["lang"] != "en"),
        ({"missing": {"$exists": False}, "i": {"$ne": 0}}, lambda m: m["i"] != 0),
    ],
)
@pytest.mark.parametrize("mode", ["dense", "sparse", "all"])
def test_filters_apply_before_top_k(filled, docs, spec, predicate, mode):
    query = as_query(make_docs(1, seed=3)[0])
    allowed = [d for d in docs if predicate(d["metadata"])]
    hits = filled.search(query, k=10, mode=mode, filter=spec, candidates=120, rerank=120)
    assert all(predicate(h.metadata) for h in hits)
    if mode == "sparse":  # only documents sharing a token can match
        allowed = [d for d in allowed if set(d["sparse"]) & set(query["sparse"])]
    assert len(hits) == min(10, len(allowed))
    if mode == "dense":
        assert [h.id for h in hits] == brute_force(allowed, query, lambda s: s["dense"])[:10]


def test_selective_filter_returns_all_allowed_even_through_hnsw(new_collection):
    docs = make_docs(200)
    collection = new_collection(flush_docs=500)
    collection.upsert(docs)
    collection.flush()
    assert collection.stats()["segments"][0]["hnsw"]
    hits = collection.search(as_query(docs[0]), k=10, mode="dense", filter={"i": {"$in": [5, 77, 150]}})
    assert sorted(h.id for h in hits) == ["d150", "d5", "d77"]


@pytest.mark.parametrize(
    "bad",
    [
        "{not json",
        '["a"]',
        {"lang": {"$regex": "x"}},
        {"$xor": []},
        {"i": {"$in": []}},
        {"i": {"$gt": [1]}},
        {"i": {"$gt": float("nan")}},
        {'a"b': 1},
        {"i": {}},
        {"x": {"$exists": "yes"}},
        {"x": {"a": 1}},
    ],
)
def test_malformed_filters_are_clear_errors(filled, bad):
    with pytest.raises(FilterError):
        filled.search(as_query(make_docs(1)[0]), filter=bad)


def test_upsert_replaces_and_delete_removes(filled, docs):
    sealed, pending = docs[0], docs[110]  # one in a segment, one in the incremental level
    moved = make_docs(2, seed=42)
    for old, new in zip((sealed, pending), moved):
        filled.upsert([{**new, "id": old["id"], "text": "replaced", "metadata": {"v": 2}}])
    assert filled.count() == 120
    for old, new in zip((sealed, pending), moved):
        hit = filled.search(as_query(new), k=1, mode="dense")[0]
        assert (hit.id, hit.text, hit.metadata) == (old["id"], "replaced", {"v": 2})
        assert (
            old["id"] not in [h.id for h in filled.search(as_query(old), k=3, mode="dense")]
            or filled.search(as_query(old), k=1, mode="dense")[0].id != old["id"]
        )
    assert filled.delete(["d0", "d110", "nope"]) == 2
    assert filled.count() == 118
    assert filled.get(["d0", "d1"])[0] is None and filled.get(["d1"])[0].text == docs[1]["text"]
    for mode in ("dense", "sparse", "colbert", "all"):
        assert "d0" not in [
            h.id for h in filled.search(as_query(moved[0]), k=120, mode=mode, candidates=120, rerank=120)
        ]


def test_reopen_keeps_everything(tmp_path, new_collection, docs):
    collection = new_collection()
    collection.upsert(docs)
    collection.delete(["d4"])
    collection.upsert([{**docs[5], "metadata": {"changed": True}}])
    query = as_query(make_docs(1, seed=11)[0])
    before = [(h.id, round(h.score, 5)) for h in collection.search(query, k=10)]
    collection.close()
    reopened = Collection.open(tmp_path / "c", cache=False)
    try:
        assert reopened.count() == 119
        assert [(h.id, round(h.score, 5)) for h in reopened.search(query, k=10)] == before
        assert reopened.get("d5")[0].metadata == {"changed": True}
    finally:
        reopened.close()


def test_compaction_keeps_results_and_drops_deleted_rows(filled, docs):
    filled.delete([f"d{i}" for i in range(0, 120, 7)])
    query = as_query(make_docs(1, seed=13)[0])
    before = {
        m: [h.id for h in filled.search(query, k=10, mode=m, candidates=120, rerank=120)]
        for m in ("dense", "sparse", "all")
    }
    filled.compact()
    stats = filled.stats()
    assert len(stats["segments"]) == 1 and stats["pending"] == 0 and stats["tombstones"] == 0
    assert stats["segments"][0]["rows"] == filled.count() == 120 - len(range(0, 120, 7))
    after = {
        m: [h.id for h in filled.search(query, k=10, mode=m, candidates=120, rerank=120)]
        for m in ("dense", "sparse", "all")
    }
    assert after == before


@pytest.mark.parametrize("deleted", [False, True])
def test_a_merge_builds_on_the_graph_linked_in_the_background(new_collection, monkeypatch, deleted):
    """Segments too small for a graph are linked in the background as they are written; the merge of exactly
    them builds on that graph (not when rows were deleted or other segments join) and answers as before."""
    from m3search.index import dense

    taken = []
    take = dense.BackgroundGraph.take

    def spy(self, keys):
        graph = take(self, keys)
        taken.append(graph is not None)
        return graph

    monkeypatch.setattr(dense.BackgroundGraph, "take", spy)
    collection = new_collection(flush_docs=50, merge_factor=100, hnsw={"min_rows": 150})
    docs = make_docs(200)
    for start in range(0, 200, 50):
        collection.upsert(docs[start : start + 50])  # each a segment of 50 rows, no graph
    if deleted:
        collection.delete(["d3"])
    query = as_query(make_docs(1, seed=13)[0])
    before = [h.id for h in collection.search(query, k=10, mode="dense")]
    linked_some(collection.backend._background, 1)  # a compact before the thread runs finds nothing to take
    collection.compact()
    assert taken == [True]  # a graph came back for exactly those segments ...
    segment = collection.backend._segments[next(iter(collection.backend._segments))]
    assert segment.dense.ann is not None and segment.dense.ann.ntotal == 200 - deleted
    assert [h.id for h in collection.search(query, k=10, mode="dense")] == before


def test_a_merge_of_interleaved_segments_keeps_every_documents_vectors(new_collection):
    """Tiered merging leaves a newer segment holding older seqs (0-19 and 60-69) beside an older one (20-59), so
    compaction copies rows out of segment order, in runs: every surviving document keeps its vectors exactly."""
    collection = new_collection(flush_docs=10, merge_factor=3)
    for start, n in [(0, 10), (10, 10), (20, 40), (60, 10)]:
        collection.upsert(make_docs(n, start=start))
    sizes = sorted(s["rows"] for s in collection.stats()["segments"])
    assert sizes == [30, 40]  # the three 10-row segments were merged, the 40-row one was not
    collection.delete(["d5", "d25", "d61"])

    def stored():
        return {
            d.id: (
                d.dense.tobytes(),
                d.sparse[0].tobytes(),
                d.sparse[1].tobytes(),
                d.colbert.tobytes(),
                d.metadata,
            )
            for batch in collection.export(batch_size=16)
            for d in batch.docs
        }

    before = stored()
    collection.compact()
    assert [s["rows"] for s in collection.stats()["segments"]] == [67]
    assert stored() == before and len(before) == 67


def test_tiered_merging_bounds_segment_count(new_collection):
    collection = new_collection(flush_docs=10, merge_factor=3, hnsw={"min_rows": 10_000})
    for start in range(0, 200, 10):
        collection.upsert(make_docs(10, start=start))
    sizes = [s["rows"] for s in collection.stats()["segments"]]
    assert sum(sizes) == 200 and len(sizes) <= 6, sizes


def test_second_writer_gets_a_clear_error(tmp_path, new_collection, docs):
    writer = new_collection()
    writer.upsert(docs[:5])
    other = Collection.open(tmp_path / "c", cache=False)
    try:
        assert other.count() == 5  # reading needs no lock
        with pytest.raises(CollectionLockedError, match="open for writing"):
            other.upsert(docs[5:6])
        writer.upsert(docs[5:10])
        assert other.count() == 10  # readers see new versions
        assert other.search(as_query(docs[7]), k=1)[0].id == "d7"
        writer.close()
        other.upsert(docs[10:11])  # the lock is free once the writer closed
        assert other.count() == 11
    finally:
        other.close()


@pytest.mark.parametrize("marker", [True, False], ids=["wal-index header", "no -shm file"])
def test_a_reader_asks_sqlite_for_changes_only_after_a_commit(tmp_path, new_collection, docs, marker):
    writer = new_collection()
    writer.upsert(docs[:5])
    reader = Collection.open(tmp_path / "c", readonly=True, cache=False)
    db = reader.backend._db
    if not marker:  # where the shared memory cannot be read, every search asks SQLite
        db.commit_marker = lambda: None
    asked = []
    data_version = db.data_version
    db.data_version = lambda: asked.append(1) or data_version()
    try:
        query = as_query(docs[7])
        reader.search(query, k=1)
        before = len(asked)
        for _ in range(3):
            reader.search(query, k=1)
        assert len(asked) == before if marker else len(asked) >= before + 3
        for i in (5, 6, 7):  # every commit of the other connection is seen by the next search
            writer.upsert(docs[i : i + 1])
            assert reader.search(as_query(docs[i]), k=1)[0].id == f"d{i}"
        writer.delete(["d7"])
        assert reader.count() == 7 and reader.search(query, k=1)[0].id != "d7"
    finally:
        reader.close()


def test_readonly_refuses_writes(tmp_path, new_collection, docs):
    new_collection().upsert(docs[:3])
    reader = Collection.open(tmp_path / "c", readonly=True, cache=False)
    with pytest.raises(Exception, match="read-only"):
        reader.delete("d1")
    reader.close()


def test_create_and_open_errors(tmp_path, new_collection):
    with pytest.raises(CollectionNotFoundError):
        Collection.open(tmp_path / "nothing")
    new_collection()
    with pytest.raises(CollectionExistsError):
        Collection.create(tmp_path / "c", dim=DIM)
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "file").write_text("x")
    with pytest.raises(CollectionExistsError):
        Collection.create(tmp_path / "busy", dim=DIM)
    with pytest.raises(InvalidInputError):
        Collection.create(tmp_path / "nodim", outputs=["dense"])


@pytest.mark.parametrize(
    "change,error",
    [
        (lambda d: d.update(dense=np.ones(DIM + 1)), DimensionMismatchError),
        (lambda d: d["dense"].__setitem__(0, np.nan), InvalidInputError),
        (lambda d: d.update(colbert=np.ones((3, 5))), DimensionMismatchError),
        (lambda d: d["colbert"].__setitem__((0, 0), np.inf), InvalidInputError),
        (lambda d: d.update(sparse={"x": 1.0}), InvalidInputError),
        (lambda d: d.update(sparse={5: float("nan")}), InvalidInputError),
        (lambda d: d.update(metadata=[1, 2]), InvalidInputError),
        (lambda d: d.update(metadata={"x": float("nan")}), InvalidInputError),
        (lambda d: d.update(id=""), InvalidInputError),
        (lambda d: d.pop("id"), InvalidInputError),
        (lambda d: d.update(text=None, dense=None), InvalidInputError),
        (lambda d: d.update(unknown=1), InvalidInputError),
    ],
)
def test_bad_documents_are_rejected_and_nothing_is_lost(new_collection, docs, change, error):
    collection = new_collection()
    collection.upsert(docs[:10])
    bad = make_docs(1, seed=1, start=500)[0]
    change(bad)
    with pytest.raises(error):
        collection.upsert(docs[10:20] + [bad])
    assert collection.count() == 10
    assert collection.search(as_query(docs[2]), k=1)[0].id == "d2"


def test_duplicate_ids_in_a_batch(new_collection, docs):
    collection = new_collection()
    with pytest.raises(InvalidInputError, match="twice"):
        collection.upsert([docs[0], docs[1], docs[0]])
    assert collection.count() == 0


def test_bad_queries(filled, docs):
    with pytest.raises(InvalidInputError, match="mode"):
        filled.search(as_query(docs[0]), mode="fancy")
    with pytest.raises(InvalidInputError, match="fusion"):
        filled.search(as_query(docs[0]), mode="all", fusion="max")
    with pytest.raises(DimensionMismatchError):
        filled.search({"dense": np.ones(3)}, mode="dense")
    with pytest.raises(InvalidInputError, match="lacks"):
        filled.search({"dense": docs[0]["dense"]}, mode="all")
    with pytest.raises(InvalidInputError, match="no model"):
        filled.search("a text query")
    with pytest.raises(InvalidInputError):
        filled.search(as_query(docs[0]), k=0)
    with pytest.raises(InvalidInputError, match="weights"):
        filled.search(as_query(docs[0]), mode="all", weights=(1, -1, 0))


def test_arguments_resolved_once_rank_alike_and_bad_ones_are_still_refused(filled, docs):
    """A search's arguments are resolved once per combination (`Collection._resolve`): the same ranking at
    the next search, weights as a list, a tuple or by name alike, and values that equal a kept key (True == 1,
    1.0 == 1) still refused."""
    query = as_query(docs[3])
    first = filled.search(query, 1, mode="dense")
    assert filled.search(query, 1, mode="dense") == first
    for bad in ({"k": True}, {"k": 1.0}, {"k": 1, "candidates": True}, {"k": 1, "rerank": True}):
        with pytest.raises(InvalidInputError, match="must be a positive integer"):
            filled.search(query, mode="dense", **bad)
    hybrid = {"mode": "dense+sparse", "normalize": "none"}
    listed = filled.search(query, 5, weights=[0.3, 0.7, 0], **hybrid)
    assert listed == filled.search(query, 5, weights=(0.3, 0.7, 0), **hybrid)
    assert listed == filled.search(query, 5, weights={"dense": 0.3, "sparse": 0.7}, **hybrid)
    dense_only = filled.search(query, 5, weights=[1, 0, 0], **hybrid)
    assert (
        [h.score for h in dense_only] == [h.scores["dense"] for h in dense_only] != [h.score for h in listed]
    )


def test_modes_need_their_outputs(new_collection, docs):
    collection = new_collection(outputs=["dense", "sparse"], colbert_dim=None)
    collection.upsert([{k: v for k, v in d.items() if k != "colbert"} for d in docs[:5]])
    assert collection.default_mode == "dense+sparse"
    with pytest.raises(InvalidInputError, match="colbert"):
        collection.search(as_query(docs[0]), mode="all")
    with pytest.raises(InvalidInputError, match="no colbert"):
        collection.upsert([docs[6]])


def test_documents_without_colbert_vectors_score_zero(new_collection, docs):
    collection = new_collection()
    collection.upsert([{**docs[0], "colbert": None, "text": None}] + docs[1:5])
    hits = {h.id: h for h in collection.search(as_query(docs[0]), k=5, mode="all")}
    assert set(hits) == {d["id"] for d in docs[:5]}  # still found by its other modes
    assert hits["d0"].scores["colbert"] == 0.0 and hits["d0"].scores["dense"] == pytest.approx(1.0, abs=1e-5)


def test_reader_keeps_working_while_the_writer_flushes_and_merges(tmp_path, new_collection):
    import threading

    writer = new_collection(flush_docs=20, merge_factor=2)
    writer.upsert(make_docs(20))
    reader = Collection.open(tmp_path / "c", readonly=True, cache=False)
    errors, counts = [], []
    stop = threading.Event()

    def read():
        query = as_query(make_docs(1, seed=77)[0])
        while not stop.is_set():
            try:
                hits = reader.search(query, k=5, mode="all")
                counts.append(reader.count())
                assert len(hits) == 5
            except Exception as exc:  # noqa: BLE001 - any failure is the finding
                errors.append(exc)
                return

    thread = threading.Thread(target=read)
    thread.start()
    try:
        for start in range(20, 300, 20):
            writer.upsert(make_docs(20, seed=start, start=start))
        writer.compact()
    finally:
        stop.set()
        thread.join()
        reader.close()
    assert not errors, errors
    assert counts == sorted(counts) and counts[-1] <= 300
