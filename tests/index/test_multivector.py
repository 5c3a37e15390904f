"""ColBERT token store: MaxSim equals the reference `colbert_score`; float16 and int8 on disk."""

from __future__ import annotations

import numpy as np
import pytest

from m3search.index import multivector
from m3search.index.multivector import MultiVectorStore, MultiVectorWriter, quantize_int8
from m3search.scoring import colbert_score


def unit_rows(rng, n, dim):
    x = rng.standard_normal((n, dim)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


@pytest.mark.parametrize("dtype,tol", [("float16", 2e-3), ("int8", 2e-2)])
def test_written_store_scores_like_the_reference(tmp_path, dtype, tol):
    rng = np.random.default_rng(0)
    docs = [unit_rows(rng, int(rng.integers(1, 20)), 24) for _ in range(30)]
    docs[5] = None  # a document without token vectors
    writer = MultiVectorWriter(tmp_path, 24, dtype, sum(len(d) for d in docs if d is not None), len(docs))
    for d in docs:
        writer.append(d)
    writer.finish()
    store = MultiVectorStore.load(tmp_path)
    assert store.dtype == dtype and isinstance(store.tokens, np.memmap)
    query = unit_rows(rng, 7, 24)
    rows = np.array([9, 0, 5, 29, 3])
    expected = [colbert_score(query, docs[r]) if docs[r] is not None else 0.0 for r in rows]
    np.testing.assert_allclose(store.maxsim(query, rows), expected, atol=tol)
    np.testing.assert_allclose(store.row(3), docs[3], atol=tol)


def test_int8_quantization_error_is_small():
    rng = np.random.default_rng(1)
    x = unit_rows(rng, 100, 64)
    codes, scales = quantize_int8(x)
    assert codes.dtype == np.int8
    assert np.abs(codes * scales[:, None] - x).max() <= scales.max() / 2 + 1e-7


@pytest.mark.parametrize("dtype", ["float16", "int8"])
@pytest.mark.parametrize("block_values", [multivector.BLOCK_VALUES, 5 * 16])
def test_maxsim_equals_the_reference_on_the_stored_vectors(tmp_path, monkeypatch, dtype, block_values):
    """Blocked decoding and scoring give the reference score of exactly what is stored, whether the candidates
    share one block or split over many (a 5-token block: rows longer than a block are a block of their own)."""
    monkeypatch.setattr(multivector, "BLOCK_VALUES", block_values)
    rng = np.random.default_rng(2)
    docs = [unit_rows(rng, int(rng.integers(1, 12)), 16) if i % 7 else None for i in range(40)]
    writer = MultiVectorWriter(tmp_path, 16, dtype, sum(len(d) for d in docs if d is not None), len(docs))
    for d in docs:
        writer.append(d)
    writer.finish()
    store = MultiVectorStore.load(tmp_path)
    query = rng.standard_normal((5, 16)).astype(np.float32)
    rows = rng.permutation(len(docs))[:25]
    expected = [colbert_score(query, store.row(r)) if docs[r] is not None else 0.0 for r in rows]
    np.testing.assert_allclose(store.maxsim(query, rows), expected, rtol=1e-6, atol=1e-6)


def test_float16_decoding_is_exact_for_every_finite_value():
    """The vectorized float16 -> float32 decoding matches numpy's cast bit for bit (signed zeros, subnormals)."""
    every = np.arange(1 << 16, dtype=np.uint32).astype(np.uint16).view(np.float16)
    finite = every[np.isfinite(every)]
    decoded = multivector._float16_bits_to_float32(finite.view(np.int16).astype(np.int32))
    np.testing.assert_array_equal(decoded.view(np.uint32), finite.astype(np.float32).view(np.uint32))
