"""Multiple CLS (`chunking="mcls"`): checked against a hand-built input run through transformers directly."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from m3search.errors import InvalidInputError


@pytest.fixture(scope="module")
def reference_model(tiny_m3_dir):
    """The tiny bge-m3 loaded by transformers itself, with its two heads read from their files."""
    from transformers import AutoModel

    backbone = AutoModel.from_pretrained(str(tiny_m3_dir)).eval()
    heads = {
        name: torch.load(tiny_m3_dir / f"{name}.pt", weights_only=True)
        for name in ("colbert_linear", "sparse_linear")
    }
    return backbone, heads


def _hand_forward(reference_model, ids: list[int]):
    """Hidden states, sparse weights and ColBERT vectors of one unpadded input, computed from scratch."""
    backbone, heads = reference_model
    with torch.inference_mode():
        hidden = backbone(
            input_ids=torch.tensor([ids]), attention_mask=torch.ones(1, len(ids))
        ).last_hidden_state[0]
    sparse = torch.relu(hidden @ heads["sparse_linear"]["weight"].T + heads["sparse_linear"]["bias"])[:, 0]
    colbert = hidden[1:] @ heads["colbert_linear"]["weight"].T + heads["colbert_linear"]["bias"]
    return hidden, sparse, torch.nn.functional.normalize(colbert, dim=-1)


def _hand_mcls(tiny_m3, reference_model, content: list[int], interval: int, window: int):
    """The construction written out: windows of `window` content tokens, a CLS before every `interval` of
    them, EOS at the end; dense = normalized mean of every CLS state, sparse = max per token id over the
    content tokens, ColBERT = every non-CLS row after the first, window after window."""
    cls, eos = tiny_m3._cls_id, tiny_m3._eos_id
    cls_states, colbert_rows, sparse = [], [], {}
    for w in range(0, len(content), window):
        part = content[w : w + window]
        ids, cls_at = [], []
        for s in range(0, len(part), interval):
            cls_at.append(len(ids))
            ids += [cls, *part[s : s + interval]]
        ids.append(eos)
        hidden, weights, colbert = _hand_forward(reference_model, ids)
        cls_states += [hidden[p] for p in cls_at]
        colbert_rows += [colbert[p - 1] for p in range(1, len(ids)) if p not in cls_at]
        for token, weight in zip(ids, weights.tolist()):
            if token not in (cls, eos) and weight > 0:
                sparse[token] = max(sparse.get(token, 0.0), weight)
    dense = torch.nn.functional.normalize(torch.stack(cls_states).mean(0), dim=0)
    return dense.numpy(), sparse, torch.stack(colbert_rows).numpy()


@pytest.mark.parametrize(
    ("max_length", "windows"),
    [(512, 1), (30, 3)],  # one input; inputs of (30 - 1) // 9 = 3 intervals, i.e. 24 content tokens
)
def test_mcls_matches_the_hand_built_construction(
    tiny_m3, reference_model, single_token_words, max_length, windows
):
    interval = 8
    text = " ".join((single_token_words * 5)[:50])
    content = tiny_m3._content_ids([text])[0].tolist()
    window = (max_length - 1) // (interval + 1) * interval
    assert len(content) == 50 and -(-len(content) // window) == windows

    got = tiny_m3.encode(
        text,
        max_length=max_length,
        chunking="mcls",
        mcls_interval=interval,
        return_sparse=True,
        return_colbert=True,
    )
    dense, sparse, colbert = _hand_mcls(tiny_m3, reference_model, content, interval, window)

    np.testing.assert_allclose(got.dense[0], dense, atol=1e-5)
    assert set(got.sparse[0]) == set(sparse)
    np.testing.assert_allclose([got.sparse[0][k] for k in sparse], list(sparse.values()), atol=1e-5)
    assert got.colbert[0].shape == colbert.shape == (len(content) + windows, colbert.shape[1])
    np.testing.assert_allclose(got.colbert[0], colbert, atol=1e-5)
    assert got.truncated == []
    # the ColBERT rows' token ids (what pruning reads): the content and each window's closing token, no CLS
    ids, eos = got.colbert_ids[0].tolist(), tiny_m3.tokenizer.eos_token_id
    assert len(ids) == len(got.colbert[0]) and ids.count(eos) == windows
    assert [i for i in ids if i != eos] == content


def test_mcls_dense_differs_from_first_cls_and_from_chunk_mean(tiny_m3, single_token_words):
    """The extra CLS tokens change the dense vector (it is not the plain CLS of the same text)."""
    text = " ".join((single_token_words * 5)[:50])
    plain = tiny_m3.encode(text).dense[0]
    mcls = tiny_m3.encode(text, chunking="mcls", mcls_interval=8).dense[0]
    assert np.linalg.norm(mcls) == pytest.approx(1.0, abs=1e-5)
    assert float(plain @ mcls) < 0.9999


def test_short_text_is_unchanged_by_mcls(tiny_m3):
    """A text of at most one interval gets no extra CLS: the same outputs as without chunking."""
    texts = ["A short text.", "Ein kurzer Text über Flüsse."]
    plain = tiny_m3.encode(texts, return_sparse=True, return_colbert=True)
    mcls = tiny_m3.encode(texts, chunking="mcls", return_sparse=True, return_colbert=True)
    np.testing.assert_allclose(mcls.dense, plain.dense, atol=1e-6)
    assert mcls.sparse == plain.sparse
    for a, b in zip(mcls.colbert, plain.colbert):
        np.testing.assert_allclose(a, b, atol=1e-6)


@pytest.mark.parametrize("interval", [0, 510])
def test_bad_mcls_interval_is_a_clear_error(tiny_m3, interval):
    with pytest.raises(InvalidInputError, match="mcls_interval"):
        tiny_m3.encode("text", chunking="mcls", mcls_interval=interval, max_length=512)
