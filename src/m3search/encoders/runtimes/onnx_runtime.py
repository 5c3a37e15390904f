"""ONNX Runtime: one exported graph per model (all outputs, dynamic batch and length), in fp32 or int8.

The graphs come from `onnx_export.export_onnx` (`m3search models export-onnx`), cached per checkpoint.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from m3search.encoders.runtimes.base import ForwardOutput, Runtime
from m3search.errors import RuntimeUnavailableError

#: Graph output names, in the order `EncoderModel.forward` returns them.
OUTPUT_NAMES = ("dense", "token_weights", "colbert")

#: ONNX Runtime's CPU attention holds each head's full (L, L) score matrix, so long batches are run a few rows
#: at a time: rows x L^2 stays under this (one 8192-token row still needs about heads x 256 MiB).
ATTENTION_ELEMENTS = 1 << 26


def require_onnxruntime() -> None:
    """Raise a `RuntimeUnavailableError` with the install command when the onnx extra is missing."""
    try:
        import onnx  # noqa: F401
        import onnxruntime  # noqa: F401
    except ImportError as exc:
        raise RuntimeUnavailableError(
            f"ONNX runtimes need onnx and onnxruntime ({exc.name} is missing): pip install 'm3search[onnx]'"
        ) from None


def default_threads() -> int:
    """Intra-op threads: the same count torch uses (physical cores, or OMP_NUM_THREADS when set)."""
    import torch

    return torch.get_num_threads()


class OnnxRuntime(Runtime):
    """Runs an exported graph on ONNX Runtime's CPU provider (or CUDA's when asked and installed)."""

    def __init__(
        self, graph: Path, *, name: str, threads: int | None = None, device: str | None = None
    ) -> None:
        require_onnxruntime()
        import onnxruntime as ort

        self.name = name
        self.graph = Path(graph)
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.intra_op_num_threads = threads or default_threads()
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        # Idle worker threads sleep instead of spinning: on a 2-core machine shared with other jobs, spinning
        # cost onnx-int8 17% more CPU time and 46% more wall time per batch (docs/PERFORMANCE.md).
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        options.log_severity_level = 3
        providers = ["CPUExecutionProvider"]
        if device and device.startswith("cuda"):
            if "CUDAExecutionProvider" not in ort.get_available_providers():
                raise RuntimeUnavailableError(
                    f"runtime {name!r} on {device!r} needs onnxruntime-gpu and a CUDA GPU"
                )
            providers.insert(0, "CUDAExecutionProvider")
        self.session = ort.InferenceSession(str(self.graph), options, providers=providers)
        self.outputs = {o.name for o in self.session.get_outputs()}

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
        if pool_mask is not None and dense:
            raise RuntimeUnavailableError(
                f"{self.name} cannot pool several positions (chunking='mcls'): the exported graph pools its "
                "first token only; use runtime torch-fp32 or torch-bf16 for Multiple CLS"
            )
        wanted = [n for n, on in zip(OUTPUT_NAMES, (dense, sparse, colbert)) if on]
        missing = [n for n in wanted if n not in self.outputs]
        if missing:
            raise RuntimeUnavailableError(f"the graph {self.graph} has no {', '.join(missing)} output")
        length = input_ids.shape[1]
        step = max(1, ATTENTION_ELEMENTS // (length * length))
        parts = [
            self.session.run(
                wanted, {"input_ids": input_ids[i : i + step], "attention_mask": attention_mask[i : i + step]}
            )
            for i in range(0, len(input_ids), step)
        ]
        got = {
            name: np.concatenate([p[k] for p in parts]) if len(parts) > 1 else parts[0][k]
            for k, name in enumerate(wanted)
        }
        return ForwardOutput(
            dense=got.get("dense"), token_weights=got.get("token_weights"), colbert=got.get("colbert")
        )

    def describe(self) -> dict[str, str]:
        opts = self.session.get_session_options()
        return {
            **self.identity(),
            "graph": str(self.graph),
            "threads": str(opts.intra_op_num_threads),
            "providers": ",".join(self.session.get_providers()),
        }
