"""Integrity of a collection's files: per-file checksums of sealed segments, checks at open, before merges and
on demand (`m3search index verify`), and the rules for deleting segment directories the manifest does not list.

Sealing a segment records each of its files' size and xxh3-128 checksum in the database (`segment_files`, in
the transaction that registers the segment). Opening a segment checks every file's size and the checksum of
the files it reads whole anyway (seqs, HNSW graph, ColBERT offsets, scales, dtype record and binary center,
metadata paths, document offsets) and of every file up to `OPEN_CHECK_BYTES`; the large memory-mapped files
(dense vectors, ColBERT codes and their float16 copies for re-check, sparse postings, metadata arrays, document
records) are checksummed before a merge reads them and by `verify`; a document record that does not parse when a
search reads it is reported too. Segments sealed before checksums were recorded are opened with structural
checks only. Every damage found is one `CorruptCollectionError` naming the file. See docs/INDEX.md
("Integrity").
"""

from __future__ import annotations

import logging
import re
import shutil
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

import numpy as np
import xxhash

from m3search.errors import CorruptCollectionError
from m3search.index.dense import ANN_FILE, ORDER_FILE
from m3search.index.multivector import (
    CENTER_FILE,
    EXACT_FILE,
    META_FILE,
    OFFSETS_FILE,
    SCALES_FILE,
    MultiVectorStore,
    code_layout,
)
from m3search.index.sparse import FORWARD_FILES
from m3search.store.config import CONFIG_FILE, CollectionConfig
from m3search.store.database import DB_FILE
from m3search.store.hit_documents import DOC_OFFSETS_FILE, DOCS_FILE
from m3search.store.metadata import PATHS_FILE
from m3search.store.segments import SEGMENTS_DIR, SEQS_FILE, Segment
from m3search.threads import load_array

log = logging.getLogger(__name__)

#: The checksum recorded per segment file, as "<algorithm>:<hex digest>" (the prefix lets it change later).
CHECKSUM = "xxh3_128"
#: Files up to this size are checksummed at every open (cheap: they are small).
OPEN_CHECK_BYTES = 4 << 20
#: Files a segment reads whole when it is opened: their checksum costs little beside that read.
READ_WHOLE = frozenset(
    {
        SEQS_FILE,
        ANN_FILE,
        ORDER_FILE,
        OFFSETS_FILE,
        SCALES_FILE,
        META_FILE,
        CENTER_FILE,
        PATHS_FILE,
        DOC_OFFSETS_FILE,
    }
)
#: Bytes hashed per read.
READ_CHUNK = 8 << 20
#: A segment directory's name, and the temporary one it is written under.
SEGMENT_NAME = re.compile(r"seg-(\d+)")
TEMPORARY_NAME = re.compile(r"\.tmp-seg-\d+")

#: (file name, size in bytes, checksum) of one segment file, as the manifest records it.
FileRecord = tuple[str, int, str]


def damaged(collection: str, file: str, what: str) -> CorruptCollectionError:
    """The error for damage to `file` (relative to the collection's directory)."""
    return CorruptCollectionError(
        f"collection {collection!r} is damaged: {file} {what}; restore it from a backup or rebuild the "
        "collection (see `m3search index verify`)",
        file,
    )


def file_checksum(path: Path, progress: Callable[[int], object] | None = None) -> str:
    """The checksum of `path`'s contents, streamed; `progress` is called with each chunk's size."""
    digest = xxhash.xxh3_128()
    with open(path, "rb") as f:
        while chunk := f.read(READ_CHUNK):
            digest.update(chunk)
            if progress is not None:
                progress(len(chunk))
    return f"{CHECKSUM}:{digest.hexdigest()}"


def record_files(directory: Path) -> list[FileRecord]:
    """What the manifest records of a freshly written segment: every file's name, size and checksum."""
    return [(p.name, p.stat().st_size, file_checksum(p)) for p in sorted(directory.iterdir()) if p.is_file()]


def check_files(
    collection: str,
    directory: Path,
    records: Sequence[FileRecord],
    *,
    full: bool,
    progress: Callable[[int], object] | None = None,
) -> None:
    """Check a segment's files against the manifest: sizes always; checksums of all files (`full`) or of the
    small ones and those read whole at open. Raises `FileNotFoundError` when the whole directory is gone (a
    merge removed it under a reader), `CorruptCollectionError` for any damage."""
    where = f"{SEGMENTS_DIR}/{directory.name}"
    for name, size, checksum in records:
        path = directory / name
        try:
            found = path.stat().st_size
        except FileNotFoundError:
            if not directory.is_dir():
                raise
            raise damaged(collection, f"{where}/{name}", "is missing") from None
        if found != size:
            raise damaged(
                collection,
                f"{where}/{name}",
                f"has {found} bytes where {size} were written (truncated or overwritten)",
            )
        if full or size <= OPEN_CHECK_BYTES or name in READ_WHOLE:
            if file_checksum(path, progress) != checksum:
                raise damaged(
                    collection, f"{where}/{name}", "does not match its checksum (its bytes changed)"
                )
        elif progress is not None:
            progress(size)


def open_segment(
    collection: str, directory: Path, config: CollectionConfig, records: Sequence[FileRecord]
) -> Segment:
    """Load a listed segment after checking its files (see `check_files`) and its structure; any damage is a
    `CorruptCollectionError` naming the file. `FileNotFoundError`: the directory itself is gone."""
    where = f"{SEGMENTS_DIR}/{directory.name}"
    if not directory.is_dir():
        raise FileNotFoundError(directory)
    check_files(collection, directory, records, full=False)
    try:
        segment = Segment.load(directory, config)
    except FileNotFoundError as exc:
        if not directory.is_dir():
            raise
        raise damaged(collection, f"{where}/{Path(str(exc.filename)).name}", "is missing") from None
    except (ValueError, EOFError, OSError, RuntimeError, KeyError, IndexError) as exc:
        raise damaged(collection, where, f"cannot be read ({type(exc).__name__}: {exc})") from None
    problem = structure_problem(segment)
    if problem is not None:
        raise damaged(collection, f"{where}/{problem[0]}", problem[1])
    return segment


def structure_problem(segment: Segment) -> tuple[str, str] | None:
    """A cheap consistency check of an opened segment's in-memory arrays: (file, what is wrong) or None."""
    n = len(segment.seqs)
    if segment.seqs.ndim != 1 or (n > 1 and not bool(np.all(np.diff(segment.seqs) > 0))):
        return SEQS_FILE, "is not a strictly increasing list of row numbers"
    dense = segment.dense
    if dense is not None and len(dense.vectors) != n:
        return "dense.npy", f"has {len(dense.vectors)} rows for {n} documents"
    if dense is not None and dense.order is not None and not _is_permutation(dense.order, n):
        return ORDER_FILE, f"is not an order of the {n} rows"
    sparse = segment.sparse
    if sparse is not None and sparse.fwd_start is not None:
        postings = len(sparse.weights)
        if not _describes(sparse.fwd_start, n, postings):
            return FORWARD_FILES["fwd_start"], f"does not describe {n} rows of the {postings} sparse postings"
        if sparse.fwd_postings is not None and len(sparse.fwd_postings) != postings:
            return FORWARD_FILES["fwd_postings"], f"does not hold the {postings} sparse postings"
    documents = segment.documents
    if documents is not None and not _describes(documents.offsets, n, documents.size, empty_rows=False):
        return (
            DOC_OFFSETS_FILE,
            f"does not describe {n} document records in the {documents.size} bytes of {DOCS_FILE}",
        )
    if segment.colbert is not None:
        tokens = len(segment.colbert.tokens)
        if not _describes(segment.colbert.offsets, n, tokens):
            return OFFSETS_FILE, f"does not describe {n} rows of the {tokens} stored token vectors"
        return _colbert_problem(segment.colbert, tokens)
    return None


def _is_permutation(order: np.ndarray, rows: int) -> bool:
    """Whether `order` holds each of 0..rows-1 exactly once."""
    if order.ndim != 1 or len(order) != rows or not np.issubdtype(order.dtype, np.integer):
        return False
    if rows and (order.min() < 0 or order.max() >= rows):
        return False
    return bool(np.all(np.bincount(order, minlength=rows) == 1))


def _describes(offsets: np.ndarray, rows: int, total: int, *, empty_rows: bool = True) -> bool:
    """Whether `offsets` splits `total` items into `rows` consecutive rows: rows + 1 ascending offsets from 0 to
    `total` (strictly ascending where no row may be empty)."""
    if offsets.ndim != 1 or len(offsets) != rows + 1 or offsets[0] != 0 or offsets[-1] != total:
        return False
    steps = np.diff(offsets)
    return not bool(np.any(steps < 0 if empty_rows else steps <= 0))


def _colbert_problem(store: MultiVectorStore, tokens: int) -> tuple[str, str] | None:
    """What is inconsistent between a ColBERT store's files (codes, scales, center, float16 copies)."""
    if store.dtype == "binary" and (store.center is None or store.center.shape != (2, store.dim)):
        return CENTER_FILE, f"is not the (2, {store.dim}) center binary codes need"
    code_dtype, width = code_layout(store.dtype, store.dim, store.center)
    if store.tokens.dtype != code_dtype or store.tokens.shape[1:] != (width,):
        return META_FILE, f"says {store.dtype} {store.dim}-d, which colbert.npy does not hold"
    if store.scales is not None and len(store.scales) != tokens:
        return SCALES_FILE, f"has {len(store.scales)} scales for {tokens} token vectors"
    if store.exact is not None and store.exact.shape != (tokens, store.dim):
        return EXACT_FILE, f"has shape {store.exact.shape} for {tokens} {store.dim}-d token vectors"
    return None


def verify_collection(
    collection: str,
    root: Path,
    listed: Sequence[str],
    records: dict[str, list[FileRecord]],
    config: CollectionConfig,
    database_problems: list[str],
    progress: Callable[[int], object] | None = None,
) -> list[CorruptCollectionError]:
    """Every damage in a collection (database structure, every listed segment, every byte checksummed)."""
    problems = [damaged(collection, DB_FILE, f"fails SQLite's check: {p}") for p in database_problems[:10]]
    for name in listed:
        directory = root / SEGMENTS_DIR / name
        if not directory.is_dir():
            problems.append(damaged(collection, f"{SEGMENTS_DIR}/{name}", "is listed but missing"))
            continue
        try:
            check_files(collection, directory, records.get(name, []), full=True, progress=progress)
            open_segment(collection, directory, config, records.get(name, []))
        except CorruptCollectionError as exc:
            problems.append(exc)
    return problems


def segment_bytes(listed: Iterable[str], records: dict[str, list[FileRecord]]) -> int:
    """The bytes `verify_collection` reads (for a progress bar)."""
    return sum(size for name in listed for _, size, _ in records.get(name, []))


def check_database_file(path: Path) -> None:
    """Refuse a collection whose database is missing or empty while its other files are there: opening it
    would show an empty collection and the first write would discard its segments."""
    db = path / DB_FILE
    try:
        size = db.stat().st_size
    except FileNotFoundError:
        size = None
    if size:
        return
    segments = path / SEGMENTS_DIR
    found = sorted(p.name for p in segments.iterdir()) if segments.is_dir() else []
    there = f"{CONFIG_FILE} and {len(found)} segment director{'y' if len(found) == 1 else 'ies'}"
    if found:
        there += f" ({', '.join(found[:5])}{', ...' if len(found) > 5 else ''})"
    raise damaged(
        path.name,
        DB_FILE,
        f"is {'missing' if size is None else 'empty'} while {there} are there; the database holds the "
        "documents and the list of segments, so the collection cannot be opened without it",
    )


def newer_segments(root: Path, next_segment: int) -> list[str]:
    """Segment directories numbered above `next_segment`: none can exist unless the database lost track (a
    writer only ever writes the segment numbered `next_segment` before registering it)."""
    directory = root / SEGMENTS_DIR
    if not directory.is_dir():
        return []
    return sorted(
        p.name
        for p in directory.iterdir()
        if (m := SEGMENT_NAME.fullmatch(p.name)) and int(m[1]) > next_segment
    )


def remove_leftovers(
    collection: str, root: Path, listed: Iterable[str], next_segment: int, next_seq: int, known_good: bool
) -> list[str]:
    """Delete the segment directories a writer may discard, under its lock: temporary ones, merged-away ones
    (numbered below the database's next segment number) and the one a crash left before registering it
    (numbered next, holding only rows the database allocated) — the last only while `known_good` (every
    listed segment opened cleanly). A directory the manifest cannot account for is a `CorruptCollectionError`,
    never deleted; names m3search does not write are left alone."""
    directory = root / SEGMENTS_DIR
    if not directory.is_dir():
        return []
    keep = set(listed)
    removed = []
    for entry in sorted(directory.iterdir()):
        number = SEGMENT_NAME.fullmatch(entry.name)
        if entry.name in keep:
            continue
        if not number and not TEMPORARY_NAME.fullmatch(entry.name):
            log.warning("leaving %s alone: not a segment directory m3search writes", entry)
            continue
        if number and not _discardable(entry, int(number[1]), next_segment, next_seq, known_good):
            raise damaged(
                collection,
                f"{SEGMENTS_DIR}/{entry.name}",
                f"is not in the database's segment list, which cannot account for it (next segment "
                f"{next_segment}, next row {next_seq}): {DB_FILE} may have been replaced or restored from an "
                "older copy; refusing to write so that nothing is deleted",
            )
        shutil.rmtree(entry, ignore_errors=True)
        removed.append(entry.name)
    return removed


def _discardable(directory: Path, number: int, next_segment: int, next_seq: int, known_good: bool) -> bool:
    """Whether unlisted segment `number` is provably not needed: merged away (numbered below the next one), or
    left by a crash before its registration (numbered next, only rows this database allocated)."""
    if number < next_segment:
        return True
    if number > next_segment or not known_good:
        return False
    try:
        seqs = load_array(directory / SEQS_FILE)
    except (OSError, ValueError, EOFError):
        return False
    return len(seqs) == 0 or int(seqs.max()) < next_seq
