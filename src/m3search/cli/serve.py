"""`m3search serve`: the HTTP API and web UI on uvicorn."""

from __future__ import annotations

import ipaddress
from pathlib import Path

import click

from m3search.cli.options import device_option, model_option, runtime_option
from m3search.extras import require


def _levels(ctx: click.Context, param: click.Parameter, value: str | None):
    from m3search.server import SimilarityLevels

    if value is None:
        return None
    try:
        very, related = (float(x) for x in value.split(","))
    except ValueError:
        raise click.BadParameter("expected two numbers: VERY_SIMILAR,RELATED (e.g. 0.85,0.6)") from None
    if not related < very:
        raise click.BadParameter("the 'related' threshold must be below the 'very similar' one")
    return SimilarityLevels(very, related)


def run_server(settings, host: str, port: int, *, encoder=None, page: str = "") -> None:
    """Serve `settings` on host:port until interrupted, printing where the UI is (at `page`).

    `encoder` serves a model already loaded; otherwise `settings.model` loads in the background.
    """
    uvicorn = require("uvicorn", "server", "the HTTP server")
    require("fastapi", "server", "the HTTP server")
    from m3search.server import create_app

    try:
        loopback = ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = host == "localhost"
    if not loopback and not settings.api_keys:
        click.echo(
            f"warning: listening on {host} without --api-key: anyone who can reach it can use it", err=True
        )
    shown = f"[{host}]" if ":" in host else host
    click.echo(
        f"m3search: web UI at http://{shown}:{port}/ui/{page}  API docs at http://{shown}:{port}/docs",
        err=True,
    )
    uvicorn.run(create_app(settings, encoder=encoder), host=host, port=port, log_level="info")


@click.command("serve")
@click.option(
    "--collections",
    "collections_dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Directory of collections (default: $M3SEARCH_HOME/collections).",
)
@model_option
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--port", default=8000, show_default=True, type=click.IntRange(0, 65535))
@click.option(
    "--api-key",
    "api_keys",
    multiple=True,
    envvar="M3SEARCH_API_KEY",
    help="Require 'Authorization: Bearer KEY' (repeat for several keys; env M3SEARCH_API_KEY).",
)
@runtime_option
@device_option
@click.option(
    "--batch-size",
    default=64,
    show_default=True,
    type=click.IntRange(1),
    help="Most texts per model call (micro-batching).",
)
@click.option(
    "--max-inputs",
    default=256,
    show_default=True,
    type=click.IntRange(1),
    help="Most texts per encode or similarity request.",
)
@click.option(
    "--max-body-mb",
    default=16.0,
    show_default=True,
    type=click.FloatRange(0, min_open=True),
    help="Largest request body in MiB.",
)
@click.option(
    "--levels",
    callback=_levels,
    default=None,
    metavar="VERY,RELATED",
    help="Similarity thresholds on the dense score (default: the model's own).",
)
@click.option(
    "--image-encoder",
    default=None,
    help="Adapter directory or Visualized-BGE checkpoint for /embed images and new image collections "
    "(collections that hold images bring their own).",
)
def command(
    collections_dir: Path | None,
    model: str,
    host: str,
    port: int,
    api_keys: tuple[str, ...],
    runtime: str,
    device: str | None,
    batch_size: int,
    max_inputs: int,
    max_body_mb: float,
    levels,
    image_encoder: str | None,
) -> None:
    """Serve embeddings, similarity and collection search over HTTP, with a web UI."""
    from m3search.server import ServerSettings

    settings = ServerSettings(
        model=model,
        runtime=runtime,
        device=device,
        api_keys=tuple(api_keys),
        batch_size=batch_size,
        max_inputs=max_inputs,
        max_body_bytes=int(max_body_mb * 1024 * 1024),
        levels=levels,
        image_encoder=image_encoder,
    )
    if collections_dir is not None:
        settings.collections_dir = collections_dir
    run_server(settings, host, port)
