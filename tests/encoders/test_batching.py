"""Batches follow the token budget and carry little padding, and batching never changes results."""

from __future__ import annotations

import numpy as np

from m3search.encoders.transformer import MAX_PADDING_FRACTION, TransformerEncoder
from tests.encoders.texts import MULTILINGUAL


def _batches(lengths, batch_size=32, max_tokens=16384):
    lengths = np.asarray(lengths)
    order = np.argsort(-lengths, kind="stable")
    return [list(b) for b in TransformerEncoder._batches(order, lengths, batch_size, max_tokens)], lengths


def test_every_text_in_exactly_one_batch_with_bounded_padding():
    rng = np.random.default_rng(0)
    batches, lengths = _batches(rng.integers(3, 512, size=500))
    assert sorted(i for b in batches for i in b) == list(range(500))
    for b in batches:
        padded = len(b) * lengths[b].max()
        assert len(b) == 1 or padded - lengths[b].sum() <= MAX_PADDING_FRACTION * padded
        assert len(b) <= 32 and padded <= 16384


def test_long_inputs_are_batched_by_token_budget():
    batches, _ = _batches([8192] * 5 + [100] * 3, max_tokens=16384)
    assert [len(b) for b in batches] == [2, 2, 1, 3]


def test_uniform_lengths_fill_batches():
    batches, _ = _batches([300] * 70, batch_size=32)
    assert [len(b) for b in batches] == [32, 32, 6]


def test_results_do_not_depend_on_batching(tiny_m3):
    texts = MULTILINGUAL * 3
    one = tiny_m3.encode(texts, batch_size=1, return_sparse=True, return_colbert=True)
    many = tiny_m3.encode(
        texts, batch_size=64, max_batch_tokens=1024, return_sparse=True, return_colbert=True
    )
    np.testing.assert_allclose(one.dense, many.dense, atol=1e-5)
    for a, b in zip(one.colbert, many.colbert):
        np.testing.assert_allclose(a, b, atol=1e-5)
