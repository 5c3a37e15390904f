"""The official OpenAI client works unchanged against `m3search serve` on loopback."""

from __future__ import annotations

import numpy as np
import openai
import pytest


def test_openai_client_round_trip(live_server, m3):
    client = openai.OpenAI(base_url=live_server.url + "/v1", api_key="unused", max_retries=0)
    texts = ["The capital of France is Paris.", "Die Hauptstadt von Frankreich ist Paris."]
    # The client asks for base64 by default and decodes it; float must give the same vectors.
    default = client.embeddings.create(model=str(m3.path), input=texts)
    floats = client.embeddings.create(model=str(m3.path), input=texts, encoding_format="float")
    expected = m3.encode(texts).dense
    for response in (default, floats):
        assert response.model == m3.name
        assert [d.index for d in response.data] == [0, 1]
        np.testing.assert_allclose(np.array([d.embedding for d in response.data]), expected, atol=1e-5)
        assert response.usage.prompt_tokens == sum(m3.encode(texts).num_tokens)
    assert [m.id for m in client.models.list()] == [m3.name]


def test_openai_client_sees_errors(live_server, m3):
    client = openai.OpenAI(base_url=live_server.url + "/v1", api_key="unused", max_retries=0)
    with pytest.raises(openai.NotFoundError, match="not served here"):
        client.embeddings.create(model="text-embedding-3-small", input="hello")
    with pytest.raises(openai.UnprocessableEntityError, match="input is empty"):
        client.embeddings.create(model=str(m3.path), input=[])
