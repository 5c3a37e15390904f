"""The one place evaluation meets the real engine: index a task's corpus into a collection, search through it.

Kept small on purpose: the runner only needs `Searcher.search`, so evaluating another engine (or a future
collection API) means changing this module alone.
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from m3search.eval.datasets import RetrievalTask
from m3search.eval.runner import Hit
from m3search.eval.tune import Weights

#: Documents per upsert call: large enough to batch the encoder well, small enough to show progress.
UPSERT_BLOCK = 256


@dataclass
class CollectionSearcher:
    """A `Searcher` over a collection."""

    collection: Any

    def search(self, query: str, *, k: int, mode: str, fusion: str | None, weights: Weights | None
               ) -> Sequence[Hit]:
        """Ranked (id, score) hits from the collection."""
        options: dict[str, Any] = {"mode": mode}
        if fusion is not None:
            options.update(fusion=fusion, weights=list(weights) if weights is not None else None)
        return [(hit.id, hit.score) for hit in self.collection.search(query, k, **options)]


def index_task(collection: Any, task: RetrievalTask, *, progress: bool = True) -> dict[str, float]:
    """Upsert the task's corpus (id, BEIR text, metadata); returns the indexing time and throughput."""
    docs = list(task.corpus.values())
    start = time.perf_counter()
    with tqdm(total=len(docs), desc=f"index {task.name}", unit="doc", disable=not progress) as bar:
        for i in range(0, len(docs), UPSERT_BLOCK):
            block = docs[i:i + UPSERT_BLOCK]
            collection.upsert([{"id": d.id, "text": d.full_text, "metadata": dict(d.metadata)}
                               for d in block])
            bar.update(len(block))
    seconds = time.perf_counter() - start
    return {"documents": len(docs), "seconds": seconds, "docs_per_s": len(docs) / seconds if seconds else 0.0}


@contextmanager
def indexed_collection(task: RetrievalTask, *, model: str, outputs: Sequence[str], path: Path | None = None,
                       progress: bool = True) -> Iterator[tuple[CollectionSearcher, dict[str, float]]]:
    """A new collection holding `task`'s corpus, in `path` (kept) or a temporary folder (removed after)."""
    from m3search.store import Collection  # issue 3: the collection engine

    with tempfile.TemporaryDirectory(prefix="m3search-eval-") as tmp:
        target = path if path is not None else Path(tmp) / "collection"
        collection = Collection.create(target, model=model, outputs=list(outputs))
        stats = index_task(collection, task, progress=progress)
        yield CollectionSearcher(collection), stats
