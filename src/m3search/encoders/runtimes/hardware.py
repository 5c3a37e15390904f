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


def _cpu_flags(cpuinfo: Path = Path("/proc/cpuinfo")) -> frozenset[str]:
    """The first processor's feature flags (Linux); empty where /proc/cpuinfo does not exist."""
    try:
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("flags"):
                return frozenset(line.split(":", 1)[1].split())
    except OSError:
        pass
    return frozenset()


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
