"""`/similarity` scores each target in every mode the model has, the hybrid mean and a threshold level."""

from __future__ import annotations

import pytest

from m3search.scoring import colbert_score, lexical_score


def _expected(encoder, source, targets, weights=(0.4, 0.2, 0.4)):
    out = encoder.encode(
        [source, *targets], return_dense=True, return_sparse=True, return_colbert=True, is_query=True
    )
    rows = []
    for i in range(1, len(targets) + 1):
        s = {
            "dense": float(out.dense[0] @ out.dense[i]),
            "sparse": lexical_score(out.sparse[0], out.sparse[i]),
            "colbert": colbert_score(out.colbert[0], out.colbert[i]),
        }
        s["hybrid"] = (weights[0] * s["dense"] + weights[1] * s["sparse"] + weights[2] * s["colbert"]) / sum(
            weights
        )
        rows.append(s)
    return rows


def test_scores_per_mode_and_hybrid(client, m3):
    targets = ["Paris is the capital of France.", "Photosynthesis turns light into chemical energy."]
    r = client.post(
        "/similarity",
        json={
            "source": "capital of France",
            "targets": targets,
            "weights": {"dense": 1, "sparse": 0.5, "colbert": 2},
        },
    )
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["modes"] == ["dense", "sparse", "colbert"] and body["level_mode"] == "dense"
    expected = _expected(m3, "capital of France", targets, (1, 0.5, 2))
    for item, exp in zip(body["results"], expected):
        assert item["scores"] == pytest.approx(exp, abs=1e-5)
    assert [item["text"] for item in body["results"]] == targets


def test_level_follows_configured_thresholds(make_client, m3):
    dense = _expected(m3, "alpha", ["beta"])[0]["dense"]
    cases = {
        "very similar": (dense - 0.02, dense - 0.04),
        "related": (dense + 0.01, dense - 0.01),
        "unrelated": (dense + 0.02, dense + 0.01),
    }
    from m3search.server import SimilarityLevels

    for label, (very, related) in cases.items():
        client = make_client(levels=SimilarityLevels(very, related))
        body = client.post("/similarity", json={"source": "alpha", "targets": "beta"}).json()
        assert body["results"][0]["level"] == label
        assert body["thresholds"] == pytest.approx({"very_similar": very, "related": related})


def test_dense_only_model_scores_its_modes(make_client, tiny_dense):
    client = make_client(encoder=tiny_dense)
    body = client.post("/similarity", json={"source": "alpha", "targets": ["beta", "gamma"]}).json()
    assert body["modes"] == ["dense", "colbert"]
    for item in body["results"]:
        s = item["scores"]
        assert set(s) == {"dense", "colbert", "hybrid"}
        assert s["hybrid"] == pytest.approx((0.4 * s["dense"] + 0.4 * s["colbert"]) / 0.8)
    only_sparse = client.post(
        "/similarity",
        json={"source": "a", "targets": "b", "weights": {"dense": 0, "sparse": 1, "colbert": 0}},
    )
    assert only_sparse.status_code == 422 and "no weight" in only_sparse.json()["error"]["message"]


@pytest.mark.parametrize(
    "body, fragment",
    [
        ({"source": "", "targets": "b"}, "source[0] is empty"),
        ({"source": "a", "targets": []}, "targets is empty"),
        ({"source": "a", "targets": ["b", "  "]}, "targets[1] is empty"),
        ({"source": "a", "targets": "b", "weights": {"dense": -1}}, "weights.dense"),
        ({"source": "a"}, "targets: Field required"),
    ],
)
def test_bad_similarity_requests(client, body, fragment):
    r = client.post("/similarity", json=body)
    assert r.status_code == 422
    assert fragment in r.json()["error"]["message"]
