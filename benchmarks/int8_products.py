"""A lever tried for issue 15 and not kept: int8 weight products inside torch-bf16 (full-size random bge-m3).

The query, key, value, attention-output and feed-forward up-projections run as `torch._int_mm` (int8 weights per
output channel; activations quantized per row on the fly, then dequantized with the bias), the feed-forward
down-projections and attention stay bf16. Two dequantizations: in fp32 (then cast to bf16) and in bf16. Each
variant is switched on in turn on the same model, per batch shape, interleaved, best of `--reps` in CPU time;
deviations are from torch-fp32 on the same batch.

    PYTHONPATH=src python benchmarks/int8_products.py

Writes benchmarks/results/int8_products-<time>.json and prints a table.
"""

from __future__ import annotations

import argparse
import json
import time
from typing import Any

import numpy as np
import torch
from encode_speed import RESULTS, WORK, cpu_info, full_size_model
from torch import nn

from m3search.encoders.registry import spec_for_directory
from m3search.encoders.runtimes.torch_runtime import TorchRuntime

VARIANTS = ("bf16", "int8, fp32 dequantization", "int8, bf16 dequantization")


class Int8Linear(nn.Module):
    """`linear` as an int8 product; `variant` (shared by all instances) picks it or the bf16 original."""

    variant = VARIANTS[0]

    def __init__(self, linear: nn.Linear) -> None:
        super().__init__()
        weight = linear.weight.detach().float()
        self.w_scale = weight.abs().amax(1).clamp(min=1e-12) / 127
        self.w_int8 = torch.round(weight / self.w_scale[:, None]).to(torch.int8).t().contiguous()
        self.bias = linear.bias.detach().float()
        self.w_scale_bf16, self.bias_bf16 = self.w_scale.bfloat16(), self.bias.bfloat16()
        self.original = linear

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if Int8Linear.variant == VARIANTS[0]:
            return self.original(x)
        rows = x.reshape(-1, x.shape[-1])
        x_scale = rows.abs().amax(1, keepdim=True).float().clamp_(min=1e-12).div_(127)
        x_int8 = rows.float().div_(x_scale).round_().to(torch.int8)
        product = torch._int_mm(x_int8, self.w_int8)
        if Int8Linear.variant == VARIANTS[1]:
            y = product.float().mul_(x_scale).mul_(self.w_scale).add_(self.bias).to(x.dtype)
        else:
            y = product.bfloat16().mul_(x_scale.bfloat16()).mul_(self.w_scale_bf16).add_(self.bias_bf16)
        return y.reshape(*x.shape[:-1], -1)


def swap_products(model: nn.Module) -> None:
    """Put `Int8Linear` in place of every layer's attention and up-projection products."""
    for layer in model.backbone.encoder.layer:
        attention = layer.attention
        for holder, name in (
            (attention.self, "query"),
            (attention.self, "key"),
            (attention.self, "value"),
            (attention.output, "dense"),
            (layer.intermediate, "dense"),
        ):
            setattr(holder, name, Int8Linear(getattr(holder, name)))


def batch(rows: int, length: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Random token ids with the last row's last tenth padding, as the encoder's batches are."""
    ids = rng.integers(5, 200_000, size=(rows, length))
    ids[:, 0], ids[:, -1] = 0, 2
    mask = np.ones_like(ids)
    pad = length // 10
    ids[-1, -pad:], mask[-1, -pad:] = 1, 0
    return ids, mask


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--shapes", default="8x256,16x384", help="batch shapes, rows x length")
    ap.add_argument("--reps", type=int, default=3)
    args = ap.parse_args()
    path = full_size_model(WORK / "bge-m3-random-full")
    runtime = TorchRuntime.load(path, spec_for_directory(path), name="torch-fp32")
    rng = np.random.default_rng(0)
    shapes = [tuple(int(v) for v in s.split("x")) for s in args.shapes.split(",")]
    batches = [batch(rows, length, rng) for rows, length in shapes]
    references = [runtime.forward(ids, mask, dense=True, sparse=True, colbert=True) for ids, mask in batches]
    runtime.cast("torch-bf16")
    swap_products(runtime.model)
    report: dict[str, Any] = {
        "benchmark": "int8_products",
        "when": time.strftime("%Y-%m-%dT%H:%M:%S"),
        "machine": {"cpu": cpu_info(), "threads": torch.get_num_threads(), "torch": torch.__version__},
        "shapes": {},
    }
    for (rows, length), (ids, mask), ref in zip(shapes, batches, references):
        cpu: dict[str, list[float]] = {v: [] for v in VARIANTS}
        deviation: dict[str, dict[str, float]] = {}
        for rep in range(args.reps + 1):  # the first round warms up and measures the deviations
            for variant in VARIANTS:
                Int8Linear.variant = variant
                start = time.process_time()
                out = runtime.forward(ids, mask, dense=True, sparse=True, colbert=True)
                if rep:
                    cpu[variant].append(time.process_time() - start)
                    continue
                tokens = mask[:, 1:].astype(bool)
                deviation[variant] = {
                    "dense_cos_min": float((out.dense * ref.dense).sum(-1).min()),
                    "colbert_cos_min": float((out.colbert * ref.colbert).sum(-1)[tokens].min()),
                }
        bf16 = min(cpu[VARIANTS[0]])
        report["shapes"][f"{rows}x{length}"] = {
            v: {"cpu_s": cpu[v], "speedup_vs_bf16": bf16 / min(cpu[v]), **deviation[v]} for v in VARIANTS
        }
    out_file = RESULTS / f"int8_products-{time.strftime('%Y%m%d-%H%M%S')}.json"
    out_file.write_text(json.dumps(report, indent=2))
    print(f"{report['machine']['cpu']['model_name']}, {report['machine']['threads']} threads")
    print("| shape | variant | best CPU s | × bf16 | dense cos min | ColBERT cos min |")
    print("|---|---|---:|---:|---:|---:|")
    for shape, by in report["shapes"].items():
        for v, r in by.items():
            print(
                f"| {shape} | {v} | {min(r['cpu_s']):.2f} | {r['speedup_vs_bf16']:.2f} | "
                f"{r['dense_cos_min']:.5f} | {r['colbert_cos_min']:.5f} |"
            )
    print(f"wrote {out_file}")


if __name__ == "__main__":
    main()
