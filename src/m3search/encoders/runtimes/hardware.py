"""What this machine can run fast: native bf16 on the CPU (AMX or AVX512-BF16), int8 dot products, CUDA.

`auto` uses these facts to order its candidates; a runtime that would be emulated (bf16 without hardware
support runs slower than fp32) is never a candidate.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path

import torch


@dataclass(frozen=True)
class Hardware:
    """The features that decide which runtime is fastest here."""

    cpu_capability: str
    cpu_bf16: bool
    cpu_amx: bool
    cpu_vnni: bool
    cuda: bool
    cuda_bf16: bool

    def describe(self) -> dict[str, str]:
        """A JSON-able summary for logs and benchmark results."""
        return {k: str(v) for k, v in self.__dict__.items()}


def _first_processor(cpuinfo: Path = Path("/proc/cpuinfo")) -> dict[str, str]:
    """The first processor's fields in /proc/cpuinfo (Linux); empty where it does not exist."""
    fields: dict[str, str] = {}
    try:
        for line in cpuinfo.read_text().splitlines():
            if not line.strip():
                break
            key, _, value = line.partition(":")
            fields.setdefault(key.strip(), value.strip())
    except OSError:
        pass
    return fields


def _cpu_flags(cpuinfo: Path = Path("/proc/cpuinfo")) -> frozenset[str]:
    """The first processor's feature flags (Linux); empty where /proc/cpuinfo does not exist."""
    return frozenset(_first_processor(cpuinfo).get("flags", "").split())


def cpu_record() -> dict[str, str]:
    """The CPU's model name and full flag list, for benchmark records (timings depend on them)."""
    fields = _first_processor()
    return {k: fields[k] for k in ("model name", "flags") if k in fields}


@functools.lru_cache(maxsize=1)
def detect_hardware() -> Hardware:
    """Detect CPU and GPU features once per process."""
    flags = _cpu_flags()
    capability = torch.backends.cpu.get_cpu_capability()
    amx = "amx_bf16" in flags
    cuda = torch.cuda.is_available()
    return Hardware(
        cpu_capability=capability,
        cpu_bf16=amx or "avx512_bf16" in flags,
        cpu_amx=amx,
        cpu_vnni="avx512_vnni" in flags or "avx_vnni" in flags or amx,
        cuda=cuda,
        cuda_bf16=cuda and torch.cuda.is_bf16_supported(),
    )


def _cpu_model(cpuinfo: Path = Path("/proc/cpuinfo")) -> str:
    """The first processor's model name (Linux), else what `platform` reports."""
    model = _first_processor(cpuinfo).get("model name")
    if model:
        return model
    import platform

    return platform.processor() or platform.machine()


#: The CPU flags that change which kernels run (and so which runtime is fastest).
SPEED_FLAGS = (
    "avx2",
    "avx512f",
    "avx512_vnni",
    "avx_vnni",
    "avx512_bf16",
    "amx_bf16",
    "amx_int8",
    "amx_tile",
)


def machine_fingerprint(device: str = "cpu") -> dict[str, str]:
    """What a speed measurement depends on: CPU model and kernel-relevant flags, threads, library versions, GPU.

    `auto` caches its measured choice under this key, so a different machine, thread count or library
    version measures again.
    """
    flags = _cpu_flags()
    out = {
        "cpu": _cpu_model(),
        "flags": ",".join(f for f in SPEED_FLAGS if f in flags),
        "capability": torch.backends.cpu.get_cpu_capability(),
        "threads": str(torch.get_num_threads()),
        "torch": torch.__version__,
        "device": device,
    }
    try:
        import onnxruntime

        out["onnxruntime"] = onnxruntime.__version__
    except ImportError:
        pass
    if torch.device(device).type == "cuda":
        out["gpu"] = torch.cuda.get_device_name(torch.device(device))
    return out
