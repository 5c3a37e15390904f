"""Runtimes by name (`make_runtime("torch-bf16", ...)`), and `auto`: the fastest one whose quality guard holds.

| name | what | where |
|---|---|---|
| torch-fp32 | the exact reference (bit-exact to FlagEmbedding) | any CPU or GPU |
| torch-bf16 | bf16 matrix products, fp32 LayerNorm/heads/normalization | CPUs with AMX or AVX512-BF16 |
| onnx-fp32 / onnx-int8 | ONNX Runtime on the exported graph; int8 = dynamic quantization | any CPU (`onnx` extra) |
| cuda-fp16 / cuda-bf16 | the torch model in half precision on an NVIDIA GPU | CUDA |

`auto` walks `auto_candidates` (fastest first, as measured by `benchmarks/encode_speed.py`) and takes the
first runtime that can run here and whose deviation from fp32 on the guard's probe texts is within
`GUARD_BOUNDS`. Verdicts are cached per checkpoint and machine; ONNX graphs are only considered when already
exported (`m3search models export-onnx`), since exporting takes minutes.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from m3search.encoders.registry import ModelSpec
from m3search.encoders.runtimes.artifacts import artifact_dir, read_json, write_json_atomic
from m3search.encoders.runtimes.base import ForwardOutput, Runtime
from m3search.encoders.runtimes.guard import GUARD_BOUNDS, Deviation, probe_batch, runtime_deviation
from m3search.encoders.runtimes.hardware import Hardware, detect_hardware
from m3search.encoders.runtimes.torch_runtime import TorchRuntime
from m3search.errors import InvalidInputError, M3SearchError

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


def _onnx_installed() -> bool:
    try:
        import onnxruntime  # noqa: F401
    except ImportError:
        return False
    return True


def _on_cuda(hw: Hardware, device: str | None) -> bool:
    return hw.cuda if device is None else torch.device(device).type == "cuda"


def auto_candidates(hw: Hardware, device: str | None = None) -> list[str]:
    """Faster-than-fp32 runtimes `auto` may pick on this hardware, fastest first (torch-fp32 comes after all).

    On CPU (benchmarks/encode_speed.py): onnx-int8 is the fastest and, with its feed-forward down-projections
    kept fp32, passed the dense guard narrowly on real weights (e5-small), so its export-time verdict decides;
    otherwise torch-bf16 (only with native bf16). onnx-fp32 was slower than torch-fp32: explicit choice only.
    """
    if _on_cuda(hw, device):
        return ["cuda-bf16" if hw.cuda_bf16 else "cuda-fp16"]
    order = ["onnx-int8"] if _onnx_installed() else []
    if hw.cpu_bf16:
        order.append("torch-bf16")
    return order


def _guarded_onnx(name: str, path: Path, spec: ModelSpec, device: str) -> Runtime | None:
    """The ONNX runtime if its graph is already exported and passed the guard at export time."""
    from m3search.encoders.runtimes.onnx_export import load_manifest

    manifest = load_manifest(path, spec)
    if manifest is None:
        log.info("auto: skipping %s (not exported; run `m3search models export-onnx`)", name)
        return None
    violations = GUARD_BOUNDS.violations(
        Deviation(**manifest["graphs"][name.removeprefix("onnx-")]["deviation"])
    )
    if violations:
        log.info("auto: skipping %s: %s", name, "; ".join(violations))
        return None
    return RUNTIMES[name](path, spec, device)


def _guarded_torch(name: str, path: Path, spec: ModelSpec, device: str, tokenizer: Any) -> Runtime | None:
    """Load fp32, check the low-precision variant against it on the probe (once per checkpoint and machine)."""
    hw = detect_hardware()
    key = f"{name}|{torch.device(device).type}|{hw.cpu_capability}|{hw.cpu_bf16}|torch {torch.__version__}"
    verdict_file = artifact_dir("guard", path, spec) / f"{name}.json"
    cached = read_json(verdict_file)
    if cached is not None and cached.get("key") == key:
        violations = GUARD_BOUNDS.violations(Deviation(**cached["deviation"]))
        if violations:
            log.info("auto: skipping %s: %s", name, "; ".join(violations))
            return None
        return RUNTIMES[name](path, spec, device)
    runtime = TorchRuntime.load(path, spec, name="torch-fp32", device=device)
    if tokenizer is None:
        from m3search.encoders.transformer import load_tokenizer

        tokenizer = load_tokenizer(path)
    ids, mask = probe_batch(tokenizer)
    sparse = spec.family == "m3"
    reference = runtime.forward(ids, mask, dense=True, sparse=sparse, colbert=True)
    dev = runtime_deviation(reference, runtime.cast(name), ids, mask, sparse=sparse)
    violations = GUARD_BOUNDS.violations(dev)
    write_json_atomic(verdict_file, {"key": key, "deviation": dev.to_dict()})
    if violations:
        log.info("auto: skipping %s: %s", name, "; ".join(violations))
        return None
    return runtime


def choose_auto(path: Path, spec: ModelSpec, device: str | None = None, tokenizer: Any = None) -> Runtime:
    """The first of `auto_candidates` that loads here and passes its quality guard, else torch-fp32."""
    hw = detect_hardware()
    device = device or ("cuda" if _on_cuda(hw, device) else "cpu")
    for name in auto_candidates(hw, device):
        try:
            if name.startswith("onnx-"):
                runtime = _guarded_onnx(name, path, spec, device)
            else:
                runtime = _guarded_torch(name, path, spec, device, tokenizer)
        except M3SearchError as exc:
            log.info("auto: skipping %s: %s", name, exc)
            continue
        if runtime is not None:
            log.info("auto: using %s", name)
            return runtime
    log.info("auto: using torch-fp32")
    return RUNTIMES["torch-fp32"](path, spec, device)


def make_runtime(
    name: str, path: Path, spec: ModelSpec, device: str | None = None, tokenizer: Any = None
) -> Runtime:
    """Build the named runtime, or the `auto` choice, for the model at `path`."""
    if check_runtime_name(name) == "auto":
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
