"""Calibrate the synthetic benchmark embeddings on real ones: relative contrast, LID and cosine levels.

Real: multilingual-e5-small vectors of the SciFact corpus and test queries (the cache that
`benchmarks/colbert_quantization.py` writes under `benchmarks/.work/`). Synthetic: samples of the same size from
`synthetic.LatentMixture` over a grid of its parameters; the setting closest to the real measures (log-ratio
distance on relative contrast, top-10 contrast and LID; absolute distance on the cosine levels) is written to
`benchmarks/results/embedding_geometry.json`, which `index_speed.py` reads. The near-tie stress data is
measured alongside. Estimator check: LID of a Gaussian in a 16-d subspace of 1,024-d.

    flock /tmp/m3search-heavy.lock env PYTHONPATH=src python benchmarks/embedding_geometry.py
"""

from __future__ import annotations

import argparse
import itertools
import json
from pathlib import Path

import numpy as np
from synthetic import LatentMixture, NearTieClusters, geometry

ROOT = Path(__file__).resolve().parent
RESULT = ROOT / "results" / "embedding_geometry.json"
KEYS = ("relative_contrast", "top10_contrast", "lid", "cos_nearest", "cos_mean")


def measure(points: np.ndarray, queries: np.ndarray, small: int, rng: np.random.Generator) -> dict:
    """Document-document (all, and a `small` subsample) and query-document geometry."""
    sub = points[rng.choice(len(points), small, replace=False)]
    return {
        "docs": geometry(points, points, exclude_self=True),
        f"docs_{small}": geometry(sub, sub, exclude_self=True),
        "queries": geometry(queries, points, exclude_self=False),
    }


def distance(a: dict, b: dict) -> float:
    """How far synthetic measures `a` are from real ones `b` (documents, both sample sizes, and queries)."""
    total = 0.0
    for part in b:
        for key in ("relative_contrast", "top10_contrast", "lid"):
            total += np.log(a[part][key] / b[part][key]) ** 2
        for key in ("cos_nearest", "cos_mean"):
            total += 4 * (a[part][key] - b[part][key]) ** 2
    return float(total)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cache", type=Path, default=ROOT / ".work" / "scifact-e5-small")
    ap.add_argument("--small", type=int, default=1000)
    ap.add_argument(
        "--clusters", type=int, default=2000, help="clusters of the synthetic model (1M benchmark)"
    )
    args = ap.parse_args()
    rng = np.random.default_rng(0)
    check = np.zeros((3000, 1024), np.float32)
    check[:, :16] = rng.standard_normal((3000, 16))
    check /= np.linalg.norm(check, axis=1, keepdims=True)
    result: dict = {"estimator_check_16d_sphere_lid": geometry(check, check, exclude_self=True)["lid"]}
    docs = np.load(args.cache / "dense.npy")
    queries = np.load(args.cache / "query_dense.npy")
    n, nq = len(docs), len(queries)
    result["real"] = {
        "source": "multilingual-e5-small, SciFact corpus and test queries",
        "docs": n,
        "queries": nq,
        **measure(docs, queries, args.small, np.random.default_rng(1)),
    }

    def synthetic(model) -> dict:
        sample = model.sample(np.random.default_rng(2), n + nq)
        return measure(sample[:n], sample[n:], args.small, np.random.default_rng(1))

    grid = []
    for latent_dim, spread, noise, shared in itertools.product(
        (16, 32, 64), (0.3, 0.6, 1.0), (0.05, 0.3), (0.5, 1.0, 1.5, 2.5)
    ):
        model = LatentMixture(
            latent_dim=latent_dim, spread=spread, noise=noise, shared=shared, clusters=args.clusters
        )
        stats = synthetic(model)
        grid.append((distance(stats, result["real"]), model.params(), stats))
        print(
            f"latent {latent_dim:>3} spread {spread:.1f} noise {noise:.2f} shared {shared:.1f}: "
            f"distance {grid[-1][0]:.3f}",
            flush=True,
        )
    grid.sort(key=lambda g: g[0])
    best_distance, best_params, best_stats = grid[0]
    result["latent_mixture"] = {"params": best_params, "distance": best_distance, **best_stats}
    result["grid"] = [{"params": p, "distance": d} for d, p, _ in grid]
    result["near_tie"] = {
        "params": NearTieClusters(clusters=args.clusters).params(),
        **synthetic(NearTieClusters(clusters=args.clusters)),
    }
    report(result)
    RESULT.parent.mkdir(parents=True, exist_ok=True)
    RESULT.write_text(json.dumps(result, indent=2))
    print(f"written to {RESULT}")


def report(result: dict) -> None:
    print(f"\nLID estimator check (16-d sphere, expect ~15): {result['estimator_check_16d_sphere_lid']:.1f}")
    print(f"chosen latent mixture: {result['latent_mixture']['params']}")
    parts = [p for p in result["real"] if isinstance(result["real"][p], dict)]
    print(f"\n{'set':<14} {'part':<10} " + " ".join(f"{k:>17}" for k in KEYS))
    for name in ("real", "latent_mixture", "near_tie"):
        for part in parts:
            print(f"{name:<14} {part:<10} " + " ".join(f"{result[name][part][k]:>17.3f}" for k in KEYS))


if __name__ == "__main__":
    main()
