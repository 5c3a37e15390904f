"""Filters through a collection's metadata indexes (segments and incremental level) stay exact as documents are
replaced, deleted, flushed, merged and compacted, after reopening, and for a second reader process's view."""

from __future__ import annotations

import json

import numpy as np

from m3search import Collection
from m3search.store.filters import compile_filter
from m3search.store.metadata import MetadataIndex
from tests.store.conftest import as_query, make_docs
from tests.store.sql_filter_reference import sql_matches

FILTERS = [
    {"lang": "de"},
    {"i": {"$gte": 40, "$lt": 170}},
    {"tags": {"$in": ["t1", "u3"]}},
    {"nested.year": {"$lte": 2010}},
    {"$or": [{"lang": "fr"}, {"v": 2}]},
    {"v": {"$exists": True}},
    {"lang": {"$ne": "en"}, "i": {"$gt": 100}},
]


def allowed_ids(current: dict[str, dict], spec: dict) -> set[str]:
    """The ids the filter allows among the current documents, by the SQL reference evaluation."""
    ids = list(current)
    mask = sql_matches([json.dumps(current[i]["metadata"]) for i in ids], spec)
    return {i for i, ok in zip(ids, mask) if ok}


def check(collection: Collection, current: dict[str, dict]) -> None:
    """Every filter returns exactly the allowed documents (k large enough for all of them)."""
    query = as_query(make_docs(1, seed=123)[0])
    for spec in FILTERS:
        hits = collection.search(query, k=len(current) + 10, mode="dense", filter=spec)
        assert {h.id for h in hits} == allowed_ids(current, spec), spec


def test_filters_follow_writes_deletes_and_merges(new_collection, tmp_path):
    collection = new_collection()
    docs = make_docs(230)
    current = {d["id"]: d for d in docs[:130]}
    collection.upsert(docs[:130])  # two flushed segments and pending rows
    check(collection, current)
    reader = Collection.open(tmp_path / "c", readonly=True)
    check(reader, current)
    rng = np.random.default_rng(0)
    for step in range(4):
        # replace some documents with new metadata (in segments and in the incremental level) ...
        changed = [
            dict(current[i], metadata={**current[i]["metadata"], "lang": "de", "v": step})
            for i in rng.choice(sorted(current), 15, replace=False)
        ]
        collection.upsert(changed)
        current.update({d["id"]: d for d in changed})
        # ... delete others, add new ones
        gone = [str(i) for i in rng.choice(sorted(current), 10, replace=False)]
        collection.delete(gone)
        for i in gone:
            del current[i]
        fresh = docs[130 + 25 * step : 130 + 25 * (step + 1)]
        collection.upsert(fresh)
        current.update({d["id"]: d for d in fresh})
        check(collection, current)
        check(reader, current)  # another reader sees the new version
    collection.compact()
    check(collection, current)
    collection.close()
    reopened = Collection.open(tmp_path / "c")
    check(reopened, current)
    reader.close()
    reopened.close()


def test_segment_metadata_index_is_written_with_the_segment(new_collection, tmp_path):
    collection = new_collection(flush_docs=1000)
    docs = make_docs(60)
    collection.upsert(docs)
    collection.flush()
    (seg,) = collection.stats()["segments"]
    index = MetadataIndex.load(tmp_path / "c" / "segments" / seg["name"], 60)
    texts = [json.dumps(d["metadata"]) for d in docs]
    for spec in FILTERS:
        np.testing.assert_array_equal(compile_filter(spec)(index), sql_matches(texts, spec))
