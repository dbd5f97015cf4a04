"""Small previews of a stored dataset, a few per class, as PNG data URLs."""

from __future__ import annotations

import base64
import io
from pathlib import Path

import numpy as np
from PIL import Image

from backend.datasets import layout
from backend.settings import Settings

_DISPLAY_MODES = {"1", "L", "LA", "P", "RGB", "RGBA"}


def sample_thumbnails(
    dataset_id: str, settings: Settings, per_class: int = 4, size: int = 64
) -> list[dict]:
    """[{"name", "count", "images": [data URL, ...]}] per class, in label order.

    Raises FileNotFoundError when the dataset has no files.
    """
    folder = layout.dataset_dir(settings.datasets_dir, dataset_id)
    manifest = layout.Manifest.read(folder)
    by_label: list[list[layout.ImageEntry]] = [[] for _ in manifest.classes]
    for image in manifest.images:
        by_label[image.label].append(image)
    samples = []
    for name, images in zip(manifest.classes, by_label, strict=True):
        picks = _spread(images, per_class)
        samples.append(
            {
                "name": name,
                "count": len(images),
                "images": [_data_url(folder / image.path, size) for image in picks],
            }
        )
    return samples


def _spread(images: list[layout.ImageEntry], count: int) -> list[layout.ImageEntry]:
    # Evenly through the class rather than its first files, which often come
    # from one source and look alike.
    count = min(count, len(images))
    return [images[i * len(images) // count] for i in range(count)]


def _data_url(path: Path, size: int) -> str:
    with Image.open(path, formats=list(layout.STORED_FORMATS)) as image:
        image.draft("RGB", (size, size))  # JPEG decodes at a fraction of full size
        image.thumbnail((size, size))
        shown = image if image.mode in _DISPLAY_MODES else _to_8bit(image)
        buffer = io.BytesIO()
        shown.save(buffer, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def _to_8bit(image: Image.Image) -> Image.Image:
    # 16-bit greyscale clipped to 8 bits would show white; scale it instead.
    if image.mode.startswith(("I", "F")):
        pixels = np.asarray(image, dtype=np.float64)
        top = max(float(pixels.max()), 1.0)
        return Image.fromarray((pixels / top * 255).astype(np.uint8), mode="L")
    return image.convert("RGB")
