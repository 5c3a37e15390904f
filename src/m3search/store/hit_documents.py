"""A segment's documents as searches return them: one JSON record per row in `docs.bin` (row i is bytes
`docs_offsets.npy[i]:[i + 1]`), written when the segment is sealed or merged.

Why a copy beside the database: reading a search's hits from SQLite costs an index and a table lookup per hit
plus a thumbnail probe and a metadata parse, 66-105 µs for 10 hits at 100k documents on a 2-core VM; here a
search's hits are a slice of a memory-mapped file each and one JSON decode for all of them, metadata included
(12-21 µs; docs/INDEX.md). The database stays the documents' source of truth (`get`, filters, export). Segments never change
and documents are never edited in place (an upsert is a new row), so the copy cannot go stale. Segments sealed
before this file existed have none: their hits are read from the database.
"""

from __future__ import annotations

import json
import mmap
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from m3search.threads import load_array

DOCS_FILE = "docs.bin"
DOC_OFFSETS_FILE = "docs_offsets.npy"
#: Records per run when they are built from documents (a run is written with one call).
RUN = 1024

#: JSON text -> value, without `json.loads`'s checks of its argument (a search decodes once per call).
_decode = json.JSONDecoder().decode
#: A run of consecutive records: their bytes and each record's length.
Run = tuple[bytes, np.ndarray]


def record(doc_id: str, kind: str, text: str | None, metadata: str, thumbnail: bool) -> bytes:
    """One row's record, the JSON array [id, kind, text, has a thumbnail, metadata]; `metadata` is the
    document's stored metadata JSON, spliced in as it is."""
    head = json.dumps([doc_id, kind, text, int(thumbnail)], ensure_ascii=False)
    return f"{head[:-1]},{metadata}]".encode()


def runs(records: Iterable[bytes]) -> Iterator[Run]:
    """`records` grouped into runs of `RUN`."""
    batch: list[bytes] = []
    for r in records:
        batch.append(r)
        if len(batch) == RUN:
            yield b"".join(batch), np.fromiter(map(len, batch), np.int64, len(batch))
            batch = []
    if batch:
        yield b"".join(batch), np.fromiter(map(len, batch), np.int64, len(batch))


def write_documents(directory: Path, parts: Iterable[Run]) -> list[Path]:
    """Stream runs of records into `directory`'s document files; returns the files written."""
    lengths = [np.zeros(1, np.int64)]
    with open(directory / DOCS_FILE, "wb") as f:
        for data, sizes in parts:
            f.write(data)
            lengths.append(sizes)
    np.save(directory / DOC_OFFSETS_FILE, np.cumsum(np.concatenate(lengths)))
    return [directory / DOCS_FILE, directory / DOC_OFFSETS_FILE]


class HitDocuments:
    """An opened segment's document records: the offsets in RAM, the records memory-mapped."""

    def __init__(self, offsets: np.ndarray, data: mmap.mmap) -> None:
        self.offsets = offsets
        self.data = data
        # what `read` indexes: Python ints, cheaper than numpy's scalars
        self._offsets = memoryview(offsets)  # type: ignore[arg-type]

    @classmethod
    def load(cls, directory: Path) -> HitDocuments | None:
        """Open `directory`'s document files; None for a segment sealed without them."""
        if not (directory / DOC_OFFSETS_FILE).exists():
            return None
        offsets = load_array(directory / DOC_OFFSETS_FILE)
        with open(directory / DOCS_FILE, "rb") as f:  # never empty: a record is at least its brackets
            return cls(offsets, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ))

    def __len__(self) -> int:
        return len(self.offsets) - 1

    @property
    def size(self) -> int:
        """Bytes of records the file holds."""
        return len(self.data)

    def read(self, rows: Sequence[int]) -> list[list[Any]]:
        """Rows' records, each [id, kind, text, has a thumbnail, metadata], parsed in one call. `ValueError` for
        bytes that are not such records (a damaged file)."""
        off, data = self._offsets, self.data
        found = _decode("[" + b",".join([data[off[r] : off[r + 1]] for r in rows]).decode() + "]")
        if len(found) != len(rows) or not all(
            type(f) is list and len(f) == 5 and type(f[4]) is dict for f in found
        ):
            raise ValueError(f"{len(rows)} rows do not read as {len(rows)} document records")
        return found

    def run(self, first: int, end: int) -> Run:
        """Rows `first:end`'s records as they are stored (merges copy them without parsing)."""
        off = self.offsets
        return bytes(self.data[off[first] : off[end]]), np.diff(off[first : end + 1])
