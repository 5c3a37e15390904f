"""Fixtures for encoder tests that need more than the tiny model itself."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest


@pytest.fixture(scope="session")
def tiny_m3_onnx(tiny_m3_dir: Path) -> dict[str, Any]:
    """The tiny model exported to ONNX (fp32 and int8) in the session's m3search home; returns the manifest."""
    from m3search.encoders.registry import spec_for_directory
    from m3search.encoders.runtimes.onnx_export import export_onnx

    return export_onnx(tiny_m3_dir, spec_for_directory(tiny_m3_dir))
