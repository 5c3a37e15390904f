"""Torch runtimes: fp32 (the exact reference), bf16 on CPUs with native bf16, fp16/bf16 on CUDA GPUs.

Low-precision runtimes cast only the backbone (`EncoderModel.cast_backbone`); pooling, the heads and
normalization stay fp32, and on CPUs the LayerNorm parameters too.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from m3search.encoders.model import EncoderModel, load_torch_model
from m3search.encoders.registry import ModelSpec
from m3search.encoders.runtimes.base import ForwardOutput, Runtime
from m3search.encoders.runtimes.hardware import detect_hardware
from m3search.errors import InvalidInputError, RuntimeUnavailableError

log = logging.getLogger(__name__)

#: Runtime name -> (dtype, default device).
TORCH_VARIANTS: dict[str, tuple[torch.dtype, str]] = {
    "torch-fp32": (torch.float32, "cpu"),
    "torch-bf16": (torch.bfloat16, "cpu"),
    "cuda-fp16": (torch.float16, "cuda"),
    "cuda-bf16": (torch.bfloat16, "cuda"),
}


def _to_host(t: torch.Tensor | None) -> torch.Tensor | None:
    """`t` as float32 in host memory; from a CUDA GPU, an asynchronous copy into pinned memory (wait before
    reading it)."""
    if t is None or t.device.type != "cuda":
        return None if t is None else t.to("cpu", torch.float32)
    host = torch.empty(t.shape, dtype=torch.float32, pin_memory=True)
    return host.copy_(t, non_blocking=True)


def _fp32_norms(device: str | torch.device) -> bool:
    """Whether LayerNorms may keep fp32 parameters under a low-precision backbone on `device` (not on CUDA)."""
    return torch.device(device).type != "cuda"


def check_device(name: str, device: str) -> None:
    """Raise when runtime `name` cannot run on `device` here (a CUDA runtime without CUDA, above all)."""
    kind = torch.device(device).type
    if name.startswith("cuda-") and kind != "cuda":
        raise InvalidInputError(f"runtime {name!r} runs on a CUDA device, not {device!r}")
    if kind == "cuda" and not torch.cuda.is_available():
        raise RuntimeUnavailableError(
            f"runtime {name!r} on device {device!r} needs a CUDA GPU, but this torch ({torch.__version__}) sees "
            "none; install a CUDA build of torch on a machine with an NVIDIA GPU, or use runtime 'auto' "
            "(or torch-bf16 / onnx-int8 on CPU)"
        )
    if name == "cuda-bf16" and not torch.cuda.is_bf16_supported():
        raise RuntimeUnavailableError(
            "runtime 'cuda-bf16' needs a GPU with bf16 support (Ampere or newer); use 'cuda-fp16'"
        )


class TorchRuntime(Runtime):
    """Runs `EncoderModel` with torch on `device`; `name` says which precision it was loaded in."""

    def __init__(self, model: EncoderModel, *, name: str = "torch-fp32", device: str = "cpu") -> None:
        self.name = name
        self.device = torch.device(device)
        self.model = model.to(self.device)

    @classmethod
    def load(
        cls, path: Path, spec: ModelSpec, *, name: str = "torch-fp32", device: str | None = None
    ) -> TorchRuntime:
        """Load the model at `path` in the precision the runtime `name` stands for."""
        dtype, default_device = TORCH_VARIANTS[name]
        device = device or default_device
        check_device(name, device)
        if name == "torch-bf16" and torch.device(device).type == "cpu" and not detect_hardware().cpu_bf16:
            log.warning(
                "this CPU has no native bf16 (AMX or AVX512-BF16): torch-bf16 is emulated and slower "
                "than torch-fp32 here"
            )
        model = load_torch_model(path, spec, dtype, fp32_norms=_fp32_norms(device))
        return cls(model, name=name, device=device)

    def cast(self, name: str) -> TorchRuntime:
        """Turn this fp32 runtime into the variant `name` in place (reusing the loaded weights)."""
        dtype, _ = TORCH_VARIANTS[name]
        self.model.cast_backbone(dtype, fp32_norms=_fp32_norms(self.device))
        self.name = name
        return self

    def forward(
        self,
        input_ids: np.ndarray,
        attention_mask: np.ndarray,
        *,
        dense: bool,
        sparse: bool,
        colbert: bool,
        pool_mask: np.ndarray | None = None,
    ) -> ForwardOutput:
        return self.submit(
            input_ids, attention_mask, dense=dense, sparse=sparse, colbert=colbert, pool_mask=pool_mask
        )()

    @torch.inference_mode()
    def submit(
        self,
        input_ids: np.ndarray,
        attention_mask: np.ndarray,
        *,
        dense: bool,
        sparse: bool,
        colbert: bool,
        pool_mask: np.ndarray | None = None,
    ) -> Callable[[], ForwardOutput]:
        """Queue the batch and its copies back to host memory on the device's stream; on a GPU this returns
        before they are done, and the returned function waits for them."""
        ids = torch.from_numpy(input_ids).to(self.device)
        mask = torch.from_numpy(attention_mask).to(self.device)
        pool = None if pool_mask is None else torch.from_numpy(pool_mask).to(self.device)
        outputs = self.model(
            ids, mask, return_dense=dense, return_sparse=sparse, return_colbert=colbert, pool_mask=pool
        )
        host = [_to_host(t) for t in outputs]
        done = None
        if self.device.type == "cuda":
            done = torch.cuda.Event()
            done.record()

        def wait() -> ForwardOutput:
            if done is not None:
                done.synchronize()
            return ForwardOutput(*(None if t is None else t.numpy() for t in host))

        return wait

    def describe(self) -> dict[str, str]:
        return {**self.identity(), "device": str(self.device), "threads": str(torch.get_num_threads())}
