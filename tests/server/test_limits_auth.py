"""Bearer auth on and off, the body-size limit (413), and clear 422s for malformed requests."""

from __future__ import annotations

import pytest


def test_no_auth_by_default(client):
    assert client.post("/embed", json={"texts": ["a"]}).status_code == 200


def test_api_keys(make_client):
    client = make_client(api_keys=("key-1", "key-2"))
    missing = client.post("/embed", json={"texts": ["a"]})
    assert missing.status_code == 401 and missing.headers["www-authenticate"] == "Bearer"
    assert "missing API key" in missing.json()["error"]["message"]
    wrong = client.post("/embed", json={"texts": ["a"]}, headers={"Authorization": "Bearer nope"})
    assert wrong.status_code == 401 and wrong.json()["error"]["message"] == "invalid API key"
    for key in ("key-1", "key-2"):
        ok = client.post("/v1/embeddings", json={"input": "a"}, headers={"Authorization": f"Bearer {key}"})
        assert ok.status_code == 200
    # Probes and the UI stay open so load balancers and browsers can reach them.
    for path in ("/healthz", "/readyz", "/metrics", "/ui/"):
        assert client.get(path).status_code == 200
    assert client.post("/similarity", json={"source": "a", "targets": "b"}).status_code == 401


def test_body_over_limit_is_413(make_client):
    client = make_client(max_body_bytes=1000)
    r = client.post("/embed", json={"texts": ["x" * 2000]})
    assert r.status_code == 413
    assert "larger than the server's limit of 1000 bytes" in r.json()["error"]["message"]


def test_streamed_body_over_limit_is_413(make_client):
    client = make_client(max_body_bytes=1000)

    def chunks():  # no Content-Length: the limit is enforced while the body streams
        yield b'{"texts": ["'
        for _ in range(20):
            yield b"y" * 100
        yield b'"]}'

    r = client.post("/embed", content=chunks(), headers={"Content-Type": "application/json"})
    assert r.status_code == 413 and r.json()["error"]["type"] == "request_too_large"


def test_too_many_inputs_is_422(make_client):
    client = make_client(max_inputs=4)
    r = client.post("/embed", json={"texts": ["a"] * 5})
    assert r.status_code == 422
    assert "at most 4 per request" in r.json()["error"]["message"]
    assert client.post("/embed", json={"texts": ["a"] * 4}).status_code == 200


@pytest.mark.parametrize(
    "content, headers, fragment",
    [
        (b'{"texts": ["a"', {"Content-Type": "application/json"}, "not valid JSON"),
        (b'["a", "b"]', {"Content-Type": "application/json"}, "must be a JSON object"),
        (b'{"texts": ["a"]}', {"Content-Type": "text/plain"}, "Content-Type: application/json"),
        (b"", {"Content-Type": "application/json"}, "body is missing"),
        (b'{"texts": [1, 2]}', {"Content-Type": "application/json"}, "texts"),
        (b'{"texts": ["a"], "dense": "maybe"}', {"Content-Type": "application/json"}, "dense"),
        (b'{"texts": ["a"], "colour": true}', {"Content-Type": "application/json"}, "colour: Extra inputs"),
        (b'{"texts": ["a"], "max_length": 1}', {"Content-Type": "application/json"}, "max_length"),
        (b'{"texts": ["a"], "chunking": "split"}', {"Content-Type": "application/json"}, "chunking"),
    ],
)
def test_malformed_requests_are_422_with_a_message(client, content, headers, fragment):
    r = client.post("/embed", content=content, headers=headers)
    assert r.status_code == 422, r.text
    error = r.json()["error"]
    assert error["type"] == "invalid_request_error" and fragment in error["message"]


def test_unknown_route_and_method(client):
    assert client.get("/nope").json()["error"]["type"] == "not_found"
    assert client.get("/embed").status_code == 405
