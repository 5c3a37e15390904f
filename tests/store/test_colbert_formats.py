"""ColBERT storage forms in collections: every dtype reopens with its scores, re-check, token pruning at index
time (embedded and through the server's encoding path), and collections of the previous formats (2: no segment
checksums, 3: checksums but no ColBERT dtype record) still open as they are."""

from __future__ import annotations

import json
import sqlite3

import numpy as np
import pytest

from m3search import Collection
from m3search.errors import CollectionError, InvalidInputError
from m3search.index import multivector
from m3search.index.multivector import COLBERT_DTYPES, META_FILE
from m3search.server.batching import concat_results, slice_result
from m3search.store.config import CONFIG_FILE, FORMAT_VERSION, CollectionConfig
from m3search.store.database import DB_FILE
from m3search.store.ingest import colbert_pruner, encoded_rows
from m3search.store.segments import SEGMENTS_DIR, Segment
from tests.store.conftest import as_query, make_docs


def colbert_ranking(collection, query, k=20):
    return [(h.id, h.scores["colbert"]) for h in collection.search(query, k=k, mode="colbert", candidates=50)]


@pytest.mark.parametrize("dtype", COLBERT_DTYPES)
def test_each_dtype_reopens_with_the_same_scores(tmp_path, new_collection, docs, dtype):
    collection = new_collection(colbert_dtype=dtype)
    collection.upsert(docs)
    collection.flush()
    queries = [as_query(d) for d in make_docs(3, seed=21)]
    before = [colbert_ranking(collection, q) for q in queries]
    collection.close()
    reopened = Collection.open(tmp_path / "c", cache=False)
    try:
        assert reopened.config.colbert_dtype == dtype and reopened.config.format == FORMAT_VERSION
        assert [colbert_ranking(reopened, q) for q in queries] == before
    finally:
        reopened.close()


def test_recheck_of_every_candidate_is_the_float16_ranking(new_collection, docs):
    """Binary with re-check M >= the candidates: every candidate gets its float16 MaxSim, so the `colbert` ranking
    and scores are exactly the float16 collection's; after merges too (the float16 copies travel with the rows)."""
    exact = new_collection("f16", colbert_dtype="float16")
    rechecked = new_collection("bin", colbert_dtype="binary", colbert_recheck=50)
    for collection in (exact, rechecked):
        for start in range(0, len(docs), 40):
            collection.upsert(docs[start : start + 40])
        collection.compact()
    for query in (as_query(d) for d in make_docs(4, seed=22)):
        assert colbert_ranking(rechecked, query) == colbert_ranking(exact, query)


def test_binary_center_is_fitted_on_the_first_segment_with_tokens(new_collection, docs):
    """A first segment without ColBERT tokens (rows without ColBERT, or only images) seals a flat placeholder
    center; later segments, and merges with it, must use a center fitted on real tokens, exactly as if the
    tokenless rows had never been there."""
    late = new_collection("late", colbert_dtype="binary")
    late.upsert([{**d, "colbert": None, "text": None} for d in docs[:10]])
    late.flush()
    late.upsert(docs[10:])
    late.flush()
    direct = new_collection("direct", colbert_dtype="binary")
    direct.upsert(docs[10:])
    direct.flush()
    queries = [as_query(d) for d in make_docs(3, seed=23)]

    def scores(collection):
        return [
            {
                i: s
                for i, s in colbert_ranking(collection, q, k=len(docs))
                if i not in {d["id"] for d in docs[:10]}
            }
            for q in queries
        ]

    expected = scores(direct)
    assert scores(late) == expected
    late.compact()  # the merge keeps the fitted center, not the first segment's placeholder
    assert scores(late) == expected


def test_recheck_takes_the_best_candidates_of_the_whole_search(new_collection, docs):
    """Re-check M re-scores the M best candidates by the compressed score over all segments together: the same
    rows in four segments or merged into one rank and score alike (per segment, four would re-check 4 M)."""
    options = {"colbert_dtype": "binary", "colbert_recheck": 5, "merge_factor": 100}
    split, merged = new_collection("split", **options), new_collection("merged", **options)
    for collection in (split, merged):
        for start in range(0, len(docs), 30):
            collection.upsert(docs[start : start + 30])
            collection.flush()
    merged.compact()
    assert len(split.stats()["segments"]) == 4 and len(merged.stats()["segments"]) == 1
    for query in (as_query(d) for d in make_docs(4, seed=24)):
        assert colbert_ranking(split, query) == colbert_ranking(merged, query)


def test_recheck_needs_a_compressed_dtype(new_collection):
    with pytest.raises(InvalidInputError, match="colbert_recheck"):
        new_collection(colbert_dtype="float16", colbert_recheck=10)
    with pytest.raises(InvalidInputError, match="colbert_recheck"):
        new_collection("b", colbert_dtype="binary", colbert_recheck=-1)
    with pytest.raises(InvalidInputError, match="colbert_prune"):
        new_collection("c", colbert_prune="stopwords")


def test_binary_is_a_sixteenth_of_float16_on_disk(tmp_path, new_collection):
    """Bytes per token: float16 2·dim; binary dim/8 in all from 256 dimensions up: the sign bits of all but the
    16 dimensions of least spread (colbert.npy) and the token's float16 scale (colbert_scales.npy); the shared
    center is in colbert_center.npy."""
    docs = make_docs(200, seed=23)
    dim = multivector.BINARY_DROP_FROM_DIM
    sizes = {}
    for dtype in ("float16", "binary"):
        collection = new_collection(dtype, colbert_dtype=dtype, colbert_dim=dim)
        collection.upsert([{**d, "colbert": np.tile(d["colbert"], (1, dim // 8))} for d in docs])
        collection.compact()
        (segment,) = (tmp_path / dtype / SEGMENTS_DIR).iterdir()
        sizes[dtype] = sum(
            np.load(segment / f, mmap_mode="r").nbytes
            for f in ("colbert.npy", "colbert_scales.npy")
            if (segment / f).exists()
        )
    tokens = sum(len(d["colbert"]) for d in docs)
    assert sizes == {"float16": tokens * dim * 2, "binary": tokens * dim // 8}


def test_format_4_binary_collections_keep_every_bit(tmp_path, new_collection, docs, monkeypatch):
    """A binary collection written by format 4 (a sign bit for every dimension) opens with the same scores, and
    its new segments and merges keep its center, hence its layout; new collections drop 16 dimensions."""
    dim = multivector.BINARY_DROP_FROM_DIM
    wide = [{**d, "colbert": np.tile(d["colbert"], (1, dim // 8))} for d in docs]
    queries = [as_query(d) for d in wide[:3]]
    with monkeypatch.context() as old_writer:  # format 4's center: no dimension dropped
        old_writer.setattr(multivector, "BINARY_DROP_FROM_DIM", 1 << 30)
        collection = new_collection("old", colbert_dtype="binary", colbert_dim=dim, merge_factor=2)
        collection.upsert(wide[:100])
        collection.flush()
        before = [colbert_ranking(collection, q) for q in queries]
        collection.close()
    path = tmp_path / "old"
    config = json.loads((path / CONFIG_FILE).read_text())
    (path / CONFIG_FILE).write_text(json.dumps({**config, "format": 4}))
    old = Collection.open(path, cache=False)
    try:
        assert [colbert_ranking(old, q) for q in queries] == before
        old.upsert(wide[100:])
        old.compact()
        widths = {np.load(s / "colbert.npy", mmap_mode="r").shape[1] for s in (path / SEGMENTS_DIR).iterdir()}
        assert widths == {dim // 8} and old.verify()["problems"] == []
        assert old.search(queries[1], k=1, mode="colbert")[0].id == wide[1]["id"]
    finally:
        old.close()
    new = new_collection("new", colbert_dtype="binary", colbert_dim=dim)
    new.upsert(wide)
    new.compact()
    (segment,) = (tmp_path / "new" / SEGMENTS_DIR).iterdir()
    assert (
        np.load(segment / "colbert.npy", mmap_mode="r").shape[1]
        == (dim - multivector.BINARY_DROPPED_DIMS) // 8
    )
    assert new.search(queries[1], k=1, mode="colbert")[0].id == wide[1]["id"]


@pytest.mark.parametrize("old_format", [2, 3])
def test_older_format_collections_open_as_they_are(tmp_path, new_collection, docs, old_format):
    """A format-2 or -3 collection (no ColBERT dtype record, no re-check or pruning settings; format 2 also no
    segment file checksums) opens and searches as before, keeps its format in its config, and segments written
    into it later open too."""
    collection = new_collection(colbert_dtype="int8")
    collection.upsert(docs[:100])
    collection.flush()
    queries = [as_query(d) for d in make_docs(3, seed=24)]
    before = [colbert_ranking(collection, q) for q in queries]
    collection.close()
    path = tmp_path / "c"
    config = json.loads((path / CONFIG_FILE).read_text())
    for key in ("colbert_recheck", "colbert_prune"):
        del config[key]
    config["format"] = old_format
    (path / CONFIG_FILE).write_text(json.dumps(config))
    for meta in (path / SEGMENTS_DIR).glob(f"*/{META_FILE}"):
        meta.unlink()
    with sqlite3.connect(path / DB_FILE) as db:
        if old_format == 2:  # format 2 recorded no segment files
            db.execute("DELETE FROM segment_files")
        else:  # format 3 recorded every file it wrote, which had no colbert.json
            db.execute("DELETE FROM segment_files WHERE file = ?", (META_FILE,))
    old = Collection.open(path, cache=False)
    try:
        assert old.config.format == old_format and old.config.colbert_dtype == "int8"
        assert [colbert_ranking(old, q) for q in queries] == before
        assert old.verify()["problems"] == []
        old.upsert(docs[100:])
        old.compact()
        assert json.loads((path / CONFIG_FILE).read_text())["format"] == old_format
        assert old.search(as_query(docs[110]), k=1, mode="colbert")[0].id == docs[110]["id"]
    finally:
        old.close()
    config["format"] = 1
    (path / CONFIG_FILE).write_text(json.dumps(config))
    with pytest.raises(CollectionError, match="format 1"):
        CollectionConfig.load(path)


def test_punctuation_pruning_drops_exactly_those_tokens(tmp_path, tiny_m3):
    """`colbert_prune="punctuation"` stores the vectors of the tokens that are neither special nor punctuation,
    unchanged and in order; the unpruned collection stores them all."""
    text = "Hello, world! (A test.) Bread needs flour; water & salt."
    stored = {}
    for prune in (None, "punctuation"):
        collection = Collection.create(
            tmp_path / str(prune), encoder=tiny_m3, cache=False, colbert_prune=prune
        )
        collection.upsert([{"id": "a", "text": text}])
        collection.flush()
        (segment,) = (tmp_path / str(prune) / SEGMENTS_DIR).iterdir()
        stored[prune] = Segment.load(segment, collection.config).colbert.row(0)
        collection.close()
    encoded = tiny_m3.encode_documents([text], return_colbert=True, return_dense=False)
    pieces = tiny_m3.tokenizer.convert_ids_to_tokens(encoded.colbert_ids[0].tolist())
    words = [p.replace("\u2581", "") for p in pieces]
    keep = np.array([w.isalnum() for w in words])  # this text's pieces are words or punctuation/special
    assert len(stored[None]) == len(pieces) and 0 < keep.sum() < len(pieces)
    assert pieces[-1] == tiny_m3.tokenizer.eos_token and not keep[-1]
    np.testing.assert_array_equal(stored["punctuation"], stored[None][keep])


def test_the_servers_encoding_path_prunes_like_the_embedded_one(tmp_path, tiny_m3):
    """The server encodes through its micro-batcher, which slices and joins encode results: the token ids travel
    with the ColBERT rows, so its prepared rows drop the same tokens as the embedded collection stores."""
    texts = ["Hello, world!", "Bread (flour; water) & salt.", "No punctuation here"]
    collection = Collection.create(tmp_path / "c", encoder=tiny_m3, cache=False, colbert_prune="punctuation")
    collection.upsert([{"id": str(i), "text": t} for i, t in enumerate(texts)])
    collection.flush()
    (segment,) = (tmp_path / "c" / SEGMENTS_DIR).iterdir()
    store = Segment.load(segment, collection.config).colbert
    encoded = tiny_m3.encode_documents(texts, return_colbert=True, return_dense=False)
    joined = concat_results([slice_result(encoded, 0, 1), slice_result(encoded, 1, 3)])
    rows = encoded_rows(joined, ["colbert"], colbert_pruner(collection.config, collection.encoder))
    collection.close()
    assert [len(r["colbert"]) for r in rows] == [int(n) for n in store.token_counts(np.arange(3))]
    assert all(len(r["colbert"]) < len(c) for r, c in zip(rows, encoded.colbert))
    for i, row in enumerate(rows):
        np.testing.assert_array_equal(row["colbert"].astype(np.float32), store.row(i))
