"""Contrastive training of an image adapter's projection: symmetric InfoNCE with a learnable temperature, both
towers frozen, on cached features; and its held-out evaluation against untrained and random projections.

Each epoch uses every caption once: in round r every training image is paired with its r-th caption (in a
fresh random order), so a batch never holds the same image twice (no false negatives from duplicates).
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from m3search.encoders.base import TextEncoder
from m3search.encoders.image.adapter import AdapterConfig, AdapterImageEncoder, Projection
from m3search.encoders.image.captions import DEFAULT_KS, ImageCaptionSet, image_text_recall
from m3search.encoders.image.feature_cache import FeatureCache, image_keys
from m3search.encoders.image.towers import VisionTower
from m3search.errors import InvalidInputError

log = logging.getLogger(__name__)

#: The learned temperature is kept above 1/100, as CLIP does, so logits stay bounded.
MAX_LOGIT_SCALE = math.log(100.0)


@dataclass
class TrainConfig:
    """Training settings. The defaults were chosen on Flickr8k images 600-799 after training on 0-599 (see
    docs/IMAGES.md): with ~1,000 images a linear map overfits after a few epochs, so training is short."""

    epochs: int = 5
    batch_size: int = 128
    lr: float = 2e-3
    weight_decay: float = 0.5
    hidden_dim: int | None = None
    init_temperature: float = 0.07
    seed: int = 0

    def check(self) -> None:
        if self.epochs < 1 or self.batch_size < 2:
            raise InvalidInputError("epochs must be >= 1 and batch_size >= 2")
        if not (self.lr > 0 and self.weight_decay >= 0 and 0 < self.init_temperature < 1):
            raise InvalidInputError("lr must be > 0, weight_decay >= 0 and init_temperature in (0, 1)")
        if self.hidden_dim is not None and self.hidden_dim < 1:
            raise InvalidInputError(f"hidden_dim must be >= 1, got {self.hidden_dim}")


def initial_projection(features: np.ndarray, dim: int, config: TrainConfig) -> Projection:
    """The projection training starts from (seeded, standardized on `features`): the untrained baseline."""
    torch.manual_seed(config.seed)
    projection = Projection(features.shape[1], dim, config.hidden_dim)
    projection.set_statistics(torch.from_numpy(features))
    return projection


def random_projection(features: np.ndarray, dim: int, seed: int) -> Projection:
    """A Gaussian random linear map of the standardized features (as in Johnson-Lindenstrauss): chance."""
    projection = Projection(features.shape[1], dim)
    projection.set_statistics(torch.from_numpy(features))
    generator = torch.Generator().manual_seed(seed + 1)
    linear = projection.net
    assert isinstance(linear, nn.Linear)  # no hidden layer: one linear map
    with torch.no_grad():
        linear.weight.copy_(torch.randn(linear.weight.shape, generator=generator))
        linear.bias.zero_()
    return projection.eval()


Batch = tuple[np.ndarray, np.ndarray]


def _epoch_batches(owners: list[np.ndarray], batch_size: int, rng: np.random.Generator) -> list[Batch]:
    """(image indices, caption indices) batches using every caption once, one caption per image per round."""
    orders = [rng.permutation(caps) for caps in owners]
    rounds = max(len(o) for o in orders)
    batches = []
    for r in range(rounds):
        images = np.array([i for i, o in enumerate(orders) if r < len(o)])
        images = images[rng.permutation(len(images))]
        captions = np.array([orders[i][r] for i in images])
        for start in range(0, len(images), batch_size):
            if len(images) - start >= 2:
                batches.append((images[start : start + batch_size], captions[start : start + batch_size]))
    return batches


def train_projection(
    features: np.ndarray, captions: np.ndarray, caption_image: np.ndarray, config: TrainConfig
) -> tuple[Projection, float, list[float]]:
    """Train on (n_images, feature_dim) features and (n_captions, dim) normalized caption vectors.

    Returns the projection (eval mode), the learned logit scale and the mean loss of each epoch.
    """
    config.check()
    threads = torch.get_num_threads()
    # The matrices are tiny: thread hand-offs cost more than they save, badly so on busy CPUs.
    torch.set_num_threads(1)
    try:
        return _train(features, captions, caption_image, config)
    finally:
        torch.set_num_threads(threads)


def _train(
    features: np.ndarray, captions: np.ndarray, caption_image: np.ndarray, config: TrainConfig
) -> tuple[Projection, float, list[float]]:
    features_t = torch.from_numpy(np.asarray(features, dtype=np.float32))
    captions_t = F.normalize(torch.from_numpy(np.asarray(captions, dtype=np.float32)), dim=-1)
    owners = [np.flatnonzero(caption_image == i) for i in range(len(features))]
    if any(len(o) == 0 for o in owners):
        raise InvalidInputError("every training image needs at least one caption")
    projection = initial_projection(features, captions.shape[1], config).train()
    logit_scale = nn.Parameter(torch.tensor(math.log(1 / config.init_temperature)))
    optimizer = torch.optim.AdamW(
        [
            {"params": list(projection.parameters()), "weight_decay": config.weight_decay},
            {"params": [logit_scale], "weight_decay": 0.0},
        ],
        lr=config.lr,
    )
    rng = np.random.default_rng(config.seed)
    steps_per_epoch = len(_epoch_batches(owners, config.batch_size, np.random.default_rng(0)))
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=config.epochs * steps_per_epoch)
    losses = []
    for _ in range(config.epochs):
        total, count = 0.0, 0
        for images, caps in _epoch_batches(owners, config.batch_size, rng):
            image_vecs = projection(features_t[images])
            logits = logit_scale.exp() * image_vecs @ captions_t[caps].T
            target = torch.arange(len(images))
            loss = (F.cross_entropy(logits, target) + F.cross_entropy(logits.T, target)) / 2
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            schedule.step()
            with torch.no_grad():
                logit_scale.clamp_(0.0, MAX_LOGIT_SCALE)
            total += float(loss.detach()) * len(images)
            count += len(images)
        losses.append(total / count)
    return projection.eval(), float(logit_scale.detach().exp()), losses


def encode_set(
    data: ImageCaptionSet,
    tower: VisionTower,
    text_encoder: TextEncoder,
    cache: FeatureCache,
    *,
    show_progress_bar: bool = False,
) -> dict[str, np.ndarray]:
    """Tower features of the images and caption vectors as queries and as documents, through the cache."""
    feats = cache.get(
        f"image-{tower.name}",
        tower.name,
        image_keys(data.images),
        lambda: tower.encode(data.images, show_progress_bar=show_progress_bar),
    )
    progress = {"show_progress_bar": show_progress_bar}
    as_query = cache.get(
        "caption-query",
        text_encoder.name,
        data.captions,
        lambda: text_encoder.encode_queries(data.captions, **progress).need("dense"),
    )
    as_doc = cache.get(
        "caption-passage",
        text_encoder.name,
        data.captions,
        lambda: text_encoder.encode_documents(data.captions, **progress).need("dense"),
    )
    return {"features": feats, "query": as_query, "passage": as_doc}


def evaluate_projection(
    projection: Projection,
    features: np.ndarray,
    queries: np.ndarray,
    passages: np.ndarray,
    caption_image: np.ndarray,
    ks: tuple[int, ...] = DEFAULT_KS,
) -> dict[str, dict[str, float]]:
    """Recall@k both ways of projected images against caption queries (text->image) and documents."""
    with torch.inference_mode():
        image_vecs = projection.eval()(torch.from_numpy(np.asarray(features, dtype=np.float32))).numpy()
    return image_text_recall(image_vecs, passages, caption_image, query_caption_vectors=queries, ks=ks)


def heldout_metrics(
    projection: Projection,
    data: ImageCaptionSet,
    vectors: dict[str, np.ndarray],
    train_images: int,
    config: TrainConfig,
) -> dict[str, Any]:
    """Recall both ways on the images after the first `train_images` (`vectors` from `encode_set`): the
    trained `projection`, the untrained one training starts from, and a random one (same seed)."""
    _, held = data.split(train_images)
    in_train = data.caption_image < train_images
    train_feats = vectors["features"][:train_images]
    held_args = (
        vectors["features"][train_images:],
        vectors["query"][~in_train],
        vectors["passage"][~in_train],
        held.caption_image,
    )
    dim = vectors["query"].shape[1]
    return {
        "heldout_images": len(held),
        "heldout_captions": len(held.captions),
        "trained": evaluate_projection(projection, *held_args),
        "untrained": evaluate_projection(initial_projection(train_feats, dim, config), *held_args),
        "random": evaluate_projection(random_projection(train_feats, dim, config.seed), *held_args),
    }


def train_adapter(
    data: ImageCaptionSet,
    tower: VisionTower,
    text_encoder: TextEncoder,
    *,
    train_images: int,
    config: TrainConfig | None = None,
    cache: FeatureCache | None = None,
    show_progress_bar: bool = False,
) -> AdapterImageEncoder:
    """Train a projection on the first `train_images` images; evaluate it and both baselines on the rest.

    The held-out metrics (trained, untrained, random) are stored in the adapter's config (`config.metrics`).
    """
    config = config or TrainConfig()
    config.check()
    if "dense" not in text_encoder.outputs:
        raise InvalidInputError(f"text model {text_encoder.name!r} has no dense output to align images with")
    train, held = data.split(train_images)
    vectors = encode_set(
        data, tower, text_encoder, cache or FeatureCache(), show_progress_bar=show_progress_bar
    )
    in_train = data.caption_image < train_images
    train_feats = vectors["features"][:train_images]
    started = time.perf_counter()
    projection, scale, losses = train_projection(
        train_feats, vectors["query"][in_train], train.caption_image, config
    )
    seconds = time.perf_counter() - started
    log.info(
        "trained in %.1f s; loss %.3f -> %.3f; temperature %.4f", seconds, losses[0], losses[-1], 1 / scale
    )
    metrics = heldout_metrics(projection, data, vectors, train_images, config) if len(held) else {}
    adapter_config = AdapterConfig(
        tower=tower.name,
        text_model=text_encoder.name,
        feature_dim=tower.feature_dim,
        dim=int(vectors["query"].shape[1]),
        hidden_dim=config.hidden_dim,
        preprocess=tower.preprocess.to_dict(),
        logit_scale=math.log(scale),
        training={
            **asdict(config),
            "train_images": train_images,
            "train_captions": int(in_train.sum()),
            "loss_first_epoch": losses[0],
            "loss_last_epoch": losses[-1],
            "seconds": round(seconds, 2),
        },
        metrics=metrics,
    )
    return AdapterImageEncoder(tower, projection, adapter_config)


__all__ = [
    "TrainConfig",
    "encode_set",
    "evaluate_projection",
    "heldout_metrics",
    "initial_projection",
    "random_projection",
    "train_adapter",
    "train_projection",
]
