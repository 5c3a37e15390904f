"""Runtimes by name: `make_runtime("torch-fp32", ...)`; `auto` picks the fastest one whose quality holds."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from m3search.encoders.registry import ModelSpec
from m3search.encoders.runtimes.base import ForwardOutput, Runtime
from m3search.encoders.runtimes.torch_runtime import TorchRuntime
from m3search.errors import InvalidInputError

RuntimeFactory = Callable[[Path, ModelSpec, str | None], Runtime]

RUNTIMES: dict[str, RuntimeFactory] = {
    "torch-fp32": lambda path, spec, device: TorchRuntime.load(path, spec, name="torch-fp32", device=device or "cpu"),
}


def resolve_runtime_name(name: str) -> str:
    """Map `auto` to a concrete runtime for this machine; reject unknown names."""
    if name == "auto":
        return "torch-fp32"
    if name not in RUNTIMES:
        raise InvalidInputError(f"unknown runtime {name!r}; choose one of auto, {', '.join(RUNTIMES)}")
    return name


def make_runtime(name: str, path: Path, spec: ModelSpec, device: str | None = None) -> Runtime:
    """Build the named runtime (or the `auto` choice) for the model at `path`."""
    return RUNTIMES[resolve_runtime_name(name)](path, spec, device)


__all__ = ["ForwardOutput", "RUNTIMES", "Runtime", "TorchRuntime", "make_runtime", "resolve_runtime_name"]
