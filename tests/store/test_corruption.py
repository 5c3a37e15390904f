"""Damaged collection files: every kind of file truncated, flipped or deleted gives `CorruptCollectionError`
naming the file or results equal to a clean copy's, and the next write never loses data."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from m3search import Collection
from m3search.errors import CorruptCollectionError
from m3search.index.sparse import FORWARD_FILES
from m3search.store import integrity
from m3search.store.hit_documents import DOC_OFFSETS_FILE, DOCS_FILE
from tests.store.conftest import COLBERT_DIM, DIM, as_query, make_docs

SETTINGS = dict(
    dim=DIM,
    colbert_dim=COLBERT_DIM,
    flush_docs=50,
    merge_factor=10,
    hnsw={"min_rows": 40, "exact_max_rows": 5, "exact_max_fraction": 0.02},
    cache=False,
)
DOCS = make_docs(120)
#: A document the write after the damage adds.
NEW = make_docs(1, seed=7, start=500)[0]
#: Queries: documents from both segments and the incremental level, and one unrelated vector.
QUERIES = [as_query(DOCS[i]) for i in (1, 20, 55, 90, 105, 115)] + [as_query(make_docs(1, seed=99)[0])]


#: Binary ColBERT codes with float16 copies for re-check: every ColBERT file there is (codes, offsets, scales,
#: dtype record, center, float16 copies).
COMPRESSED = dict(colbert_dtype="binary", colbert_recheck=5)


def build(path: Path, **options) -> Path:
    """Two sealed segments (with HNSW graphs), pending rows, and tombstones of sealed and pending rows."""
    with Collection.create(path, **SETTINGS, **options) as c:
        c.upsert(DOCS[:60])
        c.upsert(DOCS[60:110])
        c.upsert(DOCS[110:])
        c.delete(["d3", "d60", "d110"])
        c.upsert([{**make_docs(1, seed=5, start=7)[0]}])  # d7 again: its sealed row is tombstoned
        stats = c.stats()
        assert len(stats["segments"]) == 2 and stats["pending"] > 0 and stats["tombstones"] == 3
    return path


@pytest.fixture(scope="module")
def clean(tmp_path_factory) -> Path:
    return build(tmp_path_factory.mktemp("corruption") / "clean")


@pytest.fixture(scope="module")
def clean_compressed(tmp_path_factory) -> Path:
    return build(tmp_path_factory.mktemp("corruption") / "compressed", **COMPRESSED)


def fingerprint(c: Collection) -> list:
    """What a reader sees: ranked ids and scores of every query in two modes and under a filter, the count,
    and every stored document."""
    out: list = [c.count()]
    for q in QUERIES:
        for mode, filt in (("all", None), ("dense", None), ("all", {"lang": "en"})):
            out.append([(h.id, round(h.score, 5)) for h in c.search(q, k=8, mode=mode, filter=filt)])
    ids = [d["id"] for d in DOCS] + [NEW["id"]]
    out.append([(d.id, d.text, d.metadata) if d else None for d in c.get(ids)])
    return out


def observe(path: Path) -> list | CorruptCollectionError:
    try:
        with Collection.open(path) as c:
            return fingerprint(c)
    except CorruptCollectionError as exc:
        return exc


def write(path: Path) -> None:
    """The next write: one upsert, sealed into a segment (removing leftovers on the way)."""
    with Collection.open(path) as c:
        c.upsert([NEW])
        c.flush()


def fingerprints(clean: Path, scratch: Path) -> tuple[list, list]:
    """The clean copy's fingerprint, and its fingerprint after the write."""
    before = observe(clean)
    copy = scratch / "c"
    shutil.copytree(clean, copy)
    write(copy)
    return before, observe(copy)  # type: ignore[return-value]


@pytest.fixture(scope="module")
def expected(clean, tmp_path_factory) -> tuple[list, list]:
    return fingerprints(clean, tmp_path_factory.mktemp("expected"))


@pytest.fixture(scope="module")
def expected_compressed(clean_compressed, tmp_path_factory) -> tuple[list, list]:
    return fingerprints(clean_compressed, tmp_path_factory.mktemp("expected"))


def segment_files(clean: Path) -> list[str]:
    first = sorted((clean / "segments").iterdir())[0]
    return [f"segments/{first.name}/{f.name}" for f in sorted(first.iterdir())]


def damage(path: Path, how: str) -> None:
    size = path.stat().st_size
    if how == "delete":
        path.unlink()
    elif how == "truncate":
        with open(path, "r+b") as f:
            f.truncate(size // 2)
    else:  # 64 bytes inverted in the middle (store.sqlite: in its header, the part SQLite checks)
        data = bytearray(path.read_bytes())
        start = 0 if path.name == "store.sqlite" else max(0, min(size // 2, size - 64))
        for i in range(start, min(start + 64, size)):
            data[i] ^= 0xFF
        path.write_bytes(bytes(data))


@pytest.mark.parametrize("how", ["truncate", "flip", "delete"])
def test_corruption_matrix(clean, expected, tmp_path, how):
    """Every file of a collection, damaged in three ways: a `CorruptCollectionError` naming it or the clean
    copy's results; never silent wrong answers; after the write and restoring the file, nothing is lost."""
    files = ["config.json", "store.sqlite", *segment_files(clean)]
    assert len(files) > 10  # every kind of segment file: seqs, dense + graph, sparse, ColBERT, metadata
    check_damage(clean, expected, files, tmp_path, how)


@pytest.mark.parametrize("how", ["truncate", "flip", "delete"])
def test_corruption_matrix_of_compressed_colbert_files(clean_compressed, expected_compressed, tmp_path, how):
    """The same for the files of binary ColBERT stores with float16 copies for re-check."""
    files = [f for f in segment_files(clean_compressed) if f.rsplit("/", 1)[1].startswith("colbert")]
    names = {f.rsplit("/", 1)[1] for f in files}
    assert names == {
        f"colbert{s}" for s in (".npy", "_offsets.npy", "_scales.npy", ".json", "_center.npy", "_exact.npy")
    }
    check_damage(clean_compressed, expected_compressed, files, tmp_path, how)


def check_damage(
    clean: Path, expected: tuple[list, list], files: list[str], tmp_path: Path, how: str
) -> None:
    """Damage each of `files` (relative to the collection) of a copy of `clean` in the way `how` says: an error
    naming it or the clean results; the write after it and restoring the file lose nothing."""
    before, after = expected
    outcomes = {}
    for rel in files:
        work = tmp_path / rel.replace("/", "_")
        shutil.copytree(clean, work)
        damage(work / rel, how)
        seen = observe(work)
        if isinstance(seen, CorruptCollectionError):
            assert seen.file == rel, (rel, str(seen))
            assert rel in str(seen) and str(work) not in str(seen)
            outcomes[rel] = "error"
        else:
            assert seen == before, f"{rel} {how}: wrong results without an error"
            outcomes[rel] = "same"
        listing = sorted(work.glob("segments/*/*"))
        try:
            write(work)
        except CorruptCollectionError as exc:
            assert exc.file == rel, (rel, str(exc))
        assert all(p.exists() for p in listing), f"{rel} {how}: the write deleted files"
        # the damaged file restored from a backup: everything is there, the write applied (again) on top
        for leftover in work.glob("store.sqlite-*"):
            leftover.unlink()
        shutil.copy2(clean / rel, work / rel)
        write(work)
        assert observe(work) == after, f"{rel} {how}: data lost"
    # every damage is detected (a flipped config.json could in principle still parse to the same settings)
    assert all(outcomes[rel] == "error" for rel in files if rel != "config.json" or how != "flip"), outcomes


def test_missing_or_empty_database_refuses_to_open_and_keeps_segments(clean, tmp_path):
    for how in ("missing", "empty"):
        work = tmp_path / how
        shutil.copytree(clean, work)
        segments = sorted(p.name for p in (work / "segments").iterdir())
        if how == "missing":
            (work / "store.sqlite").unlink()
        else:
            (work / "store.sqlite").write_bytes(b"")
        with pytest.raises(
            CorruptCollectionError, match=f"store.sqlite is {how}.*2 segment directories"
        ) as info:
            Collection.open(work)
        assert info.value.file == "store.sqlite"
        assert sorted(p.name for p in (work / "segments").iterdir()) == segments


def test_a_replaced_database_never_deletes_segments(clean, tmp_path):
    """store.sqlite swapped for another (empty) collection's: refused at open, nothing deleted."""
    work = tmp_path / "c"
    shutil.copytree(clean, work)
    with Collection.create(tmp_path / "other", **SETTINGS):
        pass
    shutil.copy2(tmp_path / "other" / "store.sqlite", work / "store.sqlite")
    segments = sorted(p.name for p in (work / "segments").iterdir())
    with (
        pytest.raises(CorruptCollectionError, match="replaced or restored") as info,
        Collection.open(work) as c,
    ):
        c.upsert([NEW])
    assert info.value.file == f"segments/{segments[-1]}"
    assert sorted(p.name for p in (work / "segments").iterdir()) == segments


def test_only_the_damaged_segment_stops_reads_that_need_it(clean, tmp_path):
    """A damaged segment fails searches (they need every segment) with the file named; reads of stored
    documents and writes to the incremental level go on."""
    work = tmp_path / "c"
    shutil.copytree(clean, work)
    rel = segment_files(clean)[0].rsplit("/", 1)[0] + "/dense.npy"
    damage(work / rel, "flip")
    with Collection.open(clean, readonly=True) as c:
        count = c.count()
    with Collection.open(work) as c:
        assert c.count() == count
        assert c.get(["d1"])[0].text == "document number 1"
        with pytest.raises(CorruptCollectionError) as info:
            c.search(QUERIES[0])
        assert info.value.file == rel
        assert c.upsert([NEW]) == 1 and c.count() == count + 1
        assert c.stats()["damaged"]


@pytest.mark.parametrize(
    "collection,name", [("clean", "colbert.npy"), ("clean_compressed", "colbert_exact.npy")]
)
def test_large_files_are_checked_before_a_merge_and_by_verify(
    request, tmp_path, monkeypatch, collection, name
):
    """Files over the open-time threshold (ColBERT codes, their float16 copies): the size is checked at open,
    the bytes before a merge reads them (so compaction never bakes damage into the merged segment) and by
    `verify`."""
    clean = request.getfixturevalue(collection)
    monkeypatch.setattr(integrity, "OPEN_CHECK_BYTES", 0)
    work = tmp_path / "c"
    shutil.copytree(clean, work)
    rel = segment_files(clean)[0].rsplit("/", 1)[0] + f"/{name}"
    damage(work / rel, "flip")
    with Collection.open(work) as c:
        report = c.verify()
        assert [p.file for p in report["problems"]] == [rel] and report["unchecked"] == []
        segments = [s["name"] for s in c.stats()["segments"]]
        with pytest.raises(CorruptCollectionError) as info:
            c.compact()
        assert info.value.file == rel
    shutil.copy2(clean / rel, work / rel)
    with Collection.open(work) as c:
        assert c.verify()["problems"] == []
        assert segments[0] in [s["name"] for s in c.stats()["segments"]]  # nothing was merged away
        c.compact()
        assert len(c.stats()["segments"]) == 1


def test_segments_without_checksums_still_open(clean, tmp_path):
    """Collections sealed before checksums were recorded (format 2) open and search as before."""
    import json
    import sqlite3

    work = tmp_path / "c"
    shutil.copytree(clean, work)
    config = json.loads((work / "config.json").read_text())
    (work / "config.json").write_text(json.dumps({**config, "format": 2}))
    with sqlite3.connect(work / "store.sqlite") as db:
        db.execute("DROP TABLE segment_files")
    seen = observe(work)
    assert not isinstance(seen, CorruptCollectionError) and seen[1:-1] == observe(clean)[1:-1]
    with Collection.open(work, readonly=True) as c:
        assert len(c.verify()["unchecked"]) == 2
    damage(next((work / "segments").iterdir()) / "colbert_offsets.npy", "truncate")
    assert isinstance(observe(work), CorruptCollectionError)
    shutil.copytree(clean, tmp_path / "d")  # a well-formed array that does not fit its segment
    (tmp_path / "d" / "config.json").write_text(json.dumps({**config, "format": 2}))
    with sqlite3.connect(tmp_path / "d" / "store.sqlite") as db:
        db.execute("DROP TABLE segment_files")
    start = next((tmp_path / "d" / "segments").iterdir()) / "sparse_fwd_start.npy"
    np.save(start, np.load(start)[:-1])
    seen = observe(tmp_path / "d")
    assert isinstance(seen, CorruptCollectionError) and "sparse_fwd_start.npy" in str(seen)


@pytest.mark.parametrize(
    "files",
    [tuple(FORWARD_FILES.values()), (DOCS_FILE, DOC_OFFSETS_FILE)],
    ids=["sparse forward index", "document records"],
)
def test_segments_sealed_before_optional_files_open_and_merge(clean, tmp_path, files):
    """Segments written without the files later formats added (the sparse forward copy, looked up by binary
    search instead; the document records, read from the database instead), and so without them in the
    manifest, open and search like the clean copy; a merge writes them again."""
    import sqlite3

    work = tmp_path / "c"
    shutil.copytree(clean, work)
    with sqlite3.connect(work / "store.sqlite") as db:
        for segment in (work / "segments").iterdir():
            for file in files:
                (segment / file).unlink()
                db.execute("DELETE FROM segment_files WHERE segment = ? AND file = ?", (segment.name, file))
    assert observe(work) == observe(clean)
    same = tmp_path / "same"
    shutil.copytree(clean, same)
    for path in (work, same):
        with Collection.open(path) as c:
            assert c.verify()["problems"] == []
            c.compact()
    merged = list((work / "segments").iterdir())
    assert len(merged) == 1 and all((merged[0] / file).is_file() for file in files)
    assert observe(work) == observe(same)


def test_document_records_damaged_after_open_are_named_by_the_search(clean, tmp_path, monkeypatch):
    """Records are memory-mapped and checksummed at open only when small: bytes that change later and no
    longer parse are a `CorruptCollectionError` naming the file when a search reads them, never a wrong hit."""
    monkeypatch.setattr(integrity, "OPEN_CHECK_BYTES", 0)
    work = tmp_path / "c"
    shutil.copytree(clean, work)
    rel = segment_files(clean)[0].rsplit("/", 1)[0] + f"/{DOCS_FILE}"
    path = work / rel
    path.write_bytes(bytes(b ^ 0xFF for b in path.read_bytes()))  # the size stays: open finds nothing
    with Collection.open(work) as c:
        with pytest.raises(CorruptCollectionError) as info:
            for q in QUERIES:
                c.search(q, k=8, mode="dense")
        assert info.value.file == rel and "cannot be read" in str(info.value)
        assert [p.file for p in c.verify()["problems"]] == [rel]


def test_a_missing_segment_directory_is_named_not_retried(clean, tmp_path):
    """A listed segment whose directory is gone is damage, not "keeps changing under this reader"."""
    work = tmp_path / "c"
    shutil.copytree(clean, work)
    gone = sorted((work / "segments").iterdir())[1]
    shutil.rmtree(gone)
    with pytest.raises(CorruptCollectionError, match="listed in the manifest but missing") as info:
        Collection.open(work)
    assert info.value.file == f"segments/{gone.name}"


def test_database_damage_found_after_open_is_named(clean, tmp_path):
    """A damaged page met by a later read (here the thumbnails table's) is `CorruptCollectionError` naming
    store.sqlite, not sqlite3.DatabaseError; `verify` finds it without reading documents."""
    import sqlite3

    work = tmp_path / "c"
    shutil.copytree(clean, work)
    with sqlite3.connect(work / "store.sqlite") as db:
        page_size = db.execute("PRAGMA page_size").fetchone()[0]
        root = db.execute("SELECT rootpage FROM sqlite_master WHERE name = 'thumbnails'").fetchone()[0]
    data = bytearray((work / "store.sqlite").read_bytes())
    data[(root - 1) * page_size] = 0x01  # not a b-tree page type
    (work / "store.sqlite").write_bytes(bytes(data))
    with Collection.open(work) as c:
        with pytest.raises(CorruptCollectionError, match="store.sqlite cannot be read") as info:
            c.get(["d1"])
        assert info.value.file == "store.sqlite"
        assert [p.file for p in c.verify()["problems"]][:1] == ["store.sqlite"]
