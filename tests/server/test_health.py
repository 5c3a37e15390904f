"""`/healthz`, `/readyz` (model loaded or why not), `/metrics`, and the UI being served."""

from __future__ import annotations

import time

from fastapi.testclient import TestClient

from m3search.server import ServerSettings, create_app
from tests.server.conftest import LOCAL_URL


def test_health_ready_and_model_info(client, m3):
    assert client.get("/healthz").json() == {"status": "ok"}
    ready = client.get("/readyz")
    assert ready.status_code == 200
    body = ready.json()
    assert body["ready"] is True and body["model"] == m3.name
    assert body["info"]["outputs"] == ["dense", "sparse", "colbert"] and body["info"]["dim"] == m3.dim


def test_model_that_fails_to_load_is_reported(tmp_path):
    settings = ServerSettings(model=str(tmp_path / "no-such-model"), collections_dir=tmp_path / "c")
    with TestClient(create_app(settings), base_url=LOCAL_URL) as client:
        assert client.get("/healthz").status_code == 200
        deadline = time.monotonic() + 30
        while (
            "failed" not in (client.get("/readyz").json().get("detail") or "") and time.monotonic() < deadline
        ):
            time.sleep(0.05)
        ready = client.get("/readyz")
        assert ready.status_code == 503 and ready.json()["ready"] is False
        assert "no-such-model" in ready.json()["detail"] and "failed to load" in ready.json()["detail"]
        embed = client.post("/embed", json={"texts": ["a"]})
        assert embed.status_code == 503 and "failed to load" in embed.json()["error"]["message"]


def test_model_loads_in_background(m3_dir, tmp_path):
    settings = ServerSettings(model=str(m3_dir), collections_dir=tmp_path / "c", runtime="torch-fp32")
    with TestClient(create_app(settings), base_url=LOCAL_URL) as client:
        deadline = time.monotonic() + 60
        while client.get("/readyz").status_code != 200 and time.monotonic() < deadline:
            time.sleep(0.1)
        assert client.get("/readyz").json()["model"] == str(m3_dir)
        assert client.post("/embed", json={"texts": ["a"]}).status_code == 200


def test_metrics_count_requests_and_batches(client):
    client.post("/embed", json={"texts": ["a", "b", "c"]})
    client.post("/embed", json={"texts": [""]})
    text = client.get("/metrics").text
    assert 'm3search_http_requests_total{method="POST",route="/embed",status="200"} 1.0' in text
    assert 'm3search_http_requests_total{method="POST",route="/embed",status="422"} 1.0' in text
    assert "m3search_encode_texts_total 3.0" in text
    assert "m3search_encode_batches_total 1.0" in text
    assert "m3search_model_ready 1.0" in text


def test_ui_is_served_without_external_resources(client):
    assert client.get("/", follow_redirects=False).headers["location"] == "/ui/"
    page = client.get("/ui/")
    assert page.status_code == 200 and "Similarity analyzer" in page.text
    for asset in ("/ui/app.js", "/ui/style.css"):
        assert client.get(asset).status_code == 200
    combined = page.text + client.get("/ui/app.js").text + client.get("/ui/style.css").text
    assert "http://" not in combined and "https://" not in combined


def test_openapi_schema_lists_every_endpoint(client):
    paths = client.get("/openapi.json").json()["paths"]
    expected = {
        "/v1/embeddings": {"post"},
        "/v1/models": {"get"},
        "/embed": {"post"},
        "/embed/upload": {"post"},
        "/similarity": {"post"},
        "/collections": {"get", "post"},
        "/collections/{name}": {"get", "delete"},
        "/collections/{name}/documents": {"post"},
        "/collections/{name}/documents/upload": {"post"},
        "/collections/{name}/documents/{doc_id}": {"get", "delete"},
        "/collections/{name}/documents/delete": {"post"},
        "/collections/{name}/search": {"post"},
        "/collections/{name}/search/upload": {"post"},
        "/collections/{name}/thumbnails/{reference}": {"get"},
        "/healthz": {"get"},
        "/readyz": {"get"},
        "/metrics": {"get"},
    }
    assert {path: set(ops) for path, ops in paths.items()} == expected
    # API routes document their error answers; the bearer scheme is declared once.
    assert "422" in paths["/embed"]["post"]["responses"] and "401" in paths["/embed"]["post"]["responses"]
    assert "HTTPBearer" in client.get("/openapi.json").json()["components"]["securitySchemes"]
