"""What each client operation sends and how it reads the answers, shared by the sync and async clients.

An operation is a generator (a "plan"): it yields `Request`s, receives each answer's decoded JSON body (or the
`Missing` marker for a 404 the request allows), and returns the operation's result. `Client` and `AsyncClient`
only drive plans over httpx, so both behave identically. Error answers become the `m3search.errors` types the
same operation raises in-process: the status and the route tell which (`Request.errors`), and arguments the
library can check locally (filters, weights) are checked here with the in-process code, before any request.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Generator, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal
from urllib.parse import quote

import numpy as np

from m3search.encoders.base import OUTPUT_KINDS, EncodeResult, validate_texts
from m3search.errors import (
    AuthenticationError,
    CollectionError,
    CollectionExistsError,
    CollectionLockedError,
    CollectionNotFoundError,
    ImageError,
    ImageTooLargeError,
    InvalidInputError,
    M3SearchError,
    ServerBusyError,
    ServerError,
)
from m3search.search.results import Hit
from m3search.store.documents import Document
from m3search.store.filters import parse_filter

#: Exception class per HTTP status, unless a request names its own (`Request.errors`).
STATUS_ERRORS: dict[int, type[M3SearchError]] = {
    401: AuthenticationError,
    403: AuthenticationError,
    404: CollectionNotFoundError,
    409: CollectionLockedError,
    413: InvalidInputError,
    422: InvalidInputError,
    503: ServerBusyError,
}
#: Collection routes: a 400 is a collection the server cannot open or write.
COLLECTION_ERRORS: dict[int, type[M3SearchError]] = {400: CollectionError}
#: Requests that carry images: 400 is a bad image, 413 one over the limits.
IMAGE_ERRORS: dict[int, type[M3SearchError]] = {400: ImageError, 413: ImageTooLargeError}


class Missing:
    """What a plan receives for a 404 its request allows (`Request.allow_missing`)."""


MISSING = Missing()


@dataclass
class Request:
    """One HTTP request of a plan."""

    method: Literal["GET", "POST", "DELETE"]
    path: str
    json: Any = None
    errors: Mapping[int, type[M3SearchError]] = field(default_factory=dict)
    allow_missing: bool = False
    raw: bool = False  # the answer's bytes, not JSON (thumbnails)


Plan = Generator[Request, Any, Any]


def error_for(request: Request, status: int, body: Any) -> M3SearchError:
    """The m3search exception for an error answer: the server's message, the class its status and route
    mean."""
    error = body.get("error") if isinstance(body, dict) else None
    message = error.get("message") if isinstance(error, dict) else None
    message = message or f"HTTP {status} from {request.method} {request.path}"
    cls = request.errors.get(status) or STATUS_ERRORS.get(status)
    if cls is None:
        return ServerError(f"{message} (HTTP {status})")
    return cls(message)


def _path(*parts: str) -> str:
    return "/" + "/".join(quote(p, safe="") for p in parts)


def _encode_image(image: Any, what: str) -> str:
    """Base64 text of an image given as bytes, a file path or base64 text (passed on as it is)."""
    if isinstance(image, (bytes, bytearray, memoryview)):
        return base64.b64encode(bytes(image)).decode("ascii")
    if isinstance(image, Path) or (isinstance(image, str) and len(image) < 4096 and Path(image).is_file()):
        path = Path(image)
        if not path.is_file():
            raise ImageError(f"{what}: {path} is not a file")
        return base64.b64encode(path.read_bytes()).decode("ascii")
    if isinstance(image, str):
        return image
    raise ImageError(
        f"{what}: give an image as bytes, a file path or base64 text, not {type(image).__name__}"
    )


def _weights(weights: Sequence[float] | Mapping[str, float] | None) -> dict[str, float] | None:
    """Weights as the server takes them ({"dense", "sparse", "colbert"}) from a triple or a mapping."""
    if weights is None:
        return None
    if isinstance(weights, Mapping):
        unknown = [k for k in weights if k not in OUTPUT_KINDS]
        if unknown:
            raise InvalidInputError(f"weights name unknown modes {unknown}; use {', '.join(OUTPUT_KINDS)}")
        return {k: float(v) for k, v in weights.items()}
    values = list(weights)
    if len(values) != len(OUTPUT_KINDS):
        raise InvalidInputError(f"weights must be (dense, sparse, colbert) or a mapping, got {weights!r}")
    return {k: float(v) for k, v in zip(OUTPUT_KINDS, values)}


def _hit(item: Mapping[str, Any]) -> Hit:
    url = item.get("thumbnail_url")
    return Hit(
        item["id"],
        item["score"],
        item.get("scores", {}),
        item.get("text"),
        item.get("metadata", {}),
        item.get("kind", "text"),
        url.rsplit("/", 1)[-1] if url else None,
    )


def _document(item: Mapping[str, Any]) -> Document:
    url = item.get("thumbnail_url")
    return Document(
        item["id"],
        item.get("text"),
        item.get("metadata", {}),
        kind=item.get("kind", "text"),
        thumbnail=url.rsplit("/", 1)[-1] if url else None,
    )


def _ids(ids: str | int | Iterable[str | int]) -> list[str]:
    """Ids as strings, the way a collection stores them."""
    items = [ids] if isinstance(ids, (str, int)) else list(ids)
    for item in items:
        if isinstance(item, bool) or not isinstance(item, (str, int)):
            raise InvalidInputError(f"document ids are strings or integers, got {item!r}")
    return [str(i) for i in items]


# ---- the server and its collections ---------------------------------------------------------------------


def info() -> Plan:
    """The server's readiness answer: model, dims, outputs (`GET /readyz`)."""
    return (yield Request("GET", "/readyz"))


def list_collections() -> Plan:
    """Every collection's name, count, model and outputs."""
    return (yield Request("GET", "/collections"))["collections"]


def create_collection(
    name: str,
    outputs: Sequence[str] | None,
    dense_index: str,
    max_length: int | None,
    images: bool,
) -> Plan:
    """A new collection for the served model; `CollectionExistsError` if the name is taken."""
    body: dict[str, Any] = {"name": name, "dense_index": dense_index, "images": images}
    if outputs is not None:
        body["outputs"] = list(outputs)
    if max_length is not None:
        body["max_length"] = max_length
    errors = {**COLLECTION_ERRORS, 409: CollectionExistsError}
    return (yield Request("POST", "/collections", body, errors))


def delete_collection(name: str) -> Plan:
    """Delete a collection and its files."""
    yield Request("DELETE", _path("collections", name), errors=COLLECTION_ERRORS)


def stats(name: str) -> Plan:
    """A collection's statistics (count, outputs, segments...)."""
    return (yield Request("GET", _path("collections", name), errors=COLLECTION_ERRORS))


def count(name: str) -> Plan:
    """Number of documents in a collection."""
    return (yield from stats(name))["count"]


def embed(
    texts: str | Sequence[str],
    *,
    batch_size: int,
    max_length: int | None,
    return_dense: bool,
    return_sparse: bool,
    return_colbert: bool,
    chunking: str,
    is_query: bool,
) -> Plan:
    """`POST /embed` in batches of `batch_size` texts, assembled into one `EncodeResult` like a local
    encoder's: dense (n, dim) float32, sparse {token id: weight}, ColBERT (tokens, dim) float32 per text."""
    texts = validate_texts(texts)
    if not (return_dense or return_sparse or return_colbert):
        raise InvalidInputError("ask for at least one output: dense, sparse or colbert")
    if batch_size < 1:
        raise InvalidInputError(f"batch_size must be a positive integer, got {batch_size!r}")
    items: list[dict[str, Any]] = []
    for start in range(0, len(texts), batch_size):
        body: dict[str, Any] = {
            "texts": texts[start : start + batch_size],
            "dense": return_dense,
            "sparse": return_sparse,
            "colbert": return_colbert,
            "input_type": "query" if is_query else "passage",
            "chunking": chunking,
        }
        if max_length is not None:
            body["max_length"] = max_length
        items.extend((yield Request("POST", "/embed", body))["data"])
    result = EncodeResult(
        num_tokens=[item["num_tokens"] for item in items],
        truncated=[i for i, item in enumerate(items) if item["truncated"]],
    )
    if return_dense:
        result.dense = np.asarray([item["dense"] for item in items], np.float32).reshape(len(items), -1)
    if return_sparse:
        result.sparse = [{int(t): w for t, w in item["sparse"].items()} for item in items]
    if return_colbert:
        result.colbert = [np.asarray(item["colbert"], np.float32) for item in items]
    return result


# ---- documents and search -------------------------------------------------------------------------------


def _record(doc: Document | Mapping[str, Any], index: int) -> dict[str, Any]:
    """A document as the server takes it: id, text and/or image (base64), metadata. Vectors are refused:
    the server encodes with its own model."""
    if isinstance(doc, Document):
        fields: Mapping[str, Any] = {
            "id": doc.id,
            "text": doc.text,
            "metadata": doc.metadata,
            "image": doc.image,
            **{k: getattr(doc, k) for k in OUTPUT_KINDS},
        }
    elif isinstance(doc, Mapping):
        fields = doc
    else:
        raise InvalidInputError(
            f"documents[{index}] is a {type(doc).__name__}, expected a Document or a dict"
        )
    given = [k for k in OUTPUT_KINDS if fields.get(k) is not None]
    if given:
        raise InvalidInputError(
            f"documents[{index}] carries {', '.join(given)} vectors; a server collection encodes documents "
            "with the served model, so send texts (or images) only"
        )
    unknown = sorted(set(fields) - {"id", "text", "image", "metadata", *OUTPUT_KINDS})
    if unknown:
        raise InvalidInputError(f"documents[{index}] has unknown fields {unknown}")
    if "id" not in fields:
        raise InvalidInputError(f"documents[{index}] has no id")
    record: dict[str, Any] = {"id": _ids(fields["id"])[0], "metadata": dict(fields.get("metadata") or {})}
    if fields.get("text") is not None:
        record["text"] = fields["text"]
    if fields.get("image") is not None:
        record["image"] = _encode_image(fields["image"], f"documents[{index}]")
    return record


def upsert(name: str, documents: Iterable[Document | Mapping[str, Any]], batch_size: int) -> Plan:
    """Insert or replace documents, `batch_size` per request; each request is durable and all-or-nothing on
    the server. Returns how many were written."""
    if batch_size < 1:
        raise InvalidInputError(f"batch_size must be a positive integer, got {batch_size!r}")
    records = [_record(doc, i) for i, doc in enumerate(documents)]
    ids = [r["id"] for r in records]
    if len(set(ids)) != len(ids):
        duplicate = next(i for i in ids if ids.count(i) > 1)
        raise InvalidInputError(f"document id {duplicate!r} appears more than once in one upsert")
    errors = (
        {**COLLECTION_ERRORS, **IMAGE_ERRORS} if any("image" in r for r in records) else COLLECTION_ERRORS
    )
    written = 0
    for start in range(0, len(records), batch_size):
        block = records[start : start + batch_size]
        answer = yield Request("POST", _path("collections", name, "documents"), {"documents": block}, errors)
        written += answer["upserted"]
    return written


def delete(name: str, ids: str | int | Iterable[str | int]) -> Plan:
    """Delete documents by id (unknown ids are ignored); returns how many existed."""
    body = {"ids": _ids(ids)}
    answer = yield Request("POST", _path("collections", name, "documents", "delete"), body, COLLECTION_ERRORS)
    return answer["deleted"]


def get(name: str, ids: str | int | Iterable[str | int]) -> Plan:
    """The stored documents for `ids`, in order; None where an id is unknown (a missing collection raises
    `CollectionNotFoundError`, as in-process)."""
    wanted = _ids(ids)
    slashed = [i for i in wanted if "/" in i]
    if slashed:  # the server decodes %2F before routing, so GET /documents/{id} cannot name them
        raise InvalidInputError(
            f"ids containing '/' cannot be fetched from a server one by one: {slashed[:3]}"
        )
    found: list[Document | None] = []
    for doc_id in wanted:
        path = _path("collections", name, "documents", doc_id)
        answer = yield Request("GET", path, errors=COLLECTION_ERRORS, allow_missing=True)
        found.append(None if answer is MISSING else _document(answer))
    if any(doc is None for doc in found):
        yield from stats(name)  # a 404 may also mean the collection is gone: then this raises
    return found


def thumbnail(name: str, reference: str | int) -> Plan:
    """JPEG bytes of the thumbnail a document or hit refers to; None when it is gone."""
    path = _path("collections", name, "thumbnails", str(reference))
    answer = yield Request("GET", path, errors=COLLECTION_ERRORS, allow_missing=True, raw=True)
    return None if answer is MISSING else answer


def search(
    name: str,
    query: str | None,
    k: int,
    *,
    image: Any,
    kinds: Sequence[str] | str | None,
    mode: str | None,
    weights: Sequence[float] | Mapping[str, float] | None,
    fusion: str,
    filter: str | Mapping[str, Any] | None,
    candidates: int | None,
    rerank: int | None,
) -> Plan:
    """`Collection.search` over HTTP: the `k` best documents for a query text and/or an image."""
    if query is not None and not isinstance(query, str):
        raise InvalidInputError(
            f"a server collection takes a query text (the server encodes it), got {type(query).__name__}"
        )
    if query is None and image is None:
        raise InvalidInputError("give a query text or an image")
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise InvalidInputError(f"k must be a positive integer, got {k!r}")
    body: dict[str, Any] = {"k": k, "fusion": fusion}
    for option, value in (("candidates", candidates), ("rerank", rerank)):
        if value is not None:  # else the collection's default depth
            body[option] = value
    if query is not None:
        body["query"] = query
    if image is not None:
        body["image"] = _encode_image(image, "query image")
    if kinds is not None:
        body["kinds"] = [kinds] if isinstance(kinds, str) else list(kinds)
    if mode is not None:
        body["mode"] = mode
    if weights is not None:
        body["weights"] = _weights(weights)
    spec = parse_filter(filter)
    if spec is not None:
        body["filter"] = spec
    errors = {**COLLECTION_ERRORS, **IMAGE_ERRORS} if image is not None else COLLECTION_ERRORS
    answer = yield Request("POST", _path("collections", name, "search"), body, errors)
    return [_hit(item) for item in answer["results"]]


def answer(request: Request, status: int, content: bytes) -> Any:
    """What a plan receives for an HTTP answer: its JSON (bytes for `raw`), `MISSING` for an allowed 404; an
    error answer raises its m3search exception."""
    if status == 404 and request.allow_missing:
        return MISSING
    body: Any = None
    if status >= 400 or not request.raw:
        try:
            body = json.loads(content) if content else None
        except ValueError:
            if status < 400:
                raise ServerError(
                    f"{request.method} {request.path} answered {status} with a body that is not JSON"
                ) from None
    if status >= 400:
        raise error_for(request, status, body)
    return content if request.raw else body
