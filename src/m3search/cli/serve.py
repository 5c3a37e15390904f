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
    if host not in ("0.0.0.0", "::", "") and host not in settings.allowed_hosts:
        settings.allowed_hosts = (*settings.allowed_hosts, host)  # the address it was told to listen on
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
@click.option(
    "--allowed-host",
    "allowed_hosts",
    multiple=True,
    metavar="NAME",
    help="Host name the server answers to besides loopback names and --host (repeatable; '*': any). "
    "Guards against DNS rebinding.",
)
@click.option(
    "--allowed-origin",
    "allowed_origins",
    multiple=True,
    metavar="URL",
    help="Web origin (e.g. https://app.example.com) whose pages may POST/DELETE here besides the server's own "
    "(repeatable; '*': any).",
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
    "--max-request-tokens",
    default=65_536,
    show_default=True,
    type=click.IntRange(1),
    help="Most tokens one encode or similarity request may make the model read (413 above).",
)
@click.option(
    "--max-query-chars",
    default=65_536,
    show_default=True,
    type=click.IntRange(1),
    help="Longest search query in characters (413 above).",
)
@click.option(
    "--body-timeout",
    default=60.0,
    show_default=True,
    type=click.FloatRange(0, min_open=True),
    help="Seconds a client has to send a request body (408 and the connection closed after).",
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
@click.option(
    "--warm/--no-warm",
    default=True,
    show_default=True,
    help="Read each collection's search files into free memory in the background when it is first opened "
    "(the first queries on a large collection otherwise wait on the disk).",
)
def command(
    collections_dir: Path | None,
    model: str,
    host: str,
    port: int,
    api_keys: tuple[str, ...],
    allowed_hosts: tuple[str, ...],
    allowed_origins: tuple[str, ...],
    runtime: str,
    device: str | None,
    batch_size: int,
    max_inputs: int,
    max_body_mb: float,
    max_request_tokens: int,
    max_query_chars: int,
    body_timeout: float,
    levels,
    image_encoder: str | None,
    warm: bool,
) -> None:
    """Serve embeddings, similarity and collection search over HTTP, with a web UI."""
    from m3search.server import ServerSettings

    settings = ServerSettings(
        model=model,
        runtime=runtime,
        device=device,
        api_keys=tuple(api_keys),
        allowed_hosts=tuple(allowed_hosts),
        allowed_origins=tuple(allowed_origins),
        batch_size=batch_size,
        max_inputs=max_inputs,
        max_body_bytes=int(max_body_mb * 1024 * 1024),
        max_request_tokens=max_request_tokens,
        max_query_chars=max_query_chars,
        body_timeout_s=body_timeout,
        levels=levels,
        image_encoder=image_encoder,
        warm=warm,
    )
    if collections_dir is not None:
        settings.collections_dir = collections_dir
    run_server(settings, host, port)
