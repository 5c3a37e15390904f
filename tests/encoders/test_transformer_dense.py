"""The generic dense pipeline (`TransformerEncoder` on multilingual-e5-small) against the model card's
recipe: plain transformers, `query: ` / `passage: ` prefixes, mean pooling over the mask, L2 normalization."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from m3search.errors import InvalidInputError
from tests.encoders.texts import MULTILINGUAL, xquad_pairs

TOL = 1e-5


def _model_card(
    reference, tokenizer, texts: list[str], max_length: int = 512
) -> tuple[np.ndarray, list[np.ndarray]]:
    """The e5 model card's snippet: tokenize with padding and truncation, average_pool, normalize.

    Also returns each text's normalized token vectors without CLS (`return_colbert` of a dense model).
    """
    batch = tokenizer(texts, max_length=max_length, padding=True, truncation=True, return_tensors="pt")
    with torch.inference_mode():
        hidden = reference(**batch).last_hidden_state
    mask = batch["attention_mask"]
    summed = hidden.masked_fill(~mask[..., None].bool(), 0.0).sum(dim=1)
    pooled = torch.nn.functional.normalize(summed / mask.sum(dim=1)[..., None], dim=-1)
    tokens = [
        torch.nn.functional.normalize(hidden[i, 1 : int(mask[i].sum())], dim=-1).numpy()
        for i in range(len(texts))
    ]
    return pooled.numpy(), tokens


@pytest.fixture(scope="module")
def texts(shared_data) -> list[str]:
    """Mixed lengths (2 to ~200 tokens) and languages, so batches are sorted, padded and split."""
    return [t for t in MULTILINGUAL if t and len(t) < 1000] + [
        p for _, p in xquad_pairs(shared_data, "es", 2)[1:]
    ]


def test_queries_and_passages_follow_the_model_card(e5_encoder, e5_reference, texts):
    reference, _ = e5_reference
    tok = e5_encoder.tokenizer
    for prefix, encode in (
        ("query: ", e5_encoder.encode_queries),
        ("passage: ", e5_encoder.encode_documents),
    ):
        expected, _ = _model_card(reference, tok, [prefix + t for t in texts])
        got = encode(texts, batch_size=3)
        assert got.dense.dtype == np.float32 and got.dense.shape == (len(texts), 384)
        np.testing.assert_allclose(got.dense, expected, atol=TOL)
        assert got.num_tokens == [len(tok(prefix + t)["input_ids"]) for t in texts]
        assert got.num_tokens == e5_encoder.count_tokens(texts, is_query=prefix == "query: ")

    # The prefix is part of the input: queries and passages of the same text differ.
    same = np.sum(e5_encoder.encode_queries(texts).dense * e5_encoder.encode_documents(texts).dense, axis=1)
    assert same.max() < 0.999


def test_token_vectors_are_normalized_rows_without_cls(e5_encoder, e5_reference, texts):
    reference, _ = e5_reference
    got = e5_encoder.encode_documents(texts, return_dense=False, return_colbert=True, batch_size=4)
    assert got.dense is None and got.sparse is None
    _, expected = _model_card(reference, e5_encoder.tokenizer, ["passage: " + t for t in texts])
    for i, (mine, theirs) in enumerate(zip(got.colbert, expected)):
        assert mine.shape == (got.num_tokens[i] - 1, 384), f"text {i}"
        np.testing.assert_allclose(np.linalg.norm(mine, axis=1), 1.0, atol=1e-5)
        np.testing.assert_allclose(mine, theirs, atol=TOL, err_msg=f"text {i}")


def test_long_text_is_truncated_or_chunked(e5_encoder, e5_reference):
    reference, _ = e5_reference
    tok = e5_encoder.tokenizer
    long_text = MULTILINGUAL[-1]
    content = tok("passage: " + long_text, add_special_tokens=False)["input_ids"]
    assert len(content) > 900

    got = e5_encoder.encode_documents(["short one", long_text])
    assert got.truncated == [1] and got.num_tokens[1] == 512
    expected, _ = _model_card(reference, tok, ["passage: short one", "passage: " + long_text])
    np.testing.assert_allclose(got.dense, expected, atol=TOL)

    # Chunks: windows of 510 content tokens overlapping by 64, each wrapped in <s> ... </s>, dense = mean.
    chunked = e5_encoder.encode_documents([long_text], chunking="chunk", chunk_overlap=64)
    windows = [content[s : s + 510] for s in range(0, len(content) - 64, 510 - 64)]
    rows = []
    for window in windows:
        ids = torch.tensor([[tok.cls_token_id, *window, tok.sep_token_id]])
        with torch.inference_mode():
            hidden = reference(input_ids=ids, attention_mask=torch.ones_like(ids)).last_hidden_state
        rows.append(torch.nn.functional.normalize(hidden.mean(dim=1), dim=-1)[0].numpy())
    mean = np.mean(rows, axis=0)
    np.testing.assert_allclose(chunked.dense[0], mean / np.linalg.norm(mean), atol=TOL)
    assert chunked.truncated == [] and chunked.num_tokens == [sum(len(w) + 2 for w in windows)]


def test_dense_model_describes_itself_and_refuses_a_sparse_head(e5_encoder):
    info = e5_encoder.describe()
    assert info["family"] == "dense" and info["runtime"] == "torch-fp32"
    assert info["outputs"] == ["dense", "colbert"] and info["dim"] == 384 and info["max_length"] == 512
    with pytest.raises(InvalidInputError, match="cannot produce sparse"):
        e5_encoder.encode("text", return_sparse=True)
    with pytest.raises(InvalidInputError, match="max_length"):
        e5_encoder.encode("text", max_length=513)


def test_calling_the_tokenizer_directly_changes_nothing(e5_encoder):
    """Users (and the tests above) call the shared tokenizer with truncation and padding switched on."""
    texts = [MULTILINGUAL[-1], "hi"]
    before = e5_encoder.encode_documents(texts, chunking="chunk")
    e5_encoder.tokenizer(["a", "b c"], padding="max_length", truncation=True, max_length=16)
    after = e5_encoder.encode_documents(texts, chunking="chunk")
    assert after.num_tokens == before.num_tokens and after.num_tokens[0] > 1000
    np.testing.assert_array_equal(after.dense, before.dense)
