"""What the rules need to know about a run's dataset: class counts, the size
of each side of the split, and images shared by both sides.

The split is recomputed (``backend.datasets.split`` is deterministic from the
labels, ``validation_split`` and ``seed``), so it works for every run, at
epoch 0 as well as after the last one, and nothing is stored twice.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np

from backend.datasets.layout import MANIFEST, Manifest, dataset_dir
from backend.datasets.split import held_out, stratified_split
from backend.db import Dataset
from backend.train_config import TrainConfig

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class DatasetFacts:
    class_names: list[str]
    class_counts: list[int] | None = None  # None: the dataset was deleted
    train_images: int | None = None
    val_images: int | None = None
    # Validation images byte-identical to a training image; None: no manifest.
    leaked: int | None = None

    @property
    def num_classes(self) -> int:
        return len(self.class_names)


def dataset_facts(
    class_names: list[str],
    dataset: Dataset | None,
    config: TrainConfig,
    datasets_dir: Path | None = None,
) -> DatasetFacts:
    """Facts from the Dataset row, and from its manifest when it is on disk."""
    if dataset is None:
        return DatasetFacts(class_names=class_names)
    counts = [int(entry["count"]) for entry in dataset.classes]
    val = sum(held_out(count, config.validation_split) for count in counts)
    leaked = None
    if datasets_dir is not None:
        folder = dataset_dir(datasets_dir, dataset.id)
        if (folder / MANIFEST).is_file():
            try:
                leaked = leaked_images(str(folder), config.validation_split, config.seed)
            except (OSError, ValueError, KeyError, TypeError):
                # The rest of the diagnosis stands without it.
                log.warning("could not read the manifest in %s", folder, exc_info=True)
    return DatasetFacts(
        class_names=class_names,
        class_counts=counts,
        train_images=sum(counts) - val,
        val_images=val,
        leaked=leaked,
    )


# A stored dataset never changes, and the diagnosis is read every few seconds
# while a run trains: parse a manifest (thousands of entries) once per split.
@lru_cache(maxsize=64)
def leaked_images(folder: str, validation_split: float, seed: int) -> int:
    """How many validation images have the same bytes (SHA-1) as a training image."""
    manifest = Manifest.read(Path(folder))
    labels = np.array([image.label for image in manifest.images], dtype=np.int64)
    train_idx, val_idx = stratified_split(labels, validation_split, seed)
    seen = {manifest.images[i].sha1 for i in train_idx}
    return sum(manifest.images[i].sha1 in seen for i in val_idx)
