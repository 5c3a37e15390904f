"""`m3search demo`: build a sample collection with the offline model (once) and serve it with the web UI."""

from __future__ import annotations

import click

from m3search.cli.options import device_option, model_option, runtime_option
from m3search.cli.serve import run_server


@click.command("demo")
@model_option
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=8000, show_default=True, type=click.IntRange(0, 65535))
@click.option("--api-key", "api_keys", multiple=True, envvar="M3SEARCH_API_KEY", help="Require a bearer key.")
@click.option("--rebuild", is_flag=True, help="Rebuild the sample collection even if it exists.")
@click.option("--build-only", is_flag=True, help="Build the sample collection and exit without serving.")
@runtime_option
@device_option
def command(
    model: str,
    host: str,
    port: int,
    api_keys: tuple[str, ...],
    rebuild: bool,
    build_only: bool,
    runtime: str,
    device: str | None,
) -> None:
    """Serve a sample collection of real multilingual documents (SciFact + XQuAD-R, or a bundled sample).

    The collection lives in $M3SEARCH_HOME/demo and is reused on later runs.
    """
    from m3search.encoders import load_encoder
    from m3search.server import ServerSettings
    from m3search.server.catalog import Catalog
    from m3search.server.demo import demo_documents, ensure_demo_collection, shared_data_dir
    from m3search.settings import home_dir

    settings = ServerSettings(
        model=model,
        runtime=runtime,
        device=device,
        api_keys=tuple(api_keys),
        collections_dir=home_dir() / "demo" / "collections",
    )
    data = shared_data_dir()
    documents = demo_documents(data)
    click.echo(f"m3search demo: loading {model} ...", err=True)
    encoder = load_encoder(model, runtime=runtime, device=device, sparse="none")
    catalog = Catalog(settings.collections_dir, encoder, model)
    source = f"SciFact and XQuAD-R from {data}" if data else "the bundled multilingual sample"
    click.echo(f"m3search demo: {len(documents)} documents from {source}", err=True)
    collection = ensure_demo_collection(catalog, documents, rebuild=rebuild)
    click.echo(
        f"m3search demo: collection 'sample' ({collection.count()} documents) at {collection.path}", err=True
    )
    catalog.close()
    if build_only:
        return
    run_server(settings, host, port, encoder=encoder, page="#search")
