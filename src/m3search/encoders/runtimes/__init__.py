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
from m3search.progress import note, phases

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


def _guarded_onnx(name: str, path: Path, spec: ModelSpec, device: str) -> tuple[Runtime | None, str]:
    """The ONNX runtime if its graph is already exported and passed the guard at export time, and why (not)."""
    from m3search.encoders.runtimes.onnx_export import load_manifest

    manifest = load_manifest(path, spec)
    if manifest is None:
        return None, f"{name} not exported (`m3search models export-onnx`)"
    dev = Deviation(**manifest["graphs"][name.removeprefix("onnx-")]["deviation"])
    violations = GUARD_BOUNDS.violations(dev)
    if violations:
        return None, f"{name} failed its quality guard ({'; '.join(violations)})"
    return RUNTIMES[name](path, spec, device), f"{name} passed its quality guard ({_deviation_text(dev)})"


def _deviation_text(dev: Deviation) -> str:
    """The measured deviations, e.g. `dense cosine 0.99990, ColBERT cosine 0.99710`."""
    parts = {"dense cosine": dev.dense_cosine_min, "sparse diff": dev.sparse_rel_diff_max}
    parts["ColBERT cosine"] = dev.colbert_cosine_min
    return ", ".join(f"{label} {value:.5f}" for label, value in parts.items() if value is not None)


def _guarded_torch(
    name: str, path: Path, spec: ModelSpec, device: str, tokenizer: Any
) -> tuple[Runtime | None, str]:
    """Load fp32, check the low-precision variant against it on the probe (once per checkpoint and machine);
    the runtime if it passes, and why (not)."""
    hw = detect_hardware()
    key = f"{name}|{torch.device(device).type}|{hw.cpu_capability}|{hw.cpu_bf16}|torch {torch.__version__}"
    verdict_file = artifact_dir("guard", path, spec) / f"{name}.json"
    cached = read_json(verdict_file)
    runtime = None
    if cached is not None and cached.get("key") == key:
        dev = Deviation(**cached["deviation"])
    else:
        steps = ["load fp32", "fp32 probe", f"cast to {name}", f"{name} probe"]
        with phases(f"first start: quality guard of {name} for {spec.name}", steps) as step:
            step(steps[0])
            runtime = TorchRuntime.load(path, spec, name="torch-fp32", device=device)
            if tokenizer is None:
                from m3search.encoders.transformer import load_tokenizer

                tokenizer = load_tokenizer(path)
            ids, mask = probe_batch(tokenizer)
            sparse = spec.family == "m3"
            step(steps[1])
            reference = runtime.forward(ids, mask, dense=True, sparse=sparse, colbert=True)
            step(steps[2])
            candidate = runtime.cast(name)
            step(steps[3])
            dev = runtime_deviation(reference, candidate, ids, mask, sparse=sparse)
        write_json_atomic(verdict_file, {"key": key, "deviation": dev.to_dict()})
    violations = GUARD_BOUNDS.violations(dev)
    if violations:
        return None, f"{name} failed its quality guard ({'; '.join(violations)})"
    passed = f"{name} passed its quality guard ({_deviation_text(dev)})"
    return runtime or RUNTIMES[name](path, spec, device), passed


def _not_candidates(hw: Hardware, device: str) -> list[str]:
    """Why the faster runtimes that are not `auto_candidates` here were left out."""
    if _on_cuda(hw, device):
        return []
    why = [] if _onnx_installed() else ["onnx-int8 needs onnxruntime (`pip install 'm3search[onnx]'`)"]
    if not hw.cpu_bf16:
        why.append("torch-bf16 needs native bf16 (AMX or AVX512-BF16), which this CPU lacks")
    return why


def choose_auto(path: Path, spec: ModelSpec, device: str | None = None, tokenizer: Any = None) -> Runtime:
    """The first of `auto_candidates` that loads here and passes its quality guard, else torch-fp32.

    The chosen runtime carries the reason in `auto_reason`, and one line on stderr says it (`progress.note`).
    """
    hw = detect_hardware()
    device = device or ("cuda" if _on_cuda(hw, device) else "cpu")
    reasons = _not_candidates(hw, device)
    chosen: Runtime | None = None
    for name in auto_candidates(hw, device):
        try:
            if name.startswith("onnx-"):
                chosen, why = _guarded_onnx(name, path, spec, device)
            else:
                chosen, why = _guarded_torch(name, path, spec, device, tokenizer)
        except M3SearchError as exc:
            chosen, why = None, f"{name} cannot run here ({exc})"
        if chosen is not None:
            reasons.insert(0, why)
            break
        reasons.append(why)
    if chosen is None:
        chosen = RUNTIMES["torch-fp32"](path, spec, device)
        reasons.insert(0, "the fp32 reference: no faster runtime qualifies")
    chosen.auto_reason = "; ".join(reasons)
    note(f"runtime auto -> {chosen.name} ({chosen.dtype}) for {spec.name}: {chosen.auto_reason}")
    return chosen


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
