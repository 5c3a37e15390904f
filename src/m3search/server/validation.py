"""Checks every encode-like request shares: non-empty texts, within the server's per-request limits of texts,
tokens (`max_request_tokens`) and query characters (`max_query_chars`)."""

from __future__ import annotations

from starlette.concurrency import run_in_threadpool

from m3search.encoders import TextEncoder
from m3search.encoders.transformer import MAX_TOKEN_CHARS
from m3search.errors import InvalidInputError, RequestTooLargeError
from m3search.server.batching import EncodeOptions, estimate_tokens
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


async def check_token_budget(
    texts: list[str], options: EncodeOptions, encoder: TextEncoder, settings: ServerSettings
) -> None:
    """`RequestTooLargeError` (413) when `texts` would make the model read more than
    `settings.max_request_tokens` tokens: each text up to its max length when truncated, all of it when chunked.

    Most requests pass on characters alone (a token spans at least one); only a request whose characters could
    exceed the budget is tokenized to count, and a chunked one too long to fit even at `MAX_TOKEN_CHARS`
    characters per token is refused before tokenizing.
    """
    budget = settings.max_request_tokens
    limit = options.max_length or encoder.default_max_length
    if estimate_tokens(texts, options, limit) <= budget:
        return
    advice = "split the request or send shorter texts (the server's --max-request-tokens)"
    chunked = options.chunking == "chunk"
    chars = sum(len(t) for t in texts)
    if chunked and chars > budget * MAX_TOKEN_CHARS:
        raise RequestTooLargeError(
            f"the texts hold {chars} characters, more than {budget} tokens can span: this server "
            f"encodes at most {budget} tokens per request; {advice}"
        )
    count_tokens = getattr(encoder, "count_tokens", None)  # transformer encoders; others: the estimate stands
    if count_tokens is None:
        cost = estimate_tokens(texts, options, limit)
    elif chunked:
        cost = sum(await run_in_threadpool(count_tokens, texts, options.is_query))
    else:
        cap = (limit - 2) * MAX_TOKEN_CHARS  # what the encoder reads of a text it truncates
        counts = await run_in_threadpool(count_tokens, [t[:cap] for t in texts], options.is_query)
        cost = sum(min(c, limit) for c in counts)
    if cost > budget:
        raise RequestTooLargeError(
            f"the request needs {cost} tokens; this server encodes at most {budget} tokens per request; "
            f"{advice}"
        )


def check_query_length(query: str | None, settings: ServerSettings) -> None:
    """`RequestTooLargeError` (413) for a search query over `settings.max_query_chars` characters."""
    if query is not None and len(query) > settings.max_query_chars:
        raise RequestTooLargeError(
            f"the query has {len(query)} characters; this server accepts at most {settings.max_query_chars} "
            "(--max-query-chars)"
        )
