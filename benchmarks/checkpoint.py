"""Checkpoint: what an epoch's checkpoint costs the training thread.

A whole ``model.save`` of model and optimizer (what the recorder did on the
training thread at every epoch end) against ``Snapshot.take`` (what it does
now: a device-side copy of every variable; the file is written by the
recorder's writer thread). The full seed network (filters 64–512, Adam
state: about 80 MiB) and seed-cnn-small, in a child process.
"""

from __future__ import annotations

import multiprocessing as mp
import tempfile
import time
from typing import Any

from benchmarks.report import Row, median


def measure(repeats: int) -> list[Row]:
    with mp.get_context("spawn").Pool(1) as pool:
        result: dict[str, tuple[list[float], list[float]]] = pool.apply(_run, (repeats,))
    rows = []
    for name, (saves, takes) in result.items():
        rows.append(
            Row(
                f"checkpoint on the training thread, {name} (ms)",
                1000 * median(saves),
                1000 * median(takes),
                goal="info (baseline: model.save)",
            )
        )
    return rows


def _run(repeats: int) -> dict[str, Any]:
    from pathlib import Path

    import numpy as np

    from backend.train_config import PRESETS, TrainConfig
    from worker.training.artifacts import Snapshot
    from worker.training.model import compile_model, make_model

    result = {}
    for name, config in (
        ("seed-cnn-small", PRESETS["seed-cnn-small"][1]),
        ("full seed network", TrainConfig()),
    ):
        model = compile_model(make_model(config, 30), config)
        x = np.zeros((config.batch_size, *config.image_size, 3), dtype="float32")
        model.fit(x, np.zeros(len(x), dtype="int32"), epochs=1, verbose=0)
        snapshot = Snapshot(model)
        saves, takes = [], []
        with tempfile.TemporaryDirectory() as folder:
            target = Path(folder) / "checkpoint.keras"
            snapshot.take()  # builds the shadow model once
            snapshot.release()
            for _ in range(repeats):
                started = time.perf_counter()
                model.save(target)
                saves.append(time.perf_counter() - started)
                started = time.perf_counter()
                snapshot.take()
                takes.append(time.perf_counter() - started)
                snapshot.save(target)
        result[name] = (saves, takes)
    return result
