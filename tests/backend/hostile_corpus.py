"""A corpus of hostile and odd dataset uploads, and what curvelab must answer.

Each case is a function that writes one upload to the path it is given;
``CASES`` maps the case's name to it and to the expected answer: a refusal
(400, or 413 for anything over a size limit) whose ``detail`` holds the given
phrases (the offending entry's name among them), or acceptance (201) with
warnings that hold them. Images are tiny so the whole corpus runs in seconds.

To try the corpus against a running API by hand::

    python -m tests.backend.hostile_corpus /tmp/corpus   # writes <case>.zip
    curl -F file=@/tmp/corpus/dotdot.zip http://127.0.0.1:8000/api/datasets
"""

from __future__ import annotations

import io
import stat
import struct
import sys
import warnings
import zipfile
import zlib
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

Writer = Callable[[Path], None]
Entries = Iterable[tuple[str | zipfile.ZipInfo, bytes]]

MIB = 1024 * 1024


# -- building blocks ----------------------------------------------------------


def image(
    size: tuple[int, int] = (8, 8), mode: str = "RGB", fmt: str = "PNG", seed: int = 0, **save
) -> bytes:
    """An image file of random pixels; ``size`` is (width, height)."""
    width, height = size
    pixels = np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)
    picture = Image.fromarray(pixels)
    if mode == "I;16":
        picture = Image.fromarray(pixels[..., 0].astype(np.uint16) * 257)
    elif mode != "RGB":
        picture = picture.convert(mode)
    buffer = io.BytesIO()
    picture.save(buffer, format=fmt, **save)
    return buffer.getvalue()


def classes(counts: Mapping[str, int], top: str = "", seed: int = 0, **spec) -> list:
    """Entries of ``{class: count}`` distinct PNGs, optionally inside a ``top`` folder."""
    prefix = f"{top}/" if top else ""
    return [
        (f"{prefix}{name}/img_{index:03d}.png", image(seed=seed + 1000 * n + index, **spec))
        for n, (name, count) in enumerate(counts.items())
        for index in range(count)
    ]


def two_classes(per_class: int = 12) -> list:
    return classes({"cats": per_class, "dogs": per_class})


def write_zip(path: Path, entries: Entries, compression: int = zipfile.ZIP_STORED) -> bytes:
    """Write ``entries`` as a ZIP at ``path``; return its bytes."""
    data = write_zip_bytes(entries, compression)
    path.write_bytes(data)
    return data


def zipped(entries: Callable[[], Entries], compression: int = zipfile.ZIP_STORED) -> Writer:
    def write(path: Path) -> None:
        write_zip(path, entries(), compression)

    return write


def link(name: str, target: bytes = b"/etc/passwd") -> tuple[zipfile.ZipInfo, bytes]:
    info = zipfile.ZipInfo(name)
    info.create_system = 3  # Unix, so that the mode bits mean what they say
    info.external_attr = (stat.S_IFLNK | 0o777) << 16
    return info, target


def png_declaring(width: int, height: int) -> bytes:
    """A tiny, well-formed PNG whose header claims ``width``×``height`` pixels."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (
            struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
        )

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(b"\0" * 64))
        + chunk(b"IEND", b"")
    )


def png_with_text_bomb() -> bytes:
    """A valid 8×8 PNG carrying a zTXt chunk that inflates to 64 MiB."""
    data = image()
    text = b"Comment\0\0" + zlib.compress(b"\0" * (64 * MIB), 9)
    chunk = struct.pack(">I", len(text)) + b"zTXt" + text
    chunk += struct.pack(">I", zlib.crc32(b"zTXt" + text))
    return data[:33] + chunk + data[33:]  # after the 8-byte signature and 25-byte IHDR


def with_dimensions(data: bytes, fmt: str, width: int, height: int) -> bytes:
    """``data`` (a real GIF, BMP or JPEG) with its header claiming other dimensions."""
    out = bytearray(data)
    if fmt == "GIF":
        out[6:10] = struct.pack("<HH", width, height)
    elif fmt == "BMP":
        out[18:26] = struct.pack("<ii", width, height)
    elif fmt == "JPEG":
        at = out.find(b"\xff\xc0")
        out[at + 5 : at + 9] = struct.pack(">HH", height, width)
    else:
        raise ValueError(fmt)
    return bytes(out)


def patch_central(data: bytes, name: str, **fields: int) -> bytes:
    """Rewrite fields of ``name``'s central-directory record (and its local header)."""
    out = bytearray(data)
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        info = archive.getinfo(name)
    central = _central_record(out, name)
    local = info.header_offset
    offsets = {  # (central offset, local offset, format)
        "flags": (8, 6, "<H"),
        "method": (10, 8, "<H"),
        "crc": (16, 14, "<I"),
        "compress_size": (20, 18, "<I"),
        "file_size": (24, 22, "<I"),
    }
    for key, value in fields.items():
        at_central, at_local, fmt = offsets[key]
        struct.pack_into(fmt, out, central + at_central, value)
        struct.pack_into(fmt, out, local + at_local, value)
    return bytes(out)


def _central_record(data: bytearray, name: str) -> int:
    encoded = name.encode("utf-8")
    at = 0
    while (at := data.find(b"PK\x01\x02", at)) >= 0:
        length = struct.unpack_from("<H", data, at + 28)[0]
        if bytes(data[at + 46 : at + 46 + length]) == encoded:
            return at
        at += 4
    raise KeyError(name)


def zip64_claiming(data: bytes, count: int, directory_bytes: int | None = None) -> bytes:
    """``data`` with Zip64 end records that claim ``count`` entries."""
    end = data.rfind(b"PK\x05\x06")
    size, offset = struct.unpack_from("<LL", data, end + 12)
    zip64_at = end
    record = struct.pack(
        "<4sQ2H2L4Q", b"PK\x06\x06", 44, 45, 45, 0, 0, count, count,
        size if directory_bytes is None else directory_bytes, offset,
    )  # fmt: skip
    locator = struct.pack("<4sLQL", b"PK\x06\x07", 0, zip64_at, 1)
    eocd = struct.pack("<4s4H2LH", b"PK\x05\x06", 0, 0, 0xFFFF, 0xFFFF, size, offset, 0)
    return data[:end] + record + locator + eocd


def bytes_writer(make: Callable[[], bytes]) -> Writer:
    def write(path: Path) -> None:
        path.write_bytes(make())

    return write


def transformed(entries: Callable[[], Entries], change: Callable[[bytes], bytes]) -> Writer:
    def write(path: Path) -> None:
        path.write_bytes(change(write_zip(path, entries())))

    return write


# -- what each case must get --------------------------------------------------


@dataclass(frozen=True)
class Case:
    write: Writer
    status: int  # 201 accepted; 400 refused; 413 over a size limit
    says: tuple[str, ...] = ()  # in the detail (refused) or in the warnings (accepted)
    warnings: int | None = None  # exact number of warnings, where it matters
    classes: tuple[str, ...] = ()  # accepted: the class names, in label order
    limits: dict[str, int] = field(default_factory=dict)  # Settings overrides
    chunked: bool = False  # sent without a Content-Length


def refused(write: Writer, *says: str, status: int = 400, **limits: int) -> Case:
    return Case(write, status, says, limits=limits)


def accepted(write: Writer, *says: str, warnings: int | None = None, **kw) -> Case:
    return Case(write, 201, says, warnings=warnings, **kw)


def _junk() -> list:
    return [
        *two_classes(),
        ("__MACOSX/cats/._img_000.png", b"\0\5\26\7\0\2\0\0Mac OS X"),
        ("__MACOSX/._cats", b"\0\5\26\7"),
        ("cats/.DS_Store", b"\0\0\0\1Bud1"),
        (".DS_Store", b"\0\0\0\1Bud1"),
        ("dogs/Thumbs.db", b"\xd0\xcf\x11\xe0"),
        ("dogs/desktop.ini", b"[.ShellClassInfo]"),
        ("cats/._img_001.png", b"\0\5\26\7"),
    ]


def _few_unreadable() -> list:
    return [
        *two_classes(15),
        ("cats/cut.png", image((32, 32))[:200]),
        ("dogs/empty.jpg", b""),
        ("dogs/html.png", b"<html><body>404 Not Found</body></html>"),
    ]


def _mixed() -> list:
    return [
        *classes({"cats": 10}),
        *classes({"dogs": 5}, size=(20, 12), mode="L", seed=7),
        *[(f"dogs/wide{i}.jpg", image((64, 9), fmt="JPEG", seed=90 + i)) for i in range(3)],
        ("dogs/rgba.png", image(mode="RGBA", seed=5)),
    ]


def _odd_formats() -> list:
    red, blue = Image.new("RGB", (6, 5), (255, 0, 0)), Image.new("RGB", (6, 5), (0, 0, 255))
    gif = io.BytesIO()
    red.save(gif, format="GIF", save_all=True, append_images=[blue], loop=0, duration=50)
    tiff = io.BytesIO()
    red.save(tiff, format="TIFF", save_all=True, append_images=[blue])
    return [
        *two_classes(10),
        ("cats/really_a_jpeg.png", image(fmt="JPEG", seed=11)),
        ("cats/really_a_png.jpg", image(seed=12)),
        ("cats/animated.gif", gif.getvalue()),
        ("cats/pages.tiff", tiff.getvalue()),
        ("cats/one_pixel.png", image((1, 1), seed=13)),
        ("cats/sixteen_bit.png", image(mode="I;16", seed=14)),
        ("dogs/cmyk.jpg", image(mode="CMYK", fmt="JPEG", seed=15)),
        ("dogs/cmyk.tif", image(mode="CMYK", fmt="TIFF", seed=16)),
        ("dogs/palette.png", image(mode="P", seed=17)),
        ("dogs/grey_alpha.png", image(mode="LA", seed=18)),
        ("dogs/bilevel.bmp", image(mode="1", fmt="BMP", seed=19)),
        ("dogs/lossy.webp", image(fmt="WEBP", seed=20)),
        ("dogs/netpbm.ppm", image(fmt="PPM", seed=21)),
        ("dogs/UPPER.PNG", image(seed=22)),
    ]


def _zip64() -> Writer:
    def write(path: Path) -> None:
        with zipfile.ZipFile(path, "w") as archive:
            for name, data in two_classes(6):
                with archive.open(name, "w", force_zip64=True) as out:
                    out.write(data)

    return write


def _prepended(path: Path) -> None:
    # A self-extracting archive: an executable stub before the ZIP.
    data = write_zip(path, two_classes(6))
    path.write_bytes(b"MZ\x90\0" + b"\0" * 4092 + data)


def _truncated_zip(path: Path) -> None:
    data = write_zip(path, two_classes(20))
    path.write_bytes(data[: len(data) // 2])


def _over_the_cap(path: Path) -> None:
    write_zip(path, [*two_classes(), ("cats/big.bmp", bytes(3 * MIB))])


def overlapping(names: Callable[[int], str], count: int = 300) -> Writer:
    """``count`` central entries all pointing at one stored file: the
    'non-recursive' ZIP bomb, where the archive's bytes are counted many times."""

    def write(path: Path) -> None:
        data = write_zip(path, [("cats/a.png", image((64, 64)))])
        first, end = data.find(b"PK\x01\x02"), data.rfind(b"PK\x05\x06")
        record = data[first:end]
        directory = b"".join(record.replace(b"cats/a.png", names(i).encode()) for i in range(count))
        eocd = struct.pack("<4s4H2LH", b"PK\x05\x06", 0, 0, count, count, len(directory), first, 0)
        path.write_bytes(data[:first] + directory + eocd)

    return write


def renamed(entries: Callable[[], Entries], old: bytes, new: bytes) -> Writer:
    """Entries whose names have ``old`` replaced by ``new`` bytes, without telling zipfile."""
    return transformed(entries, lambda data: data.replace(old, new))


CASES: dict[str, Case] = {
    # not an archive of class folders at all
    "not_a_zip": refused(bytes_writer(lambda: image()), "not a readable ZIP archive"),
    "html_error_page": refused(
        bytes_writer(lambda: b"<html><body>502 Bad Gateway</body></html>"),
        "not a readable ZIP archive",
    ),
    "empty_file": refused(bytes_writer(lambda: b""), "the upload is empty"),
    "empty_zip": refused(zipped(lambda: []), "holds no images"),
    "only_folders": refused(zipped(lambda: [("cats/", b""), ("dogs/", b"")]), "holds no images"),
    "only_clutter": refused(
        zipped(lambda: [(".DS_Store", b"x"), ("__MACOSX/cats/._a.png", b"x")]), "holds no images"
    ),
    "truncated_zip": refused(_truncated_zip, "not a readable ZIP archive"),
    "one_class": refused(
        zipped(lambda: classes({"cats": 5})), "at least 2 classes, found 1: 'cats'"
    ),
    "one_class_in_a_top_folder": refused(
        zipped(lambda: classes({"cats": 5}, top="dataset")), "at least 2 classes, found 1: 'cats'"
    ),
    "no_images": refused(
        zipped(lambda: [("cats/readme.txt", b"hi"), ("dogs/labels.csv", b"a,b")]),
        "no images, only 2 other files: 'cats/readme.txt', 'dogs/labels.csv'",
    ),
    "nested_archives_only": refused(
        zipped(lambda: [("cats.zip", write_zip_bytes(two_classes(2))), ("dogs.tar.gz", b"\x1f")]),
        "only nested archives ('cats.zip', 'dogs.tar.gz')",
    ),
    "images_outside_class_folders": refused(
        zipped(lambda: [*two_classes(), ("stray.png", image(seed=99))]),
        "image 'stray.png' is not inside a class folder",
    ),
    # names that climb out, links
    "dotdot": refused(
        zipped(lambda: [*two_classes(), ("cats/../../evil.png", image())]),
        "entry 'cats/../../evil.png' climbs out of the archive",
    ),
    "dotdot_backslash": refused(
        zipped(lambda: [*two_classes(), ("..\\..\\evil.png", image())]),
        "entry '..\\\\..\\\\evil.png' climbs out of the archive",
    ),
    "dotdot_only_name": refused(
        zipped(lambda: [*two_classes(), ("cats/..", image())]), "entry 'cats/..' climbs out"
    ),
    "absolute_path": refused(
        zipped(lambda: [*two_classes(), ("/tmp/evil.png", image())]),
        "entry '/tmp/evil.png' has an absolute path",
    ),
    "drive_letter": refused(
        zipped(lambda: [*two_classes(), ("C:\\evil.png", image())]),
        "entry 'C:\\\\evil.png' has an absolute path",
    ),
    "symlink_file": refused(
        zipped(lambda: [*two_classes(), link("cats/passwd.png")]),
        "entry 'cats/passwd.png' is a symbolic link",
    ),
    "symlink_folder": refused(
        zipped(lambda: [link("cats", b"/etc"), *two_classes()]),
        "entry 'cats' is a symbolic link",
    ),
    # bombs and size limits
    "bomb_by_ratio": refused(
        zipped(lambda: [*two_classes(), ("cats/bomb.png", bytes(8 * MIB))], zipfile.ZIP_DEFLATED),
        "entry 'cats/bomb.png' expands more than 200:1",
        status=413,
    ),
    "bomb_by_declared_size": refused(
        transformed(
            lambda: [*two_classes(3), *[(f"cats/big{i}.png", image()) for i in range(3)]],
            lambda data: _declare_sizes(data, [f"cats/big{i}.png" for i in range(3)]),
        ),
        "the archive expands to",
        "CURVELAB_MAX_UNCOMPRESSED_MB",
        status=413,
    ),
    "bomb_by_total_size": refused(
        zipped(lambda: [*two_classes(), *[(f"cats/{i}.bmp", bytes(MIB // 2)) for i in range(4)]]),
        "the archive expands to",
        status=413,
        max_uncompressed_mb=1,
    ),
    "bomb_by_entry_count": refused(
        zipped(lambda: classes({"cats": 60, "dogs": 60}, size=(1, 1))),
        "has 120 entries, over the limit of 100",
        status=413,
        max_zip_entries=100,
    ),
    "bomb_by_claimed_entry_count": refused(
        transformed(two_classes, lambda data: zip64_claiming(data, 10**9)),
        "has 1,000,000,000 entries, over the limit of 200,000",
        status=413,
    ),
    "bomb_by_directory_size": refused(
        transformed(two_classes, lambda data: zip64_claiming(data, 24, 10**12)),
        "the archive's list of entries takes",
        status=413,
    ),
    "bomb_overlapping_entries": refused(
        overlapping(lambda i: f"c{i % 2}/{i:03d}.png"), "overlap", "'c1/001.png'"
    ),
    "bomb_overlapping_same_names": refused(
        overlapping(lambda i: "cats/a.png"), "overlap", "'cats/a.png'"
    ),
    "bomb_by_pixels_png": refused(
        zipped(lambda: [*two_classes(), ("dogs/huge.png", png_declaring(10**5, 10**5))]),
        "image 'dogs/huge.png' is too large",
        status=413,
    ),
    "bomb_by_pixels_gif": refused(
        zipped(
            lambda: [
                *two_classes(),
                ("dogs/huge.gif", with_dimensions(image(fmt="GIF"), "GIF", 65535, 65535)),
            ]
        ),
        "image 'dogs/huge.gif' is too large",
        status=413,
    ),
    "bomb_by_pixels_bmp": refused(
        zipped(
            lambda: [
                *two_classes(),
                ("cats/huge.bmp", with_dimensions(image(fmt="BMP"), "BMP", 30000, 30000)),
            ]
        ),
        "image 'cats/huge.bmp' is too large",
        status=413,
    ),
    "bomb_by_pixels_jpeg": refused(
        zipped(
            lambda: [
                *two_classes(),
                ("cats/huge.jpg", with_dimensions(image(fmt="JPEG"), "JPEG", 65000, 65000)),
            ]
        ),
        "image 'cats/huge.jpg' is too large",
        status=413,
    ),
    "bomb_by_pixels_just_over": refused(
        zipped(lambda: [*two_classes(), ("cats/big.png", image((101, 100), mode="L"))]),
        "image 'cats/big.png' is too large",
        status=413,
        max_image_pixels=10_000,
    ),
    "over_the_upload_cap": Case(
        _over_the_cap,
        413,
        ("upload is larger than the 1 MiB limit (CURVELAB_MAX_UPLOAD_MB)",),
        limits={"max_upload_mb": 1},
        chunked=True,
    ),
    # damaged or unsupported archives
    "encrypted_entry": refused(
        transformed(two_classes, lambda data: patch_central(data, "dogs/img_003.png", flags=1)),
        "entry 'dogs/img_003.png' is encrypted",
    ),
    "bzip2_entries": refused(
        zipped(two_classes, zipfile.ZIP_BZIP2), "entry 'cats/img_000.png' is compressed with bzip2"
    ),
    "lzma_entries": refused(
        zipped(two_classes, zipfile.ZIP_LZMA), "entry 'cats/img_000.png' is compressed with LZMA"
    ),
    "unknown_method": refused(
        transformed(two_classes, lambda data: patch_central(data, "cats/img_002.png", method=99)),
        "entry 'cats/img_002.png'",
    ),
    "bad_crc": refused(
        transformed(two_classes, lambda data: patch_central(data, "dogs/img_001.png", crc=1)),
        "entry 'dogs/img_001.png' is damaged",
    ),
    "lying_sizes": refused(
        transformed(
            lambda: [*two_classes(), ("cats/z.bmp", bytes(MIB))],
            lambda data: patch_central(data, "cats/z.bmp", file_size=100),
        ),
        "entry 'cats/z.bmp' is damaged",
    ),
    "local_name_differs": refused(
        transformed(
            two_classes, lambda data: data.replace(b"cats/img_004.png", b"cats/img_00X.png", 1)
        ),
        "entry 'cats/img_004.png' is damaged",
    ),
    # unreadable images
    "all_of_a_class_unreadable": refused(
        zipped(lambda: [*classes({"cats": 10}), ("dogs/a.png", b"nope"), ("dogs/b.jpg", b"")]),
        "none of the 2 images of class 'dogs' could be read: 'dogs/a.png'",
    ),
    "many_unreadable": refused(
        zipped(
            lambda: [*two_classes(8), *[(f"cats/bad{i}.png", b"\x89PNG junk") for i in range(3)]]
        ),
        "3 of 19 images could not be read (more than 10%)",
        "'cats/bad0.png'",
    ),
    "train_and_test_folders": refused(
        zipped(
            lambda: [
                *classes({"cats": 5, "dogs": 5}, top="train"),
                *[
                    (f"test/{name}", data)
                    for name, data in classes({"cats": 2, "dogs": 2}, seed=50)
                ],
            ]
        ),
        "the folders 'test', 'train' hold a train/validation split, not classes",
    ),
    "split_folders_in_a_top_folder": refused(
        zipped(
            lambda: [
                *classes({"cats": 4, "dogs": 4}, top="data/train"),
                *classes({"cats": 2}, top="data/Validation", seed=9),
            ]
        ),
        "'Validation', 'train' hold a train/validation split",
    ),
    "class_name_too_long": refused(
        zipped(lambda: classes({"c" * 300: 2, "dogs": 2})), "is 300 characters long"
    ),
    # accepted as they are
    "clutter_is_ignored": accepted(zipped(_junk), warnings=0, classes=("cats", "dogs")),
    "a_few_unreadable_images": accepted(
        zipped(_few_unreadable),
        "skipped 3 unreadable images",
        "'cats/cut.png'",
        "'dogs/empty.jpg'",
        "'dogs/html.png'",
        warnings=1,
    ),
    "a_text_chunk_bomb_is_skipped": accepted(
        zipped(lambda: [*two_classes(), ("cats/text_bomb.png", png_with_text_bomb())]),
        "skipped 1 unreadable image: 'cats/text_bomb.png'",
        warnings=1,
    ),
    "mixed_modes_and_sizes": accepted(
        zipped(_mixed), "images come in 3 sizes", "images mix colour modes"
    ),
    "odd_formats_and_modes": accepted(zipped(_odd_formats), "images mix colour modes"),
    "strong_imbalance": accepted(
        zipped(lambda: classes({"many": 120, "few": 3}, size=(4, 4))),
        "classes are imbalanced: 'many' has 120 images, 'few' has 3 (40.0×)",
        "fewer than 10 images: 'few' (3)",
    ),
    "a_zip_inside_a_class_folder": accepted(
        zipped(lambda: [*two_classes(), ("cats/more.zip", write_zip_bytes(two_classes(2)))]),
        "skipped 1 file that is not an image: 'cats/more.zip'",
        warnings=1,
    ),
    "other_files_beside_images": accepted(
        zipped(lambda: [*two_classes(), ("cats/notes.txt", b"x"), ("README.md", b"# data")]),
        "skipped 2 files that are not images",
        warnings=1,
    ),
    "folder_named_like_a_file": accepted(
        zipped(
            lambda: [
                ("cats/photo.png/", b""),
                (_folder_without_slash("cats/album.jpg"), b""),
                *[(f"cats/photo.png/{i}.png", image(seed=i)) for i in range(10)],
                *[(f"dogs.jpg/{i}.png", image(seed=50 + i)) for i in range(10)],
            ]
        ),
        warnings=0,
        classes=("cats", "dogs.jpg"),
    ),
    "duplicate_entry_names": accepted(
        zipped(lambda: [*two_classes(), ("cats/img_000.png", image(seed=77))]),
        "1 entry has the name of an earlier one: 'cats/img_000.png'",
        warnings=1,
    ),
    "identical_images_in_two_classes": accepted(
        zipped(
            lambda: [
                *two_classes(),
                ("cats/twin.png", image(seed=5)),
                ("dogs/twin.png", image(seed=5)),
            ]
        ),
        "1 identical image appears in more than one class",
    ),
    "extremely_long_names": accepted(
        zipped(lambda: [*two_classes(), (f"cats/{'x' * 60_000}.png", image(seed=5001))]),
        warnings=0,
    ),
    "deeply_nested_images": accepted(
        zipped(lambda: [*two_classes(), ("dogs/" + "deep/" * 200 + "down.png", image(seed=5002))]),
        warnings=0,
    ),
    "unicode_names": accepted(
        zipped(
            lambda: [
                *[(f"猫/写真{i}.png", image(seed=i)) for i in range(10)],
                *[(f"собаки/фото {i}.png", image(seed=20 + i)) for i in range(10)],
                *[(f"🐟 fish/\u202egnp.{i}.png", image(seed=40 + i)) for i in range(10)],
            ]
        ),
        warnings=0,
        classes=("собаки", "猫", "🐟 fish"),
    ),
    "decomposed_and_composed_names_are_one_class": accepted(
        zipped(
            lambda: [
                *[("cafe\u0301/" + f"{i}.png", image(seed=i)) for i in range(5)],
                *[(f"café/{i}b.png", image(seed=10 + i)) for i in range(5)],
                *classes({"tea": 10}, seed=5000),
            ]
        ),
        warnings=0,
        classes=("café", "tea"),
    ),
    "cp437_names": accepted(
        # Old Windows tools: names in code page 437, without the UTF-8 flag.
        renamed(lambda: classes({"cafX": 10, "the": 10}), b"cafX", b"caf\x82"),
        warnings=0,
        classes=("café", "the"),
    ),
    "invalid_utf8_names": refused(
        renamed(lambda: classes({"café": 10, "the": 10}), b"caf\xc3\xa9", b"caf\xc3\x28"),
        "not a readable ZIP archive",
    ),
    "nul_in_a_name": accepted(
        renamed(lambda: [*two_classes(), ("cats/aXb.png", image(seed=8))], b"aXb", b"a\0b"),
        "skipped 1 file that is not an image: 'cats/a'",
        warnings=1,
    ),
    "control_characters_in_names": accepted(
        zipped(lambda: classes({"ca\tts": 10, "do\x1bgs\n": 10})),
        warnings=0,
        classes=("ca\tts", "do\x1bgs\n"),
    ),
    "backslash_paths": accepted(
        zipped(lambda: [(name.replace("/", "\\"), data) for name, data in two_classes()]),
        warnings=0,
        classes=("cats", "dogs"),
    ),
    "only_a_train_folder": accepted(
        zipped(lambda: classes({"cats": 10, "dogs": 10}, top="train")),
        warnings=0,
        classes=("cats", "dogs"),
    ),
    "classes_that_differ_in_case": accepted(
        zipped(lambda: [*classes({"Cats": 10}), *classes({"cats": 10, "dogs": 10}, seed=500)]),
        "class folders differ only in case: 'Cats' and 'cats'",
        warnings=1,
    ),
    "copies_within_a_class": accepted(
        zipped(
            lambda: [
                *two_classes(),
                ("cats/copy.png", image(seed=0)),
                ("cats/again.png", image(seed=0)),
            ]
        ),
        "2 images are exact copies of another in the same class: 'cats' (2)",
        warnings=1,
    ),
    "one_top_folder": accepted(
        zipped(lambda: classes({"cats": 10, "dogs": 10}, top="My Dataset")),
        warnings=0,
        classes=("cats", "dogs"),
    ),
    "zip64": accepted(_zip64(), classes=("cats", "dogs")),
    "self_extracting_stub": accepted(_prepended, classes=("cats", "dogs")),
    "deflated": accepted(zipped(two_classes, zipfile.ZIP_DEFLATED), warnings=0),
    "many_small_classes": accepted(
        zipped(lambda: classes({f"class {i:03d}": 2 for i in range(150)}, size=(2, 2))),
        "150 classes with fewer than 10 images",
    ),
}


def _folder_without_slash(name: str) -> zipfile.ZipInfo:
    info = zipfile.ZipInfo(name)
    info.create_system = 3
    info.external_attr = (stat.S_IFDIR | 0o755) << 16
    return info


def write_zip_bytes(entries: Entries, compression: int = zipfile.ZIP_STORED) -> bytes:
    buffer = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # "Duplicate name": some cases want one
        with zipfile.ZipFile(buffer, "w", compression=compression) as archive:
            for name, data in entries:
                archive.writestr(name, data)
    return buffer.getvalue()


def _declare_sizes(data: bytes, names: list[str]) -> bytes:
    for name in names:
        data = patch_central(data, name, file_size=0xFFFF0000)
    return data


def write_all(folder: Path, names: Iterable[str] | None = None) -> list[Path]:
    """Write the corpus (or the named cases) as ``folder/<case>.zip``."""
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for name in names or CASES:
        path = folder / f"{name}.zip"
        CASES[name].write(path)
        written.append(path)
    return written


if __name__ == "__main__":
    for written in write_all(Path(sys.argv[1] if len(sys.argv) > 1 else "hostile-corpus")):
        print(written)
