"""Moving a collection between backends (local, qdrant, edge, either way) from its stored vectors: nothing is encoded
again. The target gets the source's config (model, outputs, sizes, index settings); documents go over in
batches, each one acknowledged write; a run that stopped is resumed by running it again (documents the target
already holds are skipped)."""

from __future__ import annotations

import copy
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

from m3search.errors import InvalidInputError
from m3search.store.backends.local import LocalBackend
from m3search.store.collection import Collection, is_collection
from m3search.store.config import CollectionConfig
from m3search.store.images import IMAGE_ENCODER_DIR
from m3search.store.ingest import PreparedBatch

#: The config fields a resumed target must share with the source.
SAME = ("outputs", "dim", "colbert_dim", "model", "sparse_source")


def _target_config(
    source: Collection, backend: str
) -> tuple[CollectionConfig, Callable[[Path], None] | None]:
    """The source's config for the target, and what installs its image adapter into a local target."""
    config = copy.deepcopy(source.config)
    entry = config.image_encoder
    if not entry or entry.get("source") != IMAGE_ENCODER_DIR or source.path is None:
        return config, None
    adapter = source.path / IMAGE_ENCODER_DIR
    if backend == "qdrant":  # no directory of its own: it records where the adapter is
        entry["source"] = str(adapter.resolve())
        return config, None

    def install(directory: Path) -> None:
        shutil.copytree(adapter, directory / IMAGE_ENCODER_DIR)

    return config, install


def open_target(source: Collection, target: Path, backend: str = "local", **qdrant: Any) -> Collection:
    """The migration target at `target`: reopened when a previous run made it (its config must match the
    source's), else created like the source (backend "qdrant": the Qdrant collection named after the
    directory, `url=` or `path=` in `qdrant`, and a link in `target`; "edge": a Qdrant Edge shard in `target`)."""
    if is_collection(target):
        dest = Collection.open(target, cache=False)
        differ = [f for f in SAME if getattr(dest.config, f) != getattr(source.config, f)]
        if differ:
            dest.close()
            raise InvalidInputError(f"{target} holds another kind of collection ({', '.join(differ)} differ)")
        return dest
    config, install = _target_config(source, backend)
    if backend == "qdrant":
        from m3search.store.backends.qdrant import QdrantBackend, write_link

        if target.exists() and (not target.is_dir() or any(target.iterdir())):
            raise InvalidInputError(f"{target} exists and is not an empty directory")
        QdrantBackend.create(target.name, config, **qdrant).close()
        write_link(target, target.name, url=qdrant.get("url"), path=qdrant.get("path"))
    elif backend == "local":
        LocalBackend.create(target, config, install)
    elif backend == "edge":
        from m3search.store.backends.edge import EdgeBackend

        EdgeBackend.create(target, config, install)
    else:
        raise InvalidInputError(f"unknown backend {backend!r}; choose local, qdrant or edge")
    return Collection.open(target, cache=False)


def migrate(
    source: Collection,
    dest: Collection,
    *,
    batch_size: int = 256,
    progress: Callable[[int], None] | None = None,
) -> int:
    """Copy every document of `source` with its stored vectors into `dest`, skipping those `dest` holds;
    returns how many were written. `progress(n)` is told of each batch read."""
    written = 0
    for batch in source.export(batch_size):
        have = dest.get([d.id for d in batch.docs])
        keep = [i for i, found in enumerate(have) if found is None]
        if keep:
            docs = [batch.docs[i] for i in keep]
            written += dest.write(
                PreparedBatch(
                    docs,
                    [batch.counts[i] for i in keep],
                    {d.id: batch.thumbnails[d.id] for d in docs if d.id in batch.thumbnails},
                )
            )
        if progress is not None:
            progress(len(batch.docs))
    return written
