"""JSON Lines input, read the one way every entry point (CLI, server uploads, eval datasets) needs.

Blank lines are skipped; a line that is not JSON, or not a JSON object, is an `InvalidInputError` naming the
source and line, so a user can fix the file instead of reading a traceback.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from typing import Any

from m3search.errors import InvalidInputError


def line_label(source: str | None, lineno: int) -> str:
    """How errors name a line: `FILE:N`, or `line N` when the source has no name (stdin)."""
    return f"{source}:{lineno}" if source else f"line {lineno}"


def json_objects(lines: Iterable[str], source: str | None = None) -> Iterator[tuple[int, dict[str, Any]]]:
    """The JSON objects of a JSON Lines stream, each with its 1-based line number."""
    for lineno, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as exc:
            raise InvalidInputError(f"{line_label(source, lineno)}: not valid JSON ({exc.msg})") from None
        if not isinstance(obj, dict):
            raise InvalidInputError(
                f"{line_label(source, lineno)}: expected a JSON object, got {type(obj).__name__}"
            )
        yield lineno, obj


__all__ = ["json_objects", "line_label"]
