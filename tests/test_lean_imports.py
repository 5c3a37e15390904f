"""The core stays lean: light entry points do not import torch, faiss, the web server or the plotting library."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

HEAVY = ("torch", "faiss", "transformers", "fastapi", "uvicorn", "matplotlib")


def _loaded_after(code: str) -> list[str]:
    """The heavy modules a fresh interpreter has loaded after running `code`."""
    probe = f"import sys\n{code}\nimport json; print(json.dumps([m for m in {HEAVY!r} if m in sys.modules]))"
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize(
    "code",
    [
        "import m3search",
        "import m3search.errors",
        "from m3search.search.modes import MODES, mode_outputs",
        "import m3search; m3search.Client; m3search.AsyncClient",  # the HTTP client: httpx, numpy, no model
        "from m3search.cli.main import cli",
        "from click.testing import CliRunner; from m3search.cli.main import cli; "
        "r = CliRunner().invoke(cli, ['--help']); assert r.exit_code == 0 and 'index' in r.output",
    ],
)
def test_light_entry_points_skip_heavy_imports(code):
    assert _loaded_after(code) == []


def test_a_collection_searched_with_vectors_never_imports_torch(tmp_path):
    """Issue 20: a collection created, filled and searched with precomputed vectors (no encoder) loads no model
    code: torch alone costs seconds and ~150 MiB of a searching process."""
    code = (
        "import numpy as np\n"
        "from m3search import Collection\n"
        f"c = Collection.create({str(tmp_path / 'c')!r}, dim=4, outputs=['dense', 'sparse'])\n"
        "c.upsert([{'id': str(i), 'text': 't', 'dense': np.eye(4, dtype=np.float32)[i % 4], "
        "'sparse': {i: 1.0}} for i in range(8)])\n"
        "c.close()\n"
        f"c = Collection({str(tmp_path / 'c')!r})\n"
        "for mode in ('dense', 'sparse', 'dense+sparse'):\n"
        "    assert c.search({'dense': [1, 0, 0, 0], 'sparse': {4: 1.0}}, k=2, mode=mode)\n"
    )
    assert "torch" not in _loaded_after(code)


def test_public_names_still_load_on_use():
    loaded = _loaded_after("import m3search; m3search.Collection; m3search.load_encoder")
    assert "torch" in loaded and "faiss" in loaded
    import m3search

    assert "Collection" in dir(m3search)
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        m3search.nope  # noqa: B018


def test_a_missing_extra_names_the_install():
    from m3search.errors import M3SearchError, MissingExtraError
    from m3search.extras import require

    assert require("json", "server", "x").dumps([]) == "[]"
    with pytest.raises(MissingExtraError, match=r"pip install 'm3search\[server\]'") as info:
        require("m3search_no_such_module", "server", "the HTTP server")
    assert isinstance(info.value, M3SearchError) and isinstance(info.value, ImportError)
