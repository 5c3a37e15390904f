"""`m3search index create|add|delete|compact|stats|verify`: build, maintain and check a collection from the shell.

`add` reads JSONL (`{"id", "text", "image", "metadata", ...}`; `image` is a path, relative ones from the JSONL
file's folder, or base64), BEIR `corpus.jsonl` (`{"_id", "title", "text"}`), image files (one image document
each: .jpg, .png, .webp, .gif, .bmp) or plain text files (one document per file, its path as id), in blocks,
with a progress bar.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click

from m3search.cli.options import runtime_option
from m3search.errors import InvalidInputError
from m3search.jsonl import corpus_records
from m3search.progress import bar as progress_bar

#: Documents read and written per upsert: one durable transaction each, big enough to batch the model well.
BLOCK = 256
FORMATS = ("auto", "jsonl", "beir", "text", "image")
#: File suffixes `auto` reads as image documents.
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp", ".gif", ".bmp")


def _file_record(path: Path, root: Path, fmt: str) -> dict[str, Any]:
    """One document per file: an image document (its path as id) or a text one."""
    doc_id = str(path.relative_to(root)) if path.is_relative_to(root) else str(path)
    if fmt == "image" or (fmt == "auto" and path.suffix.lower() in IMAGE_SUFFIXES):
        return {"id": doc_id, "image": path, "metadata": {"path": str(path)}}
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise InvalidInputError(f"{path} is not UTF-8 text ({exc.reason})") from None
    return {"id": doc_id, "text": text, "metadata": {"path": str(path)}}


def _is_jsonl(path: Path, fmt: str) -> bool:
    return fmt in ("jsonl", "beir") or (
        fmt == "auto" and path.suffix.lower() in (".jsonl", ".json", ".ndjson")
    )


def _count(paths: list[Path], fmt: str) -> int:
    total = 0
    for path in paths:
        if _is_jsonl(path, fmt):
            with path.open("rb") as f:
                total += sum(1 for line in f if line.strip())
        else:
            total += 1
    return total


def _expand(inputs: tuple[Path, ...]) -> list[tuple[Path, Path]]:
    """(file, root) pairs: files as given, directories walked for their files."""
    out = []
    for item in inputs:
        if item.is_dir():
            out += [(p, item) for p in sorted(item.rglob("*")) if p.is_file()]
        elif item.is_file():
            out.append((item, item.parent))
        else:
            raise InvalidInputError(f"{item} does not exist")
    return out


@click.group("index")
def command() -> None:
    """Create and maintain collections (embedded hybrid indexes)."""


@command.command("create")
@click.argument("path", type=click.Path(path_type=Path))
@click.option(
    "--model",
    "-m",
    default=None,
    help="Hub id, alias or model directory (e.g. BAAI/bge-m3, intfloat/multilingual-e5-small).",
)
@click.option(
    "--outputs",
    default=None,
    help="Comma-separated subset of dense,sparse,colbert (default: all the "
    "model gives; models without a sparse head get BM25).",
)
@click.option("--dim", type=int, default=None, help="Dense dimension, for a collection fed only vectors.")
@click.option(
    "--colbert-dim", type=int, default=None, help="ColBERT dimension, for a vectors-only collection."
)
@click.option(
    "--dense-index", type=click.Choice(["hnsw", "hnsw-sq8", "flat"]), default="hnsw", show_default=True
)
@click.option("--colbert-dtype", type=click.Choice(["float16", "int8"]), default="float16", show_default=True)
@click.option("--max-length", type=int, default=None, help="Tokens per document (default: the model's).")
@click.option(
    "--image-encoder",
    default=None,
    help="Let the collection hold images: an adapter directory (m3search images train-adapter) or a "
    "Visualized-BGE checkpoint, for the same text model.",
)
@runtime_option
def create(
    path: Path,
    model: str | None,
    outputs: str | None,
    dim: int | None,
    colbert_dim: int | None,
    dense_index: str,
    colbert_dtype: str,
    max_length: int | None,
    image_encoder: str | None,
    runtime: str,
) -> None:
    """Create an empty collection at PATH."""
    from m3search import Collection

    if model is None and dim is None:
        raise click.UsageError("give --model (to encode text) or --dim (for a collection fed only vectors)")
    kinds = [k.strip() for k in outputs.split(",")] if outputs else None
    with Collection.create(
        path,
        model,
        outputs=kinds,
        dim=dim,
        colbert_dim=colbert_dim,
        dense_index=dense_index,
        colbert_dtype=colbert_dtype,
        max_length=max_length,
        runtime=runtime,
        image_encoder=image_encoder,
    ) as collection:
        cfg = collection.config
        click.echo(
            f"created {path}: model {cfg.model}, outputs {', '.join(cfg.outputs)}"
            + (f" (sparse: {cfg.sparse_source})" if cfg.sparse_source else "")
            + (f", images: {cfg.image_encoder['name']}" if cfg.image_encoder else "")
        )


@command.command("add")
@click.argument("path", type=click.Path(path_type=Path))
@click.argument("inputs", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option(
    "--format",
    "fmt",
    type=click.Choice(FORMATS),
    default="auto",
    show_default=True,
    help="auto: .jsonl files are JSONL (BEIR when records have '_id'), image files are images, other "
    "files are plain text.",
)
@click.option("--batch-size", type=int, default=32, show_default=True, help="Texts per model batch.")
@click.option(
    "--ray",
    "use_ray",
    is_flag=True,
    help="Encode on a Ray cluster (JSONL / BEIR files; needs m3search[ray]); this process writes.",
)
@click.option("--ray-address", default=None, help="With --ray: the cluster to join (default: a local Ray).")
@click.option("--workers", type=int, default=2, show_default=True, help="With --ray: encoder actors.")
@click.option(
    "--gpus-per-worker", type=float, default=0, show_default=True, help="With --ray: GPUs per actor."
)
@click.option(
    "--on-error",
    type=click.Choice(["fail", "skip"]),
    default="fail",
    show_default=True,
    help="With --ray: a bad record (reported with FILE:LINE) fails the run before anything is written, or is "
    "skipped.",
)
@runtime_option
def add(
    path: Path,
    inputs: tuple[Path, ...],
    fmt: str,
    batch_size: int,
    use_ray: bool,
    ray_address: str | None,
    workers: int,
    gpus_per_worker: float,
    on_error: str,
    runtime: str,
) -> None:
    """Add (or replace, by id) the documents of INPUTS to the collection at PATH."""
    from m3search import Collection

    files = _expand(inputs)
    if use_ray:
        _add_on_ray(path, files, fmt, batch_size, ray_address, workers, gpus_per_worker, on_error, runtime)
        return
    total = _count([f for f, _ in files], fmt)
    written = 0
    with (
        Collection.open(path, runtime=runtime) as collection,
        progress_bar(total=total, unit="doc", desc="index") as bar,
    ):
        block: list[dict[str, Any]] = []
        for file, root in files:
            records = (
                (r for _, r in corpus_records(file, fmt))
                if _is_jsonl(file, fmt)
                else iter([_file_record(file, root, fmt)])
            )
            for record in records:
                block.append(record)
                if len(block) == BLOCK:
                    written += collection.upsert(block, batch_size=batch_size)
                    bar.update(len(block))
                    block = []
        if block:
            written += collection.upsert(block, batch_size=batch_size)
            bar.update(len(block))
        count = collection.count()
    click.echo(f"wrote {written} documents; {path} holds {count}")


def _add_on_ray(
    path: Path,
    files: list[tuple[Path, Path]],
    fmt: str,
    batch_size: int,
    ray_address: str | None,
    workers: int,
    gpus_per_worker: float,
    on_error: str,
    runtime: str,
) -> None:
    """`add --ray`: encode on Ray actors, write here (see `m3search.distributed`)."""
    from m3search.extras import require

    require("ray", "ray", "distributed ingest (--ray)")
    from m3search.distributed import upsert_distributed

    others = [str(f) for f, _ in files if not _is_jsonl(f, fmt)]
    if others:
        raise click.UsageError(f"--ray reads JSONL / BEIR corpus files only, not {', '.join(others[:3])}")
    summary = upsert_distributed(
        path,
        [f for f, _ in files],
        fmt=fmt,
        workers=workers,
        gpus_per_worker=gpus_per_worker,
        batch_size=batch_size,
        runtime=runtime,
        ray_address=ray_address,
        on_error="skip" if on_error == "skip" else "fail",
    )
    for problem in summary.bad:
        click.echo(f"skipped {problem}", err=True)
    stages = ", ".join(f"{k} {v:.1f} s" for k, v in summary.seconds.items())
    click.echo(
        f"wrote {summary.documents} documents ({summary.unchanged} unchanged, {len(summary.bad)} bad skipped, "
        f"{summary.tokens} tokens) with {summary.workers} Ray workers at {summary.docs_per_second:.1f} docs/s; "
        f"{stages}"
    )


@command.command("delete")
@click.argument("path", type=click.Path(path_type=Path))
@click.argument("ids", nargs=-1, required=True)
def delete(path: Path, ids: tuple[str, ...]) -> None:
    """Delete documents by id."""
    from m3search import Collection

    with Collection.open(path) as collection:
        deleted = collection.delete(list(ids))
        click.echo(f"deleted {deleted} of {len(ids)} ids; {path} holds {collection.count()}")


@command.command("compact")
@click.argument("path", type=click.Path(path_type=Path))
def compact(path: Path) -> None:
    """Merge all segments into one, dropping deleted rows."""
    from m3search import Collection

    with Collection.open(path) as collection:
        collection.compact()
        click.echo(
            f"compacted {path}: {len(collection.stats()['segments'])} segment(s), {collection.count()} docs"
        )


@command.command("stats")
@click.argument("path", type=click.Path(path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def stats(path: Path, as_json: bool) -> None:
    """Show documents, segments and sizes of a collection."""
    from m3search import Collection

    with Collection.open(path, readonly=True) as collection:
        info = collection.stats()
    if as_json:
        click.echo(json.dumps(info, indent=2))
        return
    click.echo(
        f"{info['path']}: {info['count']} documents, model {info['model']}, outputs "
        f"{', '.join(info['outputs'])}, dense index {info['dense_index']}"
    )
    click.echo(
        f"incremental level: {info['pending']} documents; tombstones: {info['tombstones']}; "
        f"disk: {info['disk_bytes'] / 2**20:.1f} MiB"
    )
    for seg in info["segments"]:
        click.echo(
            f"  {seg['name']}: {seg['rows']} rows ({seg['deleted']} deleted), "
            f"{'HNSW' if seg['hnsw'] else 'exact'}, {sum(seg['bytes'].values()) / 2**20:.1f} MiB"
        )


@command.command("verify")
@click.argument("path", type=click.Path(path_type=Path))
def verify(path: Path) -> None:
    """Check every file of the collection at PATH against its recorded checksum (and the database's
    structure); exit status 1 when anything is damaged."""
    from m3search import Collection

    with Collection.open(path, readonly=True) as collection:
        report = collection.verify(show_progress=True)
    for problem in report["problems"]:
        click.echo(f"DAMAGED {problem.file}: {problem}", err=True)
    if report["unchecked"]:
        click.echo(
            f"{len(report['unchecked'])} segment(s) sealed before checksums were recorded (structure checked "
            f"only): {', '.join(report['unchecked'])}"
        )
    if report["problems"]:
        raise click.ClickException(f"{path}: {len(report['problems'])} damaged file(s)")
    click.echo(f"{path}: ok ({report['segments']} segment(s), {report['bytes'] / 2**20:.1f} MiB checksummed)")
