"""Text and image documents in one collection: image vectors from an `ImageEncoder` share the dense index."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from m3search.encoders.image.adapter import AdapterConfig, AdapterImageEncoder
from m3search.encoders.image.training import TrainConfig, initial_projection
from m3search.errors import DimensionMismatchError
from m3search.store.collection import Collection


def test_text_and_image_documents_share_the_dense_index(
    tiny_m3, lite0, flickr_images: list[Path], tmp_path: Path
) -> None:
    photos = flickr_images[:4]
    features = lite0.encode(photos)
    projection = initial_projection(features, tiny_m3.dim, TrainConfig(seed=3))
    config = AdapterConfig(
        tower=lite0.name,
        text_model=tiny_m3.name,
        feature_dim=lite0.feature_dim,
        dim=tiny_m3.dim,
        preprocess=lite0.preprocess.to_dict(),
    )
    images = AdapterImageEncoder(lite0, projection, config)
    assert images.text_model == tiny_m3.name  # what a collection checks before mixing the two

    collection = Collection.create(tmp_path / "mixed", encoder=tiny_m3, outputs=["dense"], cache=False)
    texts = ["A black dog runs on the grass", "Two children play in the snow"]
    collection.upsert([{"id": "t1", "text": texts[0]}, {"id": "t2", "text": texts[1]}])
    vectors = images.encode_images(photos)
    collection.upsert(
        [
            {"id": f"img{i}", "dense": v, "kind": "image", "metadata": {"path": p.name}}
            for i, (v, p) in enumerate(zip(vectors, photos))
        ]
    )
    assert collection.count() == 6

    # image -> anything: the image itself comes first with cosine 1, then the rest by dot product
    hits = collection.search({"dense": vectors[2]}, k=6, mode="dense")
    assert hits[0].id == "img2" and hits[0].kind == "image" and hits[0].score == pytest.approx(1.0, abs=1e-5)
    assert hits[0].metadata == {"path": photos[2].name}
    expected = {f"img{i}": float(vectors[2] @ v) for i, v in enumerate(vectors)}
    text_vecs = tiny_m3.encode_documents(texts).dense
    expected.update(t1=float(vectors[2] @ text_vecs[0]), t2=float(vectors[2] @ text_vecs[1]))
    assert [h.id for h in hits] == sorted(expected, key=expected.get, reverse=True)
    assert {h.id: h.score for h in hits} == pytest.approx(expected, abs=1e-4)

    # text -> images: a text query ranks image documents by the same cosine
    query = tiny_m3.encode_queries(["a dog"]).dense[0]
    image_hits = [h for h in collection.search("a dog", k=6, mode="dense") if h.kind == "image"]
    assert [h.id for h in image_hits] == [f"img{i}" for i in np.argsort(-(vectors @ query))]

    wrong = np.ones(tiny_m3.dim + 1, dtype=np.float32)
    with pytest.raises(DimensionMismatchError):
        collection.upsert([{"id": "bad", "dense": wrong, "kind": "image"}])
    collection.close()
