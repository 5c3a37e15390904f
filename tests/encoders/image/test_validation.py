"""Safe image loading: real photos load; corrupt, truncated, oversized, unsupported and bomb images fail
clearly."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from m3search.encoders.image.validation import ImageLimits, load_image, load_images, make_thumbnail
from m3search.errors import ImageError, InvalidInputError
from m3search.testing import png_bytes, png_claiming


def test_real_flickr_photos_load_as_rgb(flickr_images: list[Path]) -> None:
    for path in flickr_images[:5]:
        image = load_image(path)
        with Image.open(path) as raw:
            assert image.size == raw.size
        assert image.mode == "RGB"
    # every source kind gives the same pixels
    path = flickr_images[0]
    reference = np.asarray(load_image(path))
    for source in (
        str(path),
        path.read_bytes(),
        bytearray(path.read_bytes()),
        io.BytesIO(path.read_bytes()),
        Image.open(path),
    ):
        assert np.array_equal(np.asarray(load_image(source)), reference)


def test_truncated_jpeg_is_named(flickr_images: list[Path]) -> None:
    data = flickr_images[0].read_bytes()
    with pytest.raises(ImageError, match="truncated"):
        load_image(data[: len(data) // 2])


def test_corrupt_data_is_named(flickr_images: list[Path], tmp_path: Path) -> None:
    data = bytearray(flickr_images[0].read_bytes())
    with pytest.raises(ImageError, match="corrupt: it starts like a JPEG"):
        load_image(b"\xff\xd8\xff\xe0" + b"\x00" * 64)  # a JPEG signature and nothing valid after it
    bad_crc = bytearray(png_bytes(Image.new("RGB", (3, 3))))
    bad_crc[29] ^= 0xFF  # the IHDR chunk's checksum
    with pytest.raises(ImageError, match="corrupt"):
        load_image(bytes(bad_crc))
    with pytest.raises(ImageError, match="truncated"):
        load_image(png_bytes(Image.new("RGB", (3, 3)))[:20])
    with pytest.raises(ImageError, match="not a recognizable image"):
        load_image(b"this is not an image at all")
    # damaged entropy-coded data after the headers either fails clearly or decodes at the right size
    scan = data.index(b"\xff\xda") + 200
    data[scan : scan + 3000] = bytes(np.random.default_rng(0).integers(0, 256, 3000, dtype=np.uint8))
    try:
        assert load_image(bytes(data)).size == Image.open(flickr_images[0]).size
    except ImageError as exc:
        assert "corrupt" in str(exc) or "truncated" in str(exc)


def test_decompression_bomb_is_rejected_before_decoding() -> None:
    bomb = png_claiming(100_000, 100_000)  # 10 gigapixels in a ~70-byte file
    assert len(bomb) < 200
    with pytest.raises(ImageError, match="decompression bomb"):
        load_image(bomb)
    # below Pillow's own limit but above ours: our guard names the size
    with pytest.raises(ImageError, match="8000x8000 = 64,000,000 pixels"):
        load_image(png_claiming(8000, 8000))
    with pytest.raises(ImageError, match="pixel limit"):
        load_image(png_bytes(Image.new("RGB", (100, 100))), limits=ImageLimits(max_pixels=5000))


def test_unsupported_format_is_named() -> None:
    buffer = io.BytesIO()
    Image.new("RGB", (8, 8), "red").save(buffer, format="TIFF")
    with pytest.raises(ImageError, match="TIFF, an unsupported format"):
        load_image(buffer.getvalue())
    # formats are configurable
    tiff_ok = ImageLimits(formats=frozenset({"TIFF"}))
    assert load_image(buffer.getvalue(), limits=tiff_ok).getpixel((0, 0)) == (255, 0, 0)


def test_an_opened_pil_image_is_checked_too(flickr_images: list[Path], tmp_path: Path) -> None:
    data = flickr_images[0].read_bytes()
    cut = tmp_path / "cut.jpg"
    cut.write_bytes(data[: len(data) // 2])
    with pytest.raises(ImageError, match="truncated"):
        load_image(Image.open(cut))  # lazily opened: the damage shows only when decoding
    with pytest.raises(ImageError, match="pixel limit"):
        load_image(Image.new("RGB", (100, 100)), limits=ImageLimits(max_pixels=5000))


def test_size_and_source_errors(tmp_path: Path) -> None:
    png = png_bytes(Image.new("RGB", (10, 10)))
    with pytest.raises(ImageError, match="larger than the 100-byte limit"):
        load_image(png + b"\x00" * 100, limits=ImageLimits(max_bytes=100))
    big = tmp_path / "big.png"
    big.write_bytes(png + b"\x00" * 100)
    with pytest.raises(ImageError, match="big.png' is larger"):
        load_image(big, limits=ImageLimits(max_bytes=100))
    with pytest.raises(ImageError, match="does not exist"):
        load_image(tmp_path / "missing.jpg")
    with pytest.raises(ImageError, match="directory"):
        load_image(tmp_path)
    with pytest.raises(ImageError, match="empty"):
        load_image(b"")
    with pytest.raises(ImageError, match="binary mode"):
        load_image(io.StringIO("text"))
    with pytest.raises(ImageError, match="got int"):
        load_image(42)  # type: ignore[arg-type]
    assert issubclass(ImageError, InvalidInputError)


def test_errors_in_a_list_name_the_index(flickr_images: list[Path], tmp_path: Path) -> None:
    images = load_images([flickr_images[0], flickr_images[1].read_bytes()])
    assert len(images) == 2
    with pytest.raises(ImageError, match=r"image 1 \('.*nope.jpg'\) does not exist"):
        load_images([flickr_images[0], tmp_path / "nope.jpg"])


def test_exif_orientation_is_applied() -> None:
    # A 40x20 image whose left half is red, stored with EXIF orientation 6 (rotate 90 degrees clockwise
    # to view).
    image = Image.new("RGB", (40, 20), "blue")
    image.paste((255, 0, 0), (0, 0, 20, 20))
    exif = Image.Exif()
    exif[0x0112] = 6
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", exif=exif, quality=95)
    upright = load_image(buffer.getvalue())
    assert upright.size == (20, 40)
    red, _, blue = upright.getpixel((10, 5))  # after the rotation the red half is on top
    assert red > 200 and blue < 60


def test_transparency_goes_on_white_and_gif_gives_first_frame() -> None:
    clear = Image.new("RGBA", (4, 4), (0, 0, 0, 0))
    assert load_image(png_bytes(clear)).getpixel((0, 0)) == (255, 255, 255)
    frames = [Image.new("P", (6, 6), 1), Image.new("P", (6, 6), 2)]
    palette = [0, 0, 0, 255, 0, 0, 0, 255, 0] + [0] * (768 - 9)
    for frame in frames:
        frame.putpalette(palette)
    buffer = io.BytesIO()
    frames[0].save(buffer, format="GIF", save_all=True, append_images=frames[1:])
    assert load_image(buffer.getvalue()).getpixel((0, 0)) == (255, 0, 0)


def test_thumbnail_keeps_aspect_and_is_a_jpeg(flickr_images: list[Path]) -> None:
    image = load_image(flickr_images[0])
    thumb = Image.open(io.BytesIO(make_thumbnail(image, max_side=64)))
    assert thumb.format == "JPEG"
    assert max(thumb.size) == 64
    assert abs(thumb.size[0] / thumb.size[1] - image.size[0] / image.size[1]) < 0.05
