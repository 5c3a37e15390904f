"""Runtimes by name (`make_runtime("torch-bf16", ...)`), and `auto`: the fastest one whose quality guard holds.

| name | what | where |
|---|---|---|
| torch-fp32 | the exact reference (bit-exact to FlagEmbedding) | any CPU or GPU |
| torch-bf16 | bf16 matrix products, fp32 LayerNorm/heads/normalization | CPUs with AMX or AVX512-BF16 |
| onnx-fp32 / onnx-int8 | ONNX Runtime on the exported graph; int8 = dynamic quantization | any CPU (`onnx` extra) |
| cuda-fp16 / cuda-bf16 | the torch model in half precision on an NVIDIA GPU | CUDA |

`auto` (`runtimes/auto.py`) measures every candidate that can run here and takes the fastest whose deviation
from fp32 on the guard's probe texts is within `GUARD_BOUNDS`; the decision is cached per checkpoint and
machine. ONNX graphs are only considered when already exported (`m3search models export-onnx`), since
exporting takes minutes.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

from m3search.encoders.registry import ModelSpec
from m3search.encoders.runtimes.base import ForwardOutput, Runtime
from m3search.encoders.runtimes.guard import GUARD_BOUNDS, Deviation
from m3search.encoders.runtimes.torch_runtime import TorchRuntime
from m3search.errors import InvalidInputError

log = logging.getLogger(__name__)

RuntimeFactory = Callable[[Path, ModelSpec, str | None], Runtime]


def _torch(name: str) -> RuntimeFactory:
    return lambda path, spec, device: TorchRuntime.load(path, spec, name=name, device=device)


def _onnx(precision: str) -> RuntimeFactory:
    def load(path: Path, spec: ModelSpec, device: str | None) -> Runtime:
        from m3search.encoders.runtimes.onnx_export import export_onnx, graph_path, load_manifest
        from m3search.encoders.runtimes.onnx_runtime import OnnxRuntime, require_onnxruntime

        require_onnxruntime()
        if load_manifest(path, spec) is None:
            log.warning(
                "no cached ONNX export of %s; exporting it now (minutes for bge-m3; "
                "`m3search models export-onnx` does this ahead of time)",
                spec.name,
            )
            export_onnx(path, spec)
        return OnnxRuntime(graph_path(path, spec, precision), name=f"onnx-{precision}", device=device)

    return load


RUNTIMES: dict[str, RuntimeFactory] = {
    "torch-fp32": _torch("torch-fp32"),
    "torch-bf16": _torch("torch-bf16"),
    "onnx-fp32": _onnx("fp32"),
    "onnx-int8": _onnx("int8"),
    "cuda-fp16": _torch("cuda-fp16"),
    "cuda-bf16": _torch("cuda-bf16"),
}


def check_runtime_name(name: str) -> str:
    """Return `name` if it is `auto` or a known runtime; raise naming the choices otherwise."""
    if name != "auto" and name not in RUNTIMES:
        raise InvalidInputError(f"unknown runtime {name!r}; choose one of auto, {', '.join(RUNTIMES)}")
    return name


def make_runtime(
    name: str, path: Path, spec: ModelSpec, device: str | None = None, tokenizer: Any = None
) -> Runtime:
    """Build the named runtime, or the `auto` choice, for the model at `path`."""
    if check_runtime_name(name) == "auto":
        from m3search.encoders.runtimes.auto import choose_auto

        return choose_auto(path, spec, device, tokenizer)
    return RUNTIMES[name](path, spec, device)


__all__ = [
    "GUARD_BOUNDS",
    "RUNTIMES",
    "Deviation",
    "ForwardOutput",
    "Runtime",
    "TorchRuntime",
    "auto_candidates",
    "check_runtime_name",
    "choose_auto",
    "make_runtime",
]

from m3search.encoders.runtimes.auto import auto_candidates, choose_auto  # noqa: E402  (needs RUNTIMES)
