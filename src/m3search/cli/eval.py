"""`m3search eval`: retrieval quality on real data; `m3search eval tune-weights`: tune the fusion weights."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from m3search.cli.options import device_option, model_option, normalize_option, quiet_option, runtime_option
from m3search.errors import InvalidInputError
from m3search.scoring import check_weights
from m3search.search.fusion import (
    DEFAULT_FUSION,
    DEFAULT_NORMALIZE,
    FUSIONS,
    default_weights,
    describe_defaults,
)

if TYPE_CHECKING:
    from m3search.eval.datasets import Unit
    from m3search.eval.tune import Method


class _DefaultGroup(click.Group):
    """A group whose `run` command is implied: `m3search eval --dataset ...` is `m3search eval run ...`; its
    help lists the options of `run` too, since those are the ones `m3search eval` takes."""

    default_command = "run"

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        if args and args[0] not in self.commands and args[0] not in ctx.help_option_names:
            args = [self.default_command, *args]
        return super().parse_args(ctx, args)

    def format_options(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        super().format_options(ctx, formatter)
        implied = self.commands[self.default_command]
        run_ctx = click.Context(implied, info_name=self.default_command, parent=ctx)
        own_help = implied.get_help_option(run_ctx)  # the group's own -h covers it
        params = [p for p in implied.get_params(run_ctx) if own_help is None or p.name != own_help.name]
        records = [r for p in params if (r := p.get_help_record(run_ctx)) is not None]
        with formatter.section(f"Options of `{self.default_command}` (implied when no command is given)"):
            formatter.write_dl(records)


def _csv(value: str) -> list[str]:
    return [v.strip() for v in value.split(",") if v.strip()]


def _ints(value: str | None) -> list[int] | None:
    if not value:
        return None
    try:
        return [int(v) for v in _csv(value)]
    except ValueError:
        raise InvalidInputError(f"--k takes comma-separated integers, got {value!r}") from None


def _weights(value: str) -> tuple[float, float, float]:
    try:
        return check_weights([float(v) for v in _csv(value)])
    except ValueError as exc:
        raise InvalidInputError(
            f"--weights takes dense,sparse,colbert numbers, got {value!r}: {exc}"
        ) from None


def _measures(k: str | None) -> tuple[str, ...]:
    from m3search.eval.metrics import DEFAULT_MEASURES, measures_at

    ks = _ints(k)
    return measures_at(ks) if ks else DEFAULT_MEASURES


def _settings(measures: tuple[str, ...], runs: list[Any], **extra: Any) -> dict[str, Any]:
    from m3search.eval.runner import depth_for

    return {
        "measures": list(measures),
        "depth": depth_for(measures),
        "runs": [r.label for r in runs],
        **extra,
    }


def _finish(results: dict[str, Any], output: Path) -> None:
    from m3search.eval.report import markdown, write_report

    paths = write_report(results, output)
    click.echo(markdown(results))
    click.echo(f"wrote {', '.join(str(p) for p in paths)}", err=True)


dataset_option = click.option(
    "--dataset",
    "-d",
    required=True,
    help="A BEIR folder (corpus.jsonl, queries.jsonl, qrels/), or xquad-r:PATH / squad:PATH for SQuAD-style "
    "files (answer retrieval).",
)
output_option = click.option(
    "--output",
    "-o",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("eval-results"),
    show_default=True,
    help="Folder for results.json, results.md and the plots.",
)
collection_option = click.option(
    "--collection",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Build the collection(s) here and keep them (default: a temporary folder, removed after).",
)
reindex_option = click.option(
    "--reindex",
    is_flag=True,
    help="Rebuild the --collection even if it exists (e.g. made by another runtime or for another slice); the "
    "old one is replaced only once the new one is complete.",
)
max_queries_option = click.option(
    "--max-queries",
    type=int,
    default=None,
    help="Evaluate a fixed sample of this many queries (the same every time).",
)


def engine_options(func: Any) -> Any:
    """How the model runs, the collection indexes and searches fuse: options of run and tune-weights."""
    options = [
        runtime_option,
        device_option,
        click.option(
            "--sparse",
            type=click.Choice(["auto", "model", "bm25"]),
            default="auto",
            show_default=True,
            help="Sparse weights: the model's head, BM25 over its tokenizer, or auto (the head when "
            "the model has one).",
        ),
        normalize_option,
        click.option(
            "--candidates",
            type=int,
            default=100,
            show_default=True,
            help="Candidates per first stage that the hybrid and colbert modes re-score.",
        ),
        click.option(
            "--rerank",
            type=int,
            default=None,
            help="Candidates ColBERT re-scores in modes colbert and all (default: the library's, 200).",
        ),
        click.option(
            "--dense-index",
            type=click.Choice(["hnsw", "hnsw-sq8", "flat"]),
            default=None,
            help="Dense index of the collection (HNSW only above its size threshold; smaller segments are "
            "searched exactly). Default: hnsw, or what a reused --collection has.",
        ),
        click.option(
            "--cache/--no-cache",
            default=False,
            show_default=True,
            help="Read and fill the shared embedding cache while indexing (a rerun skips the model; "
            "off by default so index timings measure the model).",
        ),
    ]
    options.append(quiet_option)
    for option in reversed(options):
        func = option(func)
    return func


def _engine_settings(encoder: Any, engine: dict[str, Any]) -> dict[str, Any]:
    """What results.json records about the model and the search settings: `runtime` is the runtime that made
    the vectors (what `auto` resolved to), with its `dtype`, the `runtime_requested` and, for auto, why."""
    identity = encoder.runtime_identity() or {}
    return {
        "encoder": encoder.describe(),
        **engine,
        "runtime": identity.get("runtime", engine["runtime"]),
        "dtype": identity.get("dtype"),
        "runtime_requested": engine["runtime"],
        "runtime_auto": identity.get("auto"),
    }


def _given(ctx: click.Context, names: list[str]) -> list[str]:
    """The options among `names` (parameter names) that the user set, spelled as on the command line."""
    from click.core import ParameterSource

    return [
        "--" + name.replace("_", "-")
        for name in names
        if ctx.get_parameter_source(name) in (ParameterSource.COMMANDLINE, ParameterSource.ENVIRONMENT)
    ]


def _refuse(ctx: click.Context, names: list[str], why: str) -> None:
    """Raise if the user set any of `names`, options that cannot apply here (`why`): never ignore one silently."""
    given = _given(ctx, names)
    if given:
        raise InvalidInputError(f"{' and '.join(given)} cannot apply: {why}")


def _check_applicable(ctx: click.Context, runs: list[Any], collection: Path | None) -> None:
    """Refuse engine options that none of `runs` would use, and --reindex without a --collection."""
    from m3search.eval.runner import required_outputs

    outputs = required_outputs(runs)
    modes = ", ".join(dict.fromkeys(r.mode for r in runs))
    if not any(r.hybrid for r in runs):
        _refuse(ctx, ["fusion", "weights"], f"no run fuses modes (modes: {modes}; dense+sparse and all fuse)")
    if not any(r.fusion == "weighted" for r in runs):
        _refuse(ctx, ["normalize"], "it rescales scores for weighted fusion, and no run fuses with weights")
    if not any(r.mode == "colbert" or r.hybrid for r in runs):
        _refuse(
            ctx, ["candidates"], f"only the colbert and hybrid modes re-score candidates (modes: {modes})"
        )
    if not any(r.mode in ("colbert", "all") for r in runs):
        _refuse(ctx, ["rerank"], f"only the colbert and all modes re-rank with ColBERT (modes: {modes})")
    if "sparse" not in outputs:
        _refuse(ctx, ["sparse"], f"no run uses sparse weights (modes: {modes})")
    if "dense" not in outputs:
        _refuse(ctx, ["dense_index"], f"no run uses dense vectors (modes: {modes})")
    if collection is None:
        _refuse(ctx, ["reindex"], "it rebuilds a kept --collection; without one every run indexes afresh")


@click.group("eval", cls=_DefaultGroup)
def command() -> None:
    """Evaluate retrieval on a dataset (the default command), or tune fusion weights."""


@command.command("run")
@model_option
@dataset_option
@click.option("--split", default="test", show_default=True, help="Qrels split of a BEIR dataset.")
@click.option(
    "--query-lang",
    default=None,
    help="SQuAD-style folders: question language(s), comma-separated or 'all' (default: en).",
)
@click.option(
    "--doc-lang",
    default=None,
    help="SQuAD-style sets: candidate language(s), comma-separated or 'all' (default: the query "
    "language). One task per (query, doc) language pair.",
)
@click.option(
    "--unit",
    type=click.Choice(["paragraph", "sentence"]),
    default=None,
    help="SQuAD-style sets: retrieve the paragraph or the sentence holding the answer (default: paragraph).",
)
@click.option(
    "--modes",
    default="dense,sparse,colbert,dense+sparse,all",
    show_default=True,
    help="Comma-separated: dense, sparse, colbert, dense+sparse, all.",
)
@click.option(
    "--fusion",
    default=",".join(FUSIONS),
    show_default=True,
    help=f"Fusions for the hybrid modes: {', '.join(FUSIONS)}.",
)
@click.option(
    "--weights",
    default=None,
    help="Fusion weights dense,sparse,colbert for every fusion (default: each fusion's own, as search uses: "
    + describe_defaults(",")
    + ").",
)
@click.option(
    "--encode-once",
    is_flag=True,
    help="Encode each query once and reuse its vectors in every run and task (BM25 weights re-made per "
    "collection): much faster on a busy machine; latencies then leave out query encoding.",
)
@click.option(
    "--k",
    "k",
    default=None,
    help="Cutoffs, e.g. 10,100: nDCG, Recall, MRR and MAP at each "
    "(default: nDCG@10, R@1, R@10, R@100, MRR@10, MAP@100).",
)
@max_queries_option
@click.option(
    "--max-docs",
    type=int,
    default=None,
    help="Index a fixed sample of this many documents (always keeping the judged ones).",
)
@collection_option
@reindex_option
@engine_options
@output_option
@click.option("--save-runs", is_flag=True, help="Also write TREC run files under OUTPUT/runs/.")
@click.pass_context
def run(
    ctx: click.Context,
    model: str,
    dataset: str,
    split: str,
    query_lang: str | None,
    doc_lang: str | None,
    unit: Unit | None,
    modes: str,
    fusion: str,
    weights: str | None,
    k: str | None,
    max_queries: int | None,
    max_docs: int | None,
    collection: Path | None,
    reindex: bool,
    output: Path,
    save_runs: bool,
    encode_once: bool,
    **engine: Any,
) -> None:
    """Index the dataset's corpus, run every query in every mode and fusion, report quality and latency."""
    from m3search.eval import engine as eval_engine
    from m3search.eval.datasets import load_tasks, slice_task
    from m3search.eval.report import build_results, slug, task_entry, write_trec_runs
    from m3search.eval.runner import plan_runs, required_outputs, run_task

    measures = _measures(k)
    runs = plan_runs(_csv(modes), _csv(fusion), _weights(weights) if weights is not None else None)
    _check_applicable(ctx, runs, collection)
    engine["normalize"] = engine["normalize"] or DEFAULT_NORMALIZE
    shared_queries: dict[str, Any] | None = {} if encode_once else None
    tasks = [
        slice_task(t, max_queries=max_queries, max_docs=max_docs)
        for t in load_tasks(dataset, split=split, query_lang=query_lang, doc_lang=doc_lang, unit=unit)
    ]
    outputs = required_outputs(runs)
    paths = [
        None if collection is None else collection if len(tasks) == 1 else collection / slug(task.name)
        for task in tasks
    ]
    encoder = eval_engine.load_model(
        model,
        outputs=[*outputs, *eval_engine.stored_outputs(paths)],
        runtime=engine["runtime"],
        device=engine["device"],
        sparse=engine["sparse"],
    )
    entries = []
    for task, path in zip(tasks, paths):
        with eval_engine.indexed_collection(
            task,
            model=model,
            outputs=outputs,
            encoder=encoder,
            path=path,
            normalize=engine["normalize"],
            candidates=engine["candidates"],
            rerank=engine["rerank"],
            dense_index=engine["dense_index"],
            cache=engine["cache"],
            shared_queries=shared_queries,
            reindex=reindex,
        ) as (searcher, stats):
            results = run_task(searcher, task, runs, measures=measures)
        entries.append(task_entry(task.describe(), stats, results))
        if save_runs:
            write_trec_runs(task.name, results, output)
    settings = _settings(
        measures,
        runs,
        dataset=dataset,
        max_queries=max_queries,
        max_docs=max_docs,
        **_engine_settings(encoder, engine),
    )
    _finish(build_results(model=model, settings=settings, tasks=entries), output)


@command.command("tune-weights")
@model_option
@dataset_option
@click.option("--dev-split", default=None, help="Split the weights are tuned on (default: train).")
@click.option(
    "--dev-fraction",
    type=float,
    default=None,
    help="Instead of a dev split, tune on this share of the --split queries (drawn with --seed) and report the "
    "rest: for sets with one split, such as SQuAD-style ones.",
)
@click.option("--seed", type=int, default=0, show_default=True, help="Which queries --dev-fraction draws.")
@click.option(
    "--split",
    default="test",
    show_default=True,
    help="Split the tuned weights are then evaluated on (never seen while tuning).",
)
@click.option("--mode", type=click.Choice(["all", "dense+sparse"]), default="all", show_default=True)
@click.option("--fusion", type=click.Choice(FUSIONS), default=DEFAULT_FUSION, show_default=True)
@click.option("--metric", default="ndcg@10", show_default=True, help="Maximized on the dev queries.")
@click.option("--method", type=click.Choice(["coordinate", "grid"]), default="coordinate", show_default=True)
@click.option("--step", type=float, default=0.1, show_default=True, help="Weight grid step (divides 1).")
@click.option("--max-dev-queries", type=int, default=None, help="Tune on a fixed sample of dev queries.")
@max_queries_option
@collection_option
@reindex_option
@engine_options
@output_option
@click.pass_context
def tune_weights(
    ctx: click.Context,
    model: str,
    dataset: str,
    dev_split: str | None,
    dev_fraction: float | None,
    seed: int,
    split: str,
    mode: str,
    fusion: str,
    metric: str,
    method: Method,
    step: float,
    max_dev_queries: int | None,
    max_queries: int | None,
    collection: Path | None,
    reindex: bool,
    output: Path,
    **engine: Any,
) -> None:
    """Search fusion weights on dev queries (a dev split, or --dev-fraction of the test split's), then evaluate
    default and tuned weights on the test queries."""
    from m3search.eval import engine as eval_engine
    from m3search.eval.metrics import DEFAULT_MEASURES, parse_measure
    from m3search.eval.report import build_results, task_entry
    from m3search.eval.runner import RunSpec, run_task, score_weights
    from m3search.eval.tune import tune_on_dev
    from m3search.search.modes import MODE_KINDS, mode_outputs

    parse_measure(metric)
    outputs = mode_outputs(mode)
    free = [o in MODE_KINDS[mode] for o in ("dense", "sparse", "colbert")]
    default = default_weights(fusion, mode)
    runs = [RunSpec(o) for o in MODE_KINDS[mode]] + [RunSpec(mode, fusion, default, "default")]
    _check_applicable(ctx, runs, collection)
    load_split, dev_name = _dev_and_test(
        ctx, dataset, dev_split, dev_fraction, seed, split, max_dev_queries, max_queries
    )
    test_name = split if dev_fraction is None else f"{split}[held out]"
    corpus_task = load_split(dev_name)
    encoder = eval_engine.load_model(
        model,
        outputs=[*outputs, *eval_engine.stored_outputs([collection])],
        runtime=engine["runtime"],
        device=engine["device"],
        sparse=engine["sparse"],
    )
    with eval_engine.indexed_collection(
        corpus_task,
        model=model,
        outputs=outputs,
        encoder=encoder,
        path=collection,
        normalize=engine["normalize"],
        candidates=engine["candidates"],
        rerank=engine["rerank"],
        dense_index=engine["dense_index"],
        cache=engine["cache"],
        reindex=reindex,
    ) as (searcher, stats):
        tuning = searcher.reusing_queries()  # the dev queries are searched once per trial: encode them once

        def objective(task, weights):
            return score_weights(tuning, task, weights, mode=mode, fusion=fusion, metric=metric)

        tuned, test = tune_on_dev(
            load_split,
            objective,
            dev_split=dev_name,
            test_split=test_name,
            metric=metric,
            method=method,
            step=step,
            start=default_weights(fusion, mode),
            free=free,
        )
        if dev_fraction is not None:
            tuned.dev_fraction, tuned.seed = dev_fraction, seed
        if set(test.corpus) != set(corpus_task.corpus):
            raise InvalidInputError(
                f"the {dev_name!r} and {split!r} splits of {dataset} have different corpora"
            )
        runs.append(RunSpec(mode, fusion, tuned.best, "tuned"))
        measures = tuple(dict.fromkeys((metric, *DEFAULT_MEASURES)))
        results = run_task(searcher, test, runs, measures=measures)
    settings = _settings(
        measures,
        runs,
        dataset=dataset,
        max_queries=max_queries,
        max_dev_queries=max_dev_queries,
        **_engine_settings(encoder, engine),
    )
    entry = task_entry(test.describe(), stats, results)
    _finish(build_results(model=model, settings=settings, tasks=[entry], tuning=tuned.to_dict()), output)


def _dev_and_test(
    ctx: click.Context,
    dataset: str,
    dev_split: str | None,
    dev_fraction: float | None,
    seed: int,
    split: str,
    max_dev_queries: int | None,
    max_queries: int | None,
) -> tuple[Any, str]:
    """tune-weights' `load_split(name)` and the dev split's name: named splits of the dataset, or the two
    disjoint query parts of `split` that --dev-fraction draws."""
    from m3search.eval.datasets import load_tasks, slice_task
    from m3search.eval.tune import check_splits, split_queries

    if dev_fraction is not None:
        _refuse(ctx, ["dev_split"], "--dev-fraction already chooses the dev queries (from --split); give one")
        (whole,) = load_tasks(dataset, split=split)
        parts = dict(zip(("dev", "test"), split_queries(whole, dev_fraction, seed)))
        halves = {
            parts["dev"].split: slice_task(parts["dev"], max_queries=max_dev_queries),
            parts["test"].split: slice_task(parts["test"], max_queries=max_queries),
        }
        return halves.__getitem__, parts["dev"].split
    _refuse(ctx, ["seed"], "it draws the dev queries of --dev-fraction, which is not given")
    dev_name = dev_split or "train"
    check_splits(dev_name, split)
    limits = {dev_name: max_dev_queries, split: max_queries}

    def load_split(name: str):
        try:
            (task,) = load_tasks(dataset, split=name)
        except InvalidInputError as exc:
            if name != dev_name or dev_split is not None:
                raise
            raise InvalidInputError(
                f"{exc}; tune-weights tunes on the 'train' split unless told: name another with --dev-split, "
                f"or tune on a share of the {split!r} queries with --dev-fraction (e.g. 0.3)"
            ) from None
        return slice_task(task, max_queries=limits[name])

    return load_split, dev_name


@command.command("images")
@click.option(
    "--dataset",
    "-d",
    required=True,
    help="An image-caption set: flickr8k:PATH (PATH holds captions.txt with image,caption rows and images/).",
)
@click.option(
    "--adapter",
    "adapter_dir",
    required=True,
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    help="An adapter directory (m3search images train-adapter).",
)
@click.option(
    "--train-images",
    type=int,
    default=None,
    help="Hold out the images after the first N (default: as many as the adapter was trained on).",
)
@click.option(
    "--cache-dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Where tower outputs and caption vectors are cached (default: $M3SEARCH_HOME/cache/features).",
)
@runtime_option
@device_option
@output_option
def images(
    dataset: str,
    adapter_dir: Path,
    train_images: int | None,
    cache_dir: Path | None,
    runtime: str,
    device: str | None,
    output: Path,
) -> None:
    """Held-out text->image and image->text recall@{1,5,10} of an image adapter, against the untrained and a
    random projection; writes results.json and results.md."""
    from m3search.encoders.image.adapter import AdapterImageEncoder
    from m3search.eval.images import evaluate_adapter, image_markdown, write_image_report

    adapter = AdapterImageEncoder.load(adapter_dir, device=device)
    results = evaluate_adapter(
        adapter,
        dataset,
        train_images=train_images,
        runtime=runtime,
        device=device,
        cache_dir=cache_dir,
        show_progress_bar=True,
    )
    paths = write_image_report(results, output)
    click.echo(image_markdown(results))
    click.echo(f"wrote {', '.join(str(p) for p in paths)}", err=True)
