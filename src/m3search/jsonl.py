"""JSON Lines input, read the one way every entry point (CLI, server uploads, eval datasets) needs.

Blank lines are skipped; a line that is not JSON, or not a JSON object, is an `InvalidInputError` naming the
source and line, so a user can fix the file instead of reading a traceback. `corpus_records` adds the document
record rules (JSONL `id` records, BEIR `_id`/`title`/`text` ones) that `m3search index add` and distributed
ingest (`m3search.distributed`) share.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from m3search.errors import InvalidInputError


def line_label(source: str | None, lineno: int) -> str:
    """How errors name a line: `FILE:N`, or `line N` when the source has no name (stdin)."""
    return f"{source}:{lineno}" if source else f"line {lineno}"


def parse_json(text: str, where: str) -> Any:
    """`json.loads(text)`, with every way it fails (bad syntax, nesting too deep for the parser, an integer of
    more digits than Python converts) as an `InvalidInputError` naming `where`."""
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        at = f" at line {exc.lineno}" if "\n" in text else ""
        raise InvalidInputError(f"{where}: not valid JSON ({exc.msg}{at})") from None
    except RecursionError:
        raise InvalidInputError(f"{where}: JSON nested too deeply to parse") from None
    except ValueError as exc:  # e.g. "Exceeds the limit (4300 digits) for integer string conversion"
        raise InvalidInputError(f"{where}: JSON this server cannot read ({exc})") from None


def json_object(line: str, where: str) -> dict[str, Any]:
    """One JSON Lines line as the JSON object it must be (an `InvalidInputError` naming `where` otherwise)."""
    obj = parse_json(line, where)
    if not isinstance(obj, dict):
        raise InvalidInputError(f"{where}: expected a JSON object, got {type(obj).__name__}")
    return obj


def json_objects(lines: Iterable[str], source: str | None = None) -> Iterator[tuple[int, dict[str, Any]]]:
    """The JSON objects of a JSON Lines stream, each with its 1-based line number."""
    for lineno, line in enumerate(lines, 1):
        if line.strip():
            yield lineno, json_object(line, line_label(source, lineno))


def _document_record(path: Path, lineno: int, raw: bytes, fmt: str) -> dict[str, Any]:
    """The document record on one line of a corpus file (see `corpus_records`)."""
    where = line_label(str(path), lineno)
    try:
        line = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InvalidInputError(f"{where}: not UTF-8 ({exc.reason} at byte {exc.start})") from None
    obj = json_object(line, where)
    if fmt == "beir" or (fmt == "auto" and "_id" in obj):
        if "_id" not in obj:
            raise InvalidInputError(f"{where}: a BEIR record needs an '_id'")
        title, text = obj.get("title") or "", obj.get("text") or ""
        metadata = dict(obj.get("metadata") or {})
        if title:
            metadata["title"] = title
        obj = {"id": obj["_id"], "text": f"{title}\n{text}" if title else text, "metadata": metadata}
    elif "id" not in obj:
        raise InvalidInputError(f"{where}: a JSONL record needs an 'id'")
    if isinstance(obj.get("image"), str) and len(obj["image"]) < 4096:
        beside = path.parent / Path(obj["image"]).expanduser()  # a relative path: from the JSONL's folder
        if beside.is_file():
            obj["image"] = beside
    return obj


def corpus_records(
    path: Path, fmt: str = "auto", bad: list[InvalidInputError] | None = None
) -> Iterator[tuple[int, dict[str, Any]]]:
    """The document records of a JSONL (`{"id", "text", "image", "metadata"}`) or BEIR corpus.jsonl (`{"_id",
    "title", "text"}`, `fmt` "beir", or "auto" when a record has `_id`) file, each with its line number.

    A line that is not UTF-8, not a JSON object or has no id raises an `InvalidInputError` naming FILE:LINE; when
    `bad` is a list the error is appended to it instead and the line skipped.
    """
    with path.open("rb") as f:
        for lineno, raw in enumerate(f, 1):
            if not raw.strip():
                continue
            try:
                record = _document_record(path, lineno, raw, fmt)
            except InvalidInputError as exc:
                if bad is None:
                    raise
                bad.append(exc)
                continue
            yield lineno, record


__all__ = ["corpus_records", "json_object", "json_objects", "line_label", "parse_json"]
