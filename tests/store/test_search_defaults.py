"""A collection's stored search defaults (`search.json`): used when a search leaves a setting out, kept across
reopening, validated, and the candidate depth that grows with the collection."""

from __future__ import annotations

import json

import pytest

from m3search import Collection
from m3search.errors import CollectionError, InvalidInputError
from m3search.search.fusion import FUSION_WEIGHTS, FUSIONS
from m3search.search.planner import RERANK_DEFAULT, default_candidates
from m3search.store.search_defaults import SEARCH_DEFAULTS_FILE, SearchDefaults
from tests.store.conftest import as_query


def _ranked(hits):
    return [(h.id, round(h.score, 6)) for h in hits]


def test_stored_defaults_steer_searches_that_leave_them_out(new_collection, docs):
    collection = new_collection()
    collection.upsert(docs)
    query = as_query(docs[7])
    library = collection.search(query, 10)
    assert collection.fusion_defaults() == ("all", "weighted", FUSION_WEIGHTS["weighted"]["all"])
    assert collection.fusion_defaults(mode="dense") == ("dense", "weighted", None)
    tuned = {"mode": "dense+sparse", "fusion": "rrf", "weights": [0.9, 0.1, 0.0], "candidates": 40}
    collection.set_search_defaults(SearchDefaults(**tuned, source={"by": "test"}))
    assert collection.search_defaults.options() == tuned
    stored = collection.search(query, 10)
    assert _ranked(stored) == _ranked(collection.search(query, 10, **tuned))
    assert _ranked(stored) != _ranked(library)
    assert set(stored[0].scores) == {"dense", "sparse"}  # the stored mode
    # what a search leaves to the collection, per fusion: the stored weights for its own, the library's otherwise
    assert collection.stats()["search_mode"] == "dense+sparse"
    assert collection.stats()["fusion_weights"] == {
        "default": (0.9, 0.1, 0.0),
        **{f: FUSION_WEIGHTS[f]["dense+sparse"] for f in FUSIONS},
    }
    # another fusion asked for explicitly takes its own default weights, not the stored rrf ones
    explicit = collection.search(query, 10, fusion="weighted")
    assert _ranked(explicit) == _ranked(
        collection.search(query, 10, mode="dense+sparse", fusion="weighted", weights=None, candidates=40)
    )
    path = collection.path
    collection.close()
    with Collection.open(path, readonly=True) as reopened:
        assert reopened.search_defaults.source == {"by": "test"}
        assert _ranked(reopened.search(query, 10)) == _ranked(stored)
        with pytest.raises(CollectionError, match="read-only"):
            reopened.set_search_defaults(SearchDefaults())
    with Collection.open(path) as writer:
        writer.set_search_defaults(SearchDefaults())  # cleared: the library's defaults again
        assert _ranked(writer.search(query, 10)) == _ranked(library)


def test_bad_defaults_are_refused(new_collection, docs):
    for bad, message in (
        ({"fusion": "borda"}, "unknown fusion 'borda'"),
        ({"mode": "hybrid"}, "unknown mode 'hybrid'"),
        ({"normalize": "zscore"}, "unknown normalize 'zscore'"),
        ({"weights": [1, 2]}, "weights must be"),
        ({"candidates": 0}, "candidates must be a positive integer"),
        ({"rerank": 0}, "rerank must be a positive integer"),
    ):
        with pytest.raises(InvalidInputError, match=message):
            SearchDefaults(**bad)
    collection = new_collection(outputs=["dense"])
    collection.upsert([{"id": d["id"], "dense": d["dense"]} for d in docs[:5]])
    with pytest.raises(InvalidInputError, match="mode 'all' needs sparse, colbert"):
        collection.set_search_defaults(SearchDefaults(mode="all"))
    (collection.path / SEARCH_DEFAULTS_FILE).write_text(json.dumps({"fusion": "borda"}))  # by hand
    reader = Collection.open(collection.path, readonly=True, cache=False)  # seen at the next open
    with reader, pytest.raises(CollectionError, match="cannot read the search defaults"):
        reader.search({"dense": docs[0]["dense"]}, 3)


def test_candidate_depth_grows_with_the_square_root_of_the_count():
    assert [default_candidates(n) for n in (0, 1, 50_000, 100_000)] == [100] * 4
    assert default_candidates(1_000_000) == 317  # 100·√10: the index note measured 300 enough at 1M
    assert default_candidates(400_000) == 200
    assert default_candidates(10**9) == 1000  # capped: ColBERT re-scores every candidate
    counts = [10**k for k in range(3, 10)]
    depths = [default_candidates(n) for n in counts]
    assert depths == sorted(depths)
    with pytest.raises(InvalidInputError, match="not negative"):
        default_candidates(-1)


def test_a_search_without_candidates_uses_the_depth_for_its_size(new_collection, docs):
    collection = new_collection()
    collection.upsert(docs)
    query = as_query(docs[3])
    assert default_candidates(collection.count()) == 100
    assert _ranked(collection.search(query, 10, mode="all")) == _ranked(
        collection.search(query, 10, mode="all", candidates=100)
    )


def test_a_stored_rerank_depth_is_the_default_cascade(new_collection, docs):
    collection = new_collection()
    collection.upsert(docs)
    query = as_query(docs[3])
    assert _ranked(collection.search(query, 5, mode="all")) == _ranked(
        collection.search(query, 5, mode="all", rerank=RERANK_DEFAULT)
    )
    collection.set_search_defaults(SearchDefaults(rerank=5))
    shallow = collection.search(query, 5, mode="all", candidates=100)
    assert _ranked(shallow) == _ranked(collection.search(query, 5, mode="all", candidates=100, rerank=5))
    assert _ranked(shallow) != _ranked(collection.search(query, 5, mode="all", candidates=100, rerank=200))


def test_a_reader_sees_the_defaults_another_writer_stores_at_its_next_search(new_collection, docs):
    writer = new_collection()
    writer.upsert(docs)
    query = as_query(docs[3])
    with Collection.open(writer.path, readonly=True, cache=False) as reader:
        assert reader.search_defaults.mode is None
        everything = _ranked(reader.search(query, 5))
        writer.set_search_defaults(SearchDefaults(mode="dense"))
        assert reader.search_defaults.mode == "dense"
        assert _ranked(reader.search(query, 5)) == _ranked(reader.search(query, 5, mode="dense"))
        writer.set_search_defaults(SearchDefaults())
        assert _ranked(reader.search(query, 5)) == everything
