"""Checks every encode-like request shares: non-empty texts, within the server's per-request limit."""

from __future__ import annotations

from m3search.errors import InvalidInputError
from m3search.server.config import ServerSettings


def checked_texts(texts: str | list[str], settings: ServerSettings, field: str = "texts") -> list[str]:
    """`texts` as a non-empty list of non-blank strings of at most `settings.max_inputs` items."""
    items = [texts] if isinstance(texts, str) else list(texts)
    if not items:
        raise InvalidInputError(f"{field} is empty: send at least one text")
    if len(items) > settings.max_inputs:
        raise InvalidInputError(
            f"{field} has {len(items)} texts; this server accepts at most "
            f"{settings.max_inputs} per request: split the request"
        )
    for i, text in enumerate(items):
        if not text.strip():
            raise InvalidInputError(f"{field}[{i}] is empty: every text needs some content")
    return items
