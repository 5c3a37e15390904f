"""The torch runtime: the exact reference path in fp32 on CPU."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from m3search.encoders.model import EncoderModel, load_torch_model
from m3search.encoders.registry import ModelSpec
from m3search.encoders.runtimes.base import ForwardOutput, Runtime


def _to_numpy(t: torch.Tensor | None) -> np.ndarray | None:
    return None if t is None else t.detach().to("cpu", torch.float32).numpy()


class TorchRuntime(Runtime):
    """Runs `EncoderModel` with torch on `device` in `dtype`."""

    def __init__(self, model: EncoderModel, *, name: str = "torch-fp32", device: str = "cpu") -> None:
        self.name = name
        self.device = torch.device(device)
        self.model = model.to(self.device)

    @classmethod
    def load(cls, path: Path, spec: ModelSpec, *, name: str = "torch-fp32", dtype: torch.dtype = torch.float32,
             device: str = "cpu") -> "TorchRuntime":
        """Load the model at `path` for this runtime."""
        return cls(load_torch_model(path, spec, dtype), name=name, device=device)

    @torch.inference_mode()
    def forward(self, input_ids: np.ndarray, attention_mask: np.ndarray, *, dense: bool, sparse: bool,
                colbert: bool) -> ForwardOutput:
        ids = torch.from_numpy(input_ids).to(self.device)
        mask = torch.from_numpy(attention_mask).to(self.device)
        d, s, c = self.model(ids, mask, return_dense=dense, return_sparse=sparse, return_colbert=colbert)
        return ForwardOutput(dense=_to_numpy(d), token_weights=_to_numpy(s), colbert=_to_numpy(c))

    def describe(self) -> dict[str, str]:
        return {"runtime": self.name, "device": str(self.device), "threads": str(torch.get_num_threads())}
