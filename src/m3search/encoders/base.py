"""The one interface every text encoder implements, and the result type it returns.

The rest of the product (collections, search, server, evaluation) talks only to `TextEncoder`, so a bge-m3
model, a generic dense model, BM25 or a composite of them are interchangeable.
"""

from __future__ import annotations

import unicodedata
from abc import ABC, abstractmethod
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, overload

import numpy as np

from m3search.errors import InvalidInputError
from m3search.scoring import colbert_score, hybrid_scores, lexical_score

OutputKind = Literal["dense", "sparse", "colbert"]
OUTPUT_KINDS: tuple[OutputKind, ...] = ("dense", "sparse", "colbert")
Chunking = Literal["truncate", "chunk", "mcls"]

SparseVector = dict[int, float]
"""Lexical weights of one text: token id -> weight (> 0)."""


@dataclass
class EncodeResult:
    """What one `encode` call produced, in input order; outputs not requested are None.

    dense: (n, dim) float32, rows L2-normalized. sparse: per text, token id -> weight. colbert: per text a
    (tokens, colbert_dim) float32 array with L2-normalized rows; colbert_ids: the token id each of those rows
    came from (what index-time token pruning reads), when the encoder knows them. num_tokens: tokens fed to the
    model per text (summed over chunks). truncated: indices of the texts cut to `max_length`.
    """

    dense: np.ndarray | None = None
    sparse: list[SparseVector] | None = None
    colbert: list[np.ndarray] | None = None
    colbert_ids: list[np.ndarray] | None = None
    num_tokens: list[int] = field(default_factory=list)
    truncated: list[int] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.num_tokens)

    @overload
    def need(self, kind: Literal["dense"]) -> np.ndarray: ...
    @overload
    def need(self, kind: Literal["sparse"]) -> list[SparseVector]: ...
    @overload
    def need(self, kind: Literal["colbert"]) -> list[np.ndarray]: ...
    def need(self, kind: OutputKind) -> Any:
        """Output `kind`, which the caller asked for; an error naming it if this result lacks it."""
        value = getattr(self, kind)
        if value is None:
            raise InvalidInputError(
                f"this encoding has no {kind} output (it was not requested or not produced)"
            )
        return value


def validate_texts(texts: Any) -> list[str]:
    """Return `texts` as a list of str, or raise naming the first bad item (None, non-str, invalid UTF-8)."""
    if isinstance(texts, (str, bytes)):
        texts = [texts]
    if not isinstance(texts, Iterable):
        raise InvalidInputError(f"texts must be a string or a list of strings, got {type(texts).__name__}")
    out: list[str] = []
    for i, text in enumerate(texts):
        if isinstance(text, (bytes, bytearray)):
            try:
                text = bytes(text).decode("utf-8")
            except UnicodeDecodeError as exc:
                raise InvalidInputError(
                    f"text at index {i} is not valid UTF-8: {exc.reason} at byte {exc.start}"
                ) from None
        elif not isinstance(text, str):
            raise InvalidInputError(f"text at index {i} is {type(text).__name__}, expected str")
        else:
            try:
                text.encode("utf-8")
            except UnicodeEncodeError as exc:
                raise InvalidInputError(
                    f"text at index {i} is not valid Unicode: {exc.reason} at character {exc.start}"
                ) from None
        out.append(text)
    return out


def token_pieces(tokenizer: Any, token_ids: Iterable[int]) -> list[str]:
    """Readable strings for token ids: the tokenizer's pieces with SentencePiece's word marker removed."""
    pieces = tokenizer.convert_ids_to_tokens([int(i) for i in token_ids])
    return [p.replace("\u2581", " ").strip() or p for p in pieces]


def punctuation_tokens(tokenizer: Any, token_ids: Iterable[int]) -> np.ndarray:
    """Mask of the ids that are special tokens (`</s>`, `[SEP]`) or pieces made only of punctuation once the word
    markers (`▁`, `##`) are removed: what ColBERT's index-time pruning drops."""
    ids = [int(i) for i in token_ids]
    special = set(tokenizer.all_special_ids)
    pieces = tokenizer.convert_ids_to_tokens(ids)
    out = np.zeros(len(ids), bool)
    for i, (token, piece) in enumerate(zip(ids, pieces)):
        text = piece.replace("\u2581", "").removeprefix("##")
        out[i] = token in special or (
            bool(text) and all(unicodedata.category(c).startswith("P") for c in text)
        )
    return out


def content_ids(tokenizer: Any, texts: list[str]) -> list[list[int]]:
    """Token ids of whole texts: no special tokens, no truncation, no padding.

    A fast tokenizer's backend is shared with the `transformers` tokenizer around it, whose own calls (e.g.
    `tokenizer(texts, truncation=True, padding=True)`) leave truncation and padding switched on; they are
    switched off on every call here, so a text is never silently cut or padded.
    """
    backend = tokenizer.backend_tokenizer
    if backend.truncation is not None:
        backend.no_truncation()
    if backend.padding is not None:
        backend.no_padding()
    return [e.ids for e in backend.encode_batch(texts, add_special_tokens=False)]


def requested_outputs(
    return_dense: bool, return_sparse: bool, return_colbert: bool
) -> tuple[OutputKind, ...]:
    """The output kinds asked for, in canonical order; at least one is required."""
    wanted = tuple(k for k, on in zip(OUTPUT_KINDS, (return_dense, return_sparse, return_colbert)) if on)
    if not wanted:
        raise InvalidInputError("ask for at least one output: return_dense, return_sparse or return_colbert")
    return wanted


class TextEncoder(ABC):
    """Turns texts into any of the three representations; implementations say which they support."""

    #: Model name (hub id or directory) shown to users and stored with collections.
    name: str
    #: Dimension of dense vectors (0 when the encoder has no dense output).
    dim: int
    #: Dimension of per-token (ColBERT) vectors, or None without that output.
    colbert_dim: int | None
    #: The outputs `encode` can return.
    outputs: frozenset[OutputKind]
    #: Largest `max_length` the model accepts, in tokens including special tokens.
    max_length: int
    #: `max_length` used when the caller gives none.
    default_max_length: int

    @abstractmethod
    def encode(
        self,
        texts: str | Sequence[str],
        *,
        batch_size: int = 32,
        max_length: int | None = None,
        return_dense: bool = True,
        return_sparse: bool = False,
        return_colbert: bool = False,
        show_progress_bar: bool = False,
        chunking: Chunking = "truncate",
        chunk_overlap: int = 64,
        is_query: bool = False,
    ) -> EncodeResult:
        """Encode texts into the requested outputs (one model pass for all of them)."""

    def encode_queries(self, texts: str | Sequence[str], **kwargs: Any) -> EncodeResult:
        """Encode search queries (applies the model's query prefix, if any)."""
        return self.encode(texts, is_query=True, **kwargs)

    def encode_documents(self, texts: str | Sequence[str], **kwargs: Any) -> EncodeResult:
        """Encode documents (applies the model's passage prefix, if any)."""
        return self.encode(texts, is_query=False, **kwargs)

    def token_strings(self, token_ids: Iterable[int]) -> list[str]:
        """Readable strings for token ids (for showing which query tokens matched)."""
        raise NotImplementedError(f"{type(self).__name__} has no tokenizer to decode token ids")

    def prunable_tokens(self, token_ids: Iterable[int]) -> np.ndarray:
        """Mask of the ColBERT token ids that index-time pruning drops (special and punctuation tokens)."""
        raise NotImplementedError(f"{type(self).__name__} has no tokenizer to tell punctuation tokens")

    def check_outputs(self, wanted: Iterable[OutputKind]) -> None:
        """Raise if this encoder cannot produce one of `wanted`."""
        missing = [k for k in wanted if k not in self.outputs]
        if missing:
            raise InvalidInputError(
                f"model {self.name!r} cannot produce {', '.join(missing)} output; it supports "
                f"{', '.join(k for k in OUTPUT_KINDS if k in self.outputs)}"
            )

    def compute_score(
        self,
        pairs: tuple[str, str] | Sequence[tuple[str, str]],
        *,
        weights: Sequence[float] = (1.0, 1.0, 1.0),
        batch_size: int = 32,
        max_query_length: int | None = None,
        max_passage_length: int | None = None,
    ) -> dict[str, float] | dict[str, list[float]]:
        """Score (query, passage) pairs in every mode this encoder supports, as the reference does.

        Modes: dense, sparse, colbert and, when all three exist, `sparse+dense` and `colbert+sparse+dense`
        (weighted means with `weights` = (dense, sparse, colbert)). One pair gives floats, a list gives lists.
        """
        single = len(pairs) == 2 and all(isinstance(p, (str, bytes)) for p in pairs)
        pair_list: list[tuple[str, ...]] = [tuple(pairs)] if single else [tuple(p) for p in pairs]  # type: ignore[arg-type]
        if any(len(p) != 2 for p in pair_list):
            raise InvalidInputError("pairs must be (query, passage) tuples")
        if not pair_list:
            return {}
        kinds = {k: k in self.outputs for k in OUTPUT_KINDS}
        common = dict(
            batch_size=batch_size,
            return_dense=kinds["dense"],
            return_sparse=kinds["sparse"],
            return_colbert=kinds["colbert"],
        )
        q = self.encode_queries([p[0] for p in pair_list], max_length=max_query_length, **common)
        d = self.encode_documents([p[1] for p in pair_list], max_length=max_passage_length, **common)
        scores: dict[str, list[float]] = {}
        for i in range(len(pair_list)):
            dense = float(q.dense[i] @ d.need("dense")[i]) if q.dense is not None else None
            sparse = lexical_score(q.sparse[i], d.need("sparse")[i]) if q.sparse is not None else None
            colbert = colbert_score(q.colbert[i], d.need("colbert")[i]) if q.colbert is not None else None
            row: Mapping[str, float | None] = {"dense": dense, "sparse": sparse, "colbert": colbert}
            if dense is not None and sparse is not None and colbert is not None:
                row = hybrid_scores(dense, sparse, colbert, weights)
            for mode, value in row.items():
                if value is not None:
                    scores.setdefault(mode, []).append(value)
        return {k: v[0] for k, v in scores.items()} if single else scores

    def runtime_identity(self) -> dict[str, str] | None:
        """The runtime and precision that make this encoder's model vectors (`Runtime.identity`); None when no
        model runtime is involved (BM25)."""
        return None

    def describe(self) -> dict[str, Any]:
        """A JSON-able description, stored with collections and shown by the server."""
        return {
            "name": self.name,
            "dim": self.dim,
            "colbert_dim": self.colbert_dim,
            "outputs": [k for k in OUTPUT_KINDS if k in self.outputs],
            "max_length": self.max_length,
        }
