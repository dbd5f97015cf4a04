"""Character datasets drawn with Pillow: a dataset anyone can make, offline, in seconds.

Each class is one character. Every image draws it at a random offset, scale
and small rotation, with random colours and noise, so a small CNN learns it
well above chance but not at once (``O`` and ``0``, ``1`` and ``I`` stay
confusable). Used by ``curvelab demo``, the tests and the README experiment.
The output is the same for the same seed, byte for byte.
"""

from __future__ import annotations

import io
import string
import zipfile
from functools import lru_cache
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

DEFAULT_CHARSET = string.digits + string.ascii_uppercase
# Fixed timestamps keep the ZIP itself reproducible.
_EPOCH = (2024, 1, 1, 0, 0, 0)
_EXTENSIONS = {
    "PNG": "png",
    "JPEG": "jpg",
    "BMP": "bmp",
    "GIF": "gif",
    "TIFF": "tif",
    "WEBP": "webp",
}
# Already-compressed formats gain nothing from deflate.
_STORED = {"PNG", "JPEG", "GIF", "WEBP"}


def render_character(
    char: str, size: tuple[int, int], mode: str, rng: np.random.Generator
) -> Image.Image:
    """One image of ``char``, ``size`` = (height, width), in Pillow ``mode`` "L" or "RGB"."""
    if mode not in {"L", "RGB"}:
        raise ValueError(f"mode must be 'L' or 'RGB', not {mode!r}")
    height, width = size
    if height < 4 or width < 4:
        raise ValueError(f"image size must be at least 4×4, not {height}×{width}")
    side = min(height, width)
    glyph = Image.new("L", (width, height), 0)
    centre = (
        width / 2 + rng.uniform(-0.15, 0.15) * width,
        height / 2 + rng.uniform(-0.15, 0.15) * height,
    )
    ImageDraw.Draw(glyph).text(
        centre,
        char,
        fill=255,
        font=_font(max(4, round(side * rng.uniform(0.5, 0.85)))),
        anchor="mm",
        stroke_width=int(rng.integers(0, 2)) if side >= 24 else 0,
        stroke_fill=255,
    )
    glyph = glyph.rotate(rng.uniform(-15, 15), resample=Image.Resampling.BILINEAR)

    background, ink = _colours(mode, rng)
    alpha = np.asarray(glyph, dtype=np.float32)[..., None] / 255.0
    pixels = background * (1 - alpha) + ink * alpha
    pixels += rng.normal(0.0, rng.uniform(2.0, 18.0), size=pixels.shape)
    pixels = np.clip(pixels, 0, 255).astype(np.uint8)
    return Image.fromarray(pixels[..., 0] if mode == "L" else pixels, mode=mode)


def class_folder_name(char: str) -> str:
    """A folder name for ``char`` that is safe on every filesystem."""
    if char.isascii() and char.isdigit():
        return f"digit_{char}"
    if char.isascii() and char.isalpha():
        # Case-insensitive filesystems would merge "a" and "A".
        return char if char.isupper() else f"lower_{char}"
    return f"U+{ord(char):04X}"


def write_character_zip(
    path: Path,
    *,
    num_classes: int = 10,
    per_class: int = 20,
    image_size: tuple[int, int] = (32, 32),
    mode: str = "L",
    seed: int = 0,
    top_folder: str | None = None,
    fmt: str = "PNG",
) -> Path:
    """Write a dataset ZIP of ``num_classes`` characters, one folder each; return ``path``."""
    if not 1 <= num_classes <= len(DEFAULT_CHARSET):
        raise ValueError(f"num_classes must be between 1 and {len(DEFAULT_CHARSET)}")
    if per_class < 1:
        raise ValueError("per_class must be at least 1")
    fmt = fmt.upper()
    if fmt not in _EXTENSIONS:
        raise ValueError(f"fmt must be one of {sorted(_EXTENSIONS)}, not {fmt!r}")
    if top_folder is not None and (not top_folder or any(c in top_folder for c in "/\\:")):
        raise ValueError(f"top_folder must be a plain folder name, not {top_folder!r}")

    rng = np.random.default_rng(seed)
    prefix = f"{top_folder}/" if top_folder else ""
    compression = zipfile.ZIP_STORED if fmt in _STORED else zipfile.ZIP_DEFLATED
    path.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(path, "w") as archive:
        for char in DEFAULT_CHARSET[:num_classes]:
            folder = class_folder_name(char)
            for index in range(per_class):
                image = render_character(char, image_size, mode, rng)
                buffer = io.BytesIO()
                image.save(buffer, format=fmt, **({"quality": 90} if fmt == "JPEG" else {}))
                info = zipfile.ZipInfo(
                    f"{prefix}{folder}/{folder}_{index:04d}.{_EXTENSIONS[fmt]}", _EPOCH
                )
                info.compress_type = compression
                info.external_attr = 0o644 << 16
                archive.writestr(info, buffer.getvalue())
    return path


@lru_cache(maxsize=64)
def _font(size: int) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    # Pillow ≥ 10.1 embeds a scalable font: no download, same glyphs everywhere.
    return ImageFont.load_default(size=size)


def _colours(mode: str, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """(background, ink) as float arrays of one or three channels, clearly apart."""
    channels = 1 if mode == "L" else 3
    while True:
        background = rng.uniform(0, 255, size=channels)
        ink = rng.uniform(0, 255, size=channels)
        if abs(_luma(background) - _luma(ink)) >= 90:
            return background.astype(np.float32), ink.astype(np.float32)


def _luma(colour: np.ndarray) -> float:
    if colour.size == 1:
        return float(colour[0])
    return float(colour @ np.array([0.299, 0.587, 0.114]))
