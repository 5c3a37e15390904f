"""Web pages cannot use a keyless local server: foreign `Origin` on unsafe methods is refused (cross-site form
posts), unknown `Host` names are refused (DNS rebinding); curl-like clients without `Origin` keep working."""

from __future__ import annotations

import json

import pytest

from m3search.server.web_safety import host_name

DOCS = json.dumps([{"id": "x", "text": "planted by a web page"}]).encode()


@pytest.fixture
def local(client):
    assert client.post("/collections", json={"name": "c"}).status_code == 201
    return client


def test_cross_site_form_post_is_refused_and_stores_nothing(local):
    # What a page on another site can make a browser send: a multipart form post, no preflight.
    r = local.post(
        "/collections/c/documents/upload",
        files={"file": ("docs.json", DOCS)},
        headers={"Origin": "http://evil.example"},
    )
    assert r.status_code == 403, r.text
    assert "http://evil.example" in r.json()["error"]["message"] and r.json()["error"]["type"] == "forbidden"
    for origin in ("null", "http://localhost.evil.example", "https://localhost:1"):
        bad = local.post(
            "/collections/c/documents/upload", files={"file": ("d.json", DOCS)}, headers={"Origin": origin}
        )
        assert bad.status_code == 403, origin
    assert local.delete("/collections/c", headers={"Origin": "http://evil.example"}).status_code == 403
    assert local.get("/collections/c").json()["count"] == 0


def test_same_origin_and_originless_requests_pass(local):
    # The web UI's own requests (same origin) and clients that send no Origin (curl, SDKs).
    same = local.post(
        "/collections/c/documents/upload",
        files={"file": ("d.json", DOCS)},
        headers={"Origin": "http://localhost"},
    )
    assert same.status_code == 200, same.text
    assert local.post("/embed", json={"texts": ["a"]}).status_code == 200
    # Reads are not checked: a cross-origin page cannot read the answer without CORS headers anyway.
    assert local.get("/collections/c", headers={"Origin": "http://evil.example"}).status_code == 200


def test_configured_origin_passes(make_client):
    client = make_client(allowed_origins=("https://app.example.com",))
    ok = client.post("/embed", json={"texts": ["a"]}, headers={"Origin": "https://app.example.com"})
    assert ok.status_code == 200
    other = client.post("/embed", json={"texts": ["a"]}, headers={"Origin": "https://other.example.com"})
    assert other.status_code == 403


@pytest.mark.parametrize("host", ["evil.example", "evil.example:8000", "127.0.0.2", "[::2]:80"])
def test_unknown_host_is_refused(local, host):
    # DNS rebinding: the attacker's name resolves to 127.0.0.1, so the browser sends it as Host.
    r = local.post("/embed", json={"texts": ["a"]}, headers={"Host": host})
    assert r.status_code == 400 and "--allowed-host" in r.json()["error"]["message"]
    assert local.get("/collections/c", headers={"Host": host}).status_code == 400
    # Probes answer under any name.
    assert local.get("/healthz", headers={"Host": host}).status_code == 200


@pytest.mark.parametrize("host", ["localhost", "LOCALHOST:8000", "127.0.0.1:9", "[::1]:8000", "::1"])
def test_loopback_hosts_pass(local, host):
    assert local.get("/collections/c", headers={"Host": host}).status_code == 200


def test_configured_hosts(make_client):
    client = make_client(allowed_hosts=("search.internal",))
    assert client.get("/v1/models", headers={"Host": "search.internal:8000"}).status_code == 200
    assert client.get("/v1/models", headers={"Host": "other.internal"}).status_code == 400
    anything = make_client(allowed_hosts=("*",))
    assert anything.get("/v1/models", headers={"Host": "other.internal"}).status_code == 200


def test_host_name_parsing():
    assert [host_name(h) for h in ("A.b:1", "[::1]:80", "::1", "x")] == ["a.b", "::1", "::1", "x"]
