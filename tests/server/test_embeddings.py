"""`/v1/embeddings`, `/v1/models` and `/embed` answer what the encoder computes, in the documented formats."""

from __future__ import annotations

import base64

import numpy as np
import pytest

TEXTS = [
    "What is the capital of France?",
    "Paris ist die Hauptstadt Frankreichs.",
    "机器学习是人工智能的一个分支",
]


def test_openai_embeddings_float_equal_encoder(client, m3):
    r = client.post("/v1/embeddings", json={"input": TEXTS, "model": str(m3.path)})
    assert r.status_code == 200, r.text
    body = r.json()
    expected = m3.encode(TEXTS)
    assert body["object"] == "list" and body["model"] == m3.name
    assert [d["index"] for d in body["data"]] == [0, 1, 2]
    assert all(d["object"] == "embedding" for d in body["data"])
    np.testing.assert_allclose(np.array([d["embedding"] for d in body["data"]]), expected.dense, atol=1e-6)
    assert body["usage"] == {
        "prompt_tokens": sum(expected.num_tokens),
        "total_tokens": sum(expected.num_tokens),
    }


def test_openai_embeddings_base64_is_little_endian_float32(client, m3):
    r = client.post("/v1/embeddings", json={"input": "hello world", "encoding_format": "base64"})
    assert r.status_code == 200, r.text
    raw = base64.b64decode(r.json()["data"][0]["embedding"])
    vector = np.frombuffer(raw, dtype="<f4")
    np.testing.assert_allclose(vector, m3.encode(["hello world"]).dense[0], atol=1e-6)


def test_openai_embeddings_rejects(client, m3):
    other = client.post("/v1/embeddings", json={"input": "x", "model": "text-embedding-3-small"})
    assert other.status_code == 404 and "not served here" in other.json()["error"]["message"]
    dims = client.post("/v1/embeddings", json={"input": "x", "dimensions": 12})
    assert dims.status_code == 422 and f"{m3.dim}-dimensional" in dims.json()["error"]["message"]
    ids = client.post("/v1/embeddings", json={"input": [[1, 2, 3]]})
    assert ids.status_code == 422 and "token ids" in ids.json()["error"]["message"]
    empty = client.post("/v1/embeddings", json={"input": []})
    assert empty.status_code == 422 and "input is empty" in empty.json()["error"]["message"]


def test_models_lists_the_served_model(client, m3):
    r = client.get("/v1/models")
    assert r.status_code == 200
    assert [m["id"] for m in r.json()["data"]] == [m3.name]


def test_embed_all_outputs_equal_encoder(client, m3):
    r = client.post(
        "/embed", json={"texts": TEXTS, "dense": True, "sparse": True, "colbert": True, "return_tokens": True}
    )
    assert r.status_code == 200, r.text
    data = r.json()["data"]
    expected = m3.encode(TEXTS, return_dense=True, return_sparse=True, return_colbert=True)
    for i, item in enumerate(data):
        assert item["index"] == i and item["truncated"] is False
        assert item["num_tokens"] == expected.num_tokens[i]
        np.testing.assert_allclose(item["dense"], expected.dense[i], atol=1e-6)
        assert item["sparse"], "the test model weights every token"
        assert {int(k): v for k, v in item["sparse"].items()} == pytest.approx(expected.sparse[i], abs=1e-6)
        ids = [int(k) for k in item["sparse"]]
        assert list(item["sparse_tokens"].values()) == m3.token_strings(ids)
        np.testing.assert_allclose(np.array(item["colbert"]), expected.colbert[i], atol=1e-6)


def test_embed_only_requested_outputs_and_truncation(client, m3):
    long_text = " ".join(["retrieval"] * 100)
    r = client.post(
        "/embed",
        json={
            "texts": ["short", long_text],
            "dense": False,
            "sparse": True,
            "max_length": 16,
            "input_type": "query",
        },
    )
    assert r.status_code == 200, r.text
    data = r.json()["data"]
    assert all("dense" not in d and "colbert" not in d and "sparse_tokens" not in d for d in data)
    assert [d["truncated"] for d in data] == [False, True]
    assert data[1]["num_tokens"] == 16


def test_embed_rejects_outputs_the_model_lacks(make_client, tiny_dense):
    client = make_client(encoder=tiny_dense)
    r = client.post("/embed", json={"texts": ["a"], "sparse": True})
    assert r.status_code == 422 and "cannot produce sparse" in r.json()["error"]["message"]
    none = client.post("/embed", json={"texts": ["a"], "dense": False})
    assert none.status_code == 422 and "at least one output" in none.json()["error"]["message"]
    too_long = client.post("/embed", json={"texts": ["a"], "max_length": 10**6})
    assert too_long.status_code == 422 and "max_length" in too_long.json()["error"]["message"]
