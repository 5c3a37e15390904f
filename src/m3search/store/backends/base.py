"""The storage seam: what `Collection` (encoding, validation, query planning, fusion) needs from where the
vectors live. Three backends implement it: `local` (the embedded engine, the default), `qdrant` and `edge`."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from m3search.encoders.bm25 import BM25Stats
from m3search.search.modes import Mode
from m3search.search.planner import Candidates, QueryVectors
from m3search.search.results import Hit
from m3search.store.config import CONFIG_FILE, CollectionConfig
from m3search.store.documents import Document
from m3search.store.filters import Filter
from m3search.store.ingest import PreparedBatch

#: A directory holding this file stands for a Qdrant collection (where it is, its name): every command that
#: takes a collection directory, and the server's catalog, open it like a local one.
LINK_FILE = "qdrant.json"
#: A directory holding this subdirectory (beside `config.json`) is an edge collection: the Qdrant Edge shard.
EDGE_DIR = "edge"


def is_edge(path: Path) -> bool:
    """Whether directory `path` holds an edge collection (see `m3search.store.backends.edge`)."""
    return (path / CONFIG_FILE).is_file() and (path / EDGE_DIR).is_dir()


#: Candidates -> the best (key, fused score, per-kind scores), best first: the facade's fusion.
Ranker = Callable[[Candidates], list[tuple[int, float, dict[str, float]]]]


@dataclass
class SearchPlan:
    """One search as the backend runs it: the mode's first stages to `candidates` deep (`k` for one-stage
    modes) under `filter`; `dense_only`: tell apart documents with only a dense vector."""

    mode: Mode
    k: int
    candidates: int
    filter: Filter | None = None
    ef_search: int | None = None
    dense_only: bool = False


class Backend(Protocol):
    """Where a collection's documents and vectors are stored and searched."""

    config: CollectionConfig
    #: Where it lives, for messages (a directory, or a Qdrant URL and collection name).
    location: str

    def bm25_stats(self) -> BM25Stats | None:
        """The statistics BM25 query weights use (None when the collection has no BM25 weights or the
        backend computes IDF itself)."""

    def write(self, batch: PreparedBatch) -> int:
        """Store a prepared batch (replacing documents with the same ids) as one acknowledged write."""

    def write_beside(self, save: Callable[[], None]) -> None:
        """Run `save`, a write to a file beside the documents (the stored search defaults), as a writer: refused
        when opened read-only; other processes' next `refresh` sees it (local: under the writer lock, then a
        commit)."""

    def delete(self, ids: Sequence[str]) -> int:
        """Remove documents by id; returns how many existed."""

    def get(self, ids: Sequence[str]) -> list[Document | None]:
        """Stored documents (no vectors) for `ids`, in order; None where unknown."""

    def count(self) -> int:
        """Number of documents."""

    def approximate_count(self) -> int:
        """Number of documents, possibly approximate but cheap: what sizes a search's default depth (an exact
        count in Qdrant's engine visits every point: 9 ms at 100,000)."""

    def ids(self) -> list[str]:
        """Every document id (e.g. to sample pseudo-queries)."""

    def search_files(self) -> list[Path]:
        """The files searches read at random (memory maps, the document database): what `Collection.warm`
        reads ahead; [] where the engine manages its own memory."""

    def search(self, query: QueryVectors, plan: SearchPlan, rank: Ranker) -> list[Hit]:
        """Gather `plan`'s candidates with their exact scores, `rank` them, return the hits."""

    def export(self, batch_size: int) -> Iterator[PreparedBatch]:
        """Every document with its stored vectors, BM25 term counts and thumbnail, in batches (migration)."""

    def thumbnail(self, reference: str) -> bytes | None:
        """JPEG thumbnail bytes by reference."""

    def stats(self) -> dict[str, Any]:
        """Counts and sizes."""

    def refresh(self) -> int:
        """See other writers' committed changes; returns a number that differs after each change loaded
        (files beside the collection are re-read on it: see `write_beside`)."""

    def flush(self) -> None:
        """Make pending writes searchable at full speed (index building)."""

    def verify(self, *, show_progress: bool = False) -> dict[str, Any]:
        """Check what the backend can (`m3search index verify`): `problems` (`CorruptCollectionError`s),
        `segments`, `bytes` checksummed, `unchecked` segments, and `checked`: what was checked, in words."""

    def compact(self) -> None:
        """Reclaim deleted space."""

    def close(self) -> None:
        """Release what the backend holds."""
