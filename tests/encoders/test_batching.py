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


def test_next_batch_starts_before_the_last_is_post_processed(tiny_m3, monkeypatch):
    """The encoder keeps one batch in flight (a GPU computes it meanwhile) and the results stay the same."""
    texts = MULTILINGUAL * 2
    eager = tiny_m3.encode(texts, batch_size=2, return_sparse=True, return_colbert=True)
    events: list[tuple[str, int]] = []
    submit = tiny_m3.runtime.submit

    def deferred(*args, **kwargs):
        k = sum(kind == "submit" for kind, _ in events)
        events.append(("submit", k))
        wait = submit(*args, **kwargs)

        def waited():
            events.append(("wait", k))
            return wait()

        return waited

    monkeypatch.setattr(tiny_m3.runtime, "submit", deferred)
    ours = tiny_m3.encode(texts, batch_size=2, return_sparse=True, return_colbert=True)

    n = sum(kind == "submit" for kind, _ in events)
    assert n >= 3
    expected = [("submit", 0)] + [e for k in range(1, n) for e in (("submit", k), ("wait", k - 1))]
    assert events == [*expected, ("wait", n - 1)]
    np.testing.assert_array_equal(ours.dense, eager.dense)
    assert ours.sparse == eager.sparse
    for a, b in zip(ours.colbert, eager.colbert, strict=True):
        np.testing.assert_array_equal(a, b)
