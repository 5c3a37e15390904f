"""Reading a corpus to index, the one way `m3search index add` and distributed ingest (`m3search.distributed`)
share: JSONL (`{"id", "text", "image", "metadata", ...}`; `image` a path, relative ones from the file's folder,
or base64), BEIR `corpus.jsonl` (`{"_id", "title", "text"}`: the title becomes metadata and the text's first
line), Parquet (the same fields as columns; extra `m3search[ray]`, which brings pyarrow), image files (one image
document each, folders walked) and plain text files (one document each, its path as id).

Every record is checked before anything encodes it: valid UTF-8 and JSON, an id not seen earlier in the input,
a non-empty text (or an image, or vectors), fields a collection accepts, an image that decodes. A bad record is
an `InvalidInputError` naming FILE:LINE (Parquet: FILE:ROW, 1-based; a text or image file: FILE), raised, or
collected and skipped when the caller passes a `skipped` list (`--on-error skip`).

Image paths come out absolute, so a process with another working directory (a Ray actor) reads the same
files; an image file's document keeps the path as given in its metadata.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from m3search.encoders.image.validation import load_image
from m3search.errors import InvalidInputError
from m3search.extras import require
from m3search.jsonl import line_label, parse_json
from m3search.store.documents import as_document

FORMATS = ("auto", "jsonl", "beir", "parquet", "text", "image")
#: File suffixes `auto` reads as image documents, JSON Lines and Parquet.
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp", ".gif", ".bmp")
JSONL_SUFFIXES = (".jsonl", ".json", ".ndjson")
PARQUET_SUFFIXES = (".parquet", ".pq")
#: Parquet rows decoded at a time.
PARQUET_BATCH = 1024


def expand(inputs: Sequence[Path]) -> list[tuple[Path, Path]]:
    """(file, root) pairs: files as given, directories walked for their files (in name order)."""
    out = []
    for item in map(Path, inputs):
        if item.is_dir():
            out += [(p, item) for p in sorted(item.rglob("*")) if p.is_file()]
        elif item.is_file():
            out.append((item, item.parent))
        else:
            raise InvalidInputError(f"{item} does not exist")
    return out


def file_format(path: Path, fmt: str = "auto") -> str:
    """How `path` is read under `fmt`: "jsonl" (JSONL and BEIR), "parquet", "image" or "text"."""
    if fmt not in FORMATS:
        raise InvalidInputError(f"unknown corpus format {fmt!r}; choose one of {', '.join(FORMATS)}")
    suffix = path.suffix.lower()
    if fmt in ("jsonl", "beir") or (fmt == "auto" and suffix in JSONL_SUFFIXES):
        return "jsonl"
    if fmt == "parquet" or (fmt == "auto" and suffix in PARQUET_SUFFIXES):
        return "parquet"
    if fmt == "image" or (fmt == "auto" and suffix in IMAGE_SUFFIXES):
        return "image"
    return "text"


def count(files: Sequence[tuple[Path, Path]], fmt: str = "auto") -> int:
    """How many records `files` hold (non-blank JSONL lines, Parquet rows, one per other file): a progress
    total, without parsing."""
    total = 0
    for path, _ in files:
        kind = file_format(path, fmt)
        if kind == "jsonl":
            with path.open("rb") as f:
                total += sum(1 for line in f if line.strip())
        elif kind == "parquet":
            total += _parquet().ParquetFile(path).metadata.num_rows
        else:
            total += 1
    return total


def _parquet() -> Any:
    return require("pyarrow.parquet", "ray", "reading Parquet corpora")


def _record(obj: dict[str, Any], path: Path, fmt: str, where: str) -> dict[str, Any]:
    """The document record of one JSONL line or Parquet row (BEIR's fields mapped, relative image paths
    resolved from the file's folder)."""
    if fmt == "beir" or (fmt != "jsonl" and "_id" in obj):
        if obj.get("_id") is None:
            raise InvalidInputError(f"{where}: a BEIR record needs an '_id'")
        title, text = obj.get("title") or "", obj.get("text") or ""
        metadata = dict(obj.get("metadata") or {})
        if title:
            metadata["title"] = title
        obj = {"id": obj["_id"], "text": f"{title}\n{text}" if title else text, "metadata": metadata}
    elif obj.get("id") is None:
        raise InvalidInputError(f"{where}: a record needs an 'id'")
    obj = {k: v for k, v in obj.items() if v is not None}  # Parquet's nulls: absent fields
    if isinstance(obj.get("image"), str) and len(obj["image"]) < 4096:
        given = Path(obj["image"]).expanduser()
        found = next((p for p in (path.parent / given, given) if p.is_file()), None)  # beside, else from here
        if found is not None:
            obj["image"] = found.absolute()
    return obj


def _json_lines(path: Path, fmt: str) -> Iterator[tuple[str, dict[str, Any] | InvalidInputError]]:
    with path.open("rb") as f:
        for lineno, raw in enumerate(f, 1):
            if not raw.strip():
                continue
            where = line_label(str(path), lineno)
            try:
                try:
                    line = raw.decode("utf-8")
                except UnicodeDecodeError as exc:
                    raise InvalidInputError(
                        f"{where}: not UTF-8 ({exc.reason} at byte {exc.start})"
                    ) from None
                obj = parse_json(line, where)
                if not isinstance(obj, dict):
                    raise InvalidInputError(f"{where}: expected a JSON object, got {type(obj).__name__}")
                yield where, _record(obj, path, fmt, where)
            except InvalidInputError as exc:
                yield where, exc


def _parquet_rows(path: Path, fmt: str) -> Iterator[tuple[str, dict[str, Any] | InvalidInputError]]:
    row = 0
    for batch in _parquet().ParquetFile(path).iter_batches(batch_size=PARQUET_BATCH):
        for obj in batch.to_pylist():
            row += 1
            where = line_label(str(path), row)
            try:
                yield where, _record(obj, path, fmt, where)
            except InvalidInputError as exc:
                yield where, exc


def _file_record(path: Path, root: Path, kind: str) -> dict[str, Any]:
    """One document per file: an image document (its path under `root` as id) or a text one."""
    doc_id = str(path.relative_to(root)) if path.is_relative_to(root) else str(path)
    if kind == "image":
        return {"id": doc_id, "image": path.absolute(), "metadata": {"path": str(path)}}
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise InvalidInputError(f"{path}: not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    return {"id": doc_id, "text": text, "metadata": {"path": str(path)}}


def _raw_records(
    files: Sequence[tuple[Path, Path]], fmt: str
) -> Iterator[tuple[str, dict[str, Any] | InvalidInputError]]:
    for path, root in files:
        kind = file_format(path, fmt)
        if kind == "jsonl":
            yield from _json_lines(path, fmt)
        elif kind == "parquet":
            yield from _parquet_rows(path, fmt)
        else:
            try:
                yield str(path), _file_record(path, root, kind)
            except InvalidInputError as exc:
                yield str(path), exc


def _check(record: dict[str, Any], dim: int | None, colbert_dim: int | None) -> str:
    """The record's id once it is a valid document with something to index (an error otherwise)."""
    doc = as_document(record, dim, colbert_dim)
    if doc.image is not None:
        load_image(doc.image, label=f"document {doc.id!r}: image")
    elif all(getattr(doc, k) is None for k in ("dense", "sparse", "colbert")):
        if doc.text is None:
            raise InvalidInputError(f"document {doc.id!r} has no text, image or vectors")
        if not doc.text.strip():
            raise InvalidInputError(f"document {doc.id!r}: empty text")
    return doc.id


def read_corpus(
    inputs: Sequence[Path | str],
    fmt: str = "auto",
    *,
    skipped: list[str] | None = None,
    dim: int | None = None,
    colbert_dim: int | None = None,
) -> Iterator[tuple[str, dict[str, Any]]]:
    """The valid document records of `inputs` (files and folders), each with where it is (FILE:LINE), in
    order. A bad record raises an `InvalidInputError` naming FILE:LINE, or, when `skipped` is a list, has its
    message appended there and is left out. `dim` / `colbert_dim`: the collection's, to check given vectors."""
    seen: dict[str, str] = {}
    for where, record in _raw_records(expand([Path(i) for i in inputs]), fmt):
        try:
            if isinstance(record, InvalidInputError):
                raise record
            doc_id = _check(record, dim, colbert_dim)
            if doc_id in seen:
                raise InvalidInputError(f"id {doc_id!r} already at {seen[doc_id]}")
        except InvalidInputError as exc:
            message = str(exc) if str(exc).startswith(where) else f"{where}: {exc}"
            if skipped is None:
                raise InvalidInputError(message) from None
            skipped.append(message)
            continue
        seen[doc_id] = where
        yield where, record


__all__ = ["FORMATS", "count", "expand", "file_format", "read_corpus"]
