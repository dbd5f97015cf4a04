"""Thumbnails of an evaluation's mistakes, read from the run's dataset files.

A mistake names its image by the stored path the worker took from the
manifest (``002/00013.png``): server-made, checked against that shape and
resolved inside the dataset folder, never a path a user wrote.
"""

from __future__ import annotations

import io
import re
from pathlib import Path

from PIL import Image

from backend.datasets.layout import STORED_FORMATS, dataset_dir

_STORED_PATH = re.compile(r"\d{3,}/\d{5,}\.(png|jpg)")


def image_file(datasets_dir: Path, dataset_id: str, stored_path: str) -> Path:
    """The file of a dataset image; FileNotFoundError when it is not there."""
    if not _STORED_PATH.fullmatch(stored_path):
        raise FileNotFoundError(f"not a stored image path: {stored_path!r}")
    path = dataset_dir(datasets_dir, dataset_id) / stored_path
    if not path.is_file():
        raise FileNotFoundError(stored_path)
    return path


def thumbnail_png(path: Path, size: int) -> bytes:
    """The image shrunk to fit ``size``×``size`` (never enlarged), as PNG."""
    with Image.open(path, formats=list(STORED_FORMATS)) as image:
        image.draft("RGB", (size, size))  # JPEG decodes at a fraction of full size
        image.thumbnail((size, size))
        shown = image if image.mode in {"1", "L", "LA", "P", "RGB", "RGBA"} else _to_8bit(image)
        buffer = io.BytesIO()
        shown.save(buffer, format="PNG")
    return buffer.getvalue()


def _to_8bit(image: Image.Image) -> Image.Image:
    # 16-bit greyscale clipped to 8 bits would show white: scale it instead.
    if image.mode.startswith(("I", "F")):
        top = max(image.getextrema()[1] or 1, 1)
        return image.point(lambda value: value * 255 / top).convert("L")
    return image.convert("RGB")
