"""Export a model to ONNX once (all outputs in one graph, dynamic batch and length) and quantize it to int8.

Exports are cached under `<home>/onnx/<model>-<fingerprint>/` with a `manifest.json` written last: it lists
the graphs and each one's measured deviation from torch fp32 on the guard's probe texts, so `auto` can trust
(or reject) a graph without loading the fp32 model again. The directory appears whole or not at all.
"""

from __future__ import annotations

import gc
import logging
import os
import shutil
import time
import warnings
from pathlib import Path
from typing import Any

import torch
from torch import nn

from m3search.encoders.model import EncoderModel
from m3search.encoders.registry import ModelSpec
from m3search.encoders.runtimes.artifacts import artifact_dir, read_json, write_json_atomic
from m3search.encoders.runtimes.guard import probe_batch, runtime_deviation
from m3search.encoders.runtimes.hardware import detect_hardware
from m3search.encoders.runtimes.onnx_runtime import OUTPUT_NAMES, OnnxRuntime, require_onnxruntime
from m3search.encoders.runtimes.torch_runtime import TorchRuntime
from m3search.errors import ModelLoadError, RuntimeUnavailableError

log = logging.getLogger(__name__)

PRECISIONS = ("fp32", "int8")
GRAPH_FILE = "model.onnx"
MANIFEST = "manifest.json"
#: Bumped whenever the exported graphs change; older cached exports are then made again.
#: 3: the feed-forward output products stay fp32 in the int8 graph.
EXPORT_FORMAT = 3
#: Opset 23 has a fused `Attention` op: ONNX Runtime then never materializes the (heads, L, L) score matrix,
#: which at 8192 tokens would take gigabytes (the decomposed attention of older opsets does).
OPSET = 23


class _AllOutputs(nn.Module):
    """`EncoderModel` with every head it has switched on, as the traced function."""

    def __init__(self, model: EncoderModel, sparse: bool) -> None:
        super().__init__()
        self.model = model
        self.sparse = sparse

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> tuple[torch.Tensor, ...]:
        dense, weights, colbert = self.model(input_ids, attention_mask, True, self.sparse, True)
        return (dense, weights, colbert) if self.sparse else (dense, colbert)


def export_dir(path: Path, spec: ModelSpec) -> Path:
    """Where the ONNX graphs of this checkpoint live (whether or not they exist yet)."""
    return artifact_dir("onnx", path, spec)


def load_manifest(path: Path, spec: ModelSpec) -> dict[str, Any] | None:
    """The manifest of a complete cached export of this checkpoint, or None."""
    folder = export_dir(path, spec)
    manifest = read_json(folder / MANIFEST)
    if manifest is None or manifest.get("format") != EXPORT_FORMAT:
        return None
    if not all((folder / p / GRAPH_FILE).is_file() for p in manifest.get("graphs", {})):
        return None
    return manifest


def graph_path(path: Path, spec: ModelSpec, precision: str) -> Path:
    """The cached graph file of one precision (it may not exist)."""
    return export_dir(path, spec) / precision / GRAPH_FILE


def _export_fp32(model: EncoderModel, sparse: bool, dest: Path) -> None:
    try:
        import onnxscript  # noqa: F401  (the exporter needs it)
    except ImportError:
        raise RuntimeUnavailableError(
            "exporting to ONNX needs onnxscript: pip install 'm3search[onnx]'"
        ) from None
    dest.parent.mkdir(parents=True, exist_ok=True)
    # Example inputs with distinct sizes, so that neither axis is specialized to a constant.
    ids = torch.tensor([[0, 100, 200, 300, 2], [0, 5, 6, 2, 1]])
    mask = (ids != 1).long()
    batch, length = torch.export.Dim("batch"), torch.export.Dim("length")
    axes = {0: batch, 1: length}
    names = [n for n in OUTPUT_NAMES if sparse or n != "token_weights"]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the exporter's notes on axis naming and deprecations, not for users
        torch.onnx.export(
            _AllOutputs(model, sparse).eval(),
            (ids, mask),
            str(dest),
            input_names=["input_ids", "attention_mask"],
            output_names=names,
            dynamic_shapes={"input_ids": axes, "attention_mask": axes},
            dynamo=True,
            external_data=True,
            opset_version=OPSET,
            verbose=False,
        )


def ffn_output_matmuls(graph: Path, intermediate_size: int) -> list[str]:
    """Names of the graph's feed-forward down-projections: MatMuls by a constant (intermediate, hidden) weight."""
    import onnx

    model = onnx.load(str(graph), load_external_data=False)
    shapes = {init.name: tuple(init.dims) for init in model.graph.initializer}
    return [
        node.name
        for node in model.graph.node
        if node.op_type == "MatMul" and shapes.get(node.input[1], (None,))[0] == intermediate_size
    ]


def int8_weights() -> str:
    """The int8 graph's weight type for this CPU: "int8" where it has VNNI (or AMX), whose products of unsigned
    activations by signed weights add in 32 bits; "uint8" elsewhere. Without VNNI, ONNX Runtime multiplies
    unsigned by signed bytes with VPMADDUBSW, which adds each pair in saturating 16 bits: on an AVX2-only AMD
    EPYC the full-size model's dense vectors fell to cosine 0.9981 (the guard asks for 0.999); with unsigned
    weights they kept 0.9995, still 1.27x onnx-fp32 per CPU-second (docs/PERFORMANCE.md)."""
    return "int8" if detect_hardware().cpu_vnni else "uint8"


def exported_weights(manifest: dict[str, Any]) -> str:
    """The int8 weight type an export's manifest records (exports made before it was recorded: signed)."""
    return str(manifest.get("int8_weights", "int8"))


def _quantize_int8(src: Path, dest: Path, intermediate_size: int, weights: str) -> None:
    """Dynamic int8 quantization of the weight matrix products: weights (`int8_weights`) per output channel,
    activations per batch at run time. Attention's activation-by-activation products and the embeddings stay
    fp32, and so do the feed-forward down-projections: their input (after GELU) has outlier channels that one
    int8 scale per batch cannot hold. Quantizing them too is about 1.4x faster but moved multilingual-e5-small's
    dense vectors to cosine 0.994 on SciFact abstracts, against 0.9992 without them (the guard asks for 0.999)."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    dest.parent.mkdir(parents=True, exist_ok=True)
    quantize_dynamic(
        str(src),
        str(dest),
        weight_type=QuantType.QInt8 if weights == "int8" else QuantType.QUInt8,
        op_types_to_quantize=["MatMul"],
        per_channel=True,
        nodes_to_exclude=ffn_output_matmuls(src, intermediate_size),
        use_external_data_format=True,
        extra_options={"MatMulConstBOnly": True},
    )


def export_onnx(path: Path, spec: ModelSpec, *, force: bool = False) -> dict[str, Any]:
    """Export (or reuse) this checkpoint's fp32 and int8 graphs; return the manifest. A cached export whose int8
    weights do not suit this CPU (`int8_weights`: made on a machine with VNNI and copied here, or the reverse) is
    made again."""
    require_onnxruntime()
    final = export_dir(path, spec)
    manifest = None if force else load_manifest(path, spec)
    if manifest is not None:
        cached, wanted = exported_weights(manifest), int8_weights()
        if cached == wanted:
            return manifest
        log.warning(
            "the cached ONNX export of %s has %s int8 weights, this CPU needs %s ones: exporting it again",
            spec.name,
            cached,
            wanted,
        )
    tmp = final.with_name(f".{final.name}.{os.getpid()}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    started = time.perf_counter()
    sparse = spec.family == "m3"
    try:
        reference = TorchRuntime.load(path, spec, name="torch-fp32", device="cpu")
        from m3search.encoders.transformer import load_tokenizer

        ids, mask = probe_batch(load_tokenizer(path))
        ref_out = reference.forward(ids, mask, dense=True, sparse=sparse, colbert=True)
        log.info("exporting %s to ONNX (fp32)", spec.name)
        _export_fp32(reference.model, sparse, tmp / "fp32" / GRAPH_FILE)
        intermediate_size = int(reference.model.backbone.config.intermediate_size)  # type: ignore[union-attr,arg-type]
        del reference
        gc.collect()
        weights = int8_weights()
        log.info("quantizing %s to int8 (%s weights)", spec.name, weights)
        _quantize_int8(tmp / "fp32" / GRAPH_FILE, tmp / "int8" / GRAPH_FILE, intermediate_size, weights)
        deviations = {}
        for precision in PRECISIONS:
            runtime = OnnxRuntime(tmp / precision / GRAPH_FILE, name=f"onnx-{precision}")
            dev = runtime_deviation(ref_out, runtime, ids, mask, sparse=sparse)
            deviations[precision] = {"deviation": dev.to_dict()}
            del runtime
    except Exception as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        if isinstance(exc, (ModelLoadError, RuntimeUnavailableError)):
            raise
        raise ModelLoadError(f"exporting {spec.name} from {path} to ONNX failed: {exc}") from exc
    import onnxruntime

    manifest = {
        "format": EXPORT_FORMAT,
        "opset": OPSET,
        "model": spec.name,
        "source": str(path),
        "graphs": {p: deviations[p] for p in PRECISIONS},
        "int8_weights": weights,
        "outputs": [n for n in OUTPUT_NAMES if sparse or n != "token_weights"],
        "torch": torch.__version__,
        "onnxruntime": onnxruntime.__version__,
        "export_seconds": round(time.perf_counter() - started, 1),
    }
    write_json_atomic(tmp / MANIFEST, manifest)
    shutil.rmtree(final, ignore_errors=True)
    os.replace(tmp, final)
    return manifest
