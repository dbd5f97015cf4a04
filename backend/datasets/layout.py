"""Where a stored dataset lives and what its manifest says.

A dataset is ``DATA_DIR/datasets/<id>/`` holding ``manifest.json`` and one
folder per class named by the class index (``000``, ``001``, ...), files named
by their position (``00012.png``). No path is ever built from a name the user
chose: class names live only in the manifest and in SQL.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

MANIFEST = "manifest.json"
# The worker's input pipeline decodes these two with tf.io; ingest re-encodes
# anything else Pillow can read to PNG.
STORED_FORMATS = {"PNG": "png", "JPEG": "jpg"}


@dataclass(frozen=True)
class ImageEntry:
    path: str  # relative to the dataset folder, e.g. "003/00012.png"
    label: int  # index into Manifest.classes
    sha1: str  # of the stored bytes: identical images share it
    width: int
    height: int
    mode: str  # Pillow mode of the original: "RGB", "L", "RGBA", ...


@dataclass
class Manifest:
    classes: list[str]
    images: list[ImageEntry] = field(default_factory=list)

    def write(self, folder: Path) -> None:
        data = {"classes": self.classes, "images": [asdict(image) for image in self.images]}
        (folder / MANIFEST).write_text(json.dumps(data))

    @classmethod
    def read(cls, folder: Path) -> Manifest:
        data = json.loads((folder / MANIFEST).read_text())
        return cls(classes=data["classes"], images=[ImageEntry(**i) for i in data["images"]])


def dataset_dir(datasets_root: Path, dataset_id: str) -> Path:
    # ids are server-made hex strings; refuse anything else before touching disk.
    if not (dataset_id.isascii() and dataset_id.isalnum()):
        raise ValueError(f"not a dataset id: {dataset_id!r}")
    return datasets_root / dataset_id


def class_folder(label: int) -> str:
    return f"{label:03d}"


def image_file(position: int, extension: str) -> str:
    """The file name of the class's ``position``-th stored image, e.g. ``00012.png``."""
    return f"{position:05d}.{extension}"
