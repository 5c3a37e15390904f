"""ColBERT token store: MaxSim equals the reference `colbert_score`; float16 and int8 on disk."""

from __future__ import annotations

import numpy as np
import pytest

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
