"""ColBERT token vectors of one segment, stored on disk and memory-mapped, scored by MaxSim for re-ranking.

All rows' token vectors are one `(tokens, dim)` matrix (`colbert.npy`) with `offsets` marking where each row
starts: float16 by default (half of float32, no measurable loss), or int8 with one float32 scale per token
(a quarter, at a small measured loss). The matrix is never loaded whole: re-ranking reads only the candidates'
rows. Scores follow `m3search.scoring.colbert_score`: the mean over query tokens of the best dot product with
any document token. Hand-written because no library stores per-document token matrices with MaxSim re-ranking
at this size (PLAID's residual compression breaks on 1024-d bge-m3 vectors).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Literal

import numpy as np

ColbertDtype = Literal["float16", "int8"]
COLBERT_DTYPES: tuple[ColbertDtype, ...] = ("float16", "int8")

TOKENS_FILE = "colbert.npy"
OFFSETS_FILE = "colbert_offsets.npy"
SCALES_FILE = "colbert_scales.npy"


def quantize_int8(matrix: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Symmetric per-token int8 codes and their float32 scales (`value ≈ code * scale`)."""
    matrix = np.asarray(matrix, np.float32)
    scales = np.abs(matrix).max(axis=1) / 127.0 if len(matrix) else np.empty(0, np.float32)
    scales = np.where(scales > 0, scales, 1.0).astype(np.float32)
    codes = np.clip(np.rint(matrix / scales[:, None]), -127, 127).astype(np.int8)
    return codes, scales


def encode_tokens(matrix: np.ndarray, dtype: ColbertDtype) -> tuple[np.ndarray, np.ndarray | None]:
    """A row's token vectors in storage form: (codes, scales or None)."""
    if dtype == "int8":
        return quantize_int8(matrix)
    return np.asarray(matrix, np.float16), None


class MultiVectorWriter:
    """Writes rows of token vectors into a new store, streaming (the whole matrix never sits in RAM)."""

    def __init__(self, directory: Path, dim: int, dtype: ColbertDtype, total_tokens: int, n_rows: int) -> None:
        if dtype not in COLBERT_DTYPES:
            raise ValueError(f"unknown ColBERT dtype {dtype!r}; choose one of {', '.join(COLBERT_DTYPES)}")
        self.directory, self.dtype = directory, dtype
        self.tokens = np.lib.format.open_memmap(directory / TOKENS_FILE, mode="w+", dtype=np.dtype(dtype),
                                                shape=(total_tokens, dim))
        self.scales = np.zeros(total_tokens, np.float32) if dtype == "int8" else None
        self.offsets = np.zeros(n_rows + 1, np.int64)
        self._row = 0

    def append(self, matrix: np.ndarray | None) -> None:
        """Add the next row from float vectors (None or empty: a row without token vectors)."""
        if matrix is None or len(matrix) == 0:
            self.append_encoded(np.empty((0, self.tokens.shape[1]), self.tokens.dtype), None)
        else:
            self.append_encoded(*encode_tokens(matrix, self.dtype))

    def append_encoded(self, codes: np.ndarray, scales: np.ndarray | None) -> None:
        """Add the next row already in storage form (copying between stores of the same dtype)."""
        start = self.offsets[self._row]
        end = start + len(codes)
        self.tokens[start:end] = codes
        if self.scales is not None:
            self.scales[start:end] = scales
        self._row += 1
        self.offsets[self._row] = end

    def finish(self) -> list[Path]:
        """Flush everything to the files; returns the files written."""
        if self._row != len(self.offsets) - 1 or self.offsets[-1] != len(self.tokens):
            raise RuntimeError("multi-vector store closed before all its rows were written")
        self.tokens.flush()
        del self.tokens
        paths = [self.directory / TOKENS_FILE, self.directory / OFFSETS_FILE]
        np.save(paths[1], self.offsets)
        if self.scales is not None:
            paths.append(self.directory / SCALES_FILE)
            np.save(paths[2], self.scales)
        return paths


class MultiVectorStore:
    """Token vectors per row: `tokens[offsets[i]:offsets[i+1]]` (times `scales` when int8)."""

    def __init__(self, tokens: np.ndarray, offsets: np.ndarray, scales: np.ndarray | None = None) -> None:
        self.tokens, self.offsets, self.scales = tokens, offsets, scales

    def __len__(self) -> int:
        return len(self.offsets) - 1

    @property
    def dtype(self) -> ColbertDtype:
        return "int8" if self.scales is not None else "float16"

    @classmethod
    def from_rows(cls, rows: Sequence[np.ndarray | None], dtype: ColbertDtype = "float16",
                  dim: int | None = None) -> "MultiVectorStore":
        """An in-memory store (for rows not yet written to a segment); None rows have no token vectors."""
        dim = dim if dim is not None else next((r.shape[1] for r in rows if r is not None and len(r)), 0)
        encoded = [encode_tokens(r if r is not None else np.empty((0, dim), np.float32), dtype) for r in rows]
        lengths = [len(c) for c, _ in encoded]
        offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
        tokens = (np.concatenate([c.reshape(-1, dim) for c, _ in encoded]) if encoded
                  else np.empty((0, dim), np.dtype(dtype)))
        scales = np.concatenate([s for _, s in encoded]) if dtype == "int8" and encoded else None
        return cls(tokens, offsets, scales)

    @classmethod
    def load(cls, directory: Path) -> "MultiVectorStore":
        """Open a saved store, memory-mapped."""
        scales_path = directory / SCALES_FILE
        return cls(np.load(directory / TOKENS_FILE, mmap_mode="r"), np.load(directory / OFFSETS_FILE),
                   np.load(scales_path) if scales_path.exists() else None)

    def encoded(self, row: int) -> tuple[np.ndarray, np.ndarray | None]:
        """One row in storage form: (codes, scales or None)."""
        start, end = self.offsets[row], self.offsets[row + 1]
        return self.tokens[start:end], None if self.scales is None else self.scales[start:end]

    def row(self, row: int) -> np.ndarray:
        """One row's token vectors as float32."""
        codes, scales = self.encoded(row)
        out = np.asarray(codes, np.float32)
        return out * scales[:, None] if scales is not None else out

    def token_counts(self, rows: np.ndarray) -> np.ndarray:
        """Number of token vectors of each row."""
        rows = np.asarray(rows, np.int64)
        return self.offsets[rows + 1] - self.offsets[rows]

    def maxsim(self, query: np.ndarray, rows: np.ndarray) -> np.ndarray:
        """ColBERT score of `query` (q, dim) against each row: mean over query tokens of the max dot product.

        One matrix product over all candidates' tokens; rows without token vectors score 0.
        """
        rows = np.asarray(rows, np.int64)
        out = np.zeros(len(rows), np.float32)
        counts = self.token_counts(rows)
        has = np.flatnonzero(counts > 0)
        if len(query) == 0 or len(has) == 0:
            return out
        picked = rows[has]
        order = np.argsort(picked)  # read the memory map front to back
        starts, ends = self.offsets[picked[order]], self.offsets[picked[order] + 1]
        token_ids = np.concatenate([np.arange(s, e) for s, e in zip(starts, ends)])
        tokens = np.asarray(self.tokens[token_ids], np.float32)
        sims = np.asarray(query, np.float32) @ tokens.T
        if self.scales is not None:
            sims *= self.scales[token_ids][None, :]
        bounds = np.concatenate([[0], np.cumsum(ends - starts)[:-1]])
        best = np.maximum.reduceat(sims, bounds, axis=1)
        out[has[order]] = best.sum(axis=0) / len(query)
        return out
