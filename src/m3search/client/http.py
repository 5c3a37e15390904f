"""`Client` and `AsyncClient`: a running `m3search serve` used like the in-process library.

`client.collection("papers")` behaves like a `Collection` (search, upsert, delete, get, count) and `embed`
returns the `EncodeResult` a local encoder returns; errors are the same `m3search.errors` types. Both clients
drive the same operation plans (`m3search.client.plans`) over httpx; neither imports the model runtime.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from m3search.client import plans
from m3search.client.plans import Plan, Request
from m3search.encoders.base import Chunking, EncodeResult
from m3search.errors import ServerError
from m3search.extras import require
from m3search.search.results import Hit
from m3search.store.documents import Document

if TYPE_CHECKING:
    import httpx
else:
    httpx = require("httpx", "client", "m3search.Client")

DEFAULT_URL = "http://127.0.0.1:8000"


def _headers(api_key: str | None) -> dict[str, str]:
    return {"Authorization": f"Bearer {api_key}"} if api_key else {}


def _unreachable(url: str, exc: httpx.TransportError) -> ServerError:
    return ServerError(f"cannot reach the m3search server at {url}: {exc or type(exc).__name__}")


class Client:
    """A synchronous client of an m3search server; `api_key` is one of the server's `--api-key`s."""

    def __init__(self, url: str = DEFAULT_URL, api_key: str | None = None, *, timeout: float = 120.0) -> None:
        self.url = url.rstrip("/")
        self._http = httpx.Client(base_url=self.url, headers=_headers(api_key), timeout=timeout)

    def _send(self, request: Request) -> Any:
        try:
            response = self._http.request(request.method, request.path, json=request.json)
        except httpx.TransportError as exc:
            raise _unreachable(self.url, exc) from exc
        return plans.answer(request, response.status_code, response.content)

    def _run(self, plan: Plan) -> Any:
        """Drive an operation plan: send each request it yields, hand it the answer, return its result."""
        try:
            request = next(plan)
            while True:
                request = plan.send(self._send(request))
        except StopIteration as done:
            return done.value

    def collection(self, name: str) -> RemoteCollection:
        """A handle on the server's collection `name` (no request is made until it is used)."""
        return RemoteCollection(self, name)

    def create_collection(
        self,
        name: str,
        *,
        outputs: Sequence[str] | None = None,
        dense_index: str = "hnsw",
        max_length: int | None = None,
        images: bool = False,
    ) -> RemoteCollection:
        """Create an empty collection for the served model (`CollectionExistsError` if the name is taken)."""
        self._run(plans.create_collection(name, outputs, dense_index, max_length, images))
        return RemoteCollection(self, name)

    def delete_collection(self, name: str) -> None:
        """Delete a collection and its files."""
        self._run(plans.delete_collection(name))

    def collections(self) -> list[dict[str, Any]]:
        """Every collection: name, count, model, outputs, sizes."""
        return self._run(plans.list_collections())

    def info(self) -> dict[str, Any]:
        """The served model and its description (dims, outputs, runtime)."""
        return self._run(plans.info())

    def embed(
        self,
        texts: str | Sequence[str],
        *,
        batch_size: int = 64,
        max_length: int | None = None,
        return_dense: bool = True,
        return_sparse: bool = False,
        return_colbert: bool = False,
        chunking: Chunking = "truncate",
        is_query: bool = False,
    ) -> EncodeResult:
        """The served model's outputs for `texts`, as `TextEncoder.encode` returns them."""
        return self._run(
            plans.embed(
                texts,
                batch_size=batch_size,
                max_length=max_length,
                return_dense=return_dense,
                return_sparse=return_sparse,
                return_colbert=return_colbert,
                chunking=chunking,
                is_query=is_query,
            )
        )

    def close(self) -> None:
        """Close the connection pool."""
        self._http.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class RemoteCollection:
    """A server collection with `Collection`'s interface (`Client.collection`)."""

    def __init__(self, client: Client, name: str) -> None:
        self.client = client
        self.name = name

    def __repr__(self) -> str:
        return f"RemoteCollection({self.client.url!r}, {self.name!r})"

    def search(
        self,
        query: str | None = None,
        k: int = 10,
        *,
        image: Any = None,
        kinds: Sequence[str] | str | None = None,
        mode: str | None = None,
        weights: Sequence[float] | Mapping[str, float] | None = None,
        fusion: str = "weighted",
        filter: str | Mapping[str, Any] | None = None,
        candidates: int | None = None,
        rerank: int | None = None,
    ) -> list[Hit]:
        """The `k` best documents, as `Collection.search` (the server encodes the query; None: the
        collection's defaults)."""
        return self.client._run(
            plans.search(
                self.name,
                query,
                k,
                image=image,
                kinds=kinds,
                mode=mode,
                weights=weights,
                fusion=fusion,
                filter=filter,
                candidates=candidates,
                rerank=rerank,
            )
        )

    def upsert(self, documents: Iterable[Document | Mapping[str, Any]], *, batch_size: int = 256) -> int:
        """Insert or replace documents by id (`batch_size` per request, each durable); how many were written."""
        return self.client._run(plans.upsert(self.name, documents, batch_size))

    def delete(self, ids: str | int | Iterable[str | int]) -> int:
        """Delete documents by id; returns how many existed."""
        return self.client._run(plans.delete(self.name, ids))

    def get(self, ids: str | int | Iterable[str | int]) -> list[Document | None]:
        """The stored documents for `ids`, in order; None where an id is unknown."""
        return self.client._run(plans.get(self.name, ids))

    def count(self) -> int:
        """Number of documents."""
        return self.client._run(plans.count(self.name))

    def stats(self) -> dict[str, Any]:
        """Counts and sizes (the server's collection statistics)."""
        return self.client._run(plans.stats(self.name))

    def thumbnail(self, reference: str | int) -> bytes | None:
        """JPEG bytes of a document's or hit's thumbnail; None when gone."""
        return self.client._run(plans.thumbnail(self.name, reference))


class AsyncClient:
    """The asyncio twin of `Client`: the same operations, awaited."""

    def __init__(self, url: str = DEFAULT_URL, api_key: str | None = None, *, timeout: float = 120.0) -> None:
        self.url = url.rstrip("/")
        self._http = httpx.AsyncClient(base_url=self.url, headers=_headers(api_key), timeout=timeout)

    async def _send(self, request: Request) -> Any:
        try:
            response = await self._http.request(request.method, request.path, json=request.json)
        except httpx.TransportError as exc:
            raise _unreachable(self.url, exc) from exc
        return plans.answer(request, response.status_code, response.content)

    async def _run(self, plan: Plan) -> Any:
        try:
            request = next(plan)
            while True:
                request = plan.send(await self._send(request))
        except StopIteration as done:
            return done.value

    def collection(self, name: str) -> AsyncRemoteCollection:
        """A handle on the server's collection `name` (no request is made until it is used)."""
        return AsyncRemoteCollection(self, name)

    async def create_collection(
        self,
        name: str,
        *,
        outputs: Sequence[str] | None = None,
        dense_index: str = "hnsw",
        max_length: int | None = None,
        images: bool = False,
    ) -> AsyncRemoteCollection:
        """Create an empty collection for the served model (`CollectionExistsError` if the name is taken)."""
        await self._run(plans.create_collection(name, outputs, dense_index, max_length, images))
        return AsyncRemoteCollection(self, name)

    async def delete_collection(self, name: str) -> None:
        """Delete a collection and its files."""
        await self._run(plans.delete_collection(name))

    async def collections(self) -> list[dict[str, Any]]:
        """Every collection: name, count, model, outputs, sizes."""
        return await self._run(plans.list_collections())

    async def info(self) -> dict[str, Any]:
        """The served model and its description (dims, outputs, runtime)."""
        return await self._run(plans.info())

    async def embed(
        self,
        texts: str | Sequence[str],
        *,
        batch_size: int = 64,
        max_length: int | None = None,
        return_dense: bool = True,
        return_sparse: bool = False,
        return_colbert: bool = False,
        chunking: Chunking = "truncate",
        is_query: bool = False,
    ) -> EncodeResult:
        """The served model's outputs for `texts`, as `TextEncoder.encode` returns them."""
        return await self._run(
            plans.embed(
                texts,
                batch_size=batch_size,
                max_length=max_length,
                return_dense=return_dense,
                return_sparse=return_sparse,
                return_colbert=return_colbert,
                chunking=chunking,
                is_query=is_query,
            )
        )

    async def aclose(self) -> None:
        """Close the connection pool."""
        await self._http.aclose()

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()


class AsyncRemoteCollection:
    """A server collection with `Collection`'s interface, awaited (`AsyncClient.collection`)."""

    def __init__(self, client: AsyncClient, name: str) -> None:
        self.client = client
        self.name = name

    def __repr__(self) -> str:
        return f"AsyncRemoteCollection({self.client.url!r}, {self.name!r})"

    async def search(
        self,
        query: str | None = None,
        k: int = 10,
        *,
        image: Any = None,
        kinds: Sequence[str] | str | None = None,
        mode: str | None = None,
        weights: Sequence[float] | Mapping[str, float] | None = None,
        fusion: str = "weighted",
        filter: str | Mapping[str, Any] | None = None,
        candidates: int | None = None,
        rerank: int | None = None,
    ) -> list[Hit]:
        """The `k` best documents, as `Collection.search` (the server encodes the query; None: the
        collection's defaults)."""
        return await self.client._run(
            plans.search(
                self.name,
                query,
                k,
                image=image,
                kinds=kinds,
                mode=mode,
                weights=weights,
                fusion=fusion,
                filter=filter,
                candidates=candidates,
                rerank=rerank,
            )
        )

    async def upsert(
        self, documents: Iterable[Document | Mapping[str, Any]], *, batch_size: int = 256
    ) -> int:
        """Insert or replace documents by id (`batch_size` per request, each durable); how many were written."""
        return await self.client._run(plans.upsert(self.name, documents, batch_size))

    async def delete(self, ids: str | int | Iterable[str | int]) -> int:
        """Delete documents by id; returns how many existed."""
        return await self.client._run(plans.delete(self.name, ids))

    async def get(self, ids: str | int | Iterable[str | int]) -> list[Document | None]:
        """The stored documents for `ids`, in order; None where an id is unknown."""
        return await self.client._run(plans.get(self.name, ids))

    async def count(self) -> int:
        """Number of documents."""
        return await self.client._run(plans.count(self.name))

    async def stats(self) -> dict[str, Any]:
        """Counts and sizes (the server's collection statistics)."""
        return await self.client._run(plans.stats(self.name))

    async def thumbnail(self, reference: str | int) -> bytes | None:
        """JPEG bytes of a document's or hit's thumbnail; None when gone."""
        return await self.client._run(plans.thumbnail(self.name, reference))
