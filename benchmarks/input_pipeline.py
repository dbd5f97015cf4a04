"""Input pipeline: curvelab's tf.data training input alone, against the model.

The training dataset that ``run_training`` builds (decode once, cached uint8,
shuffled, batched, scaled, prefetched) is iterated on its own, epoch after
epoch, against a training epoch of seed-cnn-small on the same batches; the
pipeline must deliver images at least 10× as fast as the model takes them.
Then the dataset's image files are moved away: later epochs still run,
which shows that nothing is read or decoded after the first.
"""

from __future__ import annotations

import multiprocessing as mp
import time
from typing import Any

from benchmarks.fixtures import Workspace, stored_dataset
from benchmarks.report import Row, at_least, median

PER_CLASS = 267  # the overhead benchmark's dataset: 6420 images to train


def measure(space: Workspace, rounds: int, dataset_id: str | None = None) -> list[Row]:
    dataset_id = dataset_id or stored_dataset(space, PER_CLASS)
    folder = space.settings.datasets_dir / dataset_id
    context = mp.get_context("spawn")
    with context.Pool(1) as pool:
        result: dict[str, Any] = pool.apply(_run, (str(folder), rounds))
    first_epoch = result["first"]
    cached = median(result["pipeline"])
    without_files = bool(result["without_files"])
    return [
        Row(
            "input pipeline vs training (images/s)",
            median(result["model"]),
            cached,
            goal="≥ 10×",
            check=at_least(10),
        ),
        Row(
            "  pipeline epoch 1 (decode) vs later epochs (images/s)",
            first_epoch,
            cached,
            goal="files gone after epoch 1: still runs",
            check=lambda _ratio: without_files,
        ),
    ]


def _run(folder_name: str, rounds: int) -> dict[str, Any]:
    from pathlib import Path

    import numpy as np

    from backend.datasets.layout import Manifest
    from backend.datasets.split import stratified_split
    from backend.train_config import PRESETS
    from worker.training.model import compile_model, make_model
    from worker.training.pipeline import build_pipelines

    folder = Path(folder_name)
    config = PRESETS["seed-cnn-small"][1]
    manifest = Manifest.read(folder)
    labels = np.array([image.label for image in manifest.images])
    train_idx, val_idx = stratified_split(labels, config.validation_split, config.seed)
    data = build_pipelines(
        folder, manifest.images, train_idx.tolist(), val_idx.tolist(), config, config.seed
    )

    def iterate() -> float:
        started = time.perf_counter()
        for _images, _labels in data.train:
            pass
        return data.train_images / (time.perf_counter() - started)

    first = iterate()
    aside = folder.with_name(folder.name + "-aside")
    folder.rename(aside)  # no image file can be read from here on
    try:
        try:
            pipeline = [iterate()]
        except Exception:  # it went back to the files: not cached
            return {"first": first, "pipeline": [0.0], "model": [1.0], "without_files": False}
        model = compile_model(make_model(config, len(manifest.classes)), config)
        model.fit(data.train, epochs=1, shuffle=False, verbose=0)  # traced and warm
        trained = []
        for _ in range(rounds):
            started = time.perf_counter()
            model.fit(data.train, epochs=1, shuffle=False, verbose=0)
            trained.append(data.train_images / (time.perf_counter() - started))
            pipeline.append(iterate())
    finally:
        aside.rename(folder)
    return {"first": first, "pipeline": pipeline, "model": trained, "without_files": True}
