"""The collection's durable log and document store: one SQLite database in WAL mode with `synchronous=FULL`.

It holds every document (id, text, metadata), the vectors of documents not yet sealed into a segment (the
incremental level), tombstones of sealed rows that were deleted or replaced, the list of live segments (the
manifest) and BM25 statistics. A write is one transaction, so it is durable when it returns and invisible
until then; registering a new segment and dropping the rows it seals is also one transaction, so a crash at
any point leaves a consistent collection. Readers see the state as of their last refresh, a whole version.
"""

from __future__ import annotations

import mmap
import os
import sqlite3
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

import numpy as np

from m3search.encoders.bm25 import BM25Stats
from m3search.errors import CorruptCollectionError
from m3search.index.sparse import SparseRow

DB_FILE = "store.sqlite"

SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS docs (
    id TEXT PRIMARY KEY, seq INTEGER NOT NULL UNIQUE, kind TEXT NOT NULL, text TEXT, metadata TEXT NOT NULL,
    term_counts BLOB
);
CREATE TABLE IF NOT EXISTS pending (seq INTEGER PRIMARY KEY, dense BLOB, sparse BLOB, colbert BLOB);
CREATE TABLE IF NOT EXISTS tombstones (seq INTEGER PRIMARY KEY);
CREATE TABLE IF NOT EXISTS segments (name TEXT PRIMARY KEY, rows INTEGER NOT NULL, min_seq INTEGER NOT NULL,
    max_seq INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS bm25_df (token INTEGER PRIMARY KEY, df INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS thumbnails (seq INTEGER PRIMARY KEY, jpeg BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS segment_files (segment TEXT NOT NULL, file TEXT NOT NULL, bytes INTEGER NOT NULL,
    checksum TEXT NOT NULL, PRIMARY KEY (segment, file)) WITHOUT ROWID;
"""
#: SQLite result codes that mean the database file itself is damaged or is not a database.
DAMAGE_CODES = frozenset({"SQLITE_CORRUPT", "SQLITE_NOTADB", "SQLITE_IOERR_SHORT_READ"})

#: Reserved metadata field under which a document's kind is indexed for filters (text documents leave it out,
#: so text-only collections index exactly their own metadata). Starts with "@" so no filter operator clashes.
KIND_FIELD = "@kind"
#: The metadata a level's filter index is built from: the stored metadata plus the kind of non-text documents.
_INDEXED_METADATA = (
    f"CASE WHEN d.kind = 'text' THEN d.metadata ELSE json_set(d.metadata, '$.\"{KIND_FIELD}\"', d.kind) END"
)
#: SQLite's page cache per connection, KiB (its default: 2 MB). A search reads its hits' rows at random: with
#: the default, a 100k-document file (9.5 MB) cost 12 `pread`s of 10-20 µs each per search on a virtual machine.
#: The cache fills only with pages read; WAL mode keeps it across transactions while the file is unchanged.
CACHE_KIB = 64 * 1024
#: The columns of a `DocRow`.
_DOC_COLUMNS = (
    "d.id, d.seq, d.kind, d.text, d.metadata, EXISTS (SELECT 1 FROM thumbnails t WHERE t.seq = d.seq)"
)

#: Bind at most this many values per SQL statement (SQLite's limit is 32766).
CHUNK = 10_000
#: Bytes of SQLite's wal-index header at the start of the `-shm` file (sqlite.org/walformat.html, 2.1: two
#: copies of a 48-byte header, the first written last by a commit). It changes with every commit.
WAL_INDEX_HEADER = 48


@dataclass
class DocRow:
    """A document as stored: what `get` and search results return."""

    id: str
    seq: int
    kind: str
    text: str | None
    metadata: str
    has_thumbnail: bool = False


@dataclass
class PendingRow:
    """Vectors of one document of the incremental level (colbert loaded separately: it is large)."""

    seq: int
    dense: np.ndarray | None
    sparse: SparseRow | None
    has_colbert: bool
    metadata: str


def pack_sparse(row: SparseRow) -> bytes:
    """Token ids (int32) then weights (float32)."""
    ids, weights = row
    return np.asarray(ids, np.int32).tobytes() + np.asarray(weights, np.float32).tobytes()


def unpack_sparse(blob: bytes) -> SparseRow:
    half = len(blob) // 2
    return np.frombuffer(blob[:half], np.int32).astype(np.int64), np.frombuffer(blob[half:], np.float32)


def pack_counts(counts: dict[int, int]) -> bytes:
    """BM25 term counts: token ids (int32) then counts (int32)."""
    return (
        np.asarray(list(counts), np.int32).tobytes() + np.asarray(list(counts.values()), np.int32).tobytes()
    )


def unpack_counts(blob: bytes) -> dict[int, int]:
    half = len(blob) // 2
    return dict(
        zip(np.frombuffer(blob[:half], np.int32).tolist(), np.frombuffer(blob[half:], np.int32).tolist())
    )


def indexed_metadata(metadata: dict[str, Any], kind: str) -> dict[str, Any]:
    """What the filter index holds for a document's metadata object (Python twin of `_INDEXED_METADATA`)."""
    return metadata if kind == "text" else {**metadata, KIND_FIELD: kind}


def _chunks(values: Sequence[Any]) -> Iterator[Sequence[Any]]:
    for start in range(0, len(values), CHUNK):
        yield values[start : start + CHUNK]


class Database:
    """Typed access to the collection's SQLite file; callers group writes with `write()`."""

    def __init__(self, path: Path, *, create: bool = False) -> None:
        """Open the database at `path`; only `create` makes a new file (an existing collection whose file is
        gone, empty or not a collection database gets `CorruptCollectionError` instead of a fresh one)."""
        self.path = path
        uri = f"file:{quote(str(path))}?mode={'rwc' if create else 'rw'}"
        self.conn = sqlite3.connect(
            uri, uri=True, isolation_level=None, check_same_thread=False, timeout=60.0
        )
        try:
            with self.damage_named():
                if (
                    not create
                    and self.conn.execute("SELECT 1 FROM sqlite_master WHERE name = 'docs'").fetchone()
                    is None
                ):
                    raise CorruptCollectionError(
                        f"collection {path.parent.name!r} is damaged: {path.name} holds no collection tables",
                        path.name,
                    )
                # freed pages (vectors moved from the pending table into segments) go back to the file system
                self.conn.execute("PRAGMA auto_vacuum=INCREMENTAL")
                self.conn.execute("PRAGMA journal_mode=WAL")
                self.conn.execute("PRAGMA synchronous=FULL")
                self.conn.execute(f"PRAGMA cache_size=-{CACHE_KIB}")
                self.conn.executescript(SCHEMA)
        except BaseException:
            self.conn.close()
            raise
        self._shm: mmap.mmap | None = None  # the `-shm` file mapped for `commit_marker`, once it can be

    def close(self) -> None:
        if self._shm is not None:
            self._shm.close()
            self._shm = None
        self.conn.close()

    @contextmanager
    def damage_named(self) -> Iterator[None]:
        """Turn SQLite's "malformed" / "not a database" errors inside into `CorruptCollectionError`."""
        try:
            yield
        except sqlite3.DatabaseError as exc:
            code = getattr(exc, "sqlite_errorname", None)  # Python >= 3.11; the message before
            if not (
                code in DAMAGE_CODES if code else any(m in str(exc) for m in ("malformed", "not a database"))
            ):
                raise
            raise CorruptCollectionError(
                f"collection {self.path.parent.name!r} is damaged: {self.path.name} cannot be read ({exc})",
                self.path.name,
            ) from None

    def check(self) -> list[str]:
        """SQLite's own structural check of the whole file (`PRAGMA quick_check`): problems found, or []."""
        try:
            found = [r[0] for r in self.conn.execute("PRAGMA quick_check")]
        except sqlite3.DatabaseError as exc:  # too damaged to check
            return [str(exc)]
        return [] if found == ["ok"] else found

    @contextmanager
    def write(self) -> Iterator[None]:
        """One durable transaction: committed (and fsynced) on exit, rolled back on error."""
        with self.damage_named():
            self.conn.execute("BEGIN IMMEDIATE")
            try:
                yield
            except BaseException:
                self.conn.execute("ROLLBACK")
                raise
            self.conn.execute("COMMIT")

    @contextmanager
    def read(self) -> Iterator[None]:
        """A read transaction: every query inside sees the same committed version."""
        with self.damage_named():
            self.conn.execute("BEGIN")
            try:
                yield
            finally:
                self.conn.execute("COMMIT")

    def reclaim_space(self) -> None:
        """Return free pages to the file system (after a flush emptied the pending table)."""
        self.conn.execute("PRAGMA incremental_vacuum")

    def data_version(self) -> int:
        """Changes whenever another connection commits (SQLite's `PRAGMA data_version`)."""
        return int(self.conn.execute("PRAGMA data_version").fetchone()[0])

    def commit_marker(self) -> bytes | None:
        """SQLite's wal-index header, which every commit rewrites (in the `-shm` file, the shared memory
        SQLite's own readers look at): the same bytes as at an earlier call mean no commit since. A memory
        read, to put in front of `data_version`, a read transaction with file locks (20-60 µs in a search whose
        caches another engine's work has cooled). None when it cannot be read (no `-shm` file)."""
        shm = self._shm if self._shm is not None else self._map_shm()
        return None if shm is None else shm[:WAL_INDEX_HEADER]

    def _map_shm(self) -> mmap.mmap | None:
        """The `-shm` file mapped read-only, once this connection has it (after its first read in WAL mode;
        while the connection is open, SQLite neither truncates nor deletes it)."""
        try:
            with open(f"{self.path}-shm", "rb") as f:
                if os.fstat(f.fileno()).st_size < WAL_INDEX_HEADER:
                    return None
                self._shm = mmap.mmap(f.fileno(), WAL_INDEX_HEADER, access=mmap.ACCESS_READ)
        except (OSError, ValueError):  # no such file (not in WAL mode yet), or it cannot be mapped here
            return None
        return self._shm

    # ---- meta ------------------------------------------------------------------------------------------

    def get_meta(self, key: str, default: Any = None) -> Any:
        row = self.conn.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return default if row is None else row[0]

    def set_meta(self, key: str, value: Any) -> None:
        self.conn.execute("INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)", (key, value))

    def allocate_seqs(self, n: int) -> np.ndarray:
        """`n` new row numbers, never used before in this collection (seqs are never reused)."""
        first = int(self.get_meta("next_seq", 0))
        self.set_meta("next_seq", first + n)
        return np.arange(first, first + n, dtype=np.int64)

    # ---- documents -------------------------------------------------------------------------------------

    def seqs_of(self, ids: Sequence[str]) -> dict[str, int]:
        """id -> seq of the given ids that exist."""
        out: dict[str, int] = {}
        for chunk in _chunks(ids):
            marks = ",".join("?" * len(chunk))
            out.update(self.conn.execute(f"SELECT id, seq FROM docs WHERE id IN ({marks})", chunk).fetchall())
        return out

    def docs_by_id(self, ids: Sequence[str]) -> dict[str, DocRow]:
        out: dict[str, DocRow] = {}
        with self.damage_named():
            for chunk in _chunks(ids):
                marks = ",".join("?" * len(chunk))
                for row in self.conn.execute(
                    f"SELECT {_DOC_COLUMNS} FROM docs d WHERE d.id IN ({marks})", chunk
                ):
                    out[row[0]] = DocRow(row[0], row[1], row[2], row[3], row[4], bool(row[5]))
        return out

    def docs_by_seq(self, seqs: Sequence[int]) -> dict[int, DocRow]:
        out: dict[int, DocRow] = {}
        with self.damage_named():
            for chunk in _chunks([int(s) for s in seqs]):
                marks = ",".join("?" * len(chunk))
                for row in self.conn.execute(
                    f"SELECT {_DOC_COLUMNS} FROM docs d WHERE d.seq IN ({marks})", chunk
                ):
                    out[row[1]] = DocRow(row[0], row[1], row[2], row[3], row[4], bool(row[5]))
        return out

    def term_counts(self, seqs: Sequence[int]) -> dict[int, dict[int, int]]:
        """seq -> BM25 term counts of those documents that have them."""
        out: dict[int, dict[int, int]] = {}
        for chunk in _chunks([int(s) for s in seqs]):
            marks = ",".join("?" * len(chunk))
            for seq, blob in self.conn.execute(
                f"SELECT seq, term_counts FROM docs WHERE seq IN ({marks}) AND term_counts IS NOT NULL", chunk
            ):
                out[seq] = unpack_counts(blob)
        return out

    def insert_docs(self, rows: Iterable[tuple[str, int, str, str | None, str, bytes | None]]) -> None:
        """(id, seq, kind, text, metadata JSON, term counts) rows."""
        self.conn.executemany(
            "INSERT INTO docs (id, seq, kind, text, metadata, term_counts) VALUES (?, ?, ?, ?, ?, ?)", rows
        )

    def delete_docs(self, ids: Sequence[str]) -> None:
        for chunk in _chunks(ids):
            self.conn.execute(f"DELETE FROM docs WHERE id IN ({','.join('?' * len(chunk))})", chunk)

    def count_docs(self) -> int:
        return int(self.conn.execute("SELECT COUNT(*) FROM docs").fetchone()[0])

    def all_ids(self) -> list[str]:
        return [r[0] for r in self.conn.execute("SELECT id FROM docs ORDER BY seq")]

    # ---- thumbnails ------------------------------------------------------------------------------------

    def insert_thumbnails(self, rows: Iterable[tuple[int, bytes]]) -> None:
        """(seq, JPEG bytes) rows of documents that carry an image."""
        self.conn.executemany("INSERT INTO thumbnails (seq, jpeg) VALUES (?, ?)", rows)

    def delete_thumbnails(self, seqs: Sequence[int]) -> None:
        for chunk in _chunks([int(s) for s in seqs]):
            self.conn.execute(f"DELETE FROM thumbnails WHERE seq IN ({','.join('?' * len(chunk))})", chunk)

    def thumbnail(self, seq: int) -> bytes | None:
        with self.damage_named():
            row = self.conn.execute("SELECT jpeg FROM thumbnails WHERE seq = ?", (int(seq),)).fetchone()
        return None if row is None else bytes(row[0])

    # ---- incremental level -----------------------------------------------------------------------------

    def insert_pending(self, rows: Iterable[tuple[int, bytes | None, bytes | None, bytes | None]]) -> None:
        """(seq, dense float32 bytes, packed sparse, colbert float16 bytes) rows."""
        self.conn.executemany("INSERT INTO pending (seq, dense, sparse, colbert) VALUES (?, ?, ?, ?)", rows)

    def delete_pending(self, seqs: Sequence[int]) -> set[int]:
        """Remove pending rows; returns the seqs that were pending."""
        found: set[int] = set()
        for chunk in _chunks([int(s) for s in seqs]):
            marks = ",".join("?" * len(chunk))
            found.update(
                r[0] for r in self.conn.execute(f"SELECT seq FROM pending WHERE seq IN ({marks})", chunk)
            )
            self.conn.execute(f"DELETE FROM pending WHERE seq IN ({marks})", chunk)
        return found

    def load_pending(self) -> list[PendingRow]:
        rows = []
        for seq, dense, sparse, has_colbert, metadata in self.conn.execute(
            f"SELECT p.seq, p.dense, p.sparse, p.colbert IS NOT NULL, {_INDEXED_METADATA} FROM pending p "
            "JOIN docs d ON d.seq = p.seq ORDER BY p.seq"
        ):
            rows.append(
                PendingRow(
                    seq,
                    None if dense is None else np.frombuffer(dense, np.float32),
                    None if sparse is None else unpack_sparse(sparse),
                    bool(has_colbert),
                    metadata,
                )
            )
        return rows

    def pending_colbert(self, seqs: Sequence[int], dim: int) -> dict[int, np.ndarray]:
        """seq -> float16 token matrix of pending documents that have ColBERT vectors."""
        out: dict[int, np.ndarray] = {}
        for chunk in _chunks([int(s) for s in seqs]):
            marks = ",".join("?" * len(chunk))
            for seq, blob in self.conn.execute(
                f"SELECT seq, colbert FROM pending WHERE seq IN ({marks}) AND colbert IS NOT NULL", chunk
            ):
                out[seq] = np.frombuffer(blob, np.float16).reshape(-1, dim)
        return out

    def pending_colbert_tokens(self, seqs: Sequence[int], dim: int) -> dict[int, int]:
        """seq -> token count of pending documents that have ColBERT vectors (the blobs' sizes: not read)."""
        out: dict[int, int] = {}
        for chunk in _chunks([int(s) for s in seqs]):
            marks = ",".join("?" * len(chunk))
            for seq, size in self.conn.execute(
                f"SELECT seq, length(colbert) FROM pending WHERE seq IN ({marks}) AND colbert IS NOT NULL",
                chunk,
            ):
                out[seq] = size // (2 * dim)
        return out

    # ---- tombstones and segments -----------------------------------------------------------------------

    def add_tombstones(self, seqs: Iterable[int]) -> None:
        self.conn.executemany("INSERT OR IGNORE INTO tombstones (seq) VALUES (?)", ((int(s),) for s in seqs))

    def remove_tombstones(self, seqs: Iterable[int]) -> None:
        self.conn.executemany("DELETE FROM tombstones WHERE seq = ?", ((int(s),) for s in seqs))

    def tombstones(self) -> np.ndarray:
        return np.fromiter(
            (r[0] for r in self.conn.execute("SELECT seq FROM tombstones ORDER BY seq")), np.int64
        )

    def add_segment(self, name: str, rows: int, min_seq: int, max_seq: int) -> None:
        self.conn.execute(
            "INSERT INTO segments (name, rows, min_seq, max_seq) VALUES (?, ?, ?, ?)",
            (name, rows, min_seq, max_seq),
        )

    def remove_segments(self, names: Iterable[str]) -> None:
        names = list(names)
        self.conn.executemany("DELETE FROM segments WHERE name = ?", ((n,) for n in names))
        self.conn.executemany("DELETE FROM segment_files WHERE segment = ?", ((n,) for n in names))

    def add_segment_files(self, name: str, files: Iterable[tuple[str, int, str]]) -> None:
        """Record (file name, size in bytes, checksum) of each file of segment `name`."""
        self.conn.executemany(
            "INSERT INTO segment_files (segment, file, bytes, checksum) VALUES (?, ?, ?, ?)",
            ((name, *f) for f in files),
        )

    def segment_files(self) -> dict[str, list[tuple[str, int, str]]]:
        """segment -> its recorded (file, bytes, checksum); segments sealed before checksums were kept have
        none."""
        out: dict[str, list[tuple[str, int, str]]] = {}
        for segment, *record in self.conn.execute(
            "SELECT segment, file, bytes, checksum FROM segment_files ORDER BY segment, file"
        ):
            out.setdefault(segment, []).append((record[0], record[1], record[2]))
        return out

    def segment_names(self) -> list[str]:
        return [r[0] for r in self.conn.execute("SELECT name FROM segments ORDER BY min_seq")]

    # ---- BM25 statistics -------------------------------------------------------------------------------

    def load_bm25(self) -> BM25Stats:
        df = dict(self.conn.execute("SELECT token, df FROM bm25_df").fetchall())
        return BM25Stats(int(self.get_meta("bm25_n_docs", 0)), int(self.get_meta("bm25_total_len", 0)), df)

    def update_bm25(self, n_docs: int, total_len: int, df_delta: dict[int, int]) -> None:
        """Store the new totals and add `df_delta` to the document frequencies (dropping those reaching 0)."""
        self.set_meta("bm25_n_docs", n_docs)
        self.set_meta("bm25_total_len", total_len)
        changes = [(t, d) for t, d in df_delta.items() if d]
        self.conn.executemany(
            "INSERT INTO bm25_df (token, df) VALUES (?, ?) ON CONFLICT(token) DO UPDATE SET df = df + excluded.df",
            changes,
        )
        self.conn.executemany("DELETE FROM bm25_df WHERE token = ? AND df <= 0", ((t,) for t, _ in changes))
