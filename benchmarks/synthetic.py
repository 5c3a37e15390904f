"""Synthetic embeddings for the index benchmarks, and the geometry measures that calibrate them on real ones.

Two dense models, both producing unit vectors:

- `LatentMixture` (the default): real text embeddings have a low intrinsic dimension, so points are drawn from a
  mixture of clusters in a `latent_dim`-dimensional space — cluster popularity Zipf-like, each cluster with its
  own spread (log-normal) and a decaying spectrum over the latent axes — mapped into the full dimension by a
  random linear map, shifted by a common direction (embeddings of one model share one: e5's cosines are all
  high) and blurred by small isotropic noise, then normalized. Its parameters are chosen by
  `benchmarks/embedding_geometry.py` so that relative contrast, local intrinsic dimensionality and cosine levels
  match multilingual-e5-small on SciFact.
- `NearTieClusters`: the first benchmark's data, kept as a stress case — isotropic noise around ~500-point
  clusters in all 1,024 dimensions, so within-cluster distances concentrate and the true top-10 are near-ties
  that any graph index finds only partly.

Geometry (distances between unit vectors, `queries` against `points`; `exclude_self` when they are the same
set): relative contrast = mean distance / nearest-neighbour distance (He et al. 2012), its top-10 version
= 10th / 1st neighbour distance (how far apart the true top-10 are), and the maximum-likelihood local intrinsic
dimensionality over the k nearest neighbours (Levina & Bickel 2004; Amsaleg et al. 2015).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np


@dataclass(frozen=True)
class LatentMixture:
    """Clusters in a low-dimensional latent space, mapped linearly into `dim` dimensions (see module doc)."""

    dim: int = 1024
    latent_dim: int = 48
    clusters: int = 2000
    #: Median within-cluster spread, relative to the spread of the cluster centres.
    spread: float = 0.5
    #: Log-normal sigma of the per-cluster spread (clusters range from tight to diffuse).
    spread_sigma: float = 0.5
    #: Latent axis j has scale (j + 1) ** -decay (then renormalized): a few axes dominate, as in real spectra.
    decay: float = 0.5
    #: Weight of the direction shared by all vectors (sets the typical cosine between unrelated documents).
    shared: float = 1.0
    #: Isotropic noise in the full dimension, relative to the latent signal.
    noise: float = 0.1
    #: Zipf exponent of cluster popularity.
    zipf: float = 0.8
    seed: int = 0

    def __post_init__(self) -> None:
        rng = np.random.default_rng((self.seed, 1))
        object.__setattr__(self, "_centers", rng.standard_normal((self.clusters, self.latent_dim)))
        spreads = self.spread * np.exp(self.spread_sigma * rng.standard_normal(self.clusters))
        object.__setattr__(self, "_spreads", spreads)
        axes = (np.arange(self.latent_dim) + 1.0) ** -self.decay
        object.__setattr__(self, "_axes", axes * np.sqrt(self.latent_dim / (axes**2).sum()))
        weights = (np.arange(self.clusters) + 1.0) ** -self.zipf
        object.__setattr__(self, "_popularity", weights / weights.sum())
        projection = rng.standard_normal((self.latent_dim, self.dim)) / np.sqrt(self.latent_dim * self.dim)
        object.__setattr__(self, "_projection", projection.astype(np.float32))
        common = rng.standard_normal(self.dim)
        object.__setattr__(self, "_common", (common / np.linalg.norm(common)).astype(np.float32))

    def sample(self, rng: np.random.Generator, n: int) -> np.ndarray:
        """`n` unit vectors."""
        k = rng.choice(self.clusters, n, p=self._popularity)
        latent = self._centers[k] + self._spreads[k, None] * self._axes * rng.standard_normal(
            (n, self.latent_dim)
        )
        x = (latent.astype(np.float32) @ self._projection) + self.shared * self._common
        x += self.noise * rng.standard_normal((n, self.dim), dtype=np.float32) / np.sqrt(self.dim)
        return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)

    def params(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class NearTieClusters:
    """Isotropic clusters in all `dim` dimensions: the hard, near-tie stress case."""

    dim: int = 1024
    clusters: int = 2000
    noise: float = 0.8
    seed: int = 0

    def __post_init__(self) -> None:
        centers = (
            np.random.default_rng(self.seed).standard_normal((self.clusters, self.dim)).astype(np.float32)
        )
        object.__setattr__(self, "_centers", centers / np.linalg.norm(centers, axis=1, keepdims=True))

    def sample(self, rng: np.random.Generator, n: int) -> np.ndarray:
        x = self._centers[rng.integers(0, self.clusters, n)]
        x = x + self.noise * rng.standard_normal((n, self.dim), dtype=np.float32) / np.sqrt(self.dim)
        return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)

    def params(self) -> dict:
        return asdict(self)


def neighbour_distances(
    queries: np.ndarray, points: np.ndarray, *, exclude_self: bool, block: int = 1024
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per query: the 64 smallest distances (sorted), the mean distance and the mean cosine to the points;
    Euclidean distances between unit vectors."""
    near, mean_dist, mean_cos = [], [], []
    for start in range(0, len(queries), block):
        cos = queries[start : start + block] @ points.T
        if exclude_self:
            cos[np.arange(len(cos)), np.arange(start, start + len(cos))] = np.nan
        dist = np.sqrt(np.maximum(2.0 - 2.0 * cos, 0.0))
        mean_dist.append(np.nanmean(dist, axis=1))
        mean_cos.append(np.nanmean(cos, axis=1))
        dist = np.where(np.isnan(dist), np.inf, dist)
        near.append(np.sort(np.partition(dist, 63, axis=1)[:, :64], axis=1))
    return np.concatenate(near), np.concatenate(mean_dist), np.concatenate(mean_cos)


def geometry(queries: np.ndarray, points: np.ndarray, *, exclude_self: bool, k: int = 20) -> dict[str, float]:
    """Relative contrast, top-10 contrast, LID (MLE over k neighbours) and cosine levels, averaged over queries."""
    near, mean, cos = neighbour_distances(queries, points, exclude_self=exclude_self)
    near = np.maximum(near, 1e-12)
    lid = -1.0 / np.mean(np.log(near[:, :k] / near[:, k - 1 : k]), axis=1)
    return {
        "relative_contrast": float(np.mean(mean / near[:, 0])),
        "top10_contrast": float(np.mean(near[:, 9] / near[:, 0])),
        "lid": float(np.mean(lid[np.isfinite(lid)])),
        "cos_nearest": float(np.mean(1 - near[:, 0] ** 2 / 2)),
        "cos_mean": float(np.mean(cos)),
    }
