"""Collections over HTTP: lifecycle, documents (JSON, uploads), search in every mode, highlighting, errors."""

from __future__ import annotations

import json
import threading
import time

import numpy as np
import pytest

DOCS = [
    {
        "id": "en-1",
        "text": "The Eiffel Tower is in Paris, the capital of France.",
        "metadata": {"lang": "en"},
    },
    {"id": "en-2", "text": "Photosynthesis converts light into chemical energy.", "metadata": {"lang": "en"}},
    {"id": "de-1", "text": "Der Eiffelturm steht in Paris.", "metadata": {"lang": "de"}},
    {
        "id": "de-2",
        "text": "Photosynthese wandelt Licht in chemische Energie um.",
        "metadata": {"lang": "de"},
    },
    {"id": 7, "text": "Tokyo is the capital of Japan.", "metadata": {"lang": "en", "year": 2020}},
]


@pytest.fixture
def filled(client):
    """A client with collection `docs` holding DOCS."""
    assert client.post("/collections", json={"name": "docs"}).status_code == 201
    r = client.post("/collections/docs/documents", json={"documents": DOCS})
    assert r.status_code == 200, r.text
    return client


def test_lifecycle(client, m3):
    created = client.post("/collections", json={"name": "my-docs_1.0"})
    assert created.status_code == 201, created.text
    info = created.json()
    assert info["name"] == "my-docs_1.0" and info["count"] == 0
    assert info["outputs"] == ["dense", "sparse", "colbert"]
    again = client.post("/collections", json={"name": "my-docs_1.0"})
    assert again.status_code == 409 and "already exists" in again.json()["error"]["message"]
    assert [c["name"] for c in client.get("/collections").json()["collections"]] == ["my-docs_1.0"]
    stats = client.get("/collections/my-docs_1.0").json()
    assert stats["count"] == 0 and stats["tombstones"] == 0 and stats["size_bytes"] > 0
    assert client.delete("/collections/my-docs_1.0").json() == {"deleted": 1}
    assert client.get("/collections").json()["collections"] == []
    assert client.delete("/collections/my-docs_1.0").status_code == 404


def test_dense_only_collection(client):
    r = client.post("/collections", json={"name": "d", "outputs": ["dense"], "dense_index": "flat"})
    assert r.status_code == 201 and r.json()["outputs"] == ["dense"] and r.json()["dense_index"] == "flat"
    client.post("/collections/d/documents", json={"documents": DOCS[:2]})
    bad = client.post("/collections/d/search", json={"query": "x", "mode": "sparse"})
    assert bad.status_code == 422 and "sparse" in bad.json()["error"]["message"]
    ok = client.post("/collections/d/search", json={"query": "Paris", "highlight": True})
    assert ok.status_code == 200 and ok.json()["mode"] == "dense"
    assert all("matched_tokens" not in hit for hit in ok.json()["results"])


@pytest.mark.parametrize("name", ["../escape", "a/b", ".hidden", "-dash", "x" * 65, "a b", "ü"])
def test_unsafe_names_are_rejected(client, tmp_path, name):
    r = client.post("/collections", json={"name": name})
    assert r.status_code == 422 and "invalid collection name" in r.json()["error"]["message"]
    assert not (tmp_path / "escape").exists()


@pytest.mark.parametrize(
    "path", ["/collections/%2E%2E", "/collections/..%2Fescape", "/collections/.%2E/documents/x"]
)
def test_traversal_in_urls_never_leaves_the_directory(client, path):
    r = client.get(path)
    assert r.status_code in (404, 422)
    if r.status_code == 422:
        assert "invalid collection name" in r.json()["error"]["message"]


def test_unknown_collection_is_404_everywhere(client):
    for method, path, body in [
        ("GET", "/collections/nope", None),
        ("DELETE", "/collections/nope", None),
        ("POST", "/collections/nope/documents", {"documents": DOCS[:1]}),
        ("GET", "/collections/nope/documents/1", None),
        ("DELETE", "/collections/nope/documents/1", None),
        ("POST", "/collections/nope/documents/delete", {"ids": ["1"]}),
        ("POST", "/collections/nope/search", {"query": "x"}),
    ]:
        r = client.request(method, path, json=body)
        assert r.status_code == 404, (method, path, r.text)
        assert "nope" in r.json()["error"]["message"]


def test_documents_get_and_delete(filled):
    assert filled.get("/collections/docs").json()["count"] == 5
    doc = filled.get("/collections/docs/documents/7").json()
    assert doc == {
        "id": "7",
        "kind": "text",
        "text": DOCS[4]["text"],
        "metadata": {"lang": "en", "year": 2020},
        "thumbnail_url": None,
    }
    assert filled.get("/collections/docs/documents/missing").status_code == 404
    # Upsert replaces by id.
    filled.post(
        "/collections/docs/documents", json={"documents": [{"id": "7", "text": "Kyoto was the capital."}]}
    )
    assert filled.get("/collections/docs/documents/7").json()["text"] == "Kyoto was the capital."
    assert filled.delete("/collections/docs/documents/7").json() == {"deleted": 1}
    assert filled.delete("/collections/docs/documents/7").status_code == 404
    r = filled.post("/collections/docs/documents/delete", json={"ids": ["en-1", "de-1", "unknown"]})
    assert r.json() == {"deleted": 2}
    assert filled.get("/collections/docs").json()["count"] == 2


def test_bad_documents_are_422(filled):
    cases = [
        ({"documents": []}, "documents is empty"),
        ({"documents": [{"id": "x", "text": "  "}]}, "empty text"),
        ({"documents": [{"text": "no id"}]}, "documents.0.id"),
        ({"documents": [{"id": "x", "text": "t", "metadata": [1]}]}, "metadata"),
    ]
    for body, fragment in cases:
        r = filled.post("/collections/docs/documents", json=body)
        assert r.status_code == 422 and fragment in r.json()["error"]["message"], r.text
    assert filled.get("/collections/docs").json()["count"] == 5


def test_upload_jsonl_and_json(client):
    client.post("/collections", json={"name": "up"})
    jsonl = "\n".join(json.dumps(d) for d in DOCS[:3]) + "\n\n"
    r = client.post(
        "/collections/up/documents/upload", files={"file": ("docs.jsonl", jsonl, "application/jsonl")}
    )
    assert r.status_code == 200, r.text
    assert r.json() == {"upserted": 3, "count": 3}
    r = client.post(
        "/collections/up/documents/upload",
        files={"file": ("docs.json", json.dumps(DOCS[3:]), "application/json")},
    )
    assert r.json() == {"upserted": 2, "count": 5}
    bad = "\n".join([json.dumps(DOCS[0]), "{not json", json.dumps(DOCS[1])])
    r = client.post(
        "/collections/up/documents/upload", files={"file": ("bad.jsonl", bad, "application/jsonl")}
    )
    assert r.status_code == 422 and "bad.jsonl:2: not valid JSON" in r.json()["error"]["message"]
    r = client.post(
        "/collections/up/documents/upload", files={"file": ("x.jsonl", '{"id": "a"}\n', "application/jsonl")}
    )
    assert (
        r.status_code == 422
        and "line 1: document: Value error, a document needs a text" in r.json()["error"]["message"]
    )
    r = client.post(
        "/collections/up/documents/upload", files={"file": ("x.jsonl", b"\xff\xfe", "text/plain")}
    )
    assert r.status_code == 422 and "not UTF-8" in r.json()["error"]["message"]


def test_upsert_limit(make_client):
    client = make_client(max_upsert_docs=2)
    client.post("/collections", json={"name": "small"})
    r = client.post("/collections/small/documents", json={"documents": DOCS[:3]})
    assert r.status_code == 422 and "at most 2" in r.json()["error"]["message"]


def test_search_dense_scores_equal_encoder(filled, m3):
    r = filled.post("/collections/docs/search", json={"query": "capital of France", "mode": "dense", "k": 3})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["mode"] == "dense" and len(body["results"]) == 3
    q = m3.encode_queries(["capital of France"]).dense[0]
    texts = {str(d["id"]): d["text"] for d in DOCS}
    expected = {i: float(q @ m3.encode_documents([t]).dense[0]) for i, t in texts.items()}
    best = sorted(expected, key=expected.get, reverse=True)[:3]
    assert [h["id"] for h in body["results"]] == best
    for hit in body["results"]:
        assert hit["score"] == pytest.approx(expected[hit["id"]], abs=1e-4)
        assert hit["text"] == texts[hit["id"]]


def test_colbert_storage_is_chosen_at_creation(client):
    """A binary ColBERT collection re-checking every candidate with its float16 copies scores MaxSim exactly like
    a float16 one; the storage is reported back, and bad settings are refused by name."""
    created = {}
    for name, options in [
        ("f16", {}),
        ("bin", {"colbert_dtype": "binary", "colbert_recheck": len(DOCS), "colbert_prune": "punctuation"}),
    ]:
        prune = {"colbert_prune": "punctuation"}
        r = client.post("/collections", json={"name": name, **prune, **options})
        assert r.status_code == 201, r.text
        created[name] = r.json()
        assert client.post(f"/collections/{name}/documents", json={"documents": DOCS}).status_code == 200
    assert [created["bin"][k] for k in ("colbert_dtype", "colbert_recheck", "colbert_prune")] == [
        "binary",
        len(DOCS),
        "punctuation",
    ]
    assert created["f16"]["colbert_dtype"] == "float16"
    assert client.get("/collections/bin").json()["colbert_dtype"] == "binary"
    query = {"query": "capital of France", "mode": "colbert", "k": len(DOCS)}
    hits = {n: client.post(f"/collections/{n}/search", json=query).json()["results"] for n in created}
    assert [h["id"] for h in hits["bin"]] == [h["id"] for h in hits["f16"]]
    assert [h["score"] for h in hits["bin"]] == pytest.approx([h["score"] for h in hits["f16"]], abs=1e-6)

    bad_dtype = client.post("/collections", json={"name": "x", "colbert_dtype": "int4"})
    assert bad_dtype.status_code == 422 and "colbert_dtype" in bad_dtype.text
    pointless = client.post("/collections", json={"name": "y", "colbert_recheck": 10})
    assert pointless.status_code in (400, 422) and "colbert_recheck" in pointless.json()["error"]["message"]
    assert client.get("/collections/y").status_code == 404  # nothing half-created


def test_search_hybrid_filter_fusion_weights(filled):
    default = filled.post("/collections/docs/search", json={"query": "Paris"}).json()
    assert default["mode"] == "all"
    assert set(default["results"][0]["scores"]) == {"dense", "sparse", "colbert"}
    de = filled.post("/collections/docs/search", json={"query": "Paris", "filter": {"lang": "de"}}).json()
    assert {h["id"] for h in de["results"]} == {"de-1", "de-2"}
    rrf = filled.post(
        "/collections/docs/search", json={"query": "Paris", "fusion": "rrf", "mode": "dense+sparse"}
    )
    assert rrf.status_code == 200 and rrf.json()["results"][0]["score"] <= 2 / 61
    dense_only = filled.post(
        "/collections/docs/search",
        json={
            "query": "Paris",
            "mode": "dense+sparse",
            "weights": {"dense": 1, "sparse": 0, "colbert": 0},
            "normalize": "none",  # the reference formula: the raw weighted mean
        },
    ).json()
    for hit in dense_only["results"]:
        assert hit["score"] == pytest.approx(hit["scores"]["dense"], abs=1e-5)
    dbsf = filled.post("/collections/docs/search", json={"query": "Paris", "fusion": "dbsf"})
    assert dbsf.status_code == 200 and all(0 <= h["score"] <= 1 for h in dbsf.json()["results"])
    shallow = filled.post(
        "/collections/docs/search",
        json={"query": "Paris", "mode": "colbert", "k": 2, "candidates": 5, "rerank": 1},
    ).json()["results"]
    dense = filled.post("/collections/docs/search", json={"query": "Paris", "mode": "dense", "k": 2}).json()
    # never fewer than k: ColBERT ranks the dense top-2 (the depth is at least k)
    assert {h["id"] for h in shallow} == {h["id"] for h in dense["results"]}
    for bad in ({"fusion": "borda"}, {"normalize": "zscore"}, {"candidates": 0}, {"rerank": 0}):
        response = filled.post("/collections/docs/search", json={"query": "Paris", **bad})
        assert response.status_code == 422, bad


def test_search_errors(filled, make_client):
    for body, fragment in [
        ({"query": " "}, "query is empty"),
        ({"query": "x", "k": 0}, "k"),
        ({"query": "x", "filter": {"lang": {"$regex": "x"}}}, "$regex"),
        ({"query": "x", "mode": "hybrid"}, "mode"),
    ]:
        r = filled.post("/collections/docs/search", json=body)
        assert r.status_code == 422 and fragment in r.json()["error"]["message"], r.text
    capped = make_client(max_k=5)
    capped.post("/collections", json={"name": "c"})
    r = capped.post("/collections/c/search", json={"query": "x", "k": 6})
    assert r.status_code == 422 and "limit of 5" in r.json()["error"]["message"]


def test_highlight_marks_query_tokens_found_in_results(filled, m3):
    query = "Photosynthesis energy Paris"
    body = filled.post("/collections/docs/search", json={"query": query, "highlight": True, "k": 5}).json()
    q_sparse = m3.encode_queries([query], return_dense=False, return_sparse=True).sparse[0]
    backend = m3.tokenizer.backend_tokenizer
    assert any(hit["matched_tokens"] for hit in body["results"])
    for hit in body["results"]:
        doc_ids = set(backend.encode(hit["text"], add_special_tokens=False).ids)
        expected = {t for t, w in q_sparse.items() if w > 0 and t in doc_ids}
        assert {m["token_id"] for m in hit["matched_tokens"]} == expected
        for m in hit["matched_tokens"]:
            assert m["weight"] == pytest.approx(q_sparse[m["token_id"]], abs=1e-6)
            assert m["spans"], m
            for start, end in m["spans"]:
                assert hit["text"][start:end].strip() == m["token"]


def test_bm25_collection_for_a_model_without_sparse_head(make_client, tiny_dense):
    client = make_client(encoder=tiny_dense)
    info = client.post("/collections", json={"name": "bm25"}).json()
    assert info["outputs"] == ["dense", "sparse", "colbert"]
    client.post("/collections/bm25/documents", json={"documents": DOCS})
    body = client.post(
        "/collections/bm25/search", json={"query": "PHOTOSYNTHESIS", "mode": "sparse", "highlight": True}
    ).json()
    assert body["results"][0]["id"] == "en-2"
    top = body["results"][0]
    assert top["scores"]["sparse"] > 0
    backend = tiny_dense.tokenizer.backend_tokenizer  # BM25 lowercases, then tokenizes
    query_ids = set(backend.encode("photosynthesis", add_special_tokens=False).ids)
    doc_ids = set(backend.encode(top["text"].lower(), add_special_tokens=False).ids)
    assert {m["token_id"] for m in top["matched_tokens"]} == query_ids & doc_ids != set()
    for m in top["matched_tokens"]:
        assert m["spans"]
        for start, end in m["spans"]:
            assert top["text"][start:end].lower().strip() == m["token"].lower()
    assert all(r["id"] != "en-1" for r in body["results"])


def test_collections_need_the_api_key(make_client):
    client = make_client(api_keys=("k",))
    assert client.get("/collections").status_code == 401
    assert client.get("/collections", headers={"Authorization": "Bearer k"}).status_code == 200


def test_collections_survive_a_restart(make_client, m3, tmp_path):
    first = make_client()
    first.post("/collections", json={"name": "keep"})
    first.post("/collections/keep/documents", json={"documents": DOCS})
    first.__exit__(None, None, None)  # shut the app down: closes collections, releases the writer lock
    second = make_client()
    assert second.get("/collections/keep").json()["count"] == 5
    hits = second.post("/collections/keep/search", json={"query": "Japan", "k": 5}).json()["results"]
    assert {h["id"] for h in hits} == {str(d["id"]) for d in DOCS}
    assert np.isfinite([h["score"] for h in hits]).all()


def test_documents_are_encoded_through_the_batcher(client, m3):
    """The server encodes uploads itself (model calls stay in one queue); the collection only writes them."""
    client.post("/collections", json={"name": "batched"})
    before = _metric(client, "m3search_encode_texts_total")
    client.post("/collections/batched/documents", json={"documents": DOCS})
    assert _metric(client, "m3search_encode_texts_total") - before == len(DOCS)
    hits = client.post(
        "/collections/batched/search", json={"query": DOCS[1]["text"], "mode": "dense", "k": 1}
    )
    top = hits.json()["results"][0]
    assert top["id"] == "en-2"
    expected = float(
        m3.encode_queries([DOCS[1]["text"]]).dense[0] @ m3.encode_documents([DOCS[1]["text"]]).dense[0]
    )
    assert top["score"] == pytest.approx(expected, abs=1e-4)


def _metric(client, name: str) -> float:
    line = next(x for x in client.get("/metrics").text.splitlines() if x.startswith(name + " "))
    return float(line.split()[1])


def test_qdrant_and_edge_collections_are_served_beside_local_ones(make_client, m3, tmp_path):
    """A link directory in the collections folder serves a Qdrant collection like a local one, and so does an
    edge collection's directory: listed, written through the batcher, searched with the same results as a
    local twin, deleted."""
    from m3search import Collection
    from m3search.store.backends.qdrant import write_link

    root = tmp_path / "collections"
    with Collection.create("remote", backend="qdrant", path=tmp_path / "qdrant", encoder=m3, cache=False):
        pass
    write_link(root / "remote", "remote", path=tmp_path / "qdrant")
    Collection.create(root / "edge", backend="edge", encoder=m3, cache=False).close()
    client = make_client()
    client.post("/collections", json={"name": "local"})
    names = ["edge", "local", "remote"]
    assert [c["name"] for c in client.get("/collections").json()["collections"]] == names
    before = _metric(client, "m3search_encode_texts_total")
    for name in names:
        r = client.post(f"/collections/{name}/documents", json={"documents": DOCS})
        assert r.status_code == 200 and r.json() == {"upserted": len(DOCS), "count": len(DOCS)}
    assert _metric(client, "m3search_encode_texts_total") - before == 3 * len(DOCS)
    for body in ({"query": "Japan", "k": 5}, {"query": "Paris", "mode": "dense+sparse", "fusion": "rrf"}):
        local = client.post("/collections/local/search", json=body).json()["results"]
        for name in ("remote", "edge"):
            remote = client.post(f"/collections/{name}/search", json=body).json()["results"]
            assert [h["id"] for h in remote] == [h["id"] for h in local], name
            # fused over min-max scaled scores, which magnify Qdrant's float sums (tests/store/test_backends.py)
            assert [h["score"] for h in remote] == pytest.approx([h["score"] for h in local], abs=2e-3)
    for name in ("remote", "edge"):
        doc = client.get(f"/collections/{name}/documents/{DOCS[0]['id']}").json()
        assert doc["text"] == DOCS[0]["text"]
        assert client.get(f"/collections/{name}").json()["count"] == len(DOCS)
    assert client.delete("/collections/edge").json() == {"deleted": 1}
    assert not (root / "edge").exists() and client.get("/collections/edge").status_code == 404


def test_deleting_a_collection_in_use_gives_no_5xx(filled):
    """Requests racing a DELETE of their collection finish or get a clean 404/409, and the listing keeps
    answering 200 meanwhile."""
    client = filled
    stop = threading.Event()
    seen: list[tuple[str, int, str]] = []

    def hammer(worker: int) -> None:
        calls = [
            ("search", lambda: client.post("/collections/docs/search", json={"query": "Paris", "k": 3})),
            (
                "upsert",
                lambda: client.post(
                    "/collections/docs/documents",
                    json={"documents": [{"id": f"w{worker}", "text": "Paris in the spring"}]},
                ),
            ),
            ("get", lambda: client.get("/collections/docs/documents/en-1")),
            ("stats", lambda: client.get("/collections/docs")),
            ("list", lambda: client.get("/collections")),
        ]
        i = worker
        while not stop.is_set():
            kind, call = calls[i % len(calls)]
            try:
                r = call()
                seen.append((kind, r.status_code, r.text[:200]))
            except Exception as exc:  # noqa: BLE001 -- the test client re-raises what the server did not handle: a 500
                seen.append((kind, 500, repr(exc)[:200]))
            i += 1

    threads = [threading.Thread(target=hammer, args=(w,)) for w in range(4)]
    for t in threads:
        t.start()
    deadline = time.monotonic() + 20
    while len(seen) < 40 and time.monotonic() < deadline:
        time.sleep(0.01)
    deleted = client.delete("/collections/docs")
    after = len(seen)
    while len(seen) < after + 40 and time.monotonic() < deadline:
        time.sleep(0.01)
    stop.set()
    for t in threads:
        t.join()
    assert deleted.status_code == 200, deleted.text
    assert len(seen) >= after + 40, "the requests after the delete did not run"
    bad = [s for s in seen if s[1] >= 500 or s[1] not in (200, 404, 409)]
    assert not bad, bad[:5]
    assert all(code == 200 for kind, code, _ in seen if kind == "list")
    assert {kind for kind, code, _ in seen[after:] if code == 404} >= {"search", "get"}
    assert client.get("/collections").json()["collections"] == []


def test_a_broken_collection_is_listed_as_broken(client, tmp_path):
    assert client.post("/collections", json={"name": "good"}).status_code == 201
    broken = tmp_path / "collections" / "bad"
    broken.mkdir()
    (broken / "config.json").write_text("{not json")
    r = client.get("/collections")
    assert r.status_code == 200, r.text
    assert [c["name"] for c in r.json()["collections"]] == ["good"]
    assert [b["name"] for b in r.json()["broken"]] == ["bad"]
    assert "config.json" in r.json()["broken"][0]["error"]


@pytest.mark.parametrize("warm", [True, False])
def test_the_catalog_warms_a_collection_when_it_opens_it(tmp_path, monkeypatch, warm):
    """`serve --warm` (the default): a collection's search files are read into free memory when the server
    first opens it, once."""
    from m3search import Collection
    from m3search.server.catalog import Catalog
    from m3search.store import collection as collection_module

    made = Collection.create(tmp_path / "vectors", dim=4, outputs=["dense"], flush_docs=2, cache=False)
    made.upsert([{"id": str(i), "dense": np.eye(4)[i % 4] + i} for i in range(5)])
    expected = made.backend.search_files()
    made.close()
    started = []

    def recorded(paths, budget=None):
        started.append(paths)
        return real(paths, budget)

    real = collection_module.warm_files
    monkeypatch.setattr(collection_module, "warm_files", recorded)
    catalog = Catalog(tmp_path, warm=warm)
    try:
        catalog.get("vectors")
        catalog.get("vectors")
    finally:
        catalog.close()
    assert started == ([expected] if warm else [])
    assert any(p.name == "dense.npy" for p in expected)


@pytest.mark.parametrize("warm", [True, False])
def test_collection_stats_say_how_far_the_warm_up_is(make_client, tmp_path, warm):
    """With `--warm` (the default) `GET /collections/{name}` and the list report the warm-up of a collection
    the server opened, until every byte of its search files is read; nothing with `--no-warm`, nor for a
    collection the server created (its files are fresh)."""
    from m3search import Collection

    made = Collection.create(
        tmp_path / "collections" / "vectors", dim=4, outputs=["dense"], flush_docs=2, cache=False
    )
    made.upsert([{"id": str(i), "dense": np.eye(4)[i % 4] + i} for i in range(5)])
    planned = sum(p.stat().st_size for p in made.backend.search_files())
    made.close()
    client = make_client(warm=warm)
    first = client.get("/collections/vectors")
    assert first.status_code == 200, first.text
    if not warm:
        assert first.json()["warm_up"] is None
        return
    assert first.json()["warm_up"]["state"] in ("waiting", "reading", "done")
    deadline = time.monotonic() + 30
    while (progress := client.get("/collections/vectors").json()["warm_up"])["state"] != "done":
        assert time.monotonic() < deadline, progress
        time.sleep(0.05)
    assert progress == {"state": "done", "planned_bytes": planned, "read_bytes": planned}
    assert client.post("/collections", json={"name": "fresh", "outputs": ["dense"]}).status_code == 201
    assert client.get("/collections/fresh").json()["warm_up"] is None
    listed = {c["name"]: c["warm_up"] for c in client.get("/collections").json()["collections"]}
    assert listed == {"fresh": None, "vectors": progress}
