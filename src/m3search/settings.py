"""Where m3search keeps its own files (converted offline models, exported ONNX graphs, sample data)."""

from __future__ import annotations

import os
from pathlib import Path


def home_dir() -> Path:
    """`$M3SEARCH_HOME`, else `~/.cache/m3search`; created on first use."""
    root = Path(os.environ.get("M3SEARCH_HOME") or Path.home() / ".cache" / "m3search").expanduser()
    root.mkdir(parents=True, exist_ok=True)
    return root


def models_dir() -> Path:
    """Directory of models m3search converted or imported itself."""
    path = home_dir() / "models"
    path.mkdir(parents=True, exist_ok=True)
    return path
