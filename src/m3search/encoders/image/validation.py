"""Safe image loading: every image m3search decodes comes through here, whatever its source.

Uploaded bytes are untrusted: a file can be corrupt, truncated, of a format we do not want to decode, far
larger than memory allows, or a decompression bomb (a few kilobytes claiming gigapixels). Each of these
becomes an `ImageError` that names the image and the problem, before any large decode happens. Decoding itself
is Pillow's.
"""

from __future__ import annotations

import base64
import binascii
import io
import os
import struct
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Union

from PIL import Image, ImageOps, UnidentifiedImageError

from m3search.errors import ImageError, ImageTooLargeError

#: What callers may pass as an image: a path, raw bytes, a binary file object or an already opened PIL image.
ImageSource = Union[str, "os.PathLike[str]", bytes, bytearray, memoryview, IO[bytes], Image.Image]

#: Pillow decoders used by default (JPEG includes MPO, the multi-picture JPEG many cameras write; GIF gives
#: its first frame).
DEFAULT_FORMATS = frozenset({"JPEG", "PNG", "WEBP", "GIF", "BMP"})


@dataclass(frozen=True)
class ImageLimits:
    """Bounds on what `load_image` accepts; the defaults suit photos and screenshots."""

    #: Largest encoded file, in bytes.
    max_bytes: int = 20 * 1024 * 1024
    #: Largest decoded image, width x height (the decompression-bomb guard; 50 MP is a large camera photo).
    #: Pillow's own guard (`Image.MAX_IMAGE_PIXELS`, ~89 MP) still applies above this; raise both to go
    #: higher.
    max_pixels: int = 50_000_000
    #: Pillow format names that may be decoded.
    formats: frozenset[str] = field(default=DEFAULT_FORMATS)


DEFAULT_LIMITS = ImageLimits()


def _describe(source: ImageSource, label: str | None) -> str:
    if label:
        return label
    if isinstance(source, (str, os.PathLike)):
        return f"image {os.fspath(source)!r}"
    return "image"


def _read_bytes(source: ImageSource, limits: ImageLimits, what: str) -> bytes:
    """Read at most `max_bytes` (+1 to detect overflow) from a path, a buffer or a binary file object."""
    too_big = f"{what} is larger than the {limits.max_bytes:,}-byte limit"
    if isinstance(source, (bytes, bytearray, memoryview)):
        data = bytes(source)
    elif isinstance(source, (str, os.PathLike)):
        path = Path(source)
        try:
            if path.stat().st_size > limits.max_bytes:
                raise ImageTooLargeError(too_big)
            data = path.read_bytes()
        except FileNotFoundError:
            raise ImageError(f"{what} does not exist") from None
        except IsADirectoryError:
            raise ImageError(f"{what} is a directory, not an image file") from None
        except OSError as exc:
            raise ImageError(f"{what} cannot be read: {exc.strerror or exc}") from None
    elif hasattr(source, "read"):
        data = source.read(limits.max_bytes + 1)
        if not isinstance(data, (bytes, bytearray)):
            raise ImageError(f"{what}: the file object must be opened in binary mode")
        data = bytes(data)
    else:
        raise ImageError(
            f"{what}: expected a path, bytes, a binary file or a PIL image, got {type(source).__name__}"
        )
    if len(data) > limits.max_bytes:
        raise ImageTooLargeError(too_big)
    if not data:
        raise ImageError(f"{what} is empty (0 bytes)")
    return data


#: File signatures of the default formats, to tell "a damaged PNG" from "not an image".
_SIGNATURES = ((b"\xff\xd8\xff", "JPEG"), (b"\x89PNG\r\n\x1a\n", "PNG"), (b"GIF8", "GIF"), (b"BM", "BMP"))


def _signature(data: bytes) -> str | None:
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "WEBP"
    return next((name for magic, name in _SIGNATURES if data.startswith(magic)), None)


def _identify(data: bytes) -> str | None:
    """The format Pillow recognizes in `data` without decoding it, or None."""
    try:
        with Image.open(io.BytesIO(data)) as probe:
            return probe.format
    except Exception:  # noqa: BLE001 - identification only: any failure means "unknown"
        return None


def _check_pixels(image: Image.Image, limits: ImageLimits, what: str) -> None:
    width, height = image.size
    if width < 1 or height < 1:
        raise ImageError(f"{what} has no pixels ({width}x{height})")
    if width * height > limits.max_pixels:
        raise ImageTooLargeError(
            f"{what} is {width}x{height} = {width * height:,} pixels, over the {limits.max_pixels:,}-pixel "
            "limit (a decompression bomb or an image too large to index; downscale it first)"
        )


def to_rgb(image: Image.Image) -> Image.Image:
    """RGB copy of `image`; transparent areas are composited on white (as a viewer shows them), not black."""
    if image.mode == "RGB":
        return image
    if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return image.convert("RGB")


def load_image(
    source: ImageSource, *, limits: ImageLimits = DEFAULT_LIMITS, label: str | None = None
) -> Image.Image:
    """Decode one image into an upright RGB PIL image, or raise an `ImageError` saying what is wrong with it.

    Checks, in order: readable and within `max_bytes`; a format in `limits.formats`; header dimensions within
    `max_pixels` (before decoding, so bombs cost nothing); a complete decode (truncated or corrupt data
    fails). EXIF orientation is applied; GIFs give their first frame. An already opened PIL image skips the
    byte and format checks.
    """
    what = _describe(source, label)
    data = b"" if isinstance(source, Image.Image) else _read_bytes(source, limits, what)
    try:
        with warnings.catch_warnings():
            # Pillow's own bomb guard warns (then errors) past Image.MAX_IMAGE_PIXELS; ours is stricter, but
            # treat its warning as the error it is either way.
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            if isinstance(source, Image.Image):
                image = source
            else:
                image = Image.open(io.BytesIO(data), formats=sorted(limits.formats))
                image.seek(0)
            _check_pixels(image, limits, what)
            image.load()
            return to_rgb(ImageOps.exif_transpose(image))
    except ImageError:
        raise
    except UnidentifiedImageError:
        allowed = ", ".join(sorted(limits.formats))
        claimed = _signature(data)
        if claimed in limits.formats:
            raise ImageError(
                f"{what} is corrupt: it starts like a {claimed} file but cannot be parsed"
            ) from None
        found = _identify(data)
        if found:
            raise ImageError(f"{what} is {found}, an unsupported format (supported: {allowed})") from None
        raise ImageError(f"{what} is not a recognizable image (supported formats: {allowed})") from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise ImageTooLargeError(f"{what} is a decompression bomb: {exc}") from None
    except (
        OSError,
        ValueError,
        SyntaxError,
        EOFError,
        IndexError,
        KeyError,
        TypeError,
        struct.error,
        MemoryError,
    ) as exc:
        detail = str(exc) or type(exc).__name__
        if "truncated" in detail.lower():
            raise ImageError(f"{what} is truncated (the file ends before the image data does)") from None
        raise ImageError(f"{what} is corrupt and cannot be decoded: {detail}") from None


def load_images(
    sources: Sequence[ImageSource], *, limits: ImageLimits = DEFAULT_LIMITS, first_index: int = 0
) -> list[Image.Image]:
    """`load_image` over a list; errors name the index (counted from `first_index`, for batches of a larger
    list) and the path, when there is one, of the bad image."""
    single = (str, bytes, bytearray, memoryview, os.PathLike, Image.Image)
    if isinstance(sources, single) or hasattr(sources, "read"):
        sources = [sources]  # type: ignore[list-item]
    out = []
    for i, source in enumerate(sources):
        label = f"image {first_index + i}"
        if isinstance(source, (str, os.PathLike)):
            label += f" ({os.fspath(source)!r})"
        out.append(load_image(source, limits=limits, label=label))
    return out


def image_field(value: object, what: str, *, allow_paths: bool = True) -> ImageSource:
    """An image as a JSON/API field gives it: raw bytes, base64 text (optionally a `data:` URL) or, where
    `allow_paths` (local callers; never a server request), a file path. Raises `ImageError` naming `what`."""
    if isinstance(value, (bytes, bytearray, memoryview, Image.Image)) or hasattr(value, "read"):
        return value  # type: ignore[return-value]
    if isinstance(value, os.PathLike):
        if not allow_paths:
            raise ImageError(f"{what}: image paths are not accepted here; send the image's bytes (base64)")
        return value
    if not isinstance(value, str) or not value:
        raise ImageError(f"{what}: an image is a path, bytes or base64 text, got {type(value).__name__}")
    text = value
    if text.startswith("data:"):
        header, _, text = text.partition(",")
        if not header.endswith(";base64"):
            raise ImageError(f"{what}: a data: URL image must be base64-encoded")
    elif allow_paths and (len(text) < 4096 and Path(text).expanduser().exists()):
        return Path(text).expanduser()
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        hint = "an existing file path or " if allow_paths else ""
        raise ImageError(f"{what}: the image is neither {hint}valid base64") from None


def make_thumbnail(image: Image.Image, *, max_side: int = 256, quality: int = 85) -> bytes:
    """JPEG bytes of `image` shrunk to fit `max_side` x `max_side` (for result lists in the UI)."""
    thumb = to_rgb(image).copy()
    thumb.thumbnail((max_side, max_side), Image.Resampling.LANCZOS)
    buffer = io.BytesIO()
    thumb.save(buffer, format="JPEG", quality=quality, optimize=True)
    return buffer.getvalue()


__all__ = [
    "DEFAULT_FORMATS",
    "DEFAULT_LIMITS",
    "ImageLimits",
    "ImageSource",
    "image_field",
    "load_image",
    "load_images",
    "make_thumbnail",
    "to_rgb",
]
