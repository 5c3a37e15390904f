"""The `local` backend: the embedded engine, a directory opened in-process (no server).

Layout of a collection directory:

    config.json      what it stores and how (written once, atomically)
    store.sqlite     documents, the incremental level's vectors, tombstones, the segment list, BM25 statistics,
                     image thumbnails
    image_encoder/   the image adapter, for collections that hold images (see `m3search.store.images`)
    segments/NAME/   immutable segments: seqs, dense vectors (+ HNSW graph), sparse postings, ColBERT tokens
    write.lock       the writer lock

Writes (`write`, `delete`) are one SQLite transaction each and durable when they return; new documents land
in the incremental level, which `flush` seals into a segment every `flush_docs` documents, and segments of a
similar size are merged (`compact` merges everything). A batch of at least `flush_docs` documents becomes a
segment directly: its vectors never pass through the database's pending rows (written to the WAL, copied into
the file, read back and deleted at the flush: ~3/4 of a ColBERT-heavy ingest's time), and the transaction that
inserts its documents also registers the segment. One process writes at a time; any number read, each
seeing whole versions.
"""

from __future__ import annotations

import contextlib
import functools
import json
import logging
import re
import sys
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, cast

import numpy as np
from tqdm.auto import tqdm

from m3search.encoders.bm25 import BM25Encoder, BM25Stats, TermCounts
from m3search.errors import (
    CollectionClosedError,
    CollectionError,
    CollectionNotFoundError,
    CorruptCollectionError,
    InvalidInputError,
)
from m3search.index.dense import VECTORS_FILE, BackgroundGraph
from m3search.index.multivector import (
    CENTER_SAMPLE,
    ColbertDtype,
    EncodedTokens,
    StoredRows,
    encode_tokens,
    fit_center,
)
from m3search.index.ranges import consecutive_runs
from m3search.index.sparse import SparseIndex
from m3search.search.modes import MODE_KINDS, ONE_STAGE_MODES
from m3search.search.planner import ROW_MASK, QueryVectors, SearchLevel, gather, one_stage
from m3search.search.results import Hit
from m3search.store import integrity
from m3search.store.backends.base import Ranker, SearchPlan
from m3search.store.bm25 import as_sparse_row, df_delta, document_weights, lengths, stats_after
from m3search.store.compaction import merge_group
from m3search.store.config import CONFIG_FILE, CollectionConfig, new_directory
from m3search.store.database import DB_FILE, KIND_FIELD, Database, indexed_metadata, pack_counts, pack_sparse
from m3search.store.documents import Document
from m3search.store.filters import Filter, Predicate, compile_filter
from m3search.store.hit_documents import DOCS_FILE, RUN, Run, record, runs
from m3search.store.ingest import PreparedBatch
from m3search.store.lock import WriterLock
from m3search.store.metadata import MetadataIndex
from m3search.store.pending import PendingLevel, StaleReadError
from m3search.store.segments import SEGMENTS_DIR, FileRows, Segment, SegmentData, write_segment
from m3search.threads import one_thread

log = logging.getLogger(__name__)

#: Rows of ColBERT vectors read from the database at a time while sealing the incremental level.
COLBERT_READ_BATCH = 256
#: Filters whose compiled form and segment masks are kept between searches.
FILTER_CACHE_SIZE = 16
#: Times a reader re-runs a search that raced with another process's flush or delete.
STALE_RETRIES = 5
#: The filter selecting documents that have only a dense vector (images without text); hybrid modes score
#: them by that vector alone.
DENSE_ONLY: Filter = {KIND_FIELD: "image"}


class LocalBackend:
    """The embedded engine over one collection directory (see the module docstring)."""

    def __init__(
        self, path: Path, *, readonly: bool = False, bm25: Callable[[], BM25Encoder | None] = lambda: None
    ) -> None:
        """Open the collection directory at `path`; `bm25()` gives the BM25 encoder that re-weights sealed
        rows (collections with BM25 sparse weights)."""
        self.path = Path(path)
        if not (self.path / CONFIG_FILE).is_file():
            if (self.path / DB_FILE).is_file():
                raise integrity.damaged(
                    self.path.name,
                    CONFIG_FILE,
                    f"is missing while {DB_FILE} is there (it holds the settings needed to read it)",
                )
            raise CollectionNotFoundError(f"no collection at {self.path} (no {CONFIG_FILE}); create it first")
        self.config = CollectionConfig.load(self.path)
        self.location = str(self.path)
        self.readonly = readonly
        self._bm25 = bm25
        self._mutex = threading.RLock()
        self._closed = False
        integrity.check_database_file(self.path)
        self._db = Database(self.path / DB_FILE)
        self._lock = WriterLock(self.path)
        self._segments_dir = self.path / SEGMENTS_DIR
        # the writer's graph linked in the background over new segments that have none, for their merge
        self._background: BackgroundGraph | None = None
        self._segments: dict[str, Segment] = {}
        #: listed segments whose files are damaged: searches (which need every segment) raise their error
        self._damaged: dict[str, CorruptCollectionError] = {}
        self._dead: dict[str, np.ndarray] = {}
        self._tombstones = np.empty(0, np.int64)
        self._bm25_stats = BM25Stats() if self.config.sparse_source == "bm25" else None
        colbert_fetch = None
        if "colbert" in self.config.outputs:

            def colbert_fetch(seqs: list[int]) -> dict[int, np.ndarray]:
                return self._db.pending_colbert(seqs, self.config.colbert_dim or 0)

        self._pending = PendingLevel(
            self.config.dim if "dense" in self.config.outputs else None,
            colbert_fetch,
            sparse="sparse" in self.config.outputs,
        )
        self._count = 0
        self._version = -1
        self._loads = 0
        #: what an unfiltered search runs over (`_levels`); None whenever segments, tombstones or the incremental
        #: level change (`_reload`, `_forget`, `write`): rebuilding it cost ~20 µs a search
        self._plain_levels: list[SearchLevel] | None = None
        #: `Database.commit_marker` when `refresh` last found this state current
        self._marker: bytes | None = None
        #: filter -> (its predicate, segment name -> row mask)
        self._filter_cache: OrderedDict[str, tuple[Predicate, dict[str, np.ndarray]]] = OrderedDict()
        try:
            self._reload()
        except BaseException:
            self._db.close()
            raise

    @staticmethod
    def create(path: Path, config: CollectionConfig, install: Callable[[Path], None] | None = None) -> None:
        """Make an empty collection directory at `path`, whole or not at all; `install(tmp)` adds files (the
        image encoder) before it appears."""

        def fill(tmp: Path) -> None:
            (tmp / SEGMENTS_DIR).mkdir()
            if install is not None:
                install(tmp)
            config.save(tmp)
            Database(tmp / DB_FILE, create=True).close()

        new_directory(path, fill)

    def close(self) -> None:
        """Release the writer lock and the database; later calls raise `CollectionClosedError`."""
        with self._mutex:  # waits for a call in progress (a write, a search) to finish
            self._closed = True
            if self._background is not None:
                self._background.take([])
            self._lock.release()
            self._db.close()

    def bm25_stats(self) -> BM25Stats | None:
        """The live BM25 statistics (updated in place by every write and reload)."""
        return self._bm25_stats

    # ---- state -----------------------------------------------------------------------------------------

    def _reload(self) -> None:
        """Load the committed state (segment list, tombstones, incremental level) as one version."""
        for attempt in range(20):
            version = self._db.data_version()
            with self._db.read():
                names = self._db.segment_names()
                files = self._db.segment_files()
                next_segment = int(self._db.get_meta("next_segment", 0))
                tombstones = self._db.tombstones()
                pending = self._db.load_pending()
                count = self._db.count_docs()
                stats = self._db.load_bm25() if self._bm25_stats is not None else None
            try:
                segments, damaged = self._open_segments(names, files)
            except FileNotFoundError:  # merged away by the writer since we read the list: read it again
                if self._db.data_version() == version:  # ... unless nothing was committed since: it is gone
                    gone = next((n for n in names if not (self._segments_dir / n).is_dir()), "")
                    raise integrity.damaged(
                        self.path.name, f"{SEGMENTS_DIR}/{gone}", "is listed in the manifest but missing"
                    ) from None
                log.debug("segment vanished while loading (attempt %d); reloading", attempt)
                continue
            unaccounted = integrity.newer_segments(self.path, next_segment)
            if unaccounted and self._db.data_version() == version:  # no commit since: not a writer's new one
                raise integrity.damaged(
                    self.path.name,
                    f"{SEGMENTS_DIR}/{unaccounted[0]}",
                    f"is newer than every segment {DB_FILE} knows (next segment {next_segment}): the database "
                    "was replaced or restored from an older copy",
                )
            break
        else:
            raise CollectionError(f"collection {self.path} keeps changing under this reader; try again")
        self._segments, self._damaged = segments, damaged
        self._tombstones = tombstones
        self._dead = {n: s.rows_of(tombstones) for n, s in segments.items()} if len(tombstones) else {}
        self._pending.clear()
        self._pending.add((p.seq, p.dense, p.sparse, p.has_colbert, p.metadata) for p in pending)
        self._plain_levels = None
        self._count = count
        if stats is not None and self._bm25_stats is not None:
            self._bm25_stats.n_docs, self._bm25_stats.total_len = stats.n_docs, stats.total_len
            self._bm25_stats.df = stats.df
        self._version = version
        self._loads += 1

    def _open_segments(
        self, names: list[str], files: dict[str, list[integrity.FileRecord]]
    ) -> tuple[dict[str, Segment], dict[str, CorruptCollectionError]]:
        """The listed segments, opened (kept from the last load) or found damaged. `FileNotFoundError`: one's
        directory is gone (merged away under this reader, or lost)."""
        segments, damaged = {}, {}
        for name in names:
            if name in self._segments:
                segments[name] = self._segments[name]
                continue
            directory = self._segments_dir / name
            try:
                segments[name] = integrity.open_segment(
                    self.path.name, directory, self.config, files.get(name, [])
                )
            except CorruptCollectionError as exc:
                log.error("%s", exc)
                damaged[name] = exc
        return segments, damaged

    def _check_open(self) -> None:
        if self._closed:
            raise CollectionClosedError(
                f"collection {self.path.name!r} is closed (it was closed or deleted while in use)"
            )

    def _check_whole(self) -> None:
        """Raise the first damage found in a listed segment (work that needs every segment cannot proceed)."""
        if self._damaged:
            raise next(iter(self._damaged.values()))

    def refresh(self) -> int:
        """Reload when another process committed since the last load; returns the number of loads."""
        with self._mutex:
            self._check_open()
            marker = self._db.commit_marker()  # read first: a commit after it changes the next one
            if marker is None or marker != self._marker:
                if self._db.data_version() != self._version:
                    self._reload()
                self._marker = marker
            return self._loads

    def _writable(self) -> None:
        """Take the writer lock on first write, clean up what a crashed writer left, start from fresh state."""
        self._check_open()
        if self.readonly:
            raise CollectionError(f"collection {self.path} is open read-only")
        if not self._lock.held:
            self._lock.acquire()
            try:
                self._reload()
                self._remove_leftovers()
            except BaseException:
                self._lock.release()
                raise

    def _remove_leftovers(self) -> None:
        """Under the writer lock: delete segment directories the manifest provably no longer needs."""
        removed = integrity.remove_leftovers(
            self.path.name,
            self.path,
            [*self._segments, *self._damaged],
            int(self._db.get_meta("next_segment", 0)),
            int(self._db.get_meta("next_seq", 0)),
            known_good=not self._damaged,
        )
        if removed:
            log.info("removed %d unlisted segment directories: %s", len(removed), removed)

    def _forget(
        self,
        seqs: list[int],
        sealed: Iterable[int],
        removed_counts: list[TermCounts],
        added_counts: list[TermCounts],
    ) -> None:
        """Apply a committed write to the in-memory state: drop pending rows, tombstone sealed ones, count
        documents and BM25 statistics (new documents are added to the incremental level by the caller)."""
        self._count -= len(seqs)
        if self._bm25_stats is not None:
            for c in removed_counts:
                self._bm25_stats.remove(c)
            for c in added_counts:
                self._bm25_stats.add(c)
        self._pending.remove(seqs)
        self._plain_levels = None
        sealed = np.asarray(sorted(sealed), np.int64)
        if len(sealed):
            self._tombstones = np.union1d(self._tombstones, sealed)
            for name, seg in self._segments.items():
                hit = seg.rows_of(sealed)
                if hit.any():
                    self._dead[name] = self._dead.get(name, np.zeros(len(seg), bool)) | hit

    # ---- writing ---------------------------------------------------------------------------------------

    def write(self, batch: PreparedBatch) -> int:
        """Commit a prepared batch in one transaction (BM25 weights under the statistics it leaves); a batch of
        `flush_docs` or more becomes a segment (see the module docstring)."""
        with self._mutex:
            self._writable()
            docs, counts = batch.docs, batch.counts
            if not docs:
                return 0
            if len(docs) >= self.config.flush_docs:
                self._write_segment(batch)
                return len(docs)
            with self._db.write():
                old_seqs, old_counts, sealed = self._remove([d.id for d in docs])
                stats = self._weigh(batch, old_counts)
                seqs = self._db.allocate_seqs(len(docs))
                metadata = [json.dumps(d.metadata, ensure_ascii=False) for d in docs]
                self._insert_docs(batch, seqs, metadata, old_counts, stats)
                self._db.insert_pending(
                    (
                        int(s),
                        None if d.dense is None else np.asarray(d.dense, np.float32).tobytes(),
                        None if d.sparse is None else pack_sparse(d.sparse),
                        None if d.colbert is None else np.asarray(d.colbert, np.float16).tobytes(),
                    )
                    for d, s in zip(docs, seqs)
                )
            self._forget(old_seqs, sealed, old_counts, [c for c in counts if c is not None])
            self._pending.add(
                (int(s), d.dense, d.sparse, d.colbert is not None, indexed_metadata(d.metadata, d.kind))
                for d, s in zip(docs, seqs)
            )
            self._plain_levels = None
            self._count += len(docs)
            if len(self._pending) >= self.config.flush_docs:
                self.flush()
            return len(docs)

    def _weigh(self, batch: PreparedBatch, old_counts: list[TermCounts]) -> BM25Stats | None:
        """Give BM25 collections' documents their weights under the statistics the write leaves; returns those
        statistics (None without BM25)."""
        if self._bm25_stats is None:
            return None
        new_counts = [c for c in batch.counts if c is not None]
        stats = stats_after(self._bm25_stats, lengths(old_counts), lengths(new_counts))
        for doc, c in zip(batch.docs, batch.counts):
            if c is not None:
                doc.sparse = document_weights(batch.bm25, c, stats)  # type: ignore[arg-type]
        return stats

    def _insert_docs(
        self,
        batch: PreparedBatch,
        seqs: np.ndarray,
        metadata: list[str],
        old_counts: list[TermCounts],
        stats: BM25Stats | None,
    ) -> None:
        """Inside a write transaction: the batch's document rows (`metadata`: their JSON), thumbnails and BM25
        statistics (`stats`, from `_weigh`)."""
        docs, counts = batch.docs, batch.counts
        if batch.thumbnails:
            self._db.insert_thumbnails(
                (int(s), batch.thumbnails[d.id]) for d, s in zip(docs, seqs) if d.id in batch.thumbnails
            )
        self._db.insert_docs(
            (d.id, int(s), d.kind, d.text, m, pack_counts(c) if c is not None else None)
            for d, s, m, c in zip(docs, seqs, metadata, counts)
        )
        if stats is not None:
            new_counts = [c for c in counts if c is not None]
            self._db.update_bm25(stats.n_docs, stats.total_len, df_delta(old_counts, new_counts))

    def _write_segment(self, batch: PreparedBatch) -> None:
        """Write a large batch as one new segment: the pending rows are sealed first (segments keep seq order),
        seqs are allocated in a committed transaction (so a crash before the segment registers leaves a
        directory the next writer discards), the segment is written, and one transaction inserts the documents,
        removes their old versions and registers it."""
        self.flush()
        docs = batch.docs
        log.info("writing a batch of %d documents as a segment", len(docs))
        ids = [d.id for d in docs]
        old_counts = (
            list(self._db.term_counts(list(self._db.seqs_of(ids).values())).values())
            if self._bm25_stats is not None
            else []
        )
        stats = self._weigh(batch, old_counts)
        with self._db.write():
            seqs = self._db.allocate_seqs(len(docs))
        metadata = [json.dumps(d.metadata, ensure_ascii=False) for d in docs]
        # the same structures the incremental level would have sealed
        level = PendingLevel(self._pending.dim, None, sparse=self._pending.sparse)
        level.add(
            (int(s), d.dense, d.sparse, False, indexed_metadata(d.metadata, d.kind))
            for d, s in zip(docs, seqs)
        )
        view = level.level(None)
        colbert, tokens, center = None, [], None
        if "colbert" in self.config.outputs:
            dim = self.config.colbert_dim or 0
            tokens = [
                np.asarray(d.colbert if d.colbert is not None else np.empty((0, dim)), np.float16)
                for d in docs
            ]
            center = self._colbert_center(tokens)
            dtype = cast(ColbertDtype, self.config.colbert_dtype)
            colbert = (encode_tokens(t, dtype, center) for t in tokens)

        def commit() -> None:
            self._remove(ids)
            self._insert_docs(batch, seqs, metadata, old_counts, stats)

        self._seal(
            SegmentData(
                seqs,
                None if view.dense is None else np.asarray(view.dense.vectors),
                view.sparse,
                np.array([len(t) for t in tokens], np.int64) if colbert is not None else None,
                colbert,
                level.metadata_index(),
                colbert_center=center,
                documents=runs(
                    record(d.id, d.kind, d.text, m, bool(batch.thumbnails) and d.id in batch.thumbnails)
                    for d, m in zip(docs, metadata)
                ),
            ),
            also=commit,
        )
        self._maybe_merge()

    def delete(self, ids: Sequence[str]) -> int:
        """Delete documents by id (unknown ids are ignored); returns how many existed. Durable on return."""
        with self._mutex:
            self._writable()
            with self._db.write():
                old_seqs, old_counts, sealed = self._remove(ids)
                if self._bm25_stats is not None:
                    stats = stats_after(self._bm25_stats, lengths(old_counts), [])
                    self._db.update_bm25(stats.n_docs, stats.total_len, df_delta(old_counts, []))
            self._forget(old_seqs, sealed, old_counts, [])
            return len(old_seqs)

    def _remove(self, ids: Sequence[str]) -> tuple[list[int], list[TermCounts], list[int]]:
        """Inside a write transaction: remove the stored versions of `ids` (pending rows go, sealed rows get
        tombstones). Returns their seqs, their BM25 term counts and the sealed seqs."""
        old_seqs = list(self._db.seqs_of(ids).values())
        old_counts = list(self._db.term_counts(old_seqs).values()) if self._bm25_stats is not None else []
        was_pending = self._db.delete_pending(old_seqs)
        sealed = [s for s in old_seqs if s not in was_pending]
        self._db.add_tombstones(sealed)
        self._db.delete_thumbnails(old_seqs)
        self._db.delete_docs(ids)
        return old_seqs, old_counts, sealed

    # ---- sealing and merging ---------------------------------------------------------------------------

    def flush(self) -> None:
        """Seal the incremental level into a new immutable segment (also done every `flush_docs` documents)."""
        with self._mutex:
            self._writable()
            seqs = np.asarray(self._pending.seqs(), np.int64)
            if len(seqs) == 0:
                return
            level = self._pending.level(None)
            dense = None if level.dense is None else np.asarray(level.dense.vectors)
            center = self._colbert_center(self._pending_tokens(seqs))
            self._seal(
                SegmentData(
                    seqs,
                    dense,
                    self._sealed_sparse(seqs, level.sparse),
                    *self._pending_colbert(seqs, center),
                    self._pending.metadata_index(),
                    colbert_center=center,
                    documents=runs(self._stored_records(seqs)),
                ),
                from_pending=True,
            )
            self._maybe_merge()

    def compact(self) -> None:
        """Flush, then merge every segment into one, dropping deleted rows and re-weighting BM25."""
        with self._mutex:
            self.flush()
            self._check_whole()
            if len(self._segments) > 1 or len(self._tombstones):
                self._merge(list(self._segments))

    def _colbert_center(self, rows: Iterable[np.ndarray]) -> np.ndarray | None:
        """Binary stores' center: the segments' (all share it, so merges copy codes), else fitted on a sample of
        `rows`, the token matrices about to be sealed in seq order: whole reads of `COLBERT_READ_BATCH` rows
        until `CENTER_SAMPLE` tokens."""
        if "colbert" not in self.config.outputs or self.config.colbert_dtype != "binary":
            return None
        center = _fitted_center(self._segments.values())
        if center is not None:
            return center
        dim, count = self.config.colbert_dim or 0, 0
        sample: list[np.ndarray] = []
        for i, matrix in enumerate(rows, 1):
            sample.append(matrix)
            count += len(matrix)
            if i % COLBERT_READ_BATCH == 0 and count >= CENTER_SAMPLE:
                break
        return fit_center(np.concatenate([np.empty((0, dim), np.float32), *sample]))

    def _pending_tokens(self, seqs: np.ndarray) -> Iterator[np.ndarray]:
        """The pending rows' float16 token matrices in seq order (empty for rows without), read in batches."""
        dim = self.config.colbert_dim or 0
        for start in range(0, len(seqs), COLBERT_READ_BATCH):
            chunk = seqs[start : start + COLBERT_READ_BATCH].tolist()
            found = self._db.pending_colbert(chunk, dim)
            for s in chunk:
                yield found.get(s, np.empty((0, dim), np.float16))

    def _pending_colbert(
        self, seqs: np.ndarray, center: np.ndarray | None
    ) -> tuple[np.ndarray | None, Iterator[EncodedTokens] | None]:
        """The incremental level's ColBERT rows for a new segment: token counts, and the rows in storage form
        (read back in batches, never all at once)."""
        if "colbert" not in self.config.outputs:
            return None, None
        dim, dtype = self.config.colbert_dim or 0, cast(ColbertDtype, self.config.colbert_dtype)
        counts = self._db.pending_colbert_tokens(seqs.tolist(), dim)
        lengths = np.array([counts.get(s, 0) for s in seqs.tolist()], np.int64)
        return lengths, (encode_tokens(t, dtype, center) for t in self._pending_tokens(seqs))

    def _stored_records(self, seqs: np.ndarray) -> Iterator[bytes]:
        """The document records of `seqs` (stored documents) read from the database in batches: for segments
        sealed from the incremental level, and merges of segments sealed without records."""
        for start in range(0, len(seqs), RUN):
            chunk = seqs[start : start + RUN].tolist()
            rows = self._db.docs_by_seq(chunk)
            for seq in chunk:
                r = rows[seq]
                yield record(r.id, r.kind, r.text, r.metadata, r.has_thumbnail)

    def _merged_records(self, segs: Sequence[Segment], source: list[tuple[int, int, int]]) -> Iterator[Run]:
        """A merged segment's document records from its sources' `(segment, first row, end row)` runs: copied
        where the source keeps them, else read from the database."""
        for g, first, end in source:
            documents = segs[g].documents
            if documents is not None:
                yield documents.run(first, end)
            else:
                yield from runs(self._stored_records(segs[g].seqs[first:end]))

    def _sealed_sparse(self, seqs: np.ndarray, sparse: SparseIndex | None) -> SparseIndex | None:
        """The sparse index a new segment gets: as stored, or BM25 re-weighted under today's statistics."""
        if sparse is None or self._bm25_stats is None:
            return sparse
        counts = self._db.term_counts(seqs.tolist())
        if not counts:
            return sparse
        rows, terms, weights = sparse.to_coo()
        keep = ~np.isin(seqs[rows], np.fromiter(counts, np.int64, len(counts)))
        parts = [(rows[keep], terms[keep], weights[keep])]
        position = {int(s): i for i, s in enumerate(seqs.tolist())}
        bm25 = self._bm25()
        for seq, c in counts.items():
            ids, w = as_sparse_row(bm25.document_weights(c))  # type: ignore[union-attr]
            parts.append((np.full(len(ids), position[seq], np.int64), ids, w))
        return SparseIndex.from_coo(len(seqs), *(np.concatenate(p) for p in zip(*parts)))

    def _seal(
        self,
        data: SegmentData,
        *,
        replaced: Sequence[str] = (),
        from_pending: bool = False,
        also: Callable[[], None] | None = None,
    ) -> None:
        """Write a segment from `data`, then register it and drop what it replaces in one transaction.

        `replaced`: segments merged into it (their tombstones go too); `from_pending`: it seals the
        incremental level, whose rows leave the database's pending table; `also`: more of the same transaction
        (a large batch's documents, `_write_segment`).
        """
        number = int(self._db.get_meta("next_segment", 0))
        name = f"seg-{number:08d}"
        log.info(
            "writing segment %s (%d rows) to replace %s",
            name,
            len(data.seqs),
            ", ".join(replaced) or "the incremental level",
        )
        files = []
        if len(data.seqs):
            files = integrity.record_files(write_segment(self._segments_dir, name, data, self.config))
        replaced_seqs = [self._segments[n].seqs for n in replaced]
        with self._db.write():
            self._db.set_meta("next_segment", number + 1)
            if len(data.seqs):
                self._db.add_segment(name, len(data.seqs), int(data.seqs.min()), int(data.seqs.max()))
                self._db.add_segment_files(name, files)
            self._db.remove_segments(replaced)
            for seqs in replaced_seqs:
                self._db.remove_tombstones(seqs[np.isin(seqs, self._tombstones)].tolist())
            if from_pending:
                self._db.delete_pending(data.seqs.tolist())
            if also is not None:
                also()
        log.info("registered segment %s", name)
        self._db.reclaim_space()
        self._reload()
        self._remove_leftovers()
        self._link_in_background(name)

    def _link_in_background(self, name: str) -> None:
        """Offer a new segment's dense vectors to the background graph when it has no graph of its own (below
        `hnsw.min_rows`): a later merge of exactly those segments then finishes that graph instead of building
        one (~0.5 CPU ms a row at 100k, done meanwhile on the core the writer leaves)."""
        segment = self._segments.get(name)
        if segment is None or segment.dense is None or segment.dense.ann is not None:
            return
        if self.config.dense_index == "flat" or not len(segment):
            return
        if self._background is None:
            self._background = BackgroundGraph(self.config.hnsw_params, byte_codes=self.config.format >= 8)
        self._background.offer(name, segment.dense.vectors)

    def _merge(self, names: list[str]) -> None:
        """Merge segments `names` into one, dropping their deleted rows; every byte they hold is checked first,
        so a damaged file is reported instead of being copied into the merged segment."""
        files = self._db.segment_files()
        for n in names:
            integrity.check_files(self.path.name, self._segments_dir / n, files.get(n, []), full=True)
        segs = [self._segments[n] for n in names]
        keep = [np.flatnonzero(~self._dead.get(n, np.zeros(len(s), bool))) for n, s in zip(names, segs)]
        seqs = np.concatenate([s.seqs[k] for s, k in zip(segs, keep)])
        order = np.argsort(seqs, kind="stable")
        in_order = bool(np.all(order == np.arange(len(order))))  # the usual case: no copy to reorder
        seqs = seqs[order]
        # each source row's row in the merged segment (-1: dropped)
        inverse = np.empty(len(order), np.int64)
        inverse[order] = np.arange(len(order))
        new_rows, offset = [], 0
        for s, k in zip(segs, keep):
            new_rows.append(np.full(len(s), -1, np.int64))
            new_rows[-1][k] = inverse[offset : offset + len(k)]
            offset += len(k)
        dense: np.ndarray | list[np.ndarray | FileRows] | None = None
        if "dense" in self.config.outputs:
            # a segment of a collection with an output has that output's structure; in the usual order, a
            # segment with no deleted row is copied file to file, others' kept rows are gathered
            pieces = [
                FileRows(self._segments_dir / n / VECTORS_FILE, 0, len(s))
                if len(k) == len(s) and in_order
                else np.asarray(s.dense.vectors if len(k) == len(s) else s.dense.vectors[k], np.float32)  # type: ignore[union-attr]
                for n, s, k in zip(names, segs, keep)
            ]
            dense = pieces if in_order else np.concatenate(pieces)[order]  # type: ignore[arg-type]
        sparse = None
        if "sparse" in self.config.outputs:
            parts = []
            for s, new_row in zip(segs, new_rows):
                rows, terms, weights = s.sparse.to_coo()  # type: ignore[union-attr]
                alive = new_row[rows] >= 0
                parts.append((new_row[rows[alive]], terms[alive], weights[alive]))
            sparse = self._sealed_sparse(
                seqs, SparseIndex.from_coo(len(seqs), *map(np.concatenate, zip(*parts)))
            )
        # each merged row's source segment and row, as runs of consecutive rows
        source_seg = np.repeat(np.arange(len(segs)), [len(k) for k in keep])
        source_row = np.concatenate(keep)
        if not in_order:
            source_seg, source_row = source_seg[order], source_row[order]
        source = consecutive_runs(source_seg, source_row)
        lengths, colbert_rows = None, None
        if "colbert" in self.config.outputs:
            lengths = np.concatenate([s.colbert.token_counts(k) for s, k in zip(segs, keep)])  # type: ignore[union-attr]
            lengths = lengths if in_order else lengths[order]
            colbert_rows = (
                StoredRows(segs[g].colbert, first, end)  # type: ignore[arg-type]
                for g, first, end in source
            )
        metadata = MetadataIndex.merge([(s.metadata, r) for s, r in zip(segs, new_rows)], len(seqs))
        graph = None
        if self._background is not None and set(names) & set(self._background.keys):
            graph = self._background.take(names)
            if not (in_order and all(len(k) == len(s) for s, k in zip(segs, keep))):
                graph = None  # rows dropped or moved: the graph does not match them
        center = _fitted_center(segs)
        if center is None and segs[0].colbert is not None:
            center = segs[0].colbert.center  # no segment holds a token: the placeholder
        self._seal(
            SegmentData(
                seqs,
                dense,
                sparse,
                lengths,
                colbert_rows,
                metadata,
                colbert_center=center,
                documents=self._merged_records(segs, source),
                graph=graph,
            ),
            replaced=names,
        )

    def _maybe_merge(self) -> None:
        """Tiered merging (`m3search.store.compaction.merge_group`) until no size class is full."""
        while (
            names := merge_group(
                {n: len(s) for n, s in self._segments.items()},
                self.config.flush_docs,
                self.config.merge_factor,
            )
        ) is not None:
            self._merge(names)

    # ---- reading ---------------------------------------------------------------------------------------

    def count(self) -> int:
        """Number of documents."""
        with self._mutex:
            self.refresh()
            return self._count

    approximate_count = count  # the exact count is kept, not counted

    def search_files(self) -> list[Path]:
        """The database and the segments' memory-mapped files (not those read whole into RAM at open)."""
        with self._mutex:
            self.refresh()
            mapped = [
                f
                for name in self._segments
                for f in sorted((self._segments_dir / name).iterdir())
                if f.name not in integrity.READ_WHOLE
            ]
        return [self.path / DB_FILE, *mapped]

    def ids(self) -> list[str]:
        """Every document id, in the order they were written."""
        with self._mutex:
            self.refresh()
            return self._db.all_ids()

    def write_beside(self, save: Callable[[], None]) -> None:
        """Run `save` under the writer lock, then commit a change of the `beside` counter: the commit is what
        other processes' `refresh` notices (see `Collection.search_defaults`)."""
        with self._mutex:
            self._writable()
            save()
            with self._db.write():
                self._db.set_meta("beside", int(self._db.get_meta("beside", 0)) + 1)

    def get(self, ids: Sequence[str]) -> list[Document | None]:
        """The stored documents (id, kind, text, metadata, thumbnail reference) for `ids`, in order."""
        with self._mutex:
            self._check_open()
            rows = self._db.docs_by_id(ids)
            return [
                Document(
                    r.id,
                    r.text,
                    json.loads(r.metadata),
                    kind=r.kind,
                    thumbnail=str(r.seq) if r.has_thumbnail else None,
                )
                if (r := rows.get(i))
                else None
                for i in ids
            ]

    def thumbnail(self, reference: str) -> bytes | None:
        """JPEG bytes of a thumbnail by reference (the document's seq)."""
        # ASCII digits within SQLite's 64-bit integers (`isdigit` alone accepts "²" and 5,000-digit numbers).
        if not re.fullmatch(r"[0-9]{1,18}", reference):
            raise InvalidInputError(f"{reference[:40]!r} is not a thumbnail reference")
        with self._mutex:
            self._check_open()
            return self._db.thumbnail(int(reference))

    def search(self, query: QueryVectors, plan: SearchPlan, rank: Ranker) -> list[Hit]:
        """Gather the plan's candidates over the segments and the incremental level, rank them, and look the
        documents up in the same version (re-running the search when another process changed it)."""
        with self._mutex:
            self.refresh()
            self._check_whole()
            for _attempt in range(STALE_RETRIES):
                allowed, masks = self._allowed(plan.filter) if plan.filter else (None, {})
                levels = self._levels(allowed, masks, self._allowed(DENSE_ONLY) if plan.dense_only else None)
                try:
                    if plan.mode in ONE_STAGE_MODES:  # its one stage's list is the ranking
                        picked = one_stage(levels, query, plan.mode, plan.k, plan.ef_search)
                    else:
                        # only ColBERT runs BLAS products (dense and sparse scores come from single-threaded
                        # kernels): no pools to limit otherwise (that costs 50-300 µs right after a graph walk)
                        with one_thread() if "colbert" in MODE_KINDS[plan.mode] else contextlib.nullcontext():
                            picked = rank(
                                gather(
                                    levels,
                                    query,
                                    plan.mode,
                                    plan.k,
                                    candidates=plan.candidates,
                                    ef_search=plan.ef_search,
                                )
                            )
                    hits = self._hits(picked, levels)
                except StaleReadError:
                    hits = None
                if hits is not None:
                    return hits
                self._reload()  # another process changed what this version points to: search the new one
            raise CollectionError(f"collection {self.path} keeps changing under this reader; try again")

    def _hits(
        self, picked: list[tuple[int, float, dict[str, float]]], levels: list[SearchLevel]
    ) -> list[Hit] | None:
        """The ranked candidates' documents: from their segment's records, else (the incremental level, segments
        sealed without records) from the database; None when one is gone there (another process changed it)."""
        segments = list(self._segments.items())  # the levels' order: the segments, then the incremental level
        hits: list[Hit | None] = [None] * len(picked)
        wanted: dict[int, int] = {}  # hit -> seq, read from the database
        by_level: dict[int, list[int]] = {}  # hits in each level
        for at, (key, _, _) in enumerate(picked):
            li = key >> 40
            ats = by_level.get(li)
            if ats is None:
                by_level[li] = [at]
            else:
                ats.append(at)
        for li, ats in by_level.items():
            if li >= len(segments) or segments[li][1].documents is None:
                seqs = levels[li].seqs
                wanted.update((at, int(seqs[picked[at][0] & ROW_MASK])) for at in ats)
                continue
            name, segment = segments[li]
            rows = [picked[at][0] & ROW_MASK for at in ats]
            try:
                records = segment.documents.read(rows)  # type: ignore[union-attr]
            except ValueError as exc:
                file = f"{SEGMENTS_DIR}/{name}/{DOCS_FILE}"
                raise integrity.damaged(self.path.name, file, f"cannot be read ({exc})") from None
            for at, row, (doc_id, kind, text, thumbnail, metadata) in zip(ats, rows, records):
                _, score, scores = picked[at]
                reference = str(int(segment.seqs[row])) if thumbnail else None
                hits[at] = Hit(doc_id, score, scores, text, metadata, kind, reference)
        if wanted:
            stored = self._db.docs_by_seq(list(wanted.values()))
            if len(stored) != len(wanted):
                return None
            for at, seq in wanted.items():
                r, (_, score, scores) = stored[seq], picked[at]
                metadata = json.loads(r.metadata)
                hits[at] = Hit(
                    r.id, score, scores, r.text, metadata, r.kind, str(seq) if r.has_thumbnail else None
                )
        return cast(list[Hit], hits)

    def export(self, batch_size: int) -> Iterator[PreparedBatch]:
        """Every live document with its stored vectors, term counts and thumbnail, `batch_size` at a time:
        segment by segment, then the incremental level (migration; nothing is encoded again)."""
        with self._mutex:
            self.refresh()
            segments, dead = dict(self._segments), dict(self._dead)
            pending = self._db.load_pending()
        for name, seg in segments.items():
            live = np.flatnonzero(~dead.get(name, np.zeros(len(seg), bool)))
            coo = seg.sparse.to_coo() if seg.sparse is not None else None
            if coo is not None:  # postings come term by term: order them by row
                order = np.argsort(coo[0], kind="stable")
                coo = (coo[0][order], coo[1][order], coo[2][order])
            starts = np.searchsorted(coo[0], np.arange(len(seg) + 1)) if coo is not None else None
            for chunk in np.array_split(live, max(1, -(-len(live) // batch_size))):
                if not len(chunk):
                    continue
                vectors = {}
                for r in chunk.tolist():
                    sparse = None
                    if coo is not None:
                        a, b = starts[r], starts[r + 1]  # type: ignore[index]
                        sparse = (coo[1][a:b].astype(np.int64), coo[2][a:b].astype(np.float32))
                    vectors[int(seg.seqs[r])] = (
                        None if seg.dense is None else np.asarray(seg.dense.vectors[r], np.float32),
                        sparse,
                        None if seg.colbert is None else seg.colbert.row(r, prefer_exact=True),
                    )
                yield self._exported(vectors)
        dim = self.config.colbert_dim or 0
        for start in range(0, len(pending), batch_size):
            rows = pending[start : start + batch_size]
            colbert = self._db.pending_colbert([p.seq for p in rows], dim) if dim else {}
            yield self._exported(
                {
                    p.seq: (
                        p.dense,
                        p.sparse,
                        None if p.seq not in colbert else colbert[p.seq].astype(np.float32),
                    )
                    for p in rows
                }
            )

    def _exported(self, vectors: Mapping[int, tuple[Any, Any, Any]]) -> PreparedBatch:
        """A batch of the documents of `vectors` (seq -> dense, sparse, ColBERT) as stored."""
        seqs = list(vectors)
        with self._mutex:
            rows = self._db.docs_by_seq(seqs)
            counts = self._db.term_counts(seqs) if self._bm25_stats is not None else {}
            thumbnails = {
                rows[s].id: self._db.thumbnail(s) for s in seqs if s in rows and rows[s].has_thumbnail
            }
        docs = []
        for s in seqs:
            if s in rows:
                r = rows[s]
                dense, sparse, colbert = vectors[s]
                docs.append(
                    Document(r.id, r.text, json.loads(r.metadata), dense, sparse, colbert, kind=r.kind)
                )
        return PreparedBatch(
            docs,
            [counts.get(s) for s in seqs if s in rows],
            {k: v for k, v in thumbnails.items() if v is not None},
        )

    def _allowed(self, spec: Filter) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        """The row masks a filter allows: the incremental level's, and each segment's — evaluated on their
        metadata indexes; a segment's mask is kept (segments never change; facets repeat)."""
        key = json.dumps(spec, sort_keys=True)
        entry = self._filter_cache.get(key)
        if entry is None:
            entry = self._filter_cache[key] = (compile_filter(spec), {})
            if len(self._filter_cache) > FILTER_CACHE_SIZE:
                self._filter_cache.popitem(last=False)
        self._filter_cache.move_to_end(key)
        predicate, cached = entry
        masks = {
            name: cached[name] if name in cached else predicate(seg.metadata)
            for name, seg in self._segments.items()
        }
        cached.clear()
        cached.update(masks)  # merged-away segments are dropped
        return predicate(self._pending.metadata_index()), masks

    def _levels(
        self,
        pending_allowed: np.ndarray | None,
        masks: Mapping[str, np.ndarray],
        dense_only: tuple[np.ndarray, dict[str, np.ndarray]] | None = None,
    ) -> list[SearchLevel]:
        """What a search runs over; `pending_allowed` is None without a filter; `dense_only`: the masks of the
        rows that have only a dense vector (pending, per segment), when the search should know them."""
        plain = pending_allowed is None and dense_only is None
        if plain and self._plain_levels is not None:
            return self._plain_levels
        levels = []
        for name, seg in self._segments.items():
            mask = None if pending_allowed is None else masks[name]
            dead = self._dead.get(name)
            if dead is not None:
                mask = ~dead if mask is None else mask & ~dead
            colbert = seg.colbert
            rechecks = colbert is not None and colbert.exact is not None and colbert.recheck > 0
            levels.append(
                SearchLevel(
                    seg.seqs,
                    mask,
                    seg.dense,
                    seg.sparse,
                    functools.partial(colbert.maxsim, recheck=0) if colbert is not None else None,
                    dense_only[1][name] if dense_only is not None else None,
                    colbert.exact_maxsim if rechecks else None,  # type: ignore[union-attr]
                    colbert.recheck if rechecks else 0,  # type: ignore[union-attr]
                )
            )
        pending = self._pending.level(pending_allowed)
        if dense_only is not None:
            pending.dense_only = dense_only[0]
        levels.append(pending)
        if plain:
            self._plain_levels = levels
        return levels

    def stats(self) -> dict[str, Any]:
        """Counts and sizes: documents, segments (rows, deleted rows, bytes), incremental level, disk use."""
        with self._mutex:
            self.refresh()
            segments = []
            for name, seg in self._segments.items():
                directory = self._segments_dir / name
                segments.append(
                    {
                        "name": name,
                        "rows": len(seg),
                        "deleted": int(self._dead[name].sum()) if name in self._dead else 0,
                        "hnsw": seg.dense is not None and seg.dense.ann is not None,
                        "bytes": {f.name: f.stat().st_size for f in sorted(directory.iterdir())},
                    }
                )
            disk = sum(f.stat().st_size for f in self.path.rglob("*") if f.is_file())
            return {
                "backend": "local",
                "path": str(self.path),
                "count": self._count,
                "pending": len(self._pending),
                "tombstones": len(self._tombstones),
                "segments": segments,
                "damaged": {name: str(exc) for name, exc in self._damaged.items()},
                "disk_bytes": disk,
            }

    def verify(self, *, show_progress: bool = False) -> dict[str, Any]:
        """Check every byte: SQLite's structural check of the database, and every file of every listed segment
        against its recorded size and checksum (`m3search index verify`). Returns `problems` (one
        `CorruptCollectionError` per damaged file), `segments`, `bytes` checksummed, and `unchecked`: segments
        sealed before checksums were recorded (checked for structure only)."""
        with self._mutex:
            self.refresh()
            with self._db.read():
                names = self._db.segment_names()
                files = self._db.segment_files()
            total = integrity.segment_bytes(names, files)
            with tqdm(
                total=total,
                unit="B",
                unit_scale=True,
                desc="verify",
                disable=not show_progress,
                file=sys.stderr,
            ) as bar:
                problems = integrity.verify_collection(
                    self.path.name, self.path, names, files, self.config, self._db.check(), bar.update
                )
            return {
                "problems": problems,
                "segments": len(names),
                "bytes": total,
                "unchecked": [n for n in names if n not in files],
                "checked": f"{len(names)} segment(s), {total / 2**20:.1f} MiB checksummed",
            }


def _fitted_center(segments: Iterable[Segment]) -> np.ndarray | None:
    """The binary ColBERT center the segments share: that of the first one holding token vectors. A segment
    sealed without any (only images, or rows without ColBERT) carries a flat placeholder that must not be reused:
    every later segment would be coded against it."""
    for seg in segments:
        if seg.colbert is not None and seg.colbert.center is not None and len(seg.colbert.tokens):
            return seg.colbert.center
    return None
