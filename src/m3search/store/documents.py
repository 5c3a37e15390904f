"""Documents as callers give them, and their validation before anything is written.

A document has an `id`, usually a `text`, optional `metadata` (a JSON object) and optionally its vectors
precomputed (`dense`, `sparse`, `colbert`): given vectors are used as they are, missing ones are encoded from
the text. A document may instead (or also) carry an `image` (a path, bytes or base64 text), which the
collection's image encoder turns into its dense vector. `kind` names what the vectors were made from: "text",
"image" (an image alone: a dense vector only) or "image+text" (both: a joint dense vector, the text's sparse and
ColBERT vectors); the collection sets it for documents with an image.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from m3search.encoders.image.validation import image_field
from m3search.errors import DimensionMismatchError, InvalidInputError
from m3search.index.sparse import SparseRow

DOC_FIELDS = ("id", "text", "metadata", "dense", "sparse", "colbert", "kind", "image")
#: The document kinds a collection stores (see the module docstring).
DOC_KINDS = ("text", "image", "image+text")


@dataclass
class Document:
    """One document; see the module docstring. Vectors are float arrays; `sparse` maps token id -> weight.

    `thumbnail`, on stored documents, is the reference `Collection.thumbnail` reads its image's JPEG thumbnail by.
    """

    id: str
    text: str | None = None
    metadata: dict[str, Any] = field(default_factory=dict)
    dense: np.ndarray | None = None
    sparse: SparseRow | None = None
    colbert: np.ndarray | None = None
    kind: str = "text"
    image: Any = None
    thumbnail: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """JSON-able form: id, kind, text, metadata, thumbnail (vectors only when present)."""
        out: dict[str, Any] = {
            "id": self.id,
            "kind": self.kind,
            "text": self.text,
            "metadata": self.metadata,
            "thumbnail": self.thumbnail,
        }
        if self.dense is not None:
            out["dense"] = np.asarray(self.dense).tolist()
        if self.sparse is not None:
            out["sparse"] = {str(int(t)): float(w) for t, w in zip(*self.sparse)}
        if self.colbert is not None:
            out["colbert"] = np.asarray(self.colbert).tolist()
        return out


def normalize_id(value: Any, where: str = "document") -> str:
    """Ids are non-empty strings; integers are accepted and stored as their decimal string."""
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        raise InvalidInputError(f"{where} id must be a string or an integer, got {type(value).__name__}")
    value = str(value)
    if not value or len(value) > 1024 or "\x00" in value:
        raise InvalidInputError(f"{where} id {value[:50]!r} must be 1 to 1024 characters without NUL")
    return value


def normalize_ids(ids: Any) -> list[str]:
    """A list of ids from one id or an iterable of them."""
    if isinstance(ids, (str, int)):
        ids = [ids]
    if not isinstance(ids, Iterable):
        raise InvalidInputError(f"ids must be an id or a list of ids, got {type(ids).__name__}")
    return [normalize_id(i) for i in ids]


_FLOAT32 = np.dtype(np.float32)
#: The largest weight float32 holds (larger ones would be stored as infinity).
FLOAT32_MAX = float(np.finfo(np.float32).max)


def check_dense(vector: Any, dim: int, what: str) -> np.ndarray:
    """A 1-d float32 vector of `dim` finite values, or a clear error."""
    if type(vector) is np.ndarray and vector.dtype is _FLOAT32:  # as encoders give it: nothing to convert
        array = vector
    else:
        try:
            array = np.asarray(vector, dtype=np.float32)
        except (TypeError, ValueError):
            raise InvalidInputError(f"{what}: dense vector is not a list of numbers") from None
    if array.shape != (dim,):
        raise DimensionMismatchError(
            f"{what}: dense vector has shape {array.shape}, the collection expects ({dim},)"
        )
    # one BLAS call: the squares' sum is finite unless a value is not or squares overflow, then told apart by
    # the elementwise check (numpy's two ufunc calls cost 4 µs more in a search's cooled caches)
    if not math.isfinite(array.dot(array)) and not np.isfinite(array).all():
        raise InvalidInputError(f"{what}: dense vector contains NaN or infinity")
    return array


def check_sparse(vector: Any, what: str) -> SparseRow:
    """(token ids, weights) from a {token id: weight} mapping (ids may be numeric strings, as in JSON)."""
    if isinstance(vector, tuple) and len(vector) == 2:
        vector = dict(zip(np.asarray(vector[0]).tolist(), np.asarray(vector[1]).tolist()))
    if not isinstance(vector, Mapping):
        raise InvalidInputError(f"{what}: sparse vector must be a {{token id: weight}} object")
    checked = _plain_sparse(vector)
    if checked is not None:
        return checked
    ids, weights = [], []
    for token, weight in vector.items():
        if (
            isinstance(token, bool)
            or not isinstance(token, (int, np.integer, str))
            or (isinstance(token, str) and not (token.isascii() and token.isdigit()))
            or not 0 <= int(token) < 2**63
        ):
            raise InvalidInputError(f"{what}: sparse token id {token!r} is not a non-negative 64-bit integer")
        token_id = int(token)
        try:
            value = float(weight)
        except OverflowError:  # an integer beyond any float: refused below as infinite
            value = math.inf
        except (TypeError, ValueError):
            raise InvalidInputError(f"{what}: sparse weight of token {token_id} is not a number") from None
        if not 0 <= value <= FLOAT32_MAX:  # NaN fails too
            raise InvalidInputError(
                f"{what}: sparse weight of token {token_id} is {value}; weights are non-negative and within "
                "float32's range"
            )
        if value != 0.0:
            ids.append(token_id)
            weights.append(value)
    if len(set(ids)) != len(ids):
        raise InvalidInputError(f"{what}: sparse vector repeats a token id")
    return np.asarray(ids, np.int64), np.asarray(weights, np.float32)


def _plain_sparse(vector: Mapping[Any, Any]) -> SparseRow | None:
    """`check_sparse`'s result for the usual vector (int token ids, float or int weights, all valid) checked by
    builtins that loop in C, or None to check item by item: the per-item loop cost ~50 µs a 51-token
    document, a quarter of a bulk load's time (and numpy's reductions, 5-10 µs each in a search with cold
    caches, more than the checks). None also for anything to refuse, so that the loop names the problem."""
    if not set(map(type, vector)) <= {int} or not set(map(type, vector.values())) <= {float, int}:
        return None
    if not vector:
        return np.empty(0, np.int64), np.empty(0, np.float32)
    ids, values = list(vector), list(vector.values())
    try:
        total = math.fsum(values)  # not finite: a NaN or an infinity among them
    except OverflowError:  # finite weights beyond any float in sum, or an integer beyond any float
        return None
    if not (
        math.isfinite(total)
        and min(values) >= 0
        and max(values) <= FLOAT32_MAX
        and min(ids) >= 0
        and max(ids) < 2**63
    ):
        return None
    if 0 in values:  # zero weights carry nothing and are not stored
        ids, values = [t for t, v in zip(ids, values) if v], [v for v in values if v]
    return np.array(ids, np.int64), np.array(values, np.float32)


def check_colbert(matrix: Any, dim: int, what: str) -> np.ndarray | None:
    """A (tokens, dim) float32 matrix of finite values (None when it has no tokens), or a clear error."""
    try:
        array = np.asarray(matrix, dtype=np.float32)
    except (TypeError, ValueError):
        raise InvalidInputError(f"{what}: colbert vectors are not a list of lists of numbers") from None
    if array.size == 0:
        return None
    if array.ndim != 2 or array.shape[1] != dim:
        raise DimensionMismatchError(
            f"{what}: colbert vectors have shape {array.shape}, the collection expects (tokens, {dim})"
        )
    if not np.isfinite(array).all():
        raise InvalidInputError(f"{what}: colbert vectors contain NaN or infinity")
    return array


#: Value types a flat metadata object holds as they are (no conversion by a JSON round trip).
_JSON_SCALARS = frozenset({str, int, float, bool, type(None)})


def check_metadata(metadata: Any, what: str) -> dict[str, Any]:
    """The metadata as a plain JSON object (a copy, as JSON would read it back); it must be a JSON object with
    string keys and finite numbers."""
    if metadata is None:
        return {}
    if not isinstance(metadata, Mapping) or not all(isinstance(k, str) for k in metadata):
        raise InvalidInputError(f"{what}: metadata must be a JSON object with string keys")
    if set(map(type, metadata.values())) <= _JSON_SCALARS and all(
        math.isfinite(v) for v in metadata.values() if type(v) is float
    ):
        # flat str/int/float/bool/None: what the JSON round trip below gives, in a third of its time
        return dict(metadata)
    try:
        return json.loads(json.dumps(metadata, ensure_ascii=False, allow_nan=False, separators=(",", ":")))
    except (TypeError, ValueError) as exc:
        raise InvalidInputError(f"{what}: metadata is not valid JSON ({exc})") from None


def as_document(item: Any, dim: int | None, colbert_dim: int | None) -> Document:
    """Validate one caller document (a `Document` or a mapping) into a `Document` with checked fields."""
    if isinstance(item, Document):
        item = {name: getattr(item, name) for name in DOC_FIELDS}
    if not isinstance(item, Mapping):
        raise InvalidInputError(f"a document must be an object with an 'id', got {type(item).__name__}")
    unknown = set(item) - set(DOC_FIELDS)
    if unknown:
        raise InvalidInputError(f"document fields {sorted(unknown)} are unknown; use {', '.join(DOC_FIELDS)}")
    if "id" not in item:
        raise InvalidInputError("a document has no 'id'")
    doc_id = normalize_id(item["id"])
    what = f"document {doc_id!r}"
    text = item.get("text")
    if text is not None and not isinstance(text, str):
        raise InvalidInputError(f"{what}: text must be a string, got {type(text).__name__}")
    if text is not None:
        try:
            text.encode("utf-8")
        except UnicodeEncodeError as exc:
            raise InvalidInputError(f"{what}: text is not valid Unicode ({exc.reason})") from None
    kind = item.get("kind") or "text"
    if kind not in DOC_KINDS:
        raise InvalidInputError(f"{what}: kind must be one of {', '.join(DOC_KINDS)}, got {kind!r}")
    image = item.get("image")
    if image is not None:
        image = image_field(image, what)
        kind = "image" if text is None else "image+text"
    doc = Document(doc_id, text, check_metadata(item.get("metadata"), what), kind=kind, image=image)
    if item.get("dense") is not None:
        if dim is None:
            raise InvalidInputError(f"{what}: this collection stores no dense vectors")
        doc.dense = check_dense(item["dense"], dim, what)
    if item.get("sparse") is not None:
        doc.sparse = check_sparse(item["sparse"], what)
    if item.get("colbert") is not None:
        if colbert_dim is None:
            raise InvalidInputError(f"{what}: this collection stores no colbert vectors")
        doc.colbert = check_colbert(item["colbert"], colbert_dim, what)
    return doc


def as_documents(items: Any, dim: int | None, colbert_dim: int | None) -> list[Document]:
    """Validate a batch; duplicate ids within it are an error (which one should win is ambiguous)."""
    if isinstance(items, (Mapping, Document)):
        items = [items]
    if not isinstance(items, Iterable) or isinstance(items, (str, bytes)):
        raise InvalidInputError("documents must be a list of objects with an 'id'")
    docs = [as_document(item, dim, colbert_dim) for item in items]
    seen: set[str] = set()
    for doc in docs:
        if doc.id in seen:
            raise InvalidInputError(f"document id {doc.id!r} appears twice in one batch")
        seen.add(doc.id)
    return docs
