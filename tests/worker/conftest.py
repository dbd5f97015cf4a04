"""Worker fixtures: a tiny stored dataset written straight into the layout,
and a factory for runs on it with a network small enough for two CPU cores."""

from __future__ import annotations

import hashlib
import math
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image
from redis import Redis

from backend import events, runs
from backend.datasets.layout import ImageEntry, Manifest, class_folder, dataset_dir
from backend.datasets.split import stratified_split
from backend.db import Database, Dataset, Run
from backend.settings import Settings
from backend.train_config import TrainConfig

CLASSES = ("horizontal", "vertical", "square")
PER_CLASS = 24
SIDE = 16

# Small enough to train in a second or two, learnable in 2-3 epochs; BN
# momentum 0.9 so that its moving averages settle within a dozen steps.
TINY = {
    "image_size": (SIDE, SIDE),
    "filters": [4, 8],
    "convs_per_block": 1,
    "dense_units": 8,
    "batch_size": 8,
    "epochs": 3,
    "bn_momentum": 0.9,
    "learning_rate": 0.003,
    "batch_metrics_every": 3,
    "seed": 7,
}
TRAIN_IMAGES = len(
    stratified_split(np.repeat(np.arange(len(CLASSES)), PER_CLASS), 0.2, int(TINY["seed"]))[0]
)
STEPS = math.ceil(TRAIN_IMAGES / int(TINY["batch_size"]))  # per epoch


def _pattern(label: int, rng: np.random.Generator) -> np.ndarray:
    """An easy, distinct pattern per class, shifted and noisy so no two match."""
    grid = np.zeros((SIDE, SIDE), dtype=np.float64)
    shift = int(rng.integers(0, 4))
    if label == 0:
        grid[(np.arange(SIDE) + shift) % 4 < 2, :] = 1.0
    elif label == 1:
        grid[:, (np.arange(SIDE) + shift) % 4 < 2] = 1.0
    else:
        grid[4 + shift // 2 : 12 - shift // 2, 4 + shift // 2 : 12 - shift // 2] = 1.0
    noisy = 40 + 170 * grid + rng.normal(0, 12, grid.shape)
    return np.clip(noisy, 0, 255).astype(np.uint8)


def write_dataset(
    root: Path,
    dataset_id: str,
    seed: int = 0,
    *,
    per_class: Sequence[int] = (PER_CLASS,) * len(CLASSES),
    random_labels: bool = False,
    copies: int = 0,
) -> Manifest:
    """PNG (grayscale and RGB) and JPEG files, as ingest would have stored them.

    ``random_labels``: every image is random noise, so nothing learned
    generalises: a run can only memorise its training images. ``copies``:
    the last ``copies`` images of each class are byte copies of its first ones.
    """
    folder = dataset_dir(root, dataset_id)
    rng = np.random.default_rng(seed)
    manifest = Manifest(classes=list(CLASSES))
    for label, count in enumerate(per_class):
        (folder / class_folder(label)).mkdir(parents=True)
        first = len(manifest.images)
        for position in range(count):
            if position >= count - copies:
                original = manifest.images[first + position - (count - copies)]
                path = f"{class_folder(label)}/{position:05d}{Path(original.path).suffix}"
                (folder / path).write_bytes((folder / original.path).read_bytes())
                manifest.images.append(replace(original, path=path))
                continue
            if random_labels:
                pixels = rng.integers(0, 256, (SIDE, SIDE), dtype=np.uint8)
            else:
                pixels = _pattern(label, rng)
            image = Image.fromarray(pixels, mode="L")
            mode, extension = ("L", "png") if position % 2 else ("RGB", "png")
            if label == 2:
                mode, extension = "RGB", "jpg"
            path = f"{class_folder(label)}/{position:05d}.{extension}"
            image.convert(mode).save(folder / path, format="PNG" if extension == "png" else "JPEG")
            sha1 = hashlib.sha1((folder / path).read_bytes()).hexdigest()
            manifest.images.append(ImageEntry(path, label, sha1, SIDE, SIDE, mode))
    manifest.write(folder)
    return manifest


MakeDataset = Callable[..., str]


@pytest.fixture
def make_dataset(settings: Settings, database: Database) -> MakeDataset:
    """A Dataset row and its files under the data dir; keyword arguments go to
    ``write_dataset``."""

    def make(**options: Any) -> str:
        per_class = list(options.get("per_class", (PER_CLASS,) * len(CLASSES)))
        with database.session() as session:
            row = Dataset(
                name="patterns",
                num_images=sum(per_class),
                classes=[
                    {"name": name, "count": count}
                    for name, count in zip(CLASSES, per_class, strict=True)
                ],
                image_shapes=[[SIDE, SIDE]],
                warnings=[],
            )
            session.add(row)
            session.commit()
            write_dataset(settings.datasets_dir, row.id, **options)
            return row.id

    return make


@pytest.fixture
def dataset_id(make_dataset: MakeDataset) -> str:
    """The tiny dataset: 24 images of each of 3 easy patterns."""
    return make_dataset()


MakeRun = Callable[..., str]


@pytest.fixture
def make_run(database: Database, dataset_id: str) -> MakeRun:
    """Queue a run on the tiny dataset; keyword arguments override TINY."""

    def make(dataset: str | None = None, **overrides: Any) -> str:
        """``dataset``: another dataset's id (from ``make_dataset``)."""
        config = TrainConfig(**{**TINY, **overrides})
        with database.session() as session:
            row = session.get(Dataset, dataset or dataset_id)
            assert row is not None
            return runs.create_run(session, row, config, name="tiny").id

    return make


def set_run(database: Database, run_id: str, **fields: Any) -> None:
    """Change a run's SQL row the way a crash or a user would have left it."""
    with database.session() as session:
        run = session.get(Run, run_id)
        assert run is not None
        for key, value in fields.items():
            setattr(run, key, value)
        session.commit()


def redelivered(
    database: Database, run_id: str, epochs: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """As if the worker died mid-run (now planned for ``epochs``) and the
    broker delivered the task again: the run is "running" in SQL, and a
    resumed run must load its checkpoint, never build a new model."""
    config = {**get_run(database, run_id).config, "epochs": epochs}
    set_run(database, run_id, status="running", config=config, finished_at=None)

    def fresh_model(*_: object) -> None:
        raise AssertionError("a resumed run must not build a new model")

    from worker.training import runner  # TensorFlow: only for the tests that train

    monkeypatch.setattr(runner, "make_model", fresh_model)


def get_run(database: Database, run_id: str) -> Run:
    with database.session() as session:
        run = session.get(Run, run_id)
        assert run is not None
        return run


def stream(redis: Redis, run_id: str) -> list[dict[str, Any]]:
    """The run's events, decoded, in stream order."""
    return [events.decode(fields) for _, fields in redis.xrange(events.stream_key(run_id))]


def of_type(received: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [event for event in received if event["type"] == kind]


def epoch_numbers(database: Database, run_id: str) -> list[int]:
    with database.session() as session:
        return [row["epoch"] for row in runs.epoch_rows(session, run_id)]
