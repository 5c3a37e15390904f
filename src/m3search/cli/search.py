"""`m3search search COLLECTION "query"`: hybrid search from the shell (text, `--image FILE`, or both), as a table
or JSON."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click

from m3search.cli.options import normalize_option, runtime_option
from m3search.errors import FilterError, InvalidInputError
from m3search.search.fusion import DEFAULT_FUSION, FUSIONS, Fusion, Normalize, describe_defaults
from m3search.search.modes import MODES, Mode


def parse_cli_filter(values: tuple[str, ...]) -> dict[str, Any] | None:
    """`--filter` values, ANDed: JSON objects, or `key=value` (value read as JSON when it parses, else text)."""
    parts = []
    for value in values:
        if value.lstrip().startswith("{"):
            try:
                parts.append(json.loads(value))
            except json.JSONDecodeError as exc:
                raise FilterError(f"--filter {value!r} is not valid JSON: {exc.msg}") from None
        elif "=" in value:
            key, _, raw = value.partition("=")
            try:
                parsed = json.loads(raw)
            except json.JSONDecodeError:
                parsed = raw
            parts.append({key.strip(): parsed})
        else:
            raise FilterError(f"--filter {value!r}: use a JSON object or key=value")
    if not parts:
        return None
    return parts[0] if len(parts) == 1 else {"$and": parts}


def parse_weights(value: str | None) -> list[float] | None:
    """'0.4,0.2,0.4' -> [0.4, 0.2, 0.4] (dense, sparse, colbert)."""
    if value is None:
        return None
    try:
        return [float(x) for x in value.split(",")]
    except ValueError:
        raise InvalidInputError(f"--weights {value!r}: give three numbers, dense,sparse,colbert") from None


@click.command("search")
@click.argument("collection", type=click.Path(path_type=Path))
@click.argument("query", required=False)
@click.option(
    "--image",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    default=None,
    help="Search with this image (with QUERY too: an image+text query); needs a collection with images.",
)
@click.option(
    "--kinds",
    default=None,
    help="Keep only documents of these kinds, comma-separated: text, image, "
    "image+text (e.g. text->image: --kinds image,image+text).",
)
@click.option(
    "--mode", type=click.Choice(MODES), default=None, help="Default: the richest the collection allows."
)
@click.option(
    "--weights",
    default=None,
    help="dense,sparse,colbert weights, e.g. 0.4,0.2,0.4 (default: the collection's tuned ones, else the "
    "fusion's: " + describe_defaults(",") + ").",
)
@click.option(
    "--fusion",
    type=click.Choice(FUSIONS),
    default=None,
    help=f"weighted (mean of scaled scores), rrf (ranks) or dbsf (mean ± 3σ scaling); default: the "
    f"collection's tuned one, else {DEFAULT_FUSION}.",
)
@normalize_option
@click.option(
    "--filter",
    "filters",
    multiple=True,
    help='Metadata filter: JSON ({"year": {"$gte": 2020}}) or key=value; repeat to AND them.',
)
@click.option("-k", "k", type=int, default=10, show_default=True, help="Number of results.")
@click.option(
    "--candidates",
    type=int,
    default=None,
    help="Candidates per first stage that hybrid modes re-score (default: the collection's tuned depth, else "
    "100 up to 100,000 documents, growing with the square root of the count beyond).",
)
@click.option(
    "--rerank",
    type=int,
    default=None,
    help="Candidates ColBERT re-scores in modes colbert and all, the best by the other modes (default: the "
    "collection's, else 200).",
)
@click.option("--json", "as_json", is_flag=True, help="Print the results as JSON.")
@runtime_option
def command(
    collection: Path,
    query: str | None,
    image: Path | None,
    kinds: str | None,
    mode: Mode | None,
    weights: str | None,
    fusion: Fusion | None,
    normalize: Normalize | None,
    filters: tuple[str, ...],
    k: int,
    candidates: int | None,
    rerank: int | None,
    as_json: bool,
    runtime: str,
) -> None:
    """Search COLLECTION for QUERY (a text), an --image, or both."""
    from m3search import Collection

    if query is None and image is None:
        raise click.UsageError("give a QUERY text, an --image, or both")
    with Collection.open(collection, runtime=runtime, readonly=True) as col:
        hits = col.search(
            query,
            k=k,
            image=image,
            kinds=kinds.split(",") if kinds else None,
            mode=mode,
            weights=parse_weights(weights),
            fusion=fusion,
            normalize=normalize,
            filter=parse_cli_filter(filters),
            candidates=candidates,
            rerank=rerank,
        )
    if as_json:
        click.echo(json.dumps([h.to_dict() for h in hits], ensure_ascii=False, indent=2))
        return
    if not hits:
        click.echo("no results")
        return
    for rank, hit in enumerate(hits, 1):
        parts = " ".join(f"{kind}={value:.4f}" for kind, value in hit.scores.items())
        text = " ".join((hit.text or "").split())
        kind = "" if hit.kind == "text" else f"  [{hit.kind}]"
        click.echo(f"{rank:>3}. {hit.id}{kind}  score={hit.score:.4f}  ({parts})")
        if text:
            click.echo(f"     {text[:100]}{'…' if len(text) > 100 else ''}")
