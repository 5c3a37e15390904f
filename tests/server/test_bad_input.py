"""Hostile input gets a 4xx naming the problem, never a 500: odd references, huge numbers, deep JSON, extreme
weights, made-up HTTP methods (issue 12, items 7-9)."""

from __future__ import annotations

import math

import pytest


@pytest.fixture
def docs_client(client):
    """A client with collection `c` holding two text documents with numeric metadata."""
    assert client.post("/collections", json={"name": "c"}).status_code == 201
    docs = [
        {"id": "a", "text": "the cat sat on the mat", "metadata": {"n": 1}},
        {"id": "b", "text": "stock markets fell sharply", "metadata": {"n": 2}},
    ]
    assert client.post("/collections/c/documents", json={"documents": docs}).status_code == 200
    return client


@pytest.mark.parametrize("reference", ["²", "١٢", "9" * 5000, "99999999999999999999999", "-1"])
def test_bad_thumbnail_references_are_422(docs_client, reference):
    r = docs_client.get(f"/collections/c/thumbnails/{reference}")
    assert r.status_code == 422, r.text
    assert "is not a thumbnail reference" in r.json()["error"]["message"]


def test_huge_integer_in_a_filter_is_422(docs_client):
    body = '{"query": "cat", "filter": {"n": 1%s}}' % ("0" * 400)
    r = docs_client.post("/collections/c/search", content=body, headers={"content-type": "application/json"})
    assert r.status_code == 422, r.text
    assert "field 'n'" in r.json()["error"]["message"] and "float range" in r.json()["error"]["message"]
    ranged = '{"query": "cat", "filter": {"n": {"$lt": -1%s}}}' % ("0" * 400)
    r = docs_client.post(
        "/collections/c/search", content=ranged, headers={"content-type": "application/json"}
    )
    assert r.status_code == 422, r.text


@pytest.mark.parametrize("name", ["deep.json", "deep.jsonl"])
def test_deeply_nested_upload_is_422(docs_client, name):
    deep = (
        ("[" * 100_000 + "]" * 100_000)
        if name.endswith(".json")
        else '{"id": 1, "m": %s}' % ("[" * 100_000 + "]" * 100_000)
    )
    r = docs_client.post("/collections/c/documents/upload", files={"file": (name, deep.encode())})
    assert r.status_code == 422, r.text
    assert "nested too deeply" in r.json()["error"]["message"] and name in r.json()["error"]["message"]


def test_upload_with_a_5000_digit_number_is_422(docs_client):
    line = '{"id": "x", "text": "t", "metadata": {"n": %s}}' % ("9" * 5000)
    r = docs_client.post("/collections/c/documents/upload", files={"file": ("big.jsonl", line.encode())})
    assert r.status_code == 422, r.text
    assert r.json()["error"]["message"].startswith("big.jsonl:1: JSON this server cannot read")


@pytest.mark.parametrize(
    "body, fragment",
    [("[" * 100_000 + "]" * 100_000, "nested too deeply"), ('{"texts": [%s]}' % ("9" * 5000), "4300 digits")],
)
def test_unreadable_json_body_is_400_naming_why(client, body, fragment):
    r = client.post("/embed", content=body, headers={"content-type": "application/json"})
    assert r.status_code == 400, r.text
    assert fragment in r.json()["error"]["message"]


@pytest.mark.parametrize("weight", [1e308, 1001.0])
def test_huge_weights_are_422(docs_client, weight):
    weights = {"dense": weight, "sparse": weight, "colbert": weight}
    r = docs_client.post("/similarity", json={"source": "a", "targets": "b", "weights": weights})
    assert r.status_code == 422, r.text
    assert "weights.dense" in r.json()["error"]["message"]
    r = docs_client.post("/collections/c/search", json={"query": "cat", "weights": weights})
    assert r.status_code == 422, r.text


def test_largest_weights_give_finite_hybrid_scores(docs_client):
    big = {"dense": 1000, "sparse": 1000, "colbert": 1000}
    sim = docs_client.post("/similarity", json={"source": "cat", "targets": ["mat", "cat"], "weights": big})
    assert sim.status_code == 200, sim.text
    for item in sim.json()["results"]:
        scores = item["scores"]
        assert scores["hybrid"] is not None and math.isfinite(scores["hybrid"])
        assert scores["hybrid"] == pytest.approx((scores["dense"] + scores["sparse"] + scores["colbert"]) / 3)
    search = docs_client.post("/collections/c/search", json={"query": "cat", "weights": big})
    equal = docs_client.post(
        "/collections/c/search", json={"query": "cat", "weights": {"dense": 1, "sparse": 1, "colbert": 1}}
    )
    assert [h["score"] for h in search.json()["results"]] == pytest.approx(
        [h["score"] for h in equal.json()["results"]]
    )
    assert all(h["score"] > 0 for h in search.json()["results"])


def test_made_up_methods_share_one_metrics_label(client):
    before = len(client.get("/metrics").content)
    for i in range(100):
        assert client.request(f"BREW{i}", "/embed").status_code in (400, 405)
    text = client.get("/metrics").text
    assert "BREW" not in text
    assert 'm3search_http_requests_total{method="other",route="/embed",status="405"} 100.0' in text
    # The "other" series exists once: the exposition grew by a few series, not 100 of them.
    assert len(text) - before < 8000
