"""Distributed encoding on a Ray cluster (`m3search index add --ray`, extra `m3search[ray]`).

Encoding is the expensive part of indexing; Ray spreads it, this module adds only the reading, the resume check
and the writing. The driver reads the corpus (`m3search.store.corpus`: bad records reported with FILE:LINE),
drops the documents the collection already holds with the same content, and hands the rest to a Ray Dataset
whose `map_batches` runs a fixed pool of `DocumentEncoder` actors. Each actor loads the collection's model once
(and its image encoder, at its first image), on the runtime asked for (resolved on the actor's own hardware:
`auto` picks fp16 on a GPU, the CPU choice on a CPU), from the collection's config alone (`DetachedPreparer`): it
never opens the collection's storage. It returns prepared batches (vectors, BM25 term counts, thumbnails); the
driver, the collection's single writer, commits them in input order through `Collection.write`, one durable
transaction per block, weighing BM25 term counts with the model's tokenizer alone (it loads no model).

The driver writes for Qdrant collections too, rather than each worker upserting: the workers then need no
access to the store (no Qdrant credentials or route from the cluster, and Qdrant's local mode allows one client
only), the written/skipped accounting and the resume check stay in one place, and writing is a small part of the
time (a few % of encoding, measured in docs/SCALING.md); a Qdrant cluster spreads the upserts over its shards
itself.

Exactly once: Ray Data restarts an actor whose process died and retries its batch (a failed task's output is
discarded), and the driver keeps count of the input positions it wrote, so a document is written once per run
whatever Ray delivers; upserts replace by id, so a re-run cannot double one either. A re-run after an
interruption skips documents stored with the same text, metadata and kind: the collection holds exactly these,
so they are compared as they are, with no hash column to store. An image is compared by what the collection
keeps of it, its thumbnail: the driver decodes the image and makes the thumbnail as the actors do, so an image
replaced under the same path is encoded again (a change too small to alter its 256-pixel JPEG thumbnail is not
seen); images are read from their paths by the actors, which therefore need the same files (and the
collection's directory, for its image adapter) at the same paths: one machine, or a shared filesystem.
"""

from __future__ import annotations

import pickle
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np

from m3search.encoders.image.validation import load_image, make_thumbnail
from m3search.errors import InvalidInputError
from m3search.extras import require
from m3search.jsonl import blocks
from m3search.progress import bar as progress_bar
from m3search.store.collection import Collection
from m3search.store.config import CollectionConfig
from m3search.store.corpus import read_corpus
from m3search.store.documents import Document, as_document
from m3search.store.ingest import DetachedPreparer, PreparedBatch

#: Documents per write on the driver: one durable transaction each.
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
    #: Tokens encoded (ColBERT token vectors; 0 when the collection stores none).
    tokens: int = 0
    workers: int = 0
    #: Documents the collection holds at the end.
    count: int = 0
    #: Seconds per stage: read (parse, validate, resume check), encode (the driver waiting for the actors),
    #: write (commits), total.
    seconds: dict[str, float] = field(default_factory=dict)

    @property
    def docs_per_second(self) -> float:
        """Documents written per second of the whole run."""
        return self.documents / self.seconds["total"] if self.seconds.get("total") else 0.0


class DocumentEncoder:
    """A Ray Data actor: loads the collection's model once and turns batches of pickled records into pickled
    prepared documents (an error message instead, for a record the collection refuses)."""

    def __init__(self, config: CollectionConfig, location: str, runtime: str, batch_size: int) -> None:
        self.preparer = DetachedPreparer(config, location, runtime)
        self.batch_size = batch_size

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        records = [pickle.loads(blob) for blob in batch["record"]]
        try:
            rows = self._rows(self.preparer.prepare(records, self.batch_size))
        except InvalidInputError:  # find the bad one(s): the rest of the batch is still written
            rows = []
            for where, record in zip(batch["where"], records):
                try:
                    rows += self._rows(self.preparer.prepare([record], self.batch_size))
                except InvalidInputError as exc:
                    rows.append((b"", f"{where}: {exc}"))
        blobs = np.empty(len(rows), dtype=object)
        blobs[:] = [blob for blob, _ in rows]
        return {"pos": batch["pos"], "prepared": blobs, "error": np.array([e for _, e in rows], dtype=object)}

    @staticmethod
    def _rows(batch: PreparedBatch) -> list[tuple[bytes, str]]:
        """A prepared batch as one pickled (document, BM25 counts, thumbnail) per document."""
        return [
            (pickle.dumps((doc, counts, batch.thumbnails.get(doc.id)), protocol=5), "")
            for doc, counts in zip(batch.docs, batch.counts)
        ]


def _changed(
    collection: Collection, records: list[tuple[str, dict[str, Any]]]
) -> list[tuple[str, dict[str, Any]]]:
    """The (where, record) pairs not stored with the same content (text, metadata, kind, image thumbnail): the
    resume check."""
    cfg = collection.config
    stored = collection.get([r["id"] for _, r in records])
    out = []
    for (where, record), doc in zip(records, stored):
        new = as_document(record, cfg.dim, cfg.colbert_dim)
        if (
            doc is None
            or (doc.text, doc.metadata, doc.kind) != (new.text, new.metadata, new.kind)
            or not _same_image(collection, doc, new)
        ):
            out.append((where, record))
    return out


def _same_image(collection: Collection, stored: Document, new: Document) -> bool:
    """Whether `new`'s image makes the thumbnail stored with `stored` (true for a document without an image)."""
    if new.image is None:
        return True
    if stored.thumbnail is None:
        return False
    try:
        thumbnail = make_thumbnail(load_image(new.image))
    except InvalidInputError:  # the actor that encodes it reports it, under the image encoder's limits
        return False
    return collection.thumbnail(stored.thumbnail) == thumbnail


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
    """Add (or replace, by id) the documents of `sources` (files and folders, read as `index add` reads them)
    to the collection at `collection_path` (local, or a link to a Qdrant one), encoded by `workers` Ray actors
    (each with `gpus_per_worker` GPUs) and written here, in order, by this process.

    Uses the running Ray connection if there is one, else joins `ray_address` (a cluster) or starts a local
    Ray on 127.0.0.1. Bad records are reported with FILE:LINE: `on_error="fail"` raises `InvalidInputError`
    before anything is written, `"skip"` lists them in the summary. `encoder_actor`: the actor class (a
    `DocumentEncoder` subclass may add warm-up or, in tests, fault injection).
    """
    ray = require("ray", "ray", "distributed ingest")
    if on_error not in ("fail", "skip"):
        raise InvalidInputError(f"on_error must be 'fail' or 'skip', got {on_error!r}")
    if workers < 1 or batch_size < 1 or gpus_per_worker < 0:
        raise InvalidInputError("workers and batch_size must be at least 1, gpus_per_worker at least 0")
    summary = IngestSummary(workers=workers)
    start = time.perf_counter()
    with Collection.open(collection_path, runtime=runtime, cache=False) as collection:
        cfg = collection.config
        if cfg.model is None:
            raise InvalidInputError(f"collection {collection.location} has no model to encode with")
        bad: list[str] = []
        records = list(read_corpus(sources, fmt, skipped=bad, dim=cfg.dim, colbert_dim=cfg.colbert_dim))
        if bad and on_error == "fail":
            quoted = "\n".join(bad[:QUOTED_ERRORS])
            more = f"\n... and {len(bad) - QUOTED_ERRORS} more" if len(bad) > QUOTED_ERRORS else ""
            raise InvalidInputError(
                f"{len(bad)} bad record(s), nothing written (--on-error skip skips them):\n{quoted}{more}"
            )
        summary.bad, read_errors = bad, len(bad)  # the workers append the records they refuse
        todo = [r for block in blocks(records, WRITE_BLOCK) for r in _changed(collection, block)]
        summary.unchanged = len(records) - len(todo)
        summary.seconds["read"] = time.perf_counter() - start
        if todo:
            started = not ray.is_initialized()
            if started:
                local = {} if ray_address else {"_node_ip_address": "127.0.0.1"}  # a local Ray: loopback only
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
        summary.count = collection.count()
    summary.seconds["total"] = time.perf_counter() - start
    refused = summary.bad[read_errors:]
    if refused and on_error == "fail":
        raise InvalidInputError(
            f"{len(refused)} record(s) refused while encoding (the other {summary.documents} were written):\n"
            + "\n".join(refused[:QUOTED_ERRORS])
        )
    return summary


def _encode_and_write(
    ray: Any,
    collection: Collection,
    todo: list[tuple[str, dict[str, Any]]],
    summary: IngestSummary,
    encoder_actor: type,
    batch_size: int,
    gpus_per_worker: float,
    runtime: str,
    show_progress: bool,
) -> None:
    """Stream `todo` through the actor pool and commit the prepared documents in order, a block at a time."""
    context = ray.data.DataContext.get_current()
    saved = context.execution_options.preserve_order, context.enable_progress_bars
    context.execution_options.preserve_order = True  # blocks come back in input order
    context.enable_progress_bars = False  # the driver draws its own bar
    written = np.zeros(len(todo), dtype=bool)
    try:
        dataset = ray.data.from_items(
            [
                {"pos": i, "where": where, "record": pickle.dumps(r, protocol=5)}
                for i, (where, r) in enumerate(todo)
            ]
        ).map_batches(
            encoder_actor,
            fn_constructor_kwargs={
                "config": collection.config,
                # absolute: an actor's working directory is not this process's (the image adapter's copy is
                # read from the collection's directory)
                "location": str(collection.path.absolute()) if collection.path else collection.location,
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
                summary.documents += _write(collection, batch, written, summary)
                write += time.perf_counter() - tick
                bar.update(len(batch["pos"]))
        summary.seconds["encode"], summary.seconds["write"] = encode, write
    finally:
        context.execution_options.preserve_order, context.enable_progress_bars = saved
    if not written.all():
        raise RuntimeError(f"Ray returned {int(written.sum())} of {len(todo)} documents")


def _write(
    collection: Collection, batch: dict[str, np.ndarray], written: np.ndarray, summary: IngestSummary
) -> int:
    """Commit one block of the actors' output (each input position once); returns the documents written."""
    docs, counts, thumbnails = [], [], {}
    for pos, blob, error in zip(batch["pos"], batch["prepared"], batch["error"]):
        if written[int(pos)]:
            continue  # delivered twice: written already
        written[int(pos)] = True
        if error:
            summary.bad.append(error)
            continue
        doc, count, thumbnail = pickle.loads(blob)
        docs.append(doc)
        counts.append(count)
        if thumbnail is not None:
            thumbnails[doc.id] = thumbnail
        if doc.colbert is not None:
            summary.tokens += len(doc.colbert)
    return collection.write(PreparedBatch(docs, counts, thumbnails))
