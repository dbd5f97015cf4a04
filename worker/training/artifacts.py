"""Writing a run's files under ``DATA_DIR/runs/<id>/``: checkpoints, the
final model and the history CSV.

Names come from ``backend.artifacts`` (the API serves what is written here).
Every file is written under a temporary name and renamed into place, so a
reader, or a worker resuming after a crash, never sees half a file.
"""

from __future__ import annotations

import csv
import os
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import keras

from backend import artifacts
from backend.settings import Settings

KEEP_CHECKPOINTS = 2
_RUN_ID = re.compile(r"[0-9a-f]{1,64}")
_CHECKPOINT = re.compile(r"epoch-(\d+)\.keras")


def run_dir(settings: Settings, run_id: str) -> Path:
    # Ids are server-made hex (uuid4().hex); anything else never reaches a path.
    if not _RUN_ID.fullmatch(run_id):
        raise ValueError(f"not a run id: {run_id!r}")
    return artifacts.run_dir(settings.runs_dir, run_id)


def checkpoint_path(settings: Settings, run_id: str, epoch: int) -> Path:
    return artifacts.checkpoint_path(settings.runs_dir, run_dir(settings, run_id).name, epoch)


def _replace_into(path: Path, write: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    # Same folder, so the rename is atomic; a leading dot keeps the partial
    # file out of every glob below, and the suffix is what Keras insists on.
    partial = path.with_name(f".partial-{path.name}")
    try:
        write(partial)
        os.replace(partial, path)
    finally:
        partial.unlink(missing_ok=True)


def save_model(model: keras.Model, path: Path) -> None:
    """Save architecture, weights and optimizer state, atomically."""
    _replace_into(path, model.save)


def save_checkpoint(model: keras.Model, settings: Settings, run_id: str, epoch: int) -> Path:
    """Checkpoint a finished epoch (1-based); keep only the newest few."""
    path = checkpoint_path(settings, run_id, epoch)
    save_model(model, path)
    for old in path.parent.glob("epoch-*.keras"):
        match = _CHECKPOINT.fullmatch(old.name)
        if match and int(match.group(1)) <= epoch - KEEP_CHECKPOINTS:
            old.unlink(missing_ok=True)
    return path


def write_history(path: Path, rows: Sequence[dict[str, Any]]) -> None:
    """One row per epoch, one column per metric (first seen first); blanks
    where an epoch lacks a metric or its value was not finite."""
    columns: dict[str, None] = {"epoch": None}
    for row in rows:
        columns.update(dict.fromkeys(row))

    def write(target: Path) -> None:
        with target.open("w", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=list(columns), restval="")
            writer.writeheader()
            writer.writerows({k: "" if v is None else v for k, v in row.items()} for row in rows)

    _replace_into(path, write)
