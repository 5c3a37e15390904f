"""A Python client for `m3search serve` (`pip install 'm3search[client]'`): collections used like local ones.

from m3search import Client
client = Client("http://127.0.0.1:8000", api_key="...")
hits = client.collection("papers").search("What is BGE M3?", k=5, filter={"year": {"$gte": 2020}})
"""

from m3search.client.http import AsyncClient, AsyncRemoteCollection, Client, RemoteCollection

__all__ = ["AsyncClient", "AsyncRemoteCollection", "Client", "RemoteCollection"]
