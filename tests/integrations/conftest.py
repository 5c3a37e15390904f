"""Integration fixtures: an empty collection of the offline e5 model, local or on the live e5 server, and a
way to reopen it (a new `Collection.open`, or a new client)."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from m3search import Collection
from m3search.client import Client
from tests.conftest import E5_SERVER_KEY


@dataclass
class Target:
    """A fresh collection and how to reopen it."""

    collection: Any
    reopen: Callable[[], Any]


@pytest.fixture(params=["local", "remote"])
def target(request, tmp_path, e5_bm25) -> Iterator[Target]:
    """An empty e5 collection (BM25 sparse weights, ColBERT token vectors): in-process or on the server."""
    if request.param == "local":
        path = tmp_path / "col"
        opened = [Collection.create(path, encoder=e5_bm25(), cache=False)]

        def reopen() -> Collection:
            opened[-1].close()
            opened.append(Collection.open(path, encoder=e5_bm25(), cache=False))
            return opened[-1]

        yield Target(opened[0], reopen)
        opened[-1].close()
    else:
        server = request.getfixturevalue("e5_server")
        name = f"it-{uuid.uuid4().hex[:8]}"
        clients = [Client(server.url, api_key=E5_SERVER_KEY)]
        collection = clients[0].create_collection(name)

        def reopen() -> Any:
            clients.append(Client(server.url, api_key=E5_SERVER_KEY))
            return clients[-1].collection(name)

        yield Target(collection, reopen)
        clients[0].delete_collection(name)
        for client in clients:
            client.close()
