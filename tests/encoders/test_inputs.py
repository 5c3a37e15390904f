"""Bad input gets a clear error naming the problem; edge cases behave like the reference."""

from __future__ import annotations

import resource
import shutil

import numpy as np
import pytest

from m3search.encoders import BGEM3Encoder
from m3search.errors import InvalidInputError, ModelLoadError, ModelNotFoundError


def test_empty_list_gives_empty_result(tiny_m3):
    out = tiny_m3.encode([], return_dense=True, return_sparse=True, return_colbert=True)
    assert len(out) == 0
    assert out.dense.shape == (0, tiny_m3.dim) and out.sparse == [] and out.colbert == []


@pytest.mark.parametrize(
    "texts, message",
    [
        (["ok", None, "ok"], "index 1 is NoneType"),
        (["ok", 42], "index 1 is int"),
        ([b"ok", b"\xff\xfe bad"], "index 1 is not valid UTF-8"),
        (["fine", "bad \ud800 surrogate"], "index 1 is not valid Unicode"),
        (None, "got NoneType"),
    ],
)
def test_bad_texts_name_the_offending_index(tiny_m3, texts, message):
    with pytest.raises(InvalidInputError, match=message):
        tiny_m3.encode(texts)


def test_valid_utf8_bytes_equal_str(tiny_m3):
    text = "Grüße aus Köln, 東京"
    a = tiny_m3.encode([text.encode("utf-8")])
    b = tiny_m3.encode([text])
    np.testing.assert_array_equal(a.dense, b.dense)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(return_dense=False), "at least one output"),
        (dict(max_length=2), "max_length must be between"),
        (dict(max_length=100_000), "max_length must be between"),
        (dict(batch_size=0), "batch_size"),
        (dict(chunking="split"), "chunking must be"),
        (dict(chunking="chunk", chunk_overlap=600), "chunk_overlap"),
    ],
)
def test_bad_options(tiny_m3, kwargs, message):
    with pytest.raises(InvalidInputError, match=message):
        tiny_m3.encode(["text"], **kwargs)


def test_million_character_text_is_bounded(tiny_m3):
    """A 1M-character text is tokenized once and truncated; memory stays far from exhausted."""
    text = "retrieval " * 100_000
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    out = tiny_m3.encode([text, "short"], return_sparse=True, return_colbert=True)
    grown_mib = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024
    assert out.truncated == [0]
    assert out.num_tokens[0] == tiny_m3.default_max_length
    assert out.colbert[0].shape[0] == tiny_m3.default_max_length - 1
    assert grown_mib < 400, f"encoding a 1M-character text grew peak memory by {grown_mib:.0f} MiB"


def test_million_character_text_chunked(tiny_m3):
    """With chunking, every token is read, in batches under the token budget."""
    text = "retrieval " * 100_000
    n_tokens = tiny_m3.count_tokens(text)[0]
    out = tiny_m3.encode(text, chunking="chunk", chunk_overlap=0, return_sparse=True, max_batch_tokens=8192)
    assert out.truncated == []
    assert out.num_tokens[0] >= n_tokens  # each window repeats CLS and EOS
    assert np.isclose(np.linalg.norm(out.dense[0]), 1.0, atol=1e-6)


@pytest.mark.parametrize("missing", ["colbert_linear.pt", "sparse_linear.pt"])
def test_missing_head_file_is_refused(tiny_m3_dir, tmp_path, missing):
    partial = tmp_path / "snapshot"
    shutil.copytree(tiny_m3_dir, partial)
    (partial / missing).unlink()
    with pytest.raises(ModelLoadError, match=missing):
        BGEM3Encoder(partial)


def test_snapshot_without_both_heads_is_refused(tiny_m3_dir, tmp_path):
    partial = tmp_path / "bare"
    shutil.copytree(tiny_m3_dir, partial, ignore=shutil.ignore_patterns("*_linear.pt"))
    with pytest.raises(ModelLoadError, match="colbert_linear.pt, sparse_linear.pt"):
        BGEM3Encoder(partial)


def test_partial_directory_names_missing_files(tiny_m3_dir, tmp_path):
    partial = tmp_path / "no_weights"
    shutil.copytree(tiny_m3_dir, partial, ignore=shutil.ignore_patterns("*.safetensors", "tokenizer*"))
    with pytest.raises(ModelLoadError, match="model weights.*tokenizer"):
        BGEM3Encoder(partial)


def test_corrupt_head_file(tiny_m3_dir, tmp_path):
    broken = tmp_path / "broken"
    shutil.copytree(tiny_m3_dir, broken)
    (broken / "sparse_linear.pt").write_bytes(b"not a torch file")
    with pytest.raises(ModelLoadError, match="sparse_linear.pt"):
        BGEM3Encoder(broken)


def test_wrong_head_shape(tiny_m3_dir, tmp_path):
    import torch

    wrong = tmp_path / "wrong"
    shutil.copytree(tiny_m3_dir, wrong)
    torch.save(torch.nn.Linear(32, 1).state_dict(), wrong / "sparse_linear.pt")
    with pytest.raises(ModelLoadError, match="Linear\\(64, n\\)"):
        BGEM3Encoder(wrong)


def test_unknown_model_lists_what_was_tried(tmp_path):
    with pytest.raises(ModelNotFoundError, match="tried"):
        BGEM3Encoder("nobody/no-such-model")
    with pytest.raises(ModelNotFoundError, match="no model directory"):
        BGEM3Encoder(tmp_path / "missing")
