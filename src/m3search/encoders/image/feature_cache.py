"""On-disk cache of frozen-tower outputs (image features, caption embeddings), so retraining a projection with
other settings does not re-run either tower. Entries are keyed by model, kind and the exact inputs."""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from m3search.settings import home_dir
from m3search.threads import load_array


def image_keys(paths: Sequence[Path]) -> list[str]:
    """Cache keys for image files: name, size and modification time (an edited file is recomputed)."""
    keys = []
    for path in paths:
        stat = Path(path).stat()
        keys.append(f"{Path(path).resolve()}:{stat.st_size}:{stat.st_mtime_ns}")
    return keys


class FeatureCache:
    """Arrays stored as `.npy` files under `root` (default: `$M3SEARCH_HOME/cache/features`)."""

    def __init__(self, root: str | Path | None = None) -> None:
        self.root = Path(root) if root is not None else home_dir() / "cache" / "features"

    def path_for(self, kind: str, model: str, keys: Sequence[str]) -> Path:
        digest = hashlib.sha256(json.dumps([kind, model, list(keys)]).encode("utf-8")).hexdigest()[:32]
        return self.root / f"{kind}-{digest}.npy"

    def get(
        self, kind: str, model: str, keys: Sequence[str], compute: Callable[[], np.ndarray]
    ) -> np.ndarray:
        """The cached array for (kind, model, keys), computing and storing it (atomically) on a miss."""
        path = self.path_for(kind, model, keys)
        if path.is_file():
            try:
                cached = load_array(path)
                if cached.shape[0] == len(keys):
                    return cached
            except (OSError, ValueError):
                pass  # a damaged entry is recomputed
        array = np.ascontiguousarray(compute(), dtype=np.float32)
        self.root.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=self.root, suffix=".npy.tmp")
        try:
            with os.fdopen(fd, "wb") as f:
                np.save(f, array)
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        return array


__all__ = ["FeatureCache", "image_keys"]
