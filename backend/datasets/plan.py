"""Which entries of an archive are the images of which class.

The rules: one folder per class, optionally all wrapped in one top folder;
images may sit deeper inside their class folder; the class is the folder's
name and its label the name's index in sorted order. System clutter
(``__MACOSX/``, ``.DS_Store``, ``Thumbs.db``, hidden files) is dropped without
a word; other files that are not images are skipped and reported. This only
looks at names: whether an image really decodes is decided in ``images``.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import PurePosixPath

from backend.datasets.archive import Entry
from backend.datasets.errors import IngestError, few, plural, show

IMAGE_SUFFIXES = {
    ".png", ".jpg", ".jpeg", ".jpe", ".jfif", ".bmp", ".dib", ".gif", ".tif", ".tiff",
    ".webp", ".ppm", ".pgm", ".pbm", ".pnm",
}  # fmt: skip
ARCHIVE_SUFFIXES = {".zip", ".tar", ".gz", ".tgz", ".bz2", ".xz", ".7z", ".rar", ".zst"}
CLUTTER = {".ds_store", "thumbs.db", "ehthumbs.db", "desktop.ini"}
MAX_CLASS_NAME = 200
MIN_CLASSES = 2
# Folder names that hold a split of a dataset rather than a class.
SPLIT_NAMES = {"train", "training", "test", "testing", "val", "valid", "validation", "dev"}


@dataclass
class Plan:
    classes: list[str]  # sorted; label = index
    members: list[list[Entry]]  # per label, in name order
    non_images: list[str] = field(default_factory=list)  # entry names skipped
    repeated: list[str] = field(default_factory=list)  # names an earlier entry also has


def plan_dataset(entries: Iterable[Entry]) -> Plan:
    images: list[Entry] = []
    others: list[Entry] = []
    seen: set[str] = set()
    repeated: list[str] = []
    for entry in entries:
        if _is_clutter(entry.parts):
            continue
        if entry.name in seen:
            repeated.append(entry.name)
        seen.add(entry.name)
        (images if _suffix(entry) in IMAGE_SUFFIXES else others).append(entry)
    if not images:
        raise _no_images(others)

    depth = _class_depth(images)
    by_class: dict[str, list[Entry]] = {}
    for entry in images:
        relative = entry.parts[depth:]
        if len(relative) < 2:
            raise IngestError(
                f"image {show(entry.name)} is not inside a class folder; put every image in a "
                "folder named after its class (one top folder around them is allowed)"
            )
        # macOS writes names decomposed (NFD); one class must not become two.
        name = unicodedata.normalize("NFC", relative[0])
        if len(name) > MAX_CLASS_NAME:
            raise IngestError(
                f"class folder name {show(name)} is {len(name):,} characters long; "
                f"at most {MAX_CLASS_NAME} are allowed"
            )
        by_class.setdefault(name, []).append(entry)

    classes = sorted(by_class)
    if all(name.casefold() in SPLIT_NAMES for name in classes) and any(
        len(entry.parts) - depth >= 3 for entry in images
    ):
        raise _splits_not_classes(classes)
    if len(classes) < MIN_CLASSES:
        found = ", ".join(show(name) for name in classes)
        raise IngestError(
            f"a dataset needs at least {MIN_CLASSES} classes, found {len(classes)}: {found}; "
            "put each class's images in a folder of its own"
        )
    members = [sorted(by_class[name], key=lambda entry: entry.name) for name in classes]
    return Plan(classes, members, [entry.name for entry in others], repeated)


def _splits_not_classes(folders: list[str]) -> IngestError:
    listed = ", ".join(show(name) for name in folders)
    return IngestError(
        f"the folders {listed} hold a train/validation split, not classes; curvelab holds "
        "out validation itself (validation_split): upload one folder per class, such as "
        f"the class folders inside {show(folders[-1])}"
    )


def _is_clutter(parts: tuple[str, ...]) -> bool:
    return (
        any(part.startswith(".") or part == "__MACOSX" for part in parts)
        or parts[-1].lower() in CLUTTER
    )


def _suffix(entry: Entry) -> str:
    return PurePosixPath(entry.parts[-1]).suffix.lower()


def _class_depth(images: list[Entry]) -> int:
    """1 when one top folder wraps the class folders, else 0."""
    tops = {entry.parts[0] for entry in images}
    # Class folders inside one common folder mean that folder wraps them. A
    # stray "data/x.png" beside "data/cats/y.png" is then an image outside any
    # class, which plan_dataset names, rather than a class called "data".
    if len(tops) == 1 and any(len(entry.parts) >= 3 for entry in images):
        return 1
    return 0


def _no_images(others: list[Entry]) -> IngestError:
    archives = [entry.name for entry in others if _suffix(entry) in ARCHIVE_SUFFIXES]
    if archives:
        return IngestError(
            f"the archive holds only nested archives ({few([show(n) for n in archives])}) and "
            "no images; unpack them and upload one ZIP with one folder of images per class"
        )
    if others:
        names = few([show(entry.name) for entry in others])
        return IngestError(
            f"the archive holds no images, only {plural(len(others), 'other file')}: {names}; "
            "supported images are PNG, JPEG, BMP, GIF, TIFF, WebP and PPM"
        )
    return IngestError("the archive holds no images; zip one folder of images per class")
