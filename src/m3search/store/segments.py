"""Immutable segments: the sealed vectors of a set of documents, one directory of `.npy` (and faiss) files.

A segment's rows are its documents in increasing `seq` order (`seqs.npy`); its dense, sparse and ColBERT
structures and its metadata index (what filters run on) answer in row numbers, and its document records
(`m3search.store.hit_documents`) give searches their hits without a database lookup. A segment is written into
a temporary directory, every file fsynced, then renamed into place and only afterwards registered in the
database, so a segment that is listed is complete; one left behind by a crash is simply not listed and gets
removed. Deleting a document never rewrites a segment: a tombstone hides its row until a merge drops it.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from m3search.index.dense import VECTORS_FILE, DenseIndex, HNSWParams
from m3search.index.multivector import (
    ColbertDtype,
    EncodedTokens,
    MultiVectorStore,
    MultiVectorWriter,
    StoredRows,
)
from m3search.index.sparse import SparseIndex
from m3search.store.config import CollectionConfig, fsync_path
from m3search.store.hit_documents import HitDocuments, Run, write_documents
from m3search.store.metadata import MetadataIndex
from m3search.threads import copy_range, load_array

SEGMENTS_DIR = "segments"
SEQS_FILE = "seqs.npy"


@dataclass
class Segment:
    """An opened segment: its row -> seq map and the structures it has."""

    name: str
    seqs: np.ndarray
    dense: DenseIndex | None
    sparse: SparseIndex | None
    colbert: MultiVectorStore | None
    metadata: MetadataIndex
    #: The rows' documents as searches return them; None in segments sealed before they were kept there.
    documents: HitDocuments | None = None

    def __len__(self) -> int:
        return len(self.seqs)

    @classmethod
    def load(cls, directory: Path, config: CollectionConfig) -> Segment:
        """Open the segment in `directory` (vectors memory-mapped, HNSW graph in RAM)."""
        seqs = load_array(directory / SEQS_FILE)
        return cls(
            directory.name,
            seqs,
            DenseIndex.load(directory, config.hnsw_params) if "dense" in config.outputs else None,
            SparseIndex.load(directory, len(seqs)) if "sparse" in config.outputs else None,
            MultiVectorStore.load(directory, config.colbert_recheck) if "colbert" in config.outputs else None,
            MetadataIndex.load(directory, len(seqs)),
            HitDocuments.load(directory),
        )

    def rows_of(self, seqs: np.ndarray) -> np.ndarray:
        """Boolean mask of the rows whose seq is in the sorted array `seqs`."""
        if len(seqs) == 0:
            return np.zeros(len(self.seqs), bool)
        pos = np.minimum(np.searchsorted(seqs, self.seqs), len(seqs) - 1)
        return seqs[pos] == self.seqs


@dataclass(frozen=True)
class FileRows:
    """Rows `start:end` of the 2-D array in the `.npy` file `path` (a source segment's), which a new segment
    copies file to file (`write_rows`)."""

    path: Path
    start: int
    end: int

    def __len__(self) -> int:
        return self.end - self.start


@dataclass
class SegmentData:
    """Everything a new segment is built from; ColBERT rows come as an iterator in storage form."""

    seqs: np.ndarray
    #: the dense vectors, or their parts one after the other (a merge's sources)
    dense: np.ndarray | Sequence[np.ndarray | FileRows] | None
    sparse: SparseIndex | None
    colbert_lengths: np.ndarray | None
    colbert_rows: Iterable[EncodedTokens | StoredRows] | None
    metadata: MetadataIndex
    #: binary ColBERT codes' center (`fit_center`), shared by all the collection's segments
    colbert_center: np.ndarray | None = None
    #: the rows' document records (`m3search.store.hit_documents`) in runs, in row order
    documents: Iterable[Run] | None = None
    #: an HNSW graph already linked over the first rows of `dense` (a `BackgroundGraph`'s), to build on
    graph: Any | None = None


def write_segment(root: Path, name: str, data: SegmentData, config: CollectionConfig) -> Path:
    """Build and durably write segment `name` under `root`; returns its directory."""
    final = root / name
    tmp = root / f".tmp-{name}"
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    files = [tmp / SEQS_FILE]
    np.save(files[0], np.asarray(data.seqs, np.int64))
    files += data.metadata.save(tmp)
    if data.documents is not None:
        files += write_documents(tmp, data.documents)
    if data.dense is not None:
        params: HNSWParams = config.hnsw_params
        kind = config.dense_index
        files.append(tmp / VECTORS_FILE)
        write_rows(files[-1], [data.dense] if isinstance(data.dense, np.ndarray) else data.dense, np.float32)
        vectors = load_array(files[-1], mmap=True)  # the graph is built from the file just written
        dense = DenseIndex.build(
            vectors,
            kind,  # type: ignore[arg-type]
            params,
            walk=config.format >= 7,
            graph=data.graph,
            byte_codes=config.format >= 8,
        )
        files += dense.save(tmp, vectors=False)
    if data.sparse is not None:
        files += data.sparse.save(tmp, forward=config.sparse_forward)
    if data.colbert_lengths is not None and data.colbert_rows is not None:
        dtype: ColbertDtype = config.colbert_dtype  # type: ignore[assignment]
        writer = MultiVectorWriter(
            tmp,
            config.colbert_dim or 0,
            dtype,
            int(data.colbert_lengths.sum()),
            len(data.seqs),
            keep_exact=config.colbert_recheck > 0,
            center=data.colbert_center,
        )
        for row in data.colbert_rows:
            writer.add(row)
        files += writer.finish()
    for path in files:
        fsync_path(path)
    fsync_path(tmp)
    tmp.rename(final)
    fsync_path(root)
    return final


def write_rows(path: Path, parts: Sequence[np.ndarray | FileRows], dtype: np.dtype | type) -> None:
    """Write the rows of `parts`, one after the other, as one 2-D `.npy` array of `dtype`. Rows in other files
    are copied by the kernel (`copy_range`): a merge's ~4 KB a vector never pass through this process, which at
    100k rows takes ~0.1 s instead of the ~1.9 s of gathering them into memory and writing them out."""
    dtype = np.dtype(dtype)
    widths, sources = set(), []
    for part in parts:
        if isinstance(part, FileRows):
            source = load_array(part.path, mmap=True, map_cached=False)  # (its header only)
            if source.dtype != dtype or source.ndim != 2 or not 0 <= part.start <= part.end <= len(source):
                raise ValueError(f"{part.path} holds no rows {part.start}:{part.end} of {dtype}")
            widths.add(source.shape[1])
            sources.append(source.offset + part.start * source.shape[1] * dtype.itemsize)  # type: ignore[attr-defined]
        else:
            widths.add(part.shape[1])
            sources.append(None)
    if len(widths) > 1:
        raise ValueError(f"rows of different widths {sorted(widths)} in one array")
    width = widths.pop() if widths else 0
    header: dict[str, Any] = {"descr": np.lib.format.dtype_to_descr(dtype), "fortran_order": False}
    header["shape"] = (sum(len(p) for p in parts), width)
    with open(path, "wb") as out:
        np.lib.format.write_array_header_1_0(out, header)
        for part, offset in zip(parts, sources):
            if offset is None:
                out.write(np.ascontiguousarray(part, dtype).data)
                continue
            out.flush()
            assert isinstance(part, FileRows)  # only file rows have an offset
            with open(part.path, "rb") as src:
                copy_range(src.fileno(), out.fileno(), offset, len(part) * width * dtype.itemsize)
