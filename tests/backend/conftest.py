"""Factories for dataset archives: real ZIP files of real (tiny) images."""

from __future__ import annotations

import io
import itertools
import zipfile
from collections.abc import Callable, Iterable, Iterator, Mapping
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

ImageFactory = Callable[..., bytes]
ZipFactory = Callable[..., Path]
Entries = Mapping[str, bytes] | Iterable[tuple[str | zipfile.ZipInfo, bytes]]


@pytest.fixture(autouse=True)
def _restore_pillow_pixel_limit() -> Iterator[None]:
    # Ingest sets Pillow's process-wide limit from its Settings; a test with a
    # tiny limit must not leave it for the tests that follow.
    limit = Image.MAX_IMAGE_PIXELS
    yield
    Image.MAX_IMAGE_PIXELS = limit


@pytest.fixture
def make_image() -> ImageFactory:
    """Image file bytes of random pixels, different at each call unless ``seed`` is given."""
    seeds = itertools.count(1000)

    def make(
        height: int = 8,
        width: int = 8,
        mode: str = "RGB",
        fmt: str = "PNG",
        seed: int | None = None,
    ) -> bytes:
        rng = np.random.default_rng(next(seeds) if seed is None else seed)
        channels = {"L": 1, "RGB": 3, "RGBA": 4}.get(mode, 3)
        pixels = rng.integers(0, 256, size=(height, width, channels), dtype=np.uint8)
        image = Image.fromarray(pixels[..., 0] if channels == 1 else pixels)
        if image.mode != mode:
            image = image.convert(mode)
        buffer = io.BytesIO()
        image.save(buffer, format=fmt)
        return buffer.getvalue()

    return make


@pytest.fixture
def make_zip(tmp_path: Path) -> ZipFactory:
    """Write ``entries`` (name or ZipInfo → bytes) to a new ZIP outside the data dir."""
    names = itertools.count()

    def make(entries: Entries, compression: int = zipfile.ZIP_STORED) -> Path:
        path = tmp_path / "uploads" / f"upload-{next(names)}.zip"
        path.parent.mkdir(exist_ok=True)
        items = entries.items() if isinstance(entries, Mapping) else entries
        with zipfile.ZipFile(path, "w", compression=compression) as archive:
            for name, data in items:
                archive.writestr(name, data)
        return path

    return make


@pytest.fixture
def class_entries(make_image: ImageFactory) -> Callable[..., dict[str, bytes]]:
    """Entries for ``{class name: image count}``, optionally under one top folder."""

    def make(
        counts: Mapping[str, int], top: str | None = None, **image: object
    ) -> dict[str, bytes]:
        prefix = f"{top}/" if top else ""
        return {
            f"{prefix}{name}/img_{index:03d}.png": make_image(**image)
            for name, count in counts.items()
            for index in range(count)
        }

    return make
