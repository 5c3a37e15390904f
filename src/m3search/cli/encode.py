"""`m3search encode`: JSONL texts in, JSONL vectors out (dense, sparse and/or ColBERT), with a progress bar."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

import click

from m3search.cli.options import device_option, model_option, runtime_option
from m3search.encoders.base import OUTPUT_KINDS, Chunking
from m3search.errors import InvalidInputError
from m3search.jsonl import blocks, json_objects
from m3search.progress import bar as progress_bar

#: Texts read and encoded at a time: bounds memory on large files, big enough to batch well.
BLOCK = 512


def _records(stream: IO[str], text_field: str) -> Iterator[tuple[Any, str]]:
    for lineno, obj in json_objects(stream):
        if text_field not in obj:
            raise InvalidInputError(f"line {lineno}: expected a JSON object with a {text_field!r} field")
        if not isinstance(obj[text_field], str):
            raise InvalidInputError(f"line {lineno}: field {text_field!r} is not a string")
        yield obj.get("id", obj.get("_id", lineno)), obj[text_field]


def _count_lines(path: Path) -> int:
    with path.open("rb") as f:
        return sum(1 for line in f if line.strip())


@click.command("encode")
@model_option
@click.option(
    "--input",
    "input_path",
    required=True,
    type=click.Path(dir_okay=False, path_type=Path),
    help="JSONL file, one object per line ('-' for stdin).",
)
@click.option("--text-field", default="text", show_default=True, help="Field holding the text.")
@click.option(
    "--output",
    "output_path",
    required=True,
    type=click.Path(dir_okay=False, path_type=Path),
    help="JSONL output ('-' for stdout).",
)
@click.option("--dense", is_flag=True, help="Write dense vectors (the default when no output is chosen).")
@click.option("--sparse", is_flag=True, help="Write sparse weights: {token id: weight}.")
@click.option("--colbert", is_flag=True, help="Write ColBERT vectors: one per token.")
@click.option("--max-length", type=int, default=None, help="Tokens per text (default: the model's default).")
@click.option("--batch-size", type=int, default=32, show_default=True)
@click.option(
    "--chunking",
    type=click.Choice(["truncate", "chunk", "mcls"]),
    default="truncate",
    show_default=True,
    help="What to do with texts longer than --max-length.",
)
@click.option(
    "--query", "is_query", is_flag=True, help="Encode as queries (applies the model's query prefix)."
)
@runtime_option
@device_option
def command(
    model: str,
    input_path: Path,
    text_field: str,
    output_path: Path,
    dense: bool,
    sparse: bool,
    colbert: bool,
    max_length: int | None,
    batch_size: int,
    chunking: Chunking,
    is_query: bool,
    runtime: str,
    device: str | None,
) -> None:
    """Encode the texts of a JSONL file; write one JSON object per input line."""
    from m3search.encoders import load_encoder

    if not (dense or sparse or colbert):
        dense = True
    encoder = load_encoder(model, runtime=runtime, device=device, sparse="model" if sparse else "none")
    asked = {"dense": dense, "sparse": sparse, "colbert": colbert}
    encoder.check_outputs([k for k in OUTPUT_KINDS if asked[k]])
    total = None if str(input_path) == "-" else _count_lines(input_path)
    src = sys.stdin if str(input_path) == "-" else input_path.open(encoding="utf-8")
    dst = sys.stdout if str(output_path) == "-" else output_path.open("w", encoding="utf-8")
    truncated = 0
    try:
        with progress_bar(total=total, unit="doc", desc="encode") as bar:
            for block in blocks(_records(src, text_field), BLOCK):
                result = encoder.encode(
                    [t for _, t in block],
                    batch_size=batch_size,
                    max_length=max_length,
                    return_dense=dense,
                    return_sparse=sparse,
                    return_colbert=colbert,
                    chunking=chunking,
                    is_query=is_query,
                )
                truncated += len(result.truncated)
                for i, (doc_id, _) in enumerate(block):
                    out: dict[str, Any] = {"id": doc_id}
                    if result.dense is not None:
                        out["dense"] = result.dense[i].tolist()
                    if result.sparse is not None:
                        out["sparse"] = {str(k): v for k, v in result.sparse[i].items()}
                    if result.colbert is not None:
                        out["colbert"] = result.colbert[i].tolist()
                    dst.write(json.dumps(out) + "\n")
                bar.update(len(block))
    finally:
        if src is not sys.stdin:
            src.close()
        if dst is not sys.stdout:
            dst.close()
    if truncated:
        click.echo(
            f"{truncated} texts were truncated to the maximum length; use --chunking chunk to keep "
            "all of their text",
            err=True,
        )
