"""Client fixtures: a `Client` of the live e5 server (`e5_server`, tests/conftest.py)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from m3search.client import Client
from tests.conftest import E5_SERVER_KEY


@pytest.fixture
def client(e5_server) -> Iterator[Client]:
    """A client holding the server's key; closed after the test."""
    with Client(e5_server.url, api_key=E5_SERVER_KEY) as client:
        yield client
