"""What a runtime is: something that runs one padded batch through a model and returns the raw head outputs.

Tokenization, batching, chunking and post-processing live in the encoder, once, for every runtime; a runtime
only decides how the numbers are computed (torch fp32 reference, bf16, ONNX, CUDA...).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np


@dataclass
class ForwardOutput:
    """Raw outputs of one batch, float32: dense (b, d) normalized (with a pool mask: the unnormalized sum of
    the marked hidden states); token_weights (b, L) >= 0; colbert (b, L-1, d') with padding rows zero and
    other rows normalized. None when not requested. The arrays may share memory the runtime hands out again
    once they are released (pinned buffers of a GPU runtime): copy what is kept beyond the batch."""

    dense: np.ndarray | None = None
    token_weights: np.ndarray | None = None
    colbert: np.ndarray | None = None


def runtime_dtype(name: str) -> str:
    """The precision a runtime named `<engine>-<dtype>` computes in: fp32, bf16, fp16 or int8."""
    return name.rsplit("-", 1)[-1]


class Runtime(ABC):
    """Runs padded batches; `name` is what users pass as `runtime=`, `<engine>-<dtype>` (e.g. torch-bf16)."""

    name: str
    #: Why `auto` chose this runtime (None when it was named explicitly).
    auto_reason: str | None = None

    @property
    def dtype(self) -> str:
        """The precision the model's matrix products run in: fp32, bf16, fp16 or int8."""
        return runtime_dtype(self.name)

    def identity(self) -> dict[str, str]:
        """Which runtime and precision made a vector, and why `auto` chose it: what collections and reports
        record (vectors of different runtimes differ slightly and must not be mixed)."""
        info = {"runtime": self.name, "dtype": self.dtype}
        if self.auto_reason:
            info["auto"] = self.auto_reason
        return info

    @abstractmethod
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
        """Run one batch of (b, L) int64 ids and mask; `pool_mask` (b, L) float32 asks for dense as the sum
        of the marked positions' hidden states (runtimes that cannot raise `RuntimeUnavailableError`)."""

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
        """Start one batch as `forward` would and return a function that waits for its outputs.

        Runtimes on an asynchronous device (a GPU) return before the batch is computed, so that the encoder
        post-processes one batch while the device computes the next; here the batch is computed at once."""
        out = self.forward(
            input_ids, attention_mask, dense=dense, sparse=sparse, colbert=colbert, pool_mask=pool_mask
        )
        return lambda: out

    def describe(self) -> dict[str, str]:
        """A JSON-able description for logs, benchmarks and the server."""
        return self.identity()
