"""`m3search index create|add|delete|compact|stats|verify|migrate`: build, maintain, check and move a collection
from the shell.

`add` reads JSONL, BEIR `corpus.jsonl`, Parquet, image files and folders or plain text files
(`m3search.store.corpus`), bad records reported with FILE:LINE, and writes them in blocks with a progress bar;
with `--ray` a Ray cluster encodes them (`m3search.distributed`).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import click

from m3search.cli.options import runtime_option
from m3search.errors import InvalidInputError
from m3search.progress import bar as progress_bar
from m3search.progress import note
from m3search.store.corpus import FORMATS

if TYPE_CHECKING:
    from m3search.search.modes import Mode

#: Documents read and written per upsert: one durable transaction each, big enough to batch the model well.
BLOCK = 256


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
@click.option(
    "--colbert-dtype",
    type=click.Choice(["float16", "int8", "2bit", "binary"]),
    default="float16",
    show_default=True,
    help="How ColBERT token vectors are stored (bytes per token at 1024-d: 2048, 1028, 260, 128); on Qdrant: "
    "the multivector's quantization (int8 scalar, 2-bit or 1-bit binary).",
)
@click.option(
    "--colbert-recheck",
    type=click.IntRange(min=0),
    default=0,
    show_default=True,
    help="Also keep float16 token vectors on disk and re-score the best M candidates of the compressed MaxSim "
    "with them (Qdrant: rescore with the original vectors).",
)
@click.option(
    "--colbert-prune",
    type=click.Choice(["punctuation"]),
    default=None,
    help="Drop special and punctuation tokens' ColBERT vectors at index time.",
)
@click.option(
    "--sparse-forward/--no-sparse-forward",
    default=True,
    show_default=True,
    help="Store the sparse forward index (~200 bytes a document): faster lexical scores for the candidates of "
    "hybrid searches in large collections. Local backend.",
)
@click.option("--max-length", type=int, default=None, help="Tokens per document (default: the model's).")
@click.option(
    "--image-encoder",
    default=None,
    help="Let the collection hold images: an adapter directory (m3search images train-adapter) or a "
    "Visualized-BGE checkpoint, for the same text model.",
)
@click.option(
    "--backend",
    type=click.Choice(["local", "qdrant", "edge"]),
    default="local",
    show_default=True,
    help="local: an embedded collection in PATH. qdrant: a Qdrant collection named after PATH, which becomes a "
    "link to it (every command taking PATH then works on it). edge: a collection in PATH stored by Qdrant Edge "
    "(Qdrant's engine in-process; one process opens it at a time).",
)
@click.option(
    "--qdrant-url", default=None, help="Qdrant server or cluster URL (API key from $QDRANT_API_KEY)."
)
@click.option(
    "--qdrant-path", type=click.Path(path_type=Path), default=None, help="Qdrant local-mode directory."
)
@click.option("--shards", type=int, default=None, help="Qdrant shard_number (cluster).")
@click.option("--replicas", type=int, default=None, help="Qdrant replication_factor (cluster).")
@runtime_option
def create(
    path: Path,
    model: str | None,
    outputs: str | None,
    dim: int | None,
    colbert_dim: int | None,
    dense_index: str,
    colbert_dtype: str,
    colbert_recheck: int,
    colbert_prune: str | None,
    sparse_forward: bool,
    max_length: int | None,
    image_encoder: str | None,
    backend: str,
    qdrant_url: str | None,
    qdrant_path: Path | None,
    shards: int | None,
    replicas: int | None,
    runtime: str,
) -> None:
    """Create an empty collection at PATH (or a Qdrant collection linked from PATH)."""
    from m3search import Collection

    if model is None and dim is None:
        raise click.UsageError("give --model (to encode text) or --dim (for a collection fed only vectors)")
    kinds = [k.strip() for k in outputs.split(",")] if outputs else None
    qdrant = _qdrant_options(backend, qdrant_url, qdrant_path, shards=shards, replicas=replicas)
    with Collection.create(
        path.name if qdrant else path,
        model,
        backend=backend,
        **qdrant,
        outputs=kinds,
        dim=dim,
        colbert_dim=colbert_dim,
        dense_index=dense_index,
        colbert_dtype=colbert_dtype,
        colbert_recheck=colbert_recheck,
        colbert_prune=colbert_prune,
        sparse_forward=sparse_forward,
        max_length=max_length,
        runtime=runtime,
        image_encoder=image_encoder,
    ) as collection:
        cfg = collection.config
        if qdrant:
            from m3search.store.backends.qdrant import write_link

            write_link(path, path.name, url=qdrant_url, path=qdrant_path)
        click.echo(
            f"created {collection.location}{f' (linked from {path})' if qdrant else ''}: model {cfg.model}, outputs {', '.join(cfg.outputs)}"
            + (f" (sparse: {cfg.sparse_source})" if cfg.sparse_source else "")
            + (f", images: {cfg.image_encoder['name']}" if cfg.image_encoder else "")
        )


def _qdrant_options(
    backend: str, url: str | None, path: Path | None, **cluster: int | None
) -> dict[str, Any]:
    """The qdrant backend's connection options from the command line ({} for the others)."""
    if backend != "qdrant":
        if url or path:
            raise click.UsageError("--qdrant-url and --qdrant-path go with --backend qdrant")
        return {}
    if (url is None) == (path is None):
        raise click.UsageError("--backend qdrant needs one of --qdrant-url or --qdrant-path")
    import os

    where: dict[str, Any] = (
        {"url": url, "api_key": os.environ.get("QDRANT_API_KEY")} if url else {"path": path}
    )
    return {**where, **{k: v for k, v in cluster.items() if v is not None}}


@command.command("add")
@click.argument("path", type=click.Path(path_type=Path))
@click.argument("inputs", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option(
    "--format",
    "fmt",
    type=click.Choice(FORMATS),
    default="auto",
    show_default=True,
    help="auto: .jsonl files are JSONL (BEIR when records have '_id'), .parquet files Parquet, image files "
    "images, other files plain text.",
)
@click.option("--batch-size", type=int, default=32, show_default=True, help="Texts per model batch.")
@click.option(
    "--on-error",
    type=click.Choice(["fail", "skip"]),
    default="fail",
    show_default=True,
    help="A bad record (reported with FILE:LINE) stops the run, or is skipped and listed.",
)
@click.option(
    "--ray",
    "use_ray",
    is_flag=True,
    help="Encode on a Ray cluster (extra m3search[ray]); this process writes, in order, and a re-run skips "
    "documents already stored unchanged.",
)
@click.option("--ray-address", default=None, help="With --ray: the cluster to join (default: a local Ray).")
@click.option("--workers", type=int, default=None, help="With --ray: encoder actors (default 2).")
@click.option("--gpus-per-worker", type=float, default=None, help="With --ray: GPUs per actor (default 0).")
@runtime_option
def add(
    path: Path,
    inputs: tuple[Path, ...],
    fmt: str,
    batch_size: int,
    on_error: Literal["fail", "skip"],
    use_ray: bool,
    ray_address: str | None,
    workers: int | None,
    gpus_per_worker: float | None,
    runtime: str,
) -> None:
    """Add (or replace, by id) the documents of INPUTS to the collection at PATH."""
    if use_ray:
        workers = 2 if workers is None else workers
        gpus = 0.0 if gpus_per_worker is None else gpus_per_worker
        _add_on_ray(path, inputs, fmt, batch_size, on_error, ray_address, workers, gpus, runtime)
        return
    if ray_address is not None or workers is not None or gpus_per_worker is not None:
        raise click.UsageError("--ray-address, --workers and --gpus-per-worker go with --ray")
    from m3search import Collection
    from m3search.store.corpus import count, expand, read_corpus

    total = count(expand(inputs), fmt)
    skipped: list[str] | None = [] if on_error == "skip" else None
    written = 0
    with (
        Collection.open(path, runtime=runtime) as collection,
        progress_bar(total=total, unit="doc", desc="index") as bar,
    ):
        cfg = collection.config
        block: list[dict[str, Any]] = []
        for _, record in read_corpus(inputs, fmt, skipped=skipped, dim=cfg.dim, colbert_dim=cfg.colbert_dim):
            block.append(record)
            if len(block) == BLOCK:
                written += collection.upsert(block, batch_size=batch_size)
                bar.update(len(block))
                block = []
        if block:
            written += collection.upsert(block, batch_size=batch_size)
            bar.update(len(block))
        count_now = collection.count()
    for problem in skipped or []:
        note(f"skipped {problem}")
    bad = f", skipped {len(skipped)} bad record(s)" if skipped else ""
    click.echo(f"wrote {written} documents{bad}; {path} holds {count_now}")


def _add_on_ray(
    path: Path,
    inputs: tuple[Path, ...],
    fmt: str,
    batch_size: int,
    on_error: Literal["fail", "skip"],
    ray_address: str | None,
    workers: int,
    gpus_per_worker: float,
    runtime: str,
) -> None:
    """`add --ray`: encode on Ray actors, write here (see `m3search.distributed`)."""
    from m3search.extras import require

    require("ray", "ray", "distributed ingest (--ray)")
    from m3search.distributed import upsert_distributed

    summary = upsert_distributed(
        path,
        inputs,
        fmt=fmt,
        workers=workers,
        gpus_per_worker=gpus_per_worker,
        batch_size=batch_size,
        runtime=runtime,
        ray_address=ray_address,
        on_error=on_error,
    )
    for problem in summary.bad:
        note(f"skipped {problem}")
    stages = ", ".join(f"{k} {v:.1f} s" for k, v in summary.seconds.items())
    click.echo(
        f"wrote {summary.documents} documents ({summary.unchanged} unchanged, {len(summary.bad)} bad skipped, "
        f"{summary.tokens} tokens) with {summary.workers} Ray workers at {summary.docs_per_second:.1f} docs/s; "
        f"{stages}; {path} holds {summary.count}"
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
    """Merge all segments into one, dropping deleted rows (a Qdrant server's optimizers do it on their own)."""
    from m3search import Collection

    with Collection.open(path) as collection:
        collection.compact()
        stats = collection.stats()
        # edge and qdrant collections have no local segments: the engine's own count (edge: one more for writes)
        engine = stats.get("edge") or stats.get("qdrant")
        segments = engine["segments_count"] if engine else len(stats["segments"])
        click.echo(f"compacted {path}: {segments} segment(s), {collection.count()} docs")


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


@command.command("tune")
@click.argument("path", type=click.Path(path_type=Path))
@click.option(
    "--queries",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    default=None,
    help='Labelled queries: BEIR queries.jsonl ({"_id", "text"} a line).',
)
@click.option(
    "--qrels",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    default=None,
    help="Their judgments: BEIR qrels TSV (query-id, corpus-id, score).",
)
@click.option(
    "--pseudo",
    type=int,
    default=None,
    help="Without labels: this many pseudo-queries, each a sentence of a sampled document of the "
    "collection, that document its answer.",
)
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the pseudo-query sample.")
@click.option(
    "--mode",
    type=click.Choice(["all", "dense+sparse"]),
    default=None,
    help="Hybrid mode to tune (default: the richest the collection allows).",
)
@click.option(
    "--fusion",
    "fusions",
    default=None,
    help="Fusions to try, comma-separated (default: all of weighted, rrf, dbsf).",
)
@click.option("--metric", default="ndcg@10", show_default=True, help="Maximized over the queries.")
@click.option("--step", type=float, default=0.1, show_default=True, help="Weight grid step (divides 1).")
@click.option("--dry-run", is_flag=True, help="Report what tuning finds without storing it.")
@runtime_option
def tune(
    path: Path,
    queries: Path | None,
    qrels: Path | None,
    pseudo: int | None,
    seed: int,
    mode: Mode | None,
    fusions: str | None,
    metric: str,
    step: float,
    dry_run: bool,
    runtime: str,
) -> None:
    """Learn PATH's search defaults (fusion, weights) from labelled queries or pseudo-queries, and store them
    in the collection so its searches use them (a `search.json` beside its data)."""
    from m3search import Collection
    from m3search.eval.datasets import read_qrels, read_queries
    from m3search.eval.engine import CollectionSearcher
    from m3search.eval.metrics import parse_measure
    from m3search.eval.runner import tune_fusion
    from m3search.eval.tune import judged_task, sample_pseudo_queries
    from m3search.search.fusion import DEFAULT_FUSION, FUSIONS
    from m3search.store.search_defaults import SearchDefaults

    if (queries is None) != (qrels is None):
        raise click.UsageError("give --queries and --qrels together")
    if (queries is None) == (pseudo is None):
        raise click.UsageError("give labelled --queries/--qrels or --pseudo N, not both or neither")
    parse_measure(metric)
    chosen = [f.strip() for f in fusions.split(",")] if fusions else list(FUSIONS)
    unknown = [f for f in chosen if f not in FUSIONS]
    if unknown:
        raise InvalidInputError(f"unknown fusion {', '.join(unknown)}: choose from {', '.join(FUSIONS)}")
    with Collection.open(path, runtime=runtime) as collection:
        mode = mode or collection.default_mode
        if mode not in ("all", "dense+sparse"):
            raise InvalidInputError(f"collection {path} allows mode {mode} only: there is no fusion to tune")
        source: dict[str, Any]
        if queries is not None and qrels is not None:
            judged = read_qrels(qrels)
            texts = read_queries(queries)
            source = {"queries": str(queries), "qrels": str(qrels)}
        else:
            assert pseudo is not None  # checked above: labels or --pseudo
            texts, judged = sample_pseudo_queries(collection, pseudo, seed=seed)
            source = {"pseudo_queries": len(texts), "seed": seed}
        task = judged_task(path.name, texts, judged)
        searcher = CollectionSearcher(collection).reusing_queries()
        with progress_bar(desc=f"tune {path.name} on {len(task.queries)} queries", unit="trial") as bar:
            choice = tune_fusion(
                searcher, task, mode=mode, fusions=chosen, metric=metric, step=step, on_trial=bar.update
            )
        for fusion, result in choice.per_fusion.items():
            weights = ",".join(f"{w:g}" for w in result.best)
            click.echo(f"  {fusion:<9} best weights {weights:<14} {metric} {result.best_score:.4f}")
        click.echo(
            f"default ({DEFAULT_FUSION}) {metric} {choice.default_score:.4f}; chosen: {choice.fusion} "
            f"{','.join(f'{w:g}' for w in choice.weights)} at {choice.score:.4f}"
        )
        if dry_run:
            return
        collection.set_search_defaults(
            SearchDefaults(
                mode=mode,
                fusion=choice.fusion,  # type: ignore[arg-type]  # one of FUSIONS, checked above
                weights=list(choice.weights),
                source={**source, **choice.to_dict()},
            )
        )
        click.echo(f"stored in {path}: its searches now default to {mode}, {choice.fusion} fusion")


@command.command("migrate")
@click.argument("source", type=click.Path(path_type=Path))
@click.argument("dest", type=click.Path(path_type=Path))
@click.option(
    "--backend",
    type=click.Choice(["local", "qdrant", "edge"]),
    default="qdrant",
    show_default=True,
    help="The backend of DEST (qdrant: a Qdrant collection named after DEST, linked from DEST; edge: a "
    "Qdrant Edge collection in DEST).",
)
@click.option(
    "--qdrant-url", default=None, help="Qdrant server or cluster URL (API key from $QDRANT_API_KEY)."
)
@click.option(
    "--qdrant-path", type=click.Path(path_type=Path), default=None, help="Qdrant local-mode directory."
)
@click.option("--shards", type=int, default=None, help="Qdrant shard_number of a new DEST.")
@click.option("--replicas", type=int, default=None, help="Qdrant replication_factor of a new DEST.")
@click.option("--batch-size", type=int, default=256, show_default=True, help="Documents per write.")
def migrate(
    source: Path,
    dest: Path,
    backend: str,
    qdrant_url: str | None,
    qdrant_path: Path | None,
    shards: int | None,
    replicas: int | None,
    batch_size: int,
) -> None:
    """Copy collection SOURCE into DEST (to qdrant, or to local or edge with --backend) from its stored
    vectors, without encoding again. Resumable: run it again after an interruption; documents DEST already
    holds are skipped."""
    from m3search import Collection
    from m3search.store.collection import is_collection
    from m3search.store.migrate import migrate as copy_documents
    from m3search.store.migrate import open_target

    resume = is_collection(dest)  # a previous run made it: it knows where it is
    qdrant = (
        {} if resume else _qdrant_options(backend, qdrant_url, qdrant_path, shards=shards, replicas=replicas)
    )
    with Collection.open(source, readonly=True, cache=False) as src:
        total = src.count()
        with (
            open_target(src, dest, backend, **qdrant) as target,
            progress_bar(total=total, unit="doc", desc="migrate") as bar,
        ):
            written = copy_documents(src, target, batch_size=batch_size, progress=bar.update)
            count = target.count()
    click.echo(f"wrote {written} documents ({total - written} were there); {target.location} holds {count}")


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
    click.echo(f"{path}: ok ({report['checked']})")
