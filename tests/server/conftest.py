"""Server fixtures: in-process clients over the tiny random bge-m3, and a real `m3search serve` on loopback."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from dataclasses import replace
from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient

from m3search.server import ServerSettings, create_app

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="session")
def tiny_dense(tiny_m3):
    """The tiny model seen as a dense-only model (mean pooling, no sparse head): like e5 without BM25."""
    from m3search.encoders import TransformerEncoder

    spec = replace(tiny_m3.spec, family="dense", pooling="mean", name="tiny-dense")
    return TransformerEncoder(spec, tiny_m3.path, tiny_m3.runtime, tiny_m3.tokenizer)


@pytest.fixture
def make_client(tiny_m3, tmp_path) -> Iterator[Callable[..., TestClient]]:
    """Build a started TestClient: `make_client(encoder=..., **settings fields)`; closed after the test."""
    with ExitStack() as stack:

        def make(encoder=tiny_m3, **overrides) -> TestClient:
            settings = ServerSettings(model=str(tiny_m3.path), collections_dir=tmp_path / "collections",
                                      **overrides)
            return stack.enter_context(TestClient(create_app(settings, encoder=encoder)))

        yield make


@pytest.fixture
def client(make_client) -> TestClient:
    """A client of a server with default settings (no auth) over the tiny bge-m3."""
    return make_client()


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class LiveServer:
    """`m3search serve` in a subprocess on 127.0.0.1; its log goes to a file shown when startup fails."""

    def __init__(self, args: list[str], log_path: Path, env: dict[str, str] | None = None) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = log_path
        full_env = {**os.environ, "PYTHONPATH": str(ROOT / "src"), **(env or {})}
        self._log = log_path.open("w")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "m3search.cli.main", "serve", "--host", "127.0.0.1", "--port", str(self.port),
             *args], stdout=self._log, stderr=subprocess.STDOUT, env=full_env)

    def wait_ready(self, timeout: float = 120.0) -> None:
        """Block until /readyz answers 200; fail with the server log otherwise."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                break
            try:
                if httpx.get(self.url + "/readyz", timeout=2).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.2)
        self.stop()
        pytest.fail(f"server did not become ready; log:\n{self.log_path.read_text()[-4000:]}")

    def stop(self) -> None:
        """Terminate the server and wait for it."""
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log.close()


@pytest.fixture(scope="session")
def live_server(tiny_m3_dir, tmp_path_factory) -> Iterator[LiveServer]:
    """A real `m3search serve --model <tiny bge-m3>` on loopback, shared by the session's tests."""
    work = tmp_path_factory.mktemp("live")
    server = LiveServer(["--model", str(tiny_m3_dir), "--collections", str(work / "collections")],
                        work / "server.log")
    server.wait_ready()
    yield server
    server.stop()
