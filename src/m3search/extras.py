"""Optional features and the extras that install them: the core stays lean (`pip install m3search` encodes and
searches), and a feature whose packages are missing says which extra brings them instead of a bare ImportError."""

from __future__ import annotations

import importlib
from types import ModuleType

from m3search.errors import MissingExtraError


def require(module: str, extra: str, feature: str) -> ModuleType:
    """Import `module`, or raise MissingExtraError telling how to install `feature` (`pip install m3search[extra]`)."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise MissingExtraError(
            f"{feature} needs the optional package {exc.name or module!r}: pip install 'm3search[{extra}]'"
        ) from exc
