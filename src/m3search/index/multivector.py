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

    def __init__(
        self, directory: Path, dim: int, dtype: ColbertDtype, total_tokens: int, n_rows: int
    ) -> None:
        if dtype not in COLBERT_DTYPES:
            raise ValueError(f"unknown ColBERT dtype {dtype!r}; choose one of {', '.join(COLBERT_DTYPES)}")
        self.directory, self.dtype = directory, dtype
        self.tokens = np.lib.format.open_memmap(
            directory / TOKENS_FILE, mode="w+", dtype=np.dtype(dtype), shape=(total_tokens, dim)
        )
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
    def from_rows(
        cls, rows: Sequence[np.ndarray | None], dtype: ColbertDtype = "float16", dim: int | None = None
    ) -> MultiVectorStore:
        """An in-memory store (for rows not yet written to a segment); None rows have no token vectors."""
        dim = dim if dim is not None else next((r.shape[1] for r in rows if r is not None and len(r)), 0)
        encoded = [encode_tokens(r if r is not None else np.empty((0, dim), np.float32), dtype) for r in rows]
        lengths = [len(c) for c, _ in encoded]
        offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
        tokens = (
            np.concatenate([c.reshape(-1, dim) for c, _ in encoded])
            if encoded
            else np.empty((0, dim), np.dtype(dtype))
        )
        scales = np.concatenate([s for _, s in encoded]) if dtype == "int8" and encoded else None
        return cls(tokens, offsets, scales)

    @classmethod
    def load(cls, directory: Path) -> MultiVectorStore:
        """Open a saved store, memory-mapped."""
        scales_path = directory / SCALES_FILE
        return cls(
            np.load(directory / TOKENS_FILE, mmap_mode="r"),
            np.load(directory / OFFSETS_FILE),
            np.load(scales_path) if scales_path.exists() else None,
        )

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

        The candidates' tokens are decoded to float32 block by block (about `BLOCK_VALUES` values, so a block
        is decoded, multiplied and reduced while it sits in cache) and scored with one BLAS product per block;
        rows without token vectors score 0.
        """
        rows = np.asarray(rows, np.int64)
        out = np.zeros(len(rows), np.float32)
        counts = self.token_counts(rows)
        has = np.flatnonzero(counts > 0)
        if len(query) == 0 or len(has) == 0:
            return out
        has = has[np.argsort(rows[has], kind="stable")]  # read the memory map front to back
        starts, ends = self.offsets[rows[has]], self.offsets[rows[has] + 1]
        query_t = np.ascontiguousarray(query, np.float32).T
        block = max(1, BLOCK_VALUES // self.tokens.shape[1])
        cumulative = np.cumsum(ends - starts)
        first = 0
        while first < len(has):
            # the candidates whose tokens fit in one block (at least one, however long)
            before = cumulative[first - 1] if first else 0
            last = max(first + 1, int(np.searchsorted(cumulative, before + block, side="right")))
            block_starts, block_ends = starts[first:last], ends[first:last]
            tokens, lengths = self._decode(block_starts, block_ends)
            sims = tokens @ query_t
            if self.scales is not None:
                sims *= np.concatenate([self.scales[s:e] for s, e in zip(block_starts, block_ends)])[:, None]
            bounds = np.concatenate([[0], np.cumsum(lengths)[:-1]])
            out[has[first:last]] = np.maximum.reduceat(sims, bounds, axis=0).sum(axis=1) / len(query)
            first = last
        return out

    def _decode(self, starts: np.ndarray, ends: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The codes of token ranges `[starts[i], ends[i])` as one float32 matrix (int8: before the scales),
        and each range's length."""
        lengths = ends - starts
        int8 = self.scales is not None
        # int8 -> float32 is a vectorized numpy cast; float16 goes through its bits, sign-extended to int32
        out = np.empty((int(lengths.sum()), self.tokens.shape[1]), np.float32 if int8 else np.int32)
        at = 0
        for s, e in zip(starts, ends):
            np.copyto(out[at : at + e - s], self.tokens[s:e] if int8 else self.tokens[s:e].view(np.int16))
            at += e - s
        return (out if int8 else _float16_bits_to_float32(out)), lengths


#: Values decoded per block in `MultiVectorStore.maxsim` (4 MiB of float32).
BLOCK_VALUES = 1 << 20


def _float16_bits_to_float32(bits: np.ndarray) -> np.ndarray:
    """Exact float16 -> float32 of sign-extended float16 bit patterns, in place (returned as a float32 view).

    numpy's own float16 cast is a scalar loop (~2 ns a value, slower than the BLAS product it feeds); this is
    four vectorized passes. Shifted left by 13, the float16 exponent and mantissa land in the low bits of the
    float32 exponent and the top of its mantissa, so the pattern read as float32 is the value times 2^-112
    (float16 subnormals become float32 subnormals, which are exact too); the mask drops the sign extension
    but keeps the sign bit, and the multiplication by 2^112 restores the scale. Infinities and NaN (never
    stored: token vectors are finite and, normalized, far inside float16's range) are not preserved.
    """
    np.left_shift(bits, 13, out=bits)
    np.bitwise_and(bits, np.int32(0x8FFFE000 - (1 << 32)), out=bits)  # the sign bit and the 15 shifted bits
    values = bits.view(np.float32)
    np.multiply(values, np.float32(2.0**112), out=values)
    return values
