"""Collections that hold images: an adapter or Visualized-BGE beside the text model, image and image+text
documents, thumbnails, image queries, kinds filters, validation and reopening."""

from __future__ import annotations

import base64
import io
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from m3search.encoders.image.adapter import AdapterImageEncoder
from m3search.errors import ImageError, InvalidInputError
from m3search.store.collection import Collection
from m3search.store.images import IMAGE_ENCODER_DIR, normalized_mean
from m3search.testing import png_claiming

TEXTS = {
    "t1": "A black dog runs on the grass",
    "t2": "Two children play in the snow",
    "t3": "A man rides a red bicycle down the street",
}


@pytest.fixture(scope="module")
def adapter(tiny_adapter_dir: Path) -> AdapterImageEncoder:
    return AdapterImageEncoder.load(tiny_adapter_dir)


@pytest.fixture
def mixed(tiny_m3, tiny_adapter_dir: Path, flickr_images: list[Path], tmp_path: Path) -> Collection:
    """Three texts, three images (path, bytes, base64) and one image+text document."""
    collection = Collection.create(
        tmp_path / "mixed", encoder=tiny_m3, image_encoder=tiny_adapter_dir, cache=False
    )
    collection.upsert([{"id": i, "text": t, "metadata": {"n": n}} for n, (i, t) in enumerate(TEXTS.items())])
    photos = flickr_images[:4]
    collection.upsert(
        [
            {"id": "img0", "image": str(photos[0]), "metadata": {"n": 0}},
            {"id": "img1", "image": photos[1].read_bytes(), "metadata": {"n": 1}},
            {"id": "img2", "image": base64.b64encode(photos[2].read_bytes()).decode(), "metadata": {"n": 2}},
            {"id": "both", "image": str(photos[3]), "text": "A dog jumps over a fence", "metadata": {"n": 3}},
        ]
    )
    yield collection
    collection.close()


def test_documents_get_kinds_vectors_and_thumbnails(
    mixed: Collection, adapter: AdapterImageEncoder, tiny_m3, flickr_images: list[Path]
) -> None:
    assert mixed.count() == 7
    docs = {d.id: d for d in mixed.get(["t1", "img0", "img1", "img2", "both"])}
    assert [docs[i].kind for i in docs] == ["text", "image", "image", "image", "image+text"]
    assert docs["t1"].thumbnail is None and docs["img0"].text is None
    thumb = Image.open(io.BytesIO(mixed.thumbnail(docs["img2"].thumbnail)))
    original = Image.open(flickr_images[2]).size
    scale = min(1.0, 256 / max(original))
    assert thumb.format == "JPEG" and thumb.size == (round(original[0] * scale), round(original[1] * scale))
    # an image alone: the adapter's vector, exactly (cosine 1 with itself)
    vectors = adapter.encode_images(flickr_images[:4])
    for i in range(3):
        hit = mixed.search({"dense": vectors[i]}, k=1, mode="dense")[0]
        assert hit.id == f"img{i}" and hit.score == pytest.approx(1.0, abs=1e-5)
        assert hit.thumbnail == docs[f"img{i}"].thumbnail
    # image+text with an adapter: the normalized mean of the image and text vectors, plus the text's sparse
    text_dense = tiny_m3.encode_documents(["A dog jumps over a fence"]).dense[0]
    hit = mixed.search({"dense": normalized_mean(text_dense, vectors[3])}, k=1, mode="dense")[0]
    assert hit.id == "both" and hit.score == pytest.approx(1.0, abs=1e-5)
    assert mixed.search("dog jumps fence", k=1, mode="sparse")[0].id == "both"


@pytest.mark.parametrize("flush", [False, True])
def test_search_each_direction_with_kinds(
    mixed: Collection, adapter: AdapterImageEncoder, tiny_m3, flickr_images: list[Path], flush: bool
) -> None:
    if flush:
        mixed.flush()  # segments with image rows: empty sparse rows, no ColBERT tokens
    vectors = adapter.encode_images(flickr_images[:3])
    # text -> image: images ranked by the text query's cosine with their vectors
    query = tiny_m3.encode_queries(["a dog"]).dense[0]
    hits = mixed.search("a dog", k=10, kinds=["image"], mode="dense")
    assert [h.id for h in hits] == [f"img{i}" for i in np.argsort(-(vectors @ query))]
    assert {h.kind for h in hits} == {"image"} and all(h.thumbnail for h in hits)
    # image -> text
    texts = mixed.search(image=flickr_images[0], kinds="text", k=10)
    text_vecs = tiny_m3.encode_documents(list(TEXTS.values())).dense
    assert [h.id for h in texts] == [list(TEXTS)[i] for i in np.argsort(-(text_vecs @ vectors[0]))]
    assert [h.scores["dense"] for h in texts] == pytest.approx(
        sorted(text_vecs @ vectors[0], reverse=True), abs=1e-5
    )
    # image -> anything: the image itself first; kinds combine with filters
    assert mixed.search(image=flickr_images[1].read_bytes(), k=1)[0].id == "img1"
    both = mixed.search(image=str(flickr_images[2]), kinds=["image", "image+text"], filter={"n": {"$gte": 2}})
    assert {h.id for h in both} == {"img2", "both"}
    # hybrid modes score images by their dense vector alone; texts by the weighted mean (the reference
    # formula, normalize="none", keeps raw scores, so an image's fused score is its cosine)
    for mode in ("all", "dense+sparse"):
        for hit in mixed.search("a dog on the grass", k=10, mode=mode, normalize="none"):
            if hit.kind == "image":
                assert hit.score == pytest.approx(hit.scores["dense"], abs=1e-6)
            else:
                assert hit.score != pytest.approx(hit.scores["dense"], abs=1e-6)
    # image + text query: the mean of the two vectors
    combo = mixed.search("a dog", image=flickr_images[0], k=7, mode="dense")
    expected = normalized_mean(tiny_m3.encode_queries(["a dog"]).dense[0], vectors[0])
    reference = mixed.search({"dense": expected}, k=7, mode="dense")
    assert [h.id for h in combo] == [h.id for h in reference]
    assert [h.score for h in combo] == pytest.approx([h.score for h in reference], abs=1e-5)


def test_delete_and_reopen_keep_images(mixed: Collection, flickr_images: list[Path]) -> None:
    ref = mixed.get("img1")[0].thumbnail
    assert mixed.delete(["img1"]) == 1
    assert mixed.thumbnail(ref) is None and mixed.get("img1") == [None]
    mixed.compact()
    path = mixed.path
    mixed.close()
    assert (path / IMAGE_ENCODER_DIR / "adapter.json").is_file()
    assert json.loads((path / "config.json").read_text())["image_encoder"]["source"] == IMAGE_ENCODER_DIR
    with Collection.open(path, cache=False) as again:  # the adapter reloads from the collection's copy
        assert again.count() == 6
        assert again.search(image=flickr_images[2], k=1, kinds=["image"])[0].id == "img2"
        again.upsert([{"id": "img1", "image": str(flickr_images[1])}])
        assert again.search(image=flickr_images[1], k=1)[0].id == "img1"


def test_bad_images_name_the_document_and_lose_nothing(
    mixed: Collection, flickr_images: list[Path], tmp_path: Path
) -> None:
    before = mixed.count()
    good = {"id": "new", "image": str(flickr_images[5])}
    cases = [
        (b"not an image at all", "not a recognizable image"),
        (flickr_images[0].read_bytes()[:2000], "truncated"),
        (png_claiming(100_000, 100_000), "decompression bomb"),
        ("%%% not base64 %%%", "neither an existing file path or valid base64"),
        (str(tmp_path / "missing.jpg"), "neither an existing file path"),
    ]
    for image, message in cases:
        with pytest.raises(ImageError, match=message) as info:
            mixed.upsert([good, {"id": "bad", "image": image}])
        assert "'bad'" in str(info.value)
    assert mixed.count() == before and mixed.get(["new", "bad"]) == [None, None]
    with pytest.raises(ImageError, match="query image"):
        mixed.search(image=b"garbage")
    with pytest.raises(InvalidInputError, match="only a dense vector"):
        mixed.search(image=flickr_images[0], mode="sparse")
    with pytest.raises(InvalidInputError, match="kinds must be"):
        mixed.search("dog", kinds=["video"])


def test_image_encoder_must_fit_the_collection(
    tiny_m3, tiny_adapter_dir: Path, e5_encoder, flickr_images: list[Path], tmp_path: Path
) -> None:
    with pytest.raises(InvalidInputError, match="makes 64-d vectors.* holds 384-d ones"):
        Collection.create(tmp_path / "e5", encoder=e5_encoder, image_encoder=tiny_adapter_dir, cache=False)
    assert not (tmp_path / "e5").exists()
    other = tmp_path / "other-adapter"
    shutil.copytree(tiny_adapter_dir, other)
    config = json.loads((other / "adapter.json").read_text())
    (other / "adapter.json").write_text(json.dumps({**config, "text_model": "someone/else-64d"}))
    with pytest.raises(InvalidInputError, match="space of text model 'someone/else-64d'"):
        Collection.create(tmp_path / "other", encoder=tiny_m3, image_encoder=other, cache=False)
    assert not (tmp_path / "other").exists()
    with Collection.create(tmp_path / "plain", encoder=tiny_m3, cache=False) as plain:
        with pytest.raises(InvalidInputError, match="holds no images"):
            plain.upsert([{"id": "x", "image": str(flickr_images[0])}])
        with pytest.raises(InvalidInputError, match="holds no images"):
            plain.search(image=flickr_images[0])


def test_visualized_bge_composes_image_and_text(
    tiny_m3,
    tiny_m3_dir: Path,
    tiny_visualized,
    tiny_visualized_path: Path,
    flickr_images: list[Path],
    tmp_path: Path,
) -> None:
    path = tmp_path / "visualized"
    with Collection.create(
        path, encoder=tiny_m3, image_encoder=tiny_visualized_path, cache=False
    ) as collection:
        collection.upsert(
            [
                {"id": "t", "text": "A black dog"},
                {"id": "i", "image": str(flickr_images[0])},
                {"id": "it", "image": str(flickr_images[1]), "text": "a dog"},
            ]
        )
        composed = tiny_visualized.encode_composed([flickr_images[1]], ["a dog"])[0]
        hit = collection.search({"dense": composed}, k=1, mode="dense")[0]
        assert hit.id == "it" and hit.score == pytest.approx(1.0, abs=1e-4)
        image_only = tiny_visualized.encode_images([flickr_images[0]])[0]
        assert collection.search({"dense": image_only}, k=1, mode="dense")[0].id == "i"
        found = collection.search("a dog", image=flickr_images[1], k=1, mode="dense")[0]
        assert found.id == "it" and found.score == pytest.approx(1.0, abs=1e-4)
    config = json.loads((path / "config.json").read_text())
    assert config["image_encoder"]["composed"] and Path(config["image_encoder"]["source"]).exists()
    with Collection.open(path, cache=False) as again:  # reloads the checkpoint it names
        assert again.search(image=flickr_images[0], k=1)[0].id == "i"


def test_bm25_collection_with_images(
    e5_encoder, e5_dir: Path, lite0, flickr_images: list[Path], tmp_path: Path
) -> None:
    """A model without a sparse head (e5 + BM25): images have no term counts; hybrid search still works."""
    from m3search.encoders.image.adapter import AdapterConfig
    from m3search.encoders.image.training import TrainConfig, initial_projection

    features = lite0.encode(flickr_images[:3])
    config = AdapterConfig(
        tower=lite0.name,
        text_model=e5_encoder.name,
        feature_dim=lite0.feature_dim,
        dim=e5_encoder.dim,
        preprocess=lite0.preprocess.to_dict(),
    )
    images = AdapterImageEncoder(lite0, initial_projection(features, e5_encoder.dim, TrainConfig()), config)
    with Collection.create(
        tmp_path / "bm25",
        e5_dir,
        outputs=["dense", "sparse"],
        image_encoder=images,
        runtime="torch-fp32",
        cache=False,
    ) as col:
        assert col.config.sparse_source == "bm25"
        col.upsert(
            [
                {"id": "t", "text": "a dog runs on the beach"},
                {"id": "i", "image": str(flickr_images[0])},
                {"id": "it", "image": str(flickr_images[1]), "text": "a dog in the snow"},
            ]
        )
        for _stage in ("pending", "sealed"):  # the same answers before and after flush() seals the rows
            hits = {h.id: h for h in col.search("dog snow", k=3, mode="dense+sparse")}
            assert set(hits) == {"t", "i", "it"}
            assert hits["i"].scores["sparse"] == 0 and hits["it"].scores["sparse"] > 0
            assert col.search("dog snow", k=1, mode="sparse", kinds=["image+text"])[0].id == "it"
            col.flush()
        assert col.delete(["it"]) == 1
        col.compact()
        assert col.search(image=flickr_images[0], k=2)[0].id == "i"
