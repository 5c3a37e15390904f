"""`TransformerEncoder`: the encode pipeline shared by bge-m3 and generic dense models, for every runtime.

Texts are validated, tokenized once (no truncation), truncated or split into overlapping chunks, sorted by
length, packed into batches under a token budget and a padding cap (padding cost and attention memory stay
bounded even at 8192 tokens), run through the runtime, post-processed (sparse: max weight per token id; ColBERT: padding dropped),
merged per text and returned in input order.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from m3search.encoders.base import (
    OUTPUT_KINDS,
    Chunking,
    EncodeResult,
    SparseVector,
    TextEncoder,
    content_ids,
    punctuation_tokens,
    requested_outputs,
    token_pieces,
    validate_texts,
)
from m3search.encoders.model import check_model_dir
from m3search.encoders.registry import ModelSpec
from m3search.encoders.resolve import resolve_model
from m3search.encoders.runtimes import Runtime, make_runtime
from m3search.encoders.runtimes.base import ForwardOutput
from m3search.errors import InvalidInputError, ModelLoadError

log = logging.getLogger(__name__)

#: Default cap on padded tokens per batch (batch rows x longest row). Keeps activation and attention memory
#: bounded for long inputs while leaving short texts in large batches.
DEFAULT_MAX_BATCH_TOKENS = 16384

#: Most characters one token spans (the longest piece in the XLM-R vocabulary of bge-m3 and e5 has 16). A text
#: truncated to W tokens needs at most W x 16 of its characters, so longer texts are cut to that before
#: tokenizing: a 10 MB text costs what 8192 x 16 characters cost, not a tokenization of 10 MB.
MAX_TOKEN_CHARS = 16

#: Largest share of a batch that may be padding. Sorted texts of similar length share a batch; a much shorter
#: one starts the next (on CPU a small batch costs little, while padded positions cost full compute).
MAX_PADDING_FRACTION = 0.1

#: Content tokens between two CLS tokens with `chunking="mcls"` (the bge-m3 paper's Multiple CLS interval).
MCLS_INTERVAL = 256


#: Model types whose saved tokenizers may carry Mistral's faulty pre-tokenizer regex (transformers decides).
MISTRAL_TYPES = frozenset({"mistral", "mistral3", "voxtral", "ministral", "pixtral"})


def load_tokenizer(path: Path) -> Any:
    """Load the model's fast tokenizer (the same one the reference uses)."""
    from transformers import AutoTokenizer

    # transformers 4.57.3+ takes any local checkpoint whose config.json lacks (or postdates 4.57.2 in)
    # `transformers_version` for a Mistral one and warns that its tokenization is wrong; for other model
    # types the tokenizer is as saved, so say so instead of printing a false alarm on every load.
    config = path / "config.json"
    model_type = json.loads(config.read_text()).get("model_type") if config.is_file() else None
    options = {} if model_type is None or model_type in MISTRAL_TYPES else {"fix_mistral_regex": False}
    try:
        tokenizer = AutoTokenizer.from_pretrained(str(path), **options)
    except (OSError, ValueError) as exc:
        raise ModelLoadError(f"cannot load the tokenizer from {path}: {exc}") from exc
    if not getattr(tokenizer, "is_fast", False):
        raise ModelLoadError(f"{path} has no fast tokenizer (tokenizer.json); m3search needs one")
    return tokenizer


@dataclass
class _Piece:
    """One model input: a whole text or one chunk of it, special tokens included."""

    text_index: int
    ids: np.ndarray
    #: With Multiple CLS: where the CLS tokens are (0 and one before every `interval` content tokens).
    cls_positions: np.ndarray | None = None

    def colbert_ids(self) -> np.ndarray:
        """The token ids of this piece's ColBERT rows: those after the first CLS, without inserted CLS tokens."""
        ids = self.ids[1:]
        return ids if self.cls_positions is None else np.delete(ids, self.cls_positions[1:] - 1)


class TransformerEncoder(TextEncoder):
    """A transformer text encoder (bge-m3 or a generic dense model) over any runtime."""

    def __init__(self, spec: ModelSpec, path: Path, runtime: Runtime, tokenizer: Any | None = None) -> None:
        self.spec = spec
        self.path = Path(path)
        self.runtime = runtime
        self.tokenizer = tokenizer if tokenizer is not None else load_tokenizer(self.path)
        self.name = spec.name
        self.dim = spec.dim
        self.colbert_dim = spec.dim
        self.outputs = frozenset(spec.outputs)
        self.max_length = spec.max_length
        self.default_max_length = min(spec.default_max_length, spec.max_length)
        tok = self.tokenizer
        self._cls_id = tok.cls_token_id if tok.cls_token_id is not None else tok.bos_token_id
        self._eos_id = tok.sep_token_id if tok.sep_token_id is not None else tok.eos_token_id
        self._pad_id = tok.pad_token_id if tok.pad_token_id is not None else 0
        # Token ids that never carry lexical weight (the reference drops cls, eos, pad and unk).
        self._unused_ids = np.array(
            sorted(
                {i for i in (self._cls_id, self._eos_id, self._pad_id, tok.unk_token_id) if i is not None}
            ),
            dtype=np.int64,
        )

    @classmethod
    def from_pretrained(
        cls,
        model: str | Path,
        *,
        runtime: str = "auto",
        device: str | None = None,
        cache_dir: str | Path | None = None,
    ) -> TransformerEncoder:
        """Resolve `model` (directory, hub cache, packaged offline source, hub) and load it on `runtime`."""
        path, spec = resolve_model(model, cache_dir=cache_dir)
        tokenizer, rt = cls._load_parts(path, spec, runtime, device)
        return cls(spec, path, rt, tokenizer)

    @staticmethod
    def _load_parts(path: Path, spec: ModelSpec, runtime: str, device: str | None) -> tuple[Any, Runtime]:
        """Check the directory, then load its tokenizer and the runtime."""
        check_model_dir(path, spec)
        tokenizer = load_tokenizer(path)
        return tokenizer, make_runtime(runtime, path, spec, device, tokenizer)

    # ---- tokenization ---------------------------------------------------------------------------------

    def _content_ids(self, texts: list[str]) -> list[np.ndarray]:
        return [np.asarray(ids, dtype=np.int64) for ids in content_ids(self.tokenizer, texts)]

    def _wrap(self, content: np.ndarray) -> np.ndarray:
        return np.concatenate(([self._cls_id], content, [self._eos_id])).astype(np.int64)

    def _mcls(self, content: np.ndarray, interval: int) -> _Piece:
        """`[CLS] c[0:n] [CLS] c[n:2n] ... [EOS]`: one CLS before every `interval` content tokens."""
        segments = [content[s : s + interval] for s in range(0, max(len(content), 1), interval)]
        ids = np.concatenate([np.concatenate(([self._cls_id], seg)) for seg in segments] + [[self._eos_id]])
        positions = np.cumsum([0] + [len(seg) + 1 for seg in segments[:-1]])
        return _Piece(-1, ids.astype(np.int64), positions.astype(np.int64))

    def _pieces(
        self, contents: list[np.ndarray], max_length: int, chunking: Chunking, overlap: int, interval: int
    ) -> tuple[list[_Piece], list[int]]:
        """Split each text's content ids into model inputs; return the pieces and the truncated indices.

        With "mcls" a text gets a CLS token before every `interval` content tokens; a text too long for one
        input even so is cut into consecutive windows of whole intervals (no overlap: the CLS states of all
        windows are pooled together)."""
        window = max_length - 2
        pieces: list[_Piece] = []
        truncated: list[int] = []
        if chunking == "mcls":
            # content tokens per input: whole intervals of (1 CLS + interval) tokens, plus the final EOS
            per_window = (max_length - 1) // (interval + 1) * interval
            for i, content in enumerate(contents):
                for start in range(0, max(len(content), 1), per_window):
                    piece = self._mcls(content[start : start + per_window], interval)
                    piece.text_index = i
                    pieces.append(piece)
            return pieces, truncated
        for i, content in enumerate(contents):
            if len(content) <= window:
                pieces.append(_Piece(i, self._wrap(content)))
            elif chunking == "truncate":
                truncated.append(i)
                pieces.append(_Piece(i, self._wrap(content[:window])))
            else:
                stride = window - overlap
                for start in range(0, len(content) - overlap, stride):
                    pieces.append(_Piece(i, self._wrap(content[start : start + window])))
        return pieces, truncated

    def token_strings(self, token_ids: Sequence[int] | Any) -> list[str]:
        """Readable token strings (the tokenizer's pieces, with SentencePiece's word marker removed)."""
        return token_pieces(self.tokenizer, token_ids)

    def prunable_tokens(self, token_ids: Sequence[int] | Any) -> np.ndarray:
        """Mask of the special and punctuation token ids (what ColBERT's index-time pruning drops)."""
        return punctuation_tokens(self.tokenizer, token_ids)

    def count_tokens(self, texts: str | Sequence[str], is_query: bool = False) -> list[int]:
        """Token counts (special tokens included, before truncation) after the model's prefix."""
        texts = validate_texts(texts)
        prefix = self.spec.query_prefix if is_query else self.spec.passage_prefix
        return [len(c) + 2 for c in self._content_ids([prefix + t for t in texts])]

    # ---- batching -------------------------------------------------------------------------------------

    @staticmethod
    def _batches(
        order: np.ndarray, lengths: np.ndarray, batch_size: int, max_tokens: int
    ) -> Iterator[np.ndarray]:
        """Cut length-descending `order` into batches of at most `batch_size` rows and `max_tokens` padded tokens,
        closing a batch early rather than letting padding exceed `MAX_PADDING_FRACTION` of it."""
        start = 0
        n = len(order)
        while start < n:
            longest = max(int(lengths[order[start]]), 1)
            rows = max(1, min(batch_size, max_tokens // longest))
            end, real = start + 1, longest
            while end < n and end - start < rows:
                padded = (end - start + 1) * longest
                if padded - (real + int(lengths[order[end]])) > MAX_PADDING_FRACTION * padded:
                    break
                real += int(lengths[order[end]])
                end += 1
            yield order[start:end]
            start = end

    def _pad(self, pieces: list[_Piece]) -> tuple[np.ndarray, np.ndarray]:
        width = max(len(p.ids) for p in pieces)
        ids = np.full((len(pieces), width), self._pad_id, dtype=np.int64)
        mask = np.zeros((len(pieces), width), dtype=np.int64)
        for row, piece in enumerate(pieces):
            ids[row, : len(piece.ids)] = piece.ids
            mask[row, : len(piece.ids)] = 1
        return ids, mask

    def _lexical_weights(self, ids: np.ndarray, weights: np.ndarray) -> SparseVector:
        """Max weight per token id over positions, dropping special ids and weights <= 0 (the reference rule)."""
        keep = (weights > 0) & ~np.isin(ids, self._unused_ids)
        ids, weights = ids[keep], weights[keep]
        if ids.size == 0:
            return {}
        uniq, inverse = np.unique(ids, return_inverse=True)
        best = np.zeros(len(uniq), dtype=np.float32)
        np.maximum.at(best, inverse, weights)
        return dict(zip(uniq.tolist(), best.tolist()))

    # ---- encode ---------------------------------------------------------------------------------------

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
        max_batch_tokens: int = DEFAULT_MAX_BATCH_TOKENS,
        mcls_interval: int = MCLS_INTERVAL,
    ) -> EncodeResult:
        """Encode texts into the requested outputs with one model pass per batch.

        Texts longer than `max_length` tokens are truncated (their indices are reported in
        `EncodeResult.truncated`) or, with `chunking="chunk"`, split into windows overlapping by `chunk_overlap`
        tokens whose outputs merge: dense = renormalized mean, sparse = max per token, ColBERT = concatenation.
        `chunking="mcls"` (the bge-m3 paper's Multiple CLS) inserts a CLS token before every `mcls_interval`
        content tokens: dense = the normalized mean of all CLS states (over as many windows as the text needs),
        sparse and ColBERT as with "chunk" (the inserted CLS tokens carry neither).
        """
        wanted = requested_outputs(return_dense, return_sparse, return_colbert)
        self.check_outputs(wanted)
        max_length = self._check_options(
            batch_size, max_length, chunking, chunk_overlap, max_batch_tokens, mcls_interval
        )
        texts = validate_texts(texts)
        n = len(texts)
        if n == 0:
            return self._empty_result(wanted)

        cut: list[int] = []
        if chunking == "truncate":
            cap = (max_length - 2) * MAX_TOKEN_CHARS
            cut = [i for i, t in enumerate(texts) if len(t) > cap]
            texts = [t[:cap] for t in texts] if cut else texts
        prefix = self.spec.query_prefix if is_query else self.spec.passage_prefix
        contents = self._content_ids([prefix + t for t in texts] if prefix else texts)
        pieces, truncated = self._pieces(contents, max_length, chunking, chunk_overlap, mcls_interval)
        if cut:  # a cut text lost content even where whitespace made its first characters few tokens
            truncated = sorted({*truncated, *cut})
        if truncated:
            log.info(
                "%d of %d texts were longer than %d tokens and were truncated", len(truncated), n, max_length
            )

        lengths = np.array([len(p.ids) for p in pieces])
        order = np.argsort(-lengths, kind="stable")
        dense_rows: list[np.ndarray | None] = [None] * len(pieces)
        sparse_rows: list[SparseVector | None] = [None] * len(pieces)
        colbert_rows: list[np.ndarray | None] = [None] * len(pieces)

        def collect(batch: np.ndarray, ids: np.ndarray, wait: Callable[[], ForwardOutput]) -> None:
            out = wait()
            for row, j in enumerate(batch):
                length = int(lengths[j])
                if out.dense is not None:
                    dense_rows[j] = out.dense[row].copy()
                if out.token_weights is not None:
                    sparse_rows[j] = self._lexical_weights(ids[row, :length], out.token_weights[row, :length])
                if out.colbert is not None:  # copies: the batch's arrays go back to the runtime
                    rows = out.colbert[row, : length - 1]
                    if pieces[j].cls_positions is not None:  # the inserted CLS tokens are no text tokens
                        colbert_rows[j] = np.delete(rows, pieces[j].cls_positions[1:] - 1, axis=0)
                    else:
                        colbert_rows[j] = rows.copy()
            bar.update(int(lengths[batch].sum()))

        with tqdm(
            total=int(lengths.sum()),
            unit="tok",
            unit_scale=True,
            disable=not show_progress_bar,
            desc=f"encode {self.name}",
        ) as bar:
            # One batch in flight: on a GPU the next batch computes while this thread post-processes the last.
            pending = None
            for batch in self._batches(order, lengths, batch_size, max_batch_tokens):
                started = (batch, *self._submit(batch, pieces, wanted, chunking))
                if pending is not None:
                    collect(*pending)
                pending = started
            if pending is not None:
                collect(*pending)
        return self._merge(pieces, n, wanted, dense_rows, sparse_rows, colbert_rows, truncated, chunking)

    def _submit(
        self, batch: np.ndarray, pieces: list[_Piece], wanted: tuple[str, ...], chunking: Chunking
    ) -> tuple[np.ndarray, Callable[[], ForwardOutput]]:
        """Pad the batch's pieces and start it on the runtime; return the padded ids and the wait function."""
        batch_pieces = [pieces[j] for j in batch]
        ids, mask = self._pad(batch_pieces)
        pool_mask = None
        if chunking == "mcls":
            pool_mask = np.zeros(ids.shape, dtype=np.float32)
            for row, piece in enumerate(batch_pieces):
                pool_mask[row, piece.cls_positions] = 1.0
        wait = self.runtime.submit(
            ids,
            mask,
            dense="dense" in wanted,
            sparse="sparse" in wanted,
            colbert="colbert" in wanted,
            pool_mask=pool_mask,
        )
        return ids, wait

    def _check_options(
        self,
        batch_size: int,
        max_length: int | None,
        chunking: str,
        overlap: int,
        max_batch_tokens: int,
        interval: int,
    ) -> int:
        max_length = self.default_max_length if max_length is None else int(max_length)
        if not 3 <= max_length <= self.max_length:
            raise InvalidInputError(
                f"max_length must be between 3 and {self.max_length} for {self.name}, got {max_length}"
            )
        if batch_size < 1:
            raise InvalidInputError(f"batch_size must be >= 1, got {batch_size}")
        if max_batch_tokens < max_length:
            raise InvalidInputError(
                f"max_batch_tokens ({max_batch_tokens}) must be >= max_length ({max_length})"
            )
        if chunking not in ("truncate", "chunk", "mcls"):
            raise InvalidInputError(f"chunking must be 'truncate', 'chunk' or 'mcls', got {chunking!r}")
        if chunking == "mcls" and not 1 <= interval <= max_length - 3:
            raise InvalidInputError(f"mcls_interval must be in [1, {max_length - 3}], got {interval}")
        if chunking == "chunk" and not 0 <= overlap < max_length - 2:
            raise InvalidInputError(f"chunk_overlap must be in [0, {max_length - 3}], got {overlap}")
        return max_length

    def _empty_result(self, wanted: tuple[str, ...]) -> EncodeResult:
        return EncodeResult(
            dense=np.zeros((0, self.dim), dtype=np.float32) if "dense" in wanted else None,
            sparse=[] if "sparse" in wanted else None,
            colbert=[] if "colbert" in wanted else None,
        )

    def _merge(
        self,
        pieces: list[_Piece],
        n: int,
        wanted: tuple[str, ...],
        dense_rows: list,
        sparse_rows: list,
        colbert_rows: list,
        truncated: list[int],
        chunking: Chunking,
    ) -> EncodeResult:
        """Merge per-piece outputs into per-text outputs (a text with one piece passes through unchanged;
        with "mcls" the pieces' CLS-state sums are added and normalized)."""
        groups: list[list[int]] = [[] for _ in range(n)]
        for j, piece in enumerate(pieces):
            groups[piece.text_index].append(j)
        result = EncodeResult(
            num_tokens=[sum(len(pieces[j].ids) for j in g) for g in groups], truncated=truncated
        )
        if "dense" in wanted:
            dense = np.empty((n, dense_rows[0].shape[-1]), dtype=np.float32)
            for i, g in enumerate(groups):
                if chunking == "mcls":
                    total = np.sum([dense_rows[j] for j in g], axis=0)
                    dense[i] = total / max(float(np.linalg.norm(total)), 1e-12)
                elif len(g) == 1:
                    dense[i] = dense_rows[g[0]]
                else:
                    mean = np.mean([dense_rows[j] for j in g], axis=0)
                    dense[i] = mean / max(float(np.linalg.norm(mean)), 1e-12)
            result.dense = dense
        if "sparse" in wanted:
            merged: list[SparseVector] = []
            for g in groups:
                acc = dict(sparse_rows[g[0]])
                for j in g[1:]:
                    for token, w in sparse_rows[j].items():
                        if w > acc.get(token, 0.0):
                            acc[token] = w
                merged.append(acc)
            result.sparse = merged
        if "colbert" in wanted:
            result.colbert = [
                colbert_rows[g[0]] if len(g) == 1 else np.concatenate([colbert_rows[j] for j in g])
                for g in groups
            ]
            result.colbert_ids = [np.concatenate([pieces[j].colbert_ids() for j in g]) for g in groups]
        return result

    def runtime_identity(self) -> dict[str, str]:
        return self.runtime.identity()

    def describe(self) -> dict[str, Any]:
        info = super().describe()
        info.update(self.runtime.describe())
        info["family"] = self.spec.family
        return info


__all__ = [
    "DEFAULT_MAX_BATCH_TOKENS",
    "MCLS_INTERVAL",
    "OUTPUT_KINDS",
    "TransformerEncoder",
    "load_tokenizer",
]
