"""ColBERT token vectors of one segment, stored on disk and memory-mapped, scored by MaxSim for re-ranking.

All rows' token vectors are one `(tokens, width)` matrix (`colbert.npy`) with `offsets` marking where each row
starts, in one of four forms (`colbert.json` records which): float16 (half of float32, no measurable loss);
int8 with one float32 scale per token (a quarter); `2bit`: 2-bit Lloyd-Max codes per dimension packed 4 a byte
plus a float32 scale per token (dim/4 + 4 bytes); `binary`: the sign bits packed 8 a byte of each token's
difference from the collection's mean token vector, plus a float16 scale per token, scored asymmetrically (float
query · centered, per-dimension-scaled ±1 document); from 256 dimensions up the 16 dimensions of least spread get
no bit (they decode to the mean), so that bits and scale together take dim/8 bytes, 1/16 of float16 (128 for
1024-d; below 256 dimensions: dim/8 + 2 bytes). Optionally the
float16 vectors are also kept (`colbert_exact.npy`, memory-mapped) so that the best candidates by the compressed
score can be re-checked exactly. The matrix is never loaded whole: re-ranking reads only the candidates' rows.
Scores follow `m3search.scoring.colbert_score`: the mean over query tokens of the best dot product with any
document token. The packed forms (binary, 2bit) are scored without decoding: each byte of codes indexes a table
of its dimensions' partial dot products with the query (`_code_table`), so a binary token costs 128 table-row
additions instead of 1024 multiply-adds. Hand-written because no library stores per-document token matrices with
MaxSim re-ranking at this size (PLAID's residual compression breaks on 1024-d bge-m3 vectors).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Literal, NamedTuple

import numpy as np

from m3search.index.ranges import concat_ranges
from m3search.threads import copy_range, load_array, prefetch_rows, query_threads, thread_limit

if TYPE_CHECKING:
    import torch

ColbertDtype = Literal["float16", "int8", "2bit", "binary"]
COLBERT_DTYPES: tuple[ColbertDtype, ...] = ("float16", "int8", "2bit", "binary")
#: dtypes whose stored vectors are an approximation that re-check (`colbert_recheck`) can correct
COMPRESSED_DTYPES: tuple[ColbertDtype, ...] = ("int8", "2bit", "binary")
#: index-time token pruning choices (see `TextEncoder.prunable_tokens`)
COLBERT_PRUNING = ("punctuation",)

TOKENS_FILE = "colbert.npy"
OFFSETS_FILE = "colbert_offsets.npy"
SCALES_FILE = "colbert_scales.npy"
#: float16 copies of the token vectors that re-check reads (memory-mapped; only with `colbert_recheck`)
EXACT_FILE = "colbert_exact.npy"
#: {"dtype", "dim"}: what `colbert.npy` holds (absent in stores written before packed dtypes)
META_FILE = "colbert.json"
#: binary: the (2, dim) float32 center (mean token vector) and per-dimension scale (mean |value - center|; 0 for
#: the dimensions that get no bit)
CENTER_FILE = "colbert_center.npy"
#: binary: the dimensions of least spread that get no sign bit, as many as the bits of a token's float16 scale
#: (measured on e5-small's 384-d tokens: with re-check, within 0.2 point nDCG@10 of keeping them; docs/INDEX.md)
BINARY_DROPPED_DIMS = 16
#: binary: the fewest dimensions from which `BINARY_DROPPED_DIMS` are dropped (below, 16 is too large a share)
BINARY_DROP_FROM_DIM = 256
#: tokens a binary center is fitted on (a sample: the first ones of the first flush)
CENTER_SAMPLE = 1 << 16

#: Lloyd-Max levels (and thresholds between them) of 2-bit codes for a unit-variance Gaussian
LEVELS_2BIT = np.array([-1.510, -0.4528, 0.4528, 1.510], np.float32)
THRESHOLDS_2BIT = np.array([-0.9816, 0.0, 0.9816], np.float32)
#: a byte of packed codes -> its decoded values (bits MSB first, as `np.packbits` lays them out)
_BINARY_LUT = np.unpackbits(np.arange(256, dtype=np.uint8)[:, None], axis=1).astype(np.float32) * 2 - 1
_2BIT_LUT = LEVELS_2BIT[(np.arange(256)[:, None] >> np.array([6, 4, 2, 0])) & 3]


class EncodedTokens(NamedTuple):
    """A row's token vectors in storage form (or consecutive rows', back to back).

    codes: the stored matrix rows. scales: one per token (int8 and 2bit: the code step; binary: the token's
    scale over the per-dimension ones), else None. exact: the float16 vectors that re-check reads, when known.
    lengths: the token count of each row when the codes hold several rows; None: one row."""

    codes: np.ndarray
    scales: np.ndarray | None
    exact: np.ndarray | None
    lengths: np.ndarray | None = None


class StoredRows(NamedTuple):
    """Rows `first:end` of `store` as they are stored, which a writer of the same layout copies
    (`MultiVectorWriter.add`): a merge's runs of rows."""

    store: MultiVectorStore
    first: int
    end: int


def code_layout(dtype: ColbertDtype, dim: int, center: np.ndarray | None = None) -> tuple[np.dtype, int]:
    """The numpy dtype and the columns of one token's codes: binary packs 8 of the dimensions its `center` keeps
    a byte (all without a center), 2bit 4."""
    if dtype == "binary":
        return np.dtype(np.uint8), -(-(dim if center is None else len(kept_dims(center))) // 8)
    if dtype == "2bit":
        return np.dtype(np.uint8), -(-dim // 4)
    return np.dtype(dtype), dim


def quantize_int8(matrix: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Symmetric per-token int8 codes and their float32 scales (`value ≈ code * scale`)."""
    matrix = np.asarray(matrix, np.float32)
    scales = np.abs(matrix).max(axis=1) / 127.0 if len(matrix) else np.empty(0, np.float32)
    scales = np.where(scales > 0, scales, 1.0).astype(np.float32)
    codes = np.clip(np.rint(matrix / scales[:, None]), -127, 127).astype(np.int8)
    return codes, scales


def fit_center(matrix: np.ndarray) -> np.ndarray:
    """Binary's (2, dim) center: the mean token vector and each dimension's mean |value - mean| (> 0), set to 0
    for the `BINARY_DROPPED_DIMS` dimensions of least spread from `BINARY_DROP_FROM_DIM` dimensions up.

    Token vectors of a transformer share a large common component (e5-small's mean token vector has norm
    ~0.8), so the raw signs say little; the signs of the difference from the mean, scaled per dimension and
    per token, keep most of the ranking (measured in docs/INDEX.md)."""
    matrix = np.asarray(matrix, np.float32)
    if len(matrix) == 0:  # nothing to measure the spread on: every dimension kept
        return np.stack([np.zeros(matrix.shape[1], np.float32), np.ones(matrix.shape[1], np.float32)])
    mean = matrix.mean(axis=0)
    spread = np.abs(matrix - mean).mean(axis=0)
    spread = np.where(spread > 0, spread, 1.0)
    if len(spread) >= BINARY_DROP_FROM_DIM:
        spread[np.argsort(spread, kind="stable")[:BINARY_DROPPED_DIMS]] = 0.0
    return np.stack([mean, spread]).astype(np.float32)


def kept_dims(center: np.ndarray) -> np.ndarray:
    """The dimensions a binary `center` gives a sign bit: those of nonzero spread (all, in centers written
    before dimensions were dropped)."""
    return np.flatnonzero(center[1] > 0)


def quantize_binary(matrix: np.ndarray, center: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Sign bits of `matrix - center[0]` in the kept dimensions, packed 8 a byte (bit 1: >= 0, read as +1; 0:
    -1), and each token's float16 scale `s`, fitted by least squares: `value ≈ center[0] + s * center[1] * ±1`
    (dropped dimensions: the center)."""
    matrix = np.asarray(matrix)
    if matrix.dtype == np.float16:  # through its bits: 5x faster than numpy's cast
        residual = _float16_bits_to_float32(matrix.view(np.int16).astype(np.int32))
    else:
        residual = np.array(matrix, np.float32)
    residual -= center[0]
    bits = np.packbits((residual >= 0)[:, kept_dims(center)], axis=1)
    spread = center[1]  # 0 in the dropped dimensions
    scales = np.abs(residual, out=residual) @ spread / float((spread * spread).sum())
    return bits, scales.astype(np.float16)


def quantize_2bit(matrix: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """2-bit codes per dimension (Lloyd-Max levels for the token's RMS), packed 4 a byte, and per-token float32
    scales fitted by least squares to the codes (`value ≈ LEVELS_2BIT[code] * scale`)."""
    matrix = np.asarray(matrix, np.float32)
    rms = np.sqrt(np.mean(np.square(matrix), axis=1, keepdims=True)) if len(matrix) else np.ones((0, 1))
    codes = np.digitize(matrix / np.where(rms > 0, rms, 1.0), THRESHOLDS_2BIT).astype(np.uint8)
    levels = LEVELS_2BIT[codes]
    scales = (matrix * levels).sum(axis=1) / np.maximum((levels * levels).sum(axis=1), 1e-30)
    scales = np.where(scales > 0, scales, 1.0).astype(np.float32)
    pad = -matrix.shape[1] % 4
    codes = np.pad(codes, ((0, 0), (0, pad))).reshape(len(matrix), (matrix.shape[1] + pad) // 4, 4)
    packed = (codes[:, :, 0] << 6) | (codes[:, :, 1] << 4) | (codes[:, :, 2] << 2) | codes[:, :, 3]
    return packed.astype(np.uint8), scales


def encode_tokens(matrix: np.ndarray, dtype: ColbertDtype, center: np.ndarray | None = None) -> EncodedTokens:
    """A row's token vectors in storage form (with their float16 form, which re-check keeps); binary needs the
    store's `center` (`fit_center`)."""
    exact = np.asarray(matrix, np.float16)
    if dtype == "float16":
        return EncodedTokens(exact, None, exact)
    if dtype == "binary":
        if center is None:
            raise ValueError("binary token codes need the store's center (fit_center)")
        return EncodedTokens(*quantize_binary(exact, center), exact)
    quantize = {"int8": quantize_int8, "2bit": quantize_2bit}[dtype]
    return EncodedTokens(*quantize(exact.astype(np.float32)), exact)


class MultiVectorWriter:
    """Writes rows of token vectors into a new store, streaming (the whole matrix never sits in RAM)."""

    def __init__(
        self,
        directory: Path,
        dim: int,
        dtype: ColbertDtype,
        total_tokens: int,
        n_rows: int,
        *,
        keep_exact: bool = False,
        center: np.ndarray | None = None,
    ) -> None:
        if dtype not in COLBERT_DTYPES:
            raise ValueError(f"unknown ColBERT dtype {dtype!r}; choose one of {', '.join(COLBERT_DTYPES)}")
        if dtype == "binary" and center is None:
            raise ValueError("a binary store needs its center (fit_center)")
        self.directory, self.dtype, self.dim, self.center = directory, dtype, dim, center
        code_dtype, width = code_layout(dtype, dim, center)
        self.tokens = np.lib.format.open_memmap(
            directory / TOKENS_FILE, mode="w+", dtype=code_dtype, shape=(total_tokens, width)
        )
        scale_dtype = {"int8": np.float32, "2bit": np.float32, "binary": np.float16}.get(dtype)
        self.scales = None if scale_dtype is None else np.zeros(total_tokens, scale_dtype)
        self.exact = (
            np.lib.format.open_memmap(
                directory / EXACT_FILE, mode="w+", dtype=np.float16, shape=(total_tokens, dim)
            )
            if keep_exact and dtype != "float16"
            else None
        )
        self.offsets = np.zeros(n_rows + 1, np.int64)
        self._row = 0

    def append(self, matrix: np.ndarray | None) -> None:
        """Add the next row from float vectors (None or empty: a row without token vectors)."""
        if matrix is None or len(matrix) == 0:
            matrix = np.empty((0, self.dim), np.float32)
        self.append_encoded(encode_tokens(matrix, self.dtype, self.center))

    def append_encoded(self, row: EncodedTokens) -> None:
        """Add the next row already in storage form (copying between stores of the same dtype); the next rows
        when it holds several (`lengths`), copied at once."""
        start = self.offsets[self._row]
        end = start + len(row.codes)
        if row.lengths is not None and row.lengths.sum() != end - start:
            raise ValueError(
                f"row lengths add up to {row.lengths.sum()} tokens, the codes hold {end - start}"
            )
        self.tokens[start:end] = row.codes
        if self.scales is not None:
            self.scales[start:end] = row.scales
        if self.exact is not None:
            if row.exact is None and end > start:
                raise RuntimeError("re-check needs the float16 token vectors, which this row lacks")
            self.exact[start:end] = row.exact
        if row.lengths is None:
            self._row += 1
            self.offsets[self._row] = end
        else:
            self.offsets[self._row + 1 : self._row + 1 + len(row.lengths)] = start + np.cumsum(row.lengths)
            self._row += len(row.lengths)

    def add(self, rows: EncodedTokens | StoredRows) -> None:
        """Add the next rows in storage form: `append_encoded`, or a saved store's rows copied file to file
        (its token codes and float16 copies; at 100k rows 262 MB of codes took ~1 s through the memory map)."""
        if isinstance(rows, EncodedTokens):
            return self.append_encoded(rows)
        store, first, end = rows
        if (
            store.directory is None
            or store.tokens.dtype != self.tokens.dtype
            or store.tokens.shape[1:] != self.tokens.shape[1:]
        ):
            return self.append_encoded(store.encoded(first, end))  # in memory, or not the same layout
        start, (lo, hi) = self.offsets[self._row], (int(store.offsets[first]), int(store.offsets[end]))
        copies = [(TOKENS_FILE, self.tokens)]
        if self.exact is not None:
            if store.exact is None and hi > lo:
                raise RuntimeError("re-check needs the float16 token vectors, which these rows lack")
            copies.append((EXACT_FILE, self.exact))
        for name, target in copies if hi > lo else []:
            row_bytes = target.dtype.itemsize * target.shape[1]
            source = store.tokens if name == TOKENS_FILE else store.exact
            with open(store.directory / name, "rb") as src, open(self.directory / name, "r+b") as dst:
                copy_range(
                    src.fileno(),
                    dst.fileno(),
                    source.offset + lo * row_bytes,  # type: ignore[union-attr]  # a loaded store's memory maps
                    (hi - lo) * row_bytes,
                    target.offset + start * row_bytes,
                )
        if self.scales is not None and store.scales is not None:
            self.scales[start : start + hi - lo] = store.scales[lo:hi]
        self.offsets[self._row + 1 : self._row + 1 + end - first] = (
            start + store.offsets[first + 1 : end + 1] - lo
        )
        self._row += end - first

    def finish(self) -> list[Path]:
        """Flush everything to the files; returns the files written."""
        if self._row != len(self.offsets) - 1 or self.offsets[-1] != len(self.tokens):
            raise RuntimeError("multi-vector store closed before all its rows were written")
        self.tokens.flush()
        del self.tokens
        paths = [self.directory / TOKENS_FILE, self.directory / OFFSETS_FILE, self.directory / META_FILE]
        np.save(paths[1], self.offsets)
        paths[2].write_text(json.dumps({"dtype": self.dtype, "dim": self.dim}))
        if self.center is not None:
            paths.append(self.directory / CENTER_FILE)
            np.save(paths[-1], np.asarray(self.center, np.float32))
        if self.scales is not None:
            paths.append(self.directory / SCALES_FILE)
            np.save(paths[-1], self.scales)
        if self.exact is not None:
            self.exact.flush()
            del self.exact
            paths.append(self.directory / EXACT_FILE)
        return paths


class MultiVectorStore:
    """Token vectors per row: `tokens[offsets[i]:offsets[i+1]]`, decoded by `dtype` (times `scales` for int8 and
    2bit; binary: `center[0] + scales * center[1] * ±1`). With `exact` (float16 copies) and `recheck` = M > 0, `maxsim`
    re-scores the M best candidates by the compressed score with the float16 vectors."""

    def __init__(
        self,
        tokens: np.ndarray,
        offsets: np.ndarray,
        scales: np.ndarray | None = None,
        *,
        dtype: ColbertDtype | None = None,
        dim: int | None = None,
        center: np.ndarray | None = None,
        exact: np.ndarray | None = None,
        recheck: int = 0,
    ) -> None:
        self.tokens, self.offsets, self.scales = tokens, offsets, scales
        self.dtype: ColbertDtype = dtype or ("int8" if scales is not None else "float16")
        self.dim = dim if dim is not None else tokens.shape[1]
        self.center, self.exact, self.recheck = center, exact, recheck
        #: where the store was loaded from (None: in memory)
        self.directory: Path | None = None
        #: binary: the dimensions that have a sign bit
        self.kept = kept_dims(center) if self.dtype == "binary" and center is not None else None

    def __len__(self) -> int:
        return len(self.offsets) - 1

    @classmethod
    def from_rows(
        cls,
        rows: Sequence[np.ndarray | None],
        dtype: ColbertDtype = "float16",
        dim: int | None = None,
        center: np.ndarray | None = None,
    ) -> MultiVectorStore:
        """An in-memory store (for rows not yet written to a segment); None rows have no token vectors. Binary
        fits its center on these rows unless given one."""
        dim = dim if dim is not None else next((r.shape[1] for r in rows if r is not None and len(r)), 0)
        empty = np.empty((0, dim), np.float32)
        if dtype == "binary" and center is None:
            center = fit_center(np.concatenate([empty, *(r for r in rows if r is not None)]))
        encoded = [encode_tokens(r if r is not None else empty, dtype, center) for r in rows]
        offsets = np.concatenate([[0], np.cumsum([len(e.codes) for e in encoded])]).astype(np.int64)
        code_dtype, width = code_layout(dtype, dim, center)
        tokens = np.concatenate(
            [e.codes.reshape(-1, width) for e in encoded] or [np.empty((0, width), code_dtype)]
        )
        scales = (
            np.concatenate([e.scales for e in encoded]) if dtype in COMPRESSED_DTYPES and encoded else None
        )
        return cls(tokens, offsets, scales, dtype=dtype, dim=dim, center=center)

    @classmethod
    def load(cls, directory: Path, recheck: int = 0) -> MultiVectorStore:
        """Open a saved store, memory-mapped (its float16 copies too, when it has them), and not mapped in at
        once (`map_cached=False`): the store is the collection's largest file by far, a query re-ranks a few
        hundred documents of it, and mapping gigabytes of page cache into the process makes reclaiming them
        costlier while a writer needs the memory."""
        tokens = load_array(directory / TOKENS_FILE, mmap=True, map_cached=False)
        scales_path, exact_path, meta_path, center_path = (
            directory / f for f in (SCALES_FILE, EXACT_FILE, META_FILE, CENTER_FILE)
        )
        scales = load_array(scales_path) if scales_path.exists() else None
        if meta_path.exists():
            meta = json.loads(meta_path.read_text())
        else:  # written before colbert.json: float16, or int8 with its scales
            meta = {
                "dtype": "int8" if scales is not None else "float16",
                "dim": tokens.shape[1],
            }
        store = cls(
            tokens,
            load_array(directory / OFFSETS_FILE),
            scales,
            dtype=meta["dtype"],
            dim=meta["dim"],
            center=load_array(center_path) if center_path.exists() else None,
            exact=load_array(exact_path, mmap=True, map_cached=False) if exact_path.exists() else None,
            recheck=recheck,
        )
        store.directory = directory
        return store

    def encoded(self, row: int, stop: int | None = None) -> EncodedTokens:
        """One row in storage form; with `stop`, rows `row` to `stop` - 1 back to back (one copy for a run)."""
        start, end = self.offsets[row], self.offsets[row + 1 if stop is None else stop]
        lengths = None if stop is None else np.diff(self.offsets[row : stop + 1])
        codes = self.tokens[start:end]
        scales = None if self.scales is None else self.scales[start:end]
        exact = codes if self.dtype == "float16" else None if self.exact is None else self.exact[start:end]
        return EncodedTokens(codes, scales, exact, lengths)

    def row(self, row: int, prefer_exact: bool = False) -> np.ndarray:
        """One row's token vectors as float32: the decoded codes, or with `prefer_exact` the float16 copies
        when the store keeps them (what an export should carry)."""
        start, end = self.offsets[row], self.offsets[row + 1]
        if prefer_exact and self.exact is not None:
            return np.asarray(self.exact[start:end], np.float32)
        values = self._decode(np.array([start]), np.array([end]))
        if self.dtype == "binary":
            values *= self.center[1]  # type: ignore[index]
        if self.scales is not None:
            values *= self.scales[start:end, None].astype(np.float32)
        if self.dtype == "binary":
            values += self.center[0]  # type: ignore[index]
        return values

    def token_counts(self, rows: np.ndarray) -> np.ndarray:
        """Number of token vectors of each row."""
        rows = np.asarray(rows, np.int64)
        return self.offsets[rows + 1] - self.offsets[rows]

    def maxsim(self, query: np.ndarray, rows: np.ndarray, recheck: int | None = None) -> np.ndarray:
        """ColBERT score of `query` (q, dim) against each row: mean over query tokens of the max dot product.

        The candidates' tokens are scored block by block (about `BLOCK_VALUES` values, so a block is decoded,
        multiplied and reduced while it sits in cache): float16 and int8 decoded to float32 and one BLAS product
        a block, binary and 2bit summing rows of a table of the query's products per code byte (a value: a
        byte's table index, so a block holds `dim / width` times the tokens of a decoded one); rows without
        token vectors score 0. With re-check, the `recheck` (default: the store's) best rows by that
        score get the exact score of their float16 vectors instead.
        """
        out = self._maxsim(query, rows)
        recheck = self.recheck if recheck is None else recheck
        if self.exact is not None and recheck > 0 and len(out):
            top = np.argsort(-out, kind="stable")[:recheck]
            out[top] = self.exact_maxsim(query, np.asarray(rows, np.int64)[top])
        return out

    def exact_maxsim(self, query: np.ndarray, rows: np.ndarray) -> np.ndarray:
        """MaxSim on the kept float16 copies (the store must have them)."""
        assert self.exact is not None, "exact_maxsim needs the float16 copies"
        return MultiVectorStore(self.exact, self.offsets, dtype="float16")._maxsim(query, rows)

    def _maxsim(self, query: np.ndarray, rows: np.ndarray) -> np.ndarray:
        """MaxSim on exactly the stored values (the decoded codes)."""
        rows = np.asarray(rows, np.int64)
        out = np.zeros(len(rows), np.float32)
        counts = self.token_counts(rows)
        has = np.flatnonzero(counts > 0)
        if len(query) == 0 or len(has) == 0:
            return out
        has = has[np.argsort(rows[has], kind="stable")]  # read the memory map front to back
        starts, ends = self.offsets[rows[has]], self.offsets[rows[has] + 1]
        query = np.asarray(query, np.float32)
        # binary: q·(center + s·spread·±1) = q·center + s·((q·spread)·±1), the first term outside the max
        scaled = (query * self.center[1])[:, self.kept] if self.dtype == "binary" else query  # type: ignore[index]
        packed = self.dtype in ("binary", "2bit")
        if packed:
            table = _code_table(scaled, self.dtype, self.tokens.shape[1])
        else:
            query_t = np.ascontiguousarray(scaled).T
        prefetch_rows(self.tokens, starts, ends)
        block = max(1, BLOCK_VALUES // (self.tokens.shape[1] if packed else self.dim))
        cumulative = np.cumsum(ends - starts)
        first = 0
        # torch's embedding_bag (packed codes) splits over OpenMP threads: only a deep re-rank gets a second one
        threads = query_threads() if packed and cumulative[-1] >= PARALLEL_TOKENS else 1
        with thread_limit(threads, "openmp"):
            while first < len(has):
                # the candidates whose tokens fit in one block (at least one, however long)
                before = cumulative[first - 1] if first else 0
                last = max(first + 1, int(np.searchsorted(cumulative, before + block, side="right")))
                block_starts, block_ends = starts[first:last], ends[first:last]
                token_rows, bounds = concat_ranges(block_starts, block_ends)
                if packed:
                    sims = self._packed_products(token_rows, table)
                else:
                    sims = self._decode(block_starts, block_ends) @ query_t
                if self.scales is not None:
                    sims *= self.scales[token_rows].astype(np.float32)[:, None]
                out[has[first:last]] = np.maximum.reduceat(sims, bounds, axis=0).sum(axis=1) / len(query)
                first = last
        if self.dtype == "binary":
            out[has] += np.float32((query @ self.center[0]).mean())  # type: ignore[index]
        return out

    def _packed_products(self, token_rows: np.ndarray, table: torch.Tensor) -> np.ndarray:
        """The (tokens, q) dot products of the packed codes of `token_rows` with the query (before any scales):
        each token's sum of its bytes' rows of `table` (`_code_table`), one table row per byte instead of 8
        (binary) or 4 (2bit) multiply-adds, without decoding."""
        import torch  # loaded with the first packed re-rank, not with the index

        width = self.tokens.shape[1]
        # byte k of a token indexes rows 256k..256k+255 (uint8 + int32 gives int32: one pass, no loop a row)
        index = self.tokens[token_rows] + np.arange(width, dtype=np.int32) * 256
        # one fixed-size bag a token: fbgemm's gather-and-sum kernel, ~3x faster than scipy's CSR product
        return torch.nn.functional.embedding_bag(torch.from_numpy(index), table, mode="sum").numpy()

    def _decode(self, starts: np.ndarray, ends: np.ndarray) -> np.ndarray:
        """The codes of token ranges `[starts[i], ends[i])` as one float32 matrix (before any scales); float16 and
        int8 are copied range by range straight into the output (one gather then a cast was an extra pass, slower)."""
        lengths = ends - starts
        if self.dtype in ("binary", "2bit"):
            # packed codes: one table lookup a byte gives its 8 (binary) or 4 (2bit) float32 values
            codes = np.concatenate([self.tokens[s:e] for s, e in zip(starts, ends)])
            lut = _BINARY_LUT if self.dtype == "binary" else _2BIT_LUT
            values = lut[codes].reshape(len(codes), codes.shape[1] * lut.shape[1])
            if self.kept is not None and len(self.kept) < self.dim:  # binary without bits for some: 0 there
                full = np.zeros((len(codes), self.dim), np.float32)
                full[:, self.kept] = values[:, : len(self.kept)]
                return full
            return values if values.shape[1] == self.dim else values[:, : self.dim]
        int8 = self.dtype == "int8"
        # int8 -> float32 is a vectorized numpy cast; float16 goes through its bits, sign-extended to int32
        out = np.empty((int(lengths.sum()), self.dim), np.float32 if int8 else np.int32)
        at = 0
        for s, e in zip(starts, ends):
            np.copyto(out[at : at + e - s], self.tokens[s:e] if int8 else self.tokens[s:e].view(np.int16))
            at += e - s
        return out if int8 else _float16_bits_to_float32(out)


#: Packed codes: from this many candidate tokens a re-rank's table sums use `query_threads()` threads (~5 ms of
#: work on one at 1024-d; docs/INDEX.md).
PARALLEL_TOKENS = 8192

#: Values per block in `MultiVectorStore.maxsim`: decoded float32 (4 MiB), or packed codes' table indices
#: (~8,300 binary tokens at 1024-d: 1,024 a block took 9.3 ms for 200 candidates at 1M, 8,192 took 7.7).
BLOCK_VALUES = 1 << 20


def _code_table(query: np.ndarray, dtype: ColbertDtype, width: int) -> torch.Tensor:
    """For packed codes of `width` bytes a token: a (width * 256, q) float32 torch tensor whose row 256k + b
    holds the dot products of the query's dimensions in byte k with the values byte b decodes to, so that a
    token's dot products with the query are the sum of its bytes' rows (the query is zero past its dimensions,
    so the padding codes add nothing)."""
    import torch  # loaded with the first packed re-rank, not with the index

    lut = _BINARY_LUT if dtype == "binary" else _2BIT_LUT
    padded = np.zeros((len(query), width * lut.shape[1]), np.float32)
    padded[:, : query.shape[1]] = query
    # (256, per) @ (width, per, q) -> (width, 256, q): byte b's values times each query's dimensions of byte k
    table = np.matmul(lut, padded.reshape(len(query), width, lut.shape[1]).transpose(1, 2, 0))
    return torch.from_numpy(table.reshape(width * 256, len(query)))


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
