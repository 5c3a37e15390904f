"""`m3search images`: train an image adapter for a text model and evaluate image-caption retrieval."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click

from m3search.cli.options import device_option, model_option, runtime_option


def _table(metrics: dict[str, Any]) -> str:
    """Held-out recall of each projection as an aligned text table."""
    rows = [k for k in ("trained", "untrained", "random") if k in metrics]
    ks = list(metrics[rows[0]]["text_to_image"])
    head = ["projection"] + [f"t2i {k.split('@')[1]}" for k in ks] + [f"i2t {k.split('@')[1]}" for k in ks]
    lines = ["  ".join(f"{h:>10}" for h in head)]
    for row in rows:
        values = [metrics[row][way][k] for way in ("text_to_image", "image_to_text") for k in ks]
        lines.append("  ".join([f"{row:>10}"] + [f"{100 * v:>10.1f}" for v in values]))
    return "\n".join(lines)


pairs_option = click.option(
    "--pairs",
    "pairs_csv",
    required=True,
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="CSV with 'image' (file name) and 'caption' columns; several captions per image allowed.",
)
images_option = click.option(
    "--images",
    "images_dir",
    required=True,
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    help="Directory holding the images named in --pairs.",
)


@click.group("images")
def command() -> None:
    """Image search: train an adapter that maps images into a text model's space, and evaluate it."""


@command.command("train-adapter")
@pairs_option
@images_option
@model_option
@click.option("--tower", default="efficientnet-lite0", show_default=True, help="Frozen image tower.")
@click.option(
    "--train-images",
    type=int,
    default=800,
    show_default=True,
    help="Train on the first N images (by file name); the rest are held out for evaluation.",
)
@click.option("--epochs", type=int, default=5, show_default=True)
@click.option("--batch-size", type=int, default=128, show_default=True)
@click.option("--lr", type=float, default=2e-3, show_default=True)
@click.option("--weight-decay", type=float, default=0.5, show_default=True)
@click.option(
    "--hidden-dim", type=int, default=None, help="Use a two-layer MLP of this width instead of a linear map."
)
@click.option("--seed", type=int, default=0, show_default=True)
@click.option(
    "--cache-dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Where tower outputs are cached (default: $M3SEARCH_HOME/cache/features).",
)
@click.option(
    "--output",
    "output_dir",
    required=True,
    type=click.Path(file_okay=False, path_type=Path),
    help="Directory to write the adapter into.",
)
@runtime_option
@device_option
def train_adapter_command(
    pairs_csv: Path,
    images_dir: Path,
    model: str,
    tower: str,
    train_images: int,
    epochs: int,
    batch_size: int,
    lr: float,
    weight_decay: float,
    hidden_dim: int | None,
    seed: int,
    cache_dir: Path | None,
    output_dir: Path,
    runtime: str,
    device: str | None,
) -> None:
    """Train a projection from image features into MODEL's dense space (InfoNCE, frozen towers), save it, and
    report held-out text->image and image->text recall against untrained and random projections."""
    from m3search.encoders import load_encoder
    from m3search.encoders.image.captions import load_image_captions
    from m3search.encoders.image.feature_cache import FeatureCache
    from m3search.encoders.image.towers import load_tower
    from m3search.encoders.image.training import TrainConfig, train_adapter

    config = TrainConfig(
        epochs=epochs,
        batch_size=batch_size,
        lr=lr,
        weight_decay=weight_decay,
        hidden_dim=hidden_dim,
        seed=seed,
    )
    config.check()
    data = load_image_captions(pairs_csv, images_dir)
    text_encoder = load_encoder(model, runtime=runtime, device=device, sparse="none")
    adapter = train_adapter(
        data,
        load_tower(tower, device=device),
        text_encoder,
        train_images=train_images,
        config=config,
        cache=FeatureCache(cache_dir),
        show_progress_bar=True,
    )
    adapter.save(output_dir)
    training = adapter.config.training
    click.echo(
        f"trained on {training['train_images']} images / {training['train_captions']} captions in "
        f"{training['seconds']} s (loss {training['loss_first_epoch']:.3f} -> "
        f"{training['loss_last_epoch']:.3f}); saved to {output_dir}"
    )
    metrics = adapter.config.metrics
    if metrics:
        click.echo(
            f"held-out recall@k (%) on {metrics['heldout_images']} images, "
            f"{metrics['heldout_captions']} captions:"
        )
        click.echo(_table(metrics))


@command.command("eval-adapter")
@click.option(
    "--adapter",
    "adapter_dir",
    required=True,
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    help="A saved adapter directory.",
)
@pairs_option
@images_option
@click.option(
    "--skip-images",
    type=int,
    default=0,
    show_default=True,
    help="Evaluate on the images after the first N (by file name): an adapter's held-out part.",
)
@click.option("--json", "as_json", is_flag=True, help="Print the metrics as JSON.")
@runtime_option
@device_option
def eval_adapter_command(
    adapter_dir: Path,
    pairs_csv: Path,
    images_dir: Path,
    skip_images: int,
    as_json: bool,
    runtime: str,
    device: str | None,
) -> None:
    """Text->image and image->text recall@{1,5,10} of a saved adapter on an image-caption set."""
    from m3search.encoders import load_encoder
    from m3search.encoders.image.adapter import AdapterImageEncoder
    from m3search.encoders.image.captions import image_text_recall, load_image_captions

    adapter = AdapterImageEncoder.load(adapter_dir, device=device)
    data = load_image_captions(pairs_csv, images_dir).subset(skip_images)
    text_encoder = load_encoder(adapter.text_model, runtime=runtime, device=device, sparse="none")
    images = adapter.encode_images(data.images, show_progress_bar=True)
    queries = text_encoder.encode_queries(data.captions).dense
    passages = text_encoder.encode_documents(data.captions).dense
    recall = image_text_recall(images, passages, data.caption_image, query_caption_vectors=queries)
    if as_json:
        report = {"images": len(data), "captions": len(data.captions), "trained": recall}
        click.echo(json.dumps(report, indent=2))
    else:
        click.echo(f"recall@k (%) on {len(data)} images, {len(data.captions)} captions:")
        click.echo(_table({"trained": recall}))
