"""The one place evaluation meets the real engine: index a task's corpus into a collection, search through it.

Kept small on purpose: the runner only needs `Searcher.search`, so evaluating another engine means changing
this module alone. One collection serves every mode and fusion of a task (the corpus is encoded once), and the
caller passes in a loaded encoder so several tasks (XQuAD-R's language pairs) share one model.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

from m3search.encoders.base import TextEncoder
from m3search.errors import InvalidInputError
from m3search.eval.datasets import RetrievalTask
from m3search.eval.runner import Hit
from m3search.eval.tune import Weights
from m3search.progress import bar
from m3search.search.planner import QueryVectors
from m3search.store import Collection
from m3search.store.config import CONFIG_FILE, CollectionConfig

#: Documents per upsert call: large enough to batch the encoder well, small enough to show progress.
UPSERT_BLOCK = 256
#: Ids per `Collection.get` when checking that a reused collection holds a task's corpus.
CHECK_BLOCK = 1000


def load_model(
    model: str,
    *,
    outputs: Sequence[str],
    runtime: str = "auto",
    device: str | None = None,
    sparse: Literal["auto", "model", "bm25", "none"] = "auto",
) -> TextEncoder:
    """Load `model` once for every task of an evaluation; sparse weights only when a mode needs them."""
    from m3search.encoders import load_encoder
    from m3search.encoders.runtimes import check_runtime_name

    check_runtime_name(runtime)  # an unknown runtime fails before the model loads
    return load_encoder(
        model, runtime=runtime, device=device, sparse=sparse if "sparse" in outputs else "none"
    )


def stored_outputs(paths: Iterable[Path | None]) -> set[str]:
    """The outputs of the collections that already exist at `paths`: reusing one needs an encoder for all."""
    return {
        kind
        for path in paths
        if path is not None and (path / CONFIG_FILE).is_file()
        for kind in CollectionConfig.load(path).outputs
    }


@dataclass
class CollectionSearcher:
    """A `Searcher` over a collection, with the search settings every run of an evaluation shares.

    Each search encodes its query text, so timed latencies are what a user of the collection sees; with
    `reuse_queries` each distinct query is encoded once and its vectors reused (for weight tuning, which
    searches the same queries many times and is not timed). `shared` holds the vectors other collections of
    the same model made for a text: their dense and ColBERT parts are reused, BM25 weights re-made from this
    collection's statistics. `normalize`, `candidates` and `rerank` None: the collection's defaults.
    """

    collection: Collection
    normalize: str | None = None
    candidates: int | None = None
    reuse_queries: bool = False
    shared: dict[str, QueryVectors] | None = None
    rerank: int | None = None
    _vectors: dict[str, QueryVectors] = field(default_factory=dict, init=False, repr=False)

    def search(
        self, query: str, *, k: int, mode: str, fusion: str | None, weights: Weights | None
    ) -> Sequence[Hit]:
        """Ranked (id, score) hits from the collection."""
        options: dict[str, Any] = {
            "mode": mode,
            "normalize": self.normalize,
            "candidates": self.candidates,
            "rerank": self.rerank,
        }
        if fusion is not None:
            options.update(fusion=fusion, weights=list(weights) if weights is not None else None)
        target: str | QueryVectors = self._encoded(query) if self.reuse_queries else query
        return [(hit.id, hit.score) for hit in self.collection.search(target, k, **options)]

    def reusing_queries(self) -> CollectionSearcher:
        """The same searcher, encoding each distinct query once."""
        return CollectionSearcher(
            self.collection,
            self.normalize,
            self.candidates,
            reuse_queries=True,
            shared=self.shared,
            rerank=self.rerank,
        )

    def _encoded(self, query: str) -> QueryVectors:
        if query not in self._vectors:
            known = self.shared.get(query) if self.shared is not None else None
            if known is None:
                vectors = self.collection.encode_query(query)
            elif self.collection.config.sparse_source == "bm25":
                bm25 = self.collection.encode_query(query, ["sparse"])
                vectors = replace(known, sparse=bm25.sparse, sparse_ceiling=bm25.sparse_ceiling)
            else:
                vectors = known
            self._vectors[query] = vectors
            if self.shared is not None:
                self.shared[query] = vectors
        return self._vectors[query]


def index_task(collection: Collection, task: RetrievalTask, *, progress: bool = True) -> dict[str, float]:
    """Upsert the task's corpus (id, BEIR text, metadata) and compact it into one sealed segment (BM25 weights
    under the final statistics, the steady state a search sees); returns the time taken and throughput."""
    docs = list(task.corpus.values())
    start = time.perf_counter()
    with bar(total=len(docs), desc=f"index {task.name}", unit="doc", disable=not progress) as shown:
        for i in range(0, len(docs), UPSERT_BLOCK):
            block = docs[i : i + UPSERT_BLOCK]
            collection.upsert(
                [{"id": d.id, "text": d.full_text, "metadata": dict(d.metadata)} for d in block]
            )
            shown.update(len(block))
    collection.compact()
    seconds = time.perf_counter() - start
    return {"documents": len(docs), "seconds": seconds, "docs_per_s": len(docs) / seconds if seconds else 0.0}


def check_reusable(
    collection: Collection,
    task: RetrievalTask,
    *,
    model: str,
    outputs: Sequence[str],
    encoder: TextEncoder,
    dense_index: str | None = None,
) -> None:
    """Refuse an existing collection built by another model or runtime, with another dense index, lacking an
    output, or holding another corpus; each error names `--reindex`, which rebuilds it."""
    cfg = collection.config
    rebuild = "give another --collection folder or --reindex to rebuild it"
    if cfg.model != str(model):
        raise InvalidInputError(
            f"collection {collection.path} was built with model {cfg.model!r}, not "
            f"{model!r}: give the same --model, or {rebuild}"
        )
    mismatch = cfg.runtime_mismatch(encoder.runtime_identity())
    if mismatch:
        raise InvalidInputError(
            f"collection {collection.path}: {mismatch}; mixing them would make scores depend on the runtime: "
            f"give the same --runtime, or {rebuild}"
        )
    if dense_index is not None and "dense" in cfg.outputs and dense_index != cfg.dense_index:
        raise InvalidInputError(
            f"collection {collection.path} has a {cfg.dense_index} dense index, not {dense_index}: {rebuild}"
        )
    missing = [o for o in outputs if o not in cfg.outputs]
    if missing:
        raise InvalidInputError(
            f"collection {collection.path} stores no {', '.join(missing)} vectors, which "
            f"the requested modes need: {rebuild}"
        )
    ids = list(task.corpus)
    absent = []
    for start in range(0, len(ids), CHECK_BLOCK):
        block = ids[start : start + CHECK_BLOCK]
        absent += [i for i, doc in zip(block, collection.get(block)) if doc is None]
    if absent or collection.count() != len(ids):
        raise InvalidInputError(
            f"collection {collection.path} holds {collection.count()} documents, not the "
            f"{len(ids)} of {task.name} ({len(absent)} missing, e.g. "
            f"{(absent or ['none'])[0]}): it was built for another corpus or slice; {rebuild}"
        )


def _replace_dir(new: Path, old: Path) -> None:
    """Put directory `new` in the place of `old`: at every moment `old` is the previous or the new directory,
    or (between two renames) absent with the previous one beside it."""
    trash = old.parent / f".{old.name}.replaced"
    shutil.rmtree(trash, ignore_errors=True)
    os.replace(old, trash)
    os.replace(new, old)
    shutil.rmtree(trash, ignore_errors=True)


@contextmanager
def indexed_collection(
    task: RetrievalTask,
    *,
    model: str,
    outputs: Sequence[str],
    encoder: TextEncoder,
    path: Path | None = None,
    normalize: str | None = None,
    candidates: int | None = None,
    rerank: int | None = None,
    dense_index: str | None = None,
    cache: bool = False,
    reindex: bool = False,
    progress: bool = True,
    shared_queries: dict[str, QueryVectors] | None = None,
) -> Iterator[tuple[CollectionSearcher, dict[str, Any]]]:
    """A collection holding `task`'s corpus and a searcher over it.

    In `path` the collection is kept; when `path` already holds one built for the same model, runtime and
    corpus it is reused without indexing, unless `reindex`: then a new one is built beside it and replaces it
    once complete. Without `path` it lives in a temporary folder removed afterwards. `encoder` is the loaded
    `model`; `dense_index` defaults to hnsw; `cache` lets indexing read and fill the shared embedding cache.
    With `shared_queries` the searcher encodes each query once, reusing what other tasks' searchers encoded
    (see `CollectionSearcher`).
    """
    with tempfile.TemporaryDirectory(prefix="m3search-eval-") as tmp:
        target = path if path is not None else Path(tmp) / "collection"
        exists = (target / CONFIG_FILE).is_file()
        if exists and not reindex:
            collection = Collection.open(target, encoder=encoder, cache=cache)
            try:
                check_reusable(
                    collection, task, model=model, outputs=outputs, encoder=encoder, dense_index=dense_index
                )
            except InvalidInputError:
                collection.close()
                raise
            stats: dict[str, Any] = {
                "documents": collection.count(),
                "seconds": 0.0,
                "docs_per_s": 0.0,
                "reused": str(target),
            }
        else:
            build = target.parent / f".{target.name}.reindex" if exists else target
            if exists:
                shutil.rmtree(build, ignore_errors=True)  # left by an interrupted rebuild
            collection = Collection.create(
                build,
                model=model,
                encoder=encoder,
                outputs=list(outputs),
                dense_index=dense_index or "hnsw",
                cache=cache,
            )
            stats = {**index_task(collection, task, progress=progress)}
            if exists:
                collection.close()
                _replace_dir(build, target)
                collection = Collection.open(target, encoder=encoder, cache=cache)
                stats["reindexed"] = str(target)
        try:
            once = shared_queries is not None
            yield CollectionSearcher(collection, normalize, candidates, once, shared_queries, rerank), stats
        finally:
            collection.close()
