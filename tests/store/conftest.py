"""Synthetic documents (random unit vectors in all three kinds) and collections built from them."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest

DIM, COLBERT_DIM, VOCAB = 16, 8, 200


def make_docs(n: int, seed: int = 0, start: int = 0) -> list[dict]:
    """`n` documents with ids d{start}.. and metadata i (int), lang (en/de/fr), tags (list), nested.year."""
    rng = np.random.default_rng(seed)
    docs = []
    for i in range(start, start + n):
        dense = rng.normal(size=DIM).astype(np.float32)
        colbert = rng.normal(size=(int(rng.integers(2, 7)), COLBERT_DIM)).astype(np.float32)
        tokens = rng.choice(VOCAB, size=int(rng.integers(3, 9)), replace=False)
        docs.append(
            {
                "id": f"d{i}",
                "text": f"document number {i}",
                "metadata": {
                    "i": i,
                    "lang": ("en", "de", "fr")[i % 3],
                    "tags": [f"t{i % 4}", f"u{i % 5}"],
                    "nested": {"year": 2000 + i % 30},
                },
                "dense": dense / np.linalg.norm(dense),
                "sparse": {int(t): float(rng.uniform(0.05, 1.0)) for t in tokens},
                "colbert": colbert / np.linalg.norm(colbert, axis=1, keepdims=True),
            }
        )
    return docs


def as_query(doc: dict) -> dict:
    return {k: doc[k] for k in ("dense", "sparse", "colbert")}


@pytest.fixture
def docs() -> list[dict]:
    return make_docs(120)


@pytest.fixture
def new_collection(tmp_path) -> Callable:
    """Factory: a vector-only collection under tmp_path (small flush size and HNSW threshold, so tests reach
    segments, merges and graphs with a few hundred documents)."""
    from m3search import Collection

    made = []

    def factory(name: str = "c", **options):
        settings = dict(
            dim=DIM,
            colbert_dim=COLBERT_DIM,
            flush_docs=50,
            merge_factor=3,
            hnsw={"min_rows": 40, "exact_max_rows": 5, "exact_max_fraction": 0.02},
            cache=False,
        )
        settings.update(options)
        collection = Collection.create(tmp_path / name, **settings)
        made.append(collection)
        return collection

    yield factory
    for collection in made:
        collection.close()
