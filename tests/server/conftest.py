"""Server fixtures: in-process clients over a tiny random bge-m3, and a real `m3search serve` on loopback."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from dataclasses import replace
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from m3search.errors import M3SearchError
from m3search.server import ServerSettings, create_app
from m3search.server.process import ServerProcess

ROOT = Path(__file__).resolve().parents[2]
#: What in-process clients address: a loopback name, as the server only answers to its own names.
LOCAL_URL = "http://localhost"


@pytest.fixture(scope="session")
def m3_dir(tiny_m3_dir) -> Path:
    """The tiny random bge-m3 (its sparse head weights nearly every token, so highlighting has matches)."""
    return tiny_m3_dir


@pytest.fixture(scope="session")
def m3(tiny_m3):
    """`m3_dir` loaded as a `BGEM3Encoder` on the reference runtime."""
    return tiny_m3


@pytest.fixture(scope="session")
def tiny_dense(m3):
    """The tiny model seen as a dense-only model (mean pooling, no sparse head): like e5 without BM25."""
    from m3search.encoders import TransformerEncoder

    spec = replace(m3.spec, family="dense", pooling="mean", name="tiny-dense")
    return TransformerEncoder(spec, m3.path, m3.runtime, m3.tokenizer)


@pytest.fixture
def make_client(m3, tmp_path) -> Iterator[Callable[..., TestClient]]:
    """Build a started TestClient: `make_client(encoder=..., **settings fields)`; closed after the test."""
    with ExitStack() as stack:

        def make(encoder=m3, **overrides) -> TestClient:
            settings = ServerSettings(
                model=str(m3.path), collections_dir=tmp_path / "collections", **overrides
            )
            app = create_app(settings, encoder=encoder)
            return stack.enter_context(TestClient(app, base_url=LOCAL_URL))

        yield make


@pytest.fixture
def client(make_client) -> TestClient:
    """A client of a server with default settings (no auth) over the tiny bge-m3."""
    return make_client()


def _pythonpath() -> str:
    """The caller's PYTHONPATH, then this checkout's sources (the child must run the code under test)."""
    return os.pathsep.join(p for p in (os.environ.get("PYTHONPATH"), str(ROOT / "src")) if p)


@pytest.fixture(scope="session")
def live_server(m3_dir, tiny_adapter_dir, tmp_path_factory) -> Iterator[ServerProcess]:
    """A real `m3search serve --model <tiny bge-m3> --image-encoder <adapter>` on loopback, shared by the
    session's tests."""
    work = tmp_path_factory.mktemp("live")
    server = ServerProcess(
        # The reference runtime, so responses equal what the in-process fp32 encoder computes.
        [
            "--model",
            str(m3_dir),
            "--collections",
            str(work / "collections"),
            "--runtime",
            "torch-fp32",
            "--image-encoder",
            str(tiny_adapter_dir),
        ],
        work / "server.log",
        env={"PYTHONPATH": _pythonpath()},
    )
    try:
        server.wait_ready()
    except M3SearchError as exc:
        pytest.fail(str(exc))
    yield server
    server.stop()


#: Debian's Chromium, driven headless and kept off the network (no updates, sync or QUIC probes).
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
ARTIFACTS = ROOT / "test-artifacts"


@pytest.fixture(scope="session")
def browser():
    """Headless Chromium under Playwright (`.ci/run` installs Debian's chromium when it is missing)."""
    from playwright.sync_api import sync_playwright

    if not Path(CHROMIUM).exists():
        pytest.fail(f"{CHROMIUM} is missing: install Debian's chromium (apt-get install chromium)")
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield browser
        browser.close()


@pytest.fixture
def page(browser):
    """A fresh page (1280x900); screenshots go to test-artifacts/."""
    ARTIFACTS.mkdir(exist_ok=True)
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    page = context.new_page()
    yield page
    context.close()
