"""Image-caption retrieval evaluation of an image adapter (`m3search eval images`): held-out text->image and
image->text recall@k of the trained projection against the untrained one training starts from and a random
one, written as results.json and a Markdown table like the text evaluation.

The protocol is the adapter's own (see docs/IMAGES.md): images sorted by name, the first `train_images` (by
default the number the adapter was trained on) are skipped, the rest are the held-out queries and candidates.
"""

from __future__ import annotations

from dataclasses import fields
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from m3search import __version__
from m3search.encoders.image.adapter import AdapterImageEncoder
from m3search.encoders.image.captions import ImageCaptionSet, load_image_captions
from m3search.encoders.image.feature_cache import FeatureCache
from m3search.encoders.image.training import TrainConfig, encode_set, heldout_metrics
from m3search.errors import InvalidInputError
from m3search.eval.report import markdown_table, write_json_and_markdown

SCHEMA = "m3search.eval.images/1"
#: Dataset prefixes and the layout of their folder: (captions CSV, images folder).
IMAGE_DATASETS = {"flickr8k": ("captions.txt", "images")}
PROJECTIONS = ("trained", "untrained", "random")


def load_image_dataset(spec: str) -> tuple[str, ImageCaptionSet]:
    """`flickr8k:PATH` (or a PATH of that layout: captions.txt with image,caption rows and images/)."""
    name, sep, path = spec.partition(":")
    if not sep or name not in IMAGE_DATASETS:
        name, path = "flickr8k", spec
    captions, images = IMAGE_DATASETS[name]
    root = Path(path).expanduser()
    if not (root / captions).is_file() or not (root / images).is_dir():
        raise InvalidInputError(f"{spec}: expected {root / captions} and a folder {root / images}")
    return f"{name}:{root.name}", load_image_captions(root / captions, root / images)


def evaluate_adapter(
    adapter: AdapterImageEncoder,
    dataset: str,
    *,
    train_images: int | None = None,
    runtime: str = "auto",
    device: str | None = None,
    cache_dir: Path | None = None,
    show_progress_bar: bool = False,
) -> dict[str, Any]:
    """The results document: held-out recall of the adapter and both baselines on `dataset`."""
    from m3search.encoders import load_encoder

    name, data = load_image_dataset(dataset)
    trained_on = adapter.config.training.get("train_images")
    skip = train_images if train_images is not None else trained_on
    if skip is None:
        raise InvalidInputError(
            "the adapter does not record how many images it was trained on; give --train-images"
        )
    if not 0 < skip < len(data):
        raise InvalidInputError(f"--train-images must leave held-out images: {skip} of {len(data)}")
    known = {f.name for f in fields(TrainConfig)}
    config = TrainConfig(**{k: v for k, v in adapter.config.training.items() if k in known})
    text_encoder = load_encoder(adapter.text_model, runtime=runtime, device=device, sparse="none")
    vectors = encode_set(
        data, adapter.tower, text_encoder, FeatureCache(cache_dir), show_progress_bar=show_progress_bar
    )
    metrics = heldout_metrics(adapter.projection, data, vectors, skip, config)
    return {
        "schema": SCHEMA,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "m3search": __version__,
        "model": adapter.text_model,
        "adapter": adapter.describe(),
        "task": {
            "name": name,
            "images": len(data),
            "captions": len(data.captions),
            "train_images": skip,
            "heldout_images": metrics["heldout_images"],
            "heldout_captions": metrics["heldout_captions"],
        },
        "projections": {p: metrics[p] for p in PROJECTIONS},
    }


def image_markdown(results: dict[str, Any]) -> str:
    """The recall table (in %), both directions, one row per projection."""
    task, adapter = results["task"], results["adapter"]
    ks = list(results["projections"]["trained"]["text_to_image"])
    header = ["projection"] + [f"{way} R@{k.split('@')[1]}" for way in ("t2i", "i2t") for k in ks]
    rows = [
        [p]
        + [
            f"{100 * results['projections'][p][way][k]:.1f}"
            for way in ("text_to_image", "image_to_text")
            for k in ks
        ]
        for p in PROJECTIONS
    ]
    return "\n".join(
        [
            f"# Image-caption retrieval: {adapter['name']} ({adapter.get('tower')} -> {results['model']})",
            "",
            (
                f"m3search {results['m3search']}, {results['created']}. {task['name']}: trained on the first "
                f"{task['train_images']} images; held out {task['heldout_images']} images and "
                f"{task['heldout_captions']} captions. Recall@k in %."
            ),
            "",
            *markdown_table(header, rows),
            "",
        ]
    )


def write_image_report(results: dict[str, Any], out_dir: str | Path) -> list[Path]:
    """results.json and results.md in `out_dir`."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    return write_json_and_markdown(results, image_markdown(results), out)


__all__ = ["SCHEMA", "evaluate_adapter", "image_markdown", "load_image_dataset", "write_image_report"]
