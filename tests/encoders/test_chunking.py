"""Overlapping chunks: windows cover every token, and outputs merge as documented."""

from __future__ import annotations

import numpy as np


def test_chunks_merge_as_documented(tiny_m3, single_token_words):
    words = (single_token_words * 5)[:50]
    text = " ".join(words)
    max_length, overlap = 22, 5  # windows of 20 content tokens, stride 15
    window, stride = max_length - 2, max_length - 2 - overlap
    starts = list(range(0, len(words) - overlap, stride))
    assert starts[-1] + window >= len(words)
    chunks = [" ".join(words[s : s + window]) for s in starts]

    merged = tiny_m3.encode(
        text,
        max_length=max_length,
        chunking="chunk",
        chunk_overlap=overlap,
        return_sparse=True,
        return_colbert=True,
    )
    parts = tiny_m3.encode(chunks, max_length=max_length, return_sparse=True, return_colbert=True)

    assert merged.truncated == [] and parts.truncated == []
    mean = parts.dense.mean(axis=0)
    np.testing.assert_allclose(merged.dense[0], mean / np.linalg.norm(mean), atol=1e-5)
    expected_sparse: dict[int, float] = {}
    for sp in parts.sparse:
        for token, w in sp.items():
            expected_sparse[token] = max(w, expected_sparse.get(token, 0.0))
    assert merged.sparse[0].keys() == expected_sparse.keys()
    for token, w in expected_sparse.items():
        assert abs(merged.sparse[0][token] - w) < 1e-5
    np.testing.assert_allclose(merged.colbert[0], np.concatenate(parts.colbert), atol=1e-5)
    np.testing.assert_array_equal(merged.colbert_ids[0], np.concatenate(parts.colbert_ids))
    assert merged.num_tokens[0] == sum(parts.num_tokens)


def test_short_text_is_unaffected_by_chunking(tiny_m3):
    a = tiny_m3.encode("a short text", chunking="chunk", return_sparse=True)
    b = tiny_m3.encode("a short text", return_sparse=True)
    np.testing.assert_array_equal(a.dense, b.dense)
    assert a.sparse == b.sparse


def test_truncation_reports_indices(tiny_m3, single_token_words):
    long = " ".join(single_token_words * 10)
    out = tiny_m3.encode(["short", long, "also short", long], max_length=32)
    assert out.truncated == [1, 3]
    assert out.num_tokens == [tiny_m3.count_tokens("short")[0], 32, tiny_m3.count_tokens("also short")[0], 32]
