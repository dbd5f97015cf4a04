"""The character-dataset generator: shape of the archive, determinism, variety,
and that ingest takes what it writes without a warning."""

from __future__ import annotations

import io
import zipfile

import numpy as np
import pytest
from PIL import Image

from backend.datasets.ingest import ingest_archive
from backend.synthetic import (
    DEFAULT_CHARSET,
    class_folder_name,
    render_character,
    write_character_zip,
)


def decoded(archive: zipfile.ZipFile, name: str) -> Image.Image:
    image = Image.open(io.BytesIO(archive.read(name)))
    image.load()
    return image


def test_writes_one_folder_per_character(tmp_path) -> None:
    path = write_character_zip(
        tmp_path / "chars.zip", num_classes=3, per_class=4, image_size=(12, 20), mode="RGB"
    )
    with zipfile.ZipFile(path) as archive:
        names = archive.namelist()
        assert len(names) == 12
        assert sorted({name.split("/")[0] for name in names}) == ["digit_0", "digit_1", "digit_2"]
        image = decoded(archive, names[0])
    assert image.format == "PNG" and image.mode == "RGB" and image.size == (20, 12)  # (w, h)


def test_top_folder_and_jpeg(tmp_path) -> None:
    path = write_character_zip(
        tmp_path / "chars.zip", num_classes=2, per_class=2, top_folder="letters", fmt="JPEG"
    )
    with zipfile.ZipFile(path) as archive:
        names = archive.namelist()
        assert all(name.startswith("letters/digit_") and name.endswith(".jpg") for name in names)
        image = decoded(archive, names[0])
    assert image.format == "JPEG" and image.mode == "L" and image.size == (32, 32)


def test_same_seed_same_bytes_other_seed_other_images(tmp_path) -> None:
    first = write_character_zip(tmp_path / "a.zip", num_classes=2, per_class=3, seed=7)
    again = write_character_zip(tmp_path / "b.zip", num_classes=2, per_class=3, seed=7)
    other = write_character_zip(tmp_path / "c.zip", num_classes=2, per_class=3, seed=8)
    assert first.read_bytes() == again.read_bytes()
    assert first.read_bytes() != other.read_bytes()


def test_images_of_one_class_vary(tmp_path) -> None:
    path = write_character_zip(tmp_path / "chars.zip", num_classes=1, per_class=6, mode="L")
    with zipfile.ZipFile(path) as archive:
        pixels = [
            np.asarray(decoded(archive, name), dtype=np.float32) for name in archive.namelist()
        ]
    for i, a in enumerate(pixels):
        for b in pixels[i + 1 :]:
            assert np.abs(a - b).mean() > 5  # not one image with a little noise


def test_render_character_shows_the_character() -> None:
    rng = np.random.default_rng(0)
    image = render_character("A", (50, 55), "L", rng)
    assert image.size == (55, 50) and image.mode == "L"
    pixels = np.asarray(image, dtype=np.float32)
    assert pixels.std() > 20  # ink on a background, not a flat field
    with pytest.raises(ValueError, match="mode must be"):
        render_character("A", (32, 32), "CMYK", rng)


def test_folder_names_are_safe_everywhere() -> None:
    names = [class_folder_name(char) for char in DEFAULT_CHARSET + "ab/ é"]
    assert len({name.lower() for name in names}) == len(names)  # case-insensitive filesystems
    for name in names:
        assert name.isascii() and not set(name) & set('/\\:*?"<>| ')


def test_refuses_impossible_arguments(tmp_path) -> None:
    with pytest.raises(ValueError, match="num_classes"):
        write_character_zip(tmp_path / "x.zip", num_classes=len(DEFAULT_CHARSET) + 1)
    with pytest.raises(ValueError, match="top_folder"):
        write_character_zip(tmp_path / "x.zip", top_folder="../up")
    with pytest.raises(ValueError, match="fmt"):
        write_character_zip(tmp_path / "x.zip", fmt="XCF")


def test_ingest_takes_it_without_a_warning(tmp_path, settings) -> None:
    path = write_character_zip(
        tmp_path / "chars.zip",
        num_classes=4,
        per_class=10,
        image_size=(16, 18),
        mode="RGB",
        top_folder="chars",
    )
    summary = ingest_archive(path, "synthetic", settings)
    assert summary.num_images == 40
    assert [c["name"] for c in summary.classes] == ["digit_0", "digit_1", "digit_2", "digit_3"]
    assert summary.image_shapes == [{"height": 16, "width": 18, "mode": "RGB", "count": 40}]
    assert summary.warnings == []
