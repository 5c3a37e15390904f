"""Distributed encoding on a Ray cluster (`m3search index add --ray`, extra `m3search[ray]`).

Encoding is the expensive part of indexing; Ray spreads it. The driver reads the corpus (JSONL or BEIR
corpus.jsonl, each record with its FILE:LINE), drops bad records and documents already stored with the same
content, and hands the rest to a Ray Dataset whose `map_batches` runs a pool of `DocumentEncoder` actors, each
loading the collection's model once on the collection's runtime. Ray streams the vectors back in order and the
driver, the collection's single writer, upserts them with their vectors (BM25 weights stay the collection's to
compute) one durable block at a time. Ray schedules, retries a batch whose worker died (restarting the actor) and
keeps the order; this module adds only the reading, the resume check and the writing.

Exactly once: a document's vectors reach the writer once per run (a failed task's output is discarded by Ray),
and upserts replace by id, so neither a retried batch nor a re-run can double a document. A re-run after an
interruption skips documents stored with the same content (text and metadata, compared with what the collection
holds, so no hash needs storing). Image documents are not encoded here (they are reported as bad records: add
them with a plain `index add`).
"""

from __future__ import annotations

import pickle
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np

from m3search.errors import InvalidInputError
from m3search.extras import require
from m3search.jsonl import corpus_records, line_label
from m3search.progress import bar as progress_bar
from m3search.store import Collection
from m3search.store.documents import as_document

#: Documents per upsert on the driver: one durable transaction each.
WRITE_BLOCK = 256
#: Bad records quoted in the error when `on_error="fail"` (all of them are counted).
QUOTED_ERRORS = 10


@dataclass
class IngestSummary:
    """What a distributed ingest did: documents written, skipped as unchanged or bad, tokens, time per stage."""

    documents: int = 0
    unchanged: int = 0
    #: "FILE:LINE: why" of each skipped bad record (`on_error="skip"`).
    bad: list[str] = field(default_factory=list)
    #: Tokens encoded (the ColBERT token vectors' count; 0 when the collection stores no ColBERT vectors).
    tokens: int = 0
    workers: int = 0
    #: Seconds per stage: read (parse, validate, resume check), encode (the driver waiting for vectors),
    #: write (upserts), total.
    seconds: dict[str, float] = field(default_factory=dict)

    @property
    def docs_per_second(self) -> float:
        """Documents written per second of the whole run."""
        return self.documents / self.seconds["total"] if self.seconds.get("total") else 0.0


class DocumentEncoder:
    """A Ray Data actor: opens the collection read-only once (its model loaded on the runtime asked for) and
    turns batches of texts into the vectors `upsert` would compute, pickled one blob per document."""

    def __init__(self, collection_path: str, runtime: str, batch_size: int) -> None:
        self.collection = Collection.open(collection_path, readonly=True, runtime=runtime, cache=False)
        self.collection.encoder  # noqa: B018  (load the model now, once per actor)
        self.batch_size = batch_size

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        vectors = self.collection.document_vectors(list(batch["text"]), batch_size=self.batch_size)
        blobs = np.empty(len(vectors), dtype=object)
        blobs[:] = [pickle.dumps(v, protocol=5) for v in vectors]
        return {"pos": batch["pos"], "vectors": blobs}


def _records(
    sources: Sequence[Path], fmt: str, bad: list[InvalidInputError], dim: int | None, colbert_dim: int | None
) -> Iterator[tuple[str, dict[str, Any]]]:
    """The valid text records of `sources` with their FILE:LINE; bad ones (also empty texts, images, duplicate
    ids) go to `bad`."""
    seen: dict[str, str] = {}
    for path in sources:
        if not path.is_file():
            raise InvalidInputError(f"{path} does not exist or is not a file")
        for lineno, record in corpus_records(path, fmt, bad):
            where = line_label(str(path), lineno)
            try:
                doc = as_document(record, dim, colbert_dim)
                if doc.image is not None:
                    raise InvalidInputError("image documents are not encoded on Ray; add them without --ray")
                if not isinstance(doc.text, str) or not doc.text.strip():
                    raise InvalidInputError("empty text")
                if doc.id in seen:
                    raise InvalidInputError(f"id {doc.id!r} already at {seen[doc.id]}")
            except InvalidInputError as exc:
                message = str(exc)
                bad.append(InvalidInputError(message if message.startswith(where) else f"{where}: {message}"))
                continue
            seen[doc.id] = where
            yield where, {"id": doc.id, "text": doc.text, "metadata": doc.metadata}


def _blocks(items: Iterable[Any], size: int) -> Iterator[list[Any]]:
    block: list[Any] = []
    for item in items:
        block.append(item)
        if len(block) == size:
            yield block
            block = []
    if block:
        yield block


def _changed(collection: Collection, records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The records not stored with the same text and metadata (the resume check)."""
    stored = collection.get([r["id"] for r in records])
    return [
        r
        for r, doc in zip(records, stored)
        if doc is None or doc.kind != "text" or doc.text != r["text"] or doc.metadata != r["metadata"]
    ]


def upsert_distributed(
    collection_path: str | Path,
    sources: Sequence[str | Path],
    *,
    fmt: str = "auto",
    workers: int = 2,
    gpus_per_worker: float = 0,
    batch_size: int = 32,
    runtime: str = "auto",
    ray_address: str | None = None,
    on_error: Literal["fail", "skip"] = "fail",
    show_progress: bool = True,
    encoder_actor: type = DocumentEncoder,
) -> IngestSummary:
    """Add (or replace, by id) the documents of JSONL / BEIR corpus files to a collection, encoded by `workers`
    Ray actors (each with `gpus_per_worker` GPUs) and written here, in order, by this process.

    Uses the running Ray connection if there is one, else joins `ray_address` (a cluster) or starts a local
    Ray. Bad records are reported with FILE:LINE: `on_error="fail"` raises `InvalidInputError` before anything
    is written, `"skip"` lists them in the summary. `encoder_actor` is the actor class (a `DocumentEncoder`
    subclass may add warm-up or, in tests, fault injection).
    """
    ray = require("ray", "ray", "distributed ingest")
    if on_error not in ("fail", "skip"):
        raise InvalidInputError(f"on_error must be 'fail' or 'skip', got {on_error!r}")
    if workers < 1 or batch_size < 1 or gpus_per_worker < 0:
        raise InvalidInputError("workers and batch_size must be at least 1, gpus_per_worker at least 0")
    summary = IngestSummary(workers=workers)
    start = time.perf_counter()
    with Collection.open(collection_path, runtime=runtime) as collection:
        cfg = collection.config
        if cfg.model is None:
            raise InvalidInputError(f"collection {collection_path} has no model to encode with")
        bad: list[InvalidInputError] = []
        records = list(_records([Path(s) for s in sources], fmt, bad, cfg.dim, cfg.colbert_dim))
        if bad and on_error == "fail":
            quoted = "\n".join(str(e) for e in bad[:QUOTED_ERRORS])
            more = f"\n... and {len(bad) - QUOTED_ERRORS} more" if len(bad) > QUOTED_ERRORS else ""
            raise InvalidInputError(
                f"{len(bad)} bad record(s), nothing written (--on-error skip skips them):\n{quoted}{more}"
            )
        summary.bad = [str(e) for e in bad]
        todo = [
            r for block in _blocks([r for _, r in records], WRITE_BLOCK) for r in _changed(collection, block)
        ]
        summary.unchanged = len(records) - len(todo)
        summary.seconds["read"] = time.perf_counter() - start
        if todo:
            started = not ray.is_initialized()
            if started:
                # a local Ray (no address) listens on loopback only
                local = {} if ray_address else {"_node_ip_address": "127.0.0.1"}
                ray.init(address=ray_address, include_dashboard=False, log_to_driver=False, **local)
            try:
                _encode_and_write(
                    ray,
                    collection,
                    todo,
                    summary,
                    encoder_actor,
                    batch_size,
                    gpus_per_worker,
                    runtime,
                    show_progress,
                )
            finally:
                if started:
                    ray.shutdown()
    summary.seconds["total"] = time.perf_counter() - start
    return summary


def _encode_and_write(
    ray: Any,
    collection: Collection,
    todo: list[dict[str, Any]],
    summary: IngestSummary,
    encoder_actor: type,
    batch_size: int,
    gpus_per_worker: float,
    runtime: str,
    show_progress: bool,
) -> None:
    """Stream `todo` through the actor pool and upsert the vectors in order, a block at a time."""
    context = ray.data.DataContext.get_current()
    saved = context.execution_options.preserve_order, context.enable_progress_bars
    context.execution_options.preserve_order = True  # blocks come back in input order
    context.enable_progress_bars = False  # the driver draws its own bar
    try:
        dataset = ray.data.from_items([{"pos": i, "text": r["text"]} for i, r in enumerate(todo)])
        dataset = dataset.map_batches(
            encoder_actor,
            fn_constructor_kwargs={
                "collection_path": str(collection.path),
                "runtime": runtime,
                "batch_size": batch_size,
            },
            batch_size=batch_size,
            batch_format="numpy",
            # A fixed pool; Ray Data's actor pools restart a dead actor and retry its batch by default
            # (max_restarts=-1, max_task_retries=-1; tests/test_distributed.py kills one to hold it to that).
            compute=ray.data.ActorPoolStrategy(size=summary.workers),
            num_gpus=gpus_per_worker or None,
        )
        encode = write = 0.0
        with progress_bar(total=len(todo), unit="doc", desc="index (ray)", disable=not show_progress) as bar:
            batches = iter(dataset.iter_batches(batch_size=WRITE_BLOCK, batch_format="numpy"))
            while True:
                tick = time.perf_counter()
                batch = next(batches, None)
                encode += time.perf_counter() - tick
                if batch is None:
                    break
                tick = time.perf_counter()
                docs = []
                for pos, blob in zip(batch["pos"], batch["vectors"]):
                    vectors = pickle.loads(blob)
                    docs.append({**todo[int(pos)], **{k: v for k, v in vectors.items() if v is not None}})
                    if vectors.get("colbert") is not None:
                        summary.tokens += len(vectors["colbert"])
                summary.documents += collection.upsert(docs)
                write += time.perf_counter() - tick
                bar.update(len(docs))
        summary.seconds["encode"], summary.seconds["write"] = encode, write
    finally:
        context.execution_options.preserve_order, context.enable_progress_bars = saved
