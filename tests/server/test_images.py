"""Images through the server: /embed with base64 and multipart images, image collections (upsert with base64
images, thumbnails, search by text, image and both, JSON and multipart), and image errors as 400 / 413."""

from __future__ import annotations

import base64
import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from m3search.encoders.image.adapter import AdapterImageEncoder
from m3search.testing import png_claiming


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


@pytest.fixture
def image_client(make_client, tiny_adapter_dir: Path):
    return make_client(image_encoder=str(tiny_adapter_dir))


@pytest.fixture
def gallery(image_client, flickr_images: list[Path]):
    """Collection `gallery`: two texts, three images (base64, one as a data: URL) and one image+text."""
    assert (
        image_client.post("/collections", json={"name": "gallery", "images": True}).json()["images"] is True
    )
    photos = [p.read_bytes() for p in flickr_images[:4]]
    documents = [
        {"id": "t1", "text": "A black dog runs on the grass"},
        {"id": "t2", "text": "Two children play in the snow", "metadata": {"lang": "en"}},
        {"id": "i0", "image": b64(photos[0])},
        {"id": "i1", "image": "data:image/jpeg;base64," + b64(photos[1]), "metadata": {"lang": "en"}},
        {"id": "i2", "image": b64(photos[2])},
        {"id": "both", "image": b64(photos[3]), "text": "a dog jumps"},
    ]
    answer = image_client.post("/collections/gallery/documents", json={"documents": documents})
    assert answer.status_code == 200, answer.text
    assert answer.json() == {"upserted": 6, "count": 6}
    return image_client


def test_embed_images_in_the_text_space(
    image_client, tiny_adapter_dir: Path, flickr_images: list[Path]
) -> None:
    expected = AdapterImageEncoder.load(tiny_adapter_dir).encode_images(flickr_images[:2])
    body = {"images": [b64(p.read_bytes()) for p in flickr_images[:2]], "texts": ["a dog"]}
    answer = image_client.post("/embed", json=body).json()
    assert np.allclose(answer["images"], expected, atol=1e-5) and len(answer["data"]) == 1
    files = [("images", (p.name, p.read_bytes(), "image/jpeg")) for p in flickr_images[:2]]
    uploaded = image_client.post("/embed/upload", files=files).json()
    assert np.allclose(uploaded["images"], expected, atol=1e-5)


def test_documents_thumbnails_and_search_each_way(gallery, flickr_images: list[Path]) -> None:
    doc = gallery.get("/collections/gallery/documents/i2").json()
    assert doc["kind"] == "image" and doc["text"] is None
    thumb = gallery.get(doc["thumbnail_url"])
    assert thumb.status_code == 200 and thumb.headers["content-type"] == "image/jpeg"
    assert (
        Image.open(io.BytesIO(thumb.content)).format == "JPEG"
        and "immutable" in thumb.headers["cache-control"]
    )
    assert gallery.get("/collections/gallery/documents/t1").json()["thumbnail_url"] is None
    assert gallery.get("/collections/gallery/documents/both").json()["kind"] == "image+text"

    # text -> image
    hits = gallery.post("/collections/gallery/search", json={"query": "a dog", "kinds": ["image"]}).json()
    assert hits["mode"] == "all" and {h["id"] for h in hits["results"]} == {"i0", "i1", "i2"}
    assert all(h["thumbnail_url"].startswith("/collections/gallery/thumbnails/") for h in hits["results"])
    # image -> anything (dense), as base64 and as a multipart upload: the image itself first
    photo = flickr_images[1].read_bytes()
    by_json = gallery.post("/collections/gallery/search", json={"image": b64(photo), "k": 6}).json()
    assert by_json["mode"] == "dense" and by_json["results"][0]["id"] == "i1"
    assert by_json["results"][0]["score"] == pytest.approx(1.0, abs=1e-5)
    by_file = gallery.post(
        "/collections/gallery/search/upload",
        files={"image": ("q.jpg", photo, "image/jpeg")},
        data={"request": '{"k": 6}'},
    ).json()
    assert [h["id"] for h in by_file["results"]] == [h["id"] for h in by_json["results"]]
    # image -> text, with a filter
    texts = gallery.post(
        "/collections/gallery/search/upload",
        files={"image": ("q.jpg", photo, "image/jpeg")},
        data={"request": '{"kinds": ["text"], "filter": {"lang": "en"}}'},
    ).json()
    assert [h["id"] for h in texts["results"]] == ["t2"]
    # image + text
    both = gallery.post(
        "/collections/gallery/search",
        json={"query": "a dog jumps", "image": b64(flickr_images[3].read_bytes()), "mode": "dense"},
    )
    assert both.json()["results"][0]["id"] == "both"


def test_image_errors(gallery, make_client, flickr_images: list[Path]) -> None:
    bad = gallery.post(
        "/collections/gallery/documents",
        json={"documents": [{"id": "ok", "text": "fine"}, {"id": "bad", "image": b64(b"nope")}]},
    )
    assert bad.status_code == 400 and "'bad'" in bad.json()["error"]["message"]
    assert gallery.get("/collections/gallery/documents/ok").status_code == 404  # the batch stored nothing
    assert gallery.get("/collections/gallery").json()["count"] == 6
    bomb = gallery.post("/collections/gallery/search", json={"image": b64(png_claiming(100_000, 100_000))})
    assert bomb.status_code == 413 and "query image" in bomb.json()["error"]["message"]
    not_b64 = gallery.post("/collections/gallery/search", json={"image": "/etc/passwd"})
    assert not_b64.status_code == 400 and "base64" in not_b64.json()["error"]["message"]
    empty = gallery.post("/collections/gallery/search/upload", files={"image": ("e.jpg", b"", "image/jpeg")})
    assert empty.status_code == 400
    mode = gallery.post(
        "/collections/gallery/search", json={"image": b64(flickr_images[0].read_bytes()), "mode": "sparse"}
    )
    assert mode.status_code == 422 and "only a dense vector" in mode.json()["error"]["message"]
    assert gallery.get("/collections/gallery/thumbnails/999999").status_code == 404
    no_content = gallery.post("/collections/gallery/documents", json={"documents": [{"id": "x"}]})
    assert no_content.status_code == 422 and "needs a text, an image, or both" in no_content.text
    small = make_client(max_body_bytes=4096)
    big = small.post("/embed", json={"images": [b64(flickr_images[0].read_bytes())]})
    assert big.status_code == 413
    plain = make_client()
    no_images = plain.post("/embed", json={"images": [b64(flickr_images[0].read_bytes())]})
    assert no_images.status_code == 422 and "--image-encoder" in no_images.json()["error"]["message"]
