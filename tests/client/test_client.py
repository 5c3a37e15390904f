"""`m3search.Client` against a real `m3search serve` on loopback: the same results, documents, vectors and
exception types as the in-process library."""

from __future__ import annotations

import asyncio
import uuid
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from m3search import Collection
from m3search.client import AsyncClient, Client
from m3search.errors import (
    AuthenticationError,
    CollectionExistsError,
    CollectionNotFoundError,
    FilterError,
    InvalidInputError,
    ServerError,
)
from m3search.server.process import free_port
from tests.conftest import CORPUS, E5_SERVER_KEY


def _name() -> str:
    return f"c-{uuid.uuid4().hex[:8]}"


@pytest.fixture
def local(tmp_path, e5_bm25) -> Collection:
    """The corpus in an in-process collection of the same model: what the server must answer."""
    col = Collection.create(tmp_path / "local", encoder=e5_bm25(), cache=False)
    for start in range(0, len(CORPUS), 3):  # the requests of `upsert(batch_size=3)` below: BM25 weights
        col.upsert(CORPUS[start : start + 3])  # use the statistics of their time, padding the last digits
    return col


def test_embed_matches_local_encoder(client, e5_encoder):
    texts = ["Wer hat den Super Bowl gewonnen?", "BM25 ranks documents. " * 40, "東京は日本の首都です。"]
    for is_query in (True, False):
        remote = client.embed(
            texts, return_dense=True, return_colbert=True, is_query=is_query, max_length=64, batch_size=2
        )
        local = e5_encoder.encode(
            texts, return_dense=True, return_colbert=True, is_query=is_query, max_length=64
        )
        assert remote.dense.dtype == np.float32 and remote.dense.shape == local.dense.shape
        np.testing.assert_allclose(remote.dense, local.dense, atol=1e-5)
        assert [c.shape for c in remote.colbert] == [c.shape for c in local.colbert]
        for got, want in zip(remote.colbert, local.colbert):
            np.testing.assert_allclose(got, want, atol=1e-5)
        assert remote.num_tokens == local.num_tokens
        assert remote.truncated == local.truncated == [1]
        assert remote.sparse is None


def test_embed_errors_are_library_errors(client):
    with pytest.raises(InvalidInputError, match="sparse"):  # e5 has no sparse head: the server's 422
        client.embed(["hello"], return_dense=False, return_sparse=True)
    with pytest.raises(InvalidInputError, match="index 1"):  # checked before any request
        client.embed(["hello", None])


def test_collection_round_trip_equals_in_process(client, local, e5_server):
    name = _name()
    remote = client.create_collection(name)
    assert remote.upsert(CORPUS, batch_size=3) == len(CORPUS)  # three requests
    assert remote.count() == local.count() == len(CORPUS)

    for query, options in [
        ("What is the capital of Germany?", {}),
        ("How do plants make energy from light?", {"mode": "dense"}),
        ("capital", {"filter": {"topic": "city"}, "fusion": "rrf"}),
        ("search engines", {"mode": "dense+sparse", "weights": (0.7, 0.3, 0.0)}),
        ("capital", {"mode": "all", "candidates": 3, "rerank": 2}),  # ColBERT re-ranks 4 (k) of up to 6
        ("tower", {"filter": '{"year": {"$lt": 1900}}', "mode": "sparse"}),
    ]:
        got = remote.search(query, k=4, **options)
        want = local.search(query, k=4, **options)
        assert [h.id for h in got] == [h.id for h in want], (query, options)
        for g, w in zip(got, want):
            assert g.scores == pytest.approx(w.scores, abs=1e-4)
            assert g.score == pytest.approx(w.score, abs=1e-3)
            assert (g.text, g.metadata, g.kind) == (w.text, w.metadata, w.kind)
    assert remote.search("What is the capital of Germany?", k=1)[0].id == "berlin"

    docs = remote.get(["bge-m3", "nope", "tokyo"])
    assert docs[1] is None
    assert [d.to_dict() for d in docs if d] == [d.to_dict() for d in local.get(["bge-m3", "tokyo"])]

    assert remote.delete(["tokyo", "nope"]) == 1
    assert remote.count() == len(CORPUS) - 1
    assert remote.get("tokyo") == [None]
    assert "tokyo" not in [h.id for h in remote.search("首都", k=10)]

    # reopened: a new client (a new connection) sees the same durable state
    with Client(e5_server.url, api_key=E5_SERVER_KEY) as again:
        reopened = again.collection(name)
        assert reopened.count() == len(CORPUS) - 1
        assert reopened.search("Which tower is in Paris?", k=1)[0].id == "eiffel"
        assert name in [c["name"] for c in again.collections()]
    client.delete_collection(name)


def test_errors_map_to_library_types(client, e5_server):
    missing = client.collection("does-not-exist")
    for call in (missing.count, lambda: missing.search("x"), lambda: missing.get("a")):
        with pytest.raises(CollectionNotFoundError, match="does-not-exist"):
            call()
    name = _name()
    col = client.create_collection(name)
    with pytest.raises(CollectionExistsError, match="already exists"):
        client.create_collection(name)
    col.upsert(CORPUS[:2])
    with pytest.raises(FilterError, match="operator"):  # checked locally, with the library's own message
        col.search("x", filter={"year": {"$near": 3}})
    with pytest.raises(InvalidInputError, match="mode"):  # the server's 422
        col.search("x", mode="fuzzy")
    with pytest.raises(InvalidInputError, match="vectors"):
        col.upsert([{"id": "v", "text": "t", "dense": [0.1] * 384}])
    with pytest.raises(InvalidInputError, match="empty"):
        col.upsert([{"id": "e", "text": "   "}])
    with pytest.raises(InvalidInputError, match="'/'"):  # the server routes GET /documents/a%2Fb nowhere
        col.get(["a/b"])
    assert col.count() == 2  # nothing of the refused batches was written
    for key in (None, "wrong"):
        with (
            Client(e5_server.url, api_key=key) as stranger,
            pytest.raises(AuthenticationError, match="API key"),
        ):
            stranger.collection(name).count()
    with (
        Client(f"http://127.0.0.1:{free_port()}") as nowhere,
        pytest.raises(ServerError, match="cannot reach"),
    ):
        nowhere.collections()
    client.delete_collection(name)


def test_async_client(e5_server, local):
    async def scenario() -> None:
        async with AsyncClient(e5_server.url, api_key=E5_SERVER_KEY) as client:
            col = await client.create_collection(_name())
            assert await col.upsert(CORPUS) == len(CORPUS)
            hits, count = await asyncio.gather(
                col.search("capital", k=3, filter={"lang": {"$in": ["de", "es"]}}), col.count()
            )
            assert count == len(CORPUS)
            want = local.search("capital", k=3, filter={"lang": {"$in": ["de", "es"]}})
            assert [h.id for h in hits] == [h.id for h in want]
            assert [d.id for d in await col.get(["madrid"])] == ["madrid"]
            assert await col.delete("madrid") == 1 and await col.count() == len(CORPUS) - 1
            vectors = await client.embed(["hello"], is_query=True)
            assert vectors.dense.shape == (1, 384)
            with pytest.raises(CollectionNotFoundError):
                await client.collection("nope").count()
            await client.delete_collection(col.name)

    # on a thread of its own: Playwright's sync API (the web UI tests) leaves an event loop running on the main
    # thread, where asyncio.run refuses to start another
    with ThreadPoolExecutor(1) as pool:
        pool.submit(asyncio.run, scenario()).result()
