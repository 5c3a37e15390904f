"""Options shared by several commands, defined once."""

from __future__ import annotations

import click

from m3search.progress import set_quiet

model_option = click.option(
    "--model",
    "-m",
    default="intfloat/multilingual-e5-small",
    show_default=True,
    help="Hub id, alias or model directory.",
)
runtime_option = click.option(
    "--runtime",
    default="auto",
    show_default=True,
    help="How the model runs: auto (fastest runtime that passes its quality guard here), torch-fp32 (the exact "
    "reference), torch-bf16, onnx-fp32, onnx-int8, cuda-fp16, cuda-bf16.",
)
device_option = click.option("--device", default=None, help="torch device (cpu, cuda, cuda:1); default: cpu.")
normalize_option = click.option(
    "--normalize",
    type=click.Choice(["auto", "none", "minmax"]),
    default="auto",
    show_default=True,
    help="Weighted fusion: rescale each mode's scores over the candidates to [0, 1] first (minmax), keep the "
    "bge-m3 reference formula (none), or auto: minmax when the sparse weights are BM25, else none.",
)


def _quiet(ctx: click.Context, param: click.Parameter, value: bool) -> bool:
    if value or ctx.parent is None:  # the top-level group resets it on every invocation
        set_quiet(value)
    return value


quiet_option = click.option(
    "--quiet",
    "-q",
    is_flag=True,
    expose_value=False,
    callback=_quiet,
    help="No progress on stderr: neither bars (drawn only on a terminal) nor notes such as the runtime auto chose.",
)
