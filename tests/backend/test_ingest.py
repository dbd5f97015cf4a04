"""Dataset ingest over real ZIP files and real Pillow: what is stored, what is
refused (and that a refusal leaves nothing behind), what is warned about."""

from __future__ import annotations

import base64
import hashlib
import io
import stat
import struct
import unicodedata
import zipfile
import zlib
from pathlib import Path

import pytest
from PIL import Image

from backend.datasets import layout
from backend.datasets.archive import ByteBudget, checked_entries, declared_directory
from backend.datasets.images import store_image
from backend.datasets.ingest import (
    IngestError,
    delete_dataset_files,
    ingest_archive,
    sample_thumbnails,
    store_dataset,
)
from backend.db import Database, Dataset
from backend.settings import Settings

DATASET = "ds1"


def stored(settings: Settings) -> Path:
    return layout.dataset_dir(settings.datasets_dir, DATASET)


def assert_nothing_left(settings: Settings) -> None:
    assert list(settings.datasets_dir.iterdir()) == []
    assert list(settings.tmp_dir.iterdir()) == []


def reject(zip_path: Path, settings: Settings, status: int = 400) -> str:
    """Ingest must refuse ``zip_path`` with ``status``; returns the message."""
    with pytest.raises(IngestError) as caught:
        ingest_archive(zip_path, DATASET, settings)
    assert caught.value.status_code == status, str(caught.value)
    assert_nothing_left(settings)
    return str(caught.value)


def with_limits(settings: Settings, **limits: int) -> Settings:
    return settings.model_copy(update=limits)


def png_declaring(width: int, height: int) -> bytes:
    """A tiny, well-formed PNG whose header claims ``width``×``height`` pixels."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        crc = struct.pack(">I", zlib.crc32(kind + data))
        return struct.pack(">I", len(data)) + kind + data + crc

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(b"\0" * 64))
        + chunk(b"IEND", b"")
    )


def encode(image: Image.Image, fmt: str, **options: object) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **options)
    return buffer.getvalue()


# -- accepted -----------------------------------------------------------------


def test_a_stored_dataset_has_its_files_and_its_row_or_neither(
    settings, database: Database, make_zip, class_entries, monkeypatch: pytest.MonkeyPatch
) -> None:
    archive = make_zip(class_entries({"dogs": 3, "cats": 3}, height=6, width=9))
    with database.session() as session:
        dataset = store_dataset(session, archive, "pets", settings)
    with database.session() as session:
        row = session.get(Dataset, dataset.id)
        assert row is not None and (row.name, row.num_images) == ("pets", 6)
    assert layout.Manifest.read(layout.dataset_dir(settings.datasets_dir, dataset.id))

    with database.session() as session:

        def refuse() -> None:
            raise RuntimeError("database went away")

        monkeypatch.setattr(session, "commit", refuse)
        with pytest.raises(RuntimeError, match="database went away"):
            store_dataset(session, archive, "pets again", settings)
    assert [p.name for p in settings.datasets_dir.iterdir()] == [dataset.id]


@pytest.mark.parametrize("top", [None, "my dataset"])
def test_stores_a_good_dataset(settings, make_zip, class_entries, top) -> None:
    archive = make_zip(class_entries({"dogs": 12, "cats": 10}, top=top, height=6, width=9))

    summary = ingest_archive(archive, DATASET, settings)

    assert summary.num_images == 22
    assert summary.classes == [{"name": "cats", "count": 10}, {"name": "dogs", "count": 12}]
    assert summary.image_shapes == [{"height": 6, "width": 9, "mode": "RGB", "count": 22}]
    assert summary.warnings == []
    manifest = layout.Manifest.read(stored(settings))
    assert manifest.classes == ["cats", "dogs"]
    assert [image.label for image in manifest.images] == [0] * 10 + [1] * 12
    assert manifest.images[12].path == "001/00002.png"
    for image in manifest.images:
        data = (stored(settings) / image.path).read_bytes()
        assert data.startswith(b"\x89PNG")
        assert hashlib.sha1(data).hexdigest() == image.sha1
    assert sorted(p.name for p in stored(settings).iterdir()) == ["000", "001", "manifest.json"]
    assert list(settings.tmp_dir.iterdir()) == []


def test_keeps_png_and_jpeg_bytes_and_reencodes_the_rest(settings, make_zip, make_image) -> None:
    red, blue = (Image.new("RGB", (5, 4), colour) for colour in ((255, 0, 0), (0, 0, 255)))
    gif = encode(red, "GIF", save_all=True, append_images=[blue])
    jpeg = make_image(fmt="JPEG")
    entries = {
        "a/one.jpg": jpeg,
        "a/two.jpeg": make_image(mode="L", fmt="JPEG"),
        "a/three.png": make_image(mode="RGBA"),
        "b/one.bmp": make_image(fmt="BMP"),
        "b/two.gif": gif,
        "b/three.tiff": make_image(fmt="TIFF"),
        "b/four.webp": make_image(fmt="WEBP", height=7),
        "b/five.jpg": encode(Image.new("CMYK", (8, 8), (0, 50, 100, 0)), "JPEG"),
    }
    summary = ingest_archive(make_zip(entries), DATASET, settings)

    images = layout.Manifest.read(stored(settings)).images
    assert [(image.path, image.mode) for image in images] == [
        ("000/00000.jpg", "RGB"),
        ("000/00001.png", "RGBA"),
        ("000/00002.jpg", "L"),
        # five.jpg is CMYK, which tf.io cannot decode; the rest are not PNG or JPEG
        ("001/00000.png", "CMYK"),
        ("001/00001.png", "RGB"),
        ("001/00002.png", "RGB"),
        ("001/00003.png", "RGB"),
        ("001/00004.png", "P"),
    ]
    assert (stored(settings) / "000/00000.jpg").read_bytes() == jpeg  # kept as it came
    for image in images:
        with Image.open(stored(settings) / image.path) as decoded:
            assert decoded.format == ("JPEG" if image.path.endswith(".jpg") else "PNG")
    with Image.open(stored(settings) / "001/00004.png") as first_frame:
        assert first_frame.convert("RGB").getpixel((0, 0)) == (255, 0, 0)
    assert summary.num_images == 8


def test_class_names_are_sorted_unicode_and_normalised(settings, make_zip, make_image) -> None:
    decomposed = unicodedata.normalize("NFD", "café")
    entries = {
        "猫/写真.png": make_image(),
        "собаки/фото.png": make_image(),
        f"{decomposed}/a.png": make_image(),
        "café/b.png": make_image(),
        "Zebra/deep/er/c.png": make_image(),  # deeper inside a class still counts
        f"Zebra/{'x' * 5000}.png": make_image(),  # no path is built from a name
    }
    summary = ingest_archive(make_zip(entries), DATASET, settings)

    assert summary.classes == [
        {"name": "Zebra", "count": 2},
        {"name": "café", "count": 2},
        {"name": "собаки", "count": 1},
        {"name": "猫", "count": 1},
    ]
    for folder in stored(settings).iterdir():
        assert folder.name.isascii()


def test_skips_clutter_silently_and_other_files_with_a_warning(
    settings, make_zip, class_entries
) -> None:
    entries = class_entries({"cats": 10, "dogs": 10})
    entries |= {
        "cats/": b"",
        "__MACOSX/cats/._img_000.png": b"\0\5\26\7",
        "cats/.DS_Store": b"junk",
        "dogs/Thumbs.db": b"junk",
        ".git/config": b"junk",
        "cats/.hidden.png": b"junk",
        "cats/notes.txt": b"a note",
        "labels.csv": b"a,b",
    }
    summary = ingest_archive(make_zip(entries), DATASET, settings)

    assert summary.num_images == 20
    assert summary.warnings == [
        "skipped 2 files that are not images: 'cats/notes.txt', 'labels.csv'"
    ]


# -- refused ------------------------------------------------------------------


def test_refuses_what_is_not_a_zip(settings, tmp_path) -> None:
    upload = tmp_path / "upload.zip"
    upload.write_bytes(b"GIF89a not a zip at all" * 10)
    assert "not a readable ZIP archive" in reject(upload, settings)


def test_refuses_an_empty_file(settings, tmp_path) -> None:
    upload = tmp_path / "upload.zip"
    upload.write_bytes(b"")
    assert reject(upload, settings).startswith("the upload is empty")


@pytest.mark.parametrize("top", [None, "wrapper"])
def test_refuses_one_class(settings, make_zip, class_entries, top) -> None:
    message = reject(make_zip(class_entries({"cats": 3}, top=top)), settings)
    assert "needs at least 2 classes, found 1: 'cats'" in message


def test_refuses_an_archive_without_images(settings, make_zip) -> None:
    assert reject(make_zip({}), settings).startswith("the archive holds no images")
    message = reject(make_zip({"cats/a.txt": b"x", "dogs/b.csv": b"y"}), settings)
    assert "no images, only 2 other files: 'cats/a.txt', 'dogs/b.csv'" in message


def test_refuses_nested_archives_only(settings, make_zip) -> None:
    message = reject(make_zip({"cats.zip": b"PK", "dogs.tar.gz": b"x"}), settings)
    assert "only nested archives ('cats.zip', 'dogs.tar.gz')" in message


@pytest.mark.parametrize(("stray", "top"), [("a.png", None), ("wrapper/a.png", "wrapper")])
def test_refuses_images_outside_class_folders(
    settings, make_zip, class_entries, make_image, stray, top
) -> None:
    entries = class_entries({"cats": 2, "dogs": 2}, top=top) | {stray: make_image()}
    assert f"image '{stray}' is not inside a class folder" in reject(make_zip(entries), settings)


@pytest.mark.parametrize(
    ("name", "words"),
    [
        ("cats/../../evil.png", "climbs out of the archive with '..'"),
        ("..\\..\\evil.png", "climbs out of the archive with '..'"),
        ("/etc/evil.png", "has an absolute path"),
        ("C:/Windows/evil.png", "has an absolute path"),
        ("c:\\evil.png", "has an absolute path"),
    ],
)
def test_refuses_names_that_climb_out(settings, make_zip, class_entries, name, words) -> None:
    entries = class_entries({"cats": 2, "dogs": 2}) | {name: b"x"}
    message = reject(make_zip(entries), settings)
    assert message.startswith(f"entry {name!r} {words}")


def test_refuses_symlink_entries(settings, make_zip, class_entries) -> None:
    link = zipfile.ZipInfo("cats/passwd.png")
    link.create_system = 3
    link.external_attr = (stat.S_IFLNK | 0o777) << 16
    entries = [*class_entries({"cats": 2, "dogs": 2}).items(), (link, b"/etc/passwd")]
    assert "entry 'cats/passwd.png' is a symbolic link" in reject(make_zip(entries), settings)


def test_refuses_a_class_name_too_long(settings, make_zip, class_entries) -> None:
    message = reject(make_zip(class_entries({"a" * 300: 1, "dogs": 1})), settings)
    assert "is 300 characters long; at most 200 are allowed" in message
    assert len(message) < 300


def test_refuses_compression_it_cannot_bound(settings, make_zip, class_entries) -> None:
    upload = make_zip(class_entries({"cats": 2, "dogs": 2}), compression=zipfile.ZIP_BZIP2)
    assert "entry 'cats/img_000.png' is compressed with bzip2" in reject(upload, settings)


def test_refuses_a_damaged_entry(settings, make_zip, class_entries) -> None:
    upload = make_zip(class_entries({"cats": 2, "dogs": 2}))
    data = bytearray(upload.read_bytes())
    with zipfile.ZipFile(upload) as archive:
        info = archive.getinfo("dogs/img_001.png")
    data[info.header_offset + 30 + len(info.filename) + 40] ^= 0xFF  # a byte of its content
    upload.write_bytes(bytes(data))
    message = reject(upload, settings)
    assert message.startswith("entry 'dogs/img_001.png' is damaged in the archive (Bad CRC-32")


# -- bombs --------------------------------------------------------------------


def test_refuses_a_bomb_by_ratio(settings, make_zip, class_entries) -> None:
    entries = class_entries({"cats": 2, "dogs": 2}) | {"cats/bomb.png": b"\0" * (3 << 20)}
    message = reject(make_zip(entries, compression=zipfile.ZIP_DEFLATED), settings, 413)
    assert message.startswith("entry 'cats/bomb.png' expands more than 200:1")


def test_refuses_too_many_entries(settings, make_zip, class_entries) -> None:
    small = with_limits(settings, max_zip_entries=5)
    upload = make_zip(class_entries({"cats": 3, "dogs": 3}))
    assert "has 6 entries, over the limit of 5" in reject(upload, small, 413)

    # An end record that understates the count is caught once zipfile has counted.
    data = bytearray(upload.read_bytes())
    end = data.rfind(b"PK\x05\x06")
    data[end + 8 : end + 12] = struct.pack("<HH", 1, 1)
    upload.write_bytes(bytes(data))
    assert "has 6 entries, over the limit of 5" in reject(upload, small, 413)


def test_refuses_more_uncompressed_bytes_than_allowed(settings, make_zip, class_entries) -> None:
    small = with_limits(settings, max_uncompressed_mb=1)
    entries = class_entries({"cats": 2, "dogs": 2}) | {"cats/big.png": bytes(1536 * 1024)}
    message = reject(make_zip(entries), small, 413)
    assert message == (
        "the archive expands to 1.5 MiB, over the limit of 1 MiB (CURVELAB_MAX_UNCOMPRESSED_MB)"
    )


def test_counts_bytes_as_they_come_not_as_declared(settings, make_zip) -> None:
    small = with_limits(settings, max_uncompressed_mb=1)
    upload = make_zip({"cats/big.png": bytes(1536 * 1024)})
    with zipfile.ZipFile(upload) as archive:
        (entry,) = checked_entries(archive)
        with pytest.raises(IngestError, match="expands to more than 1 MiB") as caught:
            ByteBudget(small).copy(archive, entry, io.BytesIO())
    assert caught.value.status_code == 413


def test_refuses_a_header_declaring_huge_dimensions(settings, make_zip, class_entries) -> None:
    entries = class_entries({"cats": 2, "dogs": 2}) | {"dogs/huge.png": png_declaring(10**5, 10**5)}
    message = reject(make_zip(entries), settings, 413)
    assert message == (
        "image 'dogs/huge.png' is too large: over the limit of 40,000,000 pixels "
        "(CURVELAB_MAX_IMAGE_PIXELS)"
    )


@pytest.mark.parametrize("side", [120, 400])  # Pillow warns past the limit, raises past twice it
def test_refuses_a_real_image_over_the_pixel_limit(settings, make_zip, class_entries, side) -> None:
    big = encode(Image.new("L", (side, 100), 7), "PNG")  # compresses to almost nothing
    entries = class_entries({"cats": 2, "dogs": 2}) | {"cats/big.png": big}
    message = reject(make_zip(entries), with_limits(settings, max_image_pixels=10_000), 413)
    assert message.startswith("image 'cats/big.png' is too large: over the limit of 10,000 pixels")


# -- unreadable images --------------------------------------------------------


def test_skips_a_few_unreadable_images_with_a_warning(
    settings, make_zip, class_entries, make_image
) -> None:
    entries = class_entries({"cats": 10, "dogs": 10})
    entries["cats/cut.png"] = make_image(16, 16)[:300]
    entries["dogs/cut.jpg"] = make_image(32, 32, fmt="JPEG")[:400]
    summary = ingest_archive(make_zip(entries), DATASET, settings)

    assert summary.num_images == 20
    (warning,) = summary.warnings
    assert warning.startswith("skipped 2 unreadable images: 'cats/cut.png' (")
    assert "'dogs/cut.jpg' (Truncated File Read)" in warning
    assert str(settings.tmp_dir) not in warning  # no server path in what the user reads
    assert len(layout.Manifest.read(stored(settings)).images) == 20


def test_refuses_when_many_images_are_unreadable(settings, make_zip, class_entries) -> None:
    entries = class_entries({"cats": 8, "dogs": 8})
    entries |= {f"cats/bad{i}.png": b"\x89PNG\r\n\x1a\n broken" for i in range(2)}
    message = reject(make_zip(entries), settings)
    assert message.startswith("2 of 18 images could not be read (more than 10%): 'cats/bad0.png'")


def test_refuses_a_class_with_no_readable_image(settings, make_zip, class_entries) -> None:
    entries = class_entries({"cats": 30}) | {"dogs/a.png": b"nope", "dogs/b.jpg": b"nope"}
    message = reject(make_zip(entries), settings)
    assert message.startswith("none of the 2 images of class 'dogs' could be read: 'dogs/a.png'")


# -- warnings -----------------------------------------------------------------


def test_warns_about_imbalance_and_tiny_classes(settings, make_zip, class_entries) -> None:
    summary = ingest_archive(
        make_zip(class_entries({"big": 40, "mid": 10, "few": 3})), DATASET, settings
    )
    assert summary.warnings == [
        "classes are imbalanced: 'big' has 40 images, 'few' has 3 (13.3×); accuracy will "
        "favour the large classes and a stratified split keeps few of the small ones",
        "1 class with fewer than 10 images: 'few' (3); their validation numbers will be noise",
    ]


def test_warns_about_identical_images_in_two_classes(
    settings, make_zip, class_entries, make_image
) -> None:
    entries = class_entries({"cats": 10, "dogs": 10, "foxes": 10})
    twin = make_image(seed=1)
    entries |= {"cats/twin.png": twin, "dogs/twin.png": twin, "foxes/twin.png": twin}
    entries |= {"cats/twin2.png": make_image(seed=2), "dogs/twin2.png": make_image(seed=2)}
    summary = ingest_archive(make_zip(entries), DATASET, settings)
    assert summary.warnings == [
        "2 identical images appear in more than one class: 'cats' and 'dogs' share 2, "
        "'cats' and 'foxes' share 1, 'dogs' and 'foxes' share 1; no model can tell those "
        "apart, and they leak from training into validation"
    ]


def test_warns_about_mixed_sizes_and_modes(settings, make_zip, class_entries, make_image) -> None:
    entries = class_entries({"cats": 10, "dogs": 10}, height=6, width=9)
    entries |= {f"cats/small{i}.png": make_image(5, 5, mode="L") for i in range(3)}
    entries |= {f"dogs/grey{i}.png": make_image(6, 9, mode="L") for i in range(2)}
    summary = ingest_archive(make_zip(entries), DATASET, settings)

    assert summary.image_shapes == [
        {"height": 6, "width": 9, "mode": "RGB", "count": 20},
        {"height": 5, "width": 5, "mode": "L", "count": 3},
        {"height": 6, "width": 9, "mode": "L", "count": 2},
    ]
    assert summary.warnings == [
        "images come in 2 sizes (height×width): 6×9 (22), 5×5 (3); training resizes every "
        "image to the configured image_size, which distorts the others",
        "images mix colour modes: RGB (20), L (5); training converts all of them to the "
        "configured color_mode",
    ]


# -- thumbnails and deletion --------------------------------------------------


def test_samples_thumbnails_per_class(settings, make_zip, class_entries) -> None:
    ingest_archive(
        make_zip(class_entries({"cats": 10, "dogs": 2}, height=90, width=120)), DATASET, settings
    )
    samples = sample_thumbnails(DATASET, settings, per_class=4, size=32)

    assert [(s["name"], s["count"], len(s["images"])) for s in samples] == [
        ("cats", 10, 4),
        ("dogs", 2, 2),
    ]
    prefix = "data:image/png;base64,"
    assert samples[0]["images"][0].startswith(prefix)
    with Image.open(io.BytesIO(base64.b64decode(samples[0]["images"][0][len(prefix) :]))) as thumb:
        assert thumb.format == "PNG" and thumb.size == (32, 24)


def test_thumbnails_of_a_missing_dataset(settings) -> None:
    with pytest.raises(FileNotFoundError):
        sample_thumbnails("nothere", settings)


def test_deletes_dataset_files(settings, make_zip, class_entries) -> None:
    ingest_archive(make_zip(class_entries({"cats": 2, "dogs": 2})), DATASET, settings)
    assert delete_dataset_files(DATASET, settings) is True
    assert_nothing_left(settings)
    assert delete_dataset_files(DATASET, settings) is False
    assert_nothing_left(settings)


def test_checks_pixels_itself_when_pillow_would_let_it_through(tmp_path, make_image) -> None:
    # Pillow's guard is process-wide and the warning filter is not thread-safe;
    # store_image measures every image against the limit it is given.
    raw = tmp_path / "incoming"
    raw.write_bytes(make_image(8, 8))
    with pytest.raises(IngestError, match=r"'cats/a.png' is too large \(8×8\)") as caught:
        store_image(raw, "sha", 0, "cats/a.png", max_pixels=63)
    assert caught.value.status_code == 413
    assert not raw.exists()


def test_reads_the_entry_count_before_parsing_the_directory(
    settings, make_zip, class_entries, monkeypatch
) -> None:
    small = with_limits(settings, max_zip_entries=5)
    # Make zipfile write Zip64 end records for a handful of entries, as it
    # would for more than 65535.
    monkeypatch.setattr(zipfile, "ZIP_FILECOUNT_LIMIT", 3)
    upload = make_zip(class_entries({"cats": 3, "dogs": 3}))
    data = bytearray(upload.read_bytes())
    assert data.rfind(b"PK\x06\x06") > 0
    end = data.rfind(b"PK\x05\x06")
    data[end + 8 : end + 12] = struct.pack("<HH", 0xFFFF, 0xFFFF)  # "see the Zip64 record"
    upload.write_bytes(bytes(data))
    assert declared_directory(upload) == (6, pytest.approx(6 * 62, abs=12))
    assert "has 6 entries, over the limit of 5" in reject(upload, small, 413)


def test_refuses_a_directory_too_big_for_the_entry_limit(settings, make_zip, make_image) -> None:
    entries = {f"{c}/{'n' * 2000}.png": make_image() for c in ("cats", "dogs", "foxes")}
    message = reject(make_zip(entries), with_limits(settings, max_zip_entries=5), 413)
    assert message.startswith("the archive's list of entries takes 6.0 KiB, more than 5 entries")
