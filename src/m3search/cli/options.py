"""Options shared by several commands, defined once."""

from __future__ import annotations

import click

from m3search.progress import set_quiet
from m3search.search.fusion import NORMALIZATIONS

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
    type=click.Choice(NORMALIZATIONS),
    default=None,
    help="How fusion puts the modes on one scale: signal (min-max scaled, each mode weighted by how much it "
    "found for this query), minmax (without that weighting), none (the bge-m3 reference formula), or auto "
    "(= signal). Default: the collection's tuned setting, else auto.",
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
