"""Searches read their hits' documents from the segments' records (`m3search.store.hit_documents`): the same
documents the database holds, whichever way the segment was sealed."""

from __future__ import annotations

import json

import numpy as np
import pytest

from m3search.store import hit_documents
from m3search.store.hit_documents import (
    DOC_OFFSETS_FILE,
    DOCS_FILE,
    HitDocuments,
    record,
    runs,
    write_documents,
)
from tests.store.conftest import as_query, make_docs


def varied(n: int, seed: int, start: int) -> list[dict]:
    """Documents whose ids, texts and metadata exercise JSON: non-ASCII, quotes, no text, empty and nested
    metadata."""
    docs = make_docs(n, seed=seed, start=start)
    for i, d in enumerate(docs):
        if i % 4 == 1:
            d["id"] = f'ü"{d["id"]}\\/'
            d["text"] = 'Größe "quoted" \\ 東京\n' + d["text"]
        if i % 4 == 2:
            d["text"] = None  # stored vectors only
        if i % 4 == 3:
            d["metadata"] = {}
        if i % 5 == 0:
            d["metadata"] = {**d["metadata"], "deep": {"x": [1, {"y": None}], "s": "ß"}, "f": 0.1}
    return docs


def hits_match_the_database(c, queries: list[dict]) -> set[str]:
    """Search every query in three modes; every hit equals the document `get` reads from the database.
    Returns the ids hit."""
    seen = set()
    for doc in queries:
        for mode in ("dense", "sparse", "all"):
            for hit in c.search(as_query(doc), k=20, mode=mode):
                stored = c.get([hit.id])[0]
                assert (hit.id, hit.text, hit.metadata, hit.kind, hit.thumbnail) == (
                    stored.id,
                    stored.text,
                    stored.metadata,
                    stored.kind,
                    stored.thumbnail,
                )
                seen.add(hit.id)
    return seen


def test_hits_carry_the_stored_documents_from_every_kind_of_segment(new_collection) -> None:
    """Segments sealed from the incremental level, written from a large batch and merged, plus pending rows:
    every hit equals the stored document."""
    c = new_collection(merge_factor=3)
    small, large, more = varied(40, 1, 0), varied(60, 2, 100), varied(30, 3, 300)
    for start in range(0, 40, 10):
        c.upsert(small[start : start + 10])
    c.flush()  # sealed from the incremental level
    c.upsert(large)  # >= flush_docs: written as a segment directly
    c.upsert(more[:5])  # pending
    sizes = sorted(len(s) for s in c.backend._segments.values())
    assert sizes == [40, 60] and c.stats()["pending"] == 5
    assert len(hits_match_the_database(c, [*small[::3], *large[::7], more[0]])) > 60
    c.upsert(more[5:])
    c.flush()  # a third segment: the three merge into one
    assert [len(s) for s in c.backend._segments.values()] == [130]
    assert len(hits_match_the_database(c, [*small[::3], *large[::7], *more[::5]])) > 60
    assert all(s.documents is not None for s in c.backend._segments.values())


@pytest.mark.parametrize("run", [1, 2, 3])
def test_records_round_trip_and_runs_copy_them(tmp_path, monkeypatch, run: int) -> None:
    rows = [
        ("a", "text", "x", '{"k": 1}', False),
        ('b"', "image", None, "{}", True),
        ("ç", "text", "", "{}", False),
    ]
    records = [record(*r) for r in rows]
    monkeypatch.setattr(hit_documents, "RUN", run)
    write_documents(tmp_path, runs(records))
    docs = HitDocuments.load(tmp_path)
    assert docs is not None and len(docs) == 3
    assert np.load(tmp_path / DOC_OFFSETS_FILE)[-1] == (tmp_path / DOCS_FILE).stat().st_size == docs.size
    expected = [
        [doc_id, kind, text, int(thumb), json.loads(meta)] for doc_id, kind, text, meta, thumb in rows
    ]
    assert docs.read([0, 1, 2]) == expected and docs.read([2, 0]) == [expected[2], expected[0]]
    data, lengths = docs.run(1, 3)  # what a merge copies
    assert data == records[1] + records[2] and lengths.tolist() == [len(records[1]), len(records[2])]


def test_a_segment_sealed_without_records_has_none(tmp_path) -> None:
    assert HitDocuments.load(tmp_path) is None
