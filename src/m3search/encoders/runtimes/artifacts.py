"""Files m3search derives from a model and keeps under its home: ONNX exports and quality-guard verdicts.

Everything is keyed by the model's name and a content fingerprint, so a changed checkpoint never reuses a
stale export or verdict.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from pathlib import Path
from typing import Any

from m3search.encoders.registry import ModelSpec
from m3search.settings import home_dir

#: Files larger than this are fingerprinted by size plus sampled blocks (hashing gigabytes on every load
#: would cost seconds); smaller ones by their whole content.
_FULL_HASH_LIMIT = 64 << 20
_SAMPLE = 1 << 20


def model_fingerprint(path: Path) -> str:
    """A content hash of a model directory: every file's name and size, small files whole, large ones sampled."""
    digest = hashlib.sha256()
    for file in sorted(p for p in Path(path).rglob("*") if p.is_file() and not p.name.startswith(".")):
        size = file.stat().st_size
        digest.update(f"{file.relative_to(path)}\0{size}\0".encode())
        with file.open("rb") as f:
            if size <= _FULL_HASH_LIMIT:
                digest.update(f.read())
                continue
            for offset in (0, size // 2, size - _SAMPLE):
                f.seek(offset)
                digest.update(f.read(_SAMPLE))
    return digest.hexdigest()[:16]


def artifact_dir(kind: str, path: Path, spec: ModelSpec) -> Path:
    """`<home>/<kind>/<model name>-<fingerprint>`: where derived files of this model checkpoint live."""
    name = Path(spec.name).name if Path(spec.name).is_dir() else spec.name  # a directory: its folder name
    safe = re.sub(r"[^A-Za-z0-9._-]+", "--", name).strip("-.")
    return home_dir() / kind / f"{safe}-{model_fingerprint(path)}"


def read_json(path: Path) -> dict[str, Any] | None:
    """A JSON object from `path`, or None when missing or unreadable (a cache miss, not an error)."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def write_json_atomic(path: Path, data: dict[str, Any]) -> None:
    """Write JSON so that readers see the old file or the new one, never half of one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(data, indent=2, sort_keys=True), encoding="utf-8")
    os.replace(tmp, path)
