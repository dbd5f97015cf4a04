"""Deciding whether a file is an image, and storing it so the worker can decode it.

The worker reads images with ``tf.io.decode_image``, which takes PNG and JPEG
(and GIF, but only whole animations): PNG and JPEG bytes are kept as they came,
anything else Pillow reads is re-encoded to PNG (first frame only). A file
that does not decode is the caller's to skip; one that declares more pixels
than allowed refuses the whole upload, since that is an attack, not an accident.
"""

from __future__ import annotations

import hashlib
import io
import os
import warnings
from dataclasses import dataclass
from pathlib import Path

from PIL import Image, UnidentifiedImageError

from backend.datasets.errors import IngestError, show
from backend.datasets.layout import STORED_FORMATS, image_file

# Never let Pillow guess among all its plugins: fewer parsers, fewer surprises.
OPEN_FORMATS = ["PNG", "JPEG", "BMP", "GIF", "TIFF", "WEBP", "PPM"]
_PNG_MODES = {"1", "L", "LA", "P", "RGB", "RGBA", "I;16"}


class UnreadableImage(Exception):
    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True)
class StoredImage:
    filename: str  # inside the class folder, e.g. "00012.png"
    sha1: str  # of the stored bytes
    width: int
    height: int
    mode: str  # of the original


def store_image(
    raw: Path, raw_sha1: str, position: int, entry_name: str, max_pixels: int
) -> StoredImage:
    """Validate the file ``raw``; store it beside itself as image ``position``.

    ``raw`` is gone afterwards, whatever happens. Raises UnreadableImage when it
    does not decode, IngestError (413) when it is a decompression bomb.
    ``Image.MAX_IMAGE_PIXELS`` is the caller's to set.
    """
    try:
        fmt, mode, (width, height), encoded = _decode(raw, entry_name, max_pixels)
    except BaseException:
        raw.unlink(missing_ok=True)
        raise
    if encoded is None:
        filename = image_file(position, STORED_FORMATS[fmt])
        os.replace(raw, raw.with_name(filename))
        return StoredImage(filename, raw_sha1, width, height, mode)
    filename = image_file(position, STORED_FORMATS["PNG"])
    raw.with_name(filename).write_bytes(encoded)
    raw.unlink()
    return StoredImage(filename, hashlib.sha1(encoded).hexdigest(), width, height, mode)


def _decode(
    raw: Path, entry_name: str, max_pixels: int
) -> tuple[str, str, tuple[int, int], bytes | None]:
    """(format, mode, size, PNG bytes or None when the file is kept as it is)."""
    try:
        with warnings.catch_warnings():
            # Corrupt metadata in uploads is common and not worth a log line each.
            warnings.simplefilter("ignore", UserWarning)
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(raw, formats=OPEN_FORMATS) as image:
                _check_pixels(image.size, entry_name, max_pixels)
                image.verify()  # checksums, before any pixel is decoded
            # verify() leaves the image unusable; decoding needs a fresh open.
            with Image.open(raw, formats=OPEN_FORMATS) as image:
                image.load()
                fmt, mode = image.format or "", image.mode
                encoded = None if _keeps(fmt, mode) else _to_png(image)
                return fmt, mode, image.size, encoded
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        # Pillow refuses in open(), before the size is ours to quote.
        raise _too_large(entry_name, "", max_pixels) from exc
    except IngestError:
        raise
    except UnidentifiedImageError as exc:
        raise UnreadableImage("not a PNG, JPEG, BMP, GIF, TIFF, WebP or PPM image") from exc
    except Exception as exc:  # hostile files make decoders raise nearly anything
        raise UnreadableImage(_reason(exc, raw)) from exc


def _keeps(fmt: str, mode: str) -> bool:
    # tf.io cannot decode CMYK JPEGs; those are re-encoded like any other format.
    return fmt == "PNG" or (fmt == "JPEG" and mode in {"L", "RGB"})


def _check_pixels(size: tuple[int, int], entry_name: str, max_pixels: int) -> None:
    width, height = size
    if width * height > max_pixels:
        raise _too_large(entry_name, f" ({width:,}×{height:,})", max_pixels)


def _too_large(entry_name: str, dimensions: str, max_pixels: int) -> IngestError:
    return IngestError(
        f"image {show(entry_name)} is too large{dimensions}: over the limit of {max_pixels:,} "
        "pixels (CURVELAB_MAX_IMAGE_PIXELS)",
        status_code=413,
    )


def _to_png(image: Image.Image) -> bytes:
    if image.mode not in _PNG_MODES:
        if image.mode in {"I", "F"} or image.mode.startswith("I;16"):
            image = image.convert("I;16")
        else:
            image = image.convert("RGBA" if image.has_transparency_data else "RGB")
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def _reason(exc: Exception, raw: Path) -> str:
    # Some messages quote the file's path, which is ours, not the user's.
    text = str(exc).replace(str(raw), "the file").strip() or type(exc).__name__
    return text if len(text) <= 100 else text[:97] + "..."
