"""Find a model's directory: local directory -> hub cache -> packaged offline source -> hub download.

Users with internet get the normal Hugging Face behaviour; machines without it still load the models that a
Python package ships (see `encoders.offline`).
"""

from __future__ import annotations

import os
from pathlib import Path

from m3search.encoders.offline import OFFLINE_MARKER, materialize
from m3search.encoders.registry import ModelSpec, find_spec, spec_for_directory
from m3search.errors import ModelNotFoundError
from m3search.settings import models_dir

# Files a download skips: other frameworks' weights and the repository's own ONNX export.
HUB_IGNORE = [
    "*.onnx",
    "onnx/*",
    "*.onnx_data",
    "flax_model.msgpack",
    "rust_model.ot",
    "tf_model.h5",
    "*.h5",
    "imgs/*",
    "openvino/*",
]


def _looks_like_path(model: str) -> bool:
    """Hub ids are `name` or `org/name`; anything else that was meant as a path must exist."""
    return model.startswith(("/", "./", "../", "~")) or model.count("/") > 1


def imported_model_dir(repo_id: str) -> Path:
    """Where m3search keeps a model it converted or imported (`models import`, offline sources)."""
    return models_dir() / repo_id.replace("/", "--")


def resolve_model(model: str | Path, *, cache_dir: str | Path | None = None) -> tuple[Path, ModelSpec]:
    """Return the directory holding `model` and its spec, trying each source in order.

    Raises `ModelNotFoundError` listing every place that was tried.
    """
    local = Path(model).expanduser()
    if local.is_dir():
        return local, spec_for_directory(local)
    name = str(model)
    if isinstance(model, Path) or _looks_like_path(name):
        raise ModelNotFoundError(f"no model directory at {local}")

    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError

    spec = find_spec(name)
    repo_id = spec.name if spec else name
    imported = imported_model_dir(repo_id)
    if (imported / "config.json").is_file():
        if spec is not None and spec.offline_source and (imported / OFFLINE_MARKER).is_file():
            imported = materialize(spec.offline_source, imported)  # converts again if the package changed
        return imported, spec_for_directory(imported, repo_id)
    tried: list[str] = [f"m3search's model directory ({imported})"]

    try:
        path = Path(
            snapshot_download(repo_id, cache_dir=cache_dir, local_files_only=True, ignore_patterns=HUB_IGNORE)
        )
        return path, spec_for_directory(path, repo_id)
    except (LocalEntryNotFoundError, OSError, ValueError):
        tried.append("the Hugging Face cache")

    if spec is not None and spec.offline_source:
        try:
            path = materialize(spec.offline_source, imported)
            return path, spec_for_directory(path, repo_id)
        except ModelNotFoundError as exc:
            tried.append(f"the packaged offline source ({exc})")

    if os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes"):
        tried.append("no hub download (HF_HUB_OFFLINE is set)")
    else:
        try:
            path = Path(snapshot_download(repo_id, cache_dir=cache_dir, ignore_patterns=HUB_IGNORE))
            return path, spec_for_directory(path, repo_id)
        except (HfHubHTTPError, LocalEntryNotFoundError, OSError, ValueError) as exc:
            tried.append(f"a hub download ({type(exc).__name__}: {str(exc).splitlines()[0][:200]})")
    raise ModelNotFoundError(f"model {name!r} not found; tried {', '.join(tried)}")
