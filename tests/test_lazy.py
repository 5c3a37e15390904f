"""Lazy package exports: names load on first use, are the real objects, and unknown names still fail."""

from __future__ import annotations

import subprocess
import sys

import pytest

from tests.conftest import ROOT


def test_import_m3search_loads_no_model_runtime():
    code = (
        "import sys, m3search\n"
        "assert 'torch' not in sys.modules and 'm3search.store.collection' not in sys.modules\n"
        "from m3search import Collection\n"
        "import m3search.store.collection as c\n"
        "assert Collection is c.Collection and 'torch' in sys.modules\n"
        "assert {'Client', 'Collection', 'load_encoder'} <= set(dir(m3search))\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, env={"PYTHONPATH": str(ROOT / "src")})


def test_unknown_names_raise_attribute_error():
    import m3search
    import m3search.encoders

    with pytest.raises(AttributeError, match="no attribute 'Colection'"):
        m3search.Colection  # noqa: B018
    with pytest.raises(ImportError):
        from m3search.encoders import NoSuchEncoder  # noqa: F401
