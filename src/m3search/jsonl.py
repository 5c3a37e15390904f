"""JSON Lines input, read the one way every entry point (CLI, server uploads, eval datasets) needs.

Blank lines are skipped; a line that is not JSON, or not a JSON object, is an `InvalidInputError` naming the
source and line, so a user can fix the file instead of reading a traceback.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from typing import Any, TypeVar

from m3search.errors import InvalidInputError

T = TypeVar("T")


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


def json_objects(lines: Iterable[str], source: str | None = None) -> Iterator[tuple[int, dict[str, Any]]]:
    """The JSON objects of a JSON Lines stream, each with its 1-based line number."""
    for lineno, line in enumerate(lines, 1):
        if not line.strip():
            continue
        obj = parse_json(line, line_label(source, lineno))
        if not isinstance(obj, dict):
            raise InvalidInputError(
                f"{line_label(source, lineno)}: expected a JSON object, got {type(obj).__name__}"
            )
        yield lineno, obj


__all__ = ["json_objects", "line_label", "parse_json"]


def blocks(items: Iterable[T], size: int) -> Iterator[list[T]]:
    """Consecutive lists of `size` items (the last one shorter): a long input handled in bounded memory."""
    block: list[T] = []
    for item in items:
        block.append(item)
        if len(block) == size:
            yield block
            block = []
    if block:
        yield block
