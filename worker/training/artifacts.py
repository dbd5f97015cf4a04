"""Writing a run's files under ``DATA_DIR/runs/<id>/``: checkpoints, the
final model and the history CSV.

Names come from ``backend.artifacts`` (the API serves what is written here).
Every file is written under a temporary name and renamed into place, so a
reader, or a worker resuming after a crash, never sees half a file. A writer
may pass a ``fence`` (``Fence.holds``, worker/training/fence.py), asked
between the write and the rename: a trainer that is no longer the run's
current attempt never replaces its successor's files.

A checkpoint is taken in two steps, so that the training thread only copies:
``Snapshot.take`` copies the model's and the optimizer's variables into a
shadow model on the same device (no host transfer), and ``Snapshot.save``,
on another thread, writes the shadow as an ordinary ``.keras`` file, the one
``keras.models.load_model`` resumes from.
"""

from __future__ import annotations

import csv
import os
import re
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any

import keras

from backend import artifacts
from backend.settings import Settings

KEEP_CHECKPOINTS = 2
# A partial file untouched this long is a dead writer's (no save takes an hour).
ABANDONED_S = 3600.0
_RUN_ID = re.compile(r"[0-9a-f]{1,64}")
_CHECKPOINT = re.compile(r"epoch-(\d+)\.keras")


def run_dir(settings: Settings, run_id: str) -> Path:
    # Ids are server-made hex (uuid4().hex); anything else never reaches a path.
    if not _RUN_ID.fullmatch(run_id):
        raise ValueError(f"not a run id: {run_id!r}")
    return artifacts.run_dir(settings.runs_dir, run_id)


def checkpoint_path(settings: Settings, run_id: str, epoch: int) -> Path:
    return artifacts.checkpoint_path(settings.runs_dir, run_dir(settings, run_id).name, epoch)


Fence = Callable[[], bool]


def replace_into(path: Path, write: Callable[[Path], Any], fence: Fence | None = None) -> bool:
    """``write`` a temporary file, then rename it to ``path``; False (and no
    file) when ``fence`` says, after the write, that the writer lost the run."""
    path.parent.mkdir(parents=True, exist_ok=True)
    # Same folder, so the rename is atomic; a leading dot keeps the partial
    # file out of every glob below, and the suffix is what Keras insists on.
    # A name of this writer's own: a trainer frozen mid-write still holds its
    # file open, and one shared name would let it write, once woken, into
    # the file its successor wrote under that name and renamed into place.
    partial = path.with_name(f".partial-{os.getpid()}-{uuid.uuid4().hex[:8]}-{path.name}")
    try:
        write(partial)
        # Asked as late as can be: the window left is one rename.
        if fence is not None and not fence():
            return False
        os.replace(partial, path)
        return True
    finally:
        partial.unlink(missing_ok=True)


def save_model(model: keras.Model, path: Path, fence: Fence | None = None) -> bool:
    """Save architecture, weights and optimizer state, atomically; False when fenced."""
    return replace_into(path, model.save, fence)


def latest_checkpoint(settings: Settings, run_id: str, upto: int) -> int:
    """The newest epoch, at most ``upto``, whose checkpoint is on disk; 0 if none.

    One short of ``upto`` where the worker died between the epoch's record
    and its checkpoint (the record comes first); none past it counts: such a
    file would be a stale trainer's, of an epoch SQL refused."""
    folder = run_dir(settings, run_id).joinpath(artifacts.CHECKPOINTS)
    epochs = [
        int(match.group(1))
        for match in map(
            _CHECKPOINT.fullmatch, (path.name for path in folder.glob("epoch-*.keras"))
        )
        if match and int(match.group(1)) <= upto
    ]
    return max(epochs, default=0)


def prune_checkpoints(settings: Settings, run_id: str, epoch: int) -> None:
    """Delete the checkpoints older than the newest ``KEEP_CHECKPOINTS`` (of
    ``epoch``), and partial files that a killed worker left long ago."""
    folder = run_dir(settings, run_id).joinpath(artifacts.CHECKPOINTS)
    for old in folder.glob("epoch-*.keras"):
        match = _CHECKPOINT.fullmatch(old.name)
        if match and int(match.group(1)) <= epoch - KEEP_CHECKPOINTS:
            old.unlink(missing_ok=True)
    abandoned = time.time() - ABANDONED_S
    for partial in folder.glob(".partial-*"):
        with suppress(OSError):  # gone meanwhile: its writer finished
            if partial.stat().st_mtime < abandoned:
                partial.unlink(missing_ok=True)


class Snapshot:
    """The model's state at one moment, kept in a shadow model until saved.

    ``take`` (training thread) waits until the previous snapshot is saved,
    then copies every variable: weights, BatchNorm statistics, seed states,
    optimizer slots and step count. ``held`` (any one other thread) lends the
    shadow to write files from, ``save`` writes it as a ``.keras`` file; both
    free it for the next ``take``, and ``release`` frees it unsaved.
    """

    def __init__(self, model: keras.Model) -> None:
        self.model = model
        self._shadow: keras.Model | None = None
        self._pairs: list[tuple[Any, Any]] = []
        self._free = threading.Semaphore(1)

    def take(self) -> None:
        self._free.acquire()
        try:
            if self._shadow is None:
                self._shadow, self._pairs = _shadow(self.model)
            for target, source in self._pairs:
                # A copy: on JAX, assign would share the buffer, which the next
                # training step donates (deletes).
                target.assign(keras.ops.copy(source))
        except BaseException:
            self._free.release()
            raise

    @contextmanager
    def held(self) -> Iterator[keras.Model]:
        """The shadow model, holding the last ``take``, for writing its files;
        freed for the next ``take`` afterwards."""
        try:
            if self._shadow is None:
                raise RuntimeError("no snapshot taken")
            yield self._shadow
        finally:
            self._free.release()

    def save(self, path: Path) -> None:
        with self.held() as shadow:
            save_model(shadow, path)

    def release(self) -> None:
        self._free.release()


def _shadow(model: keras.Model) -> tuple[keras.Model, list[tuple[Any, Any]]]:
    """A model of the same architecture and compile settings, optimizer built,
    and its variables paired with the original's."""
    shadow = keras.models.clone_model(model)
    shadow.compile_from_config(model.get_compile_config())  # builds the optimizer too
    if not shadow.optimizer.built:
        shadow.optimizer.build(shadow.trainable_variables)
    pairs = []
    for group, shadow_group in (
        (model.variables, shadow.variables),
        (model.optimizer.variables, shadow.optimizer.variables),
    ):
        if len(group) != len(shadow_group):
            raise RuntimeError(f"shadow has {len(shadow_group)} variables, model {len(group)}")
        for source, target in zip(group, shadow_group, strict=True):
            if tuple(source.shape) != tuple(target.shape):
                raise RuntimeError(f"shadow of {source.path} has shape {target.shape}")
            pairs.append((target, source))
    return shadow, pairs


def write_history(path: Path, rows: Sequence[dict[str, Any]], fence: Fence | None = None) -> bool:
    """One row per epoch, one column per metric (first seen first); blanks
    where an epoch lacks a metric or its value was not finite. False when fenced."""
    columns: dict[str, None] = {"epoch": None}
    for row in rows:
        columns.update(dict.fromkeys(row))

    def write(target: Path) -> None:
        with target.open("w", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=list(columns), restval="")
            writer.writeheader()
            writer.writerows({k: "" if v is None else v for k, v in row.items()} for row in rows)

    return replace_into(path, write, fence)
