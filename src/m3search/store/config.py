"""A collection's fixed settings (`config.json`), written once at creation, and durable small-file writes."""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from m3search.encoders.base import OUTPUT_KINDS, OutputKind
from m3search.errors import CollectionError, CollectionExistsError, CorruptCollectionError, InvalidInputError
from m3search.index.dense import DENSE_KINDS, HNSWParams
from m3search.index.multivector import COLBERT_DTYPES, COLBERT_PRUNING, COMPRESSED_DTYPES

CONFIG_FILE = "config.json"
#: 2: sparse postings with uint16 row offsets in blocks, per-segment metadata index. 3: segment files' sizes
#: and checksums recorded in the database (segments of format-2 collections have none and are still read).
#: 4: ColBERT stores say their dtype in `colbert.json` (adds `2bit` and `binary`, float16 copies for re-check)
#: and the config records `colbert_recheck` and `colbert_prune` (older collections open as they are).
#: 5: binary ColBERT codes hold no bits for the dimensions of zero spread in the center (`fit_center`); binary
#: stores of format 4 have none such and keep their center, hence their layout, for every new segment.
#: 6: new segments keep the sparse forward index (`sparse_fwd_*.npy`) unless the config's `sparse_forward` is
#: false; segments of older formats have none and look rows up by binary search, with the same scores.
#: 7: new segments store the dense graph's nodes in walk order (`dense_order.npy` maps them to rows), which a
#: reader of format 6 would take for rows; collections of older formats keep writing graphs in row order.
#: 8: graphs over unit vectors are linked and walked over byte codes (`m3search.index.dense.ByteCodes`), which a
#: reader of format 7 would walk with the float query; collections of older formats keep their codes.
FORMAT_VERSION = 8
#: The formats this version opens.
READABLE_FORMATS = (2, 3, 4, 5, 6, 7, 8)


@dataclass
class CollectionConfig:
    """What a collection holds and how it indexes it; readers and writers of every version agree on it.

    model: the model that encodes text (hub id or directory), None for a collection fed only vectors.
    sparse_source: "model" (the model's sparse head), "bm25" (BM25 over its tokenizer) or None.
    """

    outputs: list[OutputKind]
    dim: int | None
    colbert_dim: int | None
    model: str | None = None
    sparse_source: str | None = None
    encoder: dict[str, Any] = field(default_factory=dict)
    #: The runtime and precision that made the stored model vectors, {"runtime": "torch-bf16", "dtype": "bf16"};
    #: None when unrecorded (vectors given directly, BM25 only, or a collection made before this field).
    runtime: dict[str, str] | None = None
    #: The image encoder's description and `source` (see `m3search.store.images`); None: no images.
    image_encoder: dict[str, Any] | None = None
    max_length: int | None = None
    dense_index: str = "hnsw"
    hnsw: dict[str, Any] = field(default_factory=lambda: asdict(HNSWParams()))
    colbert_dtype: str = "float16"
    #: Re-score this many best candidates (per segment) of the compressed MaxSim with float16 vectors kept on
    #: disk; 0: none kept.
    colbert_recheck: int = 0
    #: Index-time token pruning: None, or "punctuation" (drop special and punctuation tokens).
    colbert_prune: str | None = None
    #: Segments also store the sparse index's forward index (4 bytes a posting, ~200 B/doc with bge-m3-like
    #: vectors): faster lexical scores for a hybrid's candidates at large sizes (docs/INDEX.md). Local backend.
    sparse_forward: bool = True
    #: Documents in the incremental level that trigger sealing them into a segment.
    flush_docs: int = 10_000
    #: Segments of one size class merged together once there are this many.
    merge_factor: int = 10
    format: int = FORMAT_VERSION

    def __post_init__(self) -> None:
        unknown = [k for k in self.outputs if k not in OUTPUT_KINDS]
        if unknown or not self.outputs:
            raise InvalidInputError(
                f"outputs must be a non-empty subset of {OUTPUT_KINDS}, got {self.outputs}"
            )
        self.outputs = [k for k in OUTPUT_KINDS if k in self.outputs]
        if "dense" in self.outputs and not (isinstance(self.dim, int) and self.dim > 0):
            raise InvalidInputError("a collection with dense output needs a positive dense dimension `dim`")
        if "colbert" in self.outputs and not (isinstance(self.colbert_dim, int) and self.colbert_dim > 0):
            raise InvalidInputError("a collection with colbert output needs a positive `colbert_dim`")
        if self.dense_index not in DENSE_KINDS:
            raise InvalidInputError(
                f"dense_index must be one of {', '.join(DENSE_KINDS)}, got {self.dense_index!r}"
            )
        if self.colbert_dtype not in COLBERT_DTYPES:
            raise InvalidInputError(
                f"colbert_dtype must be one of {', '.join(COLBERT_DTYPES)}, got {self.colbert_dtype!r}"
            )
        if not isinstance(self.colbert_recheck, int) or self.colbert_recheck < 0:
            raise InvalidInputError(f"colbert_recheck must be an integer >= 0, got {self.colbert_recheck!r}")
        if self.colbert_recheck and self.colbert_dtype not in COMPRESSED_DTYPES:
            raise InvalidInputError(
                f"colbert_recheck re-scores compressed token vectors ({', '.join(COMPRESSED_DTYPES)}); "
                f"{self.colbert_dtype} is stored exactly"
            )
        if self.colbert_prune is not None and self.colbert_prune not in COLBERT_PRUNING:
            raise InvalidInputError(
                f"colbert_prune must be None or one of {', '.join(COLBERT_PRUNING)}, got {self.colbert_prune!r}"
            )
        if not isinstance(self.sparse_forward, bool):
            raise InvalidInputError(f"sparse_forward must be true or false, got {self.sparse_forward!r}")
        known = {f.name for f in fields(HNSWParams)}
        if set(self.hnsw) - known:
            raise InvalidInputError(
                f"unknown HNSW settings {sorted(set(self.hnsw) - known)}; known: {sorted(known)}"
            )
        self.hnsw = asdict(HNSWParams(**self.hnsw))
        if self.flush_docs < 1 or self.merge_factor < 2:
            raise InvalidInputError("flush_docs must be >= 1 and merge_factor >= 2")

    def runtime_mismatch(self, identity: dict[str, str] | None) -> str | None:
        """Why vectors from a runtime with `identity` (`Runtime.identity`) must not join the stored ones, or None
        when they may: runtimes differ in the last digits, so mixed vectors make scores incomparable."""
        model_made = "dense" in self.outputs or "colbert" in self.outputs or self.sparse_source == "model"
        recorded = self.recorded_runtime()
        if identity is None or not model_made:
            return None
        if recorded is None:
            return "its vectors were made by an unrecorded runtime"
        if (recorded["runtime"], recorded["dtype"]) != (identity["runtime"], identity["dtype"]):
            return (
                f"its vectors were made by runtime {recorded['runtime']} ({recorded['dtype']}), "
                f"not {identity['runtime']} ({identity['dtype']})"
            )
        return None

    def recorded_runtime(self) -> dict[str, str] | None:
        """`runtime`, or for a collection made before that field, the runtime its encoder description names."""
        if self.runtime is not None:
            return self.runtime
        from m3search.encoders.runtimes.base import runtime_dtype

        described = [self.encoder, *self.encoder.get("parts", {}).values()]
        name = next((d["runtime"] for d in described if isinstance(d, dict) and d.get("runtime")), None)
        return None if name is None else {"runtime": name, "dtype": runtime_dtype(name)}

    @property
    def hnsw_params(self) -> HNSWParams:
        return HNSWParams(**self.hnsw)

    def save(self, directory: Path) -> None:
        """Write `config.json` durably."""
        atomic_write_text(directory / CONFIG_FILE, json.dumps(asdict(self), indent=2, sort_keys=True))

    @classmethod
    def load(cls, directory: Path) -> CollectionConfig:
        """Read `config.json`, refusing formats this version does not know."""
        try:
            data = json.loads((directory / CONFIG_FILE).read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise CollectionError(f"cannot read {directory / CONFIG_FILE}: it does not exist") from None
        except (OSError, ValueError) as exc:
            raise _damaged(directory, str(exc)) from None
        if not isinstance(data, dict):
            raise _damaged(directory, "it is not a JSON object")
        if data.get("format") not in READABLE_FORMATS:
            raise CollectionError(
                f"{directory} has collection format {data.get('format')}; this m3search reads "
                f"formats {', '.join(map(str, READABLE_FORMATS))}"
            )
        try:
            return cls(**data)
        except (TypeError, InvalidInputError) as exc:
            raise _damaged(directory, str(exc)) from None


def _damaged(directory: Path, why: str) -> CorruptCollectionError:
    return CorruptCollectionError(
        f"collection {directory.name!r} is damaged: {CONFIG_FILE} cannot be read ({why})", CONFIG_FILE
    )


def fsync_path(path: Path) -> None:
    """Force a file's (or a directory's entries') contents to stable storage."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write_text(path: Path, text: str) -> None:
    """Replace `path` with `text` so that a crash leaves either the old or the new file, never a mix."""
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    fsync_path(path.parent)


def new_directory(path: Path, fill: Callable[[Path], None]) -> None:
    """Make the new collection directory `path`, whole or not at all: `fill` populates a temporary sibling,
    which is made durable and renamed into place. Refuses a path holding a collection or other files."""
    if (path / CONFIG_FILE).exists():
        raise CollectionExistsError(f"a collection already exists at {path}")
    if path.exists() and (not path.is_dir() or any(path.iterdir())):
        raise CollectionExistsError(f"{path} exists and is not an empty directory")
    tmp = path.parent / f".{path.name}.creating-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    fill(tmp)
    for file in tmp.rglob("*"):
        if file.is_file():
            fsync_path(file)
    fsync_path(tmp)
    os.rename(tmp, path)
    fsync_path(path.parent)
